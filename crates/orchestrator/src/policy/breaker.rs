//! Circuit breaker per upstream server: fail fast while a server keeps failing, probe it to recover.
//!
//! Modelled on linkerd2-proxy's `breaker/consecutive_failures.rs`, with a second, rate-based rule,
//! an explicit half-open state, and the connection's own news:
//!
//! ```text
//!        unreachable rule, rate rule, or the connection is lost
//!   Closed ─────────────────────────────────────────────▶ Open { until = now + period }
//!     ▲                                                     │ first acquire at or after `until`, or
//!     │ a probe succeeds                                    ▼ the connection is back (at once)
//!     └──────────────────────────────────────────────── HalfOpen { probes in flight ≤ half_open_probes }
//!                  a probe fails (or the connection is lost): Open again, for twice the period
//! ```
//!
//! What trips it is chosen for what a breaker is for: a server that is down or overwhelmed.
//! - **Unreachable in a row**: `consecutive_failures` failures that mean the server could not be
//!   reached or did not answer (connection lost or refused, not connected, attempt timeout), with
//!   no answer of any kind between them. A server that answers, even with an error, resets it.
//! - **Failure share**: more than `failure_rate` of the calls in `window` failed, once there were
//!   `min_calls`. The policy stack reports each logical call once (its last attempt), so a server
//!   that fails one attempt in five, which retries absorb, stays well under the share.
//! - **The connection is lost**: the supervisor says so, and the breaker opens without waiting for
//!   calls to fail; when it has reconnected and listed the server's tools again, the breaker goes
//!   half-open at once, and the first success closes it.
//!
//! The open period starts at `min_open` and doubles each time a probe fails, up to `open_for`;
//! closing resets it. A brief blip costs a few hundred milliseconds, a long outage is probed
//! rarely.
//!
//! Every transition bumps a *generation*. A [`BreakerPermit`] remembers the generation it was issued
//! in and its outcome only counts if the breaker is still in that generation, so a call admitted while
//! closed that answers after the breaker opened (or a probe that answers after another probe already
//! closed it) cannot corrupt the state.
//!
//! Transitions are lazy: nothing runs in the background, so an open breaker whose `open_for` has
//! elapsed still reports [`BreakerState::Open`] (with `nextProbeInMs: 0`) until the next call.

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Utc};

/// The refusal, defined with the other call failures.
pub use crate::error::BreakerOpen;
use serde::Serialize;
use tokio::time::Instant;

/// Default for [`BreakerSettings::consecutive_failures`].
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Default for [`BreakerSettings::failure_rate`].
pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
/// Default for [`BreakerSettings::min_calls`].
pub const DEFAULT_MIN_CALLS: u32 = 20;
/// Default for [`BreakerSettings::window`].
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// Default for [`BreakerSettings::open_for`].
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(5);
/// Default for [`BreakerSettings::min_open`].
pub const DEFAULT_MIN_OPEN: Duration = Duration::from_millis(250);
/// Default for [`BreakerSettings::half_open_probes`].
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;

/// How many transitions [`Breaker::transitions`] keeps: enough to see a flapping server live.
pub const TRANSITION_HISTORY: usize = 32;

/// The rate window is kept as this many fixed buckets, so recording an outcome never allocates.
/// An outcome therefore leaves the window between `window × 9/10` and `window` after it was recorded.
const BUCKETS: usize = 10;

/// When a breaker opens and how it recovers. Validated by the caller (config layer); the breaker
/// only guards against values that would wedge it (see the fields).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Open after this many unreachable failures in a row (connection lost or refused, attempt
    /// timeout): reacts within a few calls to a server that is down. `0` disables this rule.
    pub consecutive_failures: u32,
    /// Or open when the share of failures over `window` exceeds this: catches a server that fails
    /// often but not in long runs. `1.0` or more never trips.
    pub failure_rate: f64,
    /// ...but only with at least this many calls in the window, so two failures out of three calls
    /// do not open it.
    pub min_calls: u32,
    /// The sliding window of the rate rule.
    pub window: Duration,
    /// The longest the breaker stays open before it lets probes through.
    pub open_for: Duration,
    /// The first open period; each failed probe doubles it, up to `open_for`.
    pub min_open: Duration,
    /// Probe calls let through at once while half-open. `0` is treated as `1`: with no probes the
    /// breaker could never close again.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            failure_rate: DEFAULT_FAILURE_RATE,
            min_calls: DEFAULT_MIN_CALLS,
            window: DEFAULT_WINDOW,
            open_for: DEFAULT_OPEN_FOR,
            min_open: DEFAULT_MIN_OPEN,
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
        }
    }
}

