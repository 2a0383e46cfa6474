//! What the orchestrator advertises is what it serves: the union of its upstreams' capabilities
//! and its own part, each advertised method answering and each unadvertised one refused with
//! `-32601`; and the cache hints (`ttlMs`, `cacheScope`) its lists and reads carry. The upstreams
//! are `unruly-mcp-server` (crates/testkit) with differing `--capabilities`.

// Logging and `resources/subscribe` are deprecated from 2026-07-28 on; 2025-11-25 agents use them.
#![allow(deprecated)]

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use rmcp::{
    ServiceError,
    model::{
        CacheScope, ErrorCode, GetPromptRequestParams, LoggingLevel, PaginatedRequestParams,
        ReadResourceRequestParams, ReadResourceResult, ResourceContents, ServerCapabilities,
        SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams,
    },
    service::ClientCacheConfig,
};
use serde_json::{Value, json};
use testkit::{Client, HttpServer, Lifecycle, TempDir, bin_path};

/// Upstream `unruly` started with `args`.
fn unruly(args: &[&str]) -> anyhow::Result<Value> {
    Ok(json!({ "command": bin_path("unruly-mcp-server")?, "args": args }))
}

/// Everything an upstream can offer that the orchestrator relays.
const RICH: &str =
    r#"{"tools":{},"prompts":{},"completions":{},"resources":{"subscribe":true},"logging":{}}"#;
/// Prompts and resources, without completions or subscriptions.
const QUIET: &str = r#"{"tools":{},"prompts":{},"resources":{}}"#;

/// `mcp-orchestrator serve --http` over `servers`; it listens once every upstream connected.
async fn serve(dir: &TempDir, servers: Value) -> anyhow::Result<HttpServer> {
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, json!({ "mcpServers": servers }).to_string())?;
    let args = [
        "serve".to_owned(),
        "--config".to_owned(),
        path.display().to_string(),
        "--http".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    HttpServer::spawn("mcp-orchestrator", &args, &Default::default()).await
}

/// A client of `front` whose own response cache is off, so every answer is the orchestrator's.
async fn agent(front: &HttpServer, lifecycle: Lifecycle) -> anyhow::Result<Client> {
    let client = front.connect_with(None, lifecycle).await?;
    client
        .peer()
        .set_response_cache_config(ClientCacheConfig::disabled())
        .await;
    Ok(client)
}

fn capabilities(client: &Client) -> anyhow::Result<ServerCapabilities> {
    Ok(client
        .peer_info()
        .context("no server info after the handshake")?
        .capabilities
        .clone())
}

/// The JSON-RPC error code of a failed request.
fn code<T: std::fmt::Debug>(outcome: Result<T, ServiceError>) -> anyhow::Result<ErrorCode> {
    match outcome {
        Err(ServiceError::McpError(e)) => Ok(e.code),
        other => anyhow::bail!("expected a JSON-RPC error, got {other:?}"),
    }
}

fn read_text(result: &ReadResourceResult) -> String {
    match &result.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => format!("{other:?}"),
    }
}

