//! The stdio front's framing: one JSON-RPC message per line, checked before the handler sees it,
//! so that every malformed line gets the answer JSON-RPC 2.0 prescribes.
//!
//! rmcp's own stdio transport ignores a line that is not JSON, drops an over-long line, and answers
//! a well-formed but invalid message with an "Invalid request" that carries no `id`. A client then
//! waits forever for an answer, or cannot tell which request failed. Here:
//!
//! | line | answer |
//! |---|---|
//! | not JSON (or not UTF-8, or cut short) | `-32700` parse error, `id: null` |
//! | a JSON array (batches were removed from MCP in 2025-06-18) | `-32600`, `id: null` |
//! | JSON that is not a JSON-RPC message | `-32600`, with the message's `id` when it has a usable one, else `null` |
//! | a sound request whose `params` do not parse (`"params": [1]`, `"_meta": "x"`) | `-32602` for a method we serve, `-32601` for any other, with its `id` |
//! | a notification of a shape or method we do not know | none: JSON-RPC never answers notifications |
//! | longer than the limit | `-32600` naming the limit, `id: null`; the rest of the line is skipped |
//! | a valid message its [`Gate`] refuses (a request id already in flight, on the stdio front) | the gate's error, with the request's `id` |
//!
//! A [`Gate`] also decides *when* a message is passed on: while it waits, nothing more is read,
//! so a peer that does not read the answers cannot make the process hold ever more requests.
//! Valid messages take the same path as with rmcp's transport (one `serde_json` parse); only a
//! line that fails it is parsed again to classify the failure. A `tools/call` request, the
//! message an agent sends most, is read as rmcp's `CallToolRequest` directly ([`tool_call`]):
//! rmcp's message type is an untagged enum of untagged enums, which buffers the line whole and
//! tries each of its request kinds in turn.
//!
//! rmcp also takes a request for a method it knows, whose params do not fit that method, as a
//! custom request, which its default handler answers "method not found" (`-32601`); a handler
//! answers it with [`custom_request_error`] instead, which says `-32602` and why.

use std::pin::Pin;

use futures::{Sink, SinkExt, Stream};
use rmcp::{
    RoleServer,
    model::{JsonRpcMessage, ServerResult},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    sync::mpsc,
};
use tokio_util::sync::PollSender;

/// JSON-RPC 2.0: invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0: the JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0: the method does not exist (or is not available).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC 2.0: invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;

/// Why a message could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The writer has stopped (stdout closed).
    #[error("the output stream is closed")]
    Closed,
    /// The message did not serialize (cannot happen for rmcp's own types).
    #[error("message does not serialize: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// A message the [`Gate`] refused: the JSON-RPC error its request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The JSON-RPC error code.
    pub code: i64,
    /// The error message, naming why.
    pub message: String,
}

/// Admits each valid message read before the handler sees it, and decides when.
pub trait Gate: Send + Sync + 'static {
    /// Resolves when `message` may be passed on (`Ok`), or refuses it (`Err`: a request is
    /// answered with the error, anything else dropped). Nothing more is read until it resolves.
    fn admit(
        &self,
        message: &RxJsonRpcMessage<RoleServer>,
    ) -> impl std::future::Future<Output = Result<(), Refused>> + Send;
}

/// A gate that admits every message at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open;

impl Gate for Open {
    async fn admit(&self, _message: &RxJsonRpcMessage<RoleServer>) -> Result<(), Refused> {
        Ok(())
    }
}

/// Messages to the peer.
pub type FrameSink = Pin<Box<dyn Sink<TxJsonRpcMessage<RoleServer>, Error = FrameError> + Send>>;
/// Messages from the peer that passed the checks.
pub type FrameStream = Pin<Box<dyn Stream<Item = RxJsonRpcMessage<RoleServer>> + Send>>;

/// A server transport over the process's stdin/stdout, lines at most `max_line` bytes.
///
/// When stdin and stdout are pipes (as they are when an agent starts the process), they are read
/// and written through the runtime's readiness polling. Tokio's `stdin()`/`stdout()` instead hand
/// every read and write to a blocking thread, which costs two thread wake-ups per message, a
/// large part of a fast call's latency on a small machine. Anything else (a terminal, a file)
/// keeps the portable path.
pub fn stdio(max_line: usize, gate: impl Gate) -> (FrameSink, FrameStream) {
    #[cfg(unix)]
    if let Some((reader, writer)) = stdio_as_pipes() {
        return transport_with_gate(reader, writer, max_line, gate);
    }
    let (reader, writer) = rmcp::transport::stdio_pipes();
    transport_with_gate(reader, writer, max_line, gate)
}

