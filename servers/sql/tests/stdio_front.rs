//! The stdio front every server shares (`kit::serve`), driven with raw JSON-RPC lines: a request
//! id reused while the first request is in flight is refused and the first still answered, and a
//! client that pipelines requests without reading the answers meets a server that stops reading,
//! stays small, and answers every request once its answers are read.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use testkit::bin_path;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

/// `sql-mcp-server` over stdio with `args`, its stderr drained.
fn spawn(args: &[&str]) -> anyhow::Result<(Child, ChildStdin, Lines<BufReader<ChildStdout>>)> {
    let mut child = Command::new(bin_path("sql-mcp-server")?)
        .args(["--data-dir", ":memory:"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    });
    let stdin = child.stdin.take().context("stdin")?;
    let stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    Ok((child, stdin, stdout))
}

fn line(message: &Value) -> Vec<u8> {
    format!("{message}\n").into_bytes()
}

/// The next message from the server, within 30 s.
async fn next(stdout: &mut Lines<BufReader<ChildStdout>>) -> anyhow::Result<Value> {
    let text = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .context("no answer within 30 s")??
        .context("stdout closed")?;
    Ok(serde_json::from_str(&text)?)
}

/// `initialize` and `initialized`.
async fn handshake(
    stdin: &mut ChildStdin,
    stdout: &mut Lines<BufReader<ChildStdout>>,
) -> anyhow::Result<()> {
    stdin
        .write_all(&line(&json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": { "name": "stdio-front-test", "version": "1" }
            }
        })))
        .await?;
    let init = next(stdout).await?;
    ensure!(init["result"].is_object(), "{init}");
    stdin
        .write_all(&line(
            &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        ))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_request_id_reused_in_flight_is_refused_and_the_first_request_still_answered()
-> anyhow::Result<()> {
    // Every tool call takes 300 ms, so the first request is surely in flight when the second
    // arrives.
    let (_child, mut stdin, mut stdout) = spawn(&["--latency-ms", "300"])?;
    handshake(&mut stdin, &mut stdout).await?;
    let call = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": "get_customer", "arguments": { "customerId": "CUST-0001" } }
    });
    let reuse = json!({ "jsonrpc": "2.0", "id": 7, "method": "ping" });
    let mut both = line(&call);
    both.extend(line(&reuse));
    stdin.write_all(&both).await?;
    // Answers until the tool call's (which comes last, after 300 ms), or 10 s without it.
    let mut sevens = Vec::new();
    let called = |a: &Value| a["result"]["structuredContent"].is_object();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !sevens.iter().any(called) {
            let answer = next(&mut stdout).await?;
            if answer["id"] == 7 {
                sevens.push(answer);
            }
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    // Nothing more for id 7 comes before the answer to a later ping.
    stdin
        .write_all(&line(
            &json!({ "jsonrpc": "2.0", "id": 8, "method": "ping" }),
        ))
        .await?;
    loop {
        let answer = next(&mut stdout).await?;
        if answer["id"] == 8 {
            break;
        }
        if answer["id"] == 7 {
            sevens.push(answer);
        }
    }
    ensure!(sevens.len() == 2, "two answers for id 7: {sevens:#?}");
    let refusal = sevens
        .iter()
        .find(|a| a.get("error").is_some())
        .with_context(|| format!("a refusal among {sevens:#?}"))?;
    assert_eq!(refusal["error"]["code"], -32600);
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("id 7 "),
        "the refusal names the id: {message}"
    );
    let result = sevens
        .iter()
        .find(|a| called(a))
        .with_context(|| format!("the first request's answer among {sevens:#?}"))?;
    assert_eq!(
        result["result"]["structuredContent"]["customerId"], "CUST-0001",
        "the answer is the tools/call's, not the ping's: {result}"
    );
    Ok(())
}

/// Resident memory of `pid` now and at its peak, in bytes (`VmRSS`, `VmHWM`).
fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_answers_holds_the_server_back_not_its_memory()
-> anyhow::Result<()> {
    const REQUESTS: usize = 20_000;
    let (child, mut stdin, mut stdout) = spawn(&[])?;
    let pid = child.id().context("pid")?;
    handshake(&mut stdin, &mut stdout).await?;
    let (baseline, _) = rss(pid)?;
    // Each answer carries the database schema: KBs that nobody reads for a while.
    let written = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let written = written.clone();
        async move {
            for id in 1..=REQUESTS {
                let request = json!({
                    "jsonrpc": "2.0", "id": id, "method": "resources/read",
                    "params": { "uri": "sql://schema" }
                });
                stdin.write_all(&line(&request)).await?;
                written.store(id, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(stdin)
        }
    });
    // Wait until the writer is done, or stuck: no request got through for a second.
    let mut last = 0;
    let mut still = 0;
    while !writer.is_finished() && still < 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written.load(Ordering::Relaxed);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    let (held, _) = rss(pid)?;
    ensure!(
        !writer.is_finished(),
        "the server read all {REQUESTS} requests while none of its answers was read \
         (RSS {baseline} → {held} bytes)"
    );
    // Now read: every request gets exactly one answer. (Read without building a JSON tree: in a
    // debug build that, not the server, would be most of this test's time.)
    #[derive(serde::Deserialize)]
    struct Read {
        contents: Vec<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        id: u64,
        result: Read,
    }
    let mut answers: HashMap<u64, usize> = HashMap::new();
    while answers.len() < REQUESTS {
        let text = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .context("no answer within 30 s")??
            .context("stdout closed")?;
        let answer: Answer = serde_json::from_str(&text)
            .with_context(|| format!("a resources/read answer with a numeric id: {text}"))?;
        ensure!(!answer.result.contents.is_empty(), "the schema: {text}");
        *answers.entry(answer.id).or_default() += 1;
    }
    ensure!(
        answers.values().all(|&n| n == 1)
            && (1..=REQUESTS as u64).all(|id| answers.contains_key(&id)),
        "one answer per request"
    );
    let stdin = writer.await??;
    drop(stdin);
    let (_, peak) = rss(pid)?;
    eprintln!("RSS after the handshake {baseline}, while held {held}, peak {peak} bytes");
    // A generous bound: held at the cap the server grew by about 3 MB here; reading all 20,000
    // requests while no answer is read, by about 100 MB.
    ensure!(
        peak < baseline + 32 * 1024 * 1024,
        "peak RSS {peak} bytes, {baseline} after the handshake"
    );
    Ok(())
}
