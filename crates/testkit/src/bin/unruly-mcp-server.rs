//! `unruly-mcp-server`: a stdio MCP server that misbehaves on request, for the system tests of
//! how the orchestrator copes with upstreams it cannot trust. It speaks JSON-RPC line by line
//! itself (no SDK), so each misbehaviour is exactly what the flag says.
//!
//! | flag | behaviour |
//! |---|---|
//! | `--pid-file PATH` | writes its pid there once it runs |
//! | `--ignore-term` | ignores SIGTERM, and keeps running after stdin EOF |
//! | `--never-list` | answers `initialize` but never `tools/list` |
//! | `--list-bytes N` | pads the tool list to at least N bytes |
//! | `--tool-names JSON` | lists these names (a JSON array) beside `echo` and `big` |
//! | `--max-line N` | refuses a longer line as the bundled servers do: `-32600`, `id: null` |
//! | `--capabilities JSON` | advertises these capabilities (default `{"tools": {}}`) and serves what they name, nothing else |
//! | `--list-hint JSON` | adds these fields (e.g. `{"ttlMs": 1000, "cacheScope": "public"}`) to every list result |
//! | `--read-hint JSON` | adds these fields to every `resources/read` result |
//! | `--note-lists` | writes `unruly: tools/list #N` to stderr at each tools listing |
//!
//! Tools: `echo` answers `received N bytes`; `big` answers with `{"bytes": N}` characters of
//! text on one line; `answer` answers with its argument `result` as the whole tool result,
//! exactly as given (fields no protocol version has included), so a test can relay any result. With `prompts`: the prompt `greet` (argument `name`) says `Hello, <name>`.
//! With `completions`: `alpha`, `beta`, `gamma`, those starting with the argument's value. With
//! `resources`: `unruly://note`, whose text is `read N` at its Nth read (so a test can tell a
//! stored read from a fresh one); with `resources.subscribe`, subscriptions are accepted. With
//! `logging`: `logging/setLevel` is accepted.

use std::{io::Write, time::Duration};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Default)]
struct Flags {
    pid_file: Option<String>,
    ignore_term: bool,
    never_list: bool,
    list_bytes: usize,
    tool_names: Vec<String>,
    max_line: Option<usize>,
    broken_listings: bool,
    capabilities: Option<Value>,
    list_hint: Option<Value>,
    read_hint: Option<Value>,
    note_lists: bool,
}

/// What the server counts while it runs.
#[derive(Default)]
struct Counts {
    reads: u64,
    tool_lists: u64,
}

fn flags() -> Result<Flags, String> {
    let mut f = Flags::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--pid-file" => f.pid_file = Some(value()?),
            "--ignore-term" => f.ignore_term = true,
            "--never-list" => f.never_list = true,
            "--list-bytes" => f.list_bytes = value()?.parse().map_err(|e| format!("{e}"))?,
            "--tool-names" => {
                f.tool_names = serde_json::from_str(&value()?).map_err(|e| format!("{e}"))?
            }
            "--broken-listings" => f.broken_listings = true,
            "--capabilities" => {
                f.capabilities = Some(serde_json::from_str(&value()?).map_err(|e| format!("{e}"))?)
            }
            "--list-hint" => {
                f.list_hint = Some(serde_json::from_str(&value()?).map_err(|e| format!("{e}"))?)
            }
            "--read-hint" => {
                f.read_hint = Some(serde_json::from_str(&value()?).map_err(|e| format!("{e}"))?)
            }
            "--note-lists" => f.note_lists = true,
            "--max-line" => f.max_line = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(f)
}

fn tool(name: &str, description: &str) -> Value {
    json!({ "name": name, "description": description, "inputSchema": { "type": "object" } })
}

fn tools(f: &Flags) -> Vec<Value> {
    let mut list = vec![
        tool("echo", "Says how many bytes its arguments were"),
        tool("big", "Answers with `bytes` characters of text"),
        tool(
            "answer",
            "Answers with its `result` argument as the tool result",
        ),
        tool(
            "progress",
            "Reports `steps` progress notifications (to the call's progressToken), then answers",
        ),
    ];
    list.extend(
        f.tool_names
            .iter()
            .map(|n| tool(n, "named by --tool-names")),
    );
    let mut size = 0;
    let mut n = 0;
    while size < f.list_bytes {
        let padding = "p".repeat(1000);
        size += padding.len() + 60;
        list.push(tool(&format!("pad_{n}"), &padding));
        n += 1;
    }
    list
}

fn send(message: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, message);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// `result` with the fields of `hint` (an object) added.
fn with_hint(mut result: Value, hint: Option<&Value>) -> Value {
    if let (Some(Value::Object(fields)), Value::Object(r)) = (hint, &mut result) {
        r.extend(fields.clone());
    }
    result
}

/// Whether the advertised capabilities hold `path` (`["resources", "subscribe"]`): present,
/// and `true` when it is a flag.
fn advertises(f: &Flags, path: &[&str]) -> bool {
    let mut at = match &f.capabilities {
        Some(caps) => caps,
        None => return false,
    };
    for key in path {
        match at.get(key) {
            Some(next) => at = next,
            None => return false,
        }
    }
    at.as_bool() != Some(false)
}

