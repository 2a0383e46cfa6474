//! What a tool call hands on to its HTTP requests: the caller's trace context, the call's
//! correlation id (`X-Correlation-ID`, so the API's log lines name the same call) and
//! cancellation.
//!
//! The W3C headers come from the request's client span when OpenTelemetry export is on (the API's
//! span then hangs under this server's span). With export off, spans carry no context, so the
//! caller's own `_meta.traceparent`/`tracestate` are forwarded as they came: the backend still
//! joins the caller's trace. A `traceparent` that is not valid W3C syntax is not forwarded.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use rmcp::handler::server::common::{AsRequestContext, FromContextPart};
use tokio_util::sync::CancellationToken;

/// Header and `_meta` key of the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Header and `_meta` key of the W3C trace state.
pub const TRACESTATE: &str = "tracestate";

/// Longest `tracestate` forwarded (the W3C limit is 32 members; 512 bytes is the usual cap).
const MAX_TRACESTATE_LEN: usize = 512;

/// The per-call context a tool passes to [`crate::client::ApiClient`]; a tool function takes it
/// as an argument (rmcp extracts it from the request context).
#[derive(Debug, Clone, Default)]
pub struct CallScope {
    /// The caller's `_meta.traceparent`, when valid.
    pub traceparent: Option<String>,
    /// The caller's `_meta.tracestate`, kept only with a valid `traceparent`.
    pub tracestate: Option<String>,
    /// The call's correlation id, as the kit decided it (the caller's, or generated).
    pub correlation: Option<kit::correlation::CorrelationId>,
    /// Cancelled when the caller cancels the tool call; aborts the HTTP request.
    pub ct: CancellationToken,
}

impl<C: AsRequestContext> FromContextPart<C> for CallScope {
    fn from_context_part(context: &mut C) -> Result<Self, rmcp::ErrorData> {
        let context = context.as_request_context();
        let mut scope = Self::from_meta(
            context.meta.get_traceparent(),
            context.meta.get_tracestate(),
            context.ct.clone(),
        );
        scope.correlation = kit::correlation::of_call(context);
        Ok(scope)
    }
}

impl CallScope {
    /// A scope from the caller's `_meta` values.
    pub fn from_meta(
        traceparent: Option<&str>,
        tracestate: Option<&str>,
        ct: CancellationToken,
    ) -> Self {
        let traceparent = traceparent
            .map(str::trim)
            .filter(|tp| is_valid_traceparent(tp))
            .map(str::to_owned);
        let tracestate = tracestate
            .filter(|_| traceparent.is_some())
            .map(str::trim)
            .filter(|ts| !ts.is_empty() && ts.len() <= MAX_TRACESTATE_LEN)
            .map(str::to_owned);
        Self {
            traceparent,
            tracestate,
            correlation: None,
            ct,
        }
    }

    /// The trace headers for a request made inside `span`.
    pub fn headers(&self, span: &tracing::Span) -> HeaderMap {
        self.headers_given(kit::telemetry::trace_headers(span))
    }

    /// The trace headers, given what the span's own context injects (empty with export off).
    fn headers_given(&self, from_span: HashMap<String, String>) -> HeaderMap {
        let pairs: Vec<(&str, &str)> = if from_span.contains_key(TRACEPARENT) {
            from_span
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        } else {
            [
                (TRACEPARENT, self.traceparent.as_deref()),
                (TRACESTATE, self.tracestate.as_deref()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
        };
        let mut headers = HeaderMap::new();
        if let Some(value) = self.correlation.as_ref().and_then(|c| c.header_value()) {
            headers.insert(kit::correlation::CORRELATION_ID_HEADER, value);
        }
        for (name, value) in pairs {
            // Values that are not valid header text are dropped rather than sent mangled.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        headers
    }
}

/// Whether `s` is a W3C `traceparent`: `vv-<32 hex>-<16 hex>-<2 hex>`, lowercase, version not
/// `ff`, ids not all zeros (version 00 has exactly four fields; later versions may add more).
pub fn is_valid_traceparent(s: &str) -> bool {
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let parts: Vec<&str> = s.split('-').collect();
    let [version, trace_id, parent_id, flags, rest @ ..] = parts.as_slice() else {
        return false;
    };
    hex(version, 2)
        && *version != "ff"
        && (rest.is_empty() || *version != "00")
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_syntax() {
        assert!(is_valid_traceparent(TP));
        assert!(!is_valid_traceparent(""));
        assert!(!is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!is_valid_traceparent(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"
        ));
        assert!(!is_valid_traceparent(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(&format!("{TP}-extra")));
        assert!(is_valid_traceparent(&format!("01{}-extra", &TP[2..])));
    }

    #[test]
    fn without_a_span_context_the_callers_meta_is_forwarded() {
        let scope = CallScope::from_meta(Some(TP), Some("vendor=abc"), CancellationToken::new());
        let headers = scope.headers_given(HashMap::new());
        assert_eq!(
            headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()),
            Some(TP)
        );
        assert_eq!(
            headers.get(TRACESTATE).and_then(|v| v.to_str().ok()),
            Some("vendor=abc")
        );
        // Also through the public path: a span without an OpenTelemetry layer injects nothing.
        let headers = scope.headers(&tracing::Span::none());
        assert_eq!(
            headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()),
            Some(TP)
        );
    }

    #[test]
    fn the_spans_own_context_wins_when_there_is_one() {
        let scope = CallScope::from_meta(Some(TP), Some("vendor=abc"), CancellationToken::new());
        let own = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
        let headers =
            scope.headers_given(HashMap::from([(TRACEPARENT.to_owned(), own.to_owned())]));
        assert_eq!(
            headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()),
            Some(own)
        );
        assert!(headers.get(TRACESTATE).is_none());
    }

    #[test]
    fn the_correlation_id_travels_as_a_header_with_or_without_trace_context() {
        let mut scope = CallScope::from_meta(None, None, CancellationToken::new());
        scope.correlation = kit::correlation::CorrelationId::parse("corr-7");
        let headers = scope.headers_given(HashMap::new());
        assert_eq!(
            headers
                .get(kit::correlation::CORRELATION_ID_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("corr-7")
        );
        assert!(headers.get(TRACEPARENT).is_none());
    }

    #[test]
    fn invalid_or_absent_context_forwards_nothing() {
        let ct = CancellationToken::new;
        assert!(
            CallScope::from_meta(None, Some("a=b"), ct())
                .headers_given(HashMap::new())
                .is_empty()
        );
        let scope = CallScope::from_meta(Some("00-zz\r\nx: y"), Some("a=b"), ct());
        assert_eq!(scope.traceparent, None);
        assert_eq!(
            scope.tracestate, None,
            "tracestate only travels with a traceparent"
        );
        assert!(scope.headers_given(HashMap::new()).is_empty());
        let scope = CallScope::from_meta(Some(TP), Some("a=b\nc"), ct());
        let headers = scope.headers_given(HashMap::new());
        assert!(headers.get(TRACEPARENT).is_some());
        assert!(headers.get(TRACESTATE).is_none(), "not valid header text");
    }
}
