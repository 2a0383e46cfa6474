//! The document file: where it lives, its one table, first-run seeding, and the reads and writes
//! the tools are made of.
//!
//! Every document is one row of `docs(container, pk, id, body, etag, ts)`, keyed like Cosmos DB
//! keys items: the id is unique within its logical partition. `idempotency` remembers, for
//! [`IDEMPOTENCY_KEY_TTL_SECS`], the write each idempotency key made, so a repeated keyed upsert
//! answers with that write instead of writing again. The file runs in WAL mode with
//! `synchronous = FULL`, so a write acknowledged to a caller survives a crash or a restart. One
//! writer connection and a few read-only connections ([`kit::sqlite`], shared with the SQL
//! server) let reads run in parallel with a write.

use std::{path::Path, sync::MutexGuard};

use kit::sqlite::{FileSpec, SqliteFile};

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, TransactionBehavior, params, params_from_iter,
    types::Value as SqlValue,
};
use serde_json::Value;

use crate::{
    containers,
    filter::{Binder, Filter, SortKey},
    item::{self, NewItem, PreconditionFailed},
    seed,
};

/// The schema: one table of documents.
pub const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS docs (
    container TEXT NOT NULL,
    pk        TEXT NOT NULL,
    id        TEXT NOT NULL,
    body      TEXT NOT NULL CHECK (json_valid(body)),
    etag      TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    PRIMARY KEY (container, pk, id)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    container   TEXT NOT NULL,
    pk          TEXT NOT NULL,
    id          TEXT NOT NULL,
    body        TEXT NOT NULL,
    etag        TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    created     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_by_ts ON idempotency (ts);
";

/// How long an idempotency key is remembered: a retry comes within seconds, a key reused a day
/// later is a new write, and the table stays small.
pub const IDEMPOTENCY_KEY_TTL_SECS: i64 = 24 * 60 * 60;

/// File name of the store inside the data directory.
pub const DB_FILE: &str = "cosmos.db";

/// Read-only connections kept open: enough for two cores plus a long cross-partition query.
const READERS: usize = 4;

/// Why the store could not be opened.
pub type StoreError = kit::sqlite::OpenError;

/// An open document store.
#[derive(Debug)]
pub struct Store(SqliteFile<Connection>);

impl Store {
    /// Opens (creating and seeding on first run) `<data_dir>/cosmos.db`.
    ///
    /// `:memory:` gives a private store that disappears on exit (see
    /// [`kit::sqlite::SqliteFile::open`]).
    pub fn open(data_dir: &str) -> Result<Self, StoreError> {
        let spec = FileSpec {
            server: "cosmos-mcp-server",
            file: DB_FILE,
            what: "document store",
            readers: READERS,
        };
        let prepare = |writer: &mut Connection| {
            writer.execute_batch(SCHEMA_SQL)?;
            seed::seed_if_empty(writer).map(drop)
        };
        SqliteFile::open(data_dir, spec, prepare, open_reader).map(Self)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// A read-only connection: the first free one, else waits on one in turn.
    pub fn reader(&self) -> MutexGuard<'_, Connection> {
        self.0.reader()
    }

    /// The writer connection.
    pub fn writer(&self) -> MutexGuard<'_, Connection> {
        self.0.writer()
    }
}

/// A read-only connection: the engine refuses writes, whatever SQL reaches it.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA query_only = ON;")?;
    conn.busy_timeout(kit::sqlite::BUSY_TIMEOUT)?;
    Ok(conn)
}

/// One stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    /// Partition key value.
    pub pk: String,
    /// Id within the partition.
    pub id: String,
    /// The JSON body as stored (without system properties).
    pub body: String,
    /// Current etag.
    pub etag: String,
    /// Last write, Unix seconds.
    pub ts: i64,
}

impl StoredDoc {
    /// Size of the stored body, which is what request charges are computed from.
    pub fn bytes(&self) -> usize {
        self.body.len()
    }

    /// The document as callers see it, with `_etag` and `_ts`.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        item::with_system_properties(&self.body, &self.etag, self.ts)
    }

    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            pk: r.get(0)?,
            id: r.get(1)?,
            body: r.get(2)?,
            etag: r.get(3)?,
            ts: r.get(4)?,
        })
    }
}

/// Total size of some documents.
pub fn total_bytes(docs: &[StoredDoc]) -> usize {
    docs.iter().map(StoredDoc::bytes).sum()
}

