//! `mcp-orchestrator demo --json` end to end (the CI check of the workshop tour): every section's
//! figures make sense — parallel below sequential, a cache hit below parallel, the breaker opened
//! and closed, partial results with their sources, and the dashboard grew by the new order.

use serde_json::Value;
use testkit::bin_path;

#[test]
fn the_demo_runs_every_section_and_its_figures_make_sense() -> anyhow::Result<()> {
    // The demo starts the bundled servers found next to its own binary.
    for server in ["sql-mcp-server", "cosmos-mcp-server", "rest-mcp-server"] {
        bin_path(server)?;
    }
    let orchestrator = bin_path("mcp-orchestrator")?;
    let out = std::process::Command::new(orchestrator)
        .args(["demo", "--json"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("stdout is not one JSON object ({e}): {stderr}"))?;
    let p = &report["parallel"];
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let (sequential, parallel, cached) = (
        f(&p["sequentialMs"]),
        f(&p["parallelMs"]),
        f(&p["cachedMs"]),
    );
    assert!(sequential >= 1500.0, "three 500 ms calls in a chain: {p}");
    assert!(
        (500.0..1200.0).contains(&parallel),
        "three 500 ms calls together: {p}"
    );
    assert!(parallel < sequential, "{p}");
    assert!(cached < parallel && cached < 100.0, "{p}");
    assert_eq!(p["cacheHit"], true, "{p}");

    let fanout = &report["fanout"];
    let order_sources = fanout["orderDetails"]["sources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(order_sources.len(), 3, "{fanout}");
    for run in fanout["topCustomers"].as_array().into_iter().flatten() {
        assert_eq!(run["customers"], run["limit"], "{run}");
        assert_eq!(run["fanOutCalls"], run["limit"], "{run}");
    }

    let partial = &report["partial"];
    assert_eq!(partial["isError"], false, "cosmos is optional: {partial}");
    assert_eq!(partial["behaviorSegment"], "unknown", "{partial}");
    let sources = partial["sources"].as_array().cloned().unwrap_or_default();
    let outcome = |step: &str| {
        sources
            .iter()
            .find(|s| s["step"] == step)
            .map(|s| s["outcome"].clone())
    };
    assert_eq!(outcome("orders"), Some("ok".into()), "{partial}");
    assert_eq!(outcome("behavior"), Some("fallback".into()), "{partial}");

    let breaker = &report["breaker"];
    assert_eq!(breaker["opened"], true, "{breaker}");
    assert_eq!(breaker["closed"], true, "{breaker}");
    assert_eq!(breaker["recovered"], true, "{breaker}");
    let transitions: Vec<String> = breaker["transitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{}->{}", t["from"], t["to"]).replace('"', ""))
        .collect();
    assert_eq!(
        transitions,
        ["closed->open", "open->half_open", "half_open->closed"],
        "{breaker}"
    );
    for us in breaker["openFailureUs"].as_array().into_iter().flatten() {
        assert!(
            us.as_u64().is_some_and(|us| us < 50_000),
            "fast failures while open: {breaker}"
        );
    }

    let retry = &report["retry"];
    assert!(retry["retried"].as_u64().is_some_and(|n| n >= 1), "{retry}");
    assert_eq!(retry["succeeded"], 8, "{retry}");
    for call in retry["calls"].as_array().into_iter().flatten() {
        let attempts = call["attempts"].as_array().map(Vec::len).unwrap_or(0);
        let delays = call["retryDelaysMs"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(delays + 1, attempts, "one delay before each retry: {call}");
    }

    let cache = &report["cache"];
    let (before, after, total) = (
        f(&cache["revenueBefore"]),
        f(&cache["revenueAfter"]),
        f(&cache["orderTotal"]),
    );
    assert!(total > 0.0, "{cache}");
    assert!(
        (after - (before + total)).abs() < 0.01,
        "{before} + {total} = {after}"
    );
    assert_eq!(cache["hitCached"], true, "{cache}");
    assert_eq!(cache["afterCached"], false, "{cache}");

    let whole = &report["saga"]["completed"];
    assert_eq!(whole["state"], "completed", "{whole}");
    assert_eq!(whole["orderStatus"], "processing", "{whole}");
    assert_eq!(
        whole["stockAfter"]
            .as_u64()
            .zip(whole["quantity"].as_u64())
            .map(|(a, q)| a + q),
        whole["stockBefore"].as_u64(),
        "the stock went down by the quantity: {whole}"
    );
    let undone = &report["saga"]["compensated"];
    assert_eq!(undone["state"], "compensated", "{undone}");
    assert_eq!(undone["isError"], true, "{undone}");
    assert_eq!(undone["orderStatus"], "cancelled", "{undone}");
    assert_eq!(
        undone["stockAfter"], undone["stockBefore"],
        "stock back: {undone}"
    );
    let undos = undone["undos"].as_array().cloned().unwrap_or_default();
    assert_eq!(undos.len(), 2, "{undone}");
    assert!(
        undos.iter().all(|u| u["outcome"] == "compensated"),
        "{undone}"
    );
    Ok(())
}

#[test]
fn the_demo_runs_one_section_and_refuses_an_unknown_one() -> anyhow::Result<()> {
    for server in ["sql-mcp-server", "cosmos-mcp-server", "rest-mcp-server"] {
        bin_path(server)?;
    }
    let out = std::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(["demo", "--json", "--section", "partial"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let sections: Vec<&String> = report
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "totalMs").collect())
        .unwrap_or_default();
    assert_eq!(sections, ["partial"]);

    let out = std::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(["demo", "--section", "nope"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown section `nope`"));
    Ok(())
}
