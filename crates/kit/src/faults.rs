//! Fault injection: make a server slow or flaky on purpose, deterministically when seeded.
//!
//! Demos and tests need servers that misbehave in known ways. Every tool call asks [`Faults`] for a
//! [`FaultDecision`] before it runs; the decision is drawn from one seeded generator, so the same
//! seed and the same call order give the same delays and failures. An injected failure is an
//! `unavailable` tool error marked retryable (and `_meta.injected: true`), never a crash. It strikes
//! either before the tool runs (`--failure-rate`, `--fail-tools`) or after it ran, its effects done
//! and its response lost (`--failure-after-rate`): the case idempotency keys exist for.
//!
//! Faults can be switched off and on while the process runs: SIGUSR1 pauses them (no delay, no
//! failure), SIGUSR2 resumes them, so a demo or a test can show recovery without a restart
//! ([`Faults::watch_signals`]; `--faults-paused` starts paused).

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::tool_error::ToolError;

/// Fault flags shared by every server; each has a matching environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FaultArgs {
    /// Delay added to every tool call, in milliseconds.
    #[arg(long, env = "MCP_FAULT_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Random extra delay of up to this many milliseconds, added to `--latency-ms`.
    #[arg(long, env = "MCP_FAULT_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,
    /// Share of tool calls (0..1) that fail with a retryable `unavailable` error.
    #[arg(long, env = "MCP_FAULT_FAILURE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub failure_rate: f64,
    /// Share of tool calls (0..1) that run, then fail with a retryable `unavailable` error instead
    /// of returning their result (a lost response: the call's effects happened).
    #[arg(long, env = "MCP_FAULT_FAILURE_AFTER_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub failure_after_rate: f64,
    /// Tools that always fail (comma-separated names).
    #[arg(long, env = "MCP_FAULT_FAIL_TOOLS", value_delimiter = ',')]
    pub fail_tools: Vec<String>,
    /// Tools the delays and failure rates apply to (comma-separated names; default: every
    /// tool), so a test can make one tool flaky (an undo, say) and leave the others healthy.
    #[arg(long, env = "MCP_FAULT_TOOLS", value_delimiter = ',')]
    pub fault_tools: Vec<String>,
    /// Seed for the fault generator; the same seed gives the same faults in the same order.
    #[arg(long, env = "MCP_FAULT_SEED")]
    pub seed: Option<u64>,
    /// Start with faults paused (SIGUSR2 resumes them, SIGUSR1 pauses them again).
    #[arg(long, env = "MCP_FAULT_PAUSED", value_parser = clap::builder::BoolishValueParser::new())]
    pub faults_paused: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number between 0 and 1"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is outside 0..1"))
    }
}

/// What happens to one call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultDecision {
    /// How long to wait before running the tool.
    pub delay: Duration,
    /// The error to return instead of running the tool, if any.
    pub failure: Option<ToolError>,
    /// The error to return instead of the tool's result once it ran, if any (a lost response).
    /// Never set together with `failure`.
    pub failure_after: Option<ToolError>,
}

/// What the caller does with one call once its injected delay is over.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    /// Run the tool and return its result.
    Run,
    /// Do not run the tool: return this error.
    FailBefore(ToolError),
    /// Run the tool (its effects happen), then return this error instead of its result.
    FailAfter(ToolError),
}

/// The fault generator of one process.
#[derive(Debug)]
pub struct Faults {
    latency: Duration,
    jitter_ms: u64,
    failure_rate: f64,
    failure_after_rate: f64,
    fail_tools: HashSet<String>,
    /// When not empty, the only tools delays and failure rates apply to.
    fault_tools: HashSet<String>,
    /// One generator for the process, so a seed fixes the whole sequence of decisions.
    rng: Mutex<StdRng>,
    /// While set, no call is delayed or failed and the generator is not drawn from.
    paused: AtomicBool,
    /// Wakes the calls waiting out an injected delay when faults are paused.
    on_pause: Notify,
}

