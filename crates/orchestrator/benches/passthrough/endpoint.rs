//! One way of reaching the tools: a connected client, the processes that serve it, and the
//! measurements made through it.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use hdrhistogram::Histogram;
use rmcp::{
    ServiceExt,
    model::{CallToolRequestParams, CallToolResult},
    transport::{ConfigureCommandExt, TokioChildProcess},
};
use serde_json::Value;
use testkit::{Client, HttpServer};

use crate::procs::{self, Usage, Used};

/// A process on an endpoint's path, measured by its pid.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    /// What it is on the path: `orchestrator`, `relay`, `sql`, `cosmos`, `rest` or `client`.
    pub role: &'static str,
    pub pid: u32,
}

/// A connected client and the processes behind it.
pub struct Endpoint {
    pub label: &'static str,
    client: Client,
    /// What comes before a server's own tool name here: `sql__` through the orchestrator.
    prefix: &'static str,
    /// The processes measured per call: the path's own, and this bench's client.
    pub procs: Vec<Proc>,
    /// An HTTP front's process (killed on drop); a stdio child belongs to the client instead.
    http: Option<HttpServer>,
}

impl Endpoint {
    /// Starts `program args...` as a stdio MCP server (its role on the path is `role`) and
    /// connects to it with protocol 2025-11-25.
    pub async fn stdio(
        label: &'static str,
        role: &'static str,
        prefix: &'static str,
        program: &Path,
        args: &[String],
    ) -> anyhow::Result<Self> {
        let transport =
            TokioChildProcess::new(tokio::process::Command::new(program).configure(|c| {
                c.args(args).env("RUST_LOG", "warn");
            }))
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = transport.id().context("the child has no pid")?;
        let client = ()
            .serve(transport)
            .await
            .with_context(|| format!("connecting to {label} over stdio"))?;
        Ok(Self::new(label, client, prefix, Proc { role, pid }, None))
    }

    /// Starts `mcp-orchestrator args...` (which must serve HTTP on 127.0.0.1, in front of the SQL
    /// server as `sql`) and connects to it with rmcp's streamable HTTP client, protocol
    /// 2025-11-25.
    ///
    /// At `RUST_LOG=warn`, as the other paths, with only the line naming its URL let through:
    /// at `info` it would log a line per agent call.
    pub async fn http(
        label: &'static str,
        orchestrator: &Path,
        args: &[String],
    ) -> anyhow::Result<Self> {
        let env = HashMap::from([(
            "RUST_LOG".to_owned(),
            "warn,kit::serve::http=info".to_owned(),
        )]);
        let bin = orchestrator
            .file_name()
            .and_then(|n| n.to_str())
            .context("the orchestrator's path names no file")?;
        let server = HttpServer::spawn(bin, args, &env)
            .await
            .with_context(|| format!("starting {label}"))?;
        let pid = server.child.id().context("the HTTP front has no pid")?;
        let client = server.connect(None).await?;
        let front = Proc {
            role: "orchestrator",
            pid,
        };
        Ok(Self::new(label, client, "sql__", front, Some(server)))
    }

    fn new(
        label: &'static str,
        client: Client,
        prefix: &'static str,
        first: Proc,
        http: Option<HttpServer>,
    ) -> Self {
        let client_proc = Proc {
            role: "client",
            pid: std::process::id(),
        };
        Self {
            label,
            client,
            prefix,
            procs: vec![first, client_proc],
            http,
        }
    }

