//! `mcp-soak`: a soak test of `mcp-orchestrator` under faults.
//!
//! It starts `mcp-orchestrator serve` over stdio in front of the three bundled servers (SQL
//! healthy, Cosmos failing `--failure-rate` of its calls, REST killed with SIGKILL every
//! `--kill-every-secs`), speaks raw JSON-RPC to it, and keeps `--concurrency` calls of a mix of
//! pass-through calls and composites in flight until `--calls` are answered. Then it checks that
//! every request got exactly one answer, that calls depending only on healthy servers all
//! succeeded, that memory stayed flat and that no descriptor or process leaked, prints the
//! figures (`--json` for one JSON object) and exits 1 when an invariant failed (2 when the run
//! could not be set up).
//!
//! Binaries come from the folder of this executable (`target/<profile>/`) unless `--bin-dir`;
//! build them with `cargo build --workspace --bins` (add `--release` for a real soak).
//! `scripts/soak.sh` runs the full soak; `tests/soak.rs` a short one in CI. Linux only (`/proc`).
//!
//! # Goodput
//! The report gives, per server role, the share of pass-through calls that succeeded against
//! the share that could have: `uptime × (1 − failure_rate^attempts)`, with `attempts` the
//! flaky tool's `retry.maxAttempts` in the run's `mcp.json` and the killed server's downtime
//! running from each SIGKILL to the next `connectedSince` the orchestrator reports for it in
//! `orchestrator://status` (read every 100 ms). It also gives each breaker's state, opens and
//! transitions at the end, and the readings where they changed. These are figures; two opt-in
//! flags make invariants of them: `--min-goodput-flaky PCT` (the flaky server's calls succeed
//! at least PCT%) and `--max-goodput-gap-killed POINTS` (the killed server's succeed at most
//! POINTS under its could-have share).
//!
//! # Outage
//! `--cosmos-down-secs N` takes Cosmos fully down for N seconds, `--cosmos-down-after-secs M`
//! (default 5) into the calls: the soak then runs Cosmos itself over streamable HTTP on a free
//! loopback port (the orchestrator reaches it by URL), kills it with SIGKILL (its port refuses
//! connections), and starts it again on the same port N seconds later. Its failure rate
//! defaults to 0 then, so the outage is its only fault (give `--failure-rate` to have both).
//! The report says when it went down and came back, how the calls sent before, during and
//! after fared (and how fast those during failed), how many failed after its return before
//! the first success, and how its breaker moved relative to the outage. E.g.
//! `scripts/soak.sh 50000 --cosmos-down-secs 10`. The memory and descriptor baseline is then
//! taken before the outage, early if need be: while Cosmos is down the orchestrator's pool of
//! HTTP connections to it empties, and it fills again only once the breaker lets calls through.
//!
//! # Layout
//! - `setup`: the temporary folder and `mcp.json`; which servers a composite depends on
//! - `mix`: the n-th call of the run and how its answer is classified
//! - `rpc`: the JSON-RPC connection, matching every response to its request id
//! - `procs`: `/proc` readings (RSS, descriptors, children, the run's processes) and the kill
//! - `watch`: the killer and the sampler, every 100 ms
//! - `status`: `orchestrator://status` read every 100 ms: reconnections and breaker moves
//! - `outage`: Cosmos run over HTTP by the soak, taken down and brought back
//! - `goodput`: succeeded against could-have shares; the calls around an outage
//! - `report`: figures, invariants, text and JSON

