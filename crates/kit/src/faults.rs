//! Fault injection: make a server slow or flaky on purpose, deterministically when seeded.
//!
//! Demos and tests need servers that misbehave in known ways. Every tool call asks [`Faults`] for a
//! [`FaultDecision`] before it runs; the decision is drawn from one seeded generator, so the same
//! seed and the same call order give the same delays and failures. An injected failure is an
//! `unavailable` tool error marked retryable, never a crash.

use std::{collections::HashSet, sync::Mutex, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng};
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
    /// Tools that always fail (comma-separated names).
    #[arg(long, env = "MCP_FAULT_FAIL_TOOLS", value_delimiter = ',')]
    pub fail_tools: Vec<String>,
    /// Seed for the fault generator; the same seed gives the same faults in the same order.
    #[arg(long, env = "MCP_FAULT_SEED")]
    pub seed: Option<u64>,
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
#[derive(Debug, Clone, PartialEq)]
pub struct FaultDecision {
    /// How long to wait before running the tool.
    pub delay: Duration,
    /// The error to return instead of running the tool, if any.
    pub failure: Option<ToolError>,
}

/// The fault generator of one process.
#[derive(Debug)]
pub struct Faults {
    latency: Duration,
    jitter_ms: u64,
    failure_rate: f64,
    fail_tools: HashSet<String>,
    /// One generator for the process, so a seed fixes the whole sequence of decisions.
    rng: Mutex<StdRng>,
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
            fail_tools: args
                .fail_tools
                .iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            rng: Mutex::new(rng),
        }
    }

    /// No faults at all.
    pub fn none() -> Self {
        Self::new(&FaultArgs::default())
    }

    /// Whether any fault is configured (so healthy runs skip the generator entirely).
    pub fn is_active(&self) -> bool {
        !self.latency.is_zero()
            || self.jitter_ms > 0
            || self.failure_rate > 0.0
            || !self.fail_tools.is_empty()
    }

    /// Draws the decision for one call of `tool`.
    pub fn decide(&self, tool: &str) -> FaultDecision {
        if !self.is_active() {
            return FaultDecision {
                delay: Duration::ZERO,
                failure: None,
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
        FaultDecision {
            delay: self.latency + Duration::from_millis(jitter),
            failure: failure.map(|e| e.with_retryable(true).with_meta("injected", true.into())),
        }
    }

    /// Applies the decision for one call: waits, then fails or lets the call run.
    ///
    /// Returns early (as `Ok`) if `ct` is cancelled during the delay: the caller's cancellation
    /// handling decides what happens next.
    pub async fn inject(&self, tool: &str, ct: &CancellationToken) -> Result<(), ToolError> {
        let decision = self.decide(tool);
        if !decision.delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(decision.delay) => {}
                _ = ct.cancelled() => return Ok(()),
            }
        }
        match decision.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
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
        }
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
    fn failure_rate_and_latency_are_respected() {
        let faults = Faults::new(&args(42));
        let decisions: Vec<_> = (0..2000).map(|_| faults.decide("t")).collect();
        let failed = decisions.iter().filter(|d| d.failure.is_some()).count();
        let share = failed as f64 / decisions.len() as f64;
        assert!((0.25..0.35).contains(&share), "failure share {share}");
        for d in &decisions {
            assert!(d.delay >= Duration::from_millis(10) && d.delay <= Duration::from_millis(50));
            if let Some(e) = &d.failure {
                assert_eq!(e.kind, ErrorKind::Unavailable);
                assert!(e.retryable);
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
        assert_eq!(faults.decide("x").delay, Duration::ZERO);
    }

    #[test]
    fn rate_outside_zero_to_one_is_rejected() {
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("abc").is_err());
        assert_eq!(parse_rate("0.25"), Ok(0.25));
    }
}
