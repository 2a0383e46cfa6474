//! Shared helpers for the end-to-end tests: find the workspace's binaries, start them over stdio or
//! HTTP, and connect an rmcp client.
//!
//! Binaries are found where cargo puts them, in `target/<profile>/` above the test executable's
//! `deps/` (the rule is [`kit::binaries`]). Cargo builds a package's own binaries for its
//! integration tests but not those of other packages, so when one is missing (a fresh clone
//! running `cargo nextest run --workspace`), every workspace binary is built once with
//! `cargo build --workspace --bins`; concurrent test processes wait on cargo's own lock.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use rmcp::{
    ClientLifecycleMode, ClientServiceExt, RoleClient,
    model::{CallToolRequestParams, CallToolResult, ProtocolVersion},
    service::RunningService,
    transport::{
        ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub mod haproxy;
pub mod redis;
pub mod stdio_peer;
pub mod tasks;
pub mod write_stream;

/// A connected MCP client.
pub type Client = RunningService<RoleClient, ()>;

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Path of a workspace binary ([`kit::binaries`]), building every one if the test run did not.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let profile_dir = kit::binaries::dir()?;
    let path = kit::binaries::path_in(&profile_dir, name);
    if path.exists() {
        return Ok(path);
    }
    let _lock = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--bins", "--manifest-path"])
            .arg(&manifest)
            .args(profile_dir.ends_with("release").then_some("--release"))
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --workspace --bins failed");
        }
        if !path.exists() {
            bail!("{} is not a binary of this workspace", path.display());
        }
    }
    Ok(path)
}

/// A fresh temporary directory for a server's data, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/mcp-e2e-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-e2e-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The directory as a string argument.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which protocol lifecycle a test client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// 2025-11-25: `initialize` handshake, then a session.
    Initialize,
    /// 2026-07-28: `server/discover`, then self-contained (stateless) requests.
    Stateless,
}

impl Lifecycle {
    fn mode(self) -> ClientLifecycleMode {
        match self {
            Lifecycle::Initialize => ClientLifecycleMode::Initialize,
            Lifecycle::Stateless => ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        }
    }
}

/// Starts `bin args...` as a stdio MCP server and connects to it (protocol 2025-11-25).
pub async fn connect_stdio(bin: &str, args: &[String]) -> anyhow::Result<Client> {
    connect_stdio_with(bin, args, Lifecycle::Initialize).await
}

/// Starts `bin args...` as a stdio MCP server and connects with the given lifecycle.
pub async fn connect_stdio_with(
    bin: &str,
    args: &[String],
    lifecycle: Lifecycle,
) -> anyhow::Result<Client> {
    let path = bin_path(bin)?;
    let transport = TokioChildProcess::new(Command::new(path).configure(|c| {
        c.args(args).env("RUST_LOG", "warn");
    }))?;
    let client = ()
        .serve_with_lifecycle(transport, lifecycle.mode())
        .await
        .with_context(|| format!("connecting to {bin} over stdio"))?;
    Ok(client)
}

/// Starts `mcp-orchestrator serve --config <config>` over stdio with `agent` handling what the
/// orchestrator sends its agent; returns the connection and the orchestrator's pid (for the
/// tests that kill it or signal it).
pub async fn serve_orchestrator<H: rmcp::ClientHandler>(
    agent: H,
    config: &Path,
) -> anyhow::Result<(RunningService<RoleClient, H>, u32)> {
    let transport =
        TokioChildProcess::new(Command::new(bin_path("mcp-orchestrator")?).configure(|c| {
            c.arg("serve")
                .arg("--config")
                .arg(config)
                .env("RUST_LOG", "warn");
        }))?;
    let pid = transport.id().context("the orchestrator has a pid")?;
    let connection = rmcp::ServiceExt::serve(agent, transport)
        .await
        .context("connecting to mcp-orchestrator over stdio")?;
    Ok((connection, pid))
}

