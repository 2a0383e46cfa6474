//! The raw pass-through path against the typed one: the same traffic through two orchestrators
//! over stdio, one relaying tool results raw (the default) and one with every server's
//! `toolResults: "typed"`, and what the agent receives compared line by line, in both protocol
//! eras. Raw relaying may differ in one way only: it keeps fields rmcp's types have no place for.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use testkit::{TempDir, bin_path, stdio_peer::StdioPeer};

/// The repo's mcp.json (its composites and cache rules) with the bundled servers on throwaway
/// data, the test server `unruly` beside them, a 32 KiB result cap, and every server's tool
/// results read `mode` (`raw` or `typed`).
fn config(dir: &TempDir, mode: &str) -> anyhow::Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(repo)?)?;
    let memory = json!(["--data-dir", ":memory:"]);
    config["mcpServers"] = json!({
        "sql": { "command": bin_path("sql-mcp-server")?, "args": memory },
        "cosmos": { "command": bin_path("cosmos-mcp-server")?, "args": memory },
        "rest": { "command": bin_path("rest-mcp-server")?, "args": [] },
        "unruly": { "command": bin_path("unruly-mcp-server")?, "args": [] }
    });
    let o = &mut config["orchestrator"];
    o["limits"]["maxResultBytes"] = json!(32768);
    o["sagas"] = json!({ "logPath": dir.path().join(format!("sagas-{mode}.db")) });
    for server in ["sql", "cosmos", "rest", "unruly"] {
        o["servers"][server]["toolResults"] = json!(mode);
    }
    let path = dir.path().join(format!("mcp-{mode}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(path)
}

/// Which era an agent speaks.
#[derive(Clone, Copy, Debug)]
enum Era {
    /// 2025-11-25: `initialize`, then a session.
    Initialize,
    /// 2026-07-28: every request carries its version and capabilities.
    Stateless,
}

/// An orchestrator over stdio, and the agent's side of the line.
struct Agent {
    peer: StdioPeer,
    era: Era,
}

impl Agent {
    async fn start(config: &Path, era: Era) -> anyhow::Result<Self> {
        let config = config.display().to_string();
        let peer = StdioPeer::spawn(
            &bin_path("mcp-orchestrator")?,
            &["serve", "--config", &config],
        )?;
        let mut agent = Self { peer, era };
        if let Era::Initialize = era {
            let init = agent
                .peer
                .request(
                    "init",
                    "initialize",
                    json!({ "protocolVersion": "2025-11-25", "capabilities": {},
                            "clientInfo": { "name": "raw-results-test", "version": "0" } }),
                )
                .await?;
            ensure!(init["result"]["protocolVersion"] == "2025-11-25", "{init}");
            agent
                .peer
                .send_json(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
                .await?;
        }
        Ok(agent)
    }

    /// `params` with the request `_meta` of this agent's era and `extra`.
    fn params(&self, mut params: Value, extra: Value) -> Value {
        let mut meta = extra;
        if let Era::Stateless = self.era {
            meta["io.modelcontextprotocol/protocolVersion"] = json!("2026-07-28");
            meta["io.modelcontextprotocol/clientInfo"] =
                json!({ "name": "raw-results-test", "version": "0" });
            meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
        }
        params["_meta"] = meta;
        params
    }

    /// Calls `tool` with `arguments` (correlation id `id`, so both orchestrators log and answer
    /// under the same one); the whole JSON-RPC answer and the notifications that came with it.
    async fn call(
        &mut self,
        id: &str,
        tool: &str,
        arguments: Value,
        meta: Value,
    ) -> anyhow::Result<(Value, Vec<Value>)> {
        let mut meta = meta;
        meta["correlationId"] = json!(id);
        let params = self.params(json!({ "name": tool, "arguments": arguments }), meta);
        self.peer.drain_notes();
        let answer = self.peer.request(id, "tools/call", params).await?;
        Ok((answer, self.peer.drain_notes()))
    }

    /// Waits until every server's tools are listed.
    async fn wait_listed(&mut self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        for n in 0.. {
            let params = self.params(json!({}), json!({}));
            let list = self
                .peer
                .request(&format!("list-{n}"), "tools/list", params)
                .await?;
            let names: Vec<&str> = list["result"]["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["name"].as_str())
                .collect();
            if [
                "sql__get_customer",
                "cosmos__get_user_behavior",
                "rest__check_inventory",
                "unruly__answer",
            ]
            .iter()
            .all(|t| names.contains(t))
            {
                return Ok(());
            }
            ensure!(
                started.elapsed().as_secs() < 60,
                "not every server listed: {names:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// Results an upstream may send, each relayed by `unruly__answer` exactly as given.
fn shapes() -> Vec<Value> {
    vec![
        json!({ "content": [{ "type": "text", "text": "quotes \" backslash \\ tab \t é 😀 \u{7f}" }] }),
        json!({ "content": [{ "type": "text", "text": "{\"a\":1}" }], "structuredContent": { "a": 1, "nested": [1.5, -2, null, true, "x"] } }),
        json!({ "content": [{ "type": "image", "data": "aGVsbG8=", "mimeType": "image/png", "annotations": { "audience": ["user"], "priority": 0.25 } }] }),
        json!({ "content": [{ "type": "audio", "data": "aGVsbG8=", "mimeType": "audio/wav" }] }),
        json!({ "content": [{ "type": "resource", "resource": { "uri": "unruly://x", "mimeType": "text/plain", "text": "embedded" } }, { "type": "resource_link", "uri": "unruly://y", "name": "y" }] }),
        json!({ "content": [{ "type": "text", "text": "t", "_meta": { "block": 1 } }], "_meta": { "requestCharge": 3.5, "upstream": { "k": [1, 2] } } }),
        json!({ "content": [], "isError": false }),
        json!({ "structuredContent": { "only": "structured" } }),
        json!({ "resultType": "complete", "content": [{ "type": "text", "text": "said complete" }] }),
        json!({ "content": [{ "type": "text", "text": "tool failed" }], "isError": true, "_meta": { "errorKind": "not_found", "retryable": false } }),
        json!({ "content": [{ "type": "text", "text": "[1,2]" }], "structuredContent": [1, 2] }),
        json!({ "content": [{ "type": "text", "text": "x" }], "structuredContent": "a string" }),
        json!({ "content": [{ "type": "text", "text": &"w".repeat(20_000) }] }),
    ]
}

/// The traffic: every bundled server's tools, a composite, a cached read twice, refusals,
/// progress, a result over the cap, and every shape of [`shapes`].
fn traffic() -> Vec<(String, Value, Value)> {
    let mut calls = vec![
        ("sql__get_customer", json!({ "customerId": "CUST-0001" })),
        ("sql__get_customer", json!({ "customerId": "CUST-0001" })),
        (
            "sql__get_customer_orders",
            json!({ "customerId": "CUST-0001", "limit": 10 }),
        ),
        (
            "sql__get_customer_orders",
            json!({ "customerId": "CUST-0002", "limit": 100 }),
        ),
        ("sql__get_customer", json!({ "customerId": "CUST-9999" })),
        ("sql__get_customer", json!({})),
        (
            "sql__query",
            json!({ "sql": "SELECT 1 AS one, 'é\"' AS s" }),
        ),
        ("sql__query", json!({ "sql": "DELETE FROM customers" })),
        (
            "cosmos__get_user_behavior",
            json!({ "userId": "CUST-0001" }),
        ),
        ("rest__check_inventory", json!({ "productId": "PROD-001" })),
        ("rest__get_product", json!({ "productId": "PROD-001" })),
        ("rest__get_product", json!({ "productId": "PROD-001" })),
        ("customer_insights", json!({ "customerId": "CUST-0001" })),
        ("unruly__big", json!({ "bytes": 40_000 })),
    ]
    .into_iter()
    .map(|(tool, args)| (tool.to_owned(), args, json!({})))
    .collect::<Vec<_>>();
    calls.push((
        "unruly__progress".to_owned(),
        json!({ "steps": 3 }),
        json!({ "progressToken": "p-1" }),
    ));
    for shape in shapes() {
        calls.push((
            "unruly__answer".to_owned(),
            json!({ "result": shape }),
            json!({}),
        ));
    }
    calls
}

/// What may differ between two runs of the same call: durations, and the times a composite's
/// sources report.
fn steady(mut value: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|k, _| {
                    !matches!(
                        k.as_str(),
                        "ms" | "elapsedMs"
                            | "latencyMs"
                            | "durationMs"
                            | "startedMs"
                            | "retryDelaysMs"
                    )
                });
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

/// Where `a` and `b` differ: each path with both values (cut short), for a readable failure.
fn differences(path: &str, a: &Value, b: &Value) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    let missing = Value::String("(absent)".into());
                    differences(
                        &format!("{path}.{k}"),
                        x.get(k).unwrap_or(&missing),
                        y.get(k).unwrap_or(&missing),
                    )
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (a, b))| differences(&format!("{path}[{i}]"), a, b))
            .collect(),
        _ if a == b => Vec::new(),
        _ => {
            let short = |v: &Value| v.to_string().chars().take(200).collect::<String>();
            vec![format!("{path}: raw {} / typed {}", short(a), short(b))]
        }
    }
}

async fn compare(era: Era) -> anyhow::Result<()> {
    let dir = TempDir::new("raw-results")?;
    let mut raw = Agent::start(&config(&dir, "raw")?, era).await?;
    let mut typed = Agent::start(&config(&dir, "typed")?, era).await?;
    raw.wait_listed().await?;
    typed.wait_listed().await?;
    for (n, (tool, args, meta)) in traffic().into_iter().enumerate() {
        let id = format!("call-{n}");
        let (from_raw, raw_notes) = raw.call(&id, &tool, args.clone(), meta.clone()).await?;
        let (from_typed, typed_notes) = typed.call(&id, &tool, args.clone(), meta).await?;
        let differences = differences("", &steady(from_raw), &steady(from_typed));
        assert!(
            differences.is_empty(),
            "{era:?} {tool} {args}: raw and typed answers differ at {differences:#?}"
        );
        assert_eq!(
            raw_notes, typed_notes,
            "{era:?} {tool}: notifications differ"
        );
        if tool == "unruly__progress" {
            assert_eq!(raw_notes.len(), 3, "{raw_notes:?}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_typed_relaying_give_a_2025_agent_the_same_answers() -> anyhow::Result<()> {
    compare(Era::Initialize).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_typed_relaying_give_a_2026_agent_the_same_answers() -> anyhow::Result<()> {
    compare(Era::Stateless).await
}

/// What raw relaying is for beside speed: a field a newer protocol adds reaches the agent,
/// where the typed path drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_relaying_keeps_fields_the_typed_structs_drop() -> anyhow::Result<()> {
    let dir = TempDir::new("raw-results-new")?;
    let result = json!({
        "content": [{ "type": "text", "text": "t", "futureBlockField": { "x": 1 } }],
        "futureResultField": [1, 2, 3]
    });
    let mut answers = Vec::new();
    for mode in ["raw", "typed"] {
        let mut agent = Agent::start(&config(&dir, mode)?, Era::Initialize).await?;
        agent.wait_listed().await?;
        let (answer, _) = agent
            .call(
                "new",
                "unruly__answer",
                json!({ "result": result }),
                json!({}),
            )
            .await?;
        answers.push(answer["result"].clone());
    }
    let (raw, typed) = (&answers[0], &answers[1]);
    assert_eq!(raw["futureResultField"], json!([1, 2, 3]), "{raw}");
    assert_eq!(
        raw["content"][0]["futureBlockField"],
        json!({ "x": 1 }),
        "{raw}"
    );
    assert!(typed.get("futureResultField").is_none(), "{typed}");
    assert!(
        typed["content"][0].get("futureBlockField").is_none(),
        "{typed}"
    );
    // Everything else is the same.
    let mut without = raw.clone();
    without
        .as_object_mut()
        .context("object")?
        .remove("futureResultField");
    without["content"][0]
        .as_object_mut()
        .context("block")?
        .remove("futureBlockField");
    assert_eq!(&without, typed);
    Ok(())
}
