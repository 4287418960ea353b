vcl 4.1;
# The shop day's peer: one Varnish with the xkey vmod (Debian's
# varnish-modules) in front of the demo backend run with --xkey, which
# names what each answer holds (`xkey: p42 listing-7 ...`) and what each
# write changed (`xkey-purge: p42`, plus both categories' listings when a
# product moves). Varnish cannot read JSON bodies, so the backend helps.
# The TTLs and keys are those of bench/shop/sidecache.yaml.
# bench/shop.sh fills in @BACKEND_PORT@.

import xkey;
import cookie;

backend shop {
    .host = "127.0.0.1";
    .port = "@BACKEND_PORT@";
}

sub vcl_recv {
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    if (req.url ~ "^/inventory/") {
        return (pass);
    }
    if (req.url ~ "^/session" || req.url ~ "^/cart/") {
        # Per session: keyed by the session cookie, and nothing else of it.
        cookie.parse(req.http.cookie);
        cookie.keep("session_id");
        set req.http.cookie = cookie.get_string();
        if (req.http.cookie == "") {
            return (pass);
        }
        return (hash);
    }
    unset req.http.cookie;
    return (hash);
}

sub vcl_hash {
    hash_data(req.url);
    if (req.url ~ "^/session" || req.url ~ "^/cart/") {
        hash_data(req.http.cookie);
    }
    return (lookup);
}

sub vcl_backend_response {
    if (bereq.url ~ "^/products/" || bereq.url ~ "^/categories/") {
        set beresp.ttl = 24h;
    } elsif (bereq.url ~ "^/session") {
        set beresp.ttl = 30m;
    } elsif (bereq.url ~ "^/cart/") {
        set beresp.ttl = 7d;
    } elsif (bereq.url ~ "^/recommendations/") {
        set beresp.ttl = 1h;
    }
    set beresp.grace = 0s;
    return (deliver);
}

sub vcl_deliver {
    # A write's answer names what it changed: purge it before the client
    # hears of the write, as sidecache does.
    if (resp.http.xkey-purge) {
        set resp.http.x-purged = xkey.purge(resp.http.xkey-purge);
        unset resp.http.xkey-purge;
    }
    unset resp.http.xkey;
    if (obj.hits > 0) {
        set resp.http.cache-status = "varnish; hit";
    } else {
        set resp.http.cache-status = "varnish; fwd=miss";
    }
}
