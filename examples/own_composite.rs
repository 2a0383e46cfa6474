//! Writing your own composite in an `mcp.json`: load it, validate it, call it.
//!
//! Run: `cargo build --workspace --bins && cargo run -p mcp-orchestrator --example own_composite`
//! (or `... --example own_composite -- path/to/your/mcp.json` for a file of your own)
//!
//! `examples/own_composite.json` is an ordinary `mcp.json` defining a new composite,
//! `customer_snapshot`: profile and last order (SQL) and churn risk (Cosmos, optional, with a
//! `fallback`) in parallel, then the stock of the last ordered product (REST). Its server commands
//! are `${env:MCP_SERVERS_DIR}/...`, resolved here to the folder of the built servers. The example
//! validates the file with `Config::parse` (and shows that a misspelt step reference is rejected
//! with an error naming its JSON path), calls the composite, then calls it again with Cosmos
//! failing every call, to show the optional step's fallback standing in.

use std::path::{Path, PathBuf};

use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let bundled =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/own_composite.json");
            std::fs::canonicalize(&bundled).unwrap_or(bundled)
        });
    // The servers are in target/debug, beside target/debug/examples/own_composite.
    let bins = kit::binaries::dir()?;
    // `${env:VAR}` lookup: MCP_SERVERS_DIR defaults to the built servers' folder.
    let lookup = |var: &str| match (var, std::env::var(var)) {
        (_, Ok(value)) => Some(value),
        ("MCP_SERVERS_DIR", Err(_)) => Some(bins.display().to_string()),
        _ => None,
    };
    let text =
        std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let base_dir = file.parent().unwrap_or(Path::new("."));
    let parse = |raw: &Value| {
        Config::parse(&raw.to_string(), base_dir, &lookup).map_err(anyhow::Error::from)
    };
    let raw: Value = serde_json::from_str(&text)?;
    let config = parse(&raw)?;
    let names: Vec<&str> = config.workflows.iter().map(|w| w.name.as_str()).collect();
    println!(
        "{}: valid, composites: {}",
        file.display(),
        names.join(", ")
    );

    // The same file with a misspelt reference: rejected at load, naming the JSON path.
    let mut broken = raw.clone();
    broken["orchestrator"]["composites"]["customer_snapshot"]["steps"]["stock"]["args"]["productId"] =
        json!("${ordrs.orders[0].lines[0].productId}");
    match parse(&broken) {
        Ok(_) => anyhow::bail!("a misspelt reference was accepted"),
        Err(e) => println!("with `orders` misspelt `ordrs`: rejected: {e}"),
    }

    println!("\ncustomer_snapshot, every server healthy:");
    snapshot(config).await?;

    // Cosmos failing every call: the optional `behavior` step falls back, the tool still answers.
    let mut failing = raw;
    if let Some(args) = failing["mcpServers"]["cosmos"]["args"].as_array_mut() {
        args.extend([json!("--failure-rate"), json!("1")]);
    }
    failing["orchestrator"]["servers"] = json!({ "cosmos": { "retry": { "maxAttempts": 1 } } });
    println!("\ncustomer_snapshot, Cosmos failing every call:");
    snapshot(parse(&failing)?).await
}

/// Starts a gateway for `config`, calls `customer_snapshot` once and prints what it answered.
async fn snapshot(config: Config) -> anyhow::Result<()> {
    let gateway = Gateway::start(config);
    anyhow::ensure!(
        gateway.wait_ready(std::time::Duration::from_secs(30)).await,
        "servers did not connect"
    );
    let args = json!({ "customerId": "CUST-0013" });
    let result = gateway
        .call_tool(
            "customer_snapshot",
            args.as_object().cloned(),
            &CallContext::default(),
        )
        .await?;
    gateway.shutdown().await;
    anyhow::ensure!(
        result.is_error != Some(true),
        "customer_snapshot failed: {result:?}"
    );
    println!("{}", serde_json::to_string(&result.structured_content)?);
    let meta = result.meta.unwrap_or_default();
    for s in meta
        .get("sources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let why = s["errorKind"]
            .as_str()
            .map(|k| format!(" ({k})"))
            .unwrap_or_default();
        let call = format!(
            "{}.{}",
            s["server"].as_str().unwrap_or("?"),
            s["tool"].as_str().unwrap_or("?")
        );
        println!(
            "  step {:<9} {call:<30} {}{why}",
            s["step"].as_str().unwrap_or("?"),
            s["outcome"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}