/// Point read: one document by partition key and id.
pub fn read_item(
    conn: &Connection,
    container: &str,
    pk: &str,
    id: &str,
) -> rusqlite::Result<Option<StoredDoc>> {
    conn.prepare_cached(
        "SELECT pk, id, body, etag, ts FROM docs WHERE container = ?1 AND pk = ?2 AND id = ?3",
    )?
    .query_row(params![container, pk, id], StoredDoc::from_row)
    .optional()
}

/// Every document of one logical partition, in id order.
pub fn partition(conn: &Connection, container: &str, pk: &str) -> rusqlite::Result<Vec<StoredDoc>> {
    conn.prepare_cached(
        "SELECT pk, id, body, etag, ts FROM docs WHERE container = ?1 AND pk = ?2 ORDER BY id",
    )?
    .query_map(params![container, pk], StoredDoc::from_row)?
    .collect()
}

/// Every document of the given logical partitions, in partition then id order.
pub fn partitions(
    conn: &Connection,
    container: &str,
    pks: &[String],
) -> rusqlite::Result<Vec<StoredDoc>> {
    // The keys travel as one JSON array parameter, expanded by SQLite itself.
    let keys = Value::from(pks.to_vec()).to_string();
    conn.prepare_cached(
        "SELECT pk, id, body, etag, ts FROM docs
         WHERE container = ?1 AND pk IN (SELECT value FROM json_each(?2))
         ORDER BY pk, id",
    )?
    .query_map(params![container, keys], StoredDoc::from_row)?
    .collect()
}

/// A `query_items` page request.
#[derive(Debug)]
pub struct QuerySpec<'a> {
    /// The container.
    pub container: &'a str,
    /// The logical partition, or `None` for a cross-partition query.
    pub partition: Option<&'a str>,
    /// Conditions on the documents.
    pub filter: &'a Filter,
    /// Sort key; documents are always tie-broken by partition key and id.
    pub sort: Option<&'a SortKey>,
    /// Documents to skip.
    pub offset: u64,
    /// Documents to return at most.
    pub limit: u64,
}

/// Runs a query and returns up to `limit + 1` documents (the extra one says another page exists).
pub fn query(conn: &Connection, spec: &QuerySpec<'_>) -> rusqlite::Result<Vec<StoredDoc>> {
    let mut binder = Binder::default();
    let mut sql = format!(
        "SELECT pk, id, body, etag, ts FROM docs WHERE container = {}",
        binder.bind(SqlValue::Text(spec.container.to_owned()))
    );
    if let Some(pk) = spec.partition {
        sql.push_str(" AND pk = ");
        sql.push_str(&binder.bind(SqlValue::Text(pk.to_owned())));
    }
    spec.filter.push_sql(&mut sql, &mut binder);
    sql.push_str(" ORDER BY ");
    if let Some(sort) = spec.sort {
        sql.push_str(&sort.sql(&mut binder));
        sql.push_str(", ");
    }
    sql.push_str("pk, id LIMIT ");
    sql.push_str(&binder.bind(SqlValue::Integer(
        i64::try_from(spec.limit.saturating_add(1)).unwrap_or(i64::MAX),
    )));
    sql.push_str(" OFFSET ");
    sql.push_str(&binder.bind(SqlValue::Integer(
        i64::try_from(spec.offset).unwrap_or(i64::MAX),
    )));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(binder.into_params()), StoredDoc::from_row)?;
    rows.collect()
}

/// Online sales of one region over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionTotals {
    /// The region (partition key).
    pub region: String,
    /// Documents in the period, returned ones included (they were read).
    pub docs: usize,
    /// Their total size.
    pub bytes: usize,
    /// Completed orders (not returned).
    pub orders: i64,
    /// Their revenue.
    pub revenue: f64,
}

