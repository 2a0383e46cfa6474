//! The `mcp-orchestrator` command: `serve` (what agents launch), `tools`, `call`, `check`,
//! `status` and `demo`. This file parses the arguments and picks the subcommand; each
//! subcommand has its own file.

mod admin;
mod call;
mod check;
mod health;
mod sagas;
mod serve;
mod status;
mod tools;

use std::{path::Path, sync::Arc, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use orchestrator::{config::Config, gateway::Gateway};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "mcp-orchestrator",
    version,
    about = "One MCP server in front of many"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "MCP_ORCHESTRATOR_CONFIG",
        default_value = "mcp.json"
    )]
    pub config: std::path::PathBuf,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, env = "MCP_LOG_FORMAT", default_value_t = kit::telemetry::LogFormat::Text)]
    pub log_format: kit::telemetry::LogFormat,
    /// Threads that run the orchestrator's tasks [default: 1 for `serve` over stdio, else one
    /// per core].
    #[arg(long, global = true, env = "MCP_ORCHESTRATOR_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which transport `serve` offers agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FrontTransport {
    /// stdin/stdout (what desktop agents launch).
    Stdio,
    /// Streamable HTTP at /mcp on `--http`, or `orchestrator.listen` from the config.
    Http,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP to agents (stdio by default).
    Serve {
        /// Front transport; `--http ADDR` implies `http`.
        #[arg(long, value_enum)]
        transport: Option<FrontTransport>,
        /// Transport and HTTP security flags.
        #[command(flatten)]
        serve: kit::serve::ServeArgs,
    },
    /// Connect to every server and print the catalog.
    Tools {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Call one tool and print its result; exits non-zero on a tool error.
    Call {
        /// Exposed tool name, e.g. `sql__get_customer`.
        tool: String,
        /// Arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
    },
    /// Validate the configuration and print a summary (connects to nothing).
    Check,
    /// Print the status of a running orchestrator's HTTP front.
    Status {
        /// Its MCP endpoint; default: `orchestrator.listen` from the config.
        #[arg(long)]
        url: Option<String>,
        /// Bearer token, if the front requires one.
        #[arg(long, env = "MCP_AUTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The saga log: counts by state and the sagas whose undo failed, which wait for a person.
    Sagas {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// What to do; default: list.
        #[command(subcommand)]
        action: Option<SagasAction>,
    },
    /// The workshop tour: starts the bundled servers and shows each pattern with measured figures.
    Demo {
        /// Print every section's figures as one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// Run one section: parallel, fanout, partial, breaker, retry or cache.
        #[arg(long)]
        section: Option<String>,
    },
}

/// `sagas` subcommands.
#[derive(Debug, Subcommand)]
pub enum SagasAction {
    /// Mark a `compensation_failed` saga resolved, once its systems have been put right by hand
    /// (it is then kept and deleted like the sagas that ended well).
    Resolve {
        /// The saga's id, as `sagas` or the failed call's `_meta.saga.id` shows it.
        id: String,
        /// What was done to put the systems right; kept in the log with the saga.
        #[arg(long)]
        note: String,
    },
}

/// How long `tools` and `call` wait for the upstreams to connect.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Cli {
    /// How many threads the runtime gets: `--worker-threads`, else 1 for `serve` over stdio,
    /// [`http_worker_threads`] for `serve --http`, and one per core for everything else.
    ///
    /// A stdio front serves one agent, and its work is moving messages between pipes. On one
    /// thread a pass-through call costs about 2.4 context switches instead of 6.7 and about a
    /// quarter less CPU (the `passthrough` bench prints both), because no worker has to wake
    /// another to hand a message on. An HTTP front serving many agents can use every core.
    pub fn worker_threads(&self) -> usize {
        if let Some(n) = self.worker_threads {
            return usize::from(n);
        }
        match &self.command {
            Command::Serve { transport, serve }
                if *transport != Some(FrontTransport::Http) && serve.http.is_none() =>
            {
                1
            }
            Command::Serve { .. } => http_worker_threads(cores()),
            _ => cores(),
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// An HTTP front uses every core, except on a machine of two or fewer: there its upstream
/// servers need the other core, and a second worker only competes with them and adds a wake-up
/// between workers to each message (the `passthrough` bench: one worker costs 2.8 context
/// switches and a fifth less CPU per call than two, and the upstream is the bottleneck of
/// throughput either way).
fn http_worker_threads(cores: usize) -> usize {
    if cores <= 2 { 1 } else { cores }
}

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    // Commands that print results keep the terminal for them; serving logs at info.
    let default_filter = match cli.command {
        Command::Serve { .. } => "info,rmcp=warn",
        // The demo's servers fail on purpose; their error logs would bury the tables.
        Command::Demo { .. } => "off",
        _ => "warn",
    };
    let telemetry =
        kit::telemetry::init_with_default("mcp-orchestrator", cli.log_format, default_filter)?;
    let code = match cli.command {
        Command::Check => check::run(&cli.config),
        Command::Serve { transport, serve } => serve::run(&cli.config, transport, serve).await,
        Command::Tools { json } => tools::run(&cli.config, json).await,
        Command::Call { tool, args } => call::run(&cli.config, &tool, &args).await,
        Command::Status { url, token, json } => status::run(&cli.config, url, token, json).await,
        Command::Sagas { json, action } => match action {
            None => sagas::list(&cli.config, json),
            Some(SagasAction::Resolve { id, note }) => sagas::resolve(&cli.config, &id, &note),
        },
        Command::Demo { json, section } => crate::demo::run(json, section).await,
    };
    telemetry.shutdown().await;
    code
}

/// The configuration at `path`, or why it is invalid.
fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

/// A gateway on the configuration at `path`, once its upstreams are connected (or
/// [`READY_TIMEOUT`] has passed: then each one still missing is named on stderr).
async fn start(path: &Path) -> anyhow::Result<Arc<Gateway>> {
    let gateway = Gateway::start(load(path)?);
    if !gateway.wait_ready(READY_TIMEOUT).await {
        for u in gateway.upstreams() {
            if u.connected_since().is_none() {
                eprintln!(
                    "warning: server `{}` is not connected: {}",
                    u.name(),
                    gateway.config().redact(
                        &u.stats()
                            .last_error()
                            .unwrap_or_else(|| "still connecting".into())
                    )
                );
            }
        }
    }
    Ok(gateway)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(args: &[&str]) -> Result<usize, clap::Error> {
        let argv = std::iter::once("mcp-orchestrator").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.worker_threads())
    }

    #[test]
    fn a_stdio_front_runs_on_one_thread_an_http_front_on_every_core_of_a_larger_machine() {
        assert_eq!(threads(&["serve"]).ok(), Some(1));
        assert_eq!(threads(&["serve", "--transport", "stdio"]).ok(), Some(1));
        let http = if cores() <= 2 { 1 } else { cores() };
        assert_eq!(
            threads(&["serve", "--http", "127.0.0.1:0"]).ok(),
            Some(http)
        );
        assert_eq!(threads(&["serve", "--transport", "http"]).ok(), Some(http));
        assert_eq!(threads(&["tools"]).ok(), Some(cores()));
    }

    #[test]
    fn worker_threads_is_taken_as_given_and_zero_is_refused() {
        assert_eq!(threads(&["serve", "--worker-threads", "4"]).ok(), Some(4));
        assert_eq!(
            threads(&["--worker-threads", "2", "serve", "--http", "127.0.0.1:0"]).ok(),
            Some(2)
        );
        let err = threads(&["serve", "--worker-threads", "0"]).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.to_string().contains("--worker-threads")),
            "{err:?}"
        );
    }
}
