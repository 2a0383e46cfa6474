//! A raw stdio peer: writes JSON-RPC lines to a process and keeps every line it writes back, as
//! JSON, exactly as sent. For tests about the wire itself (malformed input, what a relayed
//! result looks like byte for byte), where an SDK client would parse and normalise.

use std::{process::Stdio, time::Duration};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
    time::Instant,
};

/// How long [`StdioPeer::take`] waits for an answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A process spoken to line by line; killed when dropped.
#[derive(Debug)]
pub struct StdioPeer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    /// Answers read but not yet taken.
    pending: Vec<Value>,
    /// Notifications and requests read, in order, until [`StdioPeer::drain_notes`].
    notes: Vec<Value>,
}

impl StdioPeer {
    /// Starts `program args...` (`RUST_LOG=warn`, stderr inherited).
    pub fn spawn(program: &std::path::Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let (tx, lines) = mpsc::unbounded_channel();
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            stdin: child.stdin.take().context("stdin")?,
            child,
            lines,
            pending: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// Writes `frame` and a newline.
    pub async fn send(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        self.stdin.write_all(frame).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Writes `message` as one line.
    pub async fn send_json(&mut self, message: &Value) -> anyhow::Result<()> {
        self.send(message.to_string().as_bytes()).await
    }

    /// Takes the first answer (already read or still to come) whose `id` is `id`; whatever else
    /// arrives meanwhile (notifications, requests) is kept for [`StdioPeer::drain_notes`].
    pub async fn take(&mut self, id: &Value) -> anyhow::Result<Value> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(i) = self.pending.iter().position(|m| m.get("id") == Some(id)) {
                return Ok(self.pending.remove(i));
            }
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .with_context(|| format!("no answer with id {id} within {ANSWER_TIMEOUT:?}"))?
                .context("the peer closed stdout")?;
            let message: Value = serde_json::from_str(&line)
                .with_context(|| format!("the peer wrote a line that is not JSON: {line}"))?;
            if message.get("method").is_none() {
                self.pending.push(message);
            } else {
                self.notes.push(message);
            }
        }
    }

    /// Sends request `method` with `params` under `id` and takes its answer.
    pub async fn request(
        &mut self,
        id: &str,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        self.send_json(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        self.take(&json!(id)).await
    }

    /// The notifications and requests read so far, oldest first; forgets them.
    pub fn drain_notes(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.notes)
    }

    /// The answers read but not taken (none was asked for by id), oldest first; forgets them.
    pub fn drain_unclaimed(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.pending)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Closes its stdin (EOF, as a client that leaves) and waits up to `limit` for it to exit.
    pub async fn close(self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let Self {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        tokio::time::timeout(limit, child.wait())
            .await
            .context("no exit after stdin closed")?
            .context("waiting for the process")
    }
}
