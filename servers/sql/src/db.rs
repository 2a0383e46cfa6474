//! The database file: where it lives, its schema, first-run seeding, and the connections tools use.
//!
//! One writer connection and a small pool of read-only connections ([`kit::sqlite`], shared with
//! the Cosmos server), so reads run in parallel under WAL. What is this server's own: the schema,
//! the seed, foreign keys, and read-only connections locked down the way the agent-facing `query`
//! tool needs (see [`crate::readonly`]), so no read path can write.

use std::path::Path;

use kit::sqlite::{FileSpec, SqliteFile};
use rusqlite::{Connection, OpenFlags};

use crate::{readonly::ReadOnlyConn, seed};

/// The schema, also served as the `sql://schema` resource.
pub const SCHEMA_SQL: &str = include_str!("schema.sql");

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "retail.db";

/// Read-only connections kept open; enough for the two cores this runs on, plus slack for a
/// long `query` that should not block ordinary reads.
const READERS: usize = 4;

/// Why the database could not be opened.
pub type DbError = kit::sqlite::OpenError;

/// An open database.
#[derive(Debug)]
pub struct Database(SqliteFile<ReadOnlyConn>);

impl Database {
    /// Opens (creating and seeding on first run) `<data_dir>/retail.db`.
    ///
    /// `:memory:` gives a private database that disappears on exit (see
    /// [`kit::sqlite::SqliteFile::open`]).
    pub fn open(data_dir: &str) -> Result<Self, DbError> {
        let spec = FileSpec {
            server: "sql-mcp-server",
            file: DB_FILE,
            what: "database",
            readers: READERS,
        };
        let prepare = |writer: &mut Connection| {
            writer.execute_batch("PRAGMA foreign_keys = ON;")?;
            writer.execute_batch(SCHEMA_SQL)?;
            migrate(writer)?;
            seed::seed_if_empty(writer).map(drop)
        };
        SqliteFile::open(data_dir, spec, prepare, ReadOnlyConn::open).map(Self)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// A read-only connection: the first free one, else waits on one in turn.
    pub fn reader(&self) -> std::sync::MutexGuard<'_, ReadOnlyConn> {
        self.0.reader()
    }

    /// The writer connection.
    pub fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.0.writer()
    }
}

/// Columns added to `orders` after files were first created, each with the statement that adds it.
///
/// `CREATE TABLE IF NOT EXISTS` leaves a table of an older file as it was, so a column the schema
/// gained later is added here; a nullable column without a default is added without rewriting
/// the table, and the rows that predate it read NULL.
const ADDED_ORDER_COLUMNS: [(&str, &str); 2] = [
    (
        "cancelled_at",
        "ALTER TABLE orders ADD COLUMN cancelled_at TEXT",
    ),
    (
        "cancel_reason",
        "ALTER TABLE orders ADD COLUMN cancel_reason TEXT",
    ),
];

/// Brings the tables of a file created by an older version up to [`SCHEMA_SQL`].
fn migrate(writer: &Connection) -> rusqlite::Result<()> {
    let present: Vec<String> = writer
        .prepare("SELECT name FROM pragma_table_info('orders')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (column, statement) in ADDED_ORDER_COLUMNS {
        if !present.iter().any(|p| p == column) {
            writer.execute_batch(statement)?;
        }
    }
    Ok(())
}

/// Opens a connection with the flags read-only connections use; see [`crate::readonly`].
pub(crate) fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `orders` table as files created before `cancel_order` have it.
    const OLD_ORDERS: &str = "CREATE TABLE orders (
        id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL,
        created_at TEXT NOT NULL, total_cents INTEGER NOT NULL,
        idempotency_key TEXT UNIQUE, idempotency_fingerprint TEXT);
        INSERT INTO orders (id, customer_id, status, created_at, total_cents)
        VALUES ('ORD-OLD', 'CUST-0001', 'processing', '2026-01-01T00:00:00Z', 100);";

    #[test]
    fn an_older_file_gains_the_cancellation_columns_and_keeps_its_rows() {
        let dir = testkit::TempDir::new("sql-migrate").expect("temp dir");
        let path = dir.path().join(DB_FILE);
        Connection::open(&path)
            .and_then(|c| c.execute_batch(OLD_ORDERS))
            .expect("old file");
        let db = Database::open(&dir.arg()).expect("open migrates");
        let (status, cancelled_at): (String, Option<String>) = db
            .reader()
            .conn()
            .query_row(
                "SELECT status, cancelled_at FROM orders WHERE id = 'ORD-OLD'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("old row with the new column");
        assert_eq!(status, "processing");
        assert_eq!(cancelled_at, None);
        drop(db);
        Database::open(&dir.arg()).expect("a second open finds nothing to add");
    }
}
