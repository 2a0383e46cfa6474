//! The SQLite file a server keeps its data in: where it lives, and the connections tools use.
//!
//! One writer connection (behind a mutex: SQLite has one writer at a time anyway) and a small pool
//! of read-only connections, so reads run in parallel with each other and with a write under WAL.
//! The writer runs with `synchronous = FULL`, so a write acknowledged to a caller survives a crash.
//! What each server adds (its schema, its seed, how its readers are locked down) comes in as
//! closures; the SQL server's readers are its own type, hence the parameter `R`.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rusqlite::Connection;

use crate::data_dir::DataDir;

/// How long a connection waits for another's lock before giving up with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// SQLite refused to open, prepare or seed the file.
    #[error("{what} {path}: {source}")]
    Sqlite {
        /// What the file is to its server ("database", "document store").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// What a server's file is, and how to prepare it.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec {
    /// The server's name: names its private folder for `--data-dir :memory:`.
    pub server: &'static str,
    /// File name inside the data directory.
    pub file: &'static str,
    /// What the file is, for error messages ("database", "document store").
    pub what: &'static str,
    /// Read-only connections kept open.
    pub readers: usize,
}

/// An open file: one writer, a pool of readers of type `R`.
#[derive(Debug)]
pub struct SqliteFile<R> {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<R>>,
    /// Round-robin start for picking a reader, so load spreads instead of piling on the first.
    next_reader: AtomicUsize,
    /// Held so a `:memory:` folder lives as long as the file (and is removed after).
    _dir: DataDir,
}

impl<R> SqliteFile<R> {
    /// Opens `<data_dir>/<spec.file>`, creating it if needed.
    ///
    /// The writer gets WAL, `synchronous = FULL` and the busy timeout, then `prepare` (schema,
    /// seed, pragmas of the server's own) runs on it before any reader opens, so readers always
    /// see a prepared file. `open_reader` opens each read-only connection.
    ///
    /// `:memory:` gives a private file that disappears on exit. It lives in a temporary folder
    /// rather than in SQLite's memory mode so that it behaves like the real thing: WAL, parallel
    /// readers, read-only connections of their own.
    pub fn open(
        data_dir: &str,
        spec: FileSpec,
        prepare: impl FnOnce(&mut Connection) -> rusqlite::Result<()>,
        open_reader: impl Fn(&Path) -> rusqlite::Result<R>,
    ) -> Result<Self, OpenError> {
        let dir = DataDir::resolve(data_dir, spec.server).map_err(|source| OpenError::DataDir {
            path: data_dir.into(),
            source,
        })?;
        let path = dir.path().join(spec.file);
        let sqlite = |source| OpenError::Sqlite {
            what: spec.what,
            path: path.clone(),
            source,
        };

        let mut writer = Connection::open(&path).map_err(sqlite)?;
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;",
            )
            .map_err(sqlite)?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        prepare(&mut writer).map_err(sqlite)?;

        let readers = (0..spec.readers.max(1))
            .map(|_| open_reader(&path).map(Mutex::new))
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

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only connection: the first free one, else waits on one in turn.
    pub fn reader(&self) -> MutexGuard<'_, R> {
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

#[cfg(test)]
mod tests {
    use rusqlite::OpenFlags;

    use super::*;

    const SPEC: FileSpec = FileSpec {
        server: "kit-sqlite-test",
        file: "test.db",
        what: "test file",
        readers: 2,
    };

    fn reader(path: &Path) -> rusqlite::Result<Connection> {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
    }

    #[test]
    fn the_writer_is_prepared_before_readers_open_and_readers_see_its_writes() {
        let file = SqliteFile::open(
            ":memory:",
            SPEC,
            |w| w.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);"),
            reader,
        )
        .expect("open");
        let mode: String = file
            .writer()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        file.writer()
            .execute("INSERT INTO t VALUES (2)", [])
            .expect("write");
        let n: i64 = file
            .reader()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read");
        assert_eq!(n, 2);
        // Every reader is in use at once and still answers.
        let (a, b) = (file.reader(), file.reader());
        assert!(a.is_readonly(rusqlite::MAIN_DB).expect("flag"));
        assert!(b.is_readonly(rusqlite::MAIN_DB).expect("flag"));
    }

    #[test]
    fn a_failing_preparation_names_the_file_and_what_it_is() {
        let err = SqliteFile::open(":memory:", SPEC, |w| w.execute_batch("NOT SQL"), reader)
            .expect_err("refused");
        let text = err.to_string();
        assert!(
            text.starts_with("test file ") && text.contains("test.db"),
            "{text}"
        );
    }
}