impl Faults {
    /// Builds the generator from the flags.
    pub fn new(args: &FaultArgs) -> Self {
        let rng = match args.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            latency: Duration::from_millis(args.latency_ms),
            jitter_ms: args.jitter_ms,
            failure_rate: args.failure_rate,
            failure_after_rate: args.failure_after_rate,
            fail_tools: args
                .fail_tools
                .iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            fault_tools: args
                .fault_tools
                .iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            rng: Mutex::new(rng),
            paused: AtomicBool::new(args.faults_paused),
            on_pause: Notify::new(),
        }
    }

    /// No faults at all.
    pub fn none() -> Self {
        Self::new(&FaultArgs::default())
    }

    /// Whether any fault is configured (so healthy runs skip the generator entirely), paused or not.
    pub fn is_active(&self) -> bool {
        !self.latency.is_zero()
            || self.jitter_ms > 0
            || self.failure_rate > 0.0
            || self.failure_after_rate > 0.0
            || !self.fail_tools.is_empty()
    }

    /// Whether faults are paused: calls run as if none were configured.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pauses every fault: no delay, no failure, until [`Faults::resume`]. Calls waiting out an
    /// injected delay stop waiting and run.
    pub fn pause(&self) {
        let was_paused = self.paused.swap(true, Ordering::SeqCst);
        self.on_pause.notify_waiters();
        tracing::info!(was_paused, configured = self.is_active(), "faults paused");
    }

    /// Resumes the configured faults; the seeded sequence goes on where it stopped.
    pub fn resume(&self) {
        let was_paused = self.paused.swap(false, Ordering::SeqCst);
        tracing::info!(was_paused, configured = self.is_active(), "faults resumed");
    }

    /// Draws the decision for one call of `tool`.
    pub fn decide(&self, tool: &str) -> FaultDecision {
        if !self.is_active() || self.is_paused() {
            return FaultDecision::default();
        }
        if !self.fault_tools.is_empty() && !self.fault_tools.contains(tool) {
            // Not drawn from, so the faulty tools keep their seeded sequence.
            return FaultDecision {
                failure: self.fail_tools.contains(tool).then(|| {
                    mark_injected(ToolError::unavailable(format!(
                        "injected failure: tool `{tool}` is configured to always fail"
                    )))
                }),
                ..FaultDecision::default()
            };
        }
        // A poisoned lock only means another call panicked mid-draw; the generator is still usable.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let jitter = if self.jitter_ms > 0 {
            rng.random_range(0..=self.jitter_ms)
        } else {
            0
        };
        let roll: f64 = rng.random();
        // Drawn only when asked for, so seeds without an after-rate keep their old sequences.
        let after_roll: Option<f64> = (self.failure_after_rate > 0.0).then(|| rng.random());
        drop(rng);
        let failure = if self.fail_tools.contains(tool) {
            Some(ToolError::unavailable(format!(
                "injected failure: tool `{tool}` is configured to always fail"
            )))
        } else if roll < self.failure_rate {
            Some(ToolError::unavailable(format!(
                "injected failure on `{tool}` (failure rate {})",
                self.failure_rate
            )))
        } else {
            None
        };
        let failure_after = match after_roll {
            Some(r) if failure.is_none() && r < self.failure_after_rate => {
                Some(ToolError::unavailable(format!(
                    "injected failure after `{tool}` ran: its response was lost \
                     (failure-after rate {})",
                    self.failure_after_rate
                )))
            }
            _ => None,
        };
        FaultDecision {
            delay: self.latency + Duration::from_millis(jitter),
            failure: failure.map(mark_injected),
            failure_after: failure_after.map(mark_injected),
        }
    }

    /// Applies the decision for one call: waits, then says whether to fail or run the tool.
    ///
    /// Returns early (as [`Injection::Run`]) if `ct` is cancelled during the delay: the caller's
    /// cancellation handling decides what happens next. Pausing faults during the delay ends it
    /// and lets the call run unharmed.
    pub async fn inject(&self, tool: &str, ct: &CancellationToken) -> Injection {
        let decision = self.decide(tool);
        if !decision.delay.is_zero() {
            let paused = self.on_pause.notified();
            tokio::pin!(paused);
            // Registered before the check, so a pause between the two still wakes us.
            paused.as_mut().enable();
            if !self.is_paused() {
                tokio::select! {
                    _ = tokio::time::sleep(decision.delay) => {}
                    _ = paused => {}
                    _ = ct.cancelled() => return Injection::Run,
                }
            }
        }
        if self.is_paused() {
            return Injection::Run;
        }
        match (decision.failure, decision.failure_after) {
            (Some(e), _) => Injection::FailBefore(e),
            (None, Some(e)) => Injection::FailAfter(e),
            (None, None) => Injection::Run,
        }
    }

    /// Listens for SIGUSR1 (pause) and SIGUSR2 (resume) for as long as these faults live.
    ///
    /// The handlers are installed before this returns, so a signal sent any time after cannot
    /// kill the process (their default action). Does nothing, returning `false`, outside a Tokio
    /// runtime or off Unix. [`crate::ServerKit::new`] calls it, so every server gets the switch.
    pub fn watch_signals(self: &Arc<Self>) -> bool {
        watch_signals(self)
    }
}