mod goodput;
mod mix;
mod outage;
mod procs;
mod report;
mod rpc;
mod setup;
mod status;
mod watch;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{ExitCode, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use serde_json::{Value, json};
use tokio::{process::Command, sync::Semaphore};

use crate::{
    mix::{Kind, MIX},
    report::{Report, Settings, Shutdown, Tally},
    rpc::Conn,
    setup::{ORCHESTRATOR, Role},
    watch::{Plan, Snapshot, Watch},
};

/// Soak test of mcp-orchestrator under injected failures and a killed server.
#[derive(Debug, Parser)]
#[command(name = "mcp-soak", version)]
struct Args {
    /// Calls to make.
    #[arg(long, default_value_t = 100_000)]
    calls: u64,
    /// Calls kept in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Kill the REST server (SIGKILL) once it has run this long; 0: never.
    #[arg(long, default_value_t = 3.0)]
    kill_every_secs: f64,
    /// Share of the Cosmos server's calls that fail (injected, retryable `unavailable`);
    /// default 0.2, or 0 with `--cosmos-down-secs`.
    #[arg(long)]
    failure_rate: Option<f64>,
    /// Seed of the injected failures and of the call mix.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Attempts per upstream call (`orchestrator.defaults.retry.maxAttempts`); 2 lets the flaky
    /// server's failures through at about failure-rate squared.
    #[arg(long, default_value_t = 2)]
    max_attempts: u32,
    /// Share of the calls that are warm-up: the memory and descriptor baseline is taken after.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Allowed growth of the orchestrator's RSS from the baseline to the end (0.10 = 10%).
    #[arg(long, default_value_t = 0.10)]
    max_rss_growth: f64,
    /// Allowed growth of the orchestrator's open file descriptors.
    #[arg(long, default_value_t = 4)]
    max_fd_growth: i64,
    /// How long to wait for outstanding answers once every call is sent (and for a free slot
    /// while sending), in seconds.
    #[arg(long, default_value_t = 60)]
    drain_secs: u64,
    /// How long to wait at the end for the REST server to be back, in seconds (its restart
    /// backoff grows to 30 s).
    #[arg(long, default_value_t = 45)]
    settle_secs: u64,
    /// Folder of the binaries (default: the folder of this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Take Cosmos fully down for this long (it is then served over HTTP by the soak, killed
    /// with SIGKILL and started again on the same port); 0: never.
    #[arg(long, default_value_t = 0.0)]
    cosmos_down_secs: f64,
    /// When to take Cosmos down, in seconds after the first call.
    #[arg(long, default_value_t = 5.0)]
    cosmos_down_after_secs: f64,
    /// Invariant, off unless given: Cosmos's pass-through calls succeed at least this often, in
    /// percent (e.g. 95).
    #[arg(long)]
    min_goodput_flaky: Option<f64>,
    /// Invariant, off unless given: REST's pass-through calls succeed at most this many
    /// percentage points under its could-have share (its uptime; e.g. 5).
    #[arg(long)]
    max_goodput_gap_killed: Option<f64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Keep the temporary folder (config, data, orchestrator log) even when the run passes.
    #[arg(long)]
    keep_temp: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread: the machine's cores belong to the processes under test.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-soak: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mcp-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.calls > 0 && args.concurrency > 0,
        "--calls and --concurrency must be > 0"
    );
    anyhow::ensure!(
        args.cosmos_down_secs >= 0.0 && args.cosmos_down_after_secs >= 0.0,
        "--cosmos-down-secs and --cosmos-down-after-secs must be >= 0"
    );
    let bin_dir = setup::bin_dir(args.bin_dir.clone())?;
    let mut tmp = setup::TempDir::new()?;
    let outage_plan = (args.cosmos_down_secs > 0.0).then(|| outage::Plan {
        after: Duration::from_secs_f64(args.cosmos_down_after_secs),
        down_for: Duration::from_secs_f64(args.cosmos_down_secs),
    });
    let failure_rate = args
        .failure_rate
        .unwrap_or(if outage_plan.is_some() { 0.0 } else { 0.2 });
    let mut faults = setup::Options {
        failure_rate,
        seed: args.seed,
        max_attempts: args.max_attempts,
        in_flight: args.concurrency,
        flaky_url: None,
    };
    // For an outage the soak runs Cosmos itself, before the orchestrator connects to it.
    let mut flaky_http = None;
    if outage_plan.is_some() {
        let server = outage::HttpServer::start(
            kit::binaries::path_in(&bin_dir, "cosmos-mcp-server"),
            setup::flaky_args(tmp.path(), &faults),
            tmp.path().join("cosmos.log"),
        )
        .await
        .context("starting Cosmos over HTTP for the outage")?;
        faults.flaky_url = Some(server.url());
        flaky_http = Some(server);
    }
    let (config_path, config) = setup::write_config(tmp.path(), &bin_dir, faults)?;
    let roles = roles(&config)?;
    let children = setup::expected_children(outage_plan.is_some());
    let kill_every =
        (args.kill_every_secs > 0.0).then(|| Duration::from_secs_f64(args.kill_every_secs));
    let settings = Settings {
        calls: args.calls,
        concurrency: args.concurrency,
        kill_every,
        failure_rate,
        seed: args.seed,
        max_attempts: args.max_attempts,
        warmup_calls: ((args.calls as f64) * args.warmup.clamp(0.0, 1.0)) as u64,
        max_rss_growth: args.max_rss_growth,
        max_fd_growth: args.max_fd_growth,
        bin_dir: bin_dir.clone(),
        flaky_attempts: setup::retry_attempts(
            &config,
            setup::FLAKY,
            // The upstream's own name: the exposed one without `cosmos__`.
            Kind::CosmosBehavior
                .tool()
                .split_once("__")
                .map_or(Kind::CosmosBehavior.tool(), |(_, tool)| tool),
        ),
        min_goodput_flaky: args.min_goodput_flaky,
        max_goodput_gap_killed: args.max_goodput_gap_killed,
        outage: outage_plan,
        children: children.clone(),
    };