/// Online sales per region with timestamps in `[from, to)`; returned orders are read but not
/// counted.
pub fn online_sales_by_region(
    conn: &Connection,
    from: &str,
    to: &str,
) -> rusqlite::Result<Vec<RegionTotals>> {
    conn.prepare_cached(
        "SELECT pk, COUNT(*), COALESCE(SUM(length(body)), 0),
                COALESCE(SUM(CASE WHEN returned THEN 0 ELSE 1 END), 0),
                COALESCE(SUM(CASE WHEN returned THEN 0 ELSE total END), 0.0)
         FROM (
             SELECT pk, body,
                    COALESCE(json_extract(body, '$.status') = 'returned', 0) AS returned,
                    CASE WHEN json_type(body, '$.total') IN ('integer', 'real')
                         THEN json_extract(body, '$.total') ELSE 0 END AS total
             FROM docs
             WHERE container = ?1
               AND json_type(body, '$.timestamp') = 'text'
               AND json_extract(body, '$.timestamp') >= ?2
               AND json_extract(body, '$.timestamp') < ?3
         )
         GROUP BY pk ORDER BY pk",
    )?
    .query_map(params![containers::ONLINE_SALES.name, from, to], |r| {
        Ok(RegionTotals {
            region: r.get(0)?,
            docs: usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            bytes: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            orders: r.get(3)?,
            revenue: r.get(4)?,
        })
    })?
    .collect()
}

/// What an upsert did.
#[derive(Debug, Clone, PartialEq)]
pub enum UpsertOutcome {
    /// The document was stored.
    Written {
        /// The document as stored now.
        doc: StoredDoc,
        /// True when no document with this id existed in the partition.
        created: bool,
    },
    /// `ifMatch` did not hold; nothing was written.
    Refused(PreconditionFailed),
    /// The idempotency key already made this write: nothing was written again, and `doc` is the
    /// document as that first write stored it.
    Replayed {
        /// The document as the first write stored it.
        doc: StoredDoc,
        /// Whether the first write created the document.
        created: bool,
    },
    /// The idempotency key was used for a different write (another container, document or body);
    /// nothing was written.
    KeyReused {
        /// The id of the document the key wrote.
        first_id: String,
    },
}

/// Inserts or replaces a document in one transaction, honouring `if_match`.
///
/// The etag check and the write happen under one write lock (`BEGIN IMMEDIATE`), so two writers
/// holding the same etag cannot both succeed. `ts` is the write time in Unix seconds.
///
/// With `key`, the key is looked up in the same transaction first: a key seen within
/// [`IDEMPOTENCY_KEY_TTL_SECS`] for the same write replays that write (whatever `if_match` says
/// now: the first write is what changed the etag), for a different write it is refused. A new key
/// is stored with the write, in the same transaction, so a write and its key exist together or not
/// at all.
pub fn upsert(
    conn: &mut Connection,
    container: &str,
    item: &NewItem,
    if_match: Option<&str>,
    key: Option<&str>,
    ts: i64,
) -> rusqlite::Result<UpsertOutcome> {
    let fingerprint =
        serde_json::json!([container, item.partition_key, item.id, item.body, if_match])
            .to_string();
    let keyed = key.map(|key| IdempotencyKey {
        key,
        fingerprint: &fingerprint,
    });
    upsert_keyed(conn, container, item, if_match, keyed, ts)
}

/// An idempotency key and what it stands for.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    /// The caller's key.
    pub key: &'a str,
    /// What a repeat must match to be replayed rather than refused. [`upsert`] takes the whole
    /// stored write; a tool that adds server-made fields (a timestamp, say) to what it stores
    /// passes what the caller sent instead, so its retries still match.
    pub fingerprint: &'a str,
}

