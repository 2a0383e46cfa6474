//! Opens one connection to an upstream, over stdio (a child process) or streamable HTTP.

use std::{collections::HashMap, process::Stdio, time::Duration};

use rmcp::{
    ServiceExt,
    service::RunningService,
    transport::{
        StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

use super::client::UpstreamClient;
use crate::config::{ServerSpec, Transport};

/// How long one connection attempt (spawn or connect, plus the MCP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A live connection.
pub type Running = RunningService<rmcp::RoleClient, UpstreamClient>;

/// Connects to `spec` with `handler` as the client side; the error says what failed, for status.
pub async fn connect(spec: &ServerSpec, handler: UpstreamClient) -> Result<Running, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(spec, handler)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no MCP handshake within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

async fn connect_inner(spec: &ServerSpec, handler: UpstreamClient) -> Result<Running, String> {
    match &spec.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).envs(env).current_dir(cwd);
            // Its own process group: a Ctrl-C in the terminal reaches the orchestrator only,
            // which then closes each child in order instead of all dying mid-call.
            #[cfg(unix)]
            cmd.process_group(0);
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start `{command}`: {e}"))?;
            if let Some(stderr) = stderr {
                crate::limits::stderr::spawn_relay(spec.name.clone(), stderr, spec.stderr);
            }
            handler
                .serve(transport)
                .await
                .map_err(|e| format!("MCP handshake with `{command}` failed: {e}"))
        }
        Transport::Http { url, headers } => {
            let mut custom = HashMap::new();
            for (k, v) in headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| format!("header `{k}`: {e}"))?;
                let value = http::HeaderValue::from_str(v)
                    .map_err(|_| format!("header `{k}` has a value that is not valid in HTTP"))?;
                custom.insert(name, value);
            }
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?;
            let config =
                StreamableHttpClientTransportConfig::with_uri(url.clone()).custom_headers(custom);
            let transport = StreamableHttpClientTransport::with_client(
                super::http::TracedClient(client),
                config,
            );
            handler
                .serve(transport)
                .await
                .map_err(|e| format!("MCP handshake with {url} failed: {e}"))
        }
    }
}
