//! Correlation ids: one id per call, on every log line of it, in every hop and in the answer.
//!
//! An id comes from the caller when it sends one (an `X-Correlation-ID` or `X-Request-ID` header
//! on the HTTP front, or `_meta.correlationId` in the request) and is generated otherwise. Who
//! wins when several are present is decided in one place, [`resolve`]:
//!
//! 1. an id the client sent in a header (`X-Correlation-ID`, else `X-Request-ID`);
//! 2. `_meta.correlationId` of the request (how the orchestrator hands its id to upstreams);
//! 3. the id the HTTP front generated for a request that named none;
//! 4. a freshly generated id (stdio, or a handler reached without the HTTP front).
//!
//! The HTTP front decides the id in a middleware ([`correlate`]) because a streamable HTTP
//! response may be an SSE stream whose headers go out before the handler runs: the
//! `X-Correlation-ID` response header can only name an id known at that point. When a request
//! carries no header but names an id in `_meta`, that id is the call's (rule 2 before rule 3);
//! the response header then names the front's generated id, the result's `_meta` the call's.
//!
//! Ids are validated ([`CorrelationId::parse`]): 1 to 128 printable ASCII characters without
//! spaces, so a client cannot forge log lines or header values with one. An invalid id is
//! ignored and replaced by a generated one (128 random bits in hex).

use std::fmt;

use axum::{extract::Request, middleware::Next, response::Response};
use http::{HeaderMap, HeaderName, HeaderValue};
use rmcp::{RoleServer, model::MetaObject, service::RequestContext};

/// The request and response header naming a call's correlation id.
pub const CORRELATION_ID_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The request header read when `X-Correlation-ID` is absent (what many proxies set).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The `_meta` key naming a call's correlation id, in requests and results.
pub const META_KEY: &str = "correlationId";

/// The span field whose value JSON log lines repeat as a top-level `correlation_id`.
pub const SPAN_FIELD: &str = "correlation_id";

/// Longest accepted id, in bytes.
pub const MAX_LEN: usize = 128;

/// A validated correlation id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// `value` if it is a valid id: 1 to [`MAX_LEN`] printable ASCII characters, no spaces.
    pub fn parse(value: &str) -> Option<Self> {
        let valid = !value.is_empty()
            && value.len() <= MAX_LEN
            && value.bytes().all(|b| b.is_ascii_graphic());
        valid.then(|| Self(value.to_owned()))
    }

    /// `value` if it is valid, else a generated id.
    pub fn parse_or_generate(value: &str) -> Self {
        Self::parse(value).unwrap_or_else(Self::generate)
    }

    /// A new random id: 128 bits as 32 lowercase hex digits.
    pub fn generate() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a header value (always valid: the id is visible ASCII).
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.0).ok()
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id the HTTP front chose for one request, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCorrelation {
    /// The id; also set as the request's `x-correlation-id` header and echoed in the response.
    pub id: CorrelationId,
    /// Whether the client sent it (a header); a generated id yields to `_meta.correlationId`.
    pub supplied: bool,
}

impl RequestCorrelation {
    /// The first valid id among the `X-Correlation-ID` and `X-Request-ID` headers, as supplied.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        [CORRELATION_ID_HEADER, REQUEST_ID_HEADER]
            .iter()
            .flat_map(|name| headers.get_all(name))
            .find_map(|v| v.to_str().ok().and_then(CorrelationId::parse))
            .map(|id| Self { id, supplied: true })
    }

    /// The id from the request's headers, or a generated one.
    pub fn from_headers_or_generate(headers: &HeaderMap) -> Self {
        Self::from_headers(headers).unwrap_or_else(|| Self {
            id: CorrelationId::generate(),
            supplied: false,
        })
    }
}

/// Axum middleware for the HTTP front: decides the request's id (from its headers, else
/// generated), records it in the request's extensions ([`RequestCorrelation`]) and its
/// `x-correlation-id` header (for handlers that only see headers), and echoes it in the
/// response's `X-Correlation-ID` header.
pub async fn correlate(mut request: Request, next: Next) -> Response {
    let correlation = RequestCorrelation::from_headers_or_generate(request.headers());
    let value = correlation.id.header_value();
    if let Some(value) = &value {
        request
            .headers_mut()
            .insert(CORRELATION_ID_HEADER, value.clone());
    }
    request.extensions_mut().insert(correlation);
    let mut response = next.run(request).await;
    if let Some(value) = value {
        response.headers_mut().insert(CORRELATION_ID_HEADER, value);
    }
    response
}