/// Reads a 2026-07-28 `subscriptions/listen` stream until a `tools/list_changed` after which
/// `peer` lists `tool`, or `limit` passes; whether it came. (A notification can also come from
/// an earlier listing of the same change, so each one is checked against the list.)
pub async fn hears_tool_listed(
    subscription: &mut rmcp::service::Subscription,
    peer: &rmcp::Peer<RoleClient>,
    tool: &str,
    limit: Duration,
) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            match subscription.next().await {
                Ok(Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))) => {
                    let listed = peer.list_all_tools().await.unwrap_or_default();
                    if listed.iter().any(|t| t.name == tool) {
                        return true;
                    }
                }
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Polls `f` every 100 ms until it holds or `limit` has passed; whether it held. For what a
/// process does on its own after a while (a reload applied, a saga undone), never for timing.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// An rmcp client (protocol 2025-11-25) of the streamable HTTP endpoint at `url` (a server's,
/// or a load balancer's in front of several).
pub async fn connect_url(url: &str) -> anyhow::Result<Client> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()),
    );
    Ok(
        ().serve_with_lifecycle(transport, Lifecycle::Initialize.mode())
            .await?,
    )
}

/// A server process serving streamable HTTP; killed on drop.
#[derive(Debug)]
pub struct HttpServer {
    /// The child process.
    pub child: Child,
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// Every stderr line so far, for tests that count what the server logged.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    /// Starts `bin --http 127.0.0.1:0 args...` and waits for the line naming its URL.
    pub async fn start(bin: &str, args: &[String]) -> anyhow::Result<Self> {
        Self::start_with_env(bin, args, &HashMap::new()).await
    }

    /// Like [`HttpServer::start`] with extra environment variables.
    pub async fn start_with_env(
        bin: &str,
        args: &[String],
        env: &HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        let mut full = vec!["--http".to_owned(), "127.0.0.1:0".to_owned()];
        full.extend(args.iter().cloned());
        Self::spawn(bin, &full, env).await
    }

    /// Starts `bin` with exactly `args` (which must make it serve HTTP on 127.0.0.1, port 0 is
    /// fine) and waits for the line naming its URL. It logs at `RUST_LOG=info` unless `env`
    /// sets `RUST_LOG`, which then must let the `listening on` line of `kit::serve::http`
    /// through.
    pub async fn spawn(
        bin: &str,
        args: &[String],
        env: &HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        let path = bin_path(bin)?;
        // `RUST_LOG=info` unless `env` names its own level (a bench runs quieter).
        let mut child = Command::new(path)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {bin}"))?;
        let stderr = child.stderr.take().context("stderr piped")?;
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                // kit's serve logs exactly one "listening on http://ADDR/mcp" line.
                if let Some(start) = line.find("listening on http://") {
                    let rest = &line[start + "listening on ".len()..];
                    let end = rest
                        .find(|c: char| c.is_whitespace() || c == '"')
                        .unwrap_or(rest.len());
                    return Ok::<_, anyhow::Error>(rest[..end].to_owned());
                }
            }
            bail!("{bin} exited before listening")
        })
        .await
        .context("waiting for the server to listen")??;
        // Keep draining stderr so the child never blocks on a full pipe, and keep the lines.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(Self { child, url, stderr })
    }

    /// `mcp-orchestrator serve --config CONFIG --http 127.0.0.1:0`, with `env` besides.
    pub async fn orchestrator(
        config: &std::path::Path,
        env: &HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        let args = [
            "serve".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
            "--http".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        Self::spawn("mcp-orchestrator", &args, env).await
    }

    /// `http://127.0.0.1:PORT`, where `/mcp` and the routes beside it (`/metrics`,
    /// `/readyz`, ...) are.
    pub fn base(&self) -> String {
        self.url.trim_end_matches("/mcp").to_owned()
    }

    /// The address it listens on.
    pub fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        let base = self.base();
        base.trim_start_matches("http://")
            .parse()
            .with_context(|| format!("{base} is not an address"))
    }

    /// The sum of a metric's series on its `GET /metrics` (with `token` if given), over the
    /// lines whose labels contain `label` (`""` for all of them).
    pub async fn metric(
        &self,
        token: Option<&str>,
        name: &str,
        label: &str,
    ) -> anyhow::Result<f64> {
        let mut request = reqwest::Client::new().get(format!("{}/metrics", self.base()));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let text = request.send().await?.error_for_status()?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.split([' ', '{']).next() == Some(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Connects an rmcp client (protocol 2025-11-25), with a bearer token if given.
    pub async fn connect(&self, token: Option<&str>) -> anyhow::Result<Client> {
        self.connect_with(token, Lifecycle::Initialize).await
    }

    /// Connects an rmcp client with the given lifecycle.
    pub async fn connect_with(
        &self,
        token: Option<&str>,
        lifecycle: Lifecycle,
    ) -> anyhow::Result<Client> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url.clone());
        if let Some(t) = token {
            config = config.auth_header(t.to_owned());
        }
        let transport = StreamableHttpClientTransport::from_config(config);
        Ok(().serve_with_lifecycle(transport, lifecycle.mode()).await?)
    }

    /// Stderr lines so far that contain every one of `needles`.
    pub fn count_lines(&self, needles: &[&str]) -> usize {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Sends a signal (`"USR1"`, `"TERM"`, ...) to the server.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("server already exited")?;
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
        Ok(())
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .context("server did not exit after SIGTERM")??;
        Ok(())
    }
}

