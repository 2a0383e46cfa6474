//! `mcp-orchestrator`: see the library docs.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = orchestrator::cli::Cli::parse();
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
    let code = runtime.block_on(orchestrator::cli::run(cli))?;
    // Exits without dropping the runtime, which would wait on blocking-pool threads (a reader of
    // a terminal's stdin may be parked in `read` for good).
    std::process::exit(code);
}
