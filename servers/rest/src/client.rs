//! The HTTP client of the REST API: one pooled connection set, bounded waits, bounded answers.
//!
//! Every request goes to the configured base URL only: paths are built by [`crate::path`],
//! redirects are not followed (a 3xx is reported, never chased to another host), and a loopback
//! base URL bypasses any proxy from the environment. Each request runs in a client span, carries
//! the caller's trace context and is aborted when the caller cancels. Failures come back already
//! classified by [`crate::status`].

use std::time::Duration;

use kit::ToolError;
use reqwest::{Method, Url, header};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{Instrument, field::Empty};

use crate::{
    path,
    propagation::CallScope,
    status::{self, TransportFailure},
};

/// Timeouts and limits of the client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where the API lives; every request goes under it.
    pub base_url: Url,
    /// Time to establish a TCP connection.
    pub connect_timeout: Duration,
    /// Time for a whole request, connection to last byte.
    pub request_timeout: Duration,
    /// Largest answer body accepted: a misbehaving deployment cannot exhaust memory.
    pub max_body_bytes: usize,
}

impl ClientConfig {
    /// The defaults for `base_url`: 2 s to connect, 10 s per request, 8 MiB per answer.
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

/// A client of one deployment of the API; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct ApiClient {
    /// Pooled connections, shared by every session and call.
    http: reqwest::Client,
    base_url: Url,
    max_body_bytes: usize,
}

impl ApiClient {
    /// Builds the client.
    pub fn new(config: ClientConfig) -> Result<Self, BuildError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rest-mcp-server/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&config.base_url) {
            // A proxy elsewhere cannot reach this machine's loopback.
            builder = builder.no_proxy();
        }
        Ok(Self {
            http: builder.build()?,
            base_url: config.base_url,
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// The base URL every request goes under.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// `GET` the resource at `segments` under the base URL and decode its JSON.
    ///
    /// `route` names the endpoint for spans and messages (`/inventory/{productId}`), so span
    /// names stay few. Segments from tool arguments must have passed [`path::segment`].
    pub async fn get<T: DeserializeOwned>(
        &self,
        route: &str,
        segments: &[&str],
        scope: &CallScope,
    ) -> Result<T, ToolError> {
        self.send(Method::GET, route, segments, None, scope).await
    }

    /// `POST` `body` as JSON to the resource at `segments` and decode the JSON answer.
    ///
    /// Only for the API's idempotent writes (a reservation keyed by its order id, a release):
    /// the client itself never repeats a request, but its callers' retry policies may.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        segments: &[&str],
        body: &B,
        scope: &CallScope,
    ) -> Result<T, ToolError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            ToolError::internal(format!("POST {route}: cannot encode the request: {e}"))
        })?;
        self.send(Method::POST, route, segments, Some(body), scope)
            .await
    }

    /// One request with an optional JSON body, in a client span, abandoned on cancellation.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        segments: &[&str],
        body: Option<Vec<u8>>,
        scope: &CallScope,
    ) -> Result<T, ToolError> {
        let url = path::endpoint(&self.base_url, segments)?;
        let span = tracing::info_span!(
            "http.client",
            otel.name = %format!("{method} {route}"),
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = %method,
            url.full = %url,
            server.address = self.base_url.host_str().unwrap_or_default(),
            http.response.status_code = Empty,
            error.type = Empty,
        );
        let headers = scope.headers(&span);
        let endpoint = format!("{method} {url}");
        let outcome = async {
            tokio::select! {
                outcome = self.fetch(method, url, headers, body, &endpoint) => outcome,
                _ = scope.ct.cancelled() => Err(ToolError::unavailable(format!(
                    "{endpoint} abandoned: the call was cancelled"
                ))),
            }
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = &outcome {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", e.kind.as_str());
            tracing::debug!(parent: &span, error = %e, "REST API call failed");
        }
        outcome
    }

    async fn fetch<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        headers: header::HeaderMap,
        body: Option<Vec<u8>>,
        endpoint: &str,
    ) -> Result<T, ToolError> {
        let transport = |e: reqwest::Error| {
            status::from_transport(TransportFailure::of(&e), &format!("{endpoint}: {e}"))
        };
        let mut request = self
            .http
            .request(method, url)
            .headers(headers)
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(ToolError::internal(format!(
                    "{endpoint}: the answer is larger than {} bytes",
                    self.max_body_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(status::from_status(
                status,
                retry_after.as_ref(),
                &body,
                endpoint,
                chrono::Utc::now(),
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            ToolError::internal(format!(
                "{endpoint}: the answer is not the expected JSON: {e}"
            ))
        })
    }
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_bases_are_recognised() {
        for (url, loopback) in [
            ("http://127.0.0.1:8090", true),
            ("http://localhost:1", true),
            ("http://[::1]:1", true),
            ("http://10.0.0.1", false),
            ("https://api.example.com", false),
        ] {
            let url = Url::parse(url).expect("url");
            assert_eq!(is_loopback(&url), loopback, "{url}");
        }
    }
}
