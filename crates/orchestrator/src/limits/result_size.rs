//! Results over `orchestrator.limits.maxResultBytes` are cut down to the limit, visibly: the
//! result stays a valid `CallToolResult`, its text ends with a marker the agent reads, and
//! `_meta.truncated` says what was cut, so truncation is never silent.
//!
//! What is kept, in order of value to an agent (which reads `content` text):
//! 1. `structuredContent` is dropped when the text alone then fits whole (the text carries the
//!    same JSON by MCP convention), or when it is over half the limit; a small one is kept.
//! 2. Content blocks are kept whole in order while they fit; the first text block that does not
//!    is cut at a UTF-8 character boundary and ends with `… [truncated by mcp-orchestrator: …]`;
//!    the blocks after it are dropped (a marker block is added if no text block was cut).
//! 3. If `_meta` alone leaves no room (a huge `sources` list, say), its largest entries are dropped
//!    and named in `_meta.truncated.metaKeysDropped`.
//!
//! Sizes are those of the result serialized as JSON, as it travels to the agent.

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;
use serde_json::Value;

use super::human_bytes;

/// The `_meta` key that reports a truncation.
pub const META_KEY: &str = "truncated";
/// How every marker starts, for agents and tests to look for.
pub const MARKER_PREFIX: &str = "[truncated by mcp-orchestrator:";

/// What a truncation did; written to `_meta.truncated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Truncation {
    /// The result's serialized size before.
    pub original_bytes: usize,
    /// The limit it was cut to.
    pub limit_bytes: usize,
    /// Whether `structuredContent` was dropped.
    pub structured_content_dropped: bool,
    /// Content blocks left out entirely (a block cut short is not counted).
    pub content_blocks_dropped: usize,
    /// `_meta` entries dropped because `_meta` alone left no room.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub meta_keys_dropped: Vec<String>,
}

pub use kit::json_size::serialized_len;

/// Bytes one byte of a string takes inside a JSON string literal (serde_json's escaping).
fn escaped_byte_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        0x00..=0x1f => 6,
        _ => 1,
    }
}

/// Bytes `s` takes inside a JSON string literal.
fn escaped_len(s: &str) -> usize {
    s.bytes().map(escaped_byte_len).sum()
}

/// The longest prefix of `s`, ending at a character boundary, whose escaped form fits `budget`.
pub fn cut_to_escaped(s: &str, budget: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        let mut buf = [0u8; 4];
        let len: usize = c.encode_utf8(&mut buf).bytes().map(escaped_byte_len).sum();
        if used + len > budget {
            return &s[..i];
        }
        used += len;
    }
    s
}

/// The text the agent reads where the result was cut.
pub fn marker(original_bytes: usize, limit_bytes: usize) -> String {
    format!(
        "{MARKER_PREFIX} the result was {}, over the {} limit; ask for less]",
        human_bytes(original_bytes),
        human_bytes(limit_bytes)
    )
}

fn set_meta(result: &mut CallToolResult, truncation: &Truncation) {
    let value = serde_json::to_value(truncation).unwrap_or(Value::Null);
    result
        .meta
        .get_or_insert_with(Default::default)
        .insert(META_KEY.into(), value);
}

/// A size `result` cannot exceed when serialized: text and structured content are bounded
/// from their lengths ([`kit::json_size::upper_bound`]); other blocks, annotations and `_meta`
/// are rare or small and measured exactly.
fn size_bound(result: &CallToolResult) -> usize {
    use kit::json_size::{string_bound, upper_bound};
    // The keys and punctuation around the fields: `{"resultType":"complete","content":[],
    // "structuredContent":,"isError":false,"_meta":}` and a comma per block.
    let mut n: usize = 128;
    for block in &result.content {
        n = n.saturating_add(match block {
            ContentBlock::Text(text) => string_bound(&text.text)
                .saturating_add(text.meta.as_ref().map_or(0, serialized_len))
                .saturating_add(text.annotations.as_ref().map_or(0, serialized_len))
                // `{"type":"text","text":,"_meta":,"annotations":}`
                .saturating_add(64),
            _ => serialized_len(block).saturating_add(1),
        });
    }
    n = n.saturating_add(result.structured_content.as_ref().map_or(0, upper_bound));
    n.saturating_add(result.meta.as_ref().map_or(0, serialized_len))
}

