//! Trace continuation on the API side: every request's span becomes a child of the W3C
//! `traceparent` its caller sent, so one trace reaches from the agent to this HTTP backend. The
//! span also names the request's correlation id (`X-Correlation-ID` or `X-Request-ID`, else a new
//! one), so the API's log lines (an injected 503, say) name the tool call that caused them; the
//! response's `X-Correlation-ID` header echoes it.
//!
//! The API also keeps the last trace context it received, so a test or a person can check
//! propagation without a collector: with `--debug-endpoints`, `GET /debug/last-traceparent`
//! returns it. Each one is also logged at `debug` (`RUST_LOG=rest_server::api::trace=debug`
//! shows `trace context received traceparent=...`); not at `info`, which would add a line per
//! tool call to the logs of `rest-mcp-server` when the API runs in-process.

use std::sync::{Arc, Mutex};

use axum::{
    Json,
    extract::{MatchedPath, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::Response,
};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::ApiState;

/// The trace context of one received request.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenTrace {
    /// The `traceparent` header as received; `None` until a request carried one.
    pub traceparent: Option<String>,
    /// The `tracestate` header of the same request, if any.
    pub tracestate: Option<String>,
    /// The path that request asked for.
    pub path: Option<String>,
}

/// The last trace context received; shared by every request of one API instance.
#[derive(Debug, Default)]
pub struct TraceLog {
    last: Mutex<SeenTrace>,
}

impl TraceLog {
    fn record(&self, seen: SeenTrace) {
        // A poisoned lock only means a panic mid-write; the value is a plain record.
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = seen;
    }

    /// The last trace context received.
    pub fn last(&self) -> SeenTrace {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Reads W3C trace headers from an HTTP request.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Opens the request's server span as a child of the caller's trace, and records what arrived.
pub(crate) async fn continue_trace(
    State(state): State<Arc<ApiState>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = matched
        .as_ref()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    // The caller's id (the REST MCP server sends its call's), or a new one: every line logged
    // while serving the request names it, and the response header echoes it.
    let correlation =
        kit::correlation::RequestCorrelation::from_headers_or_generate(request.headers());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %path,
        http.response.status_code = Empty,
        correlation_id = %correlation.id,
    );
    let headers = request.headers();
    let traceparent = header_str(headers, "traceparent");
    if traceparent.is_some() {
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        // Fails only when no OpenTelemetry layer records the span (export off): nothing to link.
        let _ = span.set_parent(cx);
    }
    // The debug view must not overwrite what it is asked to show.
    if let Some(traceparent) = traceparent.filter(|_| !path.starts_with("/debug/")) {
        let tracestate = header_str(headers, "tracestate");
        span.in_scope(|| {
            tracing::debug!(
                %traceparent,
                tracestate = tracestate.as_deref().unwrap_or(""),
                %path,
                "trace context received"
            );
        });
        state.traces.record(SeenTrace {
            traceparent: Some(traceparent),
            tracestate,
            path: Some(path),
        });
    }
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Some(value) = correlation.id.header_value() {
        response
            .headers_mut()
            .insert(kit::correlation::CORRELATION_ID_HEADER, value);
    }
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `GET /debug/last-traceparent`: the last trace context received (all fields null before any).
pub(crate) async fn last_traceparent(State(state): State<Arc<ApiState>>) -> Json<SeenTrace> {
    Json(state.traces.last())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn the_callers_context_is_read_from_the_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        headers.insert("tracestate", http::HeaderValue::from_static("vendor=1"));
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(sc.trace_state().get("vendor"), Some("1"));
    }

    #[test]
    fn the_log_keeps_the_last_context() {
        let log = TraceLog::default();
        assert_eq!(log.last(), SeenTrace::default());
        for n in 1..=2 {
            log.record(SeenTrace {
                traceparent: Some(format!("tp{n}")),
                tracestate: None,
                path: Some("/inventory".into()),
            });
        }
        assert_eq!(log.last().traceparent.as_deref(), Some("tp2"));
    }
}
