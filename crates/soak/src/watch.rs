//! The watcher: every 100 ms it reads the orchestrator's processes from `/proc`, kills the REST
//! server once it has lived `--kill-every-secs`, and samples memory, descriptors and children
//! (the warm-up baseline, the peak, one sample per tenth of the run).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    procs::{self, Proc},
    rpc::Conn,
    setup::{KILLED, SERVERS},
};

/// How often the watcher looks.
pub const TICK: Duration = Duration::from_millis(100);

/// The orchestrator's state at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Seconds since the calls began.
    pub at_secs: f64,
    /// Calls answered by then.
    pub answered: u64,
    /// Resident memory (KiB).
    pub rss_kib: u64,
    /// Open descriptors, by kind.
    pub fds: BTreeMap<String, u32>,
    /// Live children by executable name.
    pub live: BTreeMap<String, u32>,
    /// Children that exited and were not reaped.
    pub zombies: u32,
}

impl Snapshot {
    /// Reads it now.
    pub fn take(orch: u32, marker: &str, answered: u64, since: Instant) -> Self {
        let mut live = BTreeMap::new();
        let mut zombies = 0;
        for p in procs::scan(orch, marker).iter().filter(|p| p.ppid == orch) {
            if p.is_zombie() {
                zombies += 1;
            } else {
                *live.entry(p.name.clone()).or_insert(0) += 1;
            }
        }
        Self {
            at_secs: since.elapsed().as_secs_f64(),
            answered,
            rss_kib: procs::rss_kib(orch).unwrap_or(0),
            fds: procs::fds(orch).unwrap_or_default(),
            live,
            zombies,
        }
    }

    /// Open descriptors in all.
    pub fn fd_total(&self) -> u32 {
        self.fds.values().sum()
    }

    /// Whether exactly the servers in `want` (by executable, see
    /// [`crate::setup::expected_children`]) run as children, none exited unreaped.
    pub fn has_exactly(&self, want: &BTreeMap<String, u32>) -> bool {
        self.live == *want && self.zombies == 0
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "atSecs": round(self.at_secs, 2),
            "answered": self.answered,
            "rssKib": self.rss_kib,
            "fds": self.fd_total(),
            "fdKinds": self.fds,
            "children": self.live,
            "zombies": self.zombies,
        })
    }
}

/// Rounds to `digits` decimals, for the report.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// What the watcher saw.
#[derive(Debug, Default)]
pub struct Watch {
    /// Whether to kill the REST server (off once the calls are done).
    pub killing: bool,
    /// SIGKILLs sent.
    pub kills: u64,
    /// The killed processes, as (pid, start time).
    pub killed: Vec<(u32, u64)>,
    /// When each kill was sent, in seconds since the calls began.
    pub kill_times: Vec<f64>,
    /// Every REST server process seen, as (pid, start time).
    pub rest_seen: BTreeSet<(u32, u64)>,
    /// Time with no live REST server, while killing.
    pub rest_down: Duration,
    /// The first snapshot after warm-up with the three servers running.
    pub baseline: Option<Snapshot>,
    /// The highest resident memory seen (KiB).
    pub rss_peak_kib: u64,
    /// Resident memory after each tenth of the calls: (calls answered, KiB).
    pub rss_by_tenth: Vec<(u64, u64)>,
    /// The most live children of one executable at once.
    pub max_live: BTreeMap<String, u32>,
    /// Zombie children seen in two ticks in a row (not reaped within 100 ms).
    pub lingering_zombies: u64,
}

/// Settings of the watcher.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The orchestrator's pid.
    pub orch: u32,
    /// Kill the REST server after it lived this long; `None`: never.
    pub kill_every: Option<Duration>,
    /// Calls answered before the baseline may be taken.
    pub warmup_calls: u64,
    /// Calls in the run.
    pub calls: u64,
    /// When the calls began.
    pub since: Instant,
    /// The children the orchestrator has when all is well, by executable.
    pub children: BTreeMap<String, u32>,
    /// The planned outage, from its start to a margin after its end (since the first call).
    /// The baseline is taken before it, early if the warm-up is not over by then: the
    /// orchestrator's pool of HTTP connections to the server empties while it is down and
    /// fills again only once its breaker lets calls through, so a baseline during or soon
    /// after the outage would compare an empty pool with a full one.
    pub outage: Option<(Duration, Duration)>,
}

