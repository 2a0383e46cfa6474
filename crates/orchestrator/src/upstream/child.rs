//! Stdio upstreams as child processes that never outlive the orchestrator, and the client
//! transport over their pipes, with the line cap enforced so that an answer over it fails its
//! request at once.
//!
//! A child ends with the orchestrator however the orchestrator ends:
//! - on shutdown, [`ChildTransport::close`] closes its stdin, then sends its process group
//!   SIGTERM after [`GRACE`], then SIGKILL after another: a server that ignores both still goes,
//!   and the orchestrator's own exit is never held up for long;
//! - if the transport is dropped without closing (a task aborted), the group gets SIGKILL;
//! - if the orchestrator itself is killed (SIGKILL, a crash, an exit mid-shutdown), a watchdog
//!   kills the group: a `sh` started beside each child, reading a pipe only the orchestrator
//!   holds. The kernel closes that pipe when the orchestrator ends, however it ends; the
//!   watchdog reads EOF instead of the `done` a clean close writes, and sends the group SIGKILL.
//!   (Linux's `PR_SET_PDEATHSIG` would need `unsafe` `pre_exec`, which this workspace forbids,
//!   and fires when the forking *thread* ends, which Tokio's blocking threads do.)
//!
//! rmcp's own child transport drops a line over its cap and logs it: the request it answered
//! then waits for its deadline, is retried, and counts against the server's breaker. Here the
//! over-long line is never held whole; its top-level `id` is found as it streams past, and the
//! request it answers fails at once with an error naming the limit (see [`AnswersOverCap`]).

use std::{
    collections::HashSet,
    io,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use rmcp::{
    RoleClient,
    model::{ErrorCode, ErrorData, JsonRpcError, JsonRpcMessage, JsonRpcVersion2_0, RequestId},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStderr, ChildStdin, ChildStdout, Command},
};

/// How long a closing child gets after stdin EOF, and again after SIGTERM. Two of them fit in
/// the 5 s the supervisor waits for a connection to close, so a child is gone before the
/// orchestrator exits.
pub const GRACE: Duration = Duration::from_secs(2);

/// The ids of requests whose answer was over the line cap: the supervisor looks its failed
/// request up here to tell "the answer was too large" (the caller's fault) from an error the
/// server sent.
#[derive(Debug, Default)]
pub struct AnswersOverCap(Mutex<HashSet<RequestId>>);

impl AnswersOverCap {
    fn note(&self, id: RequestId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
    }

    /// Whether the answer to `id` was over the cap (forgetting it).
    pub fn take(&self, id: &RequestId) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

/// What the watchdog runs: wait for a line; unless it is `done`, kill the group `$1`.
const WATCHDOG_SCRIPT: &str = r#"read line; [ "$line" = done ] || kill -s KILL -- -$1"#;

/// Starts `cmd` with piped stdio, in its own process group (a Ctrl-C in the terminal reaches the
/// orchestrator only, which then closes each child in order), with its watchdog.
pub fn spawn(mut cmd: Command) -> io::Result<(Child, Option<Watchdog>)> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    #[cfg(unix)]
    cmd.process_group(0);
    let child = cmd.spawn()?;
    let watchdog = child.id().and_then(|group| match Watchdog::start(group) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the watchdog of an upstream: it may outlive a crashed orchestrator");
            None
        }
    });
    Ok((child, watchdog))
}

/// The process that kills a child's group if the orchestrator ends without closing it.
#[derive(Debug)]
pub struct Watchdog {
    /// Its stdin: the orchestrator's end of the pipe.
    stdin: Option<ChildStdin>,
    process: Child,
}

impl Watchdog {
    #[cfg(unix)]
    fn start(group: u32) -> io::Result<Self> {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", WATCHDOG_SCRIPT, "upstream-watchdog"])
            .arg(group.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C in the terminal must not end it before the child.
            .process_group(0)
            .kill_on_drop(false);
        let mut process = cmd.spawn()?;
        Ok(Self {
            stdin: process.stdin.take(),
            process,
        })
    }

    #[cfg(not(unix))]
    fn start(_group: u32) -> io::Result<Self> {
        Err(io::Error::other("no watchdog on this platform"))
    }

    /// Stands the watchdog down: the child is gone, and its group id may be reused.
    async fn stand_down(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"done\n").await;
        }
        let _ = tokio::time::timeout(GRACE, self.process.wait()).await;
    }
}

