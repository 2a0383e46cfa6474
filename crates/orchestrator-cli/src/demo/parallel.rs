//! `parallel`: three 500 ms calls (SQL, Cosmos, REST) as a dependent chain, in parallel, and in
//! parallel from the cache.

use anyhow::bail;
use serde_json::{Value, json};

use super::{Bins, Out, cached, call, config, done, is_error, start, text_of};
use crate::output::table;

/// Three 500 ms calls: one after the other, all at once, and all at once from the cache.
pub(super) async fn run(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "parallel",
        "three 500 ms calls (SQL, Cosmos, REST) one after the other, in parallel, and in parallel from the cache",
    );
    let slow = ["--latency-ms", "500"];
    let steps = |chained: bool| {
        let (behavior_user, stock_product) = if chained {
            // Each step reads the step before it, so the executor must wait for it.
            (
                json!({ "$default": ["${customer.missingField}", "CUST-0001"] }),
                json!({ "$default": ["${behavior.missingField}", "PROD-001"] }),
            )
        } else {
            (json!("CUST-0001"), json!("PROD-001"))
        };
        json!({
            "customer": { "call": "sql.get_customer", "args": { "customerId": "CUST-0001" } },
            "behavior": { "call": "cosmos.get_user_behavior", "args": { "userId": behavior_user } },
            "stock": { "call": "rest.check_inventory", "args": { "productId": stock_product } }
        })
    };
    let composite = |description: &str, chained: bool, cache: bool| {
        let mut c = json!({
            "description": description,
            "input": { "type": "object", "additionalProperties": false },
            "steps": steps(chained),
            "output": { "customer": "${customer}", "behavior": "${behavior}", "stock": "${stock}" }
        });
        if cache {
            c["cache"] = json!("short");
        }
        c
    };
    let gw = start(
        config(bins.all(&slow, &slow, &slow)?, |c| {
            c["orchestrator"]["composites"] = json!({
                "demo_sequential": composite("Three calls, each waiting for the one before.", true, false),
                "demo_parallel": composite("Three independent calls, run together.", false, false),
                "demo_parallel_cached": composite("The parallel calls, cached for a short while.", false, true),
            });
        })?,
        out,
    )
    .await?;
    let bar = out.spinner("calling (≈1.5 s + 0.5 s + 0.5 s)");
    let (sequential, sequential_ms) = call(&gw, "demo_sequential", json!({})).await?;
    let (parallel, parallel_ms) = call(&gw, "demo_parallel", json!({})).await?;
    let (first, first_ms) = call(&gw, "demo_parallel_cached", json!({})).await?;
    let (hit, cached_ms) = call(&gw, "demo_parallel_cached", json!({})).await?;
    done(bar);
    gw.shutdown().await;
    for r in [&sequential, &parallel, &first, &hit] {
        if is_error(r) {
            bail!("a composite failed: {}", text_of(r));
        }
    }
    let mut t = table(&["run", "how", "measured (ms)", "expected"]);
    t.add_row([
        "sequential",
        "each step reads the previous one",
        &format!("{sequential_ms:.0}"),
        "≈1500",
    ]);
    t.add_row([
        "parallel",
        "independent steps, run together",
        &format!("{parallel_ms:.0}"),
        "≈500",
    ]);
    t.add_row([
        "parallel + cache",
        "second call of a `cache: short` composite",
        &format!("{cached_ms:.1}"),
        "≈0",
    ]);
    out.table(t);
    out.trace(&parallel);
    Ok(json!({
        "sequentialMs": sequential_ms,
        "parallelMs": parallel_ms,
        "cacheMissMs": first_ms,
        "cachedMs": cached_ms,
        "cacheHit": cached(&hit),
        "speedup": if parallel_ms > 0.0 { sequential_ms / parallel_ms } else { 0.0 },
    }))
}
