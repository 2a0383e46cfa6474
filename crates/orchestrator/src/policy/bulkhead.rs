//! Bulkhead per upstream server: bounded concurrency plus a bounded queue; beyond both, reject at once.
//!
//! tower's `LoadShed` over `ConcurrencyLimit`, with a queue in between so short bursts wait instead
//! of failing. Two semaphores:
//!
//! - *admission*, `max_concurrent + max_queue` permits, taken with `try_acquire_owned`: when none is
//!   left the call is refused with [`BulkheadFull`] without waiting, so one slow server cannot pile
//!   up unbounded work (and memory) in the orchestrator;
//! - *concurrency*, `max_concurrent` permits, awaited: that wait is the queue (tokio's semaphore is
//!   fair, so queued calls run first come, first served).
//!
//! A [`BulkheadPermit`] holds both; dropping it releases both. Dropping a queued [`Bulkhead::enter`]
//! future drops its admission permit, so a cancelled waiter frees its queue place at once.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use serde::Serialize;

/// The refusal, defined with the other call failures.
pub use crate::error::BulkheadFull;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default for [`BulkheadSettings::max_concurrent`].
pub const DEFAULT_MAX_CONCURRENT: usize = 32;
/// Default for [`BulkheadSettings::max_queue`].
pub const DEFAULT_MAX_QUEUE: usize = 64;

/// Limits of one server's bulkhead. Validated by the caller (config layer).
#[derive(Debug, Clone, PartialEq)]
pub struct BulkheadSettings {
    /// Calls running at once against the server: protects the server (a stdio server often
    /// handles one call at a time) and our own resources.
    pub max_concurrent: usize,
    /// Calls waiting for a running slot: absorbs bursts; beyond it, callers learn at once that the
    /// server is saturated instead of waiting behind a queue that cannot drain in time.
    pub max_queue: usize,
}

impl Default for BulkheadSettings {
    fn default() -> Self {
        Self {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_queue: DEFAULT_MAX_QUEUE,
        }
    }
}

/// Figures for `orchestrator://status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkheadSnapshot {
    /// Calls holding a running slot now.
    pub running: usize,
    /// Calls waiting for one.
    pub queued: usize,
    /// The concurrency limit.
    pub max_concurrent: usize,
    /// The queue limit.
    pub max_queue: usize,
    /// Calls refused since creation.
    pub rejected: u64,
    /// Calls that got a running slot since creation (queued calls count once they run).
    pub admitted: u64,
}

/// Bulkhead of one upstream server. Shared (`Arc`) by every clone of its policy stack.
#[derive(Debug)]
pub struct Bulkhead {
    /// Named in errors and logs.
    server: String,
    settings: BulkheadSettings,
    /// Running plus queued; `try_acquire` only, so a full bulkhead refuses without waiting.
    admission: Arc<Semaphore>,
    /// Running only; awaited, which is the queue.
    concurrency: Arc<Semaphore>,
    /// Total in `admission`, to derive running + queued from its free permits.
    capacity: usize,
    /// Running slots, clamped the same way as `capacity`.
    max_concurrent: usize,
    rejected: AtomicU64,
    admitted: AtomicU64,
}

impl Bulkhead {
    /// A bulkhead for `server`. Limits above [`Semaphore::MAX_PERMITS`] are clamped to it (tokio
    /// would panic), which is effectively unlimited.
    pub fn new(server: impl Into<String>, settings: BulkheadSettings) -> Self {
        let max_concurrent = settings.max_concurrent.min(Semaphore::MAX_PERMITS);
        let capacity = settings
            .max_concurrent
            .saturating_add(settings.max_queue)
            .min(Semaphore::MAX_PERMITS);
        Self {
            server: server.into(),
            admission: Arc::new(Semaphore::new(capacity)),
            concurrency: Arc::new(Semaphore::new(max_concurrent)),
            capacity,
            max_concurrent,
            settings,
            rejected: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
        }
    }

    /// The upstream this bulkhead guards.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &BulkheadSettings {
        &self.settings
    }

    /// Rejects at once when running + queued is at the limit; otherwise waits for a running slot.
    /// Cancellation-safe: a dropped future frees its queue place.
    pub async fn enter(&self) -> Result<BulkheadPermit, BulkheadFull> {
        let Ok(admission) = Arc::clone(&self.admission).try_acquire_owned() else {
            // `NoPermits` (the semaphore is never closed).
            return Err(self.reject());
        };
        // The semaphore is never closed, so this only fails in theory; refusing is the safe answer.
        let Ok(running) = Arc::clone(&self.concurrency).acquire_owned().await else {
            return Err(self.reject());
        };
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(BulkheadPermit {
            _running: running,
            _admission: admission,
        })
    }

    /// Figures for status. Read without a lock, so during a hand-over the two counts can be off by
    /// one for an instant; never negative.
    pub fn snapshot(&self) -> BulkheadSnapshot {
        let running = self
            .max_concurrent
            .saturating_sub(self.concurrency.available_permits());
        let inside = self
            .capacity
            .saturating_sub(self.admission.available_permits());
        BulkheadSnapshot {
            running,
            queued: inside.saturating_sub(running),
            max_concurrent: self.settings.max_concurrent,
            max_queue: self.settings.max_queue,
            rejected: self.rejected.load(Ordering::Relaxed),
            admitted: self.admitted.load(Ordering::Relaxed),
        }
    }

    fn reject(&self) -> BulkheadFull {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(server = %self.server, "bulkhead full; call rejected");
        BulkheadFull {
            server: self.server.clone(),
            max_concurrent: self.settings.max_concurrent,
            max_queue: self.settings.max_queue,
        }
    }
}

