//! The outage: the flaky server run by the soak itself over streamable HTTP, so it can be
//! fully down for a while. Started on a free loopback port before the orchestrator (which
//! reaches it at `http://127.0.0.1:PORT/mcp`), killed with SIGKILL `--cosmos-down-after-secs`
//! into the calls, kept down `--cosmos-down-secs` (its port refuses connections), started again
//! on the same port with the same data and flags, and stopped once the orchestrator has exited.

use std::{
    fmt::Write,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::{
    process::{Child, Command},
    sync::watch,
};

use crate::{
    goodput::{OutageCalls, Phase, Span},
    mix::Kind,
    setup::{FLAKY, Role},
    status::{AroundOutage, Transition},
    watch::round,
};

/// How long a (re)started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The server process and how to start it again.
#[derive(Debug)]
pub struct HttpServer {
    /// Its binary.
    bin: PathBuf,
    /// Its arguments, `--http 127.0.0.1:PORT` included.
    args: Vec<String>,
    /// The port it listens on, the same after a restart (the orchestrator's URL names it).
    port: u16,
    /// Its stderr, appended over restarts.
    log: PathBuf,
    /// The running process; `None` while down.
    child: Option<Child>,
}

impl HttpServer {
    /// Starts `bin` with `args` on a free loopback port, and waits until it accepts connections.
    pub async fn start(bin: PathBuf, args: Vec<String>, log: PathBuf) -> anyhow::Result<Self> {
        // Bound and released at once: a short race, but nothing else on this machine picks
        // ports in this range on purpose.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut args = args;
        args.extend(["--http".to_owned(), format!("127.0.0.1:{port}")]);
        let mut server = Self {
            bin,
            args,
            port,
            log,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// The URL the orchestrator reaches it at.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, kit::serve::MCP_PATH)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the process and waits until its port accepts connections.
    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) before accepting connections on port {} (its log: {})",
                    self.bin.display(),
                    self.port,
                    self.log.display()
                );
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} did not accept connections on port {} within {READY_TIMEOUT:?}",
                    self.bin.display(),
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Whether the process runs now.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops it for good (at the end of the run).
    pub async fn stop(&mut self) {
        let _ = self.kill().await;
    }
}

/// When to take the server down.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Into the calls.
    pub after: Duration,
    /// For how long.
    pub down_for: Duration,
}

/// What happened, in seconds since the calls began.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The port it listened on.
    pub port: u16,
    /// When it was killed; `None`: the calls were done first.
    pub down_at: Option<f64>,
    /// When it was started again.
    pub restarted_at: Option<f64>,
    /// When its port accepted connections again: the end of the outage.
    pub back_at: Option<f64>,
    /// Whether the calls were done before the planned end of the outage (then it was started
    /// again at once).
    pub cut_short: bool,
    /// Why killing or restarting failed, if it did.
    pub error: Option<String>,
}

impl Record {
    /// The outage as a span of the run, once it is over.
    pub fn span(&self) -> Option<Span> {
        Some(Span {
            from: self.down_at?,
            to: self.back_at?,
        })
    }

    /// As JSON (without the calls; see [`Figures`]).
    pub fn to_json(&self, plan: Plan) -> Value {
        json!({
            "plannedAfterSecs": plan.after.as_secs_f64(),
            "plannedDownSecs": plan.down_for.as_secs_f64(),
            "port": self.port,
            "downAtSecs": self.down_at.map(|x| round(x, 3)),
            "restartedAtSecs": self.restarted_at.map(|x| round(x, 3)),
            "backAtSecs": self.back_at.map(|x| round(x, 3)),
            "downSecs": self.span().map(|s| round(s.secs(), 3)),
            "cutShort": self.cut_short,
            "error": self.error,
        })
    }
}

/// Takes `server` down as `plan` says, counting from `began`; `done` turning true (the calls
/// are done) skips an outage not begun yet and ends one under way at once. Returns the
/// server, running again unless a restart failed.
pub async fn run(
    mut server: HttpServer,
    plan: Plan,
    began: Instant,
    mut done: watch::Receiver<bool>,
) -> (HttpServer, Record) {
    let mut record = Record {
        port: server.port(),
        ..Record::default()
    };
    let at = || round(began.elapsed().as_secs_f64(), 6);
    let finished = |done: &mut watch::Receiver<bool>| {
        let mut done = done.clone();
        async move {
            let _ = done.wait_for(|d| *d).await;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep_until((began + plan.after).into()) => {}
        _ = finished(&mut done) => return (server, record),
    }
    record.down_at = Some(at());
    if let Err(e) = server.kill().await {
        record.error = Some(format!("kill: {e:#}"));
        return (server, record);
    }
    tokio::select! {
        _ = tokio::time::sleep(plan.down_for) => {}
        _ = finished(&mut done) => record.cut_short = true,
    }
    record.restarted_at = Some(at());
    match server.spawn().await {
        Ok(()) => record.back_at = Some(at()),
        Err(e) => record.error = Some(format!("restart: {e:#}")),
    }
    (server, record)
}

/// The outage's figures for the report: when, the calls around it, the breaker around it.
#[derive(Debug)]
pub struct Figures<'a> {
    /// What was asked.
    pub plan: Plan,
    /// What happened.
    pub record: &'a Record,
    /// The flaky server's pass-through calls around it, once it was over.
    pub calls: Option<OutageCalls>,
    /// The breaker around it, as read.
    pub breaker: AroundOutage,
    /// The breaker's own transitions, when status carries them (all of the run).
    pub transitions: &'a [Transition],
}

/// Transitions from the breaker's own list printed: those from a second before the outage on.
const TEXT_TRANSITIONS: usize = 20;