/// The call's id from what the HTTP front decided (if the request came through it) and the
/// request's `_meta`, by the precedence in the module docs.
pub fn resolve(http: Option<&RequestCorrelation>, meta: &MetaObject) -> CorrelationId {
    if let Some(http) = http.filter(|h| h.supplied) {
        return http.id.clone();
    }
    if let Some(id) = meta
        .get(META_KEY)
        .and_then(|v| v.as_str())
        .and_then(CorrelationId::parse)
    {
        return id;
    }
    match http {
        Some(http) => http.id.clone(),
        None => CorrelationId::generate(),
    }
}

/// The id of one MCP request a server handles: [`resolve`] over the HTTP request rmcp recorded
/// in the context's extensions (when served over HTTP) and the request's `_meta`.
///
/// Without the [`correlate`] middleware in front, a valid id in the HTTP headers still counts as
/// supplied by the client.
pub fn of_request(context: &RequestContext<RoleServer>) -> CorrelationId {
    let http = context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| {
            parts
                .extensions
                .get::<RequestCorrelation>()
                .cloned()
                .or_else(|| RequestCorrelation::from_headers(&parts.headers))
        });
    resolve(http.as_ref(), &context.meta)
}

/// The id of the tool call being served, as [`crate::ServerKit::call_tool`] decided it, for a tool
/// that hands it on to the services it calls (as an `X-Correlation-ID` header, say). `None`
/// outside a call made through the kit.
pub fn of_call(context: &RequestContext<RoleServer>) -> Option<CorrelationId> {
    context.extensions.get::<CorrelationId>().cloned()
}

/// Sets `_meta.correlationId` of a result (creating its `_meta` if needed).
pub fn set_in_meta(meta: &mut Option<MetaObject>, id: &CorrelationId) {
    meta.get_or_insert_default()
        .insert(META_KEY.to_owned(), id.as_str().into());
}

