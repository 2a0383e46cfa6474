//! Malformed traffic on both fronts: every case of `tests/corpus/malformed.jsonl` gets exactly the
//! answer JSON-RPC (or MCP) prescribes, the process keeps serving, and over HTTP a well-behaved
//! client calling tools at the same time never notices.
//!
//! # The corpus
//! One JSON object per line:
//! - `name`: unique, for failure messages; `why` (optional): a note for the reader.
//! - `send`: the frame as text (a stdio line without its newline, or an HTTP body), in which
//!   `<<N*TEXT>>` stands for `TEXT` repeated `N` times; or `sendHex`: the frame as raw bytes (for
//!   bytes that are not UTF-8).
//! - `expect`: the answer, one of
//!   - `{"error": CODE, "id": ID}`: a JSON-RPC error with that code and id (`null` included);
//!   - `{"toolError": {"errorKind": K, "field": F}, "id": ID}`: a tool result with `isError` and
//!     those `_meta` fields;
//!   - `{"result": ID}`: a successful answer (odd but valid frames);
//!   - `{"none": true}`: no answer at all (notifications, responses, blank lines).
//! - `http`: `{"status": S}`, with `expect` inside when the HTTP answer differs from the stdio one.
//!   Status 202 means no body, 413 means the body limit answered (plain text); 400 and 200 carry
//!   the expected answer (as the JSON body, or in the SSE stream).
//! - `fronts` (optional): `["stdio"]` or `["http"]` for a case that only makes sense on one.
//!
//! Both fronts are served with `--max-body-bytes 4096`, so the oversized case is small to keep.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path, call_ok, stdio_peer::StdioPeer};

const BIN: &str = "mcp-orchestrator";
/// The limit both fronts are served with; the corpus's oversized case is just over it.
const MAX_BODY_BYTES: &str = "4096";
/// How long one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const PROTOCOL: &str = "2025-11-25";

/// What a case must be answered with.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// A JSON-RPC error.
    Error { code: i64, id: Value },
    /// A `tools/call` result with `isError` and these `_meta` fields.
    ToolError {
        kind: String,
        field: String,
        id: Value,
    },
    /// A successful answer.
    Result { id: Value },
    /// No answer.
    None,
}

impl Expect {
    fn parse(value: &Value) -> anyhow::Result<Self> {
        if value.get("none") == Some(&Value::Bool(true)) {
            return Ok(Self::None);
        }
        if let Some(id) = value.get("result") {
            return Ok(Self::Result { id: id.clone() });
        }
        let id = value.get("id").context("`id` is missing")?.clone();
        if let Some(code) = value.get("error") {
            return Ok(Self::Error {
                code: code.as_i64().context("`error` must be a code")?,
                id,
            });
        }
        let tool = value.get("toolError").context("unknown expectation")?;
        let text = |key: &str| {
            tool[key]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("toolError.{key}"))
        };
        Ok(Self::ToolError {
            kind: text("errorKind")?,
            field: text("field")?,
            id,
        })
    }

    /// The id of the expected answer (`None` when no answer is expected).
    fn id(&self) -> Option<&Value> {
        match self {
            Self::Error { id, .. } | Self::ToolError { id, .. } | Self::Result { id } => Some(id),
            Self::None => None,
        }
    }

    /// Whether `answer` is the one expected; `Err` says how it differs.
    fn check(&self, answer: &Value) -> Result<(), String> {
        let fail = |what: &str| Err(format!("{what}: got {answer}"));
        if answer["jsonrpc"] != "2.0" {
            return fail("not a JSON-RPC 2.0 message");
        }
        if answer.get("id") != self.id() {
            return fail(&format!("expected id {:?}", self.id()));
        }
        match self {
            Self::Error { code, .. } => {
                if answer["error"]["code"].as_i64() != Some(*code) {
                    return fail(&format!("expected error {code}"));
                }
                if !answer["error"]["message"].is_string() {
                    return fail("an error needs a message");
                }
            }
            Self::ToolError { kind, field, .. } => {
                let result = &answer["result"];
                if result["isError"] != true
                    || result["_meta"]["errorKind"] != kind.as_str()
                    || result["_meta"]["field"] != field.as_str()
                {
                    return fail(&format!(
                        "expected a tool error with errorKind {kind} and field {field}"
                    ));
                }
            }
            Self::Result { .. } => {
                if !answer["result"].is_object() || answer["result"]["isError"] == true {
                    return fail("expected a successful result");
                }
            }
            Self::None => return fail("expected no answer"),
        }
        Ok(())
    }
}