/// The breaker's state as status and logs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are refused at once with [`BreakerOpen`].
    Open,
    /// A limited number of probe calls pass; the first outcome decides.
    HalfOpen,
}

impl BreakerState {
    /// The same name as the serialized form, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Figures for `orchestrator://status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSnapshot {
    /// The state now (transitions are lazy, see the module docs).
    pub state: BreakerState,
    /// Failures in a row since the last success (kept while open, to show why it opened).
    pub consecutive_failures: u32,
    /// Outcomes recorded in the rate window.
    pub window_calls: u32,
    /// Of which failures.
    pub window_failures: u32,
    /// Times the breaker opened (from closed or half-open).
    pub opens: u64,
    /// Transitions of any kind.
    pub transitions: u64,
    /// While open: milliseconds until the next call becomes a probe, rounded up.
    pub next_probe_in_ms: Option<u64>,
}

/// One state change, kept for the live view of the workshop demo.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Wall-clock time, serialized as RFC 3339 (for people and log correlation).
    pub at: DateTime<Utc>,
    /// Why, in words (`5 consecutive failures`, `probe succeeded`, ...).
    pub reason: String,
    /// Tokio time since the breaker was created: monotonic, and controlled by paused-time tests.
    #[serde(skip)]
    pub offset: Duration,
}

/// Circuit breaker of one upstream server. Shared (`Arc`) by every clone of its policy stack.
#[derive(Debug)]
pub struct Breaker {
    /// Named in errors and logs.
    server: String,
    settings: BreakerSettings,
    /// Origin of window buckets and transition offsets.
    created: Instant,
    /// One lock for the whole state machine: calls are far slower than this critical section, and
    /// a single lock keeps state, counters and generation consistent.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped on every transition; permits of an older generation are ignored.
    generation: u64,
    /// Unreachable failures since the server last answered.
    consecutive_failures: u32,
    /// The next open period: `min_open`, doubled by every failed probe, up to `open_for`.
    open_period: Duration,
    /// Why it last opened, for refusals (shared, so a refusal does not copy the text).
    open_reason: Arc<str>,
    window: Window,
    opens: u64,
    transitions: u64,
    /// Transitions into each state, indexed by `BreakerState as usize`, for metrics.
    entered: [u64; 3],
    /// The last [`TRANSITION_HISTORY`] transitions, oldest first (allocated once, at creation).
    history: VecDeque<Transition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probes: u32 },
}

impl Phase {
    fn state(self) -> BreakerState {
        match self {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// How a permit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    /// The server answered with a failure of its own (a 5xx-class tool error).
    Failure,
    /// The server could not be reached, or did not answer in time.
    Unreachable,
    /// Dropped unreported (the call was cancelled): says nothing about the server.
    Dropped,
}

impl Breaker {
    /// A closed breaker for `server`.
    pub fn new(server: impl Into<String>, settings: BreakerSettings) -> Self {
        let window = Window::new(settings.window);
        let open_period = settings.min_open.min(settings.open_for);
        Self {
            server: server.into(),
            settings,
            created: Instant::now(),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                generation: 0,
                consecutive_failures: 0,
                open_period,
                open_reason: Arc::from(""),
                window,
                opens: 0,
                transitions: 0,
                entered: [0; 3],
                history: VecDeque::with_capacity(TRANSITION_HISTORY),
            }),
        }
    }