/// Stdin and stdout as non-blocking pipe ends, when both are pipes.
///
/// The descriptors are duplicated, so fds 0 and 1 stay open; the file descriptions they share
/// become non-blocking, which nothing else in a stdio server touches (stdout is the protocol's).
#[cfg(unix)]
fn stdio_as_pipes() -> Option<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    use std::os::fd::AsFd;
    let input = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let output = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    // Both checks before either end is made non-blocking, so a failure changes nothing.
    let is_pipe = |fd: &std::os::fd::OwnedFd| {
        std::fs::File::from(fd.try_clone().ok()?)
            .metadata()
            .ok()
            .map(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
    };
    if is_pipe(&input) != Some(true) || is_pipe(&output) != Some(true) {
        return None;
    }
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(input).ok()?;
    let writer = tokio::net::unix::pipe::Sender::from_owned_fd(output).ok()?;
    Some((reader, writer))
}

/// A server transport over any byte streams (tests use in-memory pipes), admitting every message.
pub fn transport<R, W>(reader: R, writer: W, max_line: usize) -> (FrameSink, FrameStream)
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    transport_with_gate(reader, writer, max_line, Open)
}

/// A server transport over any byte streams, each valid message passed on when `gate` admits it.
///
/// Both directions are bounded: at most [`QUEUED_FRAMES`] lines wait for the writer and as many
/// messages for the handler; the writer awaits each write, and a full queue holds back whoever
/// fills it.
pub fn transport_with_gate<R, W>(
    reader: R,
    writer: W,
    max_line: usize,
    gate: impl Gate,
) -> (FrameSink, FrameStream)
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let (frames_tx, frames_rx) = mpsc::channel::<Vec<u8>>(QUEUED_FRAMES);
    let (messages_tx, messages_rx) = mpsc::channel::<RxJsonRpcMessage<RoleServer>>(QUEUED_FRAMES);
    tokio::spawn(write_frames(writer, frames_rx));
    tokio::spawn(read_frames(
        BufReader::new(reader),
        max_line,
        gate,
        messages_tx,
        frames_tx.clone(),
    ));
    let sink = PollSender::new(frames_tx)
        .sink_map_err(|_| FrameError::Closed)
        .with(|message: TxJsonRpcMessage<RoleServer>| std::future::ready(encode(&message)));
    let stream = futures::stream::unfold(messages_rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    });
    (Box::pin(sink), Box::pin(stream))
}

/// Lines queued for the writer, and messages queued for the handler, at most.
pub const QUEUED_FRAMES: usize = 256;

/// One message as one line; a tool result relayed raw is spliced in as the upstream wrote it
/// ([`crate::raw_result`]).
fn encode(message: &TxJsonRpcMessage<RoleServer>) -> Result<Vec<u8>, FrameError> {
    if let JsonRpcMessage::Response(response) = message
        && let ServerResult::CallToolResult(result) = &response.result
        && let Some(members) = crate::raw_result::members(result)
    {
        let mut line = Vec::with_capacity(members.len() + 256);
        line.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
        serde_json::to_writer(&mut line, &response.id)?;
        line.extend_from_slice(b",\"result\":");
        if let Some(written) = crate::raw_result::write_result(&mut line, result) {
            written?;
        }
        line.extend_from_slice(b"}\n");
        return Ok(line);
    }
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    Ok(line)
}

/// Writes whole lines, flushing once per burst.
async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = frames.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok(frame) = frames.try_recv() {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// One line read, or why not.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A whole line (without its newline).
    Full,
    /// Longer than the limit; skipped to its end.
    Oversized,
    /// End of input (an unterminated last line is dropped: it cannot be a complete message).
    Eof,
}

/// Reads one line into `buf` (cleared first), never holding more than `max` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut oversized = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let (chunk, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !oversized {
            if buf.len() + chunk.len() > max {
                oversized = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(if oversized {
                Line::Oversized
            } else {
                Line::Full
            });
        }
    }
}

