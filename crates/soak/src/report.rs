//! The figures of a run, the invariants checked on them, and their text and JSON forms.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::{
    goodput::{self, Faults, OutageCalls, RoleGoodput},
    mix::{Kind, MIX, Outcome},
    outage,
    procs::Proc,
    rpc::Matching,
    setup::{FLAKY, KILLED, Role},
    status::{self, Breakers, Trace},
    watch::{Snapshot, Watch, round},
};

/// Answers of one kind of call.
#[derive(Debug, Clone)]
pub struct KindTally {
    /// Calls sent.
    pub sent: u64,
    /// Calls answered.
    pub answered: u64,
    /// Answers that are successes.
    pub ok: u64,
    /// Answers that are failures, by label.
    pub failures: BTreeMap<String, u64>,
    /// One message per failure label.
    pub examples: BTreeMap<String, String>,
    /// A composite's steps: step -> outcome -> count.
    pub steps: BTreeMap<String, BTreeMap<String, u64>>,
    /// Latency from send to answer, in µs.
    pub latency: Histogram<u64>,
}

/// One answered call, for the figures over time (goodput, the outage).
#[derive(Debug, Clone)]
pub struct Answer {
    /// What it called.
    pub kind: Kind,
    /// When it was sent.
    pub sent: Instant,
    /// From send to answer.
    pub latency: Duration,
    /// Its failure label (see [`Outcome::label`]); `None`: it succeeded.
    pub failure: Option<String>,
}

/// Answers of every kind.
#[derive(Debug, Clone)]
pub struct Tally {
    /// By kind of call.
    pub kinds: BTreeMap<Kind, KindTally>,
    /// Latency of every call, in µs.
    pub all: Histogram<u64>,
    /// Every answer, in the order they came.
    pub answers: Vec<Answer>,
}

impl Tally {
    /// An empty tally for every kind of the mix.
    pub fn new() -> anyhow::Result<Self> {
        let hist = || Histogram::new_with_bounds(1, 3_600_000_000, 3);
        let mut kinds = BTreeMap::new();
        for (kind, _) in MIX {
            kinds.insert(
                kind,
                KindTally {
                    sent: 0,
                    answered: 0,
                    ok: 0,
                    failures: BTreeMap::new(),
                    examples: BTreeMap::new(),
                    steps: BTreeMap::new(),
                    latency: hist()?,
                },
            );
        }
        Ok(Self {
            kinds,
            all: hist()?,
            answers: Vec::new(),
        })
    }

    /// Counts one call sent.
    pub fn sent(&mut self, kind: Kind) {
        if let Some(k) = self.kinds.get_mut(&kind) {
            k.sent += 1;
        }
    }

    /// Counts one answer to a call sent at `sent`.
    pub fn record(&mut self, kind: Kind, outcome: &Outcome, sent: Instant, latency: Duration) {
        self.answers.push(Answer {
            kind,
            sent,
            latency,
            failure: (!outcome.is_ok()).then(|| outcome.label.clone()),
        });
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.all.saturating_record(micros);
        let Some(k) = self.kinds.get_mut(&kind) else {
            return;
        };
        k.answered += 1;
        k.latency.saturating_record(micros);
        if outcome.is_ok() {
            k.ok += 1;
        } else {
            *k.failures.entry(outcome.label.clone()).or_insert(0) += 1;
            if let Some(d) = &outcome.detail {
                k.examples
                    .entry(outcome.label.clone())
                    .or_insert_with(|| d.clone());
            }
        }
        for (step, result) in &outcome.steps {
            *k.steps
                .entry(step.clone())
                .or_default()
                .entry(result.clone())
                .or_insert(0) += 1;
        }
    }

    /// Moves the figures out, leaving an empty tally.
    pub fn take(&mut self) -> Self {
        let answers = std::mem::take(&mut self.answers);
        let mut taken = self.clone();
        taken.answers = answers;
        for k in self.kinds.values_mut() {
            k.sent = 0;
            k.answered = 0;
            k.ok = 0;
            k.failures.clear();
            k.examples.clear();
            k.steps.clear();
            k.latency.reset();
        }
        self.all.reset();
        taken
    }
}

