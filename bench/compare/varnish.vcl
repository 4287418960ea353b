vcl 4.1;
# Varnish in front of the origin: the built-in VCL does the rest (the origin
# sends Cache-Control: max-age=3600; the TTL is pinned to 1 h all the same).
# bench/compare.sh fills in @ORIGIN_PORT@.

backend origin {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
}

sub vcl_backend_response {
    set beresp.ttl = 1h;
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
