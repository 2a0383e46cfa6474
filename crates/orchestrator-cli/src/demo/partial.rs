//! `partial`: Cosmos failing; `customer_insights` still answers, and `_meta.sources` says which
//! step fell back and why.

use serde_json::{Value, json};

use super::{Bins, Out, call, config, is_error, sources, sources_table, start, str_of};

/// Cosmos fails; customer_insights answers with a default profile and says so in `_meta.sources`.
pub(super) async fn run(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "partial",
        "Cosmos fails every get_user_behavior call; customer_insights still answers, and _meta.sources says what is missing",
    );
    let gw = start(
        config(
            bins.all(&[], &["--fail-tools", "get_user_behavior"], &[])?,
            |c| {
                c["orchestrator"]["servers"]["cosmos"] =
                    json!({ "retry": { "maxAttempts": 2, "baseDelayMs": 50, "jitter": "none" } });
            },
        )?,
        out,
    )
    .await?;
    let (r, elapsed) = call(
        &gw,
        "customer_insights",
        json!({ "customerId": "CUST-0003" }),
    )
    .await?;
    gw.shutdown().await;
    let content = r.structured_content.clone().unwrap_or_default();
    let recent = content["recentOrders"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    out.line(format!(
        "customer_insights CUST-0003 in {elapsed:.0} ms: {} ({recent} recent orders, behaviour segment `{}`)",
        if is_error(&r) { "failed" } else { "answered" },
        str_of(&content["behavior"]["segment"]),
    ));
    let s = sources(&r);
    out.table(sources_table(&s));
    out.trace(&r);
    Ok(json!({
        "ms": elapsed,
        "isError": is_error(&r),
        "recentOrders": recent,
        "behaviorSegment": content["behavior"]["segment"],
        "sources": s,
    }))
}