/// One corpus case.
#[derive(Debug)]
struct Case {
    name: String,
    bytes: Vec<u8>,
    stdio: Option<Expect>,
    http: Option<(u16, Expect)>,
}

/// `<<N*TEXT>>` → `TEXT` repeated `N` times.
fn expand(text: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        out.push_str(&rest[..start]);
        let body = &rest[start + 2..];
        let end = body.find(">>").context("unterminated <<")?;
        let (count, unit) = body[..end].split_once('*').context("<<N*TEXT>>")?;
        out.push_str(&unit.repeat(count.parse()?));
        rest = &body[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn hex(text: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&text[i..i + 2], 16)?))
        .collect()
}

fn load_corpus() -> anyhow::Result<Vec<Case>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/malformed.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut cases = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let case = (|| {
            let raw: Value = serde_json::from_str(line)?;
            let name = raw["name"].as_str().context("name")?.to_owned();
            let bytes = match (raw["send"].as_str(), raw["sendHex"].as_str()) {
                (Some(text), None) => expand(text)?.into_bytes(),
                (None, Some(h)) => hex(h)?,
                _ => bail!("exactly one of `send` and `sendHex`"),
            };
            let expect = Expect::parse(&raw["expect"]).context("expect")?;
            let fronts: Vec<&str> = match raw["fronts"].as_array() {
                Some(f) => f.iter().filter_map(Value::as_str).collect(),
                None => vec!["stdio", "http"],
            };
            let http = &raw["http"];
            let status = http["status"].as_u64().context("http.status")?;
            let http_expect = match (status, http.get("expect")) {
                (_, Some(e)) => Expect::parse(e).context("http.expect")?,
                (202 | 413, None) => Expect::None,
                (_, None) => expect.clone(),
            };
            Ok(Case {
                name,
                bytes,
                stdio: fronts.contains(&"stdio").then_some(expect),
                http: fronts
                    .contains(&"http")
                    .then_some((u16::try_from(status)?, http_expect)),
            })
        })()
        .with_context(|| format!("{}:{}", path.display(), n + 1))?;
        cases.push(case);
    }
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    ensure!(names.len() == cases.len(), "case names must be unique");
    Ok(cases)
}

/// `mcp.json` with the bundled sql server only.
fn write_config(dir: &TempDir) -> anyhow::Result<String> {
    let path = dir.path().join("mcp.json");
    let config = json!({ "mcpServers": { "sql": {
        "command": bin_path("sql-mcp-server")?,
        "args": ["--data-dir", dir.path().join("sql")]
    } } });
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(path.display().to_string())
}

fn initialize(id: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": { "protocolVersion": PROTOCOL, "capabilities": {},
                    "clientInfo": { "name": "malformed-test", "version": "0" } }
    })
}

