//! Goodput: per server role, the share of pass-through calls that succeeded against the share
//! that could have (what the faults leave possible), and the calls to a server around an outage.
//!
//! "Could have" is `uptime × (1 − failure_rate^attempts)`: a call can only succeed while its
//! server is up, and fails while up only when every attempt draws an injected failure (each
//! attempt fails independently at `failure_rate`; `attempts` is the configured
//! `retry.maxAttempts`, since the retry budget and the breaker are the orchestrator's to get
//! right). The healthy server has neither downtime nor injected failures: 100%.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::{mix::Kind, report::Answer, setup::Role, watch::round};

/// A stretch of the run, in seconds since the calls began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// Start (included).
    pub from: f64,
    /// End (excluded).
    pub to: f64,
}

impl Span {
    /// Its length in seconds.
    pub fn secs(self) -> f64 {
        (self.to - self.from).max(0.0)
    }

    /// Whether `at` falls in it.
    pub fn contains(self, at: f64) -> bool {
        at >= self.from && at < self.to
    }
}

/// A server's downtime: from each time it was taken down to the first time it was seen back
/// after it (`back`, ascending), or to `end` when it never was; clipped to the run `[0, end]`,
/// overlaps merged.
pub fn downtime(downs: &[f64], back: &[f64], end: f64) -> Vec<Span> {
    let mut spans: Vec<Span> = downs
        .iter()
        .map(|&from| {
            let to = back.iter().copied().find(|&b| b > from).unwrap_or(end);
            Span {
                from: from.clamp(0.0, end),
                to: to.clamp(0.0, end),
            }
        })
        .filter(|s| s.secs() > 0.0)
        .collect();
    spans.sort_by(|a, b| a.from.total_cmp(&b.from));
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.from <= last.to => last.to = last.to.max(s.to),
            _ => merged.push(s),
        }
    }
    merged
}

/// The share of the run `[0, end]` outside `down` (1 for an empty run).
pub fn uptime_share(down: &[Span], end: f64) -> f64 {
    if end <= 0.0 {
        return 1.0;
    }
    let down = down.iter().fold(0.0, |t, s| t + s.secs());
    (1.0 - down / end).clamp(0.0, 1.0)
}

/// The share of calls that could succeed: up `uptime` of the time, and then failing only when
/// each of `attempts` independent attempts fails at `failure_rate`.
pub fn could_have(uptime: f64, failure_rate: f64, attempts: u32) -> f64 {
    let all_fail = failure_rate
        .clamp(0.0, 1.0)
        .powi(i32::try_from(attempts.max(1)).unwrap_or(i32::MAX));
    uptime * (1.0 - all_fail)
}

/// Where a call sent at some moment falls relative to an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Sent before the server was taken down.
    Before,
    /// Sent while it was down.
    During,
    /// Sent once it was back.
    After,
}

impl Phase {
    /// The phase of a call sent at `at` (seconds into the run).
    pub fn of(at: f64, outage: Span) -> Self {
        if at < outage.from {
            Phase::Before
        } else if at < outage.to {
            Phase::During
        } else {
            Phase::After
        }
    }

    /// The name used in the report.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::During => "during",
            Phase::After => "after",
        }
    }
}

/// Of calls as (sent at, succeeded) in order of sending: how many sent at or after `since`
/// failed before the first that succeeded, and when that one was sent (`None`: none did).
pub fn failures_before_first_success(
    calls: impl IntoIterator<Item = (f64, bool)>,
    since: f64,
) -> (u64, Option<f64>) {
    let mut failed = 0;
    for (at, ok) in calls.into_iter().filter(|(at, _)| *at >= since) {
        if ok {
            return (failed, Some(at));
        }
        failed += 1;
    }
    (failed, None)
}

/// Seconds from `began` to `at`.
pub fn secs_since(began: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(began).as_secs_f64()
}

/// Answered calls and successes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Calls answered.
    pub calls: u64,
    /// Of which succeeded.
    pub ok: u64,
}

impl Count {
    fn add(&mut self, ok: bool) {
        self.calls += 1;
        self.ok += u64::from(ok);
    }

