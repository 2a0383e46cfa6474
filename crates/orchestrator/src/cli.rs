//! The `mcp-orchestrator` command: `serve` (what agents launch), `tools`, `call`, `check`, `status`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rmcp::{
    ServiceExt,
    model::{CallToolResult, ReadResourceRequestParams, ResourceContents},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

use crate::{
    config::{Config, Transport},
    frontend::Frontend,
    gateway::Gateway,
    status::{STATUS_URI, StatusReport},
    upstream::CallContext,
};

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
    pub config: PathBuf,
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

/// Prints a line to stdout; a closed pipe (`| head`) ends the output quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// How long `tools` and `call` wait for the upstreams to connect.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the command; returns the process exit code.
impl Cli {
    /// How many threads the runtime gets: `--worker-threads`, else 1 for `serve` over stdio and
    /// one per core for everything else.
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
            _ => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        }
    }
}

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
        Command::Check => check(&cli.config),
        Command::Serve { transport, serve } => serve_agents(&cli.config, transport, serve).await,
        Command::Tools { json } => tools(&cli.config, json).await,
        Command::Call { tool, args } => call(&cli.config, &tool, &args).await,
        Command::Status { url, token, json } => status(&cli.config, url, token, json).await,
        Command::Demo { json, section } => crate::demo::run(json, section).await,
    };
    telemetry.shutdown().await;
    code
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

fn check(path: &std::path::Path) -> anyhow::Result<i32> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: invalid configuration\n  {e}", path.display());
            return Ok(1);
        }
    };
    out!("{}: valid", path.display());
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(["server", "transport", "tool prefix", "target"]);
    for s in &config.servers {
        let target = match &s.transport {
            Transport::Stdio { command, args, .. } => {
                config.redact(&format!("{command} {}", args.join(" ")))
            }
            Transport::Http { url, .. } => config.redact(url),
        };
        let prefix = if s.prefix.is_empty() {
            "(none)".to_owned()
        } else {
            format!("{}{}", s.prefix, config.separator)
        };
        t.add_row([s.name.clone(), s.transport.kind().into(), prefix, target]);
    }
    for d in &config.disabled {
        t.add_row([d.clone(), "disabled".into(), String::new(), String::new()]);
    }
    out!("{t}");
    out!("HTTP front: {}", config.listen);
    Ok(0)
}