    /// The upstream this breaker guards.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// Admits one call or refuses it at once.
    ///
    /// Fast path must be cheap (one uncontended mutex lock, no allocation on the closed path): it
    /// runs before every upstream call. While open, the first call at or after `open_for` moves the
    /// breaker to half-open and becomes a probe.
    pub fn acquire(self: &Arc<Self>) -> Result<BreakerPermit, BreakerOpen> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => Ok(self.permit(inner.generation)),
            Phase::Open { until } => {
                let now = Instant::now();
                if now < until {
                    let why = inner.open_reason.clone();
                    drop(inner);
                    return Err(self.refuse(until - now, why));
                }
                let reason = format!("open for {} ms; probing", inner.open_period.as_millis());
                let transition =
                    self.transition(&mut inner, Phase::HalfOpen { probes: 1 }, now, reason);
                let permit = self.permit(inner.generation);
                drop(inner);
                self.log(&transition);
                Ok(permit)
            }
            Phase::HalfOpen { probes } if probes < self.max_probes() => {
                inner.phase = Phase::HalfOpen { probes: probes + 1 };
                Ok(self.permit(inner.generation))
            }
            Phase::HalfOpen { .. } => {
                let why = inner.open_reason.clone();
                drop(inner);
                Err(self.refuse(Duration::ZERO, why))
            }
        }
    }

    /// The state now (an open breaker whose `open_for` elapsed stays open until the next call).
    pub fn state(&self) -> BreakerState {
        self.lock().phase.state()
    }

    /// Figures for status.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let inner = self.lock();
        let epoch = inner.window.epoch(self.offset(now));
        let (window_calls, window_failures) = inner.window.totals(epoch);
        let next_probe_in_ms = match inner.phase {
            Phase::Open { until } => Some(ceil_millis(until.saturating_duration_since(now))),
            Phase::Closed | Phase::HalfOpen { .. } => None,
        };
        BreakerSnapshot {
            state: inner.phase.state(),
            consecutive_failures: inner.consecutive_failures,
            window_calls,
            window_failures,
            opens: inner.opens,
            transitions: inner.transitions,
            next_probe_in_ms,
        }
    }

    /// Transitions into `state` since creation.
    pub fn transitions_into(&self, state: BreakerState) -> u64 {
        self.lock().entered[state as usize]
    }

    /// The last [`TRANSITION_HISTORY`] transitions, oldest first.
    pub fn transitions(&self) -> Vec<Transition> {
        self.lock().history.iter().cloned().collect()
    }

    /// Settles a permit of `generation`: counts its outcome if that generation is still current.
    fn settle(&self, generation: u64, outcome: Outcome) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != generation {
            tracing::trace!(
                server = %self.server,
                ?outcome,
                "circuit breaker ignored an outcome from an earlier state"
            );
            return;
        }
        let transition = match (inner.phase, outcome) {
            (Phase::Closed, Outcome::Success) => {
                inner.consecutive_failures = 0;
                let epoch = inner.window.epoch(self.offset(now));
                inner.window.record(epoch, false);
                None
            }
            (Phase::Closed, Outcome::Failure | Outcome::Unreachable) => {
                // An answer, even an error, shows the server is reachable.
                inner.consecutive_failures = match outcome {
                    Outcome::Unreachable => inner.consecutive_failures.saturating_add(1),
                    _ => 0,
                };
                let epoch = inner.window.epoch(self.offset(now));
                inner.window.record(epoch, true);
                self.trip_reason(&inner, epoch)
                    .map(|reason| self.open(&mut inner, now, reason))
            }
            (Phase::HalfOpen { .. }, Outcome::Success) => {
                Some(self.transition(&mut inner, Phase::Closed, now, "probe succeeded".to_owned()))
            }
            (Phase::HalfOpen { .. }, Outcome::Failure | Outcome::Unreachable) => {
                // Probed too soon: wait longer next time.
                inner.open_period = (inner.open_period * 2).min(self.settings.open_for);
                Some(self.open(&mut inner, now, "probe failed".to_owned()))
            }
            (Phase::HalfOpen { probes }, Outcome::Dropped) => {
                inner.phase = Phase::HalfOpen {
                    probes: probes.saturating_sub(1),
                };
                None
            }
            // A cancelled call says nothing about the server; and no permit is ever issued while
            // open, so an open breaker cannot be in the permit's generation.
            (Phase::Closed, Outcome::Dropped) | (Phase::Open { .. }, _) => None,
        };
        drop(inner);
        if let Some(transition) = transition {
            self.log(&transition);
        }
    }

    /// Why the breaker should open now, if it should (called after a failure while closed).
    fn trip_reason(&self, inner: &Inner, epoch: u64) -> Option<String> {
        let limit = self.settings.consecutive_failures;
        if limit > 0 && inner.consecutive_failures >= limit {
            return Some(format!(
                "{} calls in a row found the server unreachable",
                inner.consecutive_failures
            ));
        }
        let (calls, failures) = inner.window.totals(epoch);
        if calls == 0 || calls < self.settings.min_calls {
            return None;
        }
        let rate = f64::from(failures) / f64::from(calls);
        // NaN settings compare false: the rule never trips.
        (rate > self.settings.failure_rate).then(|| {
            format!(
                "failure rate {:.0}% over {calls} calls in {} s exceeds {:.0}%",
                rate * 100.0,
                self.settings.window.as_secs_f64(),
                self.settings.failure_rate * 100.0,
            )
        })
    }

    /// The supervisor lost the connection: open now (or stay open), rather than let calls find out
    /// one by one. Returns whether the breaker opened.
    pub fn connection_lost(&self, reason: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        if matches!(inner.phase, Phase::Open { .. }) {
            return false;
        }
        if matches!(inner.phase, Phase::HalfOpen { .. }) {
            inner.open_period = (inner.open_period * 2).min(self.settings.open_for);
        }
        let transition = self.open(&mut inner, now, format!("connection lost: {reason}"));
        drop(inner);
        self.log(&transition);
        true
    }

    /// The supervisor reconnected and listed the server again: let a probe through at once
    /// instead of waiting out the open period. Returns whether the breaker went half-open.
    pub fn connection_restored(&self) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Phase::HalfOpen { .. } = inner.phase {
            // Probes in flight went out on the connection that was lost: their outcomes no
            // longer say anything, so they are ignored and the probe slots freed for the new one.
            inner.generation = inner.generation.wrapping_add(1);
            inner.phase = Phase::HalfOpen { probes: 0 };
            return false;
        }
        if !matches!(inner.phase, Phase::Open { .. }) {
            return false;
        }
        let transition = self.transition(
            &mut inner,
            Phase::HalfOpen { probes: 0 },
            now,
            "connection restored; probing".to_owned(),
        );
        drop(inner);
        self.log(&transition);
        true
    }

    /// Opens for the current open period.
    fn open(&self, inner: &mut Inner, now: Instant, reason: String) -> Transition {
        let until = now + inner.open_period;
        inner.open_reason = Arc::from(reason.as_str());
        self.transition(inner, Phase::Open { until }, now, reason)
    }

    /// Moves to `to`, updating generation, counters and history; the caller logs the result once
    /// the lock is released.
    fn transition(&self, inner: &mut Inner, to: Phase, now: Instant, reason: String) -> Transition {
        let from = inner.phase.state();
        inner.phase = to;
        inner.generation = inner.generation.wrapping_add(1);
        inner.transitions += 1;
        inner.entered[to.state() as usize] += 1;
        match to {
            Phase::Open { .. } => inner.opens += 1,
            Phase::Closed => {
                inner.consecutive_failures = 0;
                inner.open_period = self.settings.min_open.min(self.settings.open_for);
                inner.window.reset();
            }
            Phase::HalfOpen { .. } => {}
        }
        let transition = Transition {
            from,
            to: to.state(),
            at: Utc::now(),
            reason,
            offset: self.offset(now),
        };
        if inner.history.len() == TRANSITION_HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(transition.clone());
        transition
    }

    fn log(&self, t: &Transition) {
        if t.to == BreakerState::Open {
            tracing::warn!(
                server = %self.server,
                from = %t.from,
                to = %t.to,
                reason = %t.reason,
                "circuit breaker opened"
            );
        } else {
            tracing::info!(
                server = %self.server,
                from = %t.from,
                to = %t.to,
                reason = %t.reason,
                "circuit breaker state changed"
            );
        }
    }

    fn permit(self: &Arc<Self>, generation: u64) -> BreakerPermit {
        BreakerPermit {
            breaker: Arc::clone(self),
            generation,
            settled: false,
        }
    }

    fn refuse(&self, retry_in: Duration, why: Arc<str>) -> BreakerOpen {
        BreakerOpen {
            server: self.server.clone(),
            why,
            retry_in,
        }
    }

    fn max_probes(&self) -> u32 {
        self.settings.half_open_probes.max(1)
    }

    /// Time since creation: what window buckets are indexed by.
    fn offset(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One admitted call. Report its outcome; dropping it unreported (e.g. the call was cancelled)
/// records nothing but frees a half-open probe slot.
#[derive(Debug)]
#[must_use = "report the call's outcome with `success()` or `failure()`"]
pub struct BreakerPermit {
    /// Keeps the breaker alive and reachable from wherever the call finishes.
    breaker: Arc<Breaker>,
    /// The breaker's generation at admission: outcomes of older generations are ignored.
    generation: u64,
    /// Set once reported, so `Drop` does not settle the permit a second time.
    settled: bool,
}

impl BreakerPermit {
    /// The call succeeded (the server answered; tool errors that are the caller's fault count here).
    pub fn success(mut self) {
        self.settle(Outcome::Success);
    }

    /// The server answered with a failure of its own (a 5xx-class tool error).
    pub fn failure(mut self) {
        self.settle(Outcome::Failure);
    }

    /// The server could not be reached or did not answer in time (connection lost or refused,
    /// not connected, attempt timeout).
    pub fn unreachable(mut self) {
        self.settle(Outcome::Unreachable);
    }

    fn settle(&mut self, outcome: Outcome) {
        self.settled = true;
        self.breaker.settle(self.generation, outcome);
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(Outcome::Dropped);
        }
    }
}