/// The `correlation_id` in a span's fields as the JSON field formatter wrote them, if any.
pub(crate) fn from_json_fields(fields: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Fields {
        correlation_id: Option<String>,
    }
    if !fields.contains(SPAN_FIELD) {
        return None;
    }
    serde_json::from_str::<Fields>(fields)
        .ok()
        .and_then(|f| f.correlation_id)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt as _;

    use super::*;

    fn meta_with(id: &str) -> MetaObject {
        let mut meta = MetaObject::new();
        meta.insert(META_KEY.into(), id.into());
        meta
    }

    fn is_generated(id: &CorrelationId) -> bool {
        id.as_str().len() == 32 && id.as_str().bytes().all(|b| b.is_ascii_hexdigit())
    }

    #[test]
    fn ids_are_printable_ascii_without_spaces_up_to_128_bytes() {
        for ok in ["a", "test-corr-123", "Req:42/x_y.z", &"x".repeat(MAX_LEN)] {
            assert_eq!(CorrelationId::parse(ok).map(|i| i.0), Some(ok.to_owned()));
        }
        for bad in [
            "",
            "has space",
            "tab\there",
            "new\nline",
            "ünïcode",
            "nul\0",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert_eq!(CorrelationId::parse(bad), None, "{bad:?}");
            assert!(is_generated(&CorrelationId::parse_or_generate(bad)));
        }
    }

    #[test]
    fn generated_ids_are_128_bit_hex_and_differ() {
        let a = CorrelationId::generate();
        let b = CorrelationId::generate();
        assert!(is_generated(&a) && is_generated(&b));
        assert_ne!(a, b);
        assert!(a.header_value().is_some());
    }

    #[test]
    fn a_header_supplied_id_beats_meta_which_beats_a_front_generated_id() {
        let supplied = RequestCorrelation {
            id: CorrelationId::parse_or_generate("from-header"),
            supplied: true,
        };
        let generated = RequestCorrelation {
            id: CorrelationId::generate(),
            supplied: false,
        };
        let meta = meta_with("from-meta");
        let empty = MetaObject::new();

        assert_eq!(resolve(Some(&supplied), &meta).as_str(), "from-header");
        assert_eq!(resolve(Some(&generated), &meta).as_str(), "from-meta");
        assert_eq!(resolve(Some(&generated), &empty), generated.id);
        assert_eq!(resolve(None, &meta).as_str(), "from-meta");
        assert!(is_generated(&resolve(None, &empty)));
        // An invalid `_meta` id is ignored, not echoed.
        assert_eq!(
            resolve(Some(&generated), &meta_with("bad id")),
            generated.id
        );
        assert!(is_generated(&resolve(None, &meta_with("bad id"))));
        let mut not_a_string = MetaObject::new();
        not_a_string.insert(META_KEY.into(), 7.into());
        assert!(is_generated(&resolve(None, &not_a_string)));
    }

    #[test]
    fn headers_prefer_x_correlation_id_then_x_request_id_and_skip_invalid_values() {
        let mut headers = HeaderMap::new();
        assert_eq!(RequestCorrelation::from_headers(&headers), None);
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("req-1"));
        assert_eq!(
            RequestCorrelation::from_headers(&headers).map(|c| c.id.0),
            Some("req-1".into())
        );
        headers.insert(CORRELATION_ID_HEADER, HeaderValue::from_static("corr-1"));
        let found = RequestCorrelation::from_headers(&headers);
        assert_eq!(found.as_ref().map(|c| c.id.as_str()), Some("corr-1"));
        assert_eq!(found.map(|c| c.supplied), Some(true));
        headers.insert(CORRELATION_ID_HEADER, HeaderValue::from_static("not valid"));
        assert_eq!(
            RequestCorrelation::from_headers(&headers).map(|c| c.id.0),
            Some("req-1".into())
        );
        headers.remove(REQUEST_ID_HEADER);
        let generated = RequestCorrelation::from_headers_or_generate(&headers);
        assert!(!generated.supplied && is_generated(&generated.id));
    }

    /// What the handler saw: the extension and the `x-correlation-id` request header.
    type Seen = Arc<Mutex<Vec<(Option<RequestCorrelation>, Option<String>)>>>;

    /// A router whose handler reports what the middleware gave it.
    fn app(seen: Seen) -> Router {
        Router::new()
            .route(
                "/",
                get(move |request: Request| async move {
                    let header = request
                        .headers()
                        .get(CORRELATION_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let ext = request.extensions().get::<RequestCorrelation>().cloned();
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((ext, header));
                    "ok"
                }),
            )
            .layer(axum::middleware::from_fn(correlate))
    }

    fn echoed(response: &Response) -> Option<String> {
        response
            .headers()
            .get(CORRELATION_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    #[tokio::test]
    async fn the_middleware_records_and_echoes_a_supplied_or_generated_id() {
        let seen = Seen::default();
        let request = |header: Option<(&str, &str)>| {
            let mut builder = http::Request::builder().uri("/");
            if let Some((name, value)) = header {
                builder = builder.header(name, value);
            }
            builder.body(Body::empty())
        };

        let supplied = request(Some(("X-Request-ID", "abc-123"))).expect("request");
        let response = app(seen.clone())
            .oneshot(supplied)
            .await
            .expect("infallible");
        assert_eq!(echoed(&response).as_deref(), Some("abc-123"));

        let invalid = request(Some(("X-Correlation-ID", "two words"))).expect("request");
        let response = app(seen.clone())
            .oneshot(invalid)
            .await
            .expect("infallible");
        let generated = echoed(&response).unwrap_or_default();
        assert!(
            is_generated(&CorrelationId(generated.clone())),
            "{generated}"
        );

        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            seen,
            vec![
                (
                    Some(RequestCorrelation {
                        id: CorrelationId("abc-123".into()),
                        supplied: true
                    }),
                    Some("abc-123".into())
                ),
                (
                    Some(RequestCorrelation {
                        id: CorrelationId(generated.clone()),
                        supplied: false
                    }),
                    Some(generated)
                ),
            ]
        );
    }

    #[test]
    fn set_in_meta_adds_the_id_and_keeps_other_keys() {
        let id = CorrelationId::parse_or_generate("c-1");
        let mut none = None;
        set_in_meta(&mut none, &id);
        assert_eq!(none, Some(meta_with("c-1")));
        let mut some = Some(meta_with("old"));
        if let Some(m) = some.as_mut() {
            m.insert("sources".into(), 3.into());
        }
        set_in_meta(&mut some, &id);
        let meta = some.unwrap_or_default();
        assert_eq!(meta.get(META_KEY), Some(&"c-1".into()));
        assert_eq!(meta.get("sources"), Some(&3.into()));
    }

    #[test]
    fn span_fields_yield_their_correlation_id() {
        assert_eq!(
            from_json_fields(r#"{"a":1,"correlation_id":"x\"y"}"#).as_deref(),
            Some("x\"y")
        );
        assert_eq!(from_json_fields(r#"{"a":1}"#), None);
        assert_eq!(from_json_fields(""), None);
    }
}
