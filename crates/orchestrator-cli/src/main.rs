//! `mcp-orchestrator`: the command line in front of the `orchestrator` library.
//!
//! # Layout
//! - [`cli`]: the subcommands (`serve`, `tools`, `call`, `check`, `status`, `demo`), one file each.
//! - [`demo`]: `mcp-orchestrator demo`, the workshop tour, one file per section.
//! - [`output`]: printing to stdout, and the one table style.
//!
//! The library holds the gateway and its data (config, catalog, status report); everything
//! that parses arguments or draws tables and spinners lives here.

#[macro_use]
mod output;
mod cli;
mod demo;

use clap::Parser;

/// jemalloc hands freed pages back to the system (its background thread purges them within
/// seconds): after a burst (thousands of sessions that then idle out) the process shrinks back,
/// where glibc's allocator kept its peak for good.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    // One thread means the current-thread scheduler: nothing to hand tasks between.
    let threads = cli.worker_threads();
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = builder.enable_all().build()?;
    let code = runtime.block_on(cli::run(cli))?;
    // Exits without dropping the runtime, which would wait on blocking-pool threads (a reader of
    // a terminal's stdin may be parked in `read` for good).
    std::process::exit(code);
}