/// Outcomes of the last `window`, in [`BUCKETS`] fixed buckets indexed by time since creation.
#[derive(Debug)]
struct Window {
    /// Bucket width in nanoseconds: `window / BUCKETS`, at least 1 so a zero window cannot divide
    /// by zero.
    width_nanos: u128,
    buckets: [Bucket; BUCKETS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-width interval since creation this bucket holds.
    epoch: u64,
    calls: u32,
    failures: u32,
}

impl Window {
    fn new(window: Duration) -> Self {
        Self {
            width_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// The bucket-width interval that `offset` (time since creation) falls in.
    fn epoch(&self, offset: Duration) -> u64 {
        u64::try_from(offset.as_nanos() / self.width_nanos).unwrap_or(u64::MAX)
    }

    fn record(&mut self, epoch: u64, failed: bool) {
        let bucket = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                calls: 0,
                failures: 0,
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        if failed {
            bucket.failures = bucket.failures.saturating_add(1);
        }
    }

    /// `(calls, failures)` in the buckets still inside the window at `epoch`.
    fn totals(&self, epoch: u64) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < BUCKETS as u64)
            .fold((0u32, 0u32), |(calls, failures), b| {
                (
                    calls.saturating_add(b.calls),
                    failures.saturating_add(b.failures),
                )
            })
    }