async fn read_frames<R: AsyncBufRead + Unpin>(
    mut reader: R,
    max_line: usize,
    gate: impl Gate,
    messages: mpsc::Sender<RxJsonRpcMessage<RoleServer>>,
    frames: mpsc::Sender<Vec<u8>>,
) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let line = match read_line(&mut reader, &mut buf, max_line).await {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin failed; closing the session");
                return;
            }
        };
        let answer = match line {
            Line::Eof => return,
            Line::Oversized => Some(error_frame(
                &Value::Null,
                INVALID_REQUEST,
                &format!("message exceeds the limit of {max_line} bytes"),
            )),
            Line::Full => match check(&buf) {
                Checked::Message(message) => match gate.admit(&message).await {
                    Ok(()) => {
                        if messages.send(*message).await.is_err() {
                            return;
                        }
                        None
                    }
                    Err(refused) => match *message {
                        JsonRpcMessage::Request(request) => Some(error_frame(
                            &serde_json::to_value(&request.id).unwrap_or(Value::Null),
                            refused.code,
                            &refused.message,
                        )),
                        _ => None,
                    },
                },
                Checked::Skip => None,
                Checked::Answer(frame) => Some(frame),
            },
        };
        if let Some(frame) = answer
            && frames.send(frame).await.is_err()
        {
            return;
        }
    }
}

/// What to do with one line.
#[derive(Debug)]
enum Checked {
    Message(Box<RxJsonRpcMessage<RoleServer>>),
    /// Blank line, or a notification we cannot use.
    Skip,
    /// The error response to write.
    Answer(Vec<u8>),
}

/// A `tools/call` request read as rmcp's own `CallToolRequest` (its `Deserialize`, which skips
/// `jsonrpc` and `id` as fields it does not know), with `jsonrpc` and `id` read beside it: the
/// same message rmcp's parse of the whole enum gives, since no other request kind takes the
/// method `tools/call`. `None` for any other line, which then takes rmcp's path.
fn tool_call(line: &[u8]) -> Option<RxJsonRpcMessage<RoleServer>> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[allow(
            dead_code,
            reason = "read only to refuse a line without it, as rmcp does"
        )]
        jsonrpc: rmcp::model::JsonRpcVersion2_0,
        id: rmcp::model::RequestId,
    }
    let request = serde_json::from_slice::<rmcp::model::CallToolRequest>(line).ok()?;
    let envelope = serde_json::from_slice::<Envelope>(line).ok()?;
    Some(JsonRpcMessage::request(
        rmcp::model::ClientRequest::CallToolRequest(request),
        envelope.id,
    ))
}

fn check(line: &[u8]) -> Checked {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Checked::Skip;
    }
    if let Some(message) = tool_call(line) {
        return Checked::Message(Box::new(message));
    }
    let invalid = match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
        Ok(message) => return Checked::Message(Box::new(message)),
        Err(e) => e,
    };
    let value = match serde_json::from_slice::<Value>(line) {
        Ok(value) => value,
        Err(e) => {
            tracing::debug!(error = %e, "a line that is not JSON");
            return Checked::Answer(error_frame(
                &Value::Null,
                PARSE_ERROR,
                &format!("Parse error: {e}"),
            ));
        }
    };
    let Value::Object(object) = &value else {
        let message = if value.is_array() {
            "Invalid request: batches are not supported"
        } else {
            "Invalid request: a message is a JSON object"
        };
        return Checked::Answer(error_frame(&Value::Null, INVALID_REQUEST, message));
    };
    if !object.contains_key("id") && object.get("method").is_some_and(Value::is_string) {
        tracing::debug!(error = %invalid, method = ?object.get("method"), "ignoring a notification we cannot use");
        return Checked::Skip;
    }
    // An id the peer can match: a string or an integer (JSON-RPC ids are never fractions,
    // objects or arrays).
    let id = match object.get("id") {
        Some(id @ Value::String(_)) => id.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n.clone()),
        _ => Value::Null,
    };
    tracing::debug!(error = %invalid, "an invalid JSON-RPC message");
    let reason = if object.get("jsonrpc") != Some(&json!("2.0")) {
        r#""jsonrpc" must be "2.0""#.to_owned()
    } else if !matches!(
        object.get("id"),
        None | Some(Value::String(_) | Value::Number(_))
    ) || id.is_null() && object.contains_key("id")
    {
        r#""id" must be a string or an integer"#.to_owned()
    } else if let Some(method) = object.get("method")
        && !method.is_string()
    {
        r#""method" must be a string"#.to_owned()
    } else if id.as_number().is_some_and(|n| !n.is_i64()) {
        r#""id" is out of range"#.to_owned()
    } else if let Some(Value::String(method)) = object.get("method") {
        // The envelope looks sound, so the params are what failed (rmcp takes any method with
        // object params as a custom request): a method we serve says so, any other is unknown.
        let (code, message) = match fit(method, object.get("params")) {
            Fit::Misfit(e) => (
                INVALID_PARAMS,
                format!("Invalid params for `{method}`: {e}"),
            ),
            Fit::Unknown => (METHOD_NOT_FOUND, format!("Method not found: `{method}`")),
            // Then it is something else (a duplicate key, say).
            Fit::Fits => (INVALID_REQUEST, format!("Invalid request: {invalid}")),
        };
        return Checked::Answer(error_frame(&id, code, &message));
    } else {
        invalid.to_string()
    };
    Checked::Answer(error_frame(
        &id,
        INVALID_REQUEST,
        &format!("Invalid request: {reason}"),
    ))
}