async fn read(client: &Client, uri: &str) -> anyhow::Result<ReadResourceResult> {
    Ok(client
        .peer()
        .read_resource(ReadResourceRequestParams::new(uri))
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_advertises_the_union_of_its_upstreams_and_answers_every_method_it_advertises()
-> anyhow::Result<()> {
    let dir = TempDir::new("caps-union")?;
    let front = serve(
        &dir,
        json!({
            "plain": unruly(&[])?,
            "rich": unruly(&["--capabilities", RICH])?,
            "quiet": unruly(&["--capabilities", QUIET])?,
        }),
    )
    .await?;
    let client = agent(&front, Lifecycle::Initialize).await?;
    let caps = capabilities(&client)?;
    assert_eq!(
        serde_json::to_value(&caps)?,
        json!({
            "completions": {},
            "logging": {},
            "prompts": { "listChanged": true },
            "resources": { "listChanged": true, "subscribe": true },
            "tools": { "listChanged": true }
        })
    );
    // A 2026-07-28 agent's server/discover sees the same union.
    let stateless = agent(&front, Lifecycle::Stateless).await?;
    assert_eq!(capabilities(&stateless)?, caps);

    let peer = client.peer();
    let tools = client.list_all_tools().await?;
    for name in ["plain__echo", "rich__echo", "quiet__echo"] {
        ensure!(tools.iter().any(|t| t.name == name), "{name} listed");
    }
    let resources = client.list_all_resources().await?;
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            "orchestrator://status",
            "quiet+unruly://note",
            "rich+unruly://note"
        ]
    );
    client.list_all_resource_templates().await?;
    assert_eq!(
        read_text(&read(&client, "rich+unruly://note").await?),
        "read 1"
    );
    testkit::read_status(&client).await?;

    // Subscriptions: served for the server that offers them, refused as a bad parameter (not
    // an unknown method) for one that does not, which never hears of it.
    {
        peer.subscribe(SubscribeRequestParams::new("rich+unruly://note"))
            .await?;
        peer.unsubscribe(UnsubscribeRequestParams::new("rich+unruly://note"))
            .await?;
        peer.subscribe(SubscribeRequestParams::new("orchestrator://status"))
            .await?;
        let refused = peer
            .subscribe(SubscribeRequestParams::new("quiet+unruly://note"))
            .await;
        assert_eq!(code(refused)?, ErrorCode::INVALID_PARAMS);
    }

    let prompts = client.list_all_prompts().await?;
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["quiet__greet", "rich__greet"]);
    let mut args = serde_json::Map::new();
    args.insert("name".into(), "Ada".into());
    let greeting = peer
        .get_prompt(GetPromptRequestParams::new("rich__greet").with_arguments(args))
        .await?;
    assert!(serde_json::to_string(&greeting.messages)?.contains("Hello, Ada"));

    // Completions: relayed to the server that offers them; a prompt of a server that does not
    // has none to suggest (answered here: sent there, it would be an unknown method).
    let offered = peer
        .complete_prompt_argument("rich__greet", "name", "a", None)
        .await?;
    assert_eq!(offered.values, ["alpha"]);
    let none = peer
        .complete_prompt_argument("quiet__greet", "name", "a", None)
        .await?;
    assert!(none.values.is_empty(), "{none:?}");

    peer.set_level(SetLevelRequestParams::new(LoggingLevel::Info))
        .await?;
    client.cancel().await?;
    stateless.cancel().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_no_upstream_offers_is_neither_advertised_nor_served() -> anyhow::Result<()> {
    let dir = TempDir::new("caps-plain")?;
    let front = serve(&dir, json!({ "plain": unruly(&[])? })).await?;
    for lifecycle in [Lifecycle::Initialize, Lifecycle::Stateless] {
        let client = agent(&front, lifecycle).await?;
        let caps = capabilities(&client)?;
        assert_eq!(
            serde_json::to_value(&caps)?,
            json!({
                "logging": {},
                "resources": { "listChanged": true },
                "tools": { "listChanged": true }
            }),
            "{lifecycle:?}"
        );
        let peer = client.peer();
        // What the orchestrator serves itself answers.
        client.list_all_tools().await?;
        testkit::read_status(&client).await?;
        let not_found = ErrorCode::METHOD_NOT_FOUND;
        assert_eq!(code(peer.list_prompts(None).await)?, not_found);
        assert_eq!(
            code(
                peer.get_prompt(GetPromptRequestParams::new("plain__x"))
                    .await
            )?,
            not_found
        );
        assert_eq!(
            code(
                peer.complete_prompt_argument("plain__x", "a", "b", None)
                    .await
            )?,
            not_found
        );
        if lifecycle == Lifecycle::Initialize {
            {
                let subscribe = peer
                    .subscribe(SubscribeRequestParams::new("orchestrator://status"))
                    .await;
                assert_eq!(code(subscribe)?, not_found);
                let unsubscribe = peer
                    .unsubscribe(UnsubscribeRequestParams::new("orchestrator://status"))
                    .await;
                assert_eq!(code(unsubscribe)?, not_found);
            }
            peer.set_level(SetLevelRequestParams::new(LoggingLevel::Info))
                .await?;
        }
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_reads_carry_the_upstreams_cache_hints_and_only_public_reads_are_kept()
-> anyhow::Result<()> {
    let dir = TempDir::new("caps-hints")?;
    let resources = r#"{"tools":{},"resources":{}}"#;
    let front = serve(
        &dir,
        json!({
            "open": unruly(&[
                "--capabilities", resources,
                "--list-hint", r#"{"ttlMs":30000,"cacheScope":"public"}"#,
                "--read-hint", r#"{"ttlMs":60000,"cacheScope":"public"}"#,
            ])?,
            "own": unruly(&[
                "--capabilities", resources,
                "--list-hint", r#"{"ttlMs":600000,"cacheScope":"private"}"#,
                "--read-hint", r#"{"ttlMs":60000,"cacheScope":"private"}"#,
            ])?,
        }),
    )
    .await?;
    for lifecycle in [Lifecycle::Initialize, Lifecycle::Stateless] {
        let client = agent(&front, lifecycle).await?;
        let peer = client.peer();
        let page = || Some(PaginatedRequestParams::default());
        // The shortest upstream TTL (what is left of it), private because one part is.
        let tools = peer.list_tools(page()).await?;
        let ttl = tools.ttl_ms.context("tools/list carries ttlMs")?;
        ensure!(
            (20_000..=30_000).contains(&ttl),
            "{lifecycle:?}: ttlMs {ttl}"
        );
        assert_eq!(tools.cache_scope, Some(CacheScope::Private));
        let listed = peer.list_resources(page()).await?;
        let ttl = listed.ttl_ms.context("resources/list carries ttlMs")?;
        ensure!(
            (20_000..=30_000).contains(&ttl),
            "{lifecycle:?}: ttlMs {ttl}"
        );
        assert_eq!(listed.cache_scope, Some(CacheScope::Private));
        // The status resource: stale at once, private.
        let status = read(&client, "orchestrator://status").await?;
        assert_eq!(
            (status.ttl_ms, status.cache_scope),
            (Some(0), Some(CacheScope::Private))
        );
        client.cancel().await?;
    }

    let client = agent(&front, Lifecycle::Initialize).await?;
    // A public read is kept and served to the next reader with what is left of its TTL...
    let first = read(&client, "open+unruly://note").await?;
    assert_eq!(read_text(&first), "read 1");
    assert_eq!(first.ttl_ms, Some(60_000));
    let other = agent(&front, Lifecycle::Initialize).await?;
    let second = read(&other, "open+unruly://note").await?;
    assert_eq!(
        read_text(&second),
        "read 1",
        "served from the orchestrator's cache"
    );
    let left = second.ttl_ms.context("a hint")?;
    ensure!(left > 0 && left <= 60_000, "{left} ms left");
    assert_eq!(second.cache_scope, Some(CacheScope::Public));
    assert_eq!(
        second.meta.as_ref().and_then(|m| m.get("cached")),
        Some(&Value::Bool(true))
    );
    // ...a private one never is: each reader's read reaches the upstream.
    assert_eq!(
        read_text(&read(&client, "own+unruly://note").await?),
        "read 1"
    );
    let again = read(&other, "own+unruly://note").await?;
    assert_eq!(read_text(&again), "read 2");
    assert_eq!(again.cache_scope, Some(CacheScope::Private));
    client.cancel().await?;
    other.cancel().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_lists_go_stale_is_listed_again() -> anyhow::Result<()> {
    let dir = TempDir::new("caps-relist")?;
    let front = serve(
        &dir,
        json!({
            "brief": unruly(&[
                "--note-lists",
                "--list-hint", r#"{"ttlMs":1000,"cacheScope":"public"}"#,
            ])?,
            "silent": unruly(&["--note-lists"])?,
        }),
    )
    .await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    // Upstream stderr joins the orchestrator's log, tagged with the server.
    let listing = |server: &str, n: u32| {
        front.count_lines(&[
            &format!("unruly: tools/list #{n}"),
            &format!("server={server}"),
        ])
    };
    while listing("brief", 3) == 0 {
        ensure!(
            Instant::now() < deadline,
            "not listed three times in 30 s: {:?}",
            front.stderr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once a second, no more: the first listing came before the front listened.
    ensure!(
        started.elapsed() >= Duration::from_millis(1500),
        "three listings in {:?}",
        started.elapsed()
    );
    // An upstream that gave no TTL is kept current by notifications, never polled.
    assert_eq!(listing("silent", 2), 0, "{:?}", front.stderr);
    Ok(())
}