fn mark_injected(e: ToolError) -> ToolError {
    e.with_retryable(true).with_meta("injected", true.into())
}

#[cfg(unix)]
fn watch_signals(faults: &Arc<Faults>) -> bool {
    use tokio::signal::unix::{SignalKind, signal};

    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!("no Tokio runtime: faults cannot be paused by signal");
        return false;
    };
    let (mut pause, mut resume) = match (
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) {
        (Ok(pause), Ok(resume)) => (pause, resume),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot listen for SIGUSR1/SIGUSR2: faults cannot be paused at run time");
            return false;
        }
    };
    if faults.is_active() || faults.is_paused() {
        tracing::info!(
            paused = faults.is_paused(),
            "fault injection on: SIGUSR1 pauses it, SIGUSR2 resumes it"
        );
    }
    // Weak, so the task does not keep the faults alive; it ends at the first signal after they go.
    let faults = Arc::downgrade(faults);
    runtime.spawn(async move {
        loop {
            let pausing = tokio::select! {
                Some(()) = pause.recv() => true,
                Some(()) = resume.recv() => false,
                else => break,
            };
            let Some(faults) = faults.upgrade() else {
                break;
            };
            if pausing {
                faults.pause();
            } else {
                faults.resume();
            }
        }
    });
    true
}

