//! Request units: what each operation costs, the per-call meter, and the RU/s budget that throttles.
//!
//! Callers of the real service plan around two facts: every response says what it cost
//! (`x-ms-request-charge`), and a container that spends more than its provisioned RU/s answers 429
//! with a retry-after until the budget refills. This module reproduces both so that agents and the
//! orchestrator's retry logic meet the same behaviour here as in production.
//!
//! # Cost model
//! - point read: 1 RU per started KB of the document (at least 1 RU); a miss costs 1 RU.
//! - query: 2.5 RU per physical partition visited, plus, for every document loaded,
//!   0.05 RU + 0.2 RU per KB. A container is modelled as [`PHYSICAL_PARTITIONS`] physical
//!   partitions, so a cross-partition query pays the base charge on each of them.
//! - write: 5 RU per started KB of the stored document (at least 5 RU); a failed precondition
//!   costs 1 RU (the read that detected it).
//! - rejected before touching the store (bad arguments, throttled): 0 RU.
//!
//! # Budget
//! A token bucket holding at most one second of RU. A call is admitted while the bucket is above
//! zero; its actual charge is taken afterwards and may overdraw the bucket, exactly like the real
//! service, which only learns a query's cost by running it. While the bucket is at or below zero,
//! calls are refused with the time the refill needs.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// Physical partitions a container is modelled with; a cross-partition query visits all of them.
pub const PHYSICAL_PARTITIONS: u32 = 4;
/// Base charge of a query on one physical partition.
pub const QUERY_BASE_RU: f64 = 2.5;
/// Charge per document a query loads.
pub const QUERY_PER_DOC_RU: f64 = 0.05;
/// Charge per KB a query loads.
pub const QUERY_PER_KB_RU: f64 = 0.2;
/// Charge per started KB of a point read.
pub const READ_PER_KB_RU: f64 = 1.0;
/// Charge per started KB of a write.
pub const WRITE_PER_KB_RU: f64 = 5.0;
/// Charge of a point read that finds nothing, or of a write refused by its precondition.
pub const MISS_RU: f64 = 1.0;

fn started_kb(bytes: usize) -> f64 {
    (bytes.max(1)).div_ceil(1024) as f64
}

/// Which partitions a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One logical partition, so one physical partition.
    SinglePartition,
    /// Every physical partition of the container.
    CrossPartition,
}

/// The charge of reading one document of `bytes`.
pub fn point_read(bytes: usize) -> f64 {
    started_kb(bytes) * READ_PER_KB_RU
}

/// The charge of a query that loaded `docs` documents totalling `bytes`.
pub fn query(scope: Scope, docs: usize, bytes: usize) -> f64 {
    let partitions = match scope {
        Scope::SinglePartition => 1,
        Scope::CrossPartition => PHYSICAL_PARTITIONS,
    };
    QUERY_BASE_RU * f64::from(partitions)
        + docs as f64 * QUERY_PER_DOC_RU
        + bytes as f64 / 1024.0 * QUERY_PER_KB_RU
}

/// The charge of writing one document of `bytes`.
pub fn write(bytes: usize) -> f64 {
    started_kb(bytes) * WRITE_PER_KB_RU
}

/// Rounds a charge the way it is reported (two decimals).
pub fn round(ru: f64) -> f64 {
    (ru * 100.0).round() / 100.0
}

/// Adds up what one tool call costs; clones share the total.
///
/// The server puts a fresh meter into each call's request extensions; the tool adds every
/// operation it performs, and the server reports the sum in `_meta.requestCharge` and takes it from
/// the budget, whether the call succeeded or failed.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    /// Thousandths of an RU, so clones can add without a lock.
    milli_ru: Arc<AtomicU64>,
}

impl Meter {
    /// Adds a charge (negative or non-finite charges are ignored).
    pub fn add(&self, ru: f64) {
        if ru.is_finite() && ru > 0.0 {
            self.milli_ru
                .fetch_add((ru * 1000.0).round() as u64, Ordering::Relaxed);
        }
    }