impl Figures<'_> {
    /// Where `at` falls: `down+X s` from the kill while down, `back+X s` from the return after.
    fn relative(span: Span, at: f64) -> String {
        if at < span.to {
            format!("down{:+.2} s", at - span.from)
        } else {
            format!("back{:+.2} s", at - span.to)
        }
    }

    fn transitions_around(&self, span: Span) -> impl Iterator<Item = &Transition> {
        self.transitions
            .iter()
            .filter(move |t| t.at >= span.from - 1.0)
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        let mut out = self.record.to_json(self.plan);
        let (Some(span), Some(calls)) = (self.record.span(), &self.calls) else {
            return out;
        };
        let b = &self.breaker;
        let relative = |mut v: Value, at: f64| {
            v["sinceDownSecs"] = json!(round(at - span.from, 3));
            v["sinceReturnSecs"] = json!(round(at - span.to, 3));
            v
        };
        out["calls"] = calls.to_json();
        out["breaker"] = json!({
            "source": "orchestrator://status read every 100 ms",
            "openSecsAfterDown": b.open_after_down.map(|x| round(x, 3)),
            "callsSentBeforeSeenOpen": b.open_after_down.map(|x| calls.sent_within(x)),
            "opensDuring": b.opens_during,
            "closedSecsAfterReturn": b.closed_after_back.map(|x| round(x, 3)),
            "opensAfterReturn": b.opens_after_back,
            "changes": b.points.iter().map(|p| relative(p.to_json(), p.at)).collect::<Vec<_>>(),
            "transitionList": self.transitions_around(span)
                .map(|t| relative(t.to_json(), t.at))
                .collect::<Vec<_>>(),
        });
        out
    }

    /// As text, appended to `o`.
    pub fn to_text(&self, o: &mut String) {
        let r = self.record;
        let when = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("+{x:.2} s"));
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "outage of {FLAKY} (HTTP on 127.0.0.1:{}, run by the soak; planned {:.1} s down, {:.1} s into the calls): SIGKILL at {}, started again at {}, accepting connections at {}{}{}",
            r.port,
            self.plan.down_for.as_secs_f64(),
            self.plan.after.as_secs_f64(),
            when(r.down_at),
            when(r.restarted_at),
            when(r.back_at),
            r.span()
                .map_or(String::new(), |s| format!(": down {:.2} s", s.secs())),
            if r.cut_short {
                " (cut short: the calls were done)"
            } else {
                ""
            }
        );
        if let Some(e) = &r.error {
            let _ = writeln!(o, "  {e}");
        }
        let (Some(span), Some(calls)) = (r.span(), &self.calls) else {
            let _ = writeln!(o, "  no complete outage during the calls");
            return;
        };
        let phase = |p: Phase| {
            let c = calls.by_phase[p as usize];
            format!("{} {}/{} ok", p.label(), c.ok, c.calls)
        };
        let _ = writeln!(
            o,
            "  calls to {} by when they were sent: {}, {}, {}",
            Kind::CosmosBehavior.tool(),
            phase(Phase::Before),
            phase(Phase::During),
            phase(Phase::After)
        );
        let failures: Vec<String> = calls
            .failures_during
            .iter()
            .map(|(label, n)| format!("{label} {n}"))
            .collect();
        let _ = writeln!(
            o,
            "  sent during the outage: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; {}",
            calls.during_ms(0.5),
            calls.during_ms(0.99),
            calls.latency_during.max() as f64 / 1000.0,
            if failures.is_empty() {
                "no failure".to_owned()
            } else {
                failures.join(", ")
            }
        );
        let _ = writeln!(
            o,
            "  for comparison, {} pass-through calls sent during the outage: p50 {:.2} ms, p99 {:.2} ms",
            Role::Healthy.server(),
            calls.healthy_during_ms(0.5),
            calls.healthy_during_ms(0.99)
        );
        let _ = writeln!(
            o,
            "  after the return: {} failed before the first success{}",
            calls.failed_after_return,
            calls
                .first_success
                .map_or(" (none succeeded)".to_owned(), |(sent, answered)| format!(
                    ", which was sent {:.3} s and answered {:.3} s after it",
                    sent - span.to,
                    answered - span.to
                ))
        );
        let b = &self.breaker;
        let opened = match b.open_after_down {
            Some(x) => format!(
                "seen open {x:.2} s after the kill ({} calls in flight then, {} sent in the outage before that reading)",
                calls.in_flight_at_down,
                calls.sent_within(x)
            ),
            None => "never seen open during the outage".to_owned(),
        };
        let closed = match (b.closed_after_back, b.opens_after_back) {
            (Some(x), Some(n)) => {
                format!("seen closed {x:.2} s after the return, after {n} more opens")
            }
            _ => "not seen closed after the return".to_owned(),
        };
        let _ = writeln!(
            o,
            "  breaker of {FLAKY} (status read every 100 ms): {opened}; opens during the outage {} (a failed probe opens it again); {closed}",
            b.opens_during,
        );
        if self.transitions.is_empty() {
            let moves: Vec<String> = b
                .points
                .iter()
                .map(|p| {
                    format!(
                        "{} {} ({} opens)",
                        Self::relative(span, p.at),
                        p.state,
                        p.opens
                    )
                })
                .collect();
            let _ = writeln!(o, "    as read: {}", moves.join(", "));
        } else {
            for t in self.transitions_around(span).take(TEXT_TRANSITIONS) {
                let _ = writeln!(
                    o,
                    "    {} {} -> {}: {}",
                    Self::relative(span, t.at),
                    t.from,
                    t.to,
                    t.reason
                );
            }
        }
    }
}
