//! Operating a running orchestrator: hot reload of `mcp.json` (file watcher, SIGHUP,
//! `POST /admin/reload`), `/healthz` and `/readyz`, and draining on SIGTERM.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ClientHandler, RoleClient,
    service::{NotificationContext, RunningService},
};
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path, call, call_ok, read_status, text_of};

const TOKEN: &str = "t-reload";

/// Counts `tools/list_changed`.
#[derive(Debug, Clone, Default)]
struct Recorder {
    tools_changed: Arc<AtomicUsize>,
}

impl ClientHandler for Recorder {
    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.tools_changed.fetch_add(1, Ordering::SeqCst);
    }
}

type Agent = RunningService<RoleClient, Recorder>;

/// A server entry for the bundled SQL server with its data under `dir`.
fn sql(dir: &TempDir, extra: &[&str]) -> anyhow::Result<Value> {
    let mut args = vec![
        "--data-dir".to_owned(),
        dir.path().join("sql").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Ok(json!({ "command": bin_path("sql-mcp-server")?, "args": args }))
}

fn rest() -> anyhow::Result<Value> {
    Ok(json!({ "command": bin_path("rest-mcp-server")?, "args": [] }))
}

/// Writes the config the way an editor saves: a new file renamed over the old one.
fn write(path: &Path, config: &Value) -> anyhow::Result<()> {
    write_text(path, &serde_json::to_string_pretty(config)?)
}

fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A one-step composite over `sql.get_customer` whose output names the customer under `field`.
fn card(field: &str, tool: &str) -> Value {
    json!({
        "description": "A customer's name.",
        "input": { "type": "object", "properties": { "customerId": { "type": "string" } } },
        "steps": { "c": { "call": tool, "args": { "customerId": "${input.customerId}" }, "critical": true } },
        "output": { field: "${c.name}" }
    })
}

async fn start_stdio(config: &Path) -> anyhow::Result<(Agent, Recorder)> {
    start_stdio_with_pid(config).await.map(|(a, r, _)| (a, r))
}

/// [`start_stdio`], with the orchestrator's pid.
async fn start_stdio_with_pid(config: &Path) -> anyhow::Result<(Agent, Recorder, u32)> {
    let recorder = Recorder::default();
    let (agent, pid) = testkit::serve_orchestrator(recorder.clone(), config).await?;
    Ok((agent, recorder, pid))
}

async fn tool_names(agent: &impl testkit::ToolCaller) -> anyhow::Result<Vec<String>> {
    Ok(agent
        .peer()
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect())
}

async fn config_status(agent: &impl testkit::ToolCaller) -> Value {
    read_status(agent)
        .await
        .map(|s| s["config"].clone())
        .unwrap_or(Value::Null)
}

/// The states (`S` sleeping, `R` running, `Z` exited but not reaped...) of `parent`'s child
/// processes, from `/proc`.
fn children_of(parent: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces, so read after its `)`.
            let mut rest = stat.get(stat.rfind(')')? + 2..)?.split(' ');
            let state = rest.next()?.to_owned();
            let ppid: u32 = rest.next()?.parse().ok()?;
            (ppid == parent).then_some(state)
        })
        .collect()
}

fn config_path(dir: &TempDir) -> PathBuf {
    dir.path().join("mcp.json")
}