/// What the run was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Calls to make.
    pub calls: u64,
    /// Calls in flight.
    pub concurrency: usize,
    /// The REST server is killed after living this long (`None`: never).
    pub kill_every: Option<Duration>,
    /// The flaky server's failure rate.
    pub failure_rate: f64,
    /// Seed of the faults and of the mix.
    pub seed: u64,
    /// Attempts per upstream call.
    pub max_attempts: u32,
    /// Calls before the baseline.
    pub warmup_calls: u64,
    /// Allowed RSS growth from the baseline to the end (0.10 = 10%).
    pub max_rss_growth: f64,
    /// Allowed growth of the open descriptors.
    pub max_fd_growth: i64,
    /// Where the binaries came from.
    pub bin_dir: PathBuf,
    /// Attempts per call of the flaky server's pass-through tool, and the `mcp.json` field
    /// they come from.
    pub flaky_attempts: (u32, String),
    /// Opt-in invariant: the flaky server's goodput is at least this many percent.
    pub min_goodput_flaky: Option<f64>,
    /// Opt-in invariant: the killed server's goodput is at most this many points under its
    /// could-have share.
    pub max_goodput_gap_killed: Option<f64>,
    /// The flaky server's outage, when the soak runs it over HTTP to take it down.
    pub outage: Option<outage::Plan>,
    /// The orchestrator's children when all is well, by executable.
    pub children: BTreeMap<String, u32>,
}

/// How the orchestrator ended.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Its exit status, or why there is none.
    pub status: String,
    /// Whether it exited successfully after its stdin closed.
    pub clean: bool,
    /// Seconds from closing its stdin to its exit.
    pub secs: f64,
    /// Processes of the run still there afterwards.
    pub left: Vec<Proc>,
}

/// Everything measured.
#[derive(Debug)]
pub struct Report {
    /// The settings.
    pub settings: Settings,
    /// Each kind's role and the servers its success depends on.
    pub roles: BTreeMap<Kind, (Role, BTreeSet<String>)>,
    /// Calls sent.
    pub sent: u64,
    /// Whether sending stopped early (the window stayed full, or the orchestrator went away).
    pub stopped_early: bool,
    /// Matching of responses to requests.
    pub matching: Matching,
    /// Calls never answered, by tool.
    pub lost: BTreeMap<&'static str, u64>,
    /// Answers.
    pub tally: Tally,
    /// From the first call sent to the last answer.
    pub elapsed: Duration,
    /// What the watcher saw.
    pub watch: Watch,
    /// Whether the three servers were running (and REST listed again) before the end snapshot.
    pub settled: bool,
    /// The end snapshot, after the calls and the settling.
    pub end: Snapshot,
    /// Killed processes still present at the end (not reaped).
    pub unreaped: Vec<u32>,
    /// Processes of the run that are not the orchestrator's children, before shutdown.
    pub orphans: Vec<Proc>,
    /// The shutdown.
    pub shutdown: Shutdown,
    /// The orchestrator's log, when kept.
    pub log: Option<PathBuf>,
    /// When the first call was sent.
    pub began: Instant,
    /// `orchestrator://status` read every 100 ms during the run.
    pub trace: Trace,
    /// The breakers in `orchestrator://status` read at the end.
    pub breakers: Breakers,
    /// The outage, when there was one (`settings.outage`).
    pub outage: Option<outage::Record>,
    /// Whether the flaky server the soak runs over HTTP was running at the end (`None`: the
    /// orchestrator runs it over stdio).
    pub flaky_http_running: Option<bool>,
}

/// One invariant and whether it held.
#[derive(Debug, Clone)]
pub struct Check {
    /// What must hold.
    pub name: &'static str,
    /// Whether it did.
    pub ok: bool,
    /// The figures behind it.
    pub detail: String,
}

/// Answers of calls whose role is `role`: (answered, ok).
fn by_role(r: &Report, role: Role) -> (u64, u64) {
    r.tally
        .kinds
        .iter()
        .filter(|(k, _)| r.roles.get(k).map(|(role, _)| *role) == Some(role))
        .fold((0, 0), |(a, o), (_, t)| (a + t.answered, o + t.ok))
}

fn pct(ok: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        ok as f64 * 100.0 / of as f64
    }
}

impl Report {
    fn mismatched(&self) -> u64 {
        self.tally
            .kinds
            .values()
            .filter_map(|k| k.failures.get("mismatch"))
            .sum()
    }

    fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// Failures of the flaky server seen: its pass-through failures and composite steps on it
    /// that fell back or failed.
    fn flaky_failures(&self) -> u64 {
        let mut n = 0;
        for (kind, t) in &self.tally.kinds {
            if kind.server() == Some(FLAKY) {
                n += t.answered - t.ok;
            }
        }
        for t in self.tally.kinds.values() {
            for (step, outcomes) in &t.steps {
                // Only `customer_insights.behavior` runs on the flaky server in this mix.
                if step == "behavior" {
                    n += outcomes.get("fallback").copied().unwrap_or(0)
                        + outcomes.get("failed").copied().unwrap_or(0);
                }
            }
        }
        n
    }

    /// Seconds from the first call sent to the last answer.
    fn run_secs(&self) -> f64 {
        self.elapsed.as_secs_f64()
    }

    /// Goodput of each role's pass-through calls.
    pub fn goodput(&self) -> Vec<RoleGoodput> {
        let s = &self.settings;
        let run = self.run_secs();
        Role::ALL
            .into_iter()
            .map(|role| {
                let mut faults = Faults {
                    failure_rate: 0.0,
                    attempts: s.flaky_attempts.clone(),
                    down: Vec::new(),
                    down_from: String::new(),
                };
                match role {
                    Role::Healthy => {}
                    Role::Flaky => {
                        faults.failure_rate = s.failure_rate;
                        if let Some(span) = self.outage.as_ref().and_then(outage::Record::span) {
                            faults.down = goodput::downtime(&[span.from], &[span.to], run);
                            faults.down_from = "killed by the soak until its port accepted \
                                               connections again"
                                .to_owned();
                        }
                    }
                    Role::Killed => {
                        let connections = self
                            .trace
                            .servers
                            .get(KILLED)
                            .map_or(&[][..], |t| t.connections.as_slice());
                        faults.down = goodput::downtime(&self.watch.kill_times, connections, run);
                        faults.down_from = format!(
                            "from each SIGKILL to the next `connectedSince` of {KILLED} in \
                             orchestrator://status, read every 100 ms; no {KILLED} process \
                             alive for {:.2} s of it",
                            self.watch.rest_down.as_secs_f64()
                        );
                    }
                }
                RoleGoodput::of(role, &self.tally.answers, self.began, run, faults)
            })
            .collect()
    }

    /// The flaky server's pass-through calls around its outage, once the outage is over.
    pub fn outage_calls(&self) -> Option<OutageCalls> {
        let span = self.outage.as_ref()?.span()?;
        OutageCalls::of(Kind::CosmosBehavior, &self.tally.answers, self.began, span).ok()
    }

    fn rss_ratio(&self) -> Option<f64> {
        let base = self.watch.baseline.as_ref()?.rss_kib;
        (base > 0).then(|| self.end.rss_kib as f64 / base as f64)
    }

    fn fd_growth(&self) -> Option<i64> {
        let base = self.watch.baseline.as_ref()?.fd_total();
        Some(i64::from(self.end.fd_total()) - i64::from(base))
    }

