//! The database file: where it lives, its schema, first-run seeding, and the connections tools use.
//!
//! One writer connection (behind a mutex: SQLite has one writer at a time anyway) and a small pool
//! of read-only connections, so reads run in parallel under WAL. Every read-only connection is
//! locked down the same way the agent-facing `query` tool needs (see [`crate::readonly`]), so no
//! read path can write.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

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
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// SQLite refused to open or prepare the file.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// An open database.
#[derive(Debug)]
pub struct Database {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<ReadOnlyConn>>,
    /// Round-robin start for picking a reader, so load spreads instead of piling on the first.
    next_reader: AtomicUsize,
    /// Held so a `:memory:` folder lives as long as the database (and is removed after).
    _dir: kit::data_dir::DataDir,
}

impl Database {
    /// Opens (creating and seeding on first run) `<data_dir>/retail.db`.
    ///
    /// `:memory:` gives a private database that disappears on exit. It lives in a temporary file
    /// rather than in SQLite's memory mode so that it behaves exactly like the real thing: WAL,
    /// parallel readers, and read-only connections of their own.
    pub fn open(data_dir: &str) -> Result<Self, DbError> {
        let dir =
            kit::data_dir::DataDir::resolve(data_dir, "sql-mcp-server").map_err(|source| {
                DbError::DataDir {
                    path: data_dir.into(),
                    source,
                }
            })?;
        let path = dir.path().join(DB_FILE);
        let sqlite = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };

        let mut writer = Connection::open(&path).map_err(sqlite)?;
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;",
            )
            .map_err(sqlite)?;
        writer
            .busy_timeout(Duration::from_secs(5))
            .map_err(sqlite)?;
        writer.execute_batch(SCHEMA_SQL).map_err(sqlite)?;
        seed::seed_if_empty(&mut writer).map_err(sqlite)?;

        let readers = (0..READERS)
            .map(|_| ReadOnlyConn::open(&path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite)?;

        Ok(Self {
            path,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            _dir: dir,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only connection: the first free one, else waits on one in turn.
    pub fn reader(&self) -> MutexGuard<'_, ReadOnlyConn> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Ok(guard) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return guard;
            }
        }
        // A poisoned reader only means a panic mid-read; the connection itself is still sound.
        self.readers[start % self.readers.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The writer connection.
    pub fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
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