    /// Adds the child of the path's first process that runs `bin`, as `role`; it may take a
    /// moment to appear.
    pub async fn adopt(mut self, role: &'static str, bin: &str) -> anyhow::Result<Self> {
        let parent = self.procs[0].pid;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = procs::child_pid(parent, bin) {
                self.procs.push(Proc { role, pid });
                return Ok(self);
            }
            if Instant::now() >= deadline {
                bail!("{}: no {bin} child of pid {parent}", self.label);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pid of the process playing `role`.
    pub fn pid(&self, role: &str) -> Option<u32> {
        self.procs.iter().find(|p| p.role == role).map(|p| p.pid)
    }

    /// A call of the server tool `tool` (prefixed as this path needs).
    pub fn params(&self, tool: &str, args: Value) -> CallToolRequestParams {
        let params = CallToolRequestParams::new(format!("{}{tool}", self.prefix));
        match args {
            Value::Object(map) => params.with_arguments(map),
            _ => params,
        }
    }

    pub async fn call(&self, params: &CallToolRequestParams) -> anyhow::Result<CallToolResult> {
        Ok(self.client.call_tool(params.clone()).await?)
    }

    /// One call that must succeed.
    pub async fn call_ok(&self, params: &CallToolRequestParams) -> anyhow::Result<CallToolResult> {
        let r = self.call(params).await?;
        if r.is_error == Some(true) {
            bail!(
                "{}: {} failed: {}",
                self.label,
                params.name,
                testkit::text_of(&r)
            );
        }
        Ok(r)
    }

    /// Every tool listed.
    pub async fn list_tools(&self) -> anyhow::Result<Vec<rmcp::model::Tool>> {
        Ok(self.client.list_all_tools().await?)
    }

    /// Waits until the orchestrator lists every tool of `names` (it answers before its upstreams
    /// are listed when one is slow).
    pub async fn wait_for_tools(&self, names: &[&str]) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tools = self.list_tools().await?;
            if names.iter().all(|n| tools.iter().any(|t| t.name == *n)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{} never listed all of {names:?}", self.label);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn usage(&self) -> Option<Vec<Usage>> {
        self.procs.iter().map(|p| procs::usage(p.pid)).collect()
    }

    /// `n` calls, then (when `in_flight` is over 1) `4n` more `in_flight` at a time: caches,
    /// connections and allocators warmed.
    pub async fn warm_up(
        &self,
        params: &CallToolRequestParams,
        n: usize,
        in_flight: usize,
    ) -> anyhow::Result<()> {
        for _ in 0..n {
            self.call_ok(params).await?;
        }
        if in_flight > 1 {
            self.throughput(params, n * 4, in_flight).await?;
        }
        Ok(())
    }

    /// `n` calls one after the other, added to `sample`.
    pub async fn sequential(
        &self,
        params: &CallToolRequestParams,
        n: usize,
        sample: &mut Sample,
    ) -> anyhow::Result<()> {
        let before = self.usage();
        for _ in 0..n {
            let started = Instant::now();
            let r = self.call(params).await?;
            let micros = started.elapsed().as_micros() as u64;
            if r.is_error == Some(true) {
                bail!("{}: {} failed during the run", self.label, params.name);
            }
            sample.hist.saturating_record(micros.max(1));
        }
        if let (Some(before), Some(after)) = (before, self.usage()) {
            sample.usage.resize(before.len(), Used::default());
            for (total, (b, a)) in sample.usage.iter_mut().zip(before.into_iter().zip(after)) {
                total.add(a.since(b));
            }
        }
        Ok(())
    }

    /// `n` calls, `in_flight` at a time; calls per second.
    pub async fn throughput(
        &self,
        params: &CallToolRequestParams,
        n: usize,
        in_flight: usize,
    ) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut calls = stream::iter(0..n)
            .map(|_| self.call(params))
            .buffer_unordered(in_flight);
        let mut errors = 0usize;
        while let Some(r) = calls.next().await {
            if r?.is_error == Some(true) {
                errors += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        if errors > 0 {
            bail!(
                "{}: {errors} tool errors at {in_flight} in flight",
                self.label
            );
        }
        Ok(n as f64 / secs)
    }

    /// Closes the client, then stops an HTTP front (a stdio child ends with its stdin).
    pub async fn close(self) {
        let _ = self.client.cancel().await;
        if let Some(server) = self.http {
            let _ = server.stop().await;
        }
    }
}

/// Sequential calls through one endpoint: their latencies, and what each process used meanwhile.
pub struct Sample {
    pub hist: Histogram<u64>,
    /// Per process of the endpoint, in its order.
    usage: Vec<Used>,
}

/// What one process used per call, on average.
#[derive(Debug, Clone, Copy)]
pub struct PerCall {
    pub cpu_us: f64,
    pub switches: f64,
}

impl Sample {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            usage: Vec::new(),
        })
    }

    /// The latency at quantile `q`, in µs.
    pub fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }

    /// What the process playing `role` on `endpoint` used per call.
    pub fn per_call(&self, endpoint: &Endpoint, role: &str) -> Option<PerCall> {
        let i = endpoint.procs.iter().position(|p| p.role == role)?;
        let u = self.usage.get(i)?;
        let calls = self.hist.len().max(1) as f64;
        Some(PerCall {
            cpu_us: u.cpu.as_secs_f64() * 1e6 / calls,
            switches: u.switches as f64 / calls,
        })
    }

    /// What every upstream server on `endpoint` used per call, summed.
    pub fn upstreams_per_call(&self, endpoint: &Endpoint) -> Option<PerCall> {
        let mut total = PerCall {
            cpu_us: 0.0,
            switches: 0.0,
        };
        for p in &endpoint.procs {
            if matches!(p.role, "sql" | "cosmos" | "rest") {
                let u = self.per_call(endpoint, p.role)?;
                total.cpu_us += u.cpu_us;
                total.switches += u.switches;
            }
        }
        Some(total)
    }
}