fn request(id: &str, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

fn lists_sql(answer: &Value) -> bool {
    answer["result"]["tools"]
        .as_array()
        .is_some_and(|tools| tools.iter().any(|t| t["name"] == "sql__get_customer"))
}

// --- stdio -----------------------------------------------------------------------------------

/// Sends `ping` with `id` and waits for its empty result.
async fn ping(peer: &mut StdioPeer, id: &str) -> anyhow::Result<()> {
    let answer = peer.request(id, "ping", json!({})).await?;
    ensure!(answer["result"] == json!({}), "ping {id}: {answer}");
    Ok(())
}

#[tokio::test]
async fn every_malformed_line_gets_its_answer_and_stdio_keeps_serving() -> anyhow::Result<()> {
    let cases = load_corpus()?;
    let dir = TempDir::new("malformed-stdio")?;
    let config = write_config(&dir)?;
    let mut peer = StdioPeer::spawn(
        &bin_path(BIN)?,
        &[
            "serve",
            "--config",
            &config,
            "--max-body-bytes",
            MAX_BODY_BYTES,
        ],
    )?;

    peer.send_json(&initialize("init")).await?;
    let init = peer.take(&json!("init")).await?;
    ensure!(init["result"]["protocolVersion"].is_string(), "{init}");
    peer.send_json(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .await?;
    // The upstream connects in the background: wait until its tools are listed.
    let started = Instant::now();
    for n in 0.. {
        let id = format!("list-{n}");
        peer.send_json(&request(&id, "tools/list", json!({})))
            .await?;
        if lists_sql(&peer.take(&json!(id)).await?) {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "sql never connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut failures = Vec::new();
    let mut run = 0;
    for (n, case) in cases.iter().enumerate() {
        let Some(expect) = &case.stdio else { continue };
        run += 1;
        peer.send(&case.bytes).await?;
        // A fresh request right behind every case: the session still answers.
        let ping = format!("ping-{n}");
        peer.send_json(&request(&ping, "ping", json!({}))).await?;
        if let Some(id) = expect.id() {
            match peer.take(id).await {
                Ok(answer) => {
                    if let Err(e) = expect.check(&answer) {
                        failures.push(format!("{}: {e}", case.name));
                    }
                }
                Err(e) => failures.push(format!("{}: {e:#}", case.name)),
            }
        }
        let pong = peer.take(&json!(ping)).await;
        match pong {
            Ok(answer) if answer["result"] == json!({}) => {}
            Ok(answer) => failures.push(format!("{}: the ping after it got {answer}", case.name)),
            Err(e) => bail!("{}: the ping after it got no answer: {e:#}", case.name),
        }
        // Framing answers come before the ping's; anything else left over was not expected.
        for extra in peer.drain_unclaimed() {
            failures.push(format!("{}: unexpected answer {extra}", case.name));
        }
    }
    // Late answers (to a case expecting none) would arrive by now.
    ping(&mut peer, "last").await?;
    for extra in peer.drain_unclaimed() {
        failures.push(format!("unexpected late answer {extra}"));
    }
    ensure!(
        failures.is_empty(),
        "{} of {run} stdio cases were answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{run} stdio cases answered right");
    ensure!(peer.running()?, "the orchestrator exited during the corpus");
    // Still a well-behaved process: EOF on stdin ends it cleanly.
    let status = peer.close(Duration::from_secs(20)).await?;
    ensure!(status.success(), "exit status {status}");
    Ok(())
}

// --- HTTP ------------------------------------------------------------------------------------

/// A raw HTTP session: posts bytes exactly as given.
struct RawSession {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
}

/// One HTTP answer: status and the JSON-RPC messages in its body (JSON or SSE).
struct Reply {
    status: u16,
    body: String,
    messages: Vec<Value>,
}

impl RawSession {
    async fn open(url: &str) -> anyhow::Result<Self> {
        let mut session = Self {
            http: reqwest::Client::builder().no_proxy().build()?,
            url: url.to_owned(),
            session: None,
        };
        let init = session
            .post(initialize("init").to_string().into_bytes())
            .await?;
        ensure!(init.status == 200, "initialize: {}", init.body);
        let reply = session
            .post(
                json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })
                    .to_string()
                    .into_bytes(),
            )
            .await?;
        ensure!(reply.status == 202, "initialized: {}", reply.status);
        Ok(session)
    }

    async fn post(&mut self, body: Vec<u8>) -> anyhow::Result<Reply> {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", PROTOCOL);
        }
        let response = tokio::time::timeout(ANSWER_TIMEOUT, request.send())
            .await
            .context("no response")??;
        let status = response.status().as_u16();
        if self.session.is_none()
            && let Some(id) = response.headers().get("mcp-session-id")
        {
            self.session = Some(id.to_str()?.to_owned());
        }
        let json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        // A request's SSE stream ends after its response.
        let body = tokio::time::timeout(ANSWER_TIMEOUT, response.text())
            .await
            .context("the response body did not end")??;
        let messages = if json {
            vec![serde_json::from_str(&body)?]
        } else {
            body.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?
        };
        Ok(Reply {
            status,
            body,
            messages,
        })
    }
}

/// The answer `reply` gives to a case expecting `status` and `expect`.
fn check_reply(status: u16, expect: &Expect, reply: &Reply) -> Result<(), String> {
    if reply.status != status {
        return Err(format!(
            "expected HTTP {status}, got {}: {}",
            reply.status, reply.body
        ));
    }
    match expect.id() {
        None if reply.messages.is_empty() => Ok(()),
        None if status == 413 => Ok(()),
        None => Err(format!("expected no answer, got {}", reply.body)),
        Some(id) => {
            let answer = reply
                .messages
                .iter()
                .find(|m| m.get("id") == Some(id))
                .ok_or_else(|| format!("no answer with id {id} in {}", reply.body))?;
            expect.check(answer)
        }
    }
}

#[tokio::test]
async fn every_malformed_body_gets_its_answer_while_another_client_calls_tools()
-> anyhow::Result<()> {
    let cases = load_corpus()?;
    let dir = TempDir::new("malformed-http")?;
    let config = write_config(&dir)?;
    let args: Vec<String> = [
        "serve",
        "--config",
        &config,
        "--http",
        "127.0.0.1:0",
        "--max-body-bytes",
        MAX_BODY_BYTES,
    ]
    .map(String::from)
    .to_vec();
    let mut server = HttpServer::spawn(BIN, &args, &HashMap::new()).await?;

    // The well-behaved client: waits for sql, then calls it until the corpus is through.
    let client = server.connect(None).await?;
    let started = Instant::now();
    while call_ok(
        &client,
        "sql__get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await
    .is_err()
    {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "sql never connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let well_behaved = tokio::spawn({
        let (done, calls) = (done.clone(), calls.clone());
        async move {
            while !done.load(Ordering::SeqCst) {
                let customer = call_ok(
                    &client,
                    "sql__get_customer",
                    json!({ "customerId": "CUST-0002" }),
                )
                .await?;
                ensure!(customer["customerId"] == "CUST-0002", "{customer}");
                calls.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, anyhow::Error>(client)
        }
    });

    let mut raw = RawSession::open(&server.url).await?;
    let mut failures = Vec::new();
    let mut run = 0;
    for (n, case) in cases.iter().enumerate() {
        let Some((status, expect)) = &case.http else {
            continue;
        };
        run += 1;
        match raw.post(case.bytes.clone()).await {
            Ok(reply) => {
                if let Err(e) = check_reply(*status, expect, &reply) {
                    failures.push(format!("{}: {e}", case.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e:#}", case.name)),
        }
        // The same session still answers.
        let ping = format!("ping-{n}");
        let reply = raw
            .post(request(&ping, "ping", json!({})).to_string().into_bytes())
            .await?;
        let pong = Expect::Result { id: json!(ping) };
        if let Err(e) = check_reply(200, &pong, &reply) {
            failures.push(format!("{}: the ping after it: {e}", case.name));
        }
    }
    done.store(true, Ordering::SeqCst);
    let client = tokio::time::timeout(ANSWER_TIMEOUT, well_behaved)
        .await
        .context("the well-behaved client hung")???;
    ensure!(
        failures.is_empty(),
        "{} of {run} HTTP cases were answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let calls = calls.load(Ordering::SeqCst);
    ensure!(
        calls > 0,
        "the well-behaved client made no call during the corpus"
    );
    eprintln!("{run} HTTP cases answered right; the other client made {calls} calls meanwhile");
    // After it all, a new session works too, and the process is still up.
    let again = server.connect(None).await?;
    call_ok(
        &again,
        "sql__get_customer",
        json!({ "customerId": "CUST-0003" }),
    )
    .await?;
    ensure!(
        server.child.try_wait()?.is_none(),
        "the orchestrator exited during the corpus"
    );
    drop((client, again));
    server.stop().await
}