    // The orchestrator, its stderr in a log file; the marker tells this run's processes apart.
    let marker = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let log_path = tmp.path().join("orchestrator.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(kit::binaries::path_in(&bin_dir, ORCHESTRATOR))
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .env(procs::MARKER_VAR, &marker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting mcp-orchestrator")?;
    let orch = child.id().context("the orchestrator has no pid")?;
    let stdin = child.stdin.take().context("stdin piped")?;
    let stdout = child.stdout.take().context("stdout piped")?;
    let conn = Arc::new(Conn::start(stdin, stdout, args.calls, Tally::new()?));

    let ready = async {
        conn.request(
            "initialize",
            json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": { "name": "mcp-soak", "version": env!("CARGO_PKG_VERSION") }
            }),
            Duration::from_secs(30),
        )
        .await
        .context("initialize")?;
        conn.notify("notifications/initialized", json!({}))?;
        wait_for_tools(&conn, Duration::from_secs(60)).await
    };
    if let Err(e) = ready.await {
        // Why it never became ready is in its log: keep it.
        tmp.keep();
        return Err(e.context(format!(
            "the orchestrator did not get ready (its log: {})",
            log_path.display()
        )));
    }

    // The calls, with the killer and the samplers watching (and the outage, if any).
    let began = Instant::now();
    let began_wall = std::time::SystemTime::now();
    let watch = Arc::new(Mutex::new(Watch {
        killing: true,
        ..Watch::default()
    }));
    let plan = Plan {
        orch,
        kill_every,
        warmup_calls: settings.warmup_calls,
        calls: args.calls,
        since: began,
        children: children.clone(),
        outage: outage_plan.map(|o| (o.after, o.after + o.down_for + BASELINE_MARGIN)),
    };
    let watcher = tokio::spawn(watch::run(
        plan,
        marker.clone(),
        conn.clone(),
        watch.clone(),
    ));
    let trace = Arc::new(Mutex::new(status::Trace::default()));
    let status_sampler = tokio::spawn(status::sample(
        conn.clone(),
        began,
        began_wall,
        trace.clone(),
    ));
    let (calls_done, calls_done_rx) = tokio::sync::watch::channel(false);
    let outage_task = match (flaky_http.take(), outage_plan) {
        (Some(server), Some(plan)) => Some(tokio::spawn(outage::run(
            server,
            plan,
            began,
            calls_done_rx,
        ))),
        _ => None,
    };
    let drain = Duration::from_secs(args.drain_secs);
    let window = Arc::new(Semaphore::new(args.concurrency));
    let mut sent = 0;
    let mut stopped_early = false;
    for id in 1..=args.calls {
        let Some(permit) = free_slot(&window, &conn, drain).await else {
            eprintln!(
                "mcp-soak: no slot freed within {drain:?}, or the orchestrator closed its stdout; stopping"
            );
            stopped_early = true;
            break;
        };
        if let Err(e) = conn.call(id, mix::call(id, args.seed), permit) {
            eprintln!("mcp-soak: {e}; stopping");
            stopped_early = true;
            break;
        }
        sent += 1;
    }
    let deadline = Instant::now() + drain;
    while conn.outstanding() > 0 && Instant::now() < deadline && !conn.ended() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = began.elapsed();
    lock(&watch).killing = false;
    let _ = calls_done.send(true);
    let mut outage_record = None;
    if let Some(task) = outage_task {
        match task.await {
            Ok((server, record)) => {
                flaky_http = Some(server);
                outage_record = Some(record);
            }
            Err(e) => eprintln!("mcp-soak: the outage task failed: {e}"),
        }
    }

    // Settle: the REST server back and listed, so the end snapshot compares like with like.
    let settled = settle(
        &conn,
        orch,
        &marker,
        &children,
        Duration::from_secs(args.settle_secs),
    )
    .await;
    let end = Snapshot::take(orch, &marker, conn.answered(), began);
    let flaky_http_running = flaky_http.as_mut().map(outage::HttpServer::running);
    watcher.abort();
    status_sampler.abort();
    // The breakers as the orchestrator tells them, once everything is back.
    let breakers = status::Breakers::of(&status::read(&conn).await);
    let killed = lock(&watch).killed.clone();
    let unreaped: Vec<u32> = killed
        .iter()
        .filter(|(pid, start)| procs::exists(*pid, *start))
        .map(|(pid, _)| *pid)
        .collect();
    let orphans: Vec<procs::Proc> = procs::scan(orch, &marker)
        .into_iter()
        .filter(|p| p.pid != orch && p.ppid != orch)
        .collect();

