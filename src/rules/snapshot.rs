//! An owned copy of the request data templates read, for what renders
//! templates after the request itself is gone: the tags of an answer
//! stored when its body ends, a write's purges after the backend answered.

use std::net::IpAddr;

use http::{HeaderMap, Method, request};

use super::{Bodies, RequestView, Template};

/// An owned copy of the request data templates read.
#[derive(Clone)]
pub struct Snapshot {
    method: Method,
    host: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    client_ip: IpAddr,
    params: Vec<(String, String)>,
}

impl Snapshot {
    /// Copies what `view` and `params` hold.
    pub fn of(view: &RequestView<'_>, params: &[(&str, &str)]) -> Self {
        Self {
            method: view.method.clone(),
            host: view.host.to_owned(),
            path: view.path.to_owned(),
            query: view.query.map(str::to_owned),
            headers: view.headers.clone(),
            client_ip: view.client_ip,
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// The request as templates see it.
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            client_ip: self.client_ip,
        }
    }

    /// Path parameters of the pattern it matched.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// Method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Host, lower-cased, without port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Query string.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Client address.
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// Path and query, as a request line has them.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// A GET of the same URL with the same headers, as request parts.
    pub fn get_parts(&self) -> request::Parts {
        let mut req = http::Request::new(());
        if let Ok(uri) = self.path_and_query().parse() {
            *req.uri_mut() = uri;
        }
        *req.headers_mut() = self.headers.clone();
        req.into_parts().0
    }

    /// Renders `templates` with the given path parameters.
    pub fn render_with(
        &self,
        templates: &[&Template],
        params: &[(&str, &str)],
        bodies: Bodies<'_>,
    ) -> Vec<String> {
        let view = self.view();
        templates
            .iter()
            .filter_map(|t| t.render(&view, params, bodies))
            .collect()
    }

    /// Renders `templates` with the snapshot's own path parameters; those
    /// whose JSON field is missing give nothing.
    pub fn render(&self, templates: &[&Template], bodies: Bodies<'_>) -> Vec<String> {
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.render_with(templates, &params, bodies)
    }
}