    fn reset(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const OPEN_FOR: Duration = Duration::from_secs(5);

    /// Only the unreachable-in-a-row rule (the rate rule cannot reach its minimum), with a fixed
    /// open period.
    fn consecutive(n: u32) -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: n,
            min_calls: u32::MAX,
            open_for: OPEN_FOR,
            min_open: OPEN_FOR,
            ..BreakerSettings::default()
        }
    }

    fn breaker(settings: BreakerSettings) -> Arc<Breaker> {
        Arc::new(Breaker::new("sql", settings))
    }

    /// Calls that found the server unreachable: they count towards both rules.
    fn fail(b: &Arc<Breaker>, times: u32) {
        for _ in 0..times {
            b.acquire().expect("admitted").unreachable();
        }
    }

    /// Calls the server answered with an error of its own: they count towards the share only.
    fn answered_failures(b: &Arc<Breaker>, times: u32) {
        for _ in 0..times {
            b.acquire().expect("admitted").failure();
        }
    }

    fn succeed(b: &Arc<Breaker>, times: u32) {
        for _ in 0..times {
            b.acquire().expect("admitted").success();
        }
    }

    /// Opens `b` (built with `consecutive(n)`) and returns after `open_for`, ready to probe.
    async fn open_then_wait(b: &Arc<Breaker>, n: u32) {
        fail(b, n);
        assert_eq!(b.state(), BreakerState::Open);
        advance(OPEN_FOR).await;
    }