/// [`upsert`] with the caller's own [`IdempotencyKey::fingerprint`].
pub fn upsert_keyed(
    conn: &mut Connection,
    container: &str,
    item: &NewItem,
    if_match: Option<&str>,
    key: Option<IdempotencyKey<'_>>,
    ts: i64,
) -> rusqlite::Result<UpsertOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(IdempotencyKey { key, fingerprint }) = key {
        tx.prepare_cached("DELETE FROM idempotency WHERE ts < ?1")?
            .execute([ts.saturating_sub(IDEMPOTENCY_KEY_TTL_SECS)])?;
        let seen = tx
            .prepare_cached(
                "SELECT fingerprint, pk, id, body, etag, ts, created FROM idempotency WHERE key = ?1",
            )?
            .query_row([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    StoredDoc {
                        pk: r.get(1)?,
                        id: r.get(2)?,
                        body: r.get(3)?,
                        etag: r.get(4)?,
                        ts: r.get(5)?,
                    },
                    r.get::<_, bool>(6)?,
                ))
            })
            .optional()?;
        if let Some((seen_fingerprint, doc, created)) = seen {
            return Ok(if seen_fingerprint == fingerprint {
                UpsertOutcome::Replayed { doc, created }
            } else {
                UpsertOutcome::KeyReused { first_id: doc.id }
            });
        }
    }
    let current: Option<String> = tx
        .prepare_cached("SELECT etag FROM docs WHERE container = ?1 AND pk = ?2 AND id = ?3")?
        .query_row(params![container, item.partition_key, item.id], |r| {
            r.get(0)
        })
        .optional()?;
    if let Err(refused) = item::check_if_match(if_match, current.as_deref()) {
        return Ok(UpsertOutcome::Refused(refused));
    }
    let etag = item::next_etag(current.as_deref(), &item.body, ts);
    tx.prepare_cached(
        "INSERT INTO docs (container, pk, id, body, etag, ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (container, pk, id) DO UPDATE
         SET body = excluded.body, etag = excluded.etag, ts = excluded.ts",
    )?
    .execute(params![
        container,
        item.partition_key,
        item.id,
        item.body,
        etag,
        ts
    ])?;
    if let Some(IdempotencyKey { key, fingerprint }) = key {
        tx.prepare_cached(
            "INSERT INTO idempotency (key, fingerprint, container, pk, id, body, etag, ts, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            key,
            fingerprint,
            container,
            item.partition_key,
            item.id,
            item.body,
            etag,
            ts,
            current.is_none()
        ])?;
    }
    tx.commit()?;
    Ok(UpsertOutcome::Written {
        doc: StoredDoc {
            pk: item.partition_key.clone(),
            id: item.id.clone(),
            body: item.body.clone(),
            etag,
            ts,
        },
        created: current.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::{SESSIONS, USER_EVENTS};
    use serde_json::json;

    fn new_item(id: &str, user: &str, extra: i64) -> NewItem {
        let Value::Object(map) = json!({"id": id, "userId": user, "n": extra}) else {
            panic!("object");
        };
        item::prepare(&SESSIONS, map).expect("valid")
    }

    #[test]
    fn upsert_honours_if_match_and_changes_the_etag() {
        let store = Store::open(":memory:").expect("open");
        let mut w = store.writer();
        let UpsertOutcome::Written {
            doc: first,
            created,
        } = upsert(
            &mut w,
            SESSIONS.name,
            &new_item("x", "U1", 1),
            None,
            None,
            100,
        )
        .expect("insert")
        else {
            panic!("written");
        };
        assert!(created);
        let UpsertOutcome::Written {
            doc: second,
            created,
        } = upsert(
            &mut w,
            SESSIONS.name,
            &new_item("x", "U1", 2),
            Some(&first.etag),
            None,
            101,
        )
        .expect("replace")
        else {
            panic!("written with the current etag");
        };
        assert!(!created);
        assert_ne!(first.etag, second.etag);
        let stale = upsert(
            &mut w,
            SESSIONS.name,
            &new_item("x", "U1", 3),
            Some(&first.etag),
            None,
            102,
        )
        .expect("runs");
        assert_eq!(
            stale,
            UpsertOutcome::Refused(PreconditionFailed::Stale {
                current: second.etag.clone()
            })
        );
        let missing = upsert(
            &mut w,
            SESSIONS.name,
            &new_item("y", "U1", 3),
            Some("anything"),
            None,
            102,
        )
        .expect("runs");
        assert_eq!(missing, UpsertOutcome::Refused(PreconditionFailed::Missing));
        drop(w);
        let stored = read_item(&store.reader(), SESSIONS.name, "U1", "x")
            .expect("read")
            .expect("present");
        assert_eq!(stored, second, "the refused write changed nothing");
        assert!(
            read_item(&store.reader(), SESSIONS.name, "U1", "y")
                .expect("read")
                .is_none()
        );
    }

    #[test]
    fn a_known_key_replays_its_write_and_refuses_a_different_one() {
        let store = Store::open(":memory:").expect("open");
        let mut w = store.writer();
        let key = Some("k-1");
        let UpsertOutcome::Written { doc: first, .. } = upsert(
            &mut w,
            SESSIONS.name,
            &new_item("x", "U1", 1),
            None,
            key,
            100,
        )
        .expect("write") else {
            panic!("written");
        };
        // Someone else changes the document; the retry of the keyed write must not undo that.
        let UpsertOutcome::Written { doc: later, .. } = upsert(
            &mut w,
            SESSIONS.name,
            &new_item("x", "U1", 9),
            None,
            None,
            101,
        )
        .expect("write") else {
            panic!("written");
        };
        let replay = upsert(
            &mut w,
            SESSIONS.name,
            &new_item("x", "U1", 1),
            None,
            key,
            102,
        )
        .expect("replay");
        assert_eq!(
            replay,
            UpsertOutcome::Replayed {
                doc: first.clone(),
                created: true
            }
        );
        let reused = upsert(
            &mut w,
            SESSIONS.name,
            &new_item("x", "U1", 2),
            None,
            key,
            103,
        )
        .expect("runs");
        assert_eq!(
            reused,
            UpsertOutcome::KeyReused {
                first_id: "x".into()
            }
        );
        // A keyed write with ifMatch: its retry is replayed although the etag it names is stale.
        let guarded = new_item("x", "U1", 3);
        let UpsertOutcome::Written { doc: third, .. } = upsert(
            &mut w,
            SESSIONS.name,
            &guarded,
            Some(&later.etag),
            Some("k-2"),
            104,
        )
        .expect("write") else {
            panic!("written with the current etag");
        };
        let again = upsert(
            &mut w,
            SESSIONS.name,
            &guarded,
            Some(&later.etag),
            Some("k-2"),
            105,
        )
        .expect("replay");
        assert_eq!(
            again,
            UpsertOutcome::Replayed {
                doc: third.clone(),
                created: false
            }
        );
        drop(w);
        let stored = read_item(&store.reader(), SESSIONS.name, "U1", "x")
            .expect("read")
            .expect("present");
        assert_eq!(stored, third, "replays and refusals wrote nothing");
    }

    #[test]
    fn keys_are_forgotten_after_their_time() {
        let store = Store::open(":memory:").expect("open");
        let mut w = store.writer();
        let item = new_item("x", "U1", 1);
        upsert(&mut w, SESSIONS.name, &item, None, Some("k"), 1_000).expect("write");
        let later = 1_000 + IDEMPOTENCY_KEY_TTL_SECS + 1;
        let outcome = upsert(&mut w, SESSIONS.name, &item, None, Some("k"), later).expect("write");
        assert!(
            matches!(outcome, UpsertOutcome::Written { created: false, .. }),
            "a key past its time is a new write: {outcome:?}"
        );
    }

    #[test]
    fn ids_are_unique_per_partition_only() {
        let store = Store::open(":memory:").expect("open");
        let mut w = store.writer();
        upsert(
            &mut w,
            SESSIONS.name,
            &new_item("same", "U1", 1),
            None,
            None,
            1,
        )
        .expect("a");
        upsert(
            &mut w,
            SESSIONS.name,
            &new_item("same", "U2", 2),
            None,
            None,
            1,
        )
        .expect("b");
        drop(w);
        let r = store.reader();
        assert_eq!(partition(&r, SESSIONS.name, "U1").expect("U1").len(), 1);
        assert_eq!(partition(&r, SESSIONS.name, "U2").expect("U2").len(), 1);
        let both = partitions(&r, SESSIONS.name, &["U1".into(), "U2".into()]).expect("both");
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn readers_cannot_write() {
        let store = Store::open(":memory:").expect("open");
        let err = store
            .reader()
            .execute("DELETE FROM docs", [])
            .expect_err("read-only");
        assert!(err.to_string().contains("readonly") || err.to_string().contains("read"));
    }

    #[test]
    fn query_pages_and_filters() {
        let store = Store::open(":memory:").expect("open");
        let r = store.reader();
        let Value::Object(f) = json!({"type": "purchase"}) else {
            panic!("object")
        };
        let filter = Filter::parse(&f).expect("filter");
        let sort = SortKey::parse("timestamp", true).expect("sort");
        let spec = |offset| QuerySpec {
            container: USER_EVENTS.name,
            partition: Some("CUST-0001"),
            filter: &filter,
            sort: Some(&sort),
            offset,
            limit: 2,
        };
        let page1 = query(&r, &spec(0)).expect("page 1");
        let page2 = query(&r, &spec(2)).expect("page 2");
        assert_eq!(page1.len(), 3, "limit + 1");
        assert_eq!(page1[2], page2[0], "pages line up");
        let ts = |d: &StoredDoc| {
            d.to_value().expect("json")["timestamp"]
                .as_str()
                .expect("ts")
                .to_owned()
        };
        assert!(ts(&page1[0]) >= ts(&page1[1]), "newest first");
        for d in page1.iter().chain(&page2) {
            let v = d.to_value().expect("json");
            assert_eq!(v["type"], "purchase");
            assert_eq!(v["userId"], "CUST-0001");
        }
    }
}