    /// Succeeded share (0 when no call).
    pub fn share(self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.ok as f64 / self.calls as f64
        }
    }

    fn to_json(self) -> Value {
        json!({ "calls": self.calls, "ok": self.ok, "share": round(self.share(), 5) })
    }
}

/// What a role's server went through, for its could-have share.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Share of attempts failing on purpose (0 but for the flaky server).
    pub failure_rate: f64,
    /// Attempts per call and the `mcp.json` field they come from.
    pub attempts: (u32, String),
    /// When the server was down.
    pub down: Vec<Span>,
    /// How `down` was found, in words.
    pub down_from: String,
}

/// Goodput of one role's pass-through calls.
#[derive(Debug, Clone)]
pub struct RoleGoodput {
    /// The role.
    pub role: Role,
    /// Its server.
    pub server: &'static str,
    /// All its pass-through calls.
    pub all: Count,
    /// Those sent while its server was up, and while it was down.
    pub sent_up: Count,
    /// See `sent_up`.
    pub sent_down: Count,
    /// The run's length, seconds.
    pub run_secs: f64,
    /// The faults.
    pub faults: Faults,
}

impl RoleGoodput {
    /// The figures of `role` from the answers of a run of `run_secs` that began at `began`.
    pub fn of(
        role: Role,
        answers: &[Answer],
        began: Instant,
        run_secs: f64,
        faults: Faults,
    ) -> Self {
        let server = role.server();
        let mut g = Self {
            role,
            server,
            all: Count::default(),
            sent_up: Count::default(),
            sent_down: Count::default(),
            run_secs,
            faults,
        };
        for a in answers.iter().filter(|a| a.kind.server() == Some(server)) {
            let ok = a.failure.is_none();
            g.all.add(ok);
            let at = secs_since(began, a.sent);
            if g.faults.down.iter().any(|s| s.contains(at)) {
                g.sent_down.add(ok);
            } else {
                g.sent_up.add(ok);
            }
        }
        g
    }

    /// The server's share of the run up.
    pub fn uptime(&self) -> f64 {
        uptime_share(&self.faults.down, self.run_secs)
    }

    /// Seconds down.
    pub fn down_secs(&self) -> f64 {
        // A fold from +0: `sum` of nothing is -0, which would print as such.
        self.faults.down.iter().fold(0.0, |t, s| t + s.secs())
    }

    /// The share that could have succeeded.
    pub fn could_have(&self) -> f64 {
        could_have(
            self.uptime(),
            self.faults.failure_rate,
            self.faults.attempts.0,
        )
    }

    /// How the could-have share is derived, in words.
    pub fn derivation(&self) -> String {
        let f = &self.faults;
        let mut parts = Vec::new();
        if f.failure_rate > 0.0 {
            parts.push(format!(
                "1 - {}^{} = {:.2}% (failure rate {}; {} attempts: {})",
                f.failure_rate,
                f.attempts.0,
                could_have(1.0, f.failure_rate, f.attempts.0) * 100.0,
                f.failure_rate,
                f.attempts.0,
                f.attempts.1
            ));
        }
        if !f.down.is_empty() {
            parts.push(format!(
                "up {:.2}% of the run ({:.2} s down of {:.2} s: {})",
                self.uptime() * 100.0,
                self.down_secs(),
                self.run_secs,
                f.down_from
            ));
        }
        if parts.is_empty() {
            "no fault injected: 100%".to_owned()
        } else {
            parts.join(" x ")
        }
    }

    /// Percentage points by which the succeeded share falls short of the could-have one
    /// (negative: above it), to 1/100 of a point.
    pub fn gap_points(&self) -> f64 {
        // Rounded, and 0 without a sign, so equal shares read "+0.00".
        round((self.could_have() - self.all.share()) * 100.0, 2) + 0.0
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        let f = &self.faults;
        json!({
            "server": self.server,
            "calls": self.all.calls,
            "ok": self.all.ok,
            "share": round(self.all.share(), 5),
            "couldHave": round(self.could_have(), 5),
            "gapPoints": round(self.gap_points(), 2),
            "derivation": self.derivation(),
            "failureRate": f.failure_rate,
            "maxAttempts": f.attempts.0,
            "maxAttemptsFrom": f.attempts.1,
            "uptimeShare": round(self.uptime(), 5),
            "downSecs": round(self.down_secs(), 3),
            "downFrom": f.down_from,
            "down": f.down.iter().map(|s| json!([round(s.from, 3), round(s.to, 3)])).collect::<Vec<_>>(),
            "sentWhileUp": self.sent_up.to_json(),
            "sentWhileDown": self.sent_down.to_json(),
        })
    }