/// Anything that can call tools: a connected client of any handler type, or its peer.
pub trait ToolCaller {
    /// The peer to send requests through.
    fn peer(&self) -> &rmcp::Peer<RoleClient>;
}

impl<H: rmcp::ClientHandler> ToolCaller for RunningService<RoleClient, H> {
    fn peer(&self) -> &rmcp::Peer<RoleClient> {
        RunningService::peer(self)
    }
}

/// A bare peer, cloneable into tasks.
#[derive(Debug, Clone)]
pub struct PeerClient(pub rmcp::Peer<RoleClient>);

impl ToolCaller for PeerClient {
    fn peer(&self) -> &rmcp::Peer<RoleClient> {
        &self.0
    }
}

/// Calls a tool with JSON arguments.
pub async fn call(
    client: &impl ToolCaller,
    tool: &str,
    args: Value,
) -> anyhow::Result<CallToolResult> {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    Ok(client.peer().call_tool(params).await?)
}

/// Calls a tool and returns its structured content, failing on a tool error.
pub async fn call_ok(client: &impl ToolCaller, tool: &str, args: Value) -> anyhow::Result<Value> {
    let result = call(client, tool, args).await?;
    if result.is_error == Some(true) {
        bail!("{tool} failed: {}", text_of(&result));
    }
    result.structured_content.clone().ok_or_else(|| {
        anyhow!(
            "{tool} returned no structured content: {}",
            text_of(&result)
        )
    })
}

/// Reads the orchestrator's `orchestrator://status` resource as JSON.
pub async fn read_status(client: &impl ToolCaller) -> anyhow::Result<Value> {
    let r = client
        .peer()
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "orchestrator://status",
        ))
        .await?;
    let text = r
        .contents
        .into_iter()
        .find_map(|c| match c {
            rmcp::model::ResourceContents::TextResourceContents { text, .. } => Some(text),
            _ => None,
        })
        .context("orchestrator://status has no text")?;
    serde_json::from_str(&text).context("orchestrator://status is not JSON")
}

/// The text content of a result, joined.
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `_meta.errorKind` of a failed result.
pub fn error_kind(result: &CallToolResult) -> Option<String> {
    kit::ToolError::from_call_tool_result(result).map(|e| e.kind.as_str().to_owned())
}