/// Checks a request's params against the types of a method this workspace's servers answer.
type ParamsCheck = fn(Value) -> Result<(), serde_json::Error>;

fn parses<T: serde::de::DeserializeOwned>(request: Value) -> Result<(), serde_json::Error> {
    serde_json::from_value::<T>(request).map(|_| ())
}

/// The client-to-server methods rmcp's `ServerHandler` answers, each with its request type
/// (subscribe, unsubscribe and setLevel are deprecated from 2026-07-28 on; older agents send them).
#[allow(deprecated)]
const SERVED: &[(&str, ParamsCheck)] = {
    use rmcp::model::*;
    &[
        (InitializeResultMethod::VALUE, parses::<InitializeRequest>),
        (DiscoverRequestMethod::VALUE, parses::<DiscoverRequest>),
        (PingRequestMethod::VALUE, parses::<PingRequest>),
        (ListToolsRequestMethod::VALUE, parses::<ListToolsRequest>),
        (CallToolRequestMethod::VALUE, parses::<CallToolRequest>),
        (
            ListResourcesRequestMethod::VALUE,
            parses::<ListResourcesRequest>,
        ),
        (
            ListResourceTemplatesRequestMethod::VALUE,
            parses::<ListResourceTemplatesRequest>,
        ),
        (
            ReadResourceRequestMethod::VALUE,
            parses::<ReadResourceRequest>,
        ),
        (SubscribeRequestMethod::VALUE, parses::<SubscribeRequest>),
        (
            UnsubscribeRequestMethod::VALUE,
            parses::<UnsubscribeRequest>,
        ),
        (
            ListPromptsRequestMethod::VALUE,
            parses::<ListPromptsRequest>,
        ),
        (GetPromptRequestMethod::VALUE, parses::<GetPromptRequest>),
        (CompleteRequestMethod::VALUE, parses::<CompleteRequest>),
        (SetLevelRequestMethod::VALUE, parses::<SetLevelRequest>),
    ]
};

/// How a request's params stand against the methods we serve.
enum Fit {
    /// Not a method we serve.
    Unknown,
    /// A method we serve, and the params fit it.
    Fits,
    /// A method we serve; the params do not fit it, for this reason.
    Misfit(String),
}

fn fit(method: &str, params: Option<&Value>) -> Fit {
    let Some((_, check)) = SERVED.iter().find(|(m, _)| *m == method) else {
        return Fit::Unknown;
    };
    let mut request = serde_json::Map::new();
    request.insert("method".into(), Value::String(method.to_owned()));
    if let Some(params) = params {
        request.insert("params".into(), params.clone());
    }
    match check(Value::Object(request)) {
        Ok(()) => Fit::Fits,
        Err(_) if params.is_none() => Fit::Misfit("params are missing".to_owned()),
        Err(e) => Fit::Misfit(e.to_string()),
    }
}

/// The answer to a request rmcp could not type, for `ServerHandler::on_custom_request`: a method
/// we serve whose params do not fit gets `-32602` naming why; any other method `-32601`.
pub fn custom_request_error(request: &rmcp::model::CustomRequest) -> rmcp::ErrorData {
    use rmcp::model::ErrorCode;
    match fit(&request.method, request.params.as_ref()) {
        Fit::Misfit(reason) => rmcp::ErrorData::new(
            ErrorCode::INVALID_PARAMS,
            format!("Invalid params for `{}`: {reason}", request.method),
            None,
        ),
        Fit::Unknown | Fit::Fits => rmcp::ErrorData::new(
            ErrorCode::METHOD_NOT_FOUND,
            format!("Method not found: `{}`", request.method),
            None,
        ),
    }
}

