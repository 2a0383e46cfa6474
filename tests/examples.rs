//! Runs every program in `examples/` (the README's `cargo run --example` commands) and checks
//! that the figures each prints prove its pattern. Timings are compared with each other (chained
//! slower than together, a cache hit faster than a miss), never with fixed thresholds.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as AnyValue,
};
use prost::Message as _;
use testkit::bin_path;

/// How long one example may run (each takes a few seconds; the machine may be busy).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Path of `target/<profile>/examples/<name>`, built (with the servers) when missing or older than
/// its source. Cargo builds a package's examples for its own tests only, not for this package's.
fn example_path(name: &str) -> anyhow::Result<PathBuf> {
    for server in ["sql-mcp-server", "cosmos-mcp-server", "rest-mcp-server"] {
        bin_path(server)?;
    }
    let profile_dir = kit::binaries::dir()?;
    let path = kit::binaries::path_in(&profile_dir.join("examples"), name);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = root.join("examples").join(format!("{name}.rs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&path).is_none_or(|built| modified(&source).is_some_and(|src| src > built)) {
        // Concurrent test processes wait on cargo's own lock; the later ones find nothing to do.
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--workspace",
                "--bins",
                "--examples",
                "--manifest-path",
            ])
            .arg(root.join("Cargo.toml"))
            .args(profile_dir.ends_with("release").then_some("--release"))
            .status()
            .context("running cargo build")?;
        anyhow::ensure!(
            status.success(),
            "cargo build --workspace --examples failed"
        );
    }
    anyhow::ensure!(path.is_file(), "{} was not built", path.display());
    Ok(path)
}