    /// One line of the text table, and one more when the server was down.
    pub fn to_text(&self) -> String {
        let mut line = format!(
            "  {:<8} {:<7} {:>7} {:>7} {:>7.2}% {:>9.2}% {:>+7.2}  {}\n",
            self.role.label(),
            self.server,
            self.all.calls,
            self.all.ok,
            self.all.share() * 100.0,
            self.could_have() * 100.0,
            // `0.0 -`, not `-`: no "-0.00" when the shares are equal.
            0.0 - self.gap_points(),
            self.derivation()
        );
        if !self.faults.down.is_empty() {
            line.push_str(&format!(
                "  {:<16} sent while up {}/{} ok ({:.2}%), sent while down {}/{} ok\n",
                "",
                self.sent_up.ok,
                self.sent_up.calls,
                self.sent_up.share() * 100.0,
                self.sent_down.ok,
                self.sent_down.calls,
            ));
        }
        line
    }
}

/// The header of [`RoleGoodput::to_text`] lines.
pub const TEXT_HEADER: &str =
    "  role     server    calls      ok    share  could have  vs could  derivation of could have";

/// Calls to the server during one outage and after it.
#[derive(Debug, Clone)]
pub struct OutageCalls {
    /// The outage.
    pub outage: Span,
    /// Calls by the phase they were sent in.
    pub by_phase: [Count; 3],
    /// Failures by label, of calls sent during the outage.
    pub failures_during: std::collections::BTreeMap<String, u64>,
    /// Latency (µs) of calls sent during the outage.
    pub latency_during: Histogram<u64>,
    /// Latency (µs) of the healthy server's pass-through calls sent during the outage: how
    /// fast the orchestrator answered at all then.
    pub healthy_latency_during: Histogram<u64>,
    /// Calls sent before the outage and answered during it: in flight when it began.
    pub in_flight_at_down: u64,
    /// When each call sent during the outage was sent, ascending.
    pub sent_during: Vec<f64>,
    /// Calls sent after the return that failed before the first success.
    pub failed_after_return: u64,
    /// When the first successful call after the return was sent and answered (seconds into
    /// the run).
    pub first_success: Option<(f64, f64)>,
}

impl OutageCalls {
    /// The pass-through calls of `kind` around `outage`.
    pub fn of(
        kind: Kind,
        answers: &[Answer],
        began: Instant,
        outage: Span,
    ) -> anyhow::Result<Self> {
        let micros = |a: &Answer| {
            u64::try_from(a.latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1)
        };
        let mut calls: Vec<&Answer> = answers.iter().filter(|a| a.kind == kind).collect();
        calls.sort_by_key(|a| a.sent);
        let mut by_phase = [Count::default(); 3];
        let mut failures_during = std::collections::BTreeMap::new();
        let mut latency_during = Histogram::new_with_bounds(1, 3_600_000_000, 3)?;
        let mut in_flight_at_down = 0;
        let mut sent_during = Vec::new();
        for a in &calls {
            let sent = secs_since(began, a.sent);
            let phase = Phase::of(sent, outage);
            by_phase[phase as usize].add(a.failure.is_none());
            match phase {
                Phase::Before if sent + a.latency.as_secs_f64() >= outage.from => {
                    in_flight_at_down += 1;
                }
                Phase::During => {
                    sent_during.push(sent);
                    latency_during.saturating_record(micros(a));
                    if let Some(label) = &a.failure {
                        *failures_during.entry(label.clone()).or_insert(0) += 1;
                    }
                }
                Phase::Before | Phase::After => {}
            }
        }
        let mut healthy_latency_during = Histogram::new_with_bounds(1, 3_600_000_000, 3)?;
        for a in answers.iter().filter(|a| {
            a.kind.server() == Some(Role::Healthy.server())
                && outage.contains(secs_since(began, a.sent))
        }) {
            healthy_latency_during.saturating_record(micros(a));
        }
        let (failed_after_return, first) = failures_before_first_success(
            calls
                .iter()
                .map(|a| (secs_since(began, a.sent), a.failure.is_none())),
            outage.to,
        );
        let first_success = first.and_then(|sent| {
            calls
                .iter()
                .find(|a| a.failure.is_none() && secs_since(began, a.sent) == sent)
                .map(|a| (sent, sent + a.latency.as_secs_f64()))
        });
        Ok(Self {
            outage,
            by_phase,
            failures_during,
            latency_during,
            healthy_latency_during,
            in_flight_at_down,
            sent_during,
            failed_after_return,
            first_success,
        })
    }

