//! Pass-through overhead of the orchestrator: the same cheap read tool called directly on
//! `sql-mcp-server` and through `mcp-orchestrator` (stdio front, stdio upstream).
//!
//! Run with `cargo bench -p mcp-orchestrator --bench passthrough`. Both release binaries are
//! used from `target/release/`; the bench runs `cargo build --release --bins -p sql-mcp-server
//! -p mcp-orchestrator-cli` first (a no-op when they are current; `PASSTHROUGH_NO_BUILD=1`
//! skips it).
//!
//! A third path puts this bench binary, re-run as a byte relay that copies lines without parsing
//! them, between the client and the server. It is the floor for any proxy process: the two extra
//! pipe hops alone. The added latency is printed split into that floor and the orchestrator's own
//! work above it.
//!
//! Phases, each run for every path in rotating rounds so all see the same machine conditions: warm-up, sequential calls (one in flight: p50/p99 latency), and a
//! throughput phase with a fixed number of calls kept 32 in flight (calls/s, the median round).
//!
//! It also prints the CPU time and context switches of each process per sequential call (Linux
//! `/proc`), which say where the added latency goes and are less sensitive than latency to a busy
//! machine.
//!
//! Knobs (environment): `PASSTHROUGH_WARMUP` (default 500), `PASSTHROUGH_SEQ` calls per
//! sequential round (2000), `PASSTHROUGH_TPUT` calls per throughput round (16000),
//! `PASSTHROUGH_ROUNDS` (3). Without `--bench` (`cargo test --benches`) it runs one tiny smoke
//! round instead.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use hdrhistogram::Histogram;
use rmcp::model::CallToolRequestParams;
use serde_json::json;
use testkit::Client;

const SQL_BIN: &str = "sql-mcp-server";
const ORCH_BIN: &str = "mcp-orchestrator";
/// The package that builds [`ORCH_BIN`] (the library's binary crate).
const ORCH_PACKAGE: &str = "mcp-orchestrator-cli";
const IN_FLIGHT: usize = 32;
const AIM_ADDED_P50_US: f64 = 50.0;
const AIM_RATIO: f64 = 0.5;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// Makes sure both binaries are built and current next to the bench ([`kit::binaries`], where
/// `testkit` looks for them: `target/release` under `cargo bench`). `cargo bench` builds neither
/// (they belong to other packages), so this runs `cargo build` for both (a no-op when they are
/// fresh) unless `PASSTHROUGH_NO_BUILD` is set.
fn ensure_binaries() -> anyhow::Result<PathBuf> {
    let dir = kit::binaries::dir()?;
    let present = || {
        [SQL_BIN, ORCH_BIN]
            .iter()
            .all(|b| kit::binaries::path_in(&dir, b).exists())
    };
    if std::env::var_os("PASSTHROUGH_NO_BUILD").is_none() || !present() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--bins", "-p", SQL_BIN, "-p", ORCH_PACKAGE]);
        // The profile the bench itself was built with (`release` under `cargo bench`).
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let built = build.status().context("running cargo build")?.success();
        if !built && present() {
            eprintln!(
                "warning: cargo build failed; measuring the binaries already in {}",
                dir.display()
            );
        } else if !built {
            bail!("cargo build of {SQL_BIN} and {ORCH_BIN} failed");
        }
    }
    for b in [SQL_BIN, ORCH_BIN] {
        let path = kit::binaries::path_in(&dir, b);
        if !path.exists() {
            bail!("{} not found after building", path.display());
        }
    }
    Ok(dir)
}

/// A temporary `mcp.json` naming only the SQL server; removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(sql: &Path) -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("mcp-passthrough-{}.json", std::process::id()));
        // One client keeps `IN_FLIGHT` calls in flight, over the default per-client cap.
        let config = json!({
            "mcpServers": {
                "sql": {
                    "command": sql.display().to_string(),
                    "args": ["--data-dir", ":memory:"],
                    "env": { "RUST_LOG": "warn" }
                }
            },
            "orchestrator": { "limits": { "maxConcurrentCallsPerClient": IN_FLIGHT } }
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(Self(path))
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a process has used so far, all its threads included (Linux `/proc`; `None` elsewhere).
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: Duration,
    /// Context switches: each is a thread going to sleep or being preempted, so per call they
    /// count the wake-ups a message costs, which dominate a cheap call's latency.
    switches: u64,
}

fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    // utime + stime in clock ticks; USER_HZ is 100 on Linux.
    Some(Usage {
        cpu: Duration::from_millis(ticks * 10),
        switches,
    })
}

