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

/// Opens a connection with the flags read-only connections use; see [`crate::readonly`].
pub(crate) fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
}