fn error_frame(id: &Value, code: i64, message: &str) -> Vec<u8> {
    let mut frame = serde_json::to_vec(&error_response(id, code, message)).unwrap_or_default();
    frame.push(b'\n');
    frame
}

fn error_response(id: &Value, code: i64, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    })
}

/// The JSON-RPC error response for an HTTP request body that is not one valid message (the
/// HTTP front sends it with status 400), or `None` when the body is a valid message.
pub fn diagnose(body: &[u8]) -> Option<Value> {
    match check(body) {
        Checked::Message(_) => None,
        Checked::Answer(frame) => serde_json::from_slice(&frame).ok(),
        Checked::Skip if body.iter().all(u8::is_ascii_whitespace) => Some(error_response(
            &Value::Null,
            PARSE_ERROR,
            "Parse error: the request body is empty",
        )),
        Checked::Skip => Some(error_response(
            &Value::Null,
            INVALID_REQUEST,
            "Invalid request: not a message this server understands",
        )),
    }
}

/// HTTP front middleware: a POST whose body is not one valid JSON-RPC message gets 400 with the
/// JSON-RPC error as its body (rmcp answers such a body with 415 and a line of text, which says
/// the media type was wrong when it was not). A body over `max_bytes` gets 413 here, before it is
/// held in memory whole.
pub async fn reject_malformed(
    axum::extract::State(max_bytes): axum::extract::State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::{
        body::Body,
        http::{Method, StatusCode, header},
        response::IntoResponse,
    };
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let json_body = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, max_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {max_bytes} bytes\n"),
            )
                .into_response();
        }
    };
    // JSON may open with a byte order mark (RFC 8259 lets a parser ignore it); rmcp would call
    // such a body the wrong media type.
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => bytes.slice_ref(rest),
        None => bytes,
    };
    let response = next
        .run(axum::extract::Request::from_parts(
            parts,
            Body::from(bytes.clone()),
        ))
        .await;
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE
        && json_body
        && let Some(error) = diagnose(&bytes)
    {
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    }
    response
}

#[cfg(test)]
mod tool_call_tests {
    use super::*;

    /// What rmcp's own parse of the whole message enum gives for `line`.
    fn rmcp_reads(line: &str) -> Option<RxJsonRpcMessage<RoleServer>> {
        serde_json::from_str(line).ok()
    }