/// Cuts `result` down to `limit` serialized bytes when it is larger, as the module describes;
/// returns what was done, or `None` when it already fits. `limit` must leave room for the
/// marker and `_meta.truncated` (the config layer requires at least 1 KiB).
pub fn truncate(result: &mut CallToolResult, limit: usize) -> Option<Truncation> {
    // Most results are far under the limit: a walk that formats nothing shows it, where
    // measuring the exact size cost as much as writing the result out again.
    if size_bound(result) <= limit {
        return None;
    }
    let original_bytes = serialized_len(result);
    if original_bytes <= limit {
        return None;
    }
    let content = std::mem::take(&mut result.content);
    let mut truncation = Truncation {
        original_bytes,
        limit_bytes: limit,
        structured_content_dropped: false,
        // The most it can be: the placeholder is never shorter than the final value.
        content_blocks_dropped: content.len(),
        meta_keys_dropped: Vec::new(),
    };
    let marker = marker(original_bytes, limit);
    let cut_marker = format!("… {marker}");
    // Room for the marker, whether it ends a cut block or stands in a block of its own.
    let reserve = serialized_len(&ContentBlock::text(cut_marker.as_str())) + 1;
    let content_len: usize = content.iter().map(|b| serialized_len(b) + 1).sum();

    set_meta(result, &truncation);
    if let Some(structured) = &result.structured_content {
        let structured_len = serialized_len(structured);
        let without = serialized_len(result) - structured_len;
        let text_fits_alone = without + content_len <= limit;
        if text_fits_alone || structured_len > limit / 2 {
            result.structured_content = None;
            truncation.structured_content_dropped = true;
            set_meta(result, &truncation);
        }
    }
    // `_meta` that leaves no room for even the marker loses its largest entries first.
    let mut base = serialized_len(result);
    while base + reserve > limit {
        let largest = result.meta.as_ref().and_then(|meta| {
            meta.iter()
                .filter(|(k, _)| k.as_str() != META_KEY)
                .max_by_key(|(_, v)| serialized_len(v))
                .map(|(k, _)| k.clone())
        });
        let Some(key) = largest else { break };
        if let Some(meta) = result.meta.as_mut() {
            meta.remove(&key);
        }
        truncation.meta_keys_dropped.push(key);
        set_meta(result, &truncation);
        base = serialized_len(result);
    }

    let total = content.len();
    let mut remaining = limit.saturating_sub(base + reserve);
    let mut kept = Vec::with_capacity(total);
    let mut marked = false;
    for block in content {
        let size = serialized_len(&block) + 1;
        if size <= remaining {
            remaining -= size;
            kept.push(block);
            continue;
        }
        if let ContentBlock::Text(mut text) = block {
            let shell = size - escaped_len(&text.text);
            if shell <= remaining {
                let cut = cut_to_escaped(&text.text, remaining - shell).len();
                text.text.truncate(cut);
                text.text.push_str(&cut_marker);
                kept.push(ContentBlock::Text(text));
                marked = true;
            }
        }
        break;
    }
    truncation.content_blocks_dropped = total - kept.len();
    if !marked {
        kept.push(ContentBlock::text(marker));
    }
    result.content = kept;
    set_meta(result, &truncation);
    Some(truncation)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_quick_bound_is_never_below_the_size() {
        let mut result = CallToolResult::structured(serde_json::json!({
            "rows": [{"id": 1, "name": "a\"b\u{1}", "price": 12.5}], "total": null
        }));
        result
            .content
            .push(ContentBlock::text("\n\t\\ é ✓".repeat(50)));
        result
            .content
            .push(ContentBlock::image("aGVsbG8=", "image/png"));
        result.meta = Some(rmcp::model::MetaObject(
            serde_json::json!({"k": "v"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ));
        result.is_error = Some(false);
        assert!(size_bound(&result) >= serialized_len(&result));
        assert!(
            size_bound(&CallToolResult::default()) >= serialized_len(&CallToolResult::default())
        );
    }

    use super::*;
    use serde_json::json;

    fn text(result: &CallToolResult) -> String {
        result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn truncated_meta(result: &CallToolResult) -> Value {
        result
            .meta
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .cloned()
            .unwrap_or(Value::Null)
    }

    #[test]
    fn a_result_within_the_limit_is_left_alone() {
        let mut result = CallToolResult::structured(json!({ "rows": [1, 2, 3] }));
        let before = result.clone();
        assert_eq!(truncate(&mut result, 1024), None);
        assert_eq!(result, before);
    }

    #[test]
    fn a_long_text_is_cut_at_a_character_boundary_with_the_marker_and_meta() {
        // Three bytes per character: a cut in the middle of one would not be UTF-8.
        let long = "€".repeat(3_000);
        let mut result = CallToolResult::success(vec![ContentBlock::text(long.clone())]);
        let original = serialized_len(&result);
        let t = truncate(&mut result, 2048).expect("truncated");
        let size = serialized_len(&result);
        assert!(size <= 2048, "{size} bytes");
        // Unused: at most the shell of the marker block it did not need, and part of a character.
        assert!(size > 2048 - 48, "the budget is used, not wasted: {size}");
        let out = text(&result);
        let (kept, marker) = out.split_once("… ").expect("marker");
        assert!(!kept.is_empty() && long.starts_with(kept));
        assert!(kept.chars().all(|c| c == '€'));
        assert_eq!(
            marker,
            format!(
                "{MARKER_PREFIX} the result was {}, over the 2 KiB limit; ask for less]",
                human_bytes(original)
            )
        );
        assert_eq!(
            truncated_meta(&result),
            json!({ "originalBytes": original, "limitBytes": 2048,
                    "structuredContentDropped": false, "contentBlocksDropped": 0 })
        );
        assert_eq!(t.original_bytes, original);
        assert_eq!(
            result.is_error,
            Some(false),
            "a truncated result is not an error"
        );
    }

    #[test]
    fn escapes_count_against_the_budget() {
        // Every quote doubles in JSON: cutting by raw bytes would overshoot the limit.
        let quoted = "\"".repeat(5_000);
        let mut result = CallToolResult::success(vec![ContentBlock::text(quoted)]);
        truncate(&mut result, 1500).expect("truncated");
        assert!(serialized_len(&result) <= 1500);
        assert!(text(&result).starts_with("\"\"\""));
        assert_eq!(cut_to_escaped("a\"b", 2), "a");
        assert_eq!(cut_to_escaped("a\"b", 3), "a\"");
        assert_eq!(cut_to_escaped("\u{1}x", 5), "");
        assert_eq!(cut_to_escaped("é", 1), "", "never half a character");
    }

    #[test]
    fn structured_content_goes_when_the_text_then_fits_whole() {
        // `structured` writes the same JSON as text: keeping the text whole loses nothing.
        let rows: Vec<Value> = (0..40).map(|i| json!({ "id": i, "name": "x" })).collect();
        let mut result = CallToolResult::structured(json!({ "rows": rows }));
        let full_text = text(&result);
        let t = truncate(&mut result, 1500).expect("truncated");
        assert!(t.structured_content_dropped);
        assert!(result.structured_content.is_none());
        assert!(text(&result).starts_with(&full_text), "the text is whole");
        assert!(
            text(&result).contains(MARKER_PREFIX),
            "and the marker says why"
        );
        assert!(serialized_len(&result) <= 1500);
        assert_eq!(truncated_meta(&result)["structuredContentDropped"], true);
    }

    #[test]
    fn a_small_structured_content_stays_and_the_text_is_cut() {
        let mut result = CallToolResult::success(vec![ContentBlock::text("y".repeat(10_000))]);
        result.structured_content = Some(json!({ "summary": "small" }));
        let t = truncate(&mut result, 4096).expect("truncated");
        assert!(!t.structured_content_dropped);
        assert_eq!(
            result.structured_content,
            Some(json!({ "summary": "small" }))
        );
        assert!(serialized_len(&result) <= 4096);
    }

    #[test]
    fn blocks_after_the_cut_are_dropped_and_counted() {
        let mut result = CallToolResult::success(vec![
            ContentBlock::text("a".repeat(300)),
            ContentBlock::image("b".repeat(5_000), "image/png"),
            ContentBlock::text("c".repeat(300)),
        ]);
        let t = truncate(&mut result, 1200).expect("truncated");
        assert_eq!(t.content_blocks_dropped, 2);
        assert_eq!(
            result.content.len(),
            2,
            "the first block and a marker block"
        );
        assert_eq!(result.content[0].as_text().map(|t| t.text.len()), Some(300));
        let marker_block = result.content[1].as_text().expect("text");
        assert!(marker_block.text.starts_with(MARKER_PREFIX));
        assert!(serialized_len(&result) <= 1200);
    }

    #[test]
    fn a_huge_meta_loses_its_largest_entries_not_the_marker() {
        let mut result = CallToolResult::success(vec![ContentBlock::text("ok")]);
        let mut meta = rmcp::model::MetaObject::new();
        meta.insert("correlationId".into(), json!("abc"));
        meta.insert("sources".into(), json!("s".repeat(5_000)));
        result.meta = Some(meta);
        let t = truncate(&mut result, 1024).expect("truncated");
        assert_eq!(t.meta_keys_dropped, ["sources"]);
        let meta = result.meta.as_ref().expect("meta");
        assert_eq!(meta.get("correlationId"), Some(&json!("abc")));
        assert_eq!(meta[META_KEY]["metaKeysDropped"], json!(["sources"]));
        assert!(text(&result).starts_with("ok"));
        assert!(text(&result).contains(MARKER_PREFIX));
        assert!(serialized_len(&result) <= 1024);
    }

    #[test]
    fn an_error_result_keeps_its_error_meta_when_cut() {
        let error = kit::ToolError::invalid("z".repeat(4_000)).to_call_tool_result();
        let mut result = error;
        truncate(&mut result, 1024).expect("truncated");
        assert_eq!(result.is_error, Some(true));
        let e = kit::ToolError::from_call_tool_result(&result).expect("still a tool error");
        assert_eq!(e.kind, kit::ErrorKind::Invalid);
        assert!(serialized_len(&result) <= 1024);
    }
}
