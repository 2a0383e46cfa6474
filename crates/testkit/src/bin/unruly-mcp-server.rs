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
//!
//! Tools: `echo` answers `received N bytes`; `big` answers with `{"bytes": N}` characters of
//! text on one line.

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

fn answer(request: &Value, f: &Flags) -> Option<Value> {
    let id = request.get("id")?.clone();
    let method = request.get("method")?.as_str()?;
    let result = match method {
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
        "tools/list" => json!({ "tools": tools(f) }),
        "tools/call" => {
            let params = &request["params"];
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
        if let Some(reply) = answer(&request, &f) {
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