    /// The invariants, in order.
    pub fn checks(&self) -> Vec<Check> {
        let s = &self.settings;
        let m = &self.matching;
        let mut out = Vec::new();
        out.push(Check {
            name: "every call answered exactly once",
            ok: self.sent == s.calls
                && !self.stopped_early
                && m.answered == self.sent
                && self.lost_total() == 0
                && m.unmatched == 0
                && m.duplicates == 0,
            detail: format!(
                "sent {} of {}, answered {}, lost {}, unmatched {}, duplicates {}",
                self.sent,
                s.calls,
                m.answered,
                self.lost_total(),
                m.unmatched,
                m.duplicates
            ),
        });
        out.push(Check {
            name: "answers match their requests",
            ok: self.mismatched() == 0 && m.garbage == 0,
            detail: format!(
                "{} successes naming another request's data, {} non-JSON-RPC lines",
                self.mismatched(),
                m.garbage
            ),
        });
        let (h_answered, h_ok) = by_role(self, Role::Healthy);
        out.push(Check {
            name: "calls to healthy servers all succeed",
            ok: h_answered > 0 && h_ok == h_answered,
            detail: format!("{h_ok}/{h_answered} ({:.3}%)", pct(h_ok, h_answered)),
        });
        let mut exercised = Vec::new();
        let mut faults_ok = true;
        if s.kill_every.is_some() {
            faults_ok &= self.watch.kills > 0;
            exercised.push(format!("{} kills of rest", self.watch.kills));
        }
        if s.failure_rate > 0.0 {
            faults_ok &= self.flaky_failures() > 0;
            exercised.push(format!(
                "{} failures or fallbacks on {FLAKY}",
                self.flaky_failures()
            ));
        }
        if s.outage.is_some() {
            let span = self.outage.as_ref().and_then(outage::Record::span);
            faults_ok &= span.is_some();
            exercised.push(match span {
                Some(span) => format!("{FLAKY} down {:.2} s", span.secs()),
                None => format!("{FLAKY} never down and back during the calls"),
            });
        }
        out.push(Check {
            name: "the faults happened",
            ok: faults_ok,
            detail: exercised.join(", "),
        });
        out.push(Check {
            name: "memory stays flat",
            ok: self
                .rss_ratio()
                .is_some_and(|r| r <= 1.0 + s.max_rss_growth),
            detail: match (&self.watch.baseline, self.rss_ratio()) {
                (Some(b), Some(r)) => format!(
                    "RSS {:.1} MiB after warm-up ({} calls), {:.1} MiB at the end: x{r:.3} (max x{:.2})",
                    b.rss_kib as f64 / 1024.0,
                    b.answered,
                    self.end.rss_kib as f64 / 1024.0,
                    1.0 + s.max_rss_growth
                ),
                _ => "no baseline: the three servers were never all up after warm-up".to_owned(),
            },
        });
        out.push(Check {
            name: "no file descriptor leak",
            ok: self.fd_growth().is_some_and(|g| g <= s.max_fd_growth),
            detail: match (&self.watch.baseline, self.fd_growth()) {
                (Some(b), Some(g)) => format!(
                    "{} open after warm-up, {} at the end ({g:+}, max {:+})",
                    b.fd_total(),
                    self.end.fd_total(),
                    s.max_fd_growth
                ),
                _ => "no baseline".to_owned(),
            },
        });
        out.push(Check {
            name: "exactly the three servers at the end",
            ok: self.settled
                && self.end.has_exactly(&s.children)
                && self.flaky_http_running != Some(false),
            detail: format!(
                "children {}, zombies {}{}{}",
                fmt_counts(&self.end.live),
                self.end.zombies,
                match self.flaky_http_running {
                    None => "",
                    Some(true) => "; cosmos over HTTP (run by the soak) running",
                    Some(false) => "; cosmos over HTTP (run by the soak) NOT running",
                },
                if self.settled {
                    ""
                } else {
                    " (REST not back before the settle timeout)"
                }
            ),
        });
        out.push(Check {
            name: "killed servers reaped, no orphans",
            ok: self.unreaped.is_empty() && self.orphans.is_empty(),
            detail: format!(
                "{} killed, {} still present; {} processes of the run outside the orchestrator{}",
                self.watch.killed.len(),
                self.unreaped.len(),
                self.orphans.len(),
                fmt_procs(&self.orphans)
            ),
        });
        out.push(Check {
            name: "clean shutdown",
            ok: self.shutdown.clean && self.shutdown.left.is_empty(),
            detail: format!(
                "{} {:.2} s after its stdin closed; {} processes of the run left{}",
                self.shutdown.status,
                self.shutdown.secs,
                self.shutdown.left.len(),
                fmt_procs(&self.shutdown.left)
            ),
        });
        let goodput = self.goodput();
        let of = |role: Role| goodput.iter().find(|g| g.role == role);
        if let (Some(min), Some(g)) = (s.min_goodput_flaky, of(Role::Flaky)) {
            out.push(Check {
                name: "goodput of the flaky server (--min-goodput-flaky)",
                ok: g.all.calls > 0 && g.all.share() * 100.0 >= min,
                detail: format!(
                    "{}: {}/{} ok ({:.2}%), at least {min}% asked; could have {:.2}%",
                    g.server,
                    g.all.ok,
                    g.all.calls,
                    g.all.share() * 100.0,
                    g.could_have() * 100.0
                ),
            });
        }
        if let (Some(max), Some(g)) = (s.max_goodput_gap_killed, of(Role::Killed)) {
            out.push(Check {
                name: "goodput of the killed server (--max-goodput-gap-killed)",
                ok: g.all.calls > 0 && g.gap_points() <= max,
                detail: format!(
                    "{}: {}/{} ok ({:.2}%), could have {:.2}% (up {:.2}% of the run): {:.2} points under, at most {max} asked",
                    g.server,
                    g.all.ok,
                    g.all.calls,
                    g.all.share() * 100.0,
                    g.could_have() * 100.0,
                    g.uptime() * 100.0,
                    g.gap_points()
                ),
            });
        }
        out
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let s = &self.settings;
        let checks = self.checks();
        let ms = |h: &Histogram<u64>, q: f64| round(h.value_at_quantile(q) as f64 / 1000.0, 2);
        let tools: Vec<Value> = self
            .tally
            .kinds
            .iter()
            .map(|(kind, t)| {
                let (role, deps) = self
                    .roles
                    .get(kind)
                    .cloned()
                    .unwrap_or((Role::Healthy, BTreeSet::new()));
                json!({
                    "tool": kind.tool(),
                    "role": role.label(),
                    "dependsOn": deps,
                    "sent": t.sent,
                    "answered": t.answered,
                    "ok": t.ok,
                    "failures": t.failures,
                    "examples": t.examples,
                    "steps": t.steps,
                    "p50Ms": ms(&t.latency, 0.5),
                    "p99Ms": ms(&t.latency, 0.99),
                })
            })
            .collect();
        let roles: serde_json::Map<String, Value> = [Role::Healthy, Role::Flaky, Role::Killed]
            .into_iter()
            .map(|role| {
                let (answered, ok) = by_role(self, role);
                (
                    role.label().to_owned(),
                    json!({ "answered": answered, "ok": ok, "successRate": round(pct(ok, answered) / 100.0, 5) }),
                )
            })
            .collect();
        let secs = self.elapsed.as_secs_f64();
        json!({
            "ok": checks.iter().all(|c| c.ok),
            "settings": {
                "calls": s.calls,
                "concurrency": s.concurrency,
                "killEverySecs": s.kill_every.map(|d| d.as_secs_f64()),
                "flakyServer": FLAKY,
                "failureRate": s.failure_rate,
                "seed": s.seed,
                "retryMaxAttempts": s.max_attempts,
                "warmupCalls": s.warmup_calls,
                "maxRssGrowth": s.max_rss_growth,
                "maxFdGrowth": s.max_fd_growth,
                "binDir": s.bin_dir.display().to_string(),
                "flakyRetryMaxAttempts": s.flaky_attempts.0,
                "flakyRetryMaxAttemptsFrom": s.flaky_attempts.1,
                "minGoodputFlaky": s.min_goodput_flaky,
                "maxGoodputGapKilled": s.max_goodput_gap_killed,
                "flakyDownAfterSecs": s.outage.map(|o| o.after.as_secs_f64()),
                "flakyDownSecs": s.outage.map(|o| o.down_for.as_secs_f64()),
            },
            "calls": {
                "sent": self.sent,
                "answered": self.matching.answered,
                "lost": self.lost_total(),
                "lostByTool": self.lost,
                "unmatched": self.matching.unmatched,
                "duplicates": self.matching.duplicates,
                "mismatched": self.mismatched(),
                "garbageLines": self.matching.garbage,
                "examples": self.matching.examples,
                "stoppedEarly": self.stopped_early,
            },
            "roles": roles,
            "tools": tools,
            "throughput": {
                "elapsedSecs": round(secs, 2),
                "callsPerSec": round(self.matching.answered as f64 / secs.max(1e-9), 1),
                "p50Ms": ms(&self.tally.all, 0.5),
                "p90Ms": ms(&self.tally.all, 0.9),
                "p99Ms": ms(&self.tally.all, 0.99),
                "maxMs": round(self.tally.all.max() as f64 / 1000.0, 2),
            },
            "killer": {
                "kills": self.watch.kills,
                "restSeen": self.watch.rest_seen.len(),
                "restDownSecs": round(self.watch.rest_down.as_secs_f64(), 2),
                "killAtSecs": self.watch.kill_times.iter().map(|t| round(*t, 3)).collect::<Vec<_>>(),
            },
            "goodput": self.goodput().iter().map(|g| (g.role.label().to_owned(), g.to_json())).collect::<serde_json::Map<_, _>>(),
            "breakers": self.breakers.to_json(&self.trace),
            "outage": self.outage_figures().map(|f| f.to_json()),
            "process": {
                "baseline": self.watch.baseline.as_ref().map(Snapshot::to_json),
                "end": self.end.to_json(),
                "rssRatio": self.rss_ratio().map(|r| round(r, 4)),
                "rssPeakKib": self.watch.rss_peak_kib,
                "rssByTenth": self.watch.rss_by_tenth,
                "fdGrowth": self.fd_growth(),
                "maxLiveChildren": self.watch.max_live,
                "lingeringZombieTicks": self.watch.lingering_zombies,
                "settled": self.settled,
                "unreapedKilled": self.unreaped,
                "orphans": self.orphans.iter().map(|p| json!({"pid": p.pid, "ppid": p.ppid, "name": p.name, "state": p.state.to_string()})).collect::<Vec<_>>(),
                "shutdown": {
                    "status": self.shutdown.status,
                    "clean": self.shutdown.clean,
                    "secs": round(self.shutdown.secs, 2),
                    "left": self.shutdown.left.iter().map(|p| json!({"pid": p.pid, "ppid": p.ppid, "name": p.name})).collect::<Vec<_>>(),
                },
            },
            "notifications": self.matching.notifications,
            "serverRequests": self.matching.server_requests,
            "log": self.log.as_ref().map(|p| p.display().to_string()),
            "invariants": checks.iter().map(|c| json!({ "name": c.name, "ok": c.ok, "detail": c.detail })).collect::<Vec<_>>(),
        })
    }