#[cfg(not(unix))]
fn watch_signals(_faults: &Arc<Faults>) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool_error::ErrorKind;

    fn args(seed: u64) -> FaultArgs {
        FaultArgs {
            latency_ms: 10,
            jitter_ms: 40,
            failure_rate: 0.3,
            fail_tools: vec!["always_broken".into()],
            seed: Some(seed),
            ..FaultArgs::default()
        }
    }

    fn after_args(seed: u64) -> FaultArgs {
        FaultArgs {
            failure_rate: 0.2,
            failure_after_rate: 0.4,
            ..args(seed)
        }
    }

    fn assert_injected(e: &ToolError) {
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.retryable);
        assert_eq!(e.extra_meta.get("injected"), Some(&true.into()));
    }

    #[test]
    fn fault_tools_limit_delays_and_rates_to_the_named_tools() {
        let faults = Faults::new(&FaultArgs {
            failure_rate: 1.0,
            fault_tools: vec!["release_reservation".into()],
            ..args(5)
        });
        let healthy = faults.decide("reserve_stock");
        assert_eq!(
            healthy,
            FaultDecision::default(),
            "other tools are untouched"
        );
        let flaky = faults.decide("release_reservation");
        assert!(flaky.failure.is_some() && flaky.delay >= Duration::from_millis(10));
        // A tool set to always fail still does.
        let broken = faults.decide("always_broken");
        assert_injected(broken.failure.as_ref().expect("fails"));
        assert!(broken.delay.is_zero());
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let a = Faults::new(&args(7));
        let b = Faults::new(&args(7));
        let da: Vec<_> = (0..200).map(|_| a.decide("get_customer")).collect();
        let db: Vec<_> = (0..200).map(|_| b.decide("get_customer")).collect();
        assert_eq!(da, db);
        let other = Faults::new(&args(8));
        let dc: Vec<_> = (0..200).map(|_| other.decide("get_customer")).collect();
        assert_ne!(da, dc, "a different seed gives a different sequence");
    }

    #[test]
    fn the_same_seed_gives_the_same_failures_after_the_call() {
        let a = Faults::new(&after_args(11));
        let b = Faults::new(&after_args(11));
        let da: Vec<_> = (0..300).map(|_| a.decide("create_order")).collect();
        let db: Vec<_> = (0..300).map(|_| b.decide("create_order")).collect();
        assert_eq!(da, db);
        let after: Vec<bool> = da.iter().map(|d| d.failure_after.is_some()).collect();
        let other = Faults::new(&after_args(12));
        let after_other: Vec<bool> = (0..300)
            .map(|_| other.decide("create_order").failure_after.is_some())
            .collect();
        assert_ne!(
            after, after_other,
            "a different seed gives different lost responses"
        );
    }

    #[test]
    fn failure_after_rate_is_respected_and_never_doubles_a_failure() {
        let faults = Faults::new(&after_args(3));
        let decisions: Vec<_> = (0..4000).map(|_| faults.decide("t")).collect();
        let share = |n: usize| n as f64 / decisions.len() as f64;
        let before = decisions.iter().filter(|d| d.failure.is_some()).count();
        let after = decisions
            .iter()
            .filter(|d| d.failure_after.is_some())
            .count();
        assert!(
            (0.17..0.23).contains(&share(before)),
            "before {}",
            share(before)
        );
        // The after-roll only counts for calls that were not failed before running: 0.8 × 0.4.
        assert!(
            (0.28..0.36).contains(&share(after)),
            "after {}",
            share(after)
        );
        for d in &decisions {
            assert!(d.failure.is_none() || d.failure_after.is_none());
            if let Some(e) = &d.failure_after {
                assert_injected(e);
                assert!(e.message.contains("response was lost"), "{}", e.message);
            }
        }
        // An always-failing tool fails before running, never after.
        let broken: Vec<_> = (0..100).map(|_| faults.decide("always_broken")).collect();
        assert!(
            broken
                .iter()
                .all(|d| d.failure.is_some() && d.failure_after.is_none())
        );
    }

    #[test]
    fn an_after_rate_alone_makes_faults_active() {
        let faults = Faults::new(&FaultArgs {
            failure_after_rate: 1.0,
            ..FaultArgs::default()
        });
        assert!(faults.is_active());
        let d = faults.decide("create_order");
        assert!(d.failure.is_none());
        assert_eq!(d.delay, Duration::ZERO);
        assert_injected(d.failure_after.as_ref().expect("fails after"));
    }

    #[test]
    fn failure_rate_and_latency_are_respected() {
        let faults = Faults::new(&args(42));
        let decisions: Vec<_> = (0..2000).map(|_| faults.decide("t")).collect();
        let failed = decisions.iter().filter(|d| d.failure.is_some()).count();
        let share = failed as f64 / decisions.len() as f64;
        assert!((0.25..0.35).contains(&share), "failure share {share}");
        for d in &decisions {
            assert!(d.delay >= Duration::from_millis(10) && d.delay <= Duration::from_millis(50));
            assert!(
                d.failure_after.is_none(),
                "no after-rate, no lost responses"
            );
            if let Some(e) = &d.failure {
                assert_injected(e);
            }
        }
    }

    #[test]
    fn listed_tools_always_fail_and_others_do_not_without_a_rate() {
        let faults = Faults::new(&FaultArgs {
            fail_tools: vec!["create_order".into()],
            ..FaultArgs::default()
        });
        assert!(faults.decide("create_order").failure.is_some());
        assert!(faults.decide("get_customer").failure.is_none());
    }

    #[test]
    fn no_flags_means_no_faults() {
        let faults = Faults::none();
        assert!(!faults.is_active());
        assert!(!faults.is_paused());
        assert_eq!(faults.decide("x"), FaultDecision::default());
    }

    #[test]
    fn paused_faults_inject_nothing_and_resume_where_they_stopped() {
        let faults = Faults::new(&after_args(5));
        faults.pause();
        assert!(faults.is_paused());
        for tool in ["always_broken", "t"] {
            for _ in 0..200 {
                assert_eq!(faults.decide(tool), FaultDecision::default(), "{tool}");
            }
        }
        faults.resume();
        assert!(!faults.is_paused());
        assert!(faults.decide("always_broken").failure.is_some());
        // Paused calls draw nothing: the seeded sequence goes on as if they never happened.
        let fresh = Faults::new(&after_args(5));
        let _ = fresh.decide("always_broken");
        let resumed: Vec<_> = (0..100).map(|_| faults.decide("t")).collect();
        let expected: Vec<_> = (0..100).map(|_| fresh.decide("t")).collect();
        assert_eq!(resumed, expected);
    }

    #[test]
    fn faults_can_start_paused() {
        let faults = Faults::new(&FaultArgs {
            fail_tools: vec!["get_customer".into()],
            faults_paused: true,
            ..FaultArgs::default()
        });
        assert!(faults.is_active() && faults.is_paused());
        assert!(faults.decide("get_customer").failure.is_none());
        faults.resume();
        assert!(faults.decide("get_customer").failure.is_some());
    }

    #[tokio::test]
    async fn inject_fails_before_or_after_or_not_at_all() {
        let ct = CancellationToken::new();
        let faults = Faults::new(&FaultArgs {
            failure_after_rate: 1.0,
            fail_tools: vec!["get_customer".into()],
            ..FaultArgs::default()
        });
        assert!(matches!(
            faults.inject("get_customer", &ct).await,
            Injection::FailBefore(_)
        ));
        match faults.inject("create_order", &ct).await {
            Injection::FailAfter(e) => assert_injected(&e),
            other => panic!("expected a failure after the call, got {other:?}"),
        }
        faults.pause();
        assert_eq!(faults.inject("get_customer", &ct).await, Injection::Run);
        assert_eq!(faults.inject("create_order", &ct).await, Injection::Run);
        faults.resume();
        assert!(matches!(
            faults.inject("create_order", &ct).await,
            Injection::FailAfter(_)
        ));
    }

    #[tokio::test]
    async fn pausing_ends_an_injected_delay_and_spares_the_call() {
        let faults = Arc::new(Faults::new(&FaultArgs {
            latency_ms: 60_000,
            fail_tools: vec!["get_customer".into()],
            ..FaultArgs::default()
        }));
        let call = tokio::spawn({
            let faults = faults.clone();
            async move {
                faults
                    .inject("get_customer", &CancellationToken::new())
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!call.is_finished(), "waiting out the injected latency");
        faults.pause();
        let injection = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the pause ends the delay")
            .expect("task ok");
        assert_eq!(injection, Injection::Run);
    }

    #[test]
    fn rate_outside_zero_to_one_is_rejected() {
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("abc").is_err());
        assert_eq!(parse_rate("0.25"), Ok(0.25));
    }

    #[test]
    fn the_new_flags_parse() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            faults: FaultArgs,
        }
        let cli = Cli::try_parse_from(["x", "--failure-after-rate", "0.5", "--faults-paused"])
            .expect("parses");
        assert_eq!(cli.faults.failure_after_rate, 0.5);
        assert!(cli.faults.faults_paused);
        let plain = Cli::try_parse_from(["x"]).expect("parses");
        assert_eq!(plain.faults.failure_after_rate, 0.0);
        assert!(!plain.faults.faults_paused);
        assert!(Cli::try_parse_from(["x", "--failure-after-rate", "2"]).is_err());
    }
}