#[tokio::test]
async fn an_added_server_connects_and_the_agent_hears_of_its_tools() -> anyhow::Result<()> {
    let dir = TempDir::new("reload-add")?;
    let path = config_path(&dir);
    write(&path, &json!({ "mcpServers": { "sql": sql(&dir, &[])? } }))?;
    let (agent, recorder) = start_stdio(&path).await?;
    let before = tool_names(&agent).await?;
    assert!(
        before.iter().any(|t| t == "sql__get_customer"),
        "{before:?}"
    );
    assert!(
        !before.iter().any(|t| t.starts_with("rest__")),
        "{before:?}"
    );
    let digest = config_status(&agent).await["digest"].clone();
    let heard = recorder.tools_changed.load(Ordering::SeqCst);

    write(
        &path,
        &json!({ "mcpServers": { "sql": sql(&dir, &[])?, "rest": rest()? } }),
    )?;
    let added = testkit::eventually(Duration::from_secs(20), || async {
        recorder.tools_changed.load(Ordering::SeqCst) > heard
            && tool_names(&agent)
                .await
                .unwrap_or_default()
                .contains(&"rest__get_product".to_owned())
    })
    .await;
    assert!(
        added,
        "the new server's tools appear and list_changed is sent"
    );
    // The kept server was not restarted: its calls still work, on the same session.
    call_ok(
        &agent,
        "sql__get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    let status = config_status(&agent).await;
    assert_eq!(status["reloads"], 1, "{status}");
    assert_ne!(status["digest"], digest, "the digest follows the file");
    assert!(status["lastReloadError"].is_null(), "{status}");
    agent.cancel().await?;
    Ok(())
}

/// A 2026-07-28 agent has no session to be notified in: a reload reaches it on its
/// `subscriptions/listen` stream, like any other change of the tool list.
#[tokio::test]
async fn a_2026_agent_hears_of_a_reloads_tools_on_its_listen_stream() -> anyhow::Result<()> {
    let dir = TempDir::new("reload-listen")?;
    let path = config_path(&dir);
    write(&path, &json!({ "mcpServers": { "sql": sql(&dir, &[])? } }))?;
    let agent = testkit::connect_stdio_with(
        "mcp-orchestrator",
        &[
            "serve".to_owned(),
            "--config".to_owned(),
            path.display().to_string(),
        ],
        testkit::Lifecycle::Stateless,
    )
    .await?;
    let mut subscription = agent
        .peer()
        .listen(
            rmcp::model::SubscriptionFilter::builder()
                .tools_list_changed()
                .build(),
        )
        .await?;
    assert_eq!(subscription.acknowledged().tools_list_changed, Some(true));
    write(
        &path,
        &json!({ "mcpServers": { "sql": sql(&dir, &[])?, "rest": rest()? } }),
    )?;
    let heard = testkit::hears_tool_listed(
        &mut subscription,
        agent.peer(),
        "rest__get_product",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        heard,
        "the listen stream carried tools/list_changed with the added server's tools"
    );
    agent.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_removed_server_finishes_its_running_call_then_goes() -> anyhow::Result<()> {
    let dir = TempDir::new("reload-remove")?;
    let path = config_path(&dir);
    let slow_dir = TempDir::new("reload-remove-slow")?;
    write(
        &path,
        &json!({ "mcpServers": {
            "sql": sql(&dir, &[])?,
            "slow": sql(&slow_dir, &["--latency-ms", "2500"])?,
        } }),
    )?;
    let (agent, recorder, orchestrator) = start_stdio_with_pid(&path).await?;
    assert!(
        tool_names(&agent)
            .await?
            .contains(&"slow__get_customer".to_owned())
    );
    // Each stdio server runs beside a watchdog that kills its group if the orchestrator dies.
    assert_eq!(children_of(orchestrator).len(), 4, "sql and slow run");
    let peer = agent.peer().clone();
    let running = tokio::spawn(async move {
        call(
            &testkit::PeerClient(peer),
            "slow__get_customer",
            json!({ "customerId": "CUST-0002" }),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard = recorder.tools_changed.load(Ordering::SeqCst);
    write(&path, &json!({ "mcpServers": { "sql": sql(&dir, &[])? } }))?;
    let gone = testkit::eventually(Duration::from_secs(10), || async {
        !tool_names(&agent)
            .await
            .unwrap_or_default()
            .iter()
            .any(|t| t.starts_with("slow__"))
    })
    .await;
    assert!(gone, "the removed server's tools leave the list at once");
    assert!(recorder.tools_changed.load(Ordering::SeqCst) > heard);
    let draining = config_status(&agent).await["draining"].clone();
    assert_eq!(
        draining,
        json!(["slow"]),
        "the removed server drains while its call runs"
    );
    let result = running.await??;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert!(
        text_of(&result).contains("CUST-0002"),
        "{}",
        text_of(&result)
    );
    let stopped = testkit::eventually(Duration::from_secs(10), || async {
        config_status(&agent).await["draining"] == json!([])
    })
    .await;
    assert!(stopped, "the drained server stops once its call finished");
    // Its child (and that child's watchdog) exited and were reaped: what is left is `sql`'s
    // pair, and no zombie.
    let reaped = testkit::eventually(Duration::from_secs(10), || async {
        let children = children_of(orchestrator);
        children.len() == 2 && !children.iter().any(|s| s == "Z")
    })
    .await;
    assert!(
        reaped,
        "children of the orchestrator (their states): {:?}",
        children_of(orchestrator)
    );
    let after = call(
        &agent,
        "slow__get_customer",
        json!({ "customerId": "CUST-0002" }),
    )
    .await;
    assert!(
        after.is_err() || after.as_ref().is_ok_and(|r| r.is_error == Some(true)),
        "new calls no longer reach it: {after:?}"
    );
    agent.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_broken_file_is_refused_and_the_running_config_stays() -> anyhow::Result<()> {
    let dir = TempDir::new("reload-broken")?;
    let path = config_path(&dir);
    let good = json!({
        "mcpServers": { "sql": sql(&dir, &[])? },
        "orchestrator": { "composites": { "card": card("name", "sql.get_customer") } }
    });
    write(&path, &good)?;
    let (agent, _) = start_stdio(&path).await?;
    let first = call_ok(&agent, "card", json!({ "customerId": "CUST-0001" })).await?;
    assert!(first.get("name").is_some(), "{first}");

    // Not JSON at all.
    write_text(&path, "{ \"mcpServers\": ")?;
    let refused = testkit::eventually(Duration::from_secs(10), || async {
        config_status(&agent).await["lastReloadError"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not valid JSON"))
    })
    .await;
    assert!(refused, "{}", config_status(&agent).await);
    call_ok(&agent, "card", json!({ "customerId": "CUST-0001" })).await?;

    // JSON, with a bad field: the error names its path.
    let mut bad = good.clone();
    bad["orchestrator"]["limits"] = json!({ "maxResultBytes": 0 });
    write(&path, &bad)?;
    let named = testkit::eventually(Duration::from_secs(10), || async {
        config_status(&agent).await["lastReloadError"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("orchestrator.limits.maxResultBytes"))
    })
    .await;
    assert!(named, "{}", config_status(&agent).await);

    // A composite step naming a tool the connected server does not list.
    let mut missing = good.clone();
    missing["orchestrator"]["composites"]["card"] = card("name", "sql.no_such_tool");
    write(&path, &missing)?;
    let named = testkit::eventually(Duration::from_secs(10), || async {
        config_status(&agent).await["lastReloadError"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("orchestrator.composites.card.steps.c.call"))
    })
    .await;
    assert!(named, "{}", config_status(&agent).await);
    let still = call_ok(&agent, "card", json!({ "customerId": "CUST-0001" })).await?;
    assert!(
        still.get("name").is_some(),
        "the old composite is in force: {still}"
    );
    assert_eq!(config_status(&agent).await["reloads"], 0);

    // Fixed, with the composite changed: it applies to the next call, and the error clears.
    let mut fixed = good.clone();
    fixed["orchestrator"]["composites"]["card"] = card("customerName", "sql.get_customer");
    write(&path, &fixed)?;
    let applied = testkit::eventually(Duration::from_secs(10), || async {
        config_status(&agent).await["reloads"] == 1
    })
    .await;
    assert!(applied, "{}", config_status(&agent).await);
    let status = config_status(&agent).await;
    assert!(status["lastReloadError"].is_null(), "{status}");
    let changed = call_ok(&agent, "card", json!({ "customerId": "CUST-0001" })).await?;
    assert!(changed.get("customerName").is_some(), "{changed}");
    agent.cancel().await?;
    Ok(())
}

/// An HTTP orchestrator with a token and no file watcher (reloads come from SIGHUP or the
/// admin endpoint only).
async fn start_http(path: &Path, extra: &[&str]) -> anyhow::Result<HttpServer> {
    let mut args: Vec<String> = [
        "serve",
        "--config",
        &path.display().to_string(),
        "--http",
        "127.0.0.1:0",
        "--token",
        TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    HttpServer::spawn("mcp-orchestrator", &args, &HashMap::new()).await
}

fn unwatched(servers: Value) -> Value {
    json!({ "mcpServers": servers, "orchestrator": {
        "reload": { "watch": false },
        "readiness": { "requiredServers": ["sql"] }
    } })
}

#[tokio::test]
async fn admin_reload_and_sighup_apply_the_file_and_refusals_name_the_field() -> anyhow::Result<()>
{
    let dir = TempDir::new("reload-admin")?;
    let path = config_path(&dir);
    write(&path, &unwatched(json!({ "sql": sql(&dir, &[])? })))?;
    let server = start_http(&path, &[]).await?;
    let http = reqwest::Client::new();
    let admin = format!("{}/admin/reload", server.base());

    let anonymous = http.post(&admin).send().await?;
    assert_eq!(
        anonymous.status(),
        401,
        "the admin endpoint needs the token"
    );

    let same = http.post(&admin).bearer_auth(TOKEN).send().await?;
    assert_eq!(same.status(), 200);
    let same: Value = same.json().await?;
    assert_eq!(same["applied"], false, "{same}");

    write(
        &path,
        &unwatched(json!({ "sql": sql(&dir, &[])?, "rest": rest()? })),
    )?;
    let applied = http.post(&admin).bearer_auth(TOKEN).send().await?;
    assert_eq!(applied.status(), 200);
    let applied: Value = applied.json().await?;
    assert_eq!(applied["applied"], true, "{applied}");
    assert_eq!(applied["changes"]["added"], json!(["rest"]), "{applied}");
    assert_eq!(applied["changes"]["unchanged"], json!(["sql"]), "{applied}");

    // A changed entry restarts that server: the new connection serves the next calls.
    write(
        &path,
        &unwatched(json!({ "sql": sql(&dir, &["--latency-ms", "1"])?, "rest": rest()? })),
    )?;
    let restarted = http.post(&admin).bearer_auth(TOKEN).send().await?;
    assert_eq!(restarted.status(), 200);
    let restarted: Value = restarted.json().await?;
    assert_eq!(
        restarted["changes"]["restarted"],
        json!(["sql"]),
        "{restarted}"
    );
    assert_eq!(
        restarted["changes"]["unchanged"],
        json!(["rest"]),
        "{restarted}"
    );
    let client = server.connect(Some(TOKEN)).await?;
    let answered = testkit::eventually(Duration::from_secs(10), || async {
        call_ok(
            &client,
            "sql__get_customer",
            json!({ "customerId": "CUST-0004" }),
        )
        .await
        .is_ok()
    })
    .await;
    assert!(answered, "the restarted server answers");
    client.cancel().await?;

    let mut bad = unwatched(json!({ "sql": sql(&dir, &[])? }));
    bad["orchestrator"]["reload"]["debounceMs"] = json!(60_000);
    write(&path, &bad)?;
    let refused = http.post(&admin).bearer_auth(TOKEN).send().await?;
    assert_eq!(refused.status(), 422);
    let refused: Value = refused.json().await?;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("orchestrator.reload.debounceMs")),
        "{refused}"
    );

    let metrics = http
        .get(format!("{}/metrics", server.base()))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .text()
        .await?;
    for (outcome, n) in [("applied", 2), ("unchanged", 1), ("refused", 1)] {
        let line = format!("mcp_orchestrator_config_reloads_total{{outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // SIGHUP reloads the (fixed) file: rest goes.
    write(&path, &unwatched(json!({ "sql": sql(&dir, &[])? })))?;
    server.signal("HUP")?;
    let client = server.connect(Some(TOKEN)).await?;
    let reloaded = testkit::eventually(Duration::from_secs(10), || async {
        let status = config_status(&client).await;
        status["reloads"] == 3 && status["lastReloadError"].is_null()
    })
    .await;
    assert!(reloaded, "{}", config_status(&client).await);
    let gone = testkit::eventually(Duration::from_secs(10), || async {
        !tool_names(&client)
            .await
            .unwrap_or_default()
            .iter()
            .any(|t| t.starts_with("rest__"))
    })
    .await;
    assert!(gone);
    client.cancel().await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn admin_reload_is_refused_on_a_front_without_a_token() -> anyhow::Result<()> {
    let dir = TempDir::new("reload-admin-open")?;
    let path = config_path(&dir);
    write(&path, &unwatched(json!({ "sql": sql(&dir, &[])? })))?;
    let args = [
        "serve".to_owned(),
        "--config".to_owned(),
        path.display().to_string(),
        "--http".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    let server = HttpServer::spawn("mcp-orchestrator", &args, &HashMap::new()).await?;
    let response = reqwest::Client::new()
        .post(format!("{}/admin/reload", server.base()))
        .send()
        .await?;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await?;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("--token")),
        "{body}"
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn readyz_waits_for_required_servers_and_turns_503_while_draining() -> anyhow::Result<()> {
    let dir = TempDir::new("reload-ready")?;
    let path = config_path(&dir);
    write(&path, &unwatched(json!({ "sql": sql(&dir, &[])? })))?;
    let server = start_http(&path, &["--drain-delay-ms", "3000"]).await?;
    let http = reqwest::Client::new();
    let healthz = http
        .get(format!("{}/healthz", server.base()))
        .send()
        .await?;
    assert_eq!(healthz.status(), 200, "health needs no token");
    let readyz = format!("{}/readyz", server.base());
    let ready = http.get(&readyz).send().await?;
    assert_eq!(
        ready.status(),
        200,
        "sql is connected once the front listens"
    );
    let client = server.connect(Some(TOKEN)).await?;

    server.signal("TERM")?;
    let draining = testkit::eventually(Duration::from_secs(2), || async {
        http.get(&readyz)
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(draining, "readyz answers 503 as soon as the signal arrives");
    // Still serving during the drain delay.
    call_ok(
        &client,
        "sql__get_customer",
        json!({ "customerId": "CUST-0003" }),
    )
    .await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn readyz_names_a_required_server_that_is_not_connected() -> anyhow::Result<()> {
    let dir = TempDir::new("reload-unready")?;
    let path = config_path(&dir);
    let config = json!({
        "mcpServers": {
            "sql": sql(&dir, &[])?,
            "ghost": { "type": "http", "url": "http://127.0.0.1:9/mcp" }
        },
        "orchestrator": { "readiness": { "requiredServers": ["ghost"] } }
    });
    write(&path, &config)?;
    let server = start_http(&path, &[]).await?;
    let response = reqwest::Client::new()
        .get(format!("{}/readyz", server.base()))
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await?;
    assert_eq!(body["missing"], json!(["ghost"]), "{body}");
    server.stop().await?;
    Ok(())
}
