//! What a tool's annotations promise, read one way everywhere: caching, safe retries and a
//! composite's own annotation all go by these.

use rmcp::model::Tool;

/// Whether the server says `tool` only reads: what caching, safe retries and a composite's own
/// annotation go by.
pub fn is_read_only(tool: &Tool) -> bool {
    tool.annotations
        .as_ref()
        .and_then(|a| a.read_only_hint)
        .unwrap_or(false)
}

/// Whether the server says repeating a call of `tool` with the same arguments has no further
/// effect.
pub fn is_idempotent(tool: &Tool) -> bool {
    tool.annotations
        .as_ref()
        .and_then(|a| a.idempotent_hint)
        .unwrap_or(false)
}
