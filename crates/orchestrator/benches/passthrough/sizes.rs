//! Section 3: the orchestrator's CPU per pass-through call against the size of the answer, over
//! the stdio front and the HTTP front with sessions.

use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};

use crate::{
    Settings,
    endpoint::{Endpoint, Sample},
    fronts::Paths,
    report::{self, Aim, opt, thousands},
};

const AIM_10KB_CPU_US: f64 = 150.0;

/// `CUST-0001` has 147 seeded orders (the seed favours low indexes); its newest 100 come to a
/// result of about 97 KB, its newest 10 to about 9.6 KB.
const LARGE_LIMIT: u32 = 100;

/// The calls, smallest answer first: a label, the SQL server's tool and its arguments.
fn calls() -> [(&'static str, &'static str, Value); 3] {
    [
        ("~0.2 KB", "query", json!({ "sql": "SELECT 1" })),
        (
            "~10 KB",
            "get_customer_orders",
            json!({ "customerId": "CUST-0001", "limit": 10 }),
        ),
        (
            "~100 KB",
            "get_customer_orders",
            json!({ "customerId": "CUST-0001", "limit": LARGE_LIMIT }),
        ),
    ]
}

/// The size of a result as the front sends it: the `result` member of the JSON-RPC answer.
fn result_bytes(r: &CallToolResult) -> anyhow::Result<usize> {
    Ok(serde_json::to_vec(r)?.len())
}

/// One call measured through one front.
struct Row {
    /// Index into the fronts.
    front: usize,
    size: &'static str,
    params: CallToolRequestParams,
    /// The whole result's size, and its `structuredContent`'s.
    bytes: usize,
    structured: usize,
    sample: Sample,
}

pub async fn run(paths: &Paths, s: &Settings) -> anyhow::Result<()> {
    let fronts: [&Endpoint; 2] = [&paths.stdio, &paths.http];
    let mut rows = Vec::new();
    for (f, front) in fronts.iter().enumerate() {
        for (size, tool, args) in calls() {
            let params = front.params(tool, args);
            let answer = front.call_ok(&params).await?;
            let structured = answer
                .structured_content
                .as_ref()
                .map_or(Ok(0), |v| serde_json::to_vec(v).map(|b| b.len()))?;
            front.warm_up(&params, s.warmup.min(100), 1).await?;
            rows.push(Row {
                front: f,
                size,
                params,
                bytes: result_bytes(&answer)?,
                structured,
                sample: Sample::new()?,
            });
        }
    }
    // Rounds, so each call sees the same machine conditions as the others.
    for _ in 0..s.rounds {
        for row in &mut rows {
            fronts[row.front]
                .sequential(&row.params, s.size_calls, &mut row.sample)
                .await?;
        }
    }

    report::section(3, "Orchestrator CPU per call against answer size");
    println!(
        "{} rounds of {} sequential calls per row; result bytes: the tool result as the front \
         sends it (text content and structuredContent both carry the data), and the \
         structuredContent alone",
        s.rounds, s.size_calls
    );
    let mut table = report::table([
        "front",
        "answer",
        "call",
        "result bytes",
        "structured bytes",
        "p50 µs",
        "orchestrator CPU µs/call",
        "switches/call",
        "sql CPU µs/call",
    ]);
    for row in &rows {
        let front = fronts[row.front];
        let orch = row.sample.per_call(front, "orchestrator");
        table.add_row([
            front.label.to_owned(),
            row.size.to_owned(),
            format!(
                "{} {}",
                row.params.name,
                Value::Object(row.params.arguments.clone().unwrap_or_default())
            ),
            thousands(row.bytes as f64),
            thousands(row.structured as f64),
            format!("{:.0}", row.sample.p(0.5)),
            opt(orch.map(|u| u.cpu_us), 0),
            opt(orch.map(|u| u.switches), 1),
            opt(row.sample.per_call(front, "sql").map(|u| u.cpu_us), 0),
        ]);
    }
    println!("{table}");
    let stdio_10kb = rows
        .iter()
        .find(|row| row.front == 0 && row.size == "~10 KB")
        .and_then(|row| row.sample.per_call(fronts[0], "orchestrator"))
        .map(|u| u.cpu_us);
    report::aim(
        "stdio front, orchestrator CPU per call for the 10 KB answer",
        stdio_10kb,
        0,
        " µs",
        Aim::AtMost(AIM_10KB_CPU_US),
    );
    Ok(())
}
