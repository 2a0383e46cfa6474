//! Section 5: the memory of an idle orchestrator with the three servers connected, and how long
//! it takes from being started to listing every server's tools.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::{
    Settings,
    endpoint::Endpoint,
    procs,
    report::{self, Aim, median},
    setup::{self, Binaries, ORCH_BIN},
};

const AIM_RSS_MB: f64 = 25.0;
const AIM_COLD_START_MS: f64 = 300.0;
/// What every server's tools are named with.
const PREFIXES: [&str; 3] = ["sql__", "cosmos__", "rest__"];

/// One start: how long until the whole catalog was listed, and the memory once idle.
struct Start {
    ready: Duration,
    rss_kib: Option<u64>,
}

/// Starts `serve --config <config>`, lists tools until every server has some, then waits idle
/// and reads its memory.
async fn start_once(bins: &Binaries, config: &Path, idle: Duration) -> anyhow::Result<Start> {
    let started = Instant::now();
    let orch = Endpoint::stdio(
        "cold start",
        "orchestrator",
        "",
        &bins.path(ORCH_BIN),
        &setup::serve_args(config, &[]),
    )
    .await?;
    // `serve` answers once every upstream has connected or failed once, so the first listing is
    // normally whole; if one was slow, the first whole listing counts.
    let ready = loop {
        let tools = orch.list_tools().await?;
        if PREFIXES
            .iter()
            .all(|p| tools.iter().any(|t| t.name.starts_with(p)))
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the orchestrator never listed every server's tools");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(idle).await;
    let pid = orch.pid("orchestrator");
    let rss_kib = pid.and_then(procs::rss_kib);
    orch.close().await;
    // The next start must not overlap this one's exit.
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !procs::exited(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(Start { ready, rss_kib })
}

/// `after_work_kib`: the RSS of section 4's orchestrator (same configuration) after its calls.
pub async fn run(
    bins: &Binaries,
    config: &Path,
    after_work_kib: Option<u64>,
    s: &Settings,
) -> anyhow::Result<()> {
    let mut starts = Vec::new();
    for _ in 0..s.starts {
        starts.push(start_once(bins, config, s.idle).await?);
    }

    report::section(5, "Memory and start");
    println!(
        "mcp-orchestrator serve (stdio) with sql, cosmos and rest (stdio, data in memory), \
         started {} times one after the other; ready: from spawning it to the first tools/list \
         answer that lists tools of all three servers; RSS: VmRSS after {} ms idle once ready \
         (1 MB = 10^6 bytes)",
        s.starts,
        s.idle.as_millis()
    );
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let mut table = report::table(["start", "ready ms", "RSS MB"]);
    for (i, st) in starts.iter().enumerate() {
        table.add_row([
            (i + 1).to_string(),
            format!("{:.1}", st.ready.as_secs_f64() * 1e3),
            st.rss_kib
                .map_or("-".to_owned(), |k| format!("{:.1}", mb(k))),
        ]);
    }
    println!("{table}");
    let rss: Vec<f64> = starts.iter().filter_map(|st| st.rss_kib.map(mb)).collect();
    let ready: Vec<f64> = starts
        .iter()
        .map(|st| st.ready.as_secs_f64() * 1e3)
        .collect();
    report::aim(
        "RSS of an idle orchestrator, three servers connected (median)",
        (!rss.is_empty()).then(|| median(&rss)),
        1,
        " MB",
        Aim::AtMost(AIM_RSS_MB),
    );
    if let Some(kib) = after_work_kib {
        println!(
            "  for comparison, RSS of section 4's orchestrator after its calls: {:.1} MB",
            mb(kib)
        );
    }
    report::aim(
        "cold start to a tools/list with all three servers (median)",
        Some(median(&ready)),
        0,
        " ms",
        Aim::AtMost(AIM_COLD_START_MS),
    );
    Ok(())
}
