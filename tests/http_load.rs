//! One careless client cannot hurt another: against the orchestrator's HTTP front (default
//! limits, but sessions idle out after 5 s so the test ends), one client opens 10,000 sessions
//! and holds 2,000 idle connections while a second client keeps calling a tool.
//!
//! Shown: the second client never fails; the session cap holds (sessions beyond it are refused
//! with 503, not queued, not crashed); the orchestrator's memory stays under a bound while it
//! is flooded, and comes back near its baseline once the flood's sessions idle out. The figures
//! are printed for the README's "running it as a shared service" section.
//!
//! And memory is given back: 5,000 sessions opened, left to expire, and the process back within
//! 20 MB of where it started.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use futures::StreamExt;
use serde_json::json;
use testkit::{HttpServer, PeerClient, TempDir, bin_path, call};
use tokio::net::TcpStream;

const SESSIONS: usize = 10_000;
const IDLE_CONNECTIONS: usize = 2_000;
/// The default `--max-sessions`.
const MAX_SESSIONS: usize = kit::serve::limits::DEFAULT_MAX_SESSIONS;
/// Peak RSS allowed while flooded: the baseline plus what the capped sessions and the idle
/// connections may hold.
const PEAK_MB_OVER_BASELINE: u64 = 150;
/// RSS allowed over the baseline once the flood is gone.
const SETTLED_MB_OVER_BASELINE: u64 = 20;

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    line.split_whitespace()
        .nth(1)
        .context("value")?
        .parse()
        .context("number")
}

async fn sessions_gauge(metrics: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(metrics).await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix("mcp_orchestrator_http_sessions "))
        .context("sessions gauge")?
        .trim()
        .parse::<f64>()
        .map(|v| v as u64)
        .context("gauge value")
}

/// The orchestrator with one SQL upstream over stdio, serving HTTP with `flags`.
async fn orchestrator(dir: &TempDir, flags: &[&str]) -> anyhow::Result<HttpServer> {
    let cfg = json!({
        "mcpServers": { "sql": {
            "command": bin_path("sql-mcp-server")?,
            "args": ["--data-dir", dir.path().join("sql")]
        } }
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?)?;
    let mut args = [
        "serve",
        "--config",
        &path.display().to_string(),
        "--http",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(flags.iter().map(|f| f.to_string()));
    HttpServer::spawn("mcp-orchestrator", &args, &HashMap::new()).await
}

/// `count` `initialize` requests from a client named `name`, 32 at a time: each one's status.
fn initialize_requests(
    url: &str,
    name: &str,
    count: usize,
) -> impl futures::Stream<Item = anyhow::Result<u16>> {
    let http = reqwest::Client::new();
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": name, "version": "1.0" }
        }
    });
    let url = url.to_owned();
    futures::stream::iter(0..count)
        .map(move |_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                let response = http
                    .post(url)
                    .header("accept", "application/json, text/event-stream")
                    .json(&body)
                    .send()
                    .await?;
                let status = response.status().as_u16();
                response.bytes().await?;
                Ok(status)
            }
        })
        .buffer_unordered(32)
}