/// A running slot. Hold it for the whole upstream call; dropping it releases the slot and lets the
/// first queued call run.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit {
    /// Declared first so it is dropped first: the running slot passes to a queued call before the
    /// admission place frees, so `snapshot` never sees more queued than there are.
    _running: OwnedSemaphorePermit,
    _admission: OwnedSemaphorePermit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, poll};
    use std::{pin::pin, task::Poll, time::Duration};
    use tokio::time::{Instant, sleep};

    fn bulkhead(max_concurrent: usize, max_queue: usize) -> Arc<Bulkhead> {
        Arc::new(Bulkhead::new(
            "sql",
            BulkheadSettings {
                max_concurrent,
                max_queue,
            },
        ))
    }

    fn counts(b: &Bulkhead) -> (usize, usize, u64, u64) {
        let s = b.snapshot();
        (s.running, s.queued, s.rejected, s.admitted)
    }

    #[test]
    fn defaults_match_the_documented_consts() {
        let s = BulkheadSettings::default();
        assert_eq!((s.max_concurrent, s.max_queue), (32, 64));
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_callers_against_4_plus_4_admit_8_and_reject_42_at_once() {
        let b = bulkhead(4, 4);
        let start = Instant::now();
        let mut running = Vec::new();
        let mut queued = Vec::new();
        let mut rejected = Vec::new();
        for _ in 0..50 {
            let mut enter = Box::pin(b.enter());
            match poll!(&mut enter) {
                Poll::Ready(Ok(permit)) => running.push(permit),
                Poll::Ready(Err(full)) => rejected.push(full),
                Poll::Pending => queued.push(enter),
            }
        }
        assert_eq!((running.len(), queued.len(), rejected.len()), (4, 4, 42));
        assert_eq!(Instant::now(), start, "rejection must not wait");
        assert_eq!(counts(&b), (4, 4, 42, 4));
        assert_eq!(
            rejected[0],
            BulkheadFull {
                server: "sql".into(),
                max_concurrent: 4,
                max_queue: 4
            }
        );
        assert_eq!(
            rejected[0].to_string(),
            "bulkhead full for server `sql`: 4 running and 4 queued"
        );

        // A running call finishes: the first queued one runs, and a place opens in the queue.
        drop(running.remove(0));
        let first = queued.remove(0);
        let permit = first
            .now_or_never()
            .expect("runs at once")
            .expect("admitted");
        running.push(permit);
        assert_eq!(counts(&b), (4, 3, 42, 5));
        let mut late = pin!(b.enter());
        assert!(poll!(&mut late).is_pending(), "queued, not rejected");
        assert_eq!(counts(&b), (4, 4, 42, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn queued_calls_run_as_running_ones_finish() {
        const CALL: Duration = Duration::from_millis(100);
        let b = bulkhead(4, 4);
        let start = Instant::now();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let b = Arc::clone(&b);
                tokio::spawn(async move {
                    let permit = b.enter().await?;
                    let began = Instant::now();
                    sleep(CALL).await;
                    drop(permit);
                    Ok::<_, BulkheadFull>(began)
                })
            })
            .collect();
        // Let every task reach the bulkhead before time moves.
        tokio::task::yield_now().await;
        assert_eq!(counts(&b), (4, 4, 42, 4));

        let mut began = Vec::new();
        let mut refused = 0;
        for task in tasks {
            match task.await.expect("task ran") {
                Ok(at) => began.push(at - start),
                Err(_) => refused += 1,
            }
        }
        began.sort();
        assert_eq!(refused, 42);
        assert_eq!(began, [[Duration::ZERO; 4], [CALL; 4]].concat());
        assert_eq!(counts(&b), (0, 0, 42, 8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_queued_waiter_frees_its_place() {
        let b = bulkhead(1, 1);
        let running = b.enter().await.expect("runs");
        let mut waiter = Box::pin(b.enter());
        assert!(poll!(&mut waiter).is_pending());
        assert!(b.enter().now_or_never().expect("immediate").is_err());
        assert_eq!(counts(&b), (1, 1, 1, 1));

        drop(waiter);
        assert_eq!(counts(&b), (1, 0, 1, 1));
        let mut replacement = Box::pin(b.enter());
        assert!(poll!(&mut replacement).is_pending(), "queued, not rejected");

        // The cancelled waiter did not take the running slot with it.
        drop(running);
        let permit = replacement.await.expect("runs");
        assert_eq!(counts(&b), (1, 0, 1, 2));
        drop(permit);
        assert_eq!(counts(&b), (0, 0, 1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_queue_rejects_everything_beyond_the_running_slots() {
        let b = bulkhead(2, 0);
        let _a = b.enter().await.expect("runs");
        let _b = b.enter().await.expect("runs");
        assert!(b.enter().now_or_never().expect("immediate").is_err());
        assert_eq!(counts(&b), (2, 0, 1, 2));
    }

    #[test]
    fn snapshot_serializes_in_camel_case() {
        let b = bulkhead(4, 8);
        assert_eq!(
            serde_json::to_value(b.snapshot()).expect("serializes"),
            serde_json::json!({
                "running": 0,
                "queued": 0,
                "maxConcurrent": 4,
                "maxQueue": 8,
                "rejected": 0,
                "admitted": 0,
            })
        );
    }

    #[test]
    fn huge_limits_are_clamped_instead_of_panicking() {
        let b = bulkhead(usize::MAX, usize::MAX);
        let s = b.snapshot();
        assert_eq!((s.running, s.queued), (0, 0));
        assert_eq!(s.max_concurrent, usize::MAX);
    }
}
