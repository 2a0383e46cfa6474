//! The soak under faults, short (the CI version of `scripts/soak.sh`): `mcp-soak` drives 5,000
//! calls at 64 in flight through `mcp-orchestrator serve` (debug binaries), Cosmos failing 20% of
//! its calls and REST killed one second after each (re)start, and this test checks its `--json`
//! report. The invariants are behaviour, not timing: every request answered exactly once, every
//! call that depends only on healthy servers succeeded, no descriptor, zombie or orphan left,
//! a clean shutdown. The goodput figures are checked for their arithmetic, not their level.
//!
//! Memory is checked looser than in the full soak (25% instead of 10%, from a baseline after
//! the first 20% of the calls instead of 10%): a debug orchestrator a few hundred calls in has
//! not reached its steady state (allocator arenas and pools still grow; debug runs measured
//! x1.007 to x1.04), and a run this short cannot tell a slow leak from that. 25% still catches a
//! leak of about 3 KiB per call (a response buffer kept per request); the full soak (100,000
//! calls, release) checks 10%. Answers, descriptors (at most +4) and processes are checked as in
//! the full soak.

use std::time::Instant;

use serde_json::Value;
use testkit::bin_path;

const CALLS: u64 = 5_000;

#[test]
fn the_orchestrator_answers_every_call_once_and_leaks_nothing_under_faults() -> anyhow::Result<()> {
    // The driver starts the binaries found next to its own.
    for bin in [
        "mcp-orchestrator",
        "sql-mcp-server",
        "cosmos-mcp-server",
        "rest-mcp-server",
    ] {
        bin_path(bin)?;
    }
    let soak = bin_path("mcp-soak")?;
    let started = Instant::now();
    let out = std::process::Command::new(soak)
        .args([
            "--calls",
            &CALLS.to_string(),
            "--concurrency",
            "64",
            "--kill-every-secs",
            "1",
            "--failure-rate",
            "0.2",
            "--warmup",
            "0.2",
            "--max-rss-growth",
            "0.25",
            "--settle-secs",
            "20",
            "--json",
        ])
        .output()?;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "stdout is not one JSON object ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let failed: Vec<&Value> = report["invariants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ok"] != true)
        .collect();
    assert!(
        failed.is_empty() && report["ok"] == true && out.status.success(),
        "invariants failed: {failed:#?}\nexit {}\n{report:#}\n{stderr}",
        out.status
    );

    // The same invariants, read from the figures themselves.
    let calls = &report["calls"];
    assert_eq!(calls["sent"], CALLS, "{calls}");
    assert_eq!(calls["answered"], CALLS, "{calls}");
    for zero in [
        "lost",
        "unmatched",
        "duplicates",
        "mismatched",
        "garbageLines",
    ] {
        assert_eq!(calls[zero], 0, "{zero}: {calls}");
    }
    let healthy = &report["roles"]["healthy"];
    assert!(healthy["answered"].as_u64() > Some(CALLS / 2), "{healthy}");
    assert_eq!(healthy["ok"], healthy["answered"], "{healthy}");
    for tool in report["tools"].as_array().into_iter().flatten() {
        assert!(
            tool["answered"].as_u64() > Some(0),
            "every tool of the mix ran: {tool}"
        );
    }
    assert!(
        report["killer"]["kills"].as_u64() >= Some(1),
        "{}",
        report["killer"]
    );

    // Goodput: figures, not invariants here; their arithmetic and wiring are checked.
    let goodput = &report["goodput"];
    for (role, tools) in [
        (
            "healthy",
            &["sql__get_customer", "sql__get_top_customers"][..],
        ),
        ("flaky", &["cosmos__get_user_behavior"][..]),
        ("killed", &["rest__check_inventory"][..]),
    ] {
        let answered: u64 = report["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| tools.iter().any(|name| t["tool"] == *name))
            .filter_map(|t| t["answered"].as_u64())
            .sum();
        assert_eq!(goodput[role]["calls"], answered, "{role}: {goodput:#}");
    }
    assert_eq!(goodput["healthy"]["share"], 1.0, "{goodput:#}");
    assert_eq!(goodput["healthy"]["couldHave"], 1.0, "{goodput:#}");
    // Cosmos fails 20% of attempts and gets `--max-attempts` 2 (the soak's default).
    assert_eq!(goodput["flaky"]["maxAttempts"], 2, "{goodput:#}");
    assert_eq!(goodput["flaky"]["couldHave"], 0.96, "{goodput:#}");
    let uptime = goodput["killed"]["uptimeShare"].as_f64();
    assert!(
        uptime.is_some_and(|u| u > 0.0 && u < 1.0),
        "REST was killed, so down part of the run: {goodput:#}"
    );
    let breakers = &report["breakers"];
    assert!(breakers["readings"].as_u64() > Some(0), "{breakers:#}");
    for server in ["sql", "cosmos", "rest"] {
        assert!(
            breakers["servers"][server]["state"].is_string(),
            "{server}: {breakers:#}"
        );
    }
    assert_eq!(report["outage"], Value::Null, "no outage asked");

    let process = &report["process"];
    // The three servers, and beside each the watchdog shell that kills it if the orchestrator
    // dies.
    let children = process["end"]["children"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for server in ["sql-mcp-server", "cosmos-mcp-server", "rest-mcp-server"] {
        assert_eq!(children.get(server), Some(&1.into()), "{process:#}");
    }
    let total: u64 = children.values().filter_map(Value::as_u64).sum();
    assert_eq!(total, 6, "{process:#}");
    assert_eq!(process["end"]["zombies"], 0, "{process:#}");
    assert!(process["fdGrowth"].as_i64() <= Some(4), "{process:#}");
    assert!(process["rssRatio"].as_f64() <= Some(1.25), "{process:#}");
    assert_eq!(
        process["unreapedKilled"],
        serde_json::json!([]),
        "{process:#}"
    );
    assert_eq!(process["orphans"], serde_json::json!([]), "{process:#}");
    assert_eq!(process["shutdown"]["clean"], true, "{process:#}");
    assert_eq!(
        process["shutdown"]["left"],
        serde_json::json!([]),
        "{process:#}"
    );

    eprintln!("short soak: {took:?}, {}", report["throughput"]);
    Ok(())
}