    /// Milliseconds at quantile `q` of the calls sent during the outage.
    pub fn during_ms(&self, q: f64) -> f64 {
        self.latency_during.value_at_quantile(q) as f64 / 1000.0
    }

    /// Calls sent during the outage within `secs` of its start.
    pub fn sent_within(&self, secs: f64) -> u64 {
        self.sent_during
            .partition_point(|at| *at < self.outage.from + secs) as u64
    }

    /// Milliseconds at quantile `q` of the healthy calls sent during the outage.
    pub fn healthy_during_ms(&self, q: f64) -> f64 {
        self.healthy_latency_during.value_at_quantile(q) as f64 / 1000.0
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        let phases: serde_json::Map<String, Value> = [Phase::Before, Phase::During, Phase::After]
            .into_iter()
            .map(|p| (p.label().to_owned(), self.by_phase[p as usize].to_json()))
            .collect();
        json!({
            "byPhase": phases,
            "failuresDuring": self.failures_during,
            "duringP50Ms": round(self.during_ms(0.5), 2),
            "duringP99Ms": round(self.during_ms(0.99), 2),
            "duringMaxMs": round(self.latency_during.max() as f64 / 1000.0, 2),
            "healthyDuringP50Ms": round(self.healthy_during_ms(0.5), 2),
            "healthyDuringP99Ms": round(self.healthy_during_ms(0.99), 2),
            "inFlightAtDown": self.in_flight_at_down,
            "failedAfterReturnBeforeFirstSuccess": self.failed_after_return,
            "firstSuccessAfterReturn": self.first_success.map(|(sent, answered)| json!({
                "sentSecsAfterReturn": round(sent - self.outage.to, 3),
                "answeredSecsAfterReturn": round(answered - self.outage.to, 3),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(from: f64, to: f64) -> Span {
        Span { from, to }
    }

    #[test]
    fn downtime_runs_from_each_kill_to_the_next_connection() {
        // Connected before the run, killed at 2 and 6, connected again at 2.5 and never after 6.
        let down = downtime(&[2.0, 6.0], &[-0.3, 2.5], 8.0);
        assert_eq!(down, vec![span(2.0, 2.5), span(6.0, 8.0)]);
        assert!((uptime_share(&down, 8.0) - 5.5 / 8.0).abs() < 1e-9);
    }

    #[test]
    fn downtime_is_clipped_to_the_run_and_merged() {
        // A kill before a connection seen twice, and one after the run's end.
        let down = downtime(&[-1.0, 1.0, 1.5, 9.0], &[0.5, 3.0, 3.0], 8.0);
        assert_eq!(down, vec![span(0.0, 0.5), span(1.0, 3.0)]);
        assert_eq!(uptime_share(&[], 8.0), 1.0);
        assert_eq!(uptime_share(&[span(0.0, 20.0)], 8.0), 0.0);
        assert_eq!(uptime_share(&[], 0.0), 1.0);
    }

    #[test]
    fn could_have_is_uptime_times_one_minus_rate_to_the_attempts() {
        assert!((could_have(1.0, 0.2, 2) - 0.96).abs() < 1e-12);
        assert!((could_have(1.0, 0.2, 3) - 0.992).abs() < 1e-12);
        assert!((could_have(0.5, 0.2, 1) - 0.4).abs() < 1e-12);
        assert_eq!(could_have(0.9, 0.0, 2), 0.9);
        // Zero attempts cannot be configured; it reads as one.
        assert!((could_have(1.0, 0.5, 0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn calls_are_placed_by_when_they_were_sent() {
        let outage = span(5.0, 15.0);
        assert_eq!(Phase::of(4.999, outage), Phase::Before);
        assert_eq!(Phase::of(5.0, outage), Phase::During);
        assert_eq!(Phase::of(14.999, outage), Phase::During);
        assert_eq!(Phase::of(15.0, outage), Phase::After);
    }

    fn answer(
        began: Instant,
        kind: Kind,
        sent: f64,
        latency: f64,
        failure: Option<&str>,
    ) -> Answer {
        Answer {
            kind,
            sent: began + std::time::Duration::from_secs_f64(sent),
            latency: std::time::Duration::from_secs_f64(latency),
            failure: failure.map(str::to_owned),
        }
    }

    /// Calls sent around an outage from 5 s to 15 s: two before (one in flight at the kill),
    /// two refused during, one refused and two successes after; a healthy one during.
    fn around_an_outage() -> (Instant, Vec<Answer>) {
        let began = Instant::now();
        let c = Kind::CosmosBehavior;
        let open = Some("unavailable/circuit_open");
        let answers = vec![
            answer(began, c, 1.0, 0.1, None),
            answer(began, c, 4.9, 0.3, Some("unavailable/connection_lost")),
            answer(began, c, 5.1, 0.002, open),
            answer(began, Kind::SqlCustomer, 5.5, 0.05, None),
            answer(began, c, 6.0, 0.004, open),
            answer(began, c, 15.0, 0.001, open),
            answer(began, c, 15.1, 0.02, None),
            answer(began, c, 15.2, 0.02, None),
        ];
        (began, answers)
    }

    #[test]
    fn goodput_counts_a_role_s_calls_by_whether_its_server_was_up() {
        let (began, answers) = around_an_outage();
        let faults = Faults {
            failure_rate: 0.0,
            attempts: (2, "test".to_owned()),
            down: vec![span(5.0, 15.0)],
            down_from: "test".to_owned(),
        };
        let g = RoleGoodput::of(Role::Flaky, &answers, began, 20.0, faults);
        assert_eq!(g.all, Count { calls: 7, ok: 3 });
        assert_eq!(g.sent_down, Count { calls: 2, ok: 0 });
        assert_eq!(g.sent_up, Count { calls: 5, ok: 3 });
        assert!((g.could_have() - 0.5).abs() < 1e-12);
        assert!((g.gap_points() - (50.0 - 300.0 / 7.0)).abs() < 0.01);
    }

    #[test]
    fn calls_around_an_outage_are_counted_by_when_they_were_sent() -> anyhow::Result<()> {
        let (began, answers) = around_an_outage();
        let c = Kind::CosmosBehavior;
        let calls = OutageCalls::of(c, &answers, began, span(5.0, 15.0))?;
        assert_eq!(
            calls.by_phase,
            [
                Count { calls: 2, ok: 1 },
                Count { calls: 2, ok: 0 },
                Count { calls: 3, ok: 2 }
            ]
        );
        assert_eq!(calls.in_flight_at_down, 1);
        assert_eq!(
            calls.failures_during.get("unavailable/circuit_open"),
            Some(&2)
        );
        assert_eq!(calls.sent_within(0.5), 1);
        assert_eq!(calls.sent_within(10.0), 2);
        assert_eq!(calls.failed_after_return, 1);
        let (sent, answered) = calls.first_success.expect("a success after the return");
        assert!((sent - 15.1).abs() < 1e-6 && (answered - 15.12).abs() < 1e-6);
        assert!((calls.during_ms(1.0) - 4.0).abs() < 0.01);
        assert!((calls.healthy_during_ms(0.5) - 50.0).abs() < 0.1);

        Ok(())
    }

    #[test]
    fn failures_after_the_return_count_until_the_first_success() {
        let calls = [
            (4.0, true),
            (14.0, false),
            (15.0, false),
            (15.1, false),
            (15.2, true),
            (15.3, false),
        ];
        assert_eq!(failures_before_first_success(calls, 15.0), (2, Some(15.2)));
        assert_eq!(failures_before_first_success(calls, 15.25), (1, None));
        assert_eq!(failures_before_first_success([], 0.0), (0, None));
    }
}