    // Shutdown: end of input, then the orchestrator must close its children and exit.
    conn.close();
    let closed = Instant::now();
    let mut shutdown = Shutdown::default();
    match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(Ok(status)) => {
            shutdown.status = format!("exited ({status})");
            shutdown.clean = status.success();
        }
        Ok(Err(e)) => shutdown.status = format!("wait failed: {e}"),
        Err(_) => {
            shutdown.status = "still running 20 s after its stdin closed (killed)".to_owned();
            let _ = child.kill().await;
        }
    }
    shutdown.secs = closed.elapsed().as_secs_f64();
    if let Some(server) = flaky_http.as_mut() {
        server.stop().await;
    }
    let gone_by = Instant::now() + Duration::from_secs(5);
    loop {
        shutdown.left = procs::scan(orch, &marker)
            .into_iter()
            .filter(|p| p.marked && !p.is_zombie())
            .collect();
        if shutdown.left.is_empty() || Instant::now() >= gone_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (matching, tally, lost) = conn.figures();
    let watch = std::mem::take(&mut *lock(&watch));
    let mut report = Report {
        settings,
        roles,
        sent,
        stopped_early,
        matching,
        lost,
        tally,
        elapsed,
        watch,
        settled,
        end,
        unreaped,
        orphans,
        shutdown,
        log: None,
        began,
        trace: std::mem::take(&mut *trace.lock().unwrap_or_else(|e| e.into_inner())),
        breakers,
        outage: outage_record,
        flaky_http_running,
    };
    let passed = report.checks().iter().all(|c| c.ok);
    if !passed || args.keep_temp {
        tmp.keep();
        report.log = Some(log_path);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(passed)
}

/// How long after an outage the memory and descriptor baseline may not be taken, when it could
/// not be taken before.
const BASELINE_MARGIN: Duration = Duration::from_secs(3);

fn lock(w: &Mutex<Watch>) -> std::sync::MutexGuard<'_, Watch> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Each kind's role: a pass-through call's is its server's; a composite's is healthy when the
/// servers its success depends on (see [`setup::critical_servers`]) are all healthy.
fn roles(
    config: &Value,
) -> anyhow::Result<BTreeMap<Kind, (Role, std::collections::BTreeSet<String>)>> {
    let mut out = BTreeMap::new();
    for (kind, _) in MIX {
        let entry = match kind.server() {
            Some(server) => (Role::of_server(server), [server.to_owned()].into()),
            None => {
                let deps = setup::critical_servers(setup::composite(config, kind.tool())?)?;
                let role = deps
                    .iter()
                    .map(|s| Role::of_server(s))
                    .max()
                    .unwrap_or(Role::Healthy);
                (role, deps)
            }
        };
        out.insert(kind, entry);
    }
    Ok(out)
}

/// A place in the window of calls in flight; `None` when none frees up within `wait` or the
/// orchestrator's stdout ended (no answer will ever free one).
async fn free_slot(
    window: &Arc<Semaphore>,
    conn: &Conn,
    wait: Duration,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout(Duration::from_millis(100), window.clone().acquire_owned()).await
        {
            Ok(permit) => return permit.ok(),
            Err(_) if conn.ended() || Instant::now() >= deadline => return None,
            Err(_) => {}
        }
    }
}

/// The exposed tool names, from `tools/list`.
async fn tool_names(conn: &Conn) -> anyhow::Result<Vec<String>> {
    let list = conn
        .request("tools/list", json!({}), Duration::from_secs(10))
        .await?;
    Ok(list
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Waits until the orchestrator lists every tool of the mix (it answers before its upstreams
/// have connected).
async fn wait_for_tools(conn: &Conn, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let names = tool_names(conn).await?;
        let missing: Vec<&str> = MIX
            .iter()
            .map(|(k, _)| k.tool())
            .filter(|t| !names.iter().any(|n| n == t))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the orchestrator never listed {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until exactly the `children` run (no zombie) and REST's tools are listed again.
async fn settle(
    conn: &Conn,
    orch: u32,
    marker: &str,
    children: &BTreeMap<String, u32>,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let since = Instant::now();
    loop {
        let snap = Snapshot::take(orch, marker, 0, since);
        if snap.has_exactly(children)
            && tool_names(conn)
                .await
                .is_ok_and(|n| n.iter().any(|t| t == Kind::RestInventory.tool()))
        {
            return true;
        }
        if Instant::now() >= deadline || conn.ended() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
