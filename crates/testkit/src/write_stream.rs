//! A stream of numbered writes cut off by `kill -9`: what the durability tests of the SQL and
//! Cosmos servers run before checking that every acknowledged write survived and none was
//! duplicated.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::ensure;
use serde_json::Value;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{HttpServer, PeerClient, call};

/// How long one write may take before it counts as cut off.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// How long the stream may take to reach the acknowledged writes the kill waits for.
const ACK_LIMIT: Duration = Duration::from_secs(20);

/// What to write and when to kill.
#[derive(Debug)]
pub struct WriteStream<A, K> {
    /// The write tool.
    pub tool: &'static str,
    /// Writes the stream may send (0, 1, 2, ...); the kill comes long before the last.
    pub max: usize,
    /// Calls kept in flight at once, so several are mid-way when the process dies.
    pub in_flight: usize,
    /// Acknowledged writes to wait for before the kill.
    pub kill_after: usize,
    /// The arguments of write `i`.
    pub args: A,
    /// What to record of an answer that is not a tool error (its structured content); `None`
    /// when the answer does not acknowledge the write.
    pub ack: K,
}

/// What the stream saw before and around the kill.
#[derive(Debug)]
pub struct Outcome {
    /// Writes sent: `0..sent`.
    pub sent: usize,
    /// Acknowledged writes: index → what `ack` recorded.
    pub acked: HashMap<usize, Value>,
}

#[derive(Debug, Default)]
struct Seen {
    sent: AtomicUsize,
    acked: Mutex<HashMap<usize, Value>>,
    stop: AtomicBool,
}

impl Seen {
    fn acked(&self) -> HashMap<usize, Value> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Streams writes to `server` and sends it SIGKILL once `kill_after` of them are acknowledged;
/// fails unless the kill cut some writes off mid-way (sent more than acknowledged).
///
/// SIGKILL: no signal handler, no graceful shutdown, no checkpoint. The client is closed right
/// after, which ends the calls the kill cut off at once instead of letting them wait.
pub async fn kill_mid_stream<A, K>(
    server: &mut HttpServer,
    spec: WriteStream<A, K>,
) -> anyhow::Result<Outcome>
where
    A: Fn(usize) -> Value + Send + Sync + 'static,
    K: Fn(Value) -> Option<Value> + Send + Sync + 'static,
{
    let client = server.connect(None).await?;
    let seen = Arc::new(Seen::default());
    let kill_after = spec.kill_after;
    let writer = tokio::spawn(run(
        PeerClient(client.peer().clone()),
        seen.clone(),
        Arc::new(spec),
    ));
    let started = Instant::now();
    while seen.acked().len() < kill_after {
        ensure!(
            started.elapsed() < ACK_LIMIT,
            "only {} writes acknowledged in {} s",
            seen.acked().len(),
            ACK_LIMIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.kill().await?;
    seen.stop.store(true, Ordering::SeqCst);
    drop(client);
    writer.await?;
    let outcome = Outcome {
        sent: seen.sent.load(Ordering::SeqCst),
        acked: seen.acked(),
    };
    ensure!(
        outcome.sent > outcome.acked.len(),
        "the kill should cut calls off mid-way ({} sent, {} acknowledged)",
        outcome.sent,
        outcome.acked.len()
    );
    Ok(outcome)
}

async fn run<A, K>(peer: PeerClient, seen: Arc<Seen>, spec: Arc<WriteStream<A, K>>)
where
    A: Fn(usize) -> Value + Send + Sync + 'static,
    K: Fn(Value) -> Option<Value> + Send + Sync + 'static,
{
    let permits = Arc::new(Semaphore::new(spec.in_flight));
    let mut calls = JoinSet::new();
    for i in 0..spec.max {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        if seen.stop.load(Ordering::SeqCst) {
            break;
        }
        seen.sent.store(i + 1, Ordering::SeqCst);
        let (peer, seen, spec) = (peer.clone(), seen.clone(), spec.clone());
        calls.spawn(async move {
            let _permit = permit;
            // A call cut off by the kill fails (or, at worst, times out): not acknowledged.
            let answer =
                tokio::time::timeout(CALL_LIMIT, call(&peer, spec.tool, (spec.args)(i))).await;
            if let Ok(Ok(result)) = answer
                && result.is_error != Some(true)
                && let Some(content) = result.structured_content
                && let Some(record) = (spec.ack)(content)
            {
                seen.acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(i, record);
            }
        });
    }
    while calls.join_next().await.is_some() {}
}
