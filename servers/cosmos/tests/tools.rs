//! Every tool over both transports, against the real binary.

mod common;

use common::{BIN, tour};
use testkit::{HttpServer, Lifecycle, TempDir, connect_stdio, connect_stdio_with};

#[tokio::test]
async fn every_tool_over_stdio() -> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-tools-stdio")?;
    let client = connect_stdio(BIN, &["--data-dir".into(), dir.arg()]).await?;
    tour(&client).await?;
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn every_tool_over_http() -> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-tools-http")?;
    let server = HttpServer::start(BIN, &["--data-dir".into(), dir.arg()]).await?;
    let client = server.connect(None).await?;
    tour(&client).await?;
    client.cancel().await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn every_tool_over_stateless_http_with_a_private_store() -> anyhow::Result<()> {
    let server = HttpServer::start(
        BIN,
        &["--data-dir".into(), ":memory:".into(), "--stateless".into()],
    )
    .await?;
    let client = server.connect(None).await?;
    tour(&client).await?;
    client.cancel().await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn every_tool_over_the_stateless_2026_protocol() -> anyhow::Result<()> {
    let server = HttpServer::start(BIN, &["--data-dir".into(), ":memory:".into()]).await?;
    let client = server.connect_with(None, Lifecycle::Stateless).await?;
    tour(&client).await?;
    client.cancel().await?;
    let stdio = connect_stdio_with(
        BIN,
        &["--data-dir".into(), ":memory:".into()],
        Lifecycle::Stateless,
    )
    .await?;
    tour(&stdio).await?;
    stdio.cancel().await?;
    server.stop().await?;
    Ok(())
}