/// RSS of `pid` once it is back within [`SETTLED_MB_OVER_BASELINE`] of `baseline`, or after
/// 30 s: the allocator gives freed pages back within seconds.
async fn settled_rss(pid: u32, baseline: u64) -> anyhow::Result<u64> {
    let mut rss = rss_kb(pid)?;
    let waiting = Instant::now();
    while rss >= baseline + SETTLED_MB_OVER_BASELINE * 1024
        && waiting.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss = rss_kb(pid)?;
    }
    Ok(rss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sessions_and_idle_connections_leaves_other_clients_unharmed()
-> anyhow::Result<()> {
    // The idle connections need descriptors on this side too.
    rlimit::increase_nofile_limit(u64::MAX)?;
    let dir = TempDir::new("front-load")?;
    let server = orchestrator(&dir, &["--session-idle-secs", "5"]).await?;
    let pid = server.child.id().context("pid")?;
    let metrics = server.url.replace("/mcp", "/metrics");
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();

    // The well-behaved client, and the orchestrator warmed up by it.
    let client = server.connect(None).await?;
    let peer = PeerClient(client.peer().clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .list_all_tools()
        .await?
        .iter()
        .any(|t| t.name == "sql__get_customer")
    {
        ensure!(Instant::now() < deadline, "the sql server never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..50 {
        call(
            &peer,
            "sql__get_customer",
            json!({ "customerId": "CUST-0001" }),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_kb(pid)?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let caller = tokio::spawn({
        let (stop, ok, failed, peer) = (stop.clone(), ok.clone(), failed.clone(), peer.clone());
        async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match call(
                    &peer,
                    "sql__get_customer",
                    json!({ "customerId": "CUST-0002" }),
                )
                .await
                {
                    Ok(r) if r.is_error != Some(true) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if errors.len() < 5 {
                            errors.push(format!("{outcome:?}"));
                        }
                    }
                }
            }
            errors
        }
    });

    // The flood: idle connections first, then sessions, sampling memory as it goes.
    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(&addr).await?);
    }
    let mut peak = rss_kb(pid)?;
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut answers = initialize_requests(&server.url, "flood", SESSIONS);
    let mut n = 0;
    while let Some(status) = answers.next().await {
        *statuses.entry(status?).or_default() += 1;
        n += 1;
        if n % 500 == 0 {
            peak = peak.max(rss_kb(pid)?);
        }
    }
    drop(answers);
    let flood_secs = started.elapsed().as_secs_f64();
    peak = peak.max(rss_kb(pid)?);
    let held = sessions_gauge(&metrics).await?;
    drop(idle);

    // The flood's sessions idle out; the caller's session stays, since it keeps calling.
    let settle = Instant::now();
    while sessions_gauge(&metrics).await? > 1 {
        ensure!(
            settle.elapsed() < Duration::from_secs(60),
            "the flood's sessions never idled out"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled = settled_rss(pid, baseline).await?;
    stop.store(true, Ordering::Relaxed);
    let errors = caller.await?;
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));

    eprintln!(
        "flood: {SESSIONS} initialize in {flood_secs:.1} s -> {statuses:?}; \
         {IDLE_CONNECTIONS} idle connections; sessions held at peak {held}\n\
         orchestrator RSS: baseline {} MB, peak {} MB, after the sessions idled out {} MB\n\
         second client: {ok} calls ok, {failed} failed",
        baseline / 1024,
        peak / 1024,
        settled / 1024
    );
    ensure!(
        failed == 0,
        "the second client failed {failed} times: {errors:?}"
    );
    ensure!(ok > 0, "the second client made no call");
    let accepted = statuses.get(&200).copied().unwrap_or_default();
    let refused = statuses.get(&503).copied().unwrap_or_default();
    ensure!(
        accepted + refused == SESSIONS,
        "every initialize is accepted or refused with 503: {statuses:?}"
    );
    // Sessions idle out during the flood and free their places, so more than the cap may be
    // accepted over its course; never more than the cap at once.
    ensure!(
        held as usize <= MAX_SESSIONS && refused > 0,
        "the session cap held: {accepted} accepted, {held} held at the end of the flood"
    );
    ensure!(
        peak < baseline + PEAK_MB_OVER_BASELINE * 1024,
        "peak RSS {} MB over a baseline of {} MB",
        peak / 1024,
        baseline / 1024
    );
    ensure!(
        settled < baseline + SETTLED_MB_OVER_BASELINE * 1024,
        "RSS {} MB after the flood, baseline {} MB",
        settled / 1024,
        baseline / 1024
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_comes_back_after_5000_sessions_expire() -> anyhow::Result<()> {
    const OPENED: usize = 5_000;
    let dir = TempDir::new("front-expire")?;
    let server = orchestrator(
        &dir,
        &["--max-sessions", "5000", "--session-idle-secs", "3"],
    )
    .await?;
    let pid = server.child.id().context("pid")?;
    let metrics = server.url.replace("/mcp", "/metrics");
    // Warm up: one session that comes and goes.
    let client = server.connect(None).await?;
    client.list_all_tools().await?;
    drop(client);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_kb(pid)?;

    let statuses: Vec<u16> = initialize_requests(&server.url, "expiring", OPENED)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    ensure!(
        statuses.iter().all(|s| *s == 200),
        "every session opened: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 200)
            .take(5)
            .collect::<Vec<_>>()
    );
    let full = rss_kb(pid)?;
    let expiring = Instant::now();
    while sessions_gauge(&metrics).await? > 0 {
        ensure!(
            expiring.elapsed() < Duration::from_secs(60),
            "the sessions never idled out"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled = settled_rss(pid, baseline).await?;
    eprintln!(
        "{OPENED} sessions opened then expired: orchestrator RSS {} MB before, {} MB with them \
         open, {} MB after they expired",
        baseline / 1024,
        full / 1024,
        settled / 1024
    );
    ensure!(
        settled < baseline + SETTLED_MB_OVER_BASELINE * 1024,
        "RSS {} MB after {OPENED} sessions expired, baseline {} MB",
        settled / 1024,
        baseline / 1024
    );
    Ok(())
}