/// The pid of a child of `parent` whose executable is `name`, found through `/proc`.
fn child_pid(parent: u32, name: &str) -> Option<u32> {
    // The kernel keeps the first 15 bytes of the name.
    let comm = &name[..name.len().min(15)];
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let ppid: u32 = stat.get(close + 2..)?.split(' ').nth(1)?.parse().ok()?;
            (ppid == parent && stat.get(open + 1..close)? == comm).then_some(pid)
        })
}

/// One way of reaching the tool.
struct Target {
    label: &'static str,
    client: Client,
    params: CallToolRequestParams,
    /// The server processes on this path, for CPU per call.
    procs: Vec<(&'static str, u32)>,
}

impl Target {
    fn new(label: &'static str, client: Client, tool: &str) -> Self {
        let args = json!({ "customerId": "CUST-0001" });
        let params = CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        Self {
            label,
            client,
            params,
            procs: Vec::new(),
        }
    }

    async fn call(&self) -> anyhow::Result<rmcp::model::CallToolResult> {
        Ok(self.client.call_tool(self.params.clone()).await?)
    }

    /// One call whose answer is checked, so the figures are of successful calls.
    async fn check(&self) -> anyhow::Result<serde_json::Value> {
        let r = self.call().await?;
        if r.is_error == Some(true) {
            bail!("{}: tool error: {}", self.label, testkit::text_of(&r));
        }
        let v = r
            .structured_content
            .with_context(|| format!("{}: no structured content", self.label))?;
        if v.get("customerId").and_then(|c| c.as_str()) != Some("CUST-0001") {
            bail!("{}: unexpected answer {v}", self.label);
        }
        Ok(v)
    }

    async fn warm_up(&self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.call().await?;
        }
        self.throughput(n * 4).await?;
        Ok(())
    }

    fn usage(&self) -> Option<Vec<Usage>> {
        self.procs.iter().map(|&(_, pid)| usage(pid)).collect()
    }

    async fn sequential(&self, n: usize, f: &mut Figures) -> anyhow::Result<()> {
        let before = self.usage();
        for _ in 0..n {
            let started = Instant::now();
            let r = self.call().await?;
            let micros = started.elapsed().as_micros() as u64;
            if r.is_error == Some(true) {
                bail!("{}: tool error during the run", self.label);
            }
            f.hist.saturating_record(micros.max(1));
        }
        if let (Some(before), Some(after)) = (before, self.usage()) {
            f.usage.resize(before.len(), Usage::default());
            for (total, (b, a)) in f.usage.iter_mut().zip(before.iter().zip(&after)) {
                total.cpu += a.cpu.saturating_sub(b.cpu);
                total.switches += a.switches.saturating_sub(b.switches);
            }
        }
        Ok(())
    }

