//! The HTTP client of streamable-HTTP upstreams: reqwest, plus each request's W3C trace context
//! (`traceparent`, `tracestate`, `baggage` from its `_meta`) sent as HTTP headers too, so HTTP
//! middleware and proxies in front of an upstream see the same trace as its MCP handler.

use std::{collections::HashMap, future::Future, sync::Arc};

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::{
    model::{ClientJsonRpcMessage, GetMeta, JsonRpcMessage},
    transport::streamable_http_client::{
        SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
        StreamableHttpResponseLimits,
    },
};
use sse_stream::Sse;

/// The `_meta` keys copied into HTTP headers of the same name.
const TRACE_KEYS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// reqwest, adding the trace headers of each posted request.
#[derive(Debug, Clone)]
pub struct TracedClient(pub reqwest::Client);

/// Adds the message's trace context and correlation id to `headers` (headers configured for the
/// server win).
fn add_trace_headers(
    message: &ClientJsonRpcMessage,
    headers: &mut HashMap<HeaderName, HeaderValue>,
) {
    let JsonRpcMessage::Request(request) = message else {
        return;
    };
    let meta = request.request.get_meta();
    for key in TRACE_KEYS {
        let Some(value) = meta.get(key).and_then(|v| v.as_str()) else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.entry(HeaderName::from_static(key)).or_insert(value);
        }
    }
    // The call's correlation id, for the upstream's HTTP front (and any proxy) to log.
    if let Some(value) = meta
        .get(kit::correlation::META_KEY)
        .and_then(|v| v.as_str())
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers
            .entry(kit::correlation::CORRELATION_ID_HEADER)
            .or_insert(value);
    }
}

/// Drops the request URL from a reqwest error. An upstream's URL may carry an `${env:..}` secret
/// (`?apiKey=...`), and rmcp logs transport errors itself, where the orchestrator cannot mask it.
fn without_url<T>(
    result: Result<T, StreamableHttpError<reqwest::Error>>,
) -> Result<T, StreamableHttpError<reqwest::Error>> {
    result.map_err(|e| match e {
        StreamableHttpError::Client(e) => StreamableHttpError::Client(e.without_url()),
        other => other,
    })
}

impl StreamableHttpClient for TracedClient {
    type Error = reqwest::Error;

    fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>>>
    + Send
    + '_ {
        add_trace_headers(&message, &mut custom_headers);
        let sent = self
            .0
            .post_message(uri, message, session_id, auth_header, custom_headers);
        async move { without_url(sent.await) }
    }

    fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<Output = Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>>>
    + Send
    + '_ {
        add_trace_headers(&message, &mut custom_headers);
        let sent = self.0.post_message_with_max_sse_event_size(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        );
        async move { without_url(sent.await) }
    }

    fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> impl Future<Output = Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>>>
    + Send
    + '_ {
        add_trace_headers(&message, &mut custom_headers);
        let sent = self.0.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        );
        async move { without_url(sent.await) }
    }

    fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<(), StreamableHttpError<Self::Error>>> + Send + '_ {
        let sent = self
            .0
            .delete_session(uri, session_id, auth_header, custom_headers);
        async move { without_url(sent.await) }
    }

    fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<
        Output = Result<
            BoxStream<'static, Result<Sse, SseError>>,
            StreamableHttpError<Self::Error>,
        >,
    > + Send
    + '_ {
        let sent = self
            .0
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers);
        async move { without_url(sent.await) }
    }

    fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<
        Output = Result<
            BoxStream<'static, Result<Sse, SseError>>,
            StreamableHttpError<Self::Error>,
        >,
    > + Send
    + '_ {
        let sent = self.0.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        );
        async move { without_url(sent.await) }
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{
        CallToolRequest, CallToolRequestParams, ClientRequest, JsonRpcRequest, JsonRpcVersion2_0,
        RequestId, RequestMetaObject,
    };

    use super::*;

    fn call_with(meta: RequestMetaObject) -> ClientJsonRpcMessage {
        let mut request =
            ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new("t")));
        request.get_meta_mut().extend(meta);
        JsonRpcMessage::Request(JsonRpcRequest {
            jsonrpc: JsonRpcVersion2_0,
            id: RequestId::Number(1),
            request,
        })
    }

    #[test]
    fn trace_context_in_meta_becomes_headers_without_overriding_configured_ones() {
        let mut meta = RequestMetaObject::new();
        meta.set_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        meta.insert("baggage".into(), "tenant=acme".into());
        meta.insert("token".into(), "secret".into());
        let mut headers = HashMap::new();
        headers.insert(
            HeaderName::from_static("tracestate"),
            HeaderValue::from_static("configured=1"),
        );
        add_trace_headers(&call_with(meta), &mut headers);
        let header = |name: &'static str| {
            headers
                .get(&HeaderName::from_static(name))
                .and_then(|v| v.to_str().ok())
        };
        assert_eq!(
            header("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(header("baggage"), Some("tenant=acme"));
        assert_eq!(header("tracestate"), Some("configured=1"));
        assert_eq!(headers.len(), 3, "only trace keys become headers");
    }

    #[test]
    fn the_correlation_id_in_meta_becomes_the_x_correlation_id_header() {
        let mut meta = RequestMetaObject::new();
        meta.insert("correlationId".into(), "corr-7".into());
        let mut headers = HashMap::new();
        add_trace_headers(&call_with(meta), &mut headers);
        assert_eq!(
            headers
                .get(&HeaderName::from_static("x-correlation-id"))
                .and_then(|v| v.to_str().ok()),
            Some("corr-7")
        );
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn no_meta_no_headers() {
        let mut headers = HashMap::new();
        add_trace_headers(&call_with(RequestMetaObject::new()), &mut headers);
        assert!(headers.is_empty());
    }
}