/// The client side of MCP over a child's stdin and stdout.
pub struct ChildTransport {
    server: String,
    child: Option<Child>,
    /// Its process group (its pid), signalled as a whole so helpers it started go too.
    group: Option<u32>,
    /// Kills the group should the orchestrator end without closing it.
    watchdog: Option<Watchdog>,
    writer: Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
    reader: LineReader<ChildStdout>,
    /// The line cap (`orchestrator.limits.upstreamMaxMessageBytes`).
    max_line: usize,
    over_cap: Arc<AnswersOverCap>,
    /// Where progress notifications are counted as they are read, so a call can wait for the
    /// ones read before its answer (see [`crate::relay::Relay::progress_arrived`]).
    relay: Option<Arc<crate::relay::Relay>>,
    /// Tool calls awaiting their answer, whose answers are read straight as tool results.
    tool_calls: Arc<super::decode::ToolCallsInFlight>,
}

impl std::fmt::Debug for ChildTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildTransport")
            .field("server", &self.server)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl ChildTransport {
    /// The transport over `child` (spawned by [`spawn`]), reading lines of at most `max_line`
    /// bytes; also returns its stderr, for the log relay.
    pub fn new(
        server: &str,
        (mut child, watchdog): (Child, Option<Watchdog>),
        max_line: usize,
        over_cap: Arc<AnswersOverCap>,
    ) -> io::Result<(Self, Option<ChildStderr>)> {
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("the child has no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("the child has no stdout pipe"))?;
        let stderr = child.stderr.take();
        let transport = Self {
            server: server.to_owned(),
            group: child.id(),
            child: Some(child),
            watchdog,
            writer: Arc::new(tokio::sync::Mutex::new(Some(stdin))),
            reader: LineReader::new(stdout, max_line),
            max_line,
            over_cap,
            tool_calls: Arc::default(),
            relay: None,
        };
        Ok((transport, stderr))
    }

    #[cfg(unix)]
    fn signal_group(&self, signal: nix::sys::signal::Signal) {
        if let Some(group) = self.group.and_then(|g| i32::try_from(g).ok()) {
            // A group that is gone already answers ESRCH: nothing to do.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), signal);
        }
    }
}

impl Drop for ChildTransport {
    fn drop(&mut self) {
        // Dropped without `close` (its task was aborted): nothing may be left running.
        if self.child.is_some() {
            #[cfg(unix)]
            self.signal_group(nix::sys::signal::Signal::SIGKILL);
            if let Some(child) = self.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

impl ChildTransport {
    /// Counts the progress notifications read in `relay`.
    pub fn counting_progress_in(mut self, relay: Arc<crate::relay::Relay>) -> Self {
        self.relay = Some(relay);
        self
    }

    fn arrived(&self, message: &RxJsonRpcMessage<RoleClient>) {
        if let (Some(relay), JsonRpcMessage::Notification(n)) = (&self.relay, message)
            && let rmcp::model::ServerNotification::ProgressNotification(p) = &n.notification
        {
            relay.progress_arrived(&self.server, &p.params.progress_token);
        }
    }
}

impl Transport<RoleClient> for ChildTransport {
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = self.writer.clone();
        let mut item = item;
        self.tool_calls.sent(&mut item);
        let line = serde_json::to_vec(&item).map(|mut v| {
            v.push(b'\n');
            v
        });
        async move {
            let line = line.map_err(io::Error::from)?;
            let mut guard = writer.lock().await;
            let stdin = guard
                .as_mut()
                .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin closed"))?;
            stdin.write_all(&line).await?;
            stdin.flush().await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            match self.reader.next().await {
                Read::Line(line) => {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.is_empty() {
                        continue;
                    }
                    match self.tool_calls.decode(line) {
                        Ok(message) => {
                            self.arrived(&message);
                            return Some(message);
                        }
                        Err(e) => tracing::debug!(
                            server = %self.server,
                            error = %e,
                            "ignoring an upstream line that is not a JSON-RPC message"
                        ),
                    }
                }
                Read::OverCap { scan, bytes } => {
                    if let Some(message) =
                        answer_over_cap(&self.server, self.max_line, &self.over_cap, &scan, bytes)
                    {
                        self.tool_calls.received(&message);
                        return Some(message);
                    }
                }
                Read::Eof => return None,
                Read::Failed(e) => {
                    tracing::warn!(server = %self.server, error = %e, "reading from upstream failed");
                    return None;
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        drop(self.writer.lock().await.take());
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if !exited_within_grace(&mut child).await {
            #[cfg(unix)]
            {
                tracing::info!(server = %self.server, "upstream still running after stdin closed; sending SIGTERM");
                self.signal_group(nix::sys::signal::Signal::SIGTERM);
            }
            if !exited_within_grace(&mut child).await {
                tracing::warn!(server = %self.server, "upstream ignored SIGTERM; killing it");
                #[cfg(unix)]
                self.signal_group(nix::sys::signal::Signal::SIGKILL);
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        // Helpers the server started in its group, if any, go with it.
        #[cfg(unix)]
        self.signal_group(nix::sys::signal::Signal::SIGKILL);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.stand_down().await;
        }
        Ok(())
    }
}

/// What an over-long message becomes: for an answer with a findable id, an error answer to
/// that request (noted in `over_cap`), which fails at once instead of waiting for its deadline.
fn answer_over_cap(
    server: &str,
    limit: usize,
    over_cap: &AnswersOverCap,
    scan: &IdScan,
    bytes: usize,
) -> Option<RxJsonRpcMessage<RoleClient>> {
    let id = scan.id();
    tracing::warn!(
        server = %server,
        bytes,
        limit,
        id = ?id,
        "upstream message over the line cap (orchestrator.limits.upstreamMaxMessageBytes) dropped"
    );
    let id = id.filter(|_| scan.is_answer())?;
    over_cap.note(id.clone());
    Some(JsonRpcMessage::Error(JsonRpcError {
        jsonrpc: JsonRpcVersion2_0,
        id: Some(id),
        error: ErrorData::new(
            ErrorCode::INVALID_REQUEST,
            format!(
                "answer over the {limit}-byte message limit of server `{server}` (orchestrator.limits.upstreamMaxMessageBytes)"
            ),
            None,
        ),
    }))
}

/// Waits up to [`GRACE`] for `child` to exit.
async fn exited_within_grace(child: &mut Child) -> bool {
    tokio::time::timeout(GRACE, child.wait()).await.is_ok()
}

/// One read from the child.
enum Read<'a> {
    /// A whole line, without its `\n`.
    Line(&'a [u8]),
    /// A line over the cap, dropped; what was learnt of it as it passed.
    OverCap {
        scan: IdScan,
        bytes: usize,
    },
    Eof,
    Failed(io::Error),
}

/// Reads `\n`-terminated lines of at most `max` bytes. Its state lives here, not in the read
/// future, because rmcp polls `receive` inside a `select!` and may drop it mid-line.
struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    line: Vec<u8>,
    /// Set while an over-long line streams past, until its `\n`.
    skipping: Option<(IdScan, usize)>,
}

impl<R: tokio::io::AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max,
            line: Vec::new(),
            skipping: None,
        }
    }

    async fn next(&mut self) -> Read<'_> {
        self.line.clear();
        loop {
            let available = match self.inner.fill_buf().await {
                Ok(b) => b,
                Err(e) => return Read::Failed(e),
            };
            if available.is_empty() {
                return Read::Eof;
            }
            let newline = memchr::memchr(b'\n', available);
            let chunk = &available[..newline.unwrap_or(available.len())];
            let used = chunk.len() + usize::from(newline.is_some());
            match &mut self.skipping {
                Some((scan, bytes)) => {
                    scan.feed(chunk);
                    *bytes += chunk.len();
                }
                None if self.line.len() + chunk.len() > self.max => {
                    let mut scan = IdScan::default();
                    scan.feed(&self.line);
                    scan.feed(chunk);
                    self.skipping = Some((scan, self.line.len() + chunk.len()));
                    // Give the memory back: the line may have come close to the cap.
                    self.line = Vec::new();
                }
                None => self.line.extend_from_slice(chunk),
            }
            self.inner.consume(used);
            if newline.is_some() {
                return match self.skipping.take() {
                    Some((scan, bytes)) => Read::OverCap { scan, bytes },
                    None => Read::Line(&self.line),
                };
            }
        }
    }
}

/// Finds a JSON object's top-level `id`, and whether it is an answer (`result` or `error`) or
/// a request or notification (`method`), from its bytes as they stream past, holding none of
/// them but the id's own. Nested objects, arrays and strings (escapes included) are skipped.
#[derive(Debug, Default)]
struct IdScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At depth 1, the next string is a key.
    expect_key: bool,
    /// The key being read, or the last one read (capped: only short keys matter).
    key: Vec<u8>,
    reading_key: bool,
    /// The raw `id` value while it is read, then kept.
    id_raw: Option<Vec<u8>>,
    reading_id: bool,
    has_method: bool,
    has_answer: bool,
}

/// Longest key or id kept by [`IdScan`]; longer ones are not ids rmcp would send.
const SCAN_CAP: usize = 256;

impl IdScan {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.step(b);
        }
    }

    fn step(&mut self, b: u8) {
        if self.reading_id
            && let Some(raw) = &mut self.id_raw
            && raw.len() < SCAN_CAP
            && !(self.depth == 1 && !self.in_string && matches!(b, b',' | b'}'))
        {
            raw.push(b);
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.reading_key {
                    self.reading_key = false;
                }
                return;
            }
            if self.reading_key && self.key.len() < SCAN_CAP {
                self.key.push(b);
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.key.clear();
                    self.reading_key = true;
                }
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth == 1 {
                    self.expect_key = b == b'{';
                }
            }
            b'}' | b']' => {
                if self.depth == 1 {
                    self.reading_id = false;
                }
                self.depth = self.depth.saturating_sub(1);
            }
            b':' if self.depth == 1 => {
                self.expect_key = false;
                match self.key.as_slice() {
                    b"id" => {
                        self.id_raw = Some(Vec::new());
                        self.reading_id = true;
                    }
                    b"method" => self.has_method = true,
                    b"result" | b"error" => self.has_answer = true,
                    _ => {}
                }
            }
            b',' if self.depth == 1 => {
                self.reading_id = false;
                self.expect_key = true;
            }
            _ => {}
        }
    }

    /// The top-level `id`, when it was found and is a JSON-RPC id.
    fn id(&self) -> Option<RequestId> {
        let raw = self.id_raw.as_ref()?;
        serde_json::from_slice(raw.trim_ascii()).ok()
    }

    /// Whether the object is an answer (to one of our requests), not a request of the server's.
    fn is_answer(&self) -> bool {
        self.has_answer && !self.has_method
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::NumberOrString;

    fn scan(text: &str) -> IdScan {
        let mut s = IdScan::default();
        // In small pieces, as a pipe delivers them.
        for piece in text.as_bytes().chunks(3) {
            s.feed(piece);
        }
        s
    }

    #[test]
    fn the_id_is_found_before_or_after_a_large_result() {
        let s = scan(r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"text":"x"}]}}"#);
        assert_eq!(s.id(), Some(NumberOrString::Number(7)));
        assert!(s.is_answer());
        let s = scan(
            r#"{"result":{"id":1,"list":[{"id":2}],"s":"\"id\":3,"},"jsonrpc":"2.0","id":"r-9"}"#,
        );
        assert_eq!(s.id(), Some(NumberOrString::String("r-9".into())));
        assert!(s.is_answer());
    }

    #[test]
    fn a_request_of_the_servers_is_not_an_answer() {
        let s = scan(r#"{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{}}"#);
        assert_eq!(s.id(), Some(NumberOrString::Number(3)));
        assert!(!s.is_answer());
        let s = scan(r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"id":1}}"#);
        assert_eq!(s.id(), None);
    }

    #[tokio::test]
    async fn a_line_over_the_cap_is_skipped_whole_and_the_next_one_read() {
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{{\"text\":\"{}\"}}}}\n",
            "a".repeat(10_000)
        );
        let input = format!("{big}{{\"jsonrpc\":\"2.0\",\"id\":6,\"result\":{{}}}}\n");
        let mut reader = LineReader::new(input.as_bytes(), 1024);
        match reader.next().await {
            Read::OverCap { scan, bytes } => {
                assert_eq!(scan.id(), Some(NumberOrString::Number(5)));
                assert_eq!(bytes, big.len() - 1);
            }
            _ => panic!("expected the first line to be over the cap"),
        }
        match reader.next().await {
            Read::Line(line) => assert!(line.starts_with(b"{\"jsonrpc\"")),
            _ => panic!("expected the second line"),
        }
        assert!(matches!(reader.next().await, Read::Eof));
    }
}
