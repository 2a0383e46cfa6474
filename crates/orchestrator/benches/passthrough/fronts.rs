//! Sections 1 and 2: one cheap pass-through call on every path side by side (direct, byte relay,
//! the stdio front, the HTTP front with sessions and without), then the aims on those figures.

use anyhow::bail;
use serde_json::json;

use crate::{
    Settings,
    endpoint::{Endpoint, PerCall, Sample},
    relay,
    report::{self, Aim, median, opt, thousands},
    setup::{self, Binaries, ORCH_BIN, SQL_BIN},
};

/// The calls kept in flight in the throughput phases.
pub const IN_FLIGHT: [usize; 2] = [16, 32];

const AIM_HTTP_CPU_US: f64 = 200.0;
const AIM_HTTP_SWITCHES: f64 = 4.0;
const AIM_HTTP_ADDED_P50_US: f64 = 300.0;
const AIM_STDIO_CPU_US: f64 = 100.0;
const AIM_STDIO_ADDED_P50_US: f64 = 120.0;
const AIM_RATIO: f64 = 0.5;

/// Every path to `sql-mcp-server`'s tools, each with its own processes.
pub struct Paths {
    pub direct: Endpoint,
    pub relay: Endpoint,
    pub stdio: Endpoint,
    pub http: Endpoint,
    pub stateless: Endpoint,
}

impl Paths {
    /// Starts every path; `config` names the SQL server alone.
    pub async fn start(bins: &Binaries, config: &std::path::Path) -> anyhow::Result<Self> {
        let sql = bins.path(SQL_BIN);
        let orch = bins.path(ORCH_BIN);
        let direct = Endpoint::stdio("direct", "sql", "", &sql, &setup::sql_args()).await?;
        let relay = relay::connect(&sql, SQL_BIN, &setup::sql_args()).await?;
        let stdio = Endpoint::stdio(
            "stdio front",
            "orchestrator",
            "sql__",
            &orch,
            &setup::serve_args(config, &[]),
        )
        .await?
        .adopt("sql", SQL_BIN)
        .await?;
        let http_args = |extra: &[&str]| {
            let mut args = vec!["--http", "127.0.0.1:0"];
            args.extend(extra);
            setup::serve_args(config, &args)
        };
        let http = Endpoint::http("HTTP front", &orch, &http_args(&[]))
            .await?
            .adopt("sql", SQL_BIN)
            .await?;
        let stateless = Endpoint::http("HTTP stateless", &orch, &http_args(&["--stateless"]))
            .await?
            .adopt("sql", SQL_BIN)
            .await?;
        let paths = Self {
            direct,
            relay,
            stdio,
            http,
            stateless,
        };
        for p in paths.fronts() {
            p.wait_for_tools(&["sql__get_customer"]).await?;
        }
        Ok(paths)
    }

    pub fn all(&self) -> [&Endpoint; 5] {
        [
            &self.direct,
            &self.relay,
            &self.stdio,
            &self.http,
            &self.stateless,
        ]
    }

    /// The orchestrator's fronts.
    pub fn fronts(&self) -> [&Endpoint; 3] {
        [&self.stdio, &self.http, &self.stateless]
    }

    pub async fn close(self) {
        for p in [
            self.direct,
            self.relay,
            self.stdio,
            self.http,
            self.stateless,
        ] {
            p.close().await;
        }
    }
}

/// One path's figures.
struct Figures {
    seq: Sample,
    /// Calls per second, one per round, at each of [`IN_FLIGHT`].
    rates: [Vec<f64>; IN_FLIGHT.len()],
}

