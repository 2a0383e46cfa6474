//! `retry`: a server failing half its calls (seeded); each call's attempts and the backoff delays
//! actually taken.

use std::time::Instant;

use orchestrator::upstream::CallContext;
use serde_json::{Value, json};

use super::{Bins, Out, config, done, is_error, ms, start};
use crate::output::table;

/// A flaky server (half the calls fail): the attempts and the backoff delays actually taken.
pub(super) async fn run(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "retry",
        "retry with exponential backoff and jitter against a server failing half its calls",
    );
    let servers = json!({
        "cosmos": bins.server(
            "cosmos-mcp-server",
            &["--failure-rate", "0.5", "--seed", "11"],
        )?
    });
    let gw = start(
        config(servers, |c| {
            c["orchestrator"]["composites"] = json!({});
            c["orchestrator"]["cache"] = json!({});
            c["orchestrator"]["servers"] = json!({ "cosmos": {
                "retry": { "maxAttempts": 5, "baseDelayMs": 100, "maxDelayMs": 1000,
                           "jitter": "proportional", "budgetRatio": 10.0 },
                "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 0.99 }
            } });
        })?,
        out,
    )
    .await?;
    let mut t = table(&[
        "call",
        "attempts",
        "outcomes",
        "delays before retries (ms)",
        "total (ms)",
    ]);
    let mut calls = Vec::new();
    let bar = out.spinner("calling the flaky server");
    for i in 1..=8 {
        let started = Instant::now();
        let (outcome_, report) = gw
            .call_tool_with_report(
                "cosmos__get_user_behavior",
                json!({ "userId": format!("CUST-{i:04}") })
                    .as_object()
                    .cloned(),
                &CallContext::default(),
            )
            .await;
        let total = ms(started.elapsed());
        let ok = outcome_.as_ref().is_ok_and(|r| !is_error(r));
        let outcomes: Vec<String> = report.attempts.iter().map(|a| a.outcome.clone()).collect();
        t.add_row([
            i.to_string(),
            report.attempts.len().to_string(),
            outcomes.join(" → "),
            report
                .retry_delays_ms
                .iter()
                .map(|d| format!("{d:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            format!("{total:.0}"),
        ]);
        calls.push(json!({
            "ok": ok,
            "attempts": report.attempts,
            "retryDelaysMs": report.retry_delays_ms,
            "ms": total,
        }));
    }
    done(bar);
    gw.shutdown().await;
    out.table(t);
    out.line(
        "delays: 100 ms doubling per retry (max 1000), ±20% jitter so clients do not retry in step",
    );
    let retried = calls
        .iter()
        .filter(|c| c["retryDelaysMs"].as_array().is_some_and(|d| !d.is_empty()))
        .count();
    let ok = calls.iter().filter(|c| c["ok"] == json!(true)).count();
    Ok(json!({ "calls": calls, "retried": retried, "succeeded": ok }))
}