    /// Compared as written and as debugged: the request's `_meta` lives in its extensions,
    /// which the written form carries and the debug form names.
    fn same(a: &RxJsonRpcMessage<RoleServer>, b: &RxJsonRpcMessage<RoleServer>) {
        assert_eq!(
            serde_json::to_value(a).expect("serializes"),
            serde_json::to_value(b).expect("serializes")
        );
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn a_tool_call_reads_as_rmcp_reads_it() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":[1,"x"]}}}"#,
            r#"{"method":"tools/call","params":{"name":"t","_meta":{"progressToken":"p","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},"id":"s-1","jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","inputResponses":{},"requestState":"abc"}}"#,
        ] {
            let ours = tool_call(line.as_bytes()).expect("read as a tool call");
            let theirs = rmcp_reads(line).expect("rmcp reads it");
            same(&ours, &theirs);
        }
    }

    #[test]
    fn other_lines_are_left_to_rmcp() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            // Not JSON-RPC 2.0, no id, no params, params of the wrong shape.
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"t"}}"#,
        ] {
            assert!(tool_call(line.as_bytes()).is_none(), "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, duplex};

    fn answer(line: &str) -> Value {
        match check(line.as_bytes()) {
            Checked::Answer(frame) => serde_json::from_slice(&frame).unwrap_or(Value::Null),
            other => panic!("expected an error answer for {line}, got {other:?}"),
        }
    }

    #[test]
    fn every_kind_of_bad_line_gets_its_json_rpc_error() {
        for (line, code, id) in [
            ("not json", PARSE_ERROR, Value::Null),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/list""#,
                PARSE_ERROR,
                Value::Null,
            ),
            (
                r#"[{"jsonrpc":"2.0","id":5,"method":"ping"}]"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            ("[]", INVALID_REQUEST, Value::Null),
            ("42", INVALID_REQUEST, Value::Null),
            (r#"{"id":3,"method":"ping"}"#, INVALID_REQUEST, json!(3)),
            (
                r#"{"jsonrpc":"2.0","id":"a","method":7}"#,
                INVALID_REQUEST,
                json!("a"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#,
                INVALID_REQUEST,
                json!(9),
            ),
            (
                r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
                INVALID_REQUEST,
                json!(u64::MAX),
            ),
            (
                r#"{"jsonrpc":"2.0","id":10,"method":"tools/list","params":[1]}"#,
                INVALID_PARAMS,
                json!(10),
            ),
            (
                r#"{"jsonrpc":"2.0","id":11,"method":"ping","params":{"_meta":"x"}}"#,
                INVALID_PARAMS,
                json!(11),
            ),
            (
                r#"{"jsonrpc":"2.0","id":"n","method":"no/such","params":[1]}"#,
                METHOD_NOT_FOUND,
                json!("n"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":"k1","id":"k2","method":"ping"}"#,
                INVALID_REQUEST,
                json!("k2"),
            ),
        ] {
            let a = answer(line);
            assert_eq!(a["jsonrpc"], "2.0", "{line}");
            assert_eq!(a["error"]["code"], code, "{line}: {a}");
            assert_eq!(a["id"], id, "{line}: {a}");
            assert!(
                a.as_object().is_some_and(|o| o.contains_key("id")),
                "{line}"
            );
        }
    }

    #[test]
    fn good_messages_pass_and_unusable_notifications_are_dropped() {
        assert!(matches!(
            check(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Checked::Message(_)
        ));
        assert!(matches!(
            check(b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r"),
            Checked::Message(_)
        ));
        assert!(matches!(check(b"   "), Checked::Skip));
        assert!(matches!(
            check(br#"{"jsonrpc":"2.0","method":"$/lsp-thing","params":[1]}"#),
            Checked::Skip
        ));
    }

    #[test]
    fn a_custom_request_is_an_unknown_method_or_bad_params_of_a_known_one() {
        use rmcp::model::{CustomRequest, ErrorCode};
        let bad_name = custom_request_error(&CustomRequest::new(
            "tools/call",
            Some(json!({ "name": 5 })),
        ));
        assert_eq!(bad_name.code, ErrorCode::INVALID_PARAMS);
        assert!(
            bad_name.message.contains("tools/call") && bad_name.message.contains("integer"),
            "{}",
            bad_name.message
        );
        let missing = custom_request_error(&CustomRequest::new("tools/call", None));
        assert_eq!(missing.code, ErrorCode::INVALID_PARAMS);
        assert!(missing.message.contains("missing"), "{}", missing.message);
        let bad_level = custom_request_error(&CustomRequest::new(
            "logging/setLevel",
            Some(json!({ "level": "loud" })),
        ));
        assert_eq!(bad_level.code, ErrorCode::INVALID_PARAMS);
        let unknown = custom_request_error(&CustomRequest::new("no/such", Some(json!({}))));
        assert_eq!(unknown.code, ErrorCode::METHOD_NOT_FOUND);
        assert!(unknown.message.contains("no/such"), "{}", unknown.message);
    }

    #[test]
    fn an_http_body_is_diagnosed_like_a_line() {
        assert!(diagnose(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_none());
        let d = diagnose(b"{").unwrap_or_default();
        assert_eq!(d["error"]["code"], PARSE_ERROR);
        assert_eq!(d["id"], Value::Null);
        let d = diagnose(b"").unwrap_or_default();
        assert_eq!(d["error"]["code"], PARSE_ERROR);
        let d = diagnose(br#"{"jsonrpc":"2.0","id":"x","method":null}"#).unwrap_or_default();
        assert_eq!(
            (d["error"]["code"].clone(), d["id"].clone()),
            (json!(INVALID_REQUEST), json!("x"))
        );
    }

    #[tokio::test]
    async fn an_oversized_line_is_answered_and_the_next_one_still_works()
    -> Result<(), Box<dyn std::error::Error>> {
        let (mut client, server) = duplex(1 << 16);
        let (reader, writer) = tokio::io::split(server);
        let (_sink, mut stream) = transport(reader, writer, 64);
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
            "x".repeat(200)
        );
        client.write_all(long.as_bytes()).await?;
        client.write_all(b"\n").await?;
        client
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n")
            .await?;
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await?;
        assert!(
            matches!(next, Some(RxJsonRpcMessage::<RoleServer>::Request(ref r)) if r.id.to_string() == "2"),
            "{next:?}"
        );
        let mut out = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.read(&mut out))
            .await??;
        let answer: Value = serde_json::from_slice(&out[..n])?;
        assert_eq!(answer["error"]["code"], INVALID_REQUEST);
        assert_eq!(answer["id"], Value::Null);
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("64 bytes")),
            "{answer}"
        );
        Ok(())
    }
}
