//! The orchestrator's config for one scenario: the suite's test server as its only upstream, over
//! streamable HTTP, with the defaults a user's config would have.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

/// The upstream's name in the config, and so the prefix of the tools agents see.
pub const SERVER: &str = "conformance";

/// The config naming `url` as the one upstream.
pub fn for_url(url: &str) -> Value {
    json!({ "mcpServers": { SERVER: { "type": "http", "url": url } } })
}

/// Writes [`for_url`] to `dir/mcp.json` and returns its path.
pub fn write(dir: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("mcp.json");
    let text = serde_json::to_string_pretty(&for_url(url))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The name agents see for the upstream's tool `tool`.
pub fn exposed(tool: &str) -> String {
    format!("{SERVER}__{tool}")
}