fn answer(request: &Value, f: &Flags, counts: &mut Counts) -> Option<Value> {
    let id = request.get("id")?.clone();
    let method = request.get("method")?.as_str()?;
    let list_hint = f.list_hint.as_ref();
    let result = match method {
        "initialize" if f.capabilities.is_some() => json!({
            "protocolVersion": request["params"]["protocolVersion"].clone(),
            "capabilities": f.capabilities.clone(),
            "serverInfo": { "name": "unruly", "version": "1" }
        }),
        "prompts/list" if advertises(f, &["prompts"]) => with_hint(
            json!({ "prompts": [{
                "name": "greet",
                "description": "Says hello to `name`",
                "arguments": [{ "name": "name", "required": true }]
            }] }),
            list_hint,
        ),
        "prompts/get" if advertises(f, &["prompts"]) => {
            let name = request["params"]["arguments"]["name"]
                .as_str()
                .unwrap_or("nobody");
            json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": format!("Hello, {name}") } }] })
        }
        "completion/complete" if advertises(f, &["completions"]) => {
            let prefix = request["params"]["argument"]["value"]
                .as_str()
                .unwrap_or_default();
            let values: Vec<&str> = ["alpha", "beta", "gamma"]
                .into_iter()
                .filter(|v| v.starts_with(prefix))
                .collect();
            json!({ "completion": { "values": values } })
        }
        "resources/list" if advertises(f, &["resources"]) => with_hint(
            json!({ "resources": [{ "uri": "unruly://note", "name": "note" }] }),
            list_hint,
        ),
        "resources/templates/list" if advertises(f, &["resources"]) => {
            with_hint(json!({ "resourceTemplates": [] }), list_hint)
        }
        "resources/read" if advertises(f, &["resources"]) => {
            counts.reads += 1;
            with_hint(
                json!({ "contents": [{ "uri": "unruly://note", "text": format!("read {}", counts.reads) }] }),
                f.read_hint.as_ref(),
            )
        }
        "resources/subscribe" | "resources/unsubscribe"
            if advertises(f, &["resources", "subscribe"]) =>
        {
            json!({})
        }
        "logging/setLevel" if advertises(f, &["logging"]) => json!({}),
        // With --broken-listings it offers resources and prompts, and cannot list them.
        "initialize" if f.broken_listings => json!({
            "protocolVersion": request["params"]["protocolVersion"].clone(),
            "capabilities": { "tools": {}, "resources": {}, "prompts": {} },
            "serverInfo": { "name": "unruly", "version": "1" }
        }),
        "initialize" => json!({
            "protocolVersion": request["params"]["protocolVersion"].clone(),
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "unruly", "version": "1" }
        }),
        "tools/list" if f.never_list => return None,
        "tools/list" => {
            counts.tool_lists += 1;
            if f.note_lists {
                // Not `eprintln!`: a stderr nobody reads any more must not end the server.
                let _ = writeln!(
                    std::io::stderr(),
                    "unruly: tools/list #{}",
                    counts.tool_lists
                );
            }
            with_hint(json!({ "tools": tools(f) }), list_hint)
        }
        "tools/call" => {
            let params = &request["params"];
            if params["name"] == "answer" {
                let result = params["arguments"]["result"].clone();
                return Some(json!({ "jsonrpc": "2.0", "id": id, "result": result }));
            }
            let text = match params["name"].as_str() {
                Some("progress") => {
                    let steps = params["arguments"]["steps"].as_u64().unwrap_or(5);
                    if let Some(token) = params["_meta"].get("progressToken") {
                        for step in 1..=steps {
                            send(&json!({
                                "jsonrpc": "2.0",
                                "method": "notifications/progress",
                                "params": { "progressToken": token, "progress": step, "total": steps }
                            }));
                        }
                    }
                    format!("{steps} steps")
                }
                Some("big") => {
                    let bytes = params["arguments"]["bytes"].as_u64().unwrap_or(0) as usize;
                    "b".repeat(bytes)
                }
                _ => format!("received {} bytes", params["arguments"].to_string().len()),
            };
            json!({ "content": [{ "type": "text", "text": text }] })
        }
        "ping" => json!({}),
        _ => {
            return Some(json!({ "jsonrpc": "2.0", "id": id,
                "error": { "code": -32601, "message": format!("no method {method}") } }));
        }
    };
    Some(json!({ "jsonrpc": "2.0", "id": id, "result": result }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let f = match flags() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("unruly-mcp-server: {e}");
            std::process::exit(2);
        }
    };
    if let Some(path) = &f.pid_file
        && let Err(e) = std::fs::write(path, std::process::id().to_string())
    {
        eprintln!("unruly-mcp-server: cannot write {path}: {e}");
        std::process::exit(2);
    }
    #[cfg(unix)]
    if f.ignore_term {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                // Says nothing: a write to a stderr nobody reads any more would end it.
                tokio::spawn(async move { while term.recv().await.is_some() {} });
            }
            Err(e) => eprintln!("unruly-mcp-server: cannot catch SIGTERM: {e}"),
        }
    }
    let mut lines = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut counts = Counts::default();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if f.max_line.is_some_and(|max| line.len() > max) {
            send(&json!({ "jsonrpc": "2.0", "id": null,
                "error": { "code": -32600, "message": "line over the limit" } }));
            continue;
        }
        let Ok(request) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if let Some(reply) = answer(&request, &f, &mut counts) {
            send(&reply);
        }
    }
    if f.ignore_term {
        // Stays up without a word (see above), as a server stuck in its own work would.
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}