async fn start(path: &std::path::Path) -> anyhow::Result<Arc<Gateway>> {
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

/// How long `serve` waits for the upstreams before it answers agents.
const STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_agents(
    path: &std::path::Path,
    transport: Option<FrontTransport>,
    mut serve: kit::serve::ServeArgs,
) -> anyhow::Result<i32> {
    let metrics = Arc::new(crate::metrics::Metrics::from_env("mcp-orchestrator")?);
    let gateway = Gateway::start_with_metrics(load(path)?, metrics.clone());
    let http = transport == Some(FrontTransport::Http) || serve.http.is_some();
    if transport == Some(FrontTransport::Stdio) {
        serve.http = None;
    } else if http && serve.http.is_none() {
        serve.http = Some(gateway.config().listen);
    }
    // Agents list tools right after `initialize` and rarely list again: answering before the
    // upstreams are connected would show them a partial catalog. Wait until each one has
    // connected or failed once, bounded so that a hung server cannot hold the front back.
    if !gateway.wait_ready(STARTUP_WAIT).await {
        tracing::warn!("serving without every upstream connected; see orchestrator://status");
    }
    let in_flight = kit::in_flight::InFlight::default();
    let gw = gateway.clone();
    let calls = in_flight.clone();
    let served = kit::serve::serve_with_routes(
        &serve,
        in_flight,
        move || Frontend::new(gw.clone(), calls.clone()),
        metrics_route(metrics.clone()),
    )
    .await;
    gateway.shutdown().await;
    metrics.shutdown().await;
    served?;
    Ok(0)
}

/// `GET /metrics` on the HTTP front (behind its bearer token): every metric in the Prometheus
/// text format, for operators without an OpenTelemetry collector. Stdio has no such endpoint.
fn metrics_route(metrics: Arc<crate::metrics::Metrics>) -> axum::Router {
    use axum::{http::StatusCode, http::header::CONTENT_TYPE, response::IntoResponse};
    let render = move || {
        let metrics = metrics.clone();
        async move {
            match metrics.render_prometheus() {
                Ok(text) => (
                    StatusCode::OK,
                    [(CONTENT_TYPE, crate::metrics::prometheus::CONTENT_TYPE)],
                    text,
                )
                    .into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
            }
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(render))
}

async fn tools(path: &std::path::Path, json: bool) -> anyhow::Result<i32> {
    let gateway = start(path).await?;
    let catalog = gateway.catalog();
    if json {
        out!("{}", serde_json::to_string_pretty(&catalog.tools)?);
    } else {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header(["tool", "server", "read-only", "description"]);
        for (tool, server) in catalog.tool_servers() {
            let read_only = tool
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .map(|b| if b { "yes" } else { "no" })
                .unwrap_or("?");
            let description = tool
                .description
                .as_deref()
                .unwrap_or_default()
                .split(". ")
                .next()
                .unwrap_or_default()
                .to_owned();
            t.add_row([
                tool.name.to_string(),
                gateway.upstreams()[server].name().to_owned(),
                read_only.to_owned(),
                description,
            ]);
        }
        out!("{t}");
        out!(
            "{} tools from {} servers",
            catalog.tools.len(),
            gateway.upstreams().len()
        );
        for p in &catalog.problems {
            out!("note: {}: {}", p.server, p.message);
        }
    }
    gateway.shutdown().await;
    Ok(0)
}

async fn call(path: &std::path::Path, tool: &str, args: &str) -> anyhow::Result<i32> {
    let arguments: serde_json::Value =
        serde_json::from_str(args).with_context(|| format!("--args is not JSON: {args}"))?;
    let serde_json::Value::Object(arguments) = arguments else {
        bail!("--args must be a JSON object, got {args}");
    };
    let gateway = start(path).await?;
    let outcome = gateway
        .call_tool(tool, Some(arguments), &CallContext::default())
        .await;
    gateway.shutdown().await;
    match outcome {
        Ok(result) => {
            out!("{}", render(&result));
            Ok(if result.is_error == Some(true) { 1 } else { 0 })
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(2)
        }
    }
}

/// Structured content when there is some, else the text content.
fn render(result: &CallToolResult) -> String {
    if let Some(s) = &result.structured_content {
        return serde_json::to_string_pretty(s).unwrap_or_default();
    }
    let text = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    match (&result.meta, result.is_error) {
        (Some(meta), Some(true)) => format!(
            "{text}\n{}",
            serde_json::to_string(&meta.0).unwrap_or_default()
        ),
        _ => text,
    }
}

async fn status(
    path: &std::path::Path,
    url: Option<String>,
    token: Option<String>,
    json: bool,
) -> anyhow::Result<i32> {
    let url = match url {
        Some(u) => u,
        None => format!("http://{}/mcp", load(path)?.listen),
    };
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.clone());
    if let Some(t) = token {
        config = config.auth_header(t);
    }
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .with_context(|| format!("cannot reach an orchestrator at {url}"))?;
    let result = client
        .read_resource(ReadResourceRequestParams::new(STATUS_URI))
        .await
        .context("reading orchestrator://status")?;
    let _ = client.cancel().await;
    let text = result
        .contents
        .into_iter()
        .find_map(|c| match c {
            ResourceContents::TextResourceContents { text, .. } => Some(text),
            _ => None,
        })
        .context("status resource had no text")?;
    if json {
        out!("{text}");
    } else {
        let report: StatusReport =
            serde_json::from_str(&text).context("status is not a status report")?;
        out!("{}", report.table());
        out!(
            "{} tools exposed; started {}",
            report.exposed_tools,
            report.started_at
        );
        out!("composites: {}", report.composites.join(", "));
        out!("cache: {}", report.cache);
        out!("{}", report.limits.line());
        for p in &report.catalog_problems {
            out!("note: {}: {}", p.server, p.message);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(args: &[&str]) -> Result<usize, clap::Error> {
        let argv = std::iter::once("mcp-orchestrator").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.worker_threads())
    }

    fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    }

    #[test]
    fn a_stdio_front_runs_on_one_thread_and_everything_else_on_every_core() {
        assert_eq!(threads(&["serve"]).ok(), Some(1));
        assert_eq!(threads(&["serve", "--transport", "stdio"]).ok(), Some(1));
        assert_eq!(
            threads(&["serve", "--http", "127.0.0.1:0"]).ok(),
            Some(cores())
        );
        assert_eq!(
            threads(&["serve", "--transport", "http"]).ok(),
            Some(cores())
        );
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
