//! `record_event`: one user event document per idempotency key.
//!
//! The event is stored in `userEvents` under the user's partition, shaped like the seeded events
//! (`id`, `userId`, `type`, `timestamp` and the payload's fields at the top level), so the behaviour
//! tools count it like any other. The document id is derived from the key, and the key is kept in
//! the store's idempotency table with the write, in one transaction ([`store::upsert_keyed`]): a
//! repeat with the same content answers with the stored document, a repeat with other content is
//! refused. The key's fingerprint is what the caller sent, not the stored body, because the body
//! carries the server's timestamp, which a retry would change.

use kit::ToolFailure;
use serde_json::{Map, Value, json};

use crate::{
    containers::USER_EVENTS,
    item::{self, NewItem},
    model::RecordEventArgs,
    store, token,
};

/// Longest accepted idempotency key, as for `upsert_item`.
pub const MAX_KEY_LEN: usize = 200;

/// Longest accepted event type, in characters.
const MAX_TYPE_CHARS: usize = 100;

/// Fields the server sets; a payload may not carry them, or it could move the event to another
/// user or disguise it as another event.
const RESERVED_FIELDS: [&str; 5] = ["id", "userId", "type", "timestamp", "idempotencyKey"];

/// A validated `record_event` call: the document to store and what its key stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct EventWrite {
    /// The document, ready for the store.
    pub item: NewItem,
    /// The idempotency key, trimmed.
    pub key: String,
    /// What a repeat of the key must match: user, type and payload as sent.
    pub fingerprint: String,
}

impl EventWrite {
    /// The key and fingerprint as the store takes them.
    pub fn idempotency_key(&self) -> store::IdempotencyKey<'_> {
        store::IdempotencyKey {
            key: &self.key,
            fingerprint: &self.fingerprint,
        }
    }
}

/// The document id of the event a key records: the same key always names the same document, so
/// it can never make a second one, even after the key itself is forgotten.
pub fn event_id(key: &str) -> String {
    format!("EVT-R-{:016x}", token::fingerprint(key))
}

/// Validates the arguments and builds the document, stamped `timestamp` (RFC 3339).
pub fn prepare(args: &RecordEventArgs, timestamp: &str) -> Result<EventWrite, ToolFailure> {
    item::check_partition_key("userId", &args.user_id)?;
    let kind = args.event_type.trim();
    if kind.is_empty() || kind.chars().count() > MAX_TYPE_CHARS {
        return Err(ToolFailure::invalid_params(
            "type",
            format!("must be 1-{MAX_TYPE_CHARS} characters"),
        ));
    }
    let key = args.idempotency_key.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ToolFailure::invalid_params(
            "idempotencyKey",
            format!("must be 1-{MAX_KEY_LEN} characters"),
        ));
    }
    if let Some(field) = args
        .payload
        .keys()
        .find(|k| RESERVED_FIELDS.contains(&k.as_str()) || k.starts_with('_'))
    {
        return Err(ToolFailure::invalid_params(
            format!("payload.{field}"),
            "is set by the server; the payload may not carry `id`, `userId`, `type`, `timestamp`, `idempotencyKey` or `_` fields",
        ));
    }
    let fingerprint = json!([
        "record_event",
        USER_EVENTS.name,
        args.user_id,
        kind,
        args.payload
    ])
    .to_string();
    let mut doc: Map<String, Value> = args.payload.clone();
    doc.insert("id".into(), Value::from(event_id(key)));
    doc.insert("userId".into(), Value::from(args.user_id.clone()));
    doc.insert("type".into(), Value::from(kind));
    doc.insert("timestamp".into(), Value::from(timestamp));
    doc.insert("idempotencyKey".into(), Value::from(key));
    let item = item::prepare(&USER_EVENTS, doc)?;
    Ok(EventWrite {
        item,
        key: key.to_owned(),
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, UpsertOutcome};

    fn args(key: &str, payload: Value) -> RecordEventArgs {
        let Value::Object(payload) = payload else {
            panic!("payload must be an object");
        };
        RecordEventArgs {
            user_id: "CUST-0005".into(),
            event_type: "order_placed".into(),
            payload,
            idempotency_key: key.into(),
        }
    }

    fn record(store: &Store, a: &RecordEventArgs, ts: i64, stamp: &str) -> UpsertOutcome {
        let write = prepare(a, stamp).expect("valid");
        store::upsert_keyed(
            &mut store.writer(),
            USER_EVENTS.name,
            &write.item,
            None,
            Some(write.idempotency_key()),
            ts,
        )
        .expect("write")
    }

    #[test]
    fn a_retry_later_replays_and_other_content_is_refused() {
        let store = Store::open(":memory:").expect("open");
        let a = args("saga-1", json!({"orderId": "ORD-02001"}));
        let UpsertOutcome::Written { doc, created } =
            record(&store, &a, 100, "2026-06-01T00:00:00Z")
        else {
            panic!("written");
        };
        assert!(created);
        // The retry comes later, so the server's timestamp differs; the key still matches.
        let again = record(&store, &a, 160, "2026-06-01T00:01:00Z");
        assert_eq!(
            again,
            UpsertOutcome::Replayed {
                doc: doc.clone(),
                created: true
            }
        );
        let other = args("saga-1", json!({"orderId": "ORD-02002"}));
        assert!(matches!(
            record(&store, &other, 170, "2026-06-01T00:02:00Z"),
            UpsertOutcome::KeyReused { .. }
        ));
        let stored = store::partition(&store.reader(), USER_EVENTS.name, "CUST-0005")
            .expect("partition")
            .into_iter()
            .filter(|d| d.id == event_id("saga-1"))
            .collect::<Vec<_>>();
        assert_eq!(stored, vec![doc]);
    }

    #[test]
    fn reserved_fields_and_blank_arguments_are_named() {
        let field_of = |a: &RecordEventArgs| match prepare(a, "2026-06-01T00:00:00Z") {
            Err(ToolFailure::InvalidParams { field, .. }) => field,
            other => panic!("expected invalid params, got {other:?}"),
        };
        assert_eq!(
            field_of(&args("k", json!({"userId": "x"}))),
            "payload.userId"
        );
        assert_eq!(field_of(&args("k", json!({"_etag": "x"}))), "payload._etag");
        assert_eq!(field_of(&args(" ", json!({}))), "idempotencyKey");
        let mut blank_type = args("k", json!({}));
        blank_type.event_type = " ".into();
        assert_eq!(field_of(&blank_type), "type");
        let ok = prepare(&args("k", json!({"amount": 5})), "t").expect("valid");
        let body: Value = serde_json::from_str(&ok.item.body).expect("json");
        assert_eq!(body["amount"], 5);
        assert_eq!(body["type"], "order_placed");
        assert_eq!(body["userId"], "CUST-0005");
        assert_eq!(ok.item.partition_key, "CUST-0005");
        assert_eq!(ok.item.id, event_id("k"));
    }
}