    /// `n` calls, `IN_FLIGHT` at a time; calls per second.
    async fn throughput(&self, n: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut calls = stream::iter(0..n)
            .map(|_| self.call())
            .buffer_unordered(IN_FLIGHT);
        let mut errors = 0usize;
        while let Some(r) = calls.next().await {
            if r?.is_error == Some(true) {
                errors += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        if errors > 0 {
            bail!(
                "{}: {errors} tool errors in the throughput phase",
                self.label
            );
        }
        Ok(n as f64 / secs)
    }
}

struct Figures {
    hist: Histogram<u64>,
    rates: Vec<f64>,
    /// CPU used by each of the path's server processes during the sequential calls.
    usage: Vec<Usage>,
}

impl Figures {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            rates: Vec::new(),
            usage: Vec::new(),
        })
    }

    fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }

    fn median_rate(&self) -> f64 {
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    }
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// A quick check that the bench still runs, not a measurement.
    smoke: bool,
    warmup: usize,
    seq: usize,
    tput: usize,
    rounds: usize,
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        smoke,
        warmup,
        seq,
        tput,
        rounds,
    } = settings;

    let dir = ensure_binaries()?;
    let sql = kit::binaries::path_in(&dir, SQL_BIN);
    let config = TempConfig::new(&sql)?;
    let began = Instant::now();

    let sql_args = || vec!["--data-dir".to_owned(), ":memory:".to_owned()];
    let direct = testkit::connect_stdio(SQL_BIN, &sql_args())
        .await
        .context("starting sql-mcp-server")?;
    let relay = connect_through_relay(&sql, &sql_args())
        .await
        .context("starting the byte relay in front of sql-mcp-server")?;
    let proxied = testkit::connect_stdio(
        ORCH_BIN,
        &[
            "serve".into(),
            "--config".into(),
            config.0.display().to_string(),
        ],
    )
    .await
    .context("starting mcp-orchestrator")?;

    let mut direct = Target::new("direct", direct, "get_customer");
    let mut relay = Target::new("byte relay", relay, "get_customer");
    let mut proxied = Target::new("proxied", proxied, "sql__get_customer");

    // The orchestrator answers before its upstream is connected; wait for the tool to be listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxied
        .client
        .list_all_tools()
        .await?
        .iter()
        .any(|t| t.name == proxied.params.name)
    {
        if Instant::now() >= deadline {
            bail!("the orchestrator never listed {}", proxied.params.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let me = std::process::id();
    if let Some(pid) = child_pid(me, SQL_BIN) {
        direct.procs.push((SQL_BIN, pid));
    }
    let bench_name = std::env::current_exe()?
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .unwrap_or_default();
    if let Some(pid) = child_pid(me, &bench_name) {
        relay.procs.push(("relay", pid));
        if let Some(sql) = child_pid(pid, SQL_BIN) {
            relay.procs.push((SQL_BIN, sql));
        }
    }
    if let Some(orch) = child_pid(me, ORCH_BIN) {
        proxied.procs.push((ORCH_BIN, orch));
        if let Some(sql) = child_pid(orch, SQL_BIN) {
            proxied.procs.push((SQL_BIN, sql));
        }
    }
    let expected = direct.check().await?;
    for other in [&relay, &proxied] {
        let got = other.check().await?;
        if got != expected {
            bail!(
                "direct and {} answers differ:\n{expected}\n{got}",
                other.label
            );
        }
    }

    let targets = [&direct, &relay, &proxied];
    for t in targets {
        t.warm_up(warmup).await?;
    }

    let mut figures = [Figures::new()?, Figures::new()?, Figures::new()?];
    for round in 0..rounds {
        // Rotate which path goes first, so none always runs on a warmer machine.
        let order: Vec<usize> = (0..targets.len())
            .map(|i| (i + round) % targets.len())
            .collect();
        for &i in &order {
            targets[i].sequential(seq, &mut figures[i]).await?;
        }
        for &i in &order {
            let rate = targets[i].throughput(tput).await?;
            figures[i].rates.push(rate);
        }
    }
    let [fd, fr, fp] = &figures;

    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "path",
        "seq calls",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "max µs",
        &format!("calls/s @{IN_FLIGHT} (median of {rounds})"),
    ]);
    for (t, f) in targets.iter().zip(&figures) {
        table.add_row([
            t.label.to_owned(),
            f.hist.len().to_string(),
            format!("{:.0}", f.p(0.5)),
            format!("{:.0}", f.p(0.9)),
            format!("{:.0}", f.p(0.99)),
            f.hist.max().to_string(),
            format!(
                "{:.0}  [{}]",
                f.median_rate(),
                f.rates
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ]);
    }
    println!();
    println!(
        "pass-through overhead: get_customer direct, through a byte relay process, and as \
         sql__get_customer via mcp-orchestrator (stdio front, stdio upstream, {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{table}");

    // Where the time goes: CPU each server process spent per sequential call.
    let per_call = |t: &Target, f: &Figures| {
        let calls = f.hist.len().max(1) as f64;
        t.procs
            .iter()
            .zip(&f.usage)
            .map(|(&(name, _), u)| {
                format!(
                    "{name} {:.0} µs, {:.1} switches",
                    u.cpu.as_secs_f64() * 1e6 / calls,
                    u.switches as f64 / calls
                )
            })
            .collect::<Vec<_>>()
            .join(" + ")
    };
    if figures.iter().all(|f| !f.usage.is_empty()) {
        println!("CPU time and context switches per sequential call:");
        for (t, f) in targets.iter().zip(&figures) {
            println!("  {:<11} {}", t.label, per_call(t, f));
        }
    }

    let added_p50 = fp.p(0.5) - fd.p(0.5);
    let added_p99 = fp.p(0.99) - fd.p(0.99);
    let floor_p50 = fr.p(0.5) - fd.p(0.5);
    let ratio = fp.median_rate() / fd.median_rate();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "added p50: {added_p50:.0} µs (aim < {AIM_ADDED_P50_US:.0}) {}",
        verdict(added_p50 < AIM_ADDED_P50_US)
    );
    println!(
        "  of which the two extra pipe hops alone (byte relay, no parsing): {floor_p50:.0} µs; \
         the orchestrator's own work: {:.0} µs",
        added_p50 - floor_p50
    );
    println!("added p99: {added_p99:.0} µs");
    println!(
        "throughput ratio proxied/direct: {ratio:.2} (aim >= {AIM_RATIO}) {}",
        verdict(ratio >= AIM_RATIO)
    );
    println!("measured in {:.1} s", began.elapsed().as_secs_f64());
    if smoke {
        println!("(smoke run without --bench: a few calls only; figures are not meaningful)");
    }

    for t in [direct, relay, proxied] {
        let _ = t.client.cancel().await;
    }
    Ok(())
}

