//! Cost of the per-server policy stack, in process (no upstream): what a healthy call pays for
//! deadline + retry + breaker + bulkhead + timeout, and how fast a call fails while the breaker
//! is open.
//!
//! Run: `cargo bench -p mcp-orchestrator --bench policy`

use std::{path::Path, time::Instant};

use hdrhistogram::Histogram;
use orchestrator::{
    config::Config,
    error::CallError,
    policy::{Op, Plan, PolicyStack},
};
use rmcp::model::{CallToolResult, ContentBlock};

const CALLS: usize = 200_000;

fn stack(extra: &str) -> (PolicyStack, Plan) {
    let text = format!(
        r#"{{ "mcpServers": {{ "bench": {{ "command": "unused" }} }},
             "orchestrator": {{ "servers": {{ "bench": {{ {extra} }} }} }} }}"#
    );
    let config = match Config::parse(&text, Path::new("."), &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e}"),
    };
    let spec = &config.servers[0];
    let plan = Plan {
        policy: spec.policy.for_tool("get", true),
        safe: true,
        wait: None,
    };
    (PolicyStack::new("bench", spec.policy.clone()), plan)
}

fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 60_000_000_000, 3) {
        Ok(h) => h,
        Err(e) => panic!("histogram: {e}"),
    }
}

fn row(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<34} p50 {:>8.2} µs   p99 {:>8.2} µs   mean {:>8.2} µs",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.mean() / 1000.0
    );
}

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async {
        let ok = CallToolResult::success(vec![ContentBlock::text("ok")]);

        // Baseline: the same future without any policy.
        let mut direct = histogram();
        for _ in 0..CALLS {
            let t = Instant::now();
            let r: Result<CallToolResult, CallError> = async { Ok(ok.clone()) }.await;
            std::hint::black_box(r.is_ok());
            direct.saturating_record(t.elapsed().as_nanos() as u64);
        }

        let (healthy, plan) = stack("");
        let mut through = histogram();
        for _ in 0..CALLS {
            let t = Instant::now();
            let (r, _) = healthy
                .call(Op::tool("get"), &plan, || async { Ok::<_, CallError>(ok.clone()) })
                .await;
            std::hint::black_box(r.is_ok());
            through.saturating_record(t.elapsed().as_nanos() as u64);
        }

        // Open the breaker with one failure, then measure refusals.
        let (open, plan) = stack(r#""circuitBreaker": { "consecutiveFailures": 1, "openMs": 600000, "minOpenMs": 600000 }, "retry": { "maxAttempts": 1 }"#);
        let _ = open
            .call(Op::tool("get"), &plan, || async {
                Err::<CallToolResult, _>(CallError::ConnectionLost { server: "bench".into(), detail: "down".into() })
            })
            .await;
        let mut refused = histogram();
        let mut refusals = 0;
        for _ in 0..CALLS {
            let t = Instant::now();
            let (r, _) = open
                .call(Op::tool("get"), &plan, || async { Ok::<_, CallError>(ok.clone()) })
                .await;
            refused.saturating_record(t.elapsed().as_nanos() as u64);
            refusals += usize::from(matches!(r, Err(CallError::CircuitOpen(_))));
        }
        assert_eq!(refusals, CALLS, "every call was refused by the open breaker");

        println!("policy stack, {CALLS} calls each, one thread:");
        row("no policy (the bare future)", &direct);
        row("full stack, healthy call", &through);
        row("full stack, breaker open (refused)", &refused);
        println!(
            "overhead of the full stack on a healthy call: {:.2} µs (p50)",
            (through.value_at_quantile(0.5) as f64 - direct.value_at_quantile(0.5) as f64) / 1000.0
        );
        println!(
            "fast-fail while open: {:.2} µs (p50), aim: well under 1000 µs",
            refused.value_at_quantile(0.5) as f64 / 1000.0
        );
    });
}
