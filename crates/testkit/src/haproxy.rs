//! A real HAProxy (Debian's `haproxy`) in front of orchestrator instances, for the scale-out
//! tests and bench. It runs the repository's `deploy/haproxy.cfg` as it is, with the addresses
//! in the environment the file reads.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A running HAProxy; killed on drop.
#[derive(Debug)]
pub struct Haproxy {
    child: Child,
    /// Where agents connect: `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Haproxy {
    /// Starts `haproxy -db -f deploy/haproxy.cfg` balancing over `a` and `b`, and waits until at
    /// least one of them passes its `/readyz` check through the balancer.
    pub async fn start(a: SocketAddr, b: SocketAddr) -> anyhow::Result<Self> {
        let program = which("haproxy")
            .context("haproxy is not installed (`apt-get install haproxy`; .ci/run installs it)")?;
        let port = free_port()?;
        let config = workspace_root().join("deploy/haproxy.cfg");
        let child = Command::new(program)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .env("LB_BIND", format!("127.0.0.1:{port}"))
            .env("ORCH_A", a.to_string())
            .env("ORCH_B", b.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy")?;
        let lb = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .get(format!("{}/readyz", lb.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(lb);
            }
            if Instant::now() > deadline {
                bail!("haproxy on port {port} did not pass a ready instance within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:PORT/mcp` through the balancer.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// Stops it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// A port free on 127.0.0.1 now (the OS picks it; another process could take it before it is
/// used, which a test run on one machine does not do).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}
