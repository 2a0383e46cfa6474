//! Documents as callers send them: validation, system properties, etags and the `ifMatch` rule.
//!
//! The store keeps a caller's document as sent, minus the system properties the service owns
//! (`_etag`, `_ts`, `_rid`, `_self`, `_attachments`), and adds `_etag` and `_ts` back on every read.
//! A new etag is derived from the previous one, the body and the write time, so every write changes
//! it and a writer holding an older etag is refused instead of silently overwriting.

use kit::ToolFailure;
use serde_json::{Map, Value};

use crate::containers::Container;

/// System properties the store owns; values sent by callers are dropped.
pub const SYSTEM_PROPERTIES: [&str; 5] = ["_etag", "_ts", "_rid", "_self", "_attachments"];

/// Largest stored document, as in the real service.
pub const MAX_ITEM_BYTES: usize = 2 * 1024 * 1024;

/// Longest id or partition key value accepted.
pub const MAX_KEY_CHARS: usize = 255;

/// A document ready to be stored: its keys pulled out and its body serialised.
#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    /// The document's `id`.
    pub id: String,
    /// The value of the container's partition key field.
    pub partition_key: String,
    /// The JSON text stored (system properties removed).
    pub body: String,
}

/// Checks an id or partition key value the way the service does.
fn check_key(field: &str, value: &str) -> Result<(), ToolFailure> {
    if value.is_empty() {
        return Err(ToolFailure::invalid_params(field, "must not be empty"));
    }
    if value.chars().count() > MAX_KEY_CHARS {
        return Err(ToolFailure::invalid_params(
            field,
            format!("must be at most {MAX_KEY_CHARS} characters"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| matches!(c, '/' | '\\' | '?' | '#')) {
        return Err(ToolFailure::invalid_params(
            field,
            format!("must not contain `{bad}`"),
        ));
    }
    Ok(())
}

/// Checks an `id` argument (read_item).
pub fn check_id(field: &str, id: &str) -> Result<(), ToolFailure> {
    check_key(field, id)
}

/// Checks a partition key argument.
pub fn check_partition_key(field: &str, value: &str) -> Result<(), ToolFailure> {
    if value.is_empty() {
        return Err(ToolFailure::invalid_params(field, "must not be empty"));
    }
    if value.chars().count() > MAX_KEY_CHARS {
        return Err(ToolFailure::invalid_params(
            field,
            format!("must be at most {MAX_KEY_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Validates a caller's document for `container`: it must carry a string `id` and a string value
/// for the partition key field. Errors name the field as `item.<field>`.
pub fn prepare(
    container: &Container,
    mut item: Map<String, Value>,
) -> Result<NewItem, ToolFailure> {
    let pk_field = container.partition_key_field();
    let id = match item.get("id") {
        Some(Value::String(id)) => id.clone(),
        Some(other) => {
            return Err(ToolFailure::invalid_params(
                "item.id",
                format!("must be a string, got {}", type_name(other)),
            ));
        }
        None => {
            return Err(ToolFailure::invalid_params(
                "item.id",
                "the item must carry an `id`",
            ));
        }
    };
    check_key("item.id", &id)?;
    let partition_key = match item.get(pk_field) {
        Some(Value::String(pk)) => pk.clone(),
        Some(other) => {
            return Err(ToolFailure::invalid_params(
                format!("item.{pk_field}"),
                format!(
                    "the partition key of `{}` must be a string, got {}",
                    container.name,
                    type_name(other)
                ),
            ));
        }
        None => {
            return Err(ToolFailure::invalid_params(
                format!("item.{pk_field}"),
                format!(
                    "the item must carry the partition key `{pk_field}` (container `{}` is partitioned by {})",
                    container.name, container.partition_key_path
                ),
            ));
        }
    };
    check_partition_key(&format!("item.{pk_field}"), &partition_key)?;
    for key in SYSTEM_PROPERTIES {
        item.remove(key);
    }
    let body = Value::Object(item).to_string();
    if body.len() > MAX_ITEM_BYTES {
        return Err(ToolFailure::invalid_params(
            "item",
            format!(
                "the item is {} bytes; the largest accepted is {MAX_ITEM_BYTES}",
                body.len()
            ),
        ));
    }
    Ok(NewItem {
        id,
        partition_key,
        body,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The etag of a write: FNV-1a over the previous etag, the body and the write time.
///
/// Chaining the previous etag makes every write produce a new value, even one that stores the same
/// body in the same second; hashing (rather than counting) keeps seeded etags reproducible.
pub fn next_etag(previous: Option<&str>, body: &str, ts: i64) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let parts: [&[u8]; 5] = [
        previous.unwrap_or("").as_bytes(),
        &[0],
        body.as_bytes(),
        &[0],
        &ts.to_le_bytes(),
    ];
    for part in parts {
        for byte in part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

/// Why a conditional write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreconditionFailed {
    /// The stored document has a different etag: someone wrote it since the caller read it.
    #[error("etag mismatch: the item was modified since it was read (current etag {current})")]
    Stale {
        /// The etag stored now.
        current: String,
    },
    /// `ifMatch` was given but no such document exists (it was never written, or was replaced
    /// under another partition key).
    #[error("the item does not exist, so no etag can match")]
    Missing,
}

/// Decides whether a write carrying `if_match` may replace the document whose etag is `current`.
pub fn check_if_match(
    if_match: Option<&str>,
    current: Option<&str>,
) -> Result<(), PreconditionFailed> {
    match (if_match, current) {
        (None, _) => Ok(()),
        (Some(wanted), Some(current)) if wanted == current => Ok(()),
        (Some(_), Some(current)) => Err(PreconditionFailed::Stale {
            current: current.to_owned(),
        }),
        (Some(_), None) => Err(PreconditionFailed::Missing),
    }
}

/// A stored document as callers see it: the body with `_etag` and `_ts` added.
pub fn with_system_properties(body: &str, etag: &str, ts: i64) -> Result<Value, serde_json::Error> {
    let mut doc: Map<String, Value> = serde_json::from_str(body)?;
    doc.insert("_etag".into(), Value::from(etag));
    doc.insert("_ts".into(), Value::from(ts));
    Ok(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::{ONLINE_SALES, USER_EVENTS};
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn prepare_requires_id_and_partition_key() {
        let ok = prepare(
            &USER_EVENTS,
            obj(json!({"id": "e1", "userId": "CUST-0001", "_etag": "x", "_ts": 5, "type": "page_view"})),
        )
        .expect("valid");
        assert_eq!(ok.id, "e1");
        assert_eq!(ok.partition_key, "CUST-0001");
        let stored: Value = serde_json::from_str(&ok.body).expect("json");
        assert!(stored.get("_etag").is_none() && stored.get("_ts").is_none());
        assert_eq!(stored["type"], "page_view");

        let field_of = |e: ToolFailure| match e {
            ToolFailure::InvalidParams { field, .. } => field,
            other => panic!("expected invalid params, got {other:?}"),
        };
        let missing_pk = prepare(&ONLINE_SALES, obj(json!({"id": "s1"}))).expect_err("no pk");
        assert_eq!(field_of(missing_pk), "item.region");
        let missing_id = prepare(&USER_EVENTS, obj(json!({"userId": "u"}))).expect_err("no id");
        assert_eq!(field_of(missing_id), "item.id");
        let numeric_id =
            prepare(&USER_EVENTS, obj(json!({"id": 7, "userId": "u"}))).expect_err("number id");
        assert_eq!(field_of(numeric_id), "item.id");
        let slash = prepare(&USER_EVENTS, obj(json!({"id": "a/b", "userId": "u"})))
            .expect_err("slash in id");
        assert_eq!(field_of(slash), "item.id");
        let empty_pk =
            prepare(&USER_EVENTS, obj(json!({"id": "a", "userId": ""}))).expect_err("empty pk");
        assert_eq!(field_of(empty_pk), "item.userId");
    }

    #[test]
    fn every_write_gets_a_new_etag() {
        let first = next_etag(None, "{}", 100);
        let second = next_etag(Some(&first), "{}", 100);
        let third = next_etag(Some(&second), "{}", 100);
        assert_ne!(first, second);
        assert_ne!(second, third);
        assert_ne!(first, third);
        assert_eq!(next_etag(None, "{}", 100), first, "deterministic");
        assert_ne!(next_etag(None, "{\"a\":1}", 100), first);
        assert_eq!(first.len(), 16);
    }

    #[test]
    fn if_match_accepts_only_the_current_etag() {
        assert_eq!(check_if_match(None, None), Ok(()));
        assert_eq!(check_if_match(None, Some("abc")), Ok(()));
        assert_eq!(check_if_match(Some("abc"), Some("abc")), Ok(()));
        assert_eq!(
            check_if_match(Some("old"), Some("new")),
            Err(PreconditionFailed::Stale {
                current: "new".into()
            })
        );
        assert_eq!(
            check_if_match(Some("abc"), None),
            Err(PreconditionFailed::Missing)
        );
    }

    #[test]
    fn system_properties_are_added_on_read() {
        let doc = with_system_properties(r#"{"id":"a","userId":"u"}"#, "e", 42).expect("json");
        assert_eq!(doc["_etag"], "e");
        assert_eq!(doc["_ts"], 42);
        assert_eq!(doc["id"], "a");
    }
}
