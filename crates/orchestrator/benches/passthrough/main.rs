//! What the orchestrator costs on this machine, in five sections:
//!
//! 1. **Both fronts side by side.** The same cheap read tool (`get_customer`) called directly on
//!    `sql-mcp-server`; through a byte relay (this bench binary re-run to copy lines without
//!    parsing them: the floor for any proxy process, two extra pipe hops); and as
//!    `sql__get_customer` through `mcp-orchestrator serve` over stdio, over streamable HTTP with
//!    sessions (`--http 127.0.0.1:0`), and over HTTP without them (`--stateless`, plain JSON
//!    answers). Per path: sequential latency p50/p90/p99/max, calls/s at 16 and at 32 in flight
//!    (the median of the rounds), and the CPU time and context switches of each process per
//!    sequential call (Linux `/proc`: the threads' `schedstat`, or the process's 10 ms ticks when
//!    threads exited meanwhile; they say where the added latency goes and vary far less than
//!    latency on a busy machine), with the latency each added over direct.
//! 2. **Aims** on those figures, each `met` or `MISSED`.
//! 3. **CPU per call against answer size** (about 0.2, 10 and 100 KB) over the stdio and the HTTP
//!    front, with the measured size of each answer.
//! 4. **A composite**: `customer_insights` of `mcp.json` through an orchestrator with the three
//!    bundled servers, against the three pass-through calls it makes (see [`composite`] for how
//!    its cached step is accounted for).
//! 5. **Memory and start**: RSS of an idle orchestrator with the three servers connected, and
//!    the time from spawning it to a `tools/list` that lists them all.
//!
//! Run with `cargo bench -p mcp-orchestrator --bench passthrough`. The release binaries are used
//! from `target/release/`; the bench runs `cargo build --release --bins -p sql-mcp-server -p
//! cosmos-mcp-server -p rest-mcp-server -p mcp-orchestrator-cli` first (a no-op when they are
//! current; `PASSTHROUGH_NO_BUILD=1` skips it when they are all there).
//!
//! Knobs (environment): `PASSTHROUGH_WARMUP` (default 500) warm-up calls per path,
//! `PASSTHROUGH_SEQ` calls per sequential round (2000), `PASSTHROUGH_TPUT` calls per throughput
//! round at each concurrency (16000), `PASSTHROUGH_ROUNDS` (3), `PASSTHROUGH_SIZE_CALLS`
//! sequential calls per answer size and round (500), `PASSTHROUGH_COMPOSITE_CALLS` sequential
//! calls per composite or pass-through row and round (500), `PASSTHROUGH_STARTS` cold starts
//! (5), `PASSTHROUGH_IDLE_MS` idle time before RSS is read (500), `PASSTHROUGH_TOOL_RESULTS`
//! how the orchestrator reads tool results (`raw`, the default, or `typed`: the path before raw
//! relaying, with the same binaries; `default` writes no setting, for binaries from before it).
//! Without `--bench` (`cargo test --benches`) it runs one tiny smoke round of every section
//! instead.

mod composite;
mod endpoint;
mod fronts;
mod procs;
mod relay;
mod report;
mod setup;
mod sizes;
mod startup;

use std::time::{Duration, Instant};

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A quick check that the bench still runs, not a measurement.
    smoke: bool,
    warmup: usize,
    seq: usize,
    tput: usize,
    rounds: usize,
    size_calls: usize,
    composite_calls: usize,
    starts: usize,
    idle: Duration,
}

impl Settings {
    /// What `cargo bench` measures, with the knobs applied.
    fn bench() -> Self {
        Self {
            smoke: false,
            warmup: env_usize("PASSTHROUGH_WARMUP", 500),
            seq: env_usize("PASSTHROUGH_SEQ", 2000),
            tput: env_usize("PASSTHROUGH_TPUT", 16000),
            rounds: env_usize("PASSTHROUGH_ROUNDS", 3),
            size_calls: env_usize("PASSTHROUGH_SIZE_CALLS", 500),
            composite_calls: env_usize("PASSTHROUGH_COMPOSITE_CALLS", 500),
            starts: env_usize("PASSTHROUGH_STARTS", 5),
            idle: Duration::from_millis(env_usize("PASSTHROUGH_IDLE_MS", 500) as u64),
        }
    }

    /// A few calls through every path and section.
    fn smoke() -> Self {
        Self {
            smoke: true,
            warmup: 5,
            seq: 10,
            tput: 32,
            rounds: 1,
            size_calls: 3,
            composite_calls: 3,
            starts: 1,
            idle: Duration::from_millis(50),
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

async fn run(s: Settings) -> anyhow::Result<()> {
    let bins = setup::Binaries::ensure()?;
    let scratch = setup::Scratch::new()?;
    let began = Instant::now();
    println!(
        "mcp-orchestrator pass-through bench: {} binaries, {} cores{}",
        bins.profile(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if s.smoke {
            " (smoke run without --bench: a few calls only; figures are not meaningful)"
        } else {
            ""
        }
    );

    let sql_config = scratch.config("sql", &setup::sql_only(&bins, fronts::IN_FLIGHT[1]))?;
    let paths = fronts::Paths::start(&bins, &sql_config).await?;
    fronts::compare(&paths, &s).await?;
    sizes::run(&paths, &s).await?;
    paths.close().await;

    let three = composite::config(&bins, &scratch)?;
    let orch = composite::start(&bins, &three).await?;
    composite::run(&orch, &s).await?;
    let after_work = orch.pid("orchestrator").and_then(procs::rss_kib);
    orch.close().await;
    startup::run(&bins, &three, after_work, &s).await?;

    println!();
    println!("measured in {:.1} s", began.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == relay::FLAG) {
        return relay::main(&args[1..]);
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
        Settings::bench()
    } else {
        Settings::smoke()
    };
    // The client runs on one thread: the machine's cores belong to the processes under test.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(settings))
}
