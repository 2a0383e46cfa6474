//! The JSON-RPC connection to the orchestrator over its stdio, one JSON message per line: a
//! writer task, a reader task, and the table of outstanding request ids through which every
//! response is matched to exactly one request.
//!
//! Calls of the mix have the ids `1..=calls`; the driver's own requests (`initialize`,
//! `tools/list`) have string ids `ctl-N`, so the two can never be confused. A response whose id
//! is not outstanding is *unmatched*, or a *duplicate* when that id was already answered.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter},
    process::{ChildStdin, ChildStdout},
    sync::{OwnedSemaphorePermit, mpsc, oneshot},
};

use crate::{
    mix::{self, Call},
    report::Tally,
};

/// What the writer task is asked to do.
#[derive(Debug)]
enum Out {
    /// Write one message.
    Line(String),
    /// Close the orchestrator's stdin: the signal to shut down.
    Close,
}

/// How well responses matched requests, and what else came down stdout.
#[derive(Debug, Default)]
pub struct Matching {
    /// Responses to calls of the mix.
    pub answered: u64,
    /// Responses whose id was never sent (or is not an id at all).
    pub unmatched: u64,
    /// Responses to a call that had already been answered.
    pub duplicates: u64,
    /// Lines that are not JSON-RPC messages (stdout must carry the protocol only).
    pub garbage: u64,
    /// A few of the above, for the report.
    pub examples: Vec<String>,
    /// Notifications from the orchestrator, by method.
    pub notifications: BTreeMap<String, u64>,
    /// Requests from the orchestrator to this client, by method.
    pub server_requests: BTreeMap<String, u64>,
    /// Whether stdout ended (the orchestrator closed it or exited).
    pub eof: bool,
}

impl Matching {
    fn example(&mut self, what: String) {
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }
}

/// A call waiting for its response.
#[derive(Debug)]
struct Pending {
    call: Call,
    sent: Instant,
    /// Its place in the window of calls in flight, given back when the response arrives.
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct Shared {
    pending: HashMap<u64, Pending>,
    /// `answered[id]`: whether call `id` got its response, to tell duplicates from strangers.
    answered: Vec<bool>,
    control: HashMap<String, oneshot::Sender<Value>>,
    matching: Matching,
    tally: Tally,
}

/// The connection.
#[derive(Debug)]
pub struct Conn {
    out: mpsc::UnboundedSender<Out>,
    shared: Arc<Mutex<Shared>>,
    next_control: AtomicU64,
}

impl Conn {
    /// Starts the writer and reader tasks over the orchestrator's stdin and stdout, for a run of
    /// `calls` calls.
    pub fn start(stdin: ChildStdin, stdout: ChildStdout, calls: u64, tally: Tally) -> Self {
        let (out, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared {
            pending: HashMap::new(),
            answered: vec![false; usize::try_from(calls).unwrap_or(usize::MAX - 1) + 1],
            control: HashMap::new(),
            matching: Matching::default(),
            tally,
        }));
        tokio::spawn(write_loop(stdin, rx));
        tokio::spawn(read_loop(stdout, shared.clone(), out.clone()));
        Self {
            out,
            shared,
            next_control: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    fn send(&self, msg: &Value) -> anyhow::Result<()> {
        self.out
            .send(Out::Line(msg.to_string()))
            .map_err(|_| anyhow!("the writer task has stopped"))
    }

    /// Sends one of the driver's own requests and waits for its result.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let id = format!("ctl-{}", self.next_control.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.lock().control.insert(id.clone(), tx);
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))?;
        let answer = tokio::time::timeout(timeout, rx).await;
        self.lock().control.remove(&id);
        let msg = answer
            .with_context(|| format!("no answer to {method} within {timeout:?}"))?
            .with_context(|| format!("the connection ended before answering {method}"))?;
        if let Some(e) = msg.get("error") {
            bail!("{method} failed: {e}");
        }
        msg.get("result")
            .cloned()
            .with_context(|| format!("{method}: response without result"))
    }

    /// Sends a notification.
    pub fn notify(&self, method: &str, params: Value) -> anyhow::Result<()> {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
    }

    /// Sends call `id` of the mix, holding `permit` until it is answered; an error when the
    /// connection is gone (then the call is not outstanding).
    pub fn call(&self, id: u64, call: Call, permit: OwnedSemaphorePermit) -> anyhow::Result<()> {
        let msg = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": { "name": call.kind.tool(), "arguments": call.args },
        });
        let kind = call.kind;
        self.lock().pending.insert(
            id,
            Pending {
                call,
                sent: Instant::now(),
                _permit: permit,
            },
        );
        if let Err(e) = self.send(&msg) {
            // Never sent: not outstanding either.
            self.lock().pending.remove(&id);
            return Err(e);
        }
        self.lock().tally.sent(kind);
        Ok(())
    }

    /// Calls sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.lock().pending.len()
    }

    /// Calls answered so far.
    pub fn answered(&self) -> u64 {
        self.lock().matching.answered
    }

    /// Whether the orchestrator's stdout has ended.
    pub fn ended(&self) -> bool {
        self.lock().matching.eof
    }

    /// Closes the orchestrator's stdin (it shuts down on end of input).
    pub fn close(&self) {
        let _ = self.out.send(Out::Close);
    }

    /// The figures so far: matching, the tally, and the calls still outstanding by tool.
    pub fn figures(&self) -> (Matching, Tally, BTreeMap<&'static str, u64>) {
        let mut s = self.lock();
        let mut lost = BTreeMap::new();
        for p in s.pending.values() {
            *lost.entry(p.call.kind.tool()).or_insert(0) += 1;
        }
        let matching = std::mem::take(&mut s.matching);
        let tally = s.tally.take();
        (matching, tally, lost)
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

async fn write_loop(stdin: ChildStdin, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut w = BufWriter::new(stdin);
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Everything already queued goes out in one flush.
        while let Some(out) = next {
            match out {
                Out::Line(line) => {
                    if w.write_all(line.as_bytes()).await.is_err()
                        || w.write_all(b"\n").await.is_err()
                    {
                        break 'outer;
                    }
                }
                Out::Close => break 'outer,
            }
            next = rx.try_recv().ok();
        }
        if w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.flush().await;
    let _ = w.into_inner().shutdown().await;
}

async fn read_loop(
    stdout: ChildStdout,
    shared: Arc<Mutex<Shared>>,
    out: mpsc::UnboundedSender<Out>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let mut s = lock(&shared);
                s.matching.garbage += 1;
                s.matching.example(format!(
                    "not JSON: {}",
                    line.chars().take(200).collect::<String>()
                ));
                continue;
            }
        };
        if let Some(reply) = handle(&shared, msg) {
            let _ = out.send(Out::Line(reply.to_string()));
        }
    }
    let mut s = lock(&shared);
    s.matching.eof = true;
    // Nobody will answer the driver's own requests any more.
    s.control.clear();
}