    #[test]
    fn defaults_match_the_documented_consts() {
        let s = BreakerSettings::default();
        assert_eq!(s.consecutive_failures, 5);
        assert_eq!(s.failure_rate, 0.5);
        assert_eq!(s.min_calls, 20);
        assert_eq!(s.window, Duration::from_secs(30));
        assert_eq!(s.open_for, Duration::from_secs(5));
        assert_eq!(s.min_open, Duration::from_millis(250));
        assert_eq!(s.half_open_probes, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_consecutive_failures_and_not_before() {
        let b = breaker(consecutive(3));
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 2);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        let snap = b.snapshot();
        assert_eq!(snap.opens, 1);
        assert_eq!(snap.transitions, 1);
        assert_eq!(snap.next_probe_in_ms, Some(5_000));
        let history = b.transitions();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].from, BreakerState::Closed);
        assert_eq!(history[0].to, BreakerState::Open);
        assert_eq!(
            history[0].reason,
            "3 calls in a row found the server unreachable"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_consecutive_count() {
        let b = breaker(consecutive(3));
        fail(&b, 2);
        succeed(&b, 1);
        assert_eq!(b.snapshot().consecutive_failures, 0);
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_zero_disables_that_rule() {
        let b = breaker(consecutive(0));
        fail(&b, 1_000);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 1_000);
    }

    fn rate_only(min_calls: u32) -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 0,
            failure_rate: 0.5,
            min_calls,
            window: Duration::from_secs(10),
            open_for: OPEN_FOR,
            min_open: OPEN_FOR,
            half_open_probes: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_rule_trips_only_with_min_calls() {
        let b = breaker(rate_only(10));
        // 6 failures out of 9 calls: over the rate, under min_calls.
        for failed in [true, false, true, true, false, true, false, true, true] {
            let permit = b.acquire().expect("admitted");
            if failed {
                permit.failure()
            } else {
                permit.success()
            }
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let snap = b.snapshot();
        assert_eq!((snap.window_calls, snap.window_failures), (9, 6));
        // The 10th call reaches min_calls: 7/10 > 50 %.
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(
            b.transitions()[0]
                .reason
                .starts_with("failure rate 70% over 10 calls")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_rule_needs_the_rate_exceeded_not_reached() {
        let b = breaker(rate_only(10));
        succeed(&b, 5);
        fail(&b, 5);
        // Exactly 50 %: not over.
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_rule_forgets_outcomes_older_than_the_window() {
        let b = breaker(rate_only(10));
        fail(&b, 9);
        advance(Duration::from_secs(10)).await;
        assert_eq!(b.snapshot().window_calls, 0);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().window_calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn while_open_acquire_fails_fast_with_the_time_to_the_next_probe() {
        let b = breaker(consecutive(2));
        fail(&b, 2);
        advance(Duration::from_secs(2)).await;
        let start = Instant::now();
        for _ in 0..100 {
            let err = b.acquire().expect_err("refused while open");
            assert_eq!(
                err,
                BreakerOpen {
                    server: "sql".into(),
                    why: Arc::from("2 calls in a row found the server unreachable"),
                    retry_in: Duration::from_secs(3)
                }
            );
        }
        assert_eq!(Instant::now(), start, "refusals must not wait");
        assert_eq!(
            b.acquire().expect_err("open").to_string(),
            "circuit open for server `sql` (2 calls in a row found the server unreachable); \
             next probe in 3000 ms"
        );
        advance(OPEN_FOR - Duration::from_secs(2) - Duration::from_millis(1)).await;
        assert_eq!(
            b.acquire().expect_err("still open").retry_in,
            Duration::from_millis(1)
        );
        assert_eq!(b.snapshot().next_probe_in_ms, Some(1));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn after_open_for_exactly_the_configured_probes_are_admitted() {
        let b = breaker(BreakerSettings {
            half_open_probes: 2,
            ..consecutive(2)
        });
        open_then_wait(&b, 2).await;
        assert_eq!(b.snapshot().next_probe_in_ms, Some(0));
        let p1 = b.acquire().expect("first probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p2 = b.acquire().expect("second probe");
        for _ in 0..10 {
            let err = b.acquire().expect_err("probe slots taken");
            assert_eq!(err.retry_in, Duration::ZERO);
        }
        assert_eq!(b.state(), BreakerState::HalfOpen);
        drop((p1, p2));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_probes_is_treated_as_one() {
        let b = breaker(BreakerSettings {
            half_open_probes: 0,
            ..consecutive(1)
        });
        open_then_wait(&b, 1).await;
        let probe = b.acquire().expect("one probe");
        assert!(b.acquire().is_err());
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_success_closes_and_resets_counters() {
        let b = breaker(consecutive(3));
        open_then_wait(&b, 3).await;
        b.acquire().expect("probe").success();
        assert_eq!(b.state(), BreakerState::Closed);
        let snap = b.snapshot();
        assert_eq!(snap.consecutive_failures, 0);
        assert_eq!(snap.window_calls, 0);
        assert_eq!(snap.opens, 1);
        assert_eq!(snap.transitions, 3);
        assert_eq!(snap.next_probe_in_ms, None);
        // Counting starts again from zero.
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        let moves: Vec<_> = b.transitions().iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            moves,
            [
                (BreakerState::Closed, BreakerState::Open),
                (BreakerState::Open, BreakerState::HalfOpen),
                (BreakerState::HalfOpen, BreakerState::Closed),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn probe_failure_reopens_for_a_full_open_for() {
        let b = breaker(consecutive(2));
        open_then_wait(&b, 2).await;
        let probe = b.acquire().expect("probe");
        advance(Duration::from_secs(1)).await;
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire().expect_err("reopened").retry_in, OPEN_FOR);
        advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert!(b.acquire().is_err());
        advance(Duration::from_millis(1)).await;
        let _probe = b.acquire().expect("next probe");
        let snap = b.snapshot();
        assert_eq!(snap.opens, 2);
        let last = b.transitions();
        assert_eq!(last[2].reason, "probe failed");
        assert_eq!(last[2].offset, OPEN_FOR + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_frees_its_slot_and_records_nothing() {
        let b = breaker(consecutive(2));
        open_then_wait(&b, 2).await;
        let probe = b.acquire().expect("probe");
        assert!(b.acquire().is_err());
        drop(probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.acquire().expect("slot freed");
        assert!(b.acquire().is_err());
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_closed_permit_records_nothing() {
        let b = breaker(consecutive(2));
        fail(&b, 1);
        drop(b.acquire().expect("admitted"));
        let snap = b.snapshot();
        assert_eq!(snap.consecutive_failures, 1);
        assert_eq!(snap.window_calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn late_outcomes_from_an_old_generation_are_ignored() {
        let b = breaker(BreakerSettings {
            half_open_probes: 2,
            ..consecutive(2)
        });
        let late_success = b.acquire().expect("closed");
        let late_failure = b.acquire().expect("closed");
        let late_drop = b.acquire().expect("closed");
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Open);

        // A success admitted while closed does not close an open breaker.
        late_success.success();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.snapshot().consecutive_failures, 2);

        advance(OPEN_FOR).await;
        let probe = b.acquire().expect("probe");
        // Neither a late failure nor a late drop touches the half-open state or its probe slots.
        late_failure.failure();
        drop(late_drop);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let second = b.acquire().expect("second probe slot still free");
        assert!(b.acquire().is_err());

        // The first probe closes; the other probe's late failure must not reopen.
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        second.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 0);
        assert_eq!(b.snapshot().opens, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn history_keeps_the_last_32_transitions() {
        let b = breaker(consecutive(1));
        fail(&b, 1);
        // Each round: Open → HalfOpen → Open.
        for _ in 0..20 {
            advance(OPEN_FOR).await;
            b.acquire().expect("probe").failure();
        }
        let history = b.transitions();
        assert_eq!(b.snapshot().transitions, 41);
        assert_eq!(history.len(), TRANSITION_HISTORY);
        assert_eq!(history[0].from, BreakerState::Open);
        assert_eq!(history[0].to, BreakerState::HalfOpen);
        assert!(history.windows(2).all(|w| w[0].offset <= w[1].offset));
        assert_eq!(
            history.last().map(|t| t.offset),
            Some(OPEN_FOR * 20),
            "offsets follow tokio time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_and_transitions_serialize_in_camel_case() {
        let b = breaker(consecutive(1));
        fail(&b, 1);
        let snap = serde_json::to_value(b.snapshot()).expect("serializes");
        assert_eq!(
            snap,
            serde_json::json!({
                "state": "open",
                "consecutiveFailures": 1,
                "windowCalls": 1,
                "windowFailures": 1,
                "opens": 1,
                "transitions": 1,
                "nextProbeInMs": 5000,
            })
        );
        advance(OPEN_FOR).await;
        let _probe = b.acquire().expect("probe");
        assert_eq!(
            serde_json::to_value(b.state()).expect("serializes"),
            "half_open"
        );
        let t = serde_json::to_value(&b.transitions()[0]).expect("serializes");
        assert_eq!(t["from"], "closed");
        assert_eq!(t["to"], "open");
        assert_eq!(t["reason"], "1 calls in a row found the server unreachable");
        let at = t["at"].as_str().expect("a string");
        assert!(DateTime::parse_from_rfc3339(at).is_ok(), "RFC 3339: {at}");
        assert_eq!(t.as_object().map(|o| o.len()), Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn answered_failures_never_trip_the_unreachable_rule_and_reset_its_run() {
        let b = breaker(consecutive(3));
        answered_failures(&b, 1_000);
        assert_eq!(b.state(), BreakerState::Closed, "the server answers");
        fail(&b, 2);
        answered_failures(&b, 1);
        assert_eq!(
            b.snapshot().consecutive_failures,
            0,
            "an answer resets the run"
        );
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_period_doubles_with_each_failed_probe_up_to_open_for_and_resets_on_close() {
        let b = breaker(BreakerSettings {
            min_open: Duration::from_millis(250),
            open_for: Duration::from_secs(2),
            ..consecutive(1)
        });
        fail(&b, 1);
        let mut periods = Vec::new();
        for _ in 0..5 {
            let period = b.acquire().expect_err("open").retry_in;
            periods.push(period.as_millis());
            advance(period).await;
            b.acquire().expect("probe").unreachable();
        }
        assert_eq!(periods, [250, 500, 1000, 2000, 2000]);
        advance(Duration::from_secs(2)).await;
        b.acquire().expect("probe").success();
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(
            b.acquire().expect_err("open").retry_in,
            Duration::from_millis(250),
            "closing started the periods over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_opens_at_once_and_a_restored_one_half_opens_at_once() {
        let b = breaker(BreakerSettings {
            min_open: Duration::from_millis(250),
            ..consecutive(5)
        });
        assert!(!b.connection_restored(), "closed: nothing to do");
        assert!(b.connection_lost("connection closed"));
        assert_eq!(b.state(), BreakerState::Open, "no call had to fail");
        assert!(!b.connection_lost("again"), "already open");
        assert!(b.transitions()[0].reason.starts_with("connection lost"));
        let refused = b.acquire().expect_err("open");
        assert!(refused.retry_in <= Duration::from_millis(250));
        // Reconnected well before the open period ends: a probe may go at once.
        assert!(b.connection_restored());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.acquire().expect("a probe, with no wait");
        assert!(b.acquire().is_err(), "one probe at a time");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_sent_before_the_reconnect_cannot_reopen_the_breaker() {
        let b = breaker(BreakerSettings {
            min_open: Duration::from_millis(250),
            ..consecutive(5)
        });
        b.connection_lost("closed");
        advance(Duration::from_millis(250)).await;
        let stale = b.acquire().expect("a probe, on the dead connection");
        assert!(!b.connection_restored(), "already half-open");
        let fresh = b
            .acquire()
            .expect("the slot is free for the new connection");
        stale.unreachable();
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "the stale probe is ignored"
        );
        fresh.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_lost_while_probing_reopens_for_longer() {
        let b = breaker(BreakerSettings {
            min_open: Duration::from_millis(250),
            ..consecutive(5)
        });
        b.connection_lost("closed");
        b.connection_restored();
        let probe = b.acquire().expect("probe");
        assert!(b.connection_lost("closed again"));
        assert_eq!(
            b.acquire().expect_err("open").retry_in,
            Duration::from_millis(500)
        );
        probe.unreachable();
        assert_eq!(
            b.snapshot().opens,
            2,
            "the late probe outcome changes nothing"
        );
    }
}