/// Connects to `sql args...` through this bench binary re-run as a byte relay ([`relay_main`]).
async fn connect_through_relay(sql: &Path, args: &[String]) -> anyhow::Result<Client> {
    use rmcp::{
        ServiceExt,
        transport::{ConfigureCommandExt, TokioChildProcess},
    };
    use tokio::process::Command;
    let me = std::env::current_exe()?;
    let transport = TokioChildProcess::new(Command::new(me).configure(|c| {
        c.arg(RELAY_FLAG)
            .arg(sql)
            .args(args)
            .env("RUST_LOG", "warn");
    }))?;
    Ok(().serve(transport).await?)
}

/// The flag that makes this binary a relay instead of a bench.
const RELAY_FLAG: &str = "--byte-relay";

/// The least any proxy process can add: it starts `command`, copies each line from its own stdin
/// to the child's and each line back, with blocking reads on two threads and no parsing. Measuring
/// it beside the orchestrator separates the cost of the two extra pipe hops (writes, wake-ups,
/// context switches on a small machine) from the orchestrator's own work.
fn relay_main(command: &[String]) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let (program, args) = command.split_first().context("relay: no command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("relay: starting {program}"))?;
    let mut to_child = child.stdin.take().context("relay: child stdin")?;
    let from_child = child.stdout.take().context("relay: child stdout")?;
    let back = std::thread::spawn(move || -> std::io::Result<()> {
        let mut reader = BufReader::new(from_child);
        let mut out = std::io::stdout().lock();
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line)? > 0 {
            out.write_all(&line)?;
            out.flush()?;
            line.clear();
        }
        Ok(())
    });
    let mut input = std::io::stdin().lock();
    let mut line = Vec::new();
    while input.read_until(b'\n', &mut line)? > 0 {
        to_child.write_all(&line)?;
        to_child.flush()?;
        line.clear();
    }
    drop(to_child);
    let _ = child.wait();
    let _ = back.join();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == RELAY_FLAG) {
        return relay_main(&args[1..]);
    }
    // A filter argument that names something else skips the run.
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"passthrough".contains(filter.as_str())
    {
        return Ok(());
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) one short smoke round
    // only shows that the bench still works.
    let settings = if args.iter().any(|a| a == "--bench") {
        Settings {
            smoke: false,
            warmup: env_usize("PASSTHROUGH_WARMUP", 500),
            seq: env_usize("PASSTHROUGH_SEQ", 2000),
            tput: env_usize("PASSTHROUGH_TPUT", 16000),
            rounds: env_usize("PASSTHROUGH_ROUNDS", 3),
        }
    } else {
        Settings {
            smoke: true,
            warmup: 10,
            seq: 20,
            tput: 64,
            rounds: 1,
        }
    };
    // The client runs on one thread: the machine's cores belong to the processes under test.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(settings))
}