/// Handles one message from the orchestrator; returns the reply to send, if any.
fn handle(shared: &Mutex<Shared>, msg: Value) -> Option<Value> {
    let mut s = lock(shared);
    if let Some(method) = msg.get("method").and_then(Value::as_str) {
        let Some(id) = msg.get("id") else {
            *s.matching
                .notifications
                .entry(method.to_owned())
                .or_insert(0) += 1;
            return None;
        };
        *s.matching
            .server_requests
            .entry(method.to_owned())
            .or_insert(0) += 1;
        return Some(if method == "ping" {
            json!({ "jsonrpc": "2.0", "id": id, "result": {} })
        } else {
            json!({ "jsonrpc": "2.0", "id": id,
                    "error": { "code": -32601, "message": "the soak client offers nothing" } })
        });
    }
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    if let Some(control) = id.as_str()
        && let Some(tx) = s.control.remove(control)
    {
        let _ = tx.send(msg);
        return None;
    }
    let Some(n) = id.as_u64() else {
        s.matching.unmatched += 1;
        s.matching.example(format!("response with id {id}"));
        return None;
    };
    match s.pending.remove(&n) {
        Some(p) => {
            let latency = p.sent.elapsed();
            let outcome = mix::classify(&p.call, &msg);
            s.matching.answered += 1;
            if let Some(slot) = usize::try_from(n).ok().and_then(|i| s.answered.get_mut(i)) {
                *slot = true;
            }
            s.tally.record(p.call.kind, &outcome, p.sent, latency);
        }
        None => {
            let seen = usize::try_from(n)
                .ok()
                .and_then(|i| s.answered.get(i))
                .copied()
                .unwrap_or(false);
            if seen {
                s.matching.duplicates += 1;
                s.matching.example(format!("second response to id {n}"));
            } else {
                s.matching.unmatched += 1;
                s.matching
                    .example(format!("response to id {n}, never sent"));
            }
        }
    }
    None
}