    /// The outage's figures, when the run had one.
    fn outage_figures(&self) -> Option<outage::Figures<'_>> {
        let plan = self.settings.outage?;
        let record = self.outage.as_ref()?;
        let trace = self.trace.servers.get(FLAKY);
        let around = record.span().map(|span| {
            (
                self.outage_calls(),
                trace
                    .map(|t| status::AroundOutage::of(&t.breaker, span))
                    .unwrap_or_default(),
            )
        });
        Some(outage::Figures {
            plan,
            record,
            calls: around.as_ref().and_then(|(c, _)| c.clone()),
            breaker: around.map(|(_, b)| b).unwrap_or_default(),
            transitions: trace.map_or(&[][..], |t| t.transitions.as_slice()),
        })
    }

    fn goodput_text(&self, o: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "goodput of pass-through calls, per role (could have: what the faults leave possible):"
        );
        let _ = writeln!(o, "{}", goodput::TEXT_HEADER);
        for g in self.goodput() {
            o.push_str(&g.to_text());
        }
    }

    /// The report as text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let s = &self.settings;
        let mut o = String::new();
        let kill = s.kill_every.map_or("never".to_owned(), |d| {
            format!("{:.1} s after each start", d.as_secs_f64())
        });
        let _ = writeln!(
            o,
            "soak: {} calls, {} in flight, through mcp-orchestrator serve (stdio) from {}",
            s.calls,
            s.concurrency,
            s.bin_dir.display()
        );
        let _ = writeln!(
            o,
            "faults: {FLAKY} --failure-rate {} --seed {} (flaky); rest killed with SIGKILL {kill}; retry maxAttempts {} for {} ({}: a flaky call fails when every attempt does, ≈{:.1}% expected)",
            s.failure_rate,
            s.seed,
            s.flaky_attempts.0,
            Kind::CosmosBehavior.tool(),
            s.flaky_attempts.1,
            (1.0 - goodput::could_have(1.0, s.failure_rate, s.flaky_attempts.0)) * 100.0
        );
        if let Some(plan) = s.outage {
            let _ = writeln!(
                o,
                "outage: {FLAKY} served over HTTP by the soak, killed with SIGKILL {:.1} s into the calls and kept down {:.1} s",
                plan.after.as_secs_f64(),
                plan.down_for.as_secs_f64()
            );
        }
        for (kind, (role, deps)) in &self.roles {
            if kind.server().is_none() {
                let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                let _ = writeln!(
                    o,
                    "composite {}: critical steps (and what they read) on {{{}}} -> {}",
                    kind.tool(),
                    deps.join(", "),
                    role.label()
                );
            }
        }
        let m = &self.matching;
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "calls: sent {}, answered {}, lost {}, unmatched {}, duplicates {}, mismatched {}, non-JSON lines {}",
            self.sent,
            m.answered,
            self.lost_total(),
            m.unmatched,
            m.duplicates,
            self.mismatched(),
            m.garbage
        );
        let secs = self.elapsed.as_secs_f64();
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let _ = writeln!(
            o,
            "time: {secs:.1} s, {:.0} calls/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.0} ms",
            m.answered as f64 / secs.max(1e-9),
            ms(&self.tally.all, 0.5),
            ms(&self.tally.all, 0.9),
            ms(&self.tally.all, 0.99),
            self.tally.all.max() as f64 / 1000.0
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<27} {:<8} {:>7} {:>7} {:>8} {:>8}  failures",
            "tool", "role", "calls", "ok", "p50 ms", "p99 ms"
        );
        for (kind, t) in &self.tally.kinds {
            let role = self.roles.get(kind).map_or(Role::Healthy, |(r, _)| *r);
            let _ = writeln!(
                o,
                "{:<27} {:<8} {:>7} {:>7} {:>8.2} {:>8.2}  {}",
                kind.tool(),
                role.label(),
                t.answered,
                t.ok,
                ms(&t.latency, 0.5),
                ms(&t.latency, 0.99),
                if t.failures.is_empty() {
                    "-".to_owned()
                } else {
                    fmt_counts(&t.failures)
                }
            );
            for (step, outcomes) in &t.steps {
                let _ = writeln!(o, "{:<29}step {step}: {}", "", fmt_counts(outcomes));
            }
        }
        let roles: Vec<String> = [Role::Healthy, Role::Flaky, Role::Killed]
            .into_iter()
            .map(|role| {
                let (a, ok) = by_role(self, role);
                format!("{} {ok}/{a} ({:.3}%)", role.label(), pct(ok, a))
            })
            .collect();
        let _ = writeln!(o, "success by role: {}", roles.join(", "));
        let examples: BTreeMap<&String, &String> = self
            .tally
            .kinds
            .values()
            .flat_map(|t| t.examples.iter())
            .collect();
        for (label, text) in examples {
            let _ = writeln!(o, "  e.g. {label}: {text}");
        }
        let w = &self.watch;
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "killer: rest killed {} times, {} rest processes seen, rest down {:.1} s of {secs:.1} s",
            w.kills,
            w.rest_seen.len(),
            w.rest_down.as_secs_f64()
        );
        self.goodput_text(&mut o);
        self.breakers.to_text(&self.trace, &mut o);
        if let Some(f) = self.outage_figures() {
            f.to_text(&mut o);
        }
        let _ = writeln!(o);
        let tenths: Vec<String> = w
            .rss_by_tenth
            .iter()
            .map(|(_, kib)| format!("{:.1}", *kib as f64 / 1024.0))
            .collect();
        let _ = writeln!(
            o,
            "RSS MiB after each tenth of the calls: {} (peak {:.1})",
            tenths.join(" "),
            w.rss_peak_kib as f64 / 1024.0
        );
        if let Some(b) = &w.baseline {
            let _ = writeln!(o, "descriptors after warm-up: {}", fmt_counts(&b.fds));
        }
        let _ = writeln!(
            o,
            "descriptors at the end:    {}",
            fmt_counts(&self.end.fds)
        );
        if !m.notifications.is_empty() || !m.server_requests.is_empty() {
            let _ = writeln!(
                o,
                "from the orchestrator: notifications {}; requests {}",
                fmt_counts(&m.notifications),
                fmt_counts(&m.server_requests)
            );
        }
        if !m.examples.is_empty() {
            let _ = writeln!(o, "protocol anomalies: {}", m.examples.join("; "));
        }
        let _ = writeln!(o);
        let checks = self.checks();
        for c in &checks {
            let _ = writeln!(
                o,
                "{} {}: {}",
                if c.ok { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let _ = writeln!(
            o,
            "result: {}",
            if checks.iter().all(|c| c.ok) {
                "PASS"
            } else {
                "FAIL"
            }
        );
        if let Some(log) = &self.log {
            let _ = writeln!(o, "orchestrator log kept: {}", log.display());
        }
        o
    }
}

fn fmt_counts<V: std::fmt::Display>(m: &BTreeMap<String, V>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_procs(p: &[Proc]) -> String {
    if p.is_empty() {
        return String::new();
    }
    let list: Vec<String> = p
        .iter()
        .map(|p| {
            format!(
                "{} pid {} (parent {}, state {})",
                p.name, p.pid, p.ppid, p.state
            )
        })
        .collect();
    format!(": {}", list.join(", "))
}