    /// The total so far, rounded to two decimals.
    pub fn total(&self) -> f64 {
        round(self.milli_ru.load(Ordering::Relaxed) as f64 / 1000.0)
    }
}

/// The provisioned throughput of the process: a bucket of at most one second of RU.
#[derive(Debug)]
pub struct RuBudget {
    /// RU added per second, and the bucket's capacity.
    per_second: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// RU available now; negative after an expensive call overdrew it.
    balance: f64,
    /// When `balance` was last brought up to date.
    updated: Instant,
}

impl RuBudget {
    /// A full bucket refilling at `per_second` RU/s (at least 1).
    pub fn new(per_second: u64) -> Self {
        let per_second = per_second.max(1) as f64;
        Self {
            per_second,
            state: Mutex::new(Bucket {
                balance: per_second,
                updated: Instant::now(),
            }),
        }
    }

    /// The provisioned RU/s.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    fn refreshed(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // A poisoned lock only means a panic between two float updates; the bucket is still usable.
        let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.balance = (bucket.balance + elapsed * self.per_second).min(self.per_second);
        bucket.updated = now;
        bucket
    }

    /// Admits a call, or says how long until the bucket is above zero again.
    pub fn admit(&self) -> Result<(), Duration> {
        let bucket = self.refreshed();
        if bucket.balance > 0.0 {
            return Ok(());
        }
        let secs = -bucket.balance / self.per_second;
        // One millisecond more than the exact refill time, so a caller that waits exactly the
        // hint finds the bucket positive rather than at zero.
        Err(Duration::from_millis((secs * 1000.0).floor() as u64 + 1))
    }

    /// Takes a finished call's charge from the bucket.
    pub fn consume(&self, ru: f64) {
        if ru.is_finite() && ru > 0.0 {
            self.refreshed().balance -= ru;
        }
    }

    /// RU available now (negative when overdrawn).
    pub fn balance(&self) -> f64 {
        self.refreshed().balance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_follow_the_model() {
        assert_eq!(point_read(10), 1.0);
        assert_eq!(point_read(1024), 1.0);
        assert_eq!(point_read(1025), 2.0);
        assert_eq!(write(300), 5.0);
        assert_eq!(write(3000), 15.0);
        let single = query(Scope::SinglePartition, 10, 10 * 512);
        let cross = query(Scope::CrossPartition, 10, 10 * 512);
        assert!((single - (2.5 + 0.5 + 1.0)).abs() < 1e-9, "{single}");
        assert!((cross - single - 7.5).abs() < 1e-9, "{cross}");
        assert!(query(Scope::SinglePartition, 100, 100 * 512) > single);
    }

    #[test]
    fn meter_adds_across_clones_and_ignores_nonsense() {
        let meter = Meter::default();
        let clone = meter.clone();
        meter.add(1.234);
        clone.add(2.5);
        clone.add(-3.0);
        clone.add(f64::NAN);
        assert_eq!(meter.total(), 3.73);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_throttles_once_overdrawn_and_refills_with_time() {
        let budget = RuBudget::new(100);
        assert!(budget.admit().is_ok());
        budget.consume(60.0);
        assert!(budget.admit().is_ok(), "40 RU left");
        budget.consume(90.0);
        // Overdrawn by 50 RU at 100 RU/s: half a second to get back above zero.
        let wait = budget.admit().expect_err("throttled");
        assert_eq!(wait, Duration::from_millis(501));
        tokio::time::advance(Duration::from_millis(250)).await;
        let wait = budget.admit().expect_err("still throttled");
        assert_eq!(wait, Duration::from_millis(251));
        tokio::time::advance(wait).await;
        assert!(budget.admit().is_ok(), "refilled after the hint");
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_never_holds_more_than_one_second() {
        let budget = RuBudget::new(10);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(budget.balance(), 10.0);
        budget.consume(10.0);
        assert!(budget.admit().is_err(), "an idle minute does not bank RU");
    }
}
