//! Opens one connection to an upstream, over stdio (a child process) or streamable HTTP.

use std::{collections::HashMap, sync::Arc, time::Duration};

use rmcp::{
    model::ProtocolVersion,
    service::{ClientLifecycleMode, ClientServiceExt, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

use super::{
    child::{self, AnswersOverCap, ChildTransport},
    client::UpstreamClient,
};
use crate::config::{Era, ServerSpec, Transport};

/// How long one connection attempt (spawn or connect, plus the MCP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A live connection.
pub type Running = RunningService<rmcp::RoleClient, UpstreamClient>;

/// Why a connection attempt failed; its text is what status shows (after masking secrets).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Spawn, connect and handshake took longer than [`CONNECT_TIMEOUT`].
    #[error("no MCP handshake within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The child process could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The configured command.
        command: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A configured HTTP header cannot be sent.
    #[error("header `{name}`: {why}")]
    Header {
        /// The header's name as configured.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
    /// The server did not complete the MCP handshake.
    #[error("MCP handshake with {peer} failed: {detail}")]
    Handshake {
        /// The command (quoted) or URL.
        peer: String,
        /// What went wrong.
        detail: String,
    },
}

/// Connects to `spec` with `handler` as the client side. A stdio upstream's answers over the
/// line cap are noted in `over_cap`.
pub async fn connect(
    spec: &ServerSpec,
    handler: UpstreamClient,
    over_cap: Arc<AnswersOverCap>,
) -> Result<Running, ConnectError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_in_era(spec, handler, over_cap))
        .await
        .map_err(|_| ConnectError::Timeout(CONNECT_TIMEOUT))?
}

/// Connects in the newest era the server supports. rmcp falls back to `initialize` when a
/// server says it does not know `server/discover`; some 2025-11-25 servers answer it with
/// something else (an empty result), which fails the handshake: those are connected again with
/// `initialize`.
async fn connect_in_era(
    spec: &ServerSpec,
    handler: UpstreamClient,
    over_cap: Arc<AnswersOverCap>,
) -> Result<Running, ConnectError> {
    match connect_inner(spec, handler.clone(), over_cap.clone(), spec.era).await {
        Err(ConnectError::Handshake { detail, .. }) if spec.era == Era::Auto => {
            tracing::info!(
                server = %spec.name,
                %detail,
                "server/discover failed; connecting again with initialize (2025-11-25)"
            );
            connect_inner(spec, handler, over_cap, Era::Initialize).await
        }
        other => other,
    }
}

async fn connect_inner(
    spec: &ServerSpec,
    handler: UpstreamClient,
    over_cap: Arc<AnswersOverCap>,
    era: Era,
) -> Result<Running, ConnectError> {
    match &spec.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).envs(env).current_dir(cwd);
            let spawn_error = |source| ConnectError::Spawn {
                command: command.clone(),
                source,
            };
            let process = child::spawn(cmd).map_err(spawn_error)?;
            let (transport, stderr) =
                ChildTransport::new(&spec.name, process, spec.limits.max_message_bytes, over_cap)
                    .map_err(spawn_error)?;
            if let Some(stderr) = stderr {
                crate::limits::stderr::spawn_relay(spec.name.clone(), stderr, spec.stderr);
            }
            let transport = transport.counting_progress_in(handler.relay.clone());
            handler
                .serve_with_lifecycle(transport, lifecycle(era))
                .await
                .map_err(|e| ConnectError::Handshake {
                    peer: format!("`{command}`"),
                    detail: e.to_string(),
                })
        }
        Transport::Http { url, headers } => {
            let mut custom = HashMap::new();
            for (k, v) in headers {
                let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                    ConnectError::Header {
                        name: k.clone(),
                        why: e.to_string(),
                    }
                })?;
                let value = http::HeaderValue::from_str(v).map_err(|_| ConnectError::Header {
                    name: k.clone(),
                    why: "its value is not valid in HTTP".into(),
                })?;
                custom.insert(name, value);
            }
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .build()
                .map_err(|e| ConnectError::Client(e.to_string()))?;
            let config =
                StreamableHttpClientTransportConfig::with_uri(url.clone()).custom_headers(custom);
            let transport = StreamableHttpClientTransport::with_client(
                super::http::TracedClient(client),
                config,
            );
            handler
                .serve_with_lifecycle(transport, lifecycle(era))
                .await
                .map_err(|e| ConnectError::Handshake {
                    peer: url.clone(),
                    detail: e.to_string(),
                })
        }
    }
}

/// How the handshake goes for `era`: the newest version first, the 2025-11-25 `initialize` for a
/// server that does not know `server/discover`.
fn lifecycle(era: Era) -> ClientLifecycleMode {
    let modern = vec![ProtocolVersion::V_2026_07_28];
    match era {
        Era::Auto => ClientLifecycleMode::Auto {
            preferred_versions: modern,
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        },
        Era::Initialize => ClientLifecycleMode::Initialize,
        Era::Discover => ClientLifecycleMode::Discover {
            preferred_versions: modern,
        },
    }
}