/// Runs example `name` with extra environment; returns its stdout and stderr. Fails unless it
/// exits 0 within [`TIMEOUT`].
async fn run(name: &str, env: &[(&str, &str)]) -> anyhow::Result<(String, String)> {
    let mut command = tokio::process::Command::new(example_path(name)?);
    command.kill_on_drop(true).env("RUST_BACKTRACE", "0");
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let started = Instant::now();
    let out = tokio::time::timeout(TIMEOUT, command.output())
        .await
        .with_context(|| format!("example {name} ran past {TIMEOUT:?}"))??;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    if !out.status.success() {
        bail!(
            "example {name} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
    }
    eprintln!("example {name}: {:?}\n{stdout}", started.elapsed());
    Ok((stdout, stderr))
}

/// The number right after `key` in `text` (`"12.5"` in `"wall: 12.5 ms"` after `"wall:"`).
fn num(text: &str, key: &str) -> Option<f64> {
    let rest = text[text.find(key)? + key.len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The whitespace-separated fields of the lines of `text` starting with `prefix`.
fn rows<'a>(text: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.split_whitespace().collect())
        .collect()
}

fn field(row: &[&str], i: usize) -> f64 {
    row.get(i).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

#[tokio::test]
async fn parallel_steps_run_together_faster_than_chained() -> anyhow::Result<()> {
    let (out, _) = run("parallel", &[]).await?;
    let chained = num(&out, "chained:").context("chained time")?;
    let together = num(&out, "together:").context("together time")?;
    assert!(together < chained, "{out}");
    assert!(!out.contains("error: true"), "{out}");
    Ok(())
}

#[tokio::test]
async fn sequential_steps_start_after_the_step_they_read() -> anyhow::Result<()> {
    let (out, _) = run("sequential", &[]).await?;
    let steps: Vec<_> = ["order ", "product ", "stock "]
        .iter()
        .flat_map(|p| rows(&out, p))
        .collect();
    assert_eq!(steps.len(), 3, "{out}");
    for pair in steps.windows(2) {
        let (prev_end, next_start) = (field(&pair[0], 2) + field(&pair[0], 3), field(&pair[1], 2));
        assert!(
            next_start >= prev_end - 1.0,
            "{} starts before {} ends: {out}",
            pair[1][0],
            pair[0][0]
        );
    }
    assert!(steps.iter().all(|s| s.get(4) == Some(&"ok")), "{out}");
    assert!(out.contains("ORD-00042: first product PROD-"), "{out}");
    Ok(())
}

#[tokio::test]
async fn fan_out_is_bounded_by_concurrency_not_by_the_number_of_items() -> anyhow::Result<()> {
    let (out, _) = run("fan_out", &[]).await?;
    let mut walls = Vec::new();
    for n in [10.0, 50.0] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("N={n}:")))
            .context("a line per N")?;
        let wall = num(line, "fan-out").context("wall time")?;
        assert_eq!(
            num(line, "wall for"),
            Some(n),
            "one call per customer: {line}"
        );
        assert_eq!(
            num(line, "calls ("),
            Some(n),
            "every customer enriched: {line}"
        );
        assert!(
            wall < num(line, "one by one:").context("serial time")?,
            "{line}"
        );
        walls.push(wall);
    }
    assert!(
        walls[0] < walls[1],
        "50 items take more waves than 10: {out}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cached_composite_hits_until_a_write_invalidates_it() -> anyhow::Result<()> {
    let (out, _) = run("caching", &[]).await?;
    let calls = rows(&out, "call ");
    let outcomes: Vec<&str> = calls.iter().map(|c| c[2]).collect();
    assert_eq!(outcomes, ["miss", "hit", "miss"], "{out}");
    let (first, hit, third) = (
        field(&calls[0], 3),
        field(&calls[1], 3),
        field(&calls[2], 3),
    );
    assert!(hit < first && hit < third, "{out}");
    assert!(
        field(&calls[2], 6) > field(&calls[0], 6),
        "the new sale is in the revenue: {out}"
    );
    assert!(num(&out, "misses,").is_some_and(|n| n >= 1.0), "{out}");
    Ok(())
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_closes_after_the_server_heals() -> anyhow::Result<()> {
    let (out, _) = run("circuit_breaker", &[]).await?;
    let calls = rows(&out, "#");
    let micros = |phase: &str| -> Vec<f64> {
        let mut v: Vec<f64> = calls
            .iter()
            .filter(|c| c[1] == phase)
            .map(|c| field(c, 3))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (failing, open) = (micros("failing"), micros("open"));
    assert!(!failing.is_empty() && !open.is_empty(), "{out}");
    assert!(
        calls
            .iter()
            .filter(|c| c[1] == "open")
            .all(|c| c[2] == "circuit_open"),
        "{out}"
    );
    assert!(
        open[open.len() / 2] < failing[failing.len() / 2],
        "fast failures while open: {out}"
    );
    assert!(
        calls.iter().any(|c| c[1] == "probe" && c[2] == "ok"),
        "{out}"
    );
    assert!(
        out.contains("closed -> open") && out.contains("half_open -> closed"),
        "{out}"
    );
    assert!(out.contains("opened: true, closed again: true"), "{out}");
    Ok(())
}

#[tokio::test]
async fn tracing_prints_a_trace_id_every_server_logged() -> anyhow::Result<()> {
    let (out, err) = run("tracing", &[("RUST_LOG", "info")]).await?;
    let id = trace_id(&out)?;
    for server in ["sql", "cosmos", "rest"] {
        assert!(
            err.lines()
                .any(|l| l.contains(&id) && l.contains(&format!("\"server\":\"{server}\""))),
            "no log line of {server} names {id}:\n{err}"
        );
    }
    assert_eq!(rows(&out, "    step ").len(), 3, "{out}");
    assert!(out.contains("not exported"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tracing_exports_the_printed_trace_from_every_process() -> anyhow::Result<()> {
    let (endpoint, store) = start_receiver().await?;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let (out, _) = run("tracing", &env).await?;
    let id = trace_id(&out)?;
    assert!(out.contains(&format!("exported to {endpoint}")), "{out}");
    let services = [
        "tracing-example",
        "sql-mcp-server",
        "cosmos-mcp-server",
        "rest-mcp-server",
    ];
    let started = Instant::now();
    loop {
        let seen: Vec<String> = store
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .filter(|(_, trace)| *trace == id)
            .map(|(service, _)| service.clone())
            .collect();
        if services.iter().all(|s| seen.iter().any(|x| x == s)) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "spans of {id} came only from {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn own_composite_loads_rejects_a_bad_reference_and_falls_back() -> anyhow::Result<()> {
    let (out, _) = run("own_composite", &[]).await?;
    assert!(
        out.contains("valid, composites: customer_snapshot"),
        "{out}"
    );
    assert!(
        out.contains("rejected: orchestrator.composites.customer_snapshot.steps.stock.args.productId: unknown reference `ordrs`"),
        "{out}"
    );
    let behavior = rows(&out, "  step behavior");
    let outcomes: Vec<&str> = behavior.iter().map(|r| r[3]).collect();
    assert_eq!(outcomes, ["ok", "fallback"], "{out}");
    assert!(
        out.contains("\"churnRisk\":\"unknown\""),
        "the fallback stands in: {out}"
    );
    assert_eq!(out.matches("\"name\":\"Maya Rossi\"").count(), 2, "{out}");
    Ok(())
}

/// The trace id the tracing example printed: 32 hex digits, not all zero.
fn trace_id(out: &str) -> anyhow::Result<String> {
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("trace id: "))
        .context("no trace id printed")?
        .trim();
    anyhow::ensure!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) && id.contains(|c| c != '0'),
        "bad trace id {id}"
    );
    Ok(id.to_owned())
}

/// (service, trace id) of every span received.
type Store = Arc<Mutex<Vec<(String, String)>>>;

/// An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1; returns its base URL and what it got.
async fn start_receiver() -> anyhow::Result<(String, Store)> {
    async fn receive(State(store): State<Store>, body: Bytes) -> StatusCode {
        let Ok(request) = ExportTraceServiceRequest::decode(body) else {
            return StatusCode::BAD_REQUEST;
        };
        let mut spans = Vec::new();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(
                    |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(AnyValue::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    },
                )
                .unwrap_or_default();
            for span in resource.scope_spans.iter().flat_map(|s| s.spans.iter()) {
                let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                spans.push((service.clone(), trace));
            }
        }
        if let Ok(mut store) = store.lock() {
            store.extend(spans);
        }
        StatusCode::OK
    }
    let store = Store::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), store))
}