/// Runs until the process is gone or the task is dropped.
pub async fn run(plan: Plan, marker: String, conn: Arc<Conn>, watch: Arc<Mutex<Watch>>) {
    let mut first_seen: HashMap<(u32, u64), Instant> = HashMap::new();
    let mut zombies_before: BTreeSet<u32> = BTreeSet::new();
    let mut last_progress = Instant::now();
    let mut last_tick = Instant::now();
    let rest_bin = SERVERS
        .iter()
        .find(|(n, _)| *n == KILLED)
        .map_or("rest-mcp-server", |(_, b)| *b);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let dt = last_tick.elapsed();
        last_tick = Instant::now();
        let Some(_) = procs::rss_kib(plan.orch) else {
            return;
        };
        let children: Vec<Proc> = procs::scan(plan.orch, &marker)
            .into_iter()
            .filter(|p| p.ppid == plan.orch)
            .collect();
        let answered = conn.answered();
        let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());

        let zombies: BTreeSet<u32> = children
            .iter()
            .filter(|p| p.is_zombie())
            .map(|p| p.pid)
            .collect();
        w.lingering_zombies += zombies.intersection(&zombies_before).count() as u64;
        zombies_before = zombies;

        let mut live: BTreeMap<String, u32> = BTreeMap::new();
        for p in children.iter().filter(|p| !p.is_zombie()) {
            *live.entry(p.name.clone()).or_insert(0) += 1;
        }
        for (name, n) in &live {
            let max = w.max_live.entry(name.clone()).or_insert(0);
            *max = (*max).max(*n);
        }

        // The killer.
        let rest: Vec<&Proc> = children
            .iter()
            .filter(|p| !p.is_zombie() && p.name == rest_bin)
            .collect();
        for p in &rest {
            w.rest_seen.insert((p.pid, p.start));
        }
        if w.killing {
            if rest.is_empty() {
                w.rest_down += dt;
            }
            if let Some(every) = plan.kill_every {
                let now = Instant::now();
                for p in &rest {
                    let born = *first_seen.entry((p.pid, p.start)).or_insert(now);
                    // Taken before the kill: the server is unusable from that moment.
                    let at = plan.since.elapsed().as_secs_f64();
                    if now.duration_since(born) >= every
                        && procs::exists(p.pid, p.start)
                        && procs::kill9(p.pid).unwrap_or(false)
                    {
                        w.kills += 1;
                        w.killed.push((p.pid, p.start));
                        w.kill_times.push(at);
                    }
                }
            }
        }

        // Memory and descriptors.
        let rss = procs::rss_kib(plan.orch).unwrap_or(0);
        w.rss_peak_kib = w.rss_peak_kib.max(rss);
        let tenth = (plan.calls / 10).max(1);
        while (w.rss_by_tenth.len() as u64) < 10
            && answered >= tenth * (w.rss_by_tenth.len() as u64 + 1)
        {
            w.rss_by_tenth.push((answered, rss));
        }
        let elapsed = plan.since.elapsed();
        let (in_outage, outage_next) = plan.outage.map_or((false, false), |(from, to)| {
            (
                elapsed >= from && elapsed < to,
                elapsed < from && elapsed + 2 * TICK >= from,
            )
        });
        let warm = answered >= plan.warmup_calls || outage_next;
        if w.baseline.is_none() && warm && !in_outage {
            let s = Snapshot::take(plan.orch, &marker, answered, plan.since);
            if s.has_exactly(&plan.children) {
                w.baseline = Some(s);
            }
        }

        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let secs = plan.since.elapsed().as_secs_f64();
            eprintln!(
                "[{secs:6.1} s] {answered}/{} answered ({:.0} calls/s), RSS {:.1} MiB, rest kills {}",
                plan.calls,
                answered as f64 / secs.max(1e-9),
                rss as f64 / 1024.0,
                w.kills
            );
        }
    }
}