/// Measures `get_customer` on every path in rotating rounds (so none always runs on a warmer
/// machine), prints the tables (section 1) and the aims (section 2).
pub async fn compare(paths: &Paths, s: &Settings) -> anyhow::Result<()> {
    let targets = paths.all();
    let args = json!({ "customerId": "CUST-0001" });
    let params: Vec<_> = targets
        .iter()
        .map(|t| t.params("get_customer", args.clone()))
        .collect();

    // Every path gives the same answer, so the figures are of the same work.
    let mut expected = None;
    for (t, p) in targets.iter().zip(&params) {
        let got = t.call_ok(p).await?.structured_content;
        if got
            .as_ref()
            .and_then(|v| v.get("customerId"))
            .and_then(|c| c.as_str())
            != Some("CUST-0001")
        {
            bail!("{}: unexpected answer {got:?}", t.label);
        }
        match &expected {
            None => expected = Some(got),
            Some(e) if *e != got => bail!("direct and {} answers differ", t.label),
            Some(_) => {}
        }
    }

    for (t, p) in targets.iter().zip(&params) {
        t.warm_up(p, s.warmup, IN_FLIGHT[1]).await?;
    }
    let mut figures = Vec::new();
    for _ in targets {
        figures.push(Figures {
            seq: Sample::new()?,
            rates: Default::default(),
        });
    }
    for round in 0..s.rounds {
        let order: Vec<usize> = (0..targets.len())
            .map(|i| (i + round) % targets.len())
            .collect();
        for &i in &order {
            targets[i]
                .sequential(&params[i], s.seq, &mut figures[i].seq)
                .await?;
        }
        for (k, &in_flight) in IN_FLIGHT.iter().enumerate() {
            for &i in &order {
                let rate = targets[i].throughput(&params[i], s.tput, in_flight).await?;
                figures[i].rates[k].push(rate);
            }
        }
    }

    report::section(1, "Both fronts side by side: a cheap pass-through call");
    println!(
        "get_customer {{\"customerId\":\"CUST-0001\"}} on sql-mcp-server directly, through a byte \
         relay process, and as sql__get_customer through mcp-orchestrator's stdio front, HTTP \
         front (sessions) and HTTP front --stateless (each POST alone, JSON answers); the \
         clients speak 2025-11-25; {} rounds of {} sequential calls and {} \
         calls at each concurrency per path",
        s.rounds, s.seq, s.tput
    );
    let direct_p50 = figures[0].seq.p(0.5);
    let mut latency = report::table([
        "path",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "max µs",
        "added p50 µs",
        "calls/s @16",
        "calls/s @32",
    ]);
    let mut cpu = report::table([
        "path",
        "proxy CPU µs/call",
        "proxy switches/call",
        "sql CPU µs/call",
        "sql switches/call",
        "client CPU µs/call",
    ]);
    for (t, f) in targets.iter().zip(&figures) {
        let added = (t.label != "direct").then(|| f.seq.p(0.5) - direct_p50);
        latency.add_row([
            t.label.to_owned(),
            format!("{:.0}", f.seq.p(0.5)),
            format!("{:.0}", f.seq.p(0.9)),
            format!("{:.0}", f.seq.p(0.99)),
            f.seq.hist.max().to_string(),
            opt(added, 0),
            rates(&f.rates[0]),
            rates(&f.rates[1]),
        ]);
        let proxy = f
            .seq
            .per_call(t, "orchestrator")
            .or_else(|| f.seq.per_call(t, "relay"));
        let sql = f.seq.per_call(t, "sql");
        let client = f.seq.per_call(t, "client");
        cpu.add_row([
            t.label.to_owned(),
            opt(proxy.map(|u| u.cpu_us), 0),
            opt(proxy.map(|u| u.switches), 1),
            opt(sql.map(|u| u.cpu_us), 0),
            opt(sql.map(|u| u.switches), 1),
            opt(client.map(|u| u.cpu_us), 0),
        ]);
    }
    println!("{latency}");
    println!("calls/s: the median of the rounds [lowest-highest].");
    println!("{cpu}");
    println!(
        "CPU time and context switches per sequential call, from /proc over all the rounds' \
         calls; proxy: the orchestrator, or the relay; client: this bench's own process."
    );
    for (t, f) in targets.iter().zip(&figures).skip(1) {
        println!(
            "  added p50 over direct, {}: {:.0} µs",
            t.label,
            f.seq.p(0.5) - direct_p50
        );
    }
    let floor = figures[1].seq.p(0.5) - direct_p50;
    let stdio_added = figures[2].seq.p(0.5) - direct_p50;
    println!(
        "  of the stdio front's, the two extra pipe hops alone (byte relay, no parsing): \
         {floor:.0} µs; the orchestrator's own work: {:.0} µs",
        stdio_added - floor
    );

    report::section(2, "Aims");
    let [_, _, stdio, http, _] = targets;
    let (fs, fh) = (&figures[2], &figures[3]);
    let orch = |t: &Endpoint, f: &Figures| f.seq.per_call(t, "orchestrator");
    println!("HTTP front (sessions):");
    report::aim(
        "orchestrator CPU per sequential call",
        orch(http, fh).map(|u: PerCall| u.cpu_us),
        0,
        " µs",
        Aim::AtMost(AIM_HTTP_CPU_US),
    );
    report::aim(
        "orchestrator context switches per call",
        orch(http, fh).map(|u| u.switches),
        1,
        "",
        Aim::AtMost(AIM_HTTP_SWITCHES),
    );
    report::aim(
        "added p50 over direct",
        Some(fh.seq.p(0.5) - direct_p50),
        0,
        " µs",
        Aim::AtMost(AIM_HTTP_ADDED_P50_US),
    );
    println!(
        "  calls/s at 16 in flight: {} (aim: 1.5x the figure before the optimisation work; \
         compare with that run's)",
        thousands(median(&fh.rates[0]))
    );
    println!("stdio front:");
    report::aim(
        "orchestrator CPU per sequential call",
        orch(stdio, fs).map(|u| u.cpu_us),
        0,
        " µs",
        Aim::AtMost(AIM_STDIO_CPU_US),
    );
    report::aim(
        "added p50 over direct",
        Some(stdio_added),
        0,
        " µs",
        Aim::AtMost(AIM_STDIO_ADDED_P50_US),
    );
    report::aim(
        "throughput ratio stdio front/direct at 32 in flight",
        Some(median(&fs.rates[1]) / median(&figures[0].rates[1])),
        2,
        "",
        Aim::AtLeast(AIM_RATIO),
    );
    Ok(())
}

/// `median [lowest-highest]`, or the one figure of a single round.
fn rates(r: &[f64]) -> String {
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    if r.len() < 2 {
        thousands(median(r))
    } else {
        format!(
            "{} [{}-{}]",
            thousands(median(r)),
            thousands(lo),
            thousands(hi)
        )
    }
}
