//! Section 4: what a composite costs the orchestrator against the pass-through calls it makes.
//!
//! `customer_insights` is taken from the repository's `mcp.json` as it is. Its inventory step is
//! cached (`"cache": "short"`), so after the first call that step is a cache hit and the
//! composite calls two upstreams, not three. The aim compares like with like: a copy of it with
//! that step's cache removed, which calls all three servers every time, against the three
//! pass-through calls. The composite as configured is measured and printed beside it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};

use crate::{
    Settings,
    endpoint::{Endpoint, PerCall, Sample},
    report::{self, Aim, opt, thousands},
    setup::{self, Binaries, COSMOS_BIN, ORCH_BIN, REST_BIN, SQL_BIN, Scratch},
};

/// The repository's configuration, where `customer_insights` is defined.
const MCP_JSON: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../mcp.json"));
const COMPOSITE: &str = "customer_insights";
/// The same composite with no step cached.
const UNCACHED: &str = "customer_insights_uncached";
const AIM_TIMES_PASS_THROUGH: f64 = 3.0;

/// `customer_insights` as `mcp.json` defines it, and a copy without the step cache.
fn composites() -> anyhow::Result<Value> {
    let config: Value = serde_json::from_str(MCP_JSON).context("parsing mcp.json")?;
    let composite = config
        .pointer(&format!("/orchestrator/composites/{COMPOSITE}"))
        .cloned()
        .with_context(|| format!("mcp.json defines no {COMPOSITE}"))?;
    let mut uncached = composite.clone();
    let steps = uncached
        .get_mut("steps")
        .and_then(Value::as_object_mut)
        .context("a composite without steps")?;
    for step in steps.values_mut() {
        if let Some(step) = step.as_object_mut() {
            step.remove("cache");
        }
    }
    Ok(json!({ COMPOSITE: composite, UNCACHED: uncached }))
}

/// The three pass-through calls the composite makes, as its steps make them.
fn pass_through() -> [(&'static str, Value); 3] {
    [
        (
            "sql__get_customer_orders",
            json!({ "customerId": "CUST-0001", "limit": 10 }),
        ),
        (
            "cosmos__get_user_behavior",
            json!({ "userId": "CUST-0001" }),
        ),
        ("rest__check_inventory", json!({})),
    ]
}

/// The outcome of each step of a composite's result (`_meta.sources`), as `step: outcome`.
fn outcomes(r: &CallToolResult) -> Vec<(String, String)> {
    let sources = r
        .meta
        .as_ref()
        .and_then(|m| m.get("sources"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    sources
        .iter()
        .map(|s| {
            let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
            (field("step"), field("outcome"))
        })
        .collect()
}

/// Writes the configuration of an orchestrator with the three servers and the composites.
pub fn config(bins: &Binaries, scratch: &Scratch) -> anyhow::Result<PathBuf> {
    scratch.config("three-servers", &setup::three_servers(bins, composites()?))
}

/// Starts an orchestrator on [`config`]'s configuration, with every tool listed.
pub async fn start(bins: &Binaries, config: &Path) -> anyhow::Result<Endpoint> {
    let orch = Endpoint::stdio(
        "stdio front",
        "orchestrator",
        "",
        &bins.path(ORCH_BIN),
        &setup::serve_args(config, &[]),
    )
    .await?
    .adopt("sql", SQL_BIN)
    .await?
    .adopt("cosmos", COSMOS_BIN)
    .await?
    .adopt("rest", REST_BIN)
    .await?;
    let mut tools = vec![COMPOSITE, UNCACHED];
    tools.extend(pass_through().map(|(t, _)| t));
    orch.wait_for_tools(&tools).await?;
    Ok(orch)
}

/// One call measured: a composite, or one of its pass-through calls.
struct Row {
    params: CallToolRequestParams,
    /// The size of its result as the front sends it.
    bytes: usize,
    sample: Sample,
}

pub async fn run(orch: &Endpoint, s: &Settings) -> anyhow::Result<()> {
    let input = json!({ "customerId": "CUST-0001" });
    let mut calls = vec![
        orch.params(UNCACHED, input.clone()),
        orch.params(COMPOSITE, input.clone()),
    ];
    calls.extend(pass_through().map(|(tool, args)| orch.params(tool, args)));

    // Every step must be answered by its server (or, as configured, the cache): a fallback
    // would make the composite look cheaper than it is.
    let mut rows = Vec::new();
    for params in calls {
        let r = orch.call_ok(&params).await?;
        if params.name.starts_with(COMPOSITE) {
            let first = outcomes(&r);
            if first.len() != 3 || first.iter().any(|(_, o)| o != "ok" && o != "cached") {
                bail!("{}: not every step answered: {first:?}", params.name);
            }
        }
        orch.warm_up(&params, s.warmup.min(100), 1).await?;
        rows.push(Row {
            bytes: serde_json::to_vec(&r)?.len(),
            params,
            sample: Sample::new()?,
        });
    }
    let uncached = outcomes(&orch.call_ok(&rows[0].params).await?);
    let as_configured = outcomes(&orch.call_ok(&rows[1].params).await?);

    for _ in 0..s.rounds {
        for row in &mut rows {
            orch.sequential(&row.params, s.composite_calls, &mut row.sample)
                .await?;
        }
    }

    report::section(4, "A composite against its pass-through calls");
    println!(
        "customer_insights {input} through the stdio front of an orchestrator with sql, cosmos \
         and rest (stdio, data in memory, no latency or faults); {} rounds of {} sequential \
         calls per row",
        s.rounds, s.composite_calls
    );
    let show = |o: &[(String, String)]| {
        o.iter()
            .map(|(step, outcome)| format!("{step} {outcome}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  {COMPOSITE} as mcp.json configures it (inventory step \"cache\": \"short\"): {}",
        show(&as_configured)
    );
    println!(
        "  {UNCACHED} (the same, step cache removed): {}",
        show(&uncached)
    );
    let mut table = report::table([
        "call",
        "result bytes",
        "p50 µs",
        "orchestrator CPU µs/call",
        "switches/call",
        "upstreams CPU µs/call",
    ]);
    for row in &rows {
        let o = row.sample.per_call(orch, "orchestrator");
        table.add_row([
            row.params.name.to_string(),
            thousands(row.bytes as f64),
            format!("{:.0}", row.sample.p(0.5)),
            opt(o.map(|u| u.cpu_us), 0),
            opt(o.map(|u| u.switches), 1),
            opt(row.sample.upstreams_per_call(orch).map(|u| u.cpu_us), 0),
        ]);
    }
    println!("{table}");
    let cpu = |i: usize| {
        rows[i]
            .sample
            .per_call(orch, "orchestrator")
            .map(|u: PerCall| u.cpu_us)
    };
    let sum: Option<f64> = (2..5).map(cpu).sum::<Option<f64>>().filter(|&s| s > 0.0);
    println!(
        "  sum of the three pass-through calls' orchestrator CPU: {} µs",
        opt(sum, 0)
    );
    if let (Some(c), Some(sum)) = (cpu(1), sum) {
        println!(
            "  {COMPOSITE} as configured (inventory from the cache): {c:.0} µs, {:.2}x that sum",
            c / sum
        );
    }
    report::aim(
        &format!("{UNCACHED}, all three steps called, over that sum"),
        cpu(0).zip(sum).map(|(c, sum)| c / sum),
        2,
        "x",
        Aim::Under(AIM_TIMES_PASS_THROUGH),
    );
    Ok(())
}
