//! The saga log: an SQLite file in which every saga writes down how far it got before it goes
//! on (started, each step that answered and its value, compensating, each undo, ended), so that
//! an orchestrator that dies mid-saga undoes it after a restart, without any agent asking
//! ([`crate::call::Composites::recover`]). `orchestrator://sagas` reads the recent ones from it.
//!
//! The writer runs with `synchronous = FULL`: an entry the saga waited for survives a crash of
//! the process or the machine. Writes happen on the blocking pool, one at a time.
//!
//! Sagas that ended well (`completed`, `compensated`, or `resolved` by a person) are kept up to
//! `keepEnded`, the most recent by start; older ones are deleted with their steps, when the log
//! is opened and every `min(keepEnded, 64)` ends after that, so the file of a service that runs
//! for months stays bounded. Sagas that need a person (`compensation_failed`) and unfinished ones
//! are never deleted: `mcp-orchestrator sagas resolve` is how a person says one is dealt with.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use rmcp::model::JsonObject;

use crate::workflow::executor::{Compensation, JournalWrite, Recorded, SagaJournal, SagaState};

/// Why the log could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SagaLogError {
    /// Its folder could not be created.
    #[error("saga log folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("saga log {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// No saga has this id.
    #[error("no saga `{0}` in the saga log")]
    Unknown(String),
    /// Only a saga whose undo failed waits for a person.
    #[error("saga `{id}` is {state}: only a compensation_failed saga is resolved by hand")]
    NotFailed {
        /// The saga.
        id: String,
        /// Its state.
        state: String,
    },
}

/// A saga the log shows as not ended: what recovery needs to undo it.
#[derive(Debug, Clone)]
pub struct Unfinished {
    /// Its id.
    pub id: String,
    /// The composite it ran.
    pub composite: String,
    /// Its input.
    pub input: Value,
    /// What its steps got to: the ones that answered, the ones sent without an outcome written
    /// down, and whether it was already undoing them.
    pub recorded: Recorded,
}

/// One saga as `orchestrator://sagas` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaRecord {
    /// Its id.
    pub id: String,
    /// The composite.
    pub composite: String,
    /// `running`, `compensating`, `completed`, `compensated`, `compensation_failed`, or
    /// `resolved` (a `compensation_failed` one a person has dealt with).
    pub state: String,
    /// The step whose failure started the compensation.
    pub failed_step: Option<String>,
    /// When it started and last changed (RFC 3339).
    pub started_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Each step written down: `succeeded`, then `compensated` or `compensation_failed`.
    pub steps: Vec<Value>,
}

/// Told how many ended sagas each pruning deleted (the metrics count them).
pub type PrunedReport = Box<dyn Fn(u64) + Send + Sync>;

/// The log file.
pub struct SagaLog {
    path: PathBuf,
    conn: Mutex<Connection>,
    keep_ended: u32,
    /// Ends written since the last pruning.
    ends: AtomicU32,
    pruned: PrunedReport,
}

impl std::fmt::Debug for SagaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaLog")
            .field("path", &self.path)
            .field("keep_ended", &self.keep_ended)
            .finish_non_exhaustive()
    }
}

/// Deletes the steps, then the sagas, of the ended-well sagas past the `?1` most recent.
const PRUNE: &str = "
DELETE FROM saga_steps WHERE saga_id IN (
    SELECT id FROM sagas WHERE state IN ('completed', 'compensated', 'resolved')
    ORDER BY started_at DESC, id DESC LIMIT -1 OFFSET ?1
);
DELETE FROM sagas WHERE id IN (
    SELECT id FROM sagas WHERE state IN ('completed', 'compensated', 'resolved')
    ORDER BY started_at DESC, id DESC LIMIT -1 OFFSET ?1
);
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sagas (
    id          TEXT PRIMARY KEY,
    composite   TEXT NOT NULL,
    input       TEXT NOT NULL,
    state       TEXT NOT NULL,
    failed_step TEXT,
    started_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS saga_steps (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id     TEXT NOT NULL REFERENCES sagas(id),
    step        TEXT NOT NULL,
    state       TEXT NOT NULL,
    value       TEXT,
    attempts    INTEGER,
    error       TEXT,
    at          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS saga_steps_by_saga ON saga_steps(saga_id, seq);
CREATE INDEX IF NOT EXISTS sagas_by_state ON sagas(state);
";

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

impl SagaLog {
    /// Opens (creating it and its folder if needed) the log at `path`, keeping `keep_ended`
    /// sagas that ended well (older ones are deleted now and as more end); `pruned` hears how
    /// many each pruning deleted.
    pub fn open(
        path: &Path,
        keep_ended: u32,
        pruned: PrunedReport,
    ) -> Result<Arc<Self>, SagaLogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SagaLogError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let sqlite = |source| SagaLogError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        let log = Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            keep_ended: keep_ended.max(1),
            ends: AtomicU32::new(0),
            pruned,
        };
        log.with(|c| log.prune(c))?;
        Ok(Arc::new(log))
    }

    /// Deletes the ended-well sagas past the `keep_ended` most recent, in one transaction;
    /// returns how many.
    fn prune(&self, c: &Connection) -> rusqlite::Result<usize> {
        let tx = c.unchecked_transaction()?;
        let mut deleted = 0;
        for statement in PRUNE.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            deleted = tx.execute(statement, [self.keep_ended])?;
        }
        tx.commit()?;
        if deleted > 0 {
            (self.pruned)(deleted as u64);
        }
        Ok(deleted)
    }

    /// Whether the end about to be written is the one that prunes: every `min(keep_ended, 64)`
    /// ends, so the log holds at most that many more than it keeps.
    fn prune_due(&self) -> bool {
        let every = self.keep_ended.min(64);
        self.ends.fetch_add(1, Ordering::Relaxed) % every == every - 1
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SagaLogError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|source| SagaLogError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Sagas not ended (`running` or `compensating`) that started before `before` (this
    /// process's start: the ones running in this process are not left over), oldest first.
    pub fn unfinished(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Unfinished>, SagaLogError> {
        let before = before.to_rfc3339();
        self.with(|c| {
            let mut sagas = c.prepare(
                "SELECT id, composite, input, state FROM sagas WHERE state IN ('running', 'compensating') AND started_at < ?1 ORDER BY started_at",
            )?;
            let rows: Vec<(String, String, String, String)> = sagas
                .query_map([&before], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut steps = c.prepare(
                "SELECT step, state, value FROM saga_steps WHERE saga_id = ?1 AND state IN ('launched', 'succeeded', 'not_taken') ORDER BY seq",
            )?;
            let mut out = Vec::new();
            for (id, composite, input, state) in rows {
                let entries: Vec<(String, String, Value)> = steps
                    .query_map([&id], |r| {
                        let value: Option<String> = r.get(2)?;
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            value
                                .and_then(|v| serde_json::from_str(&v).ok())
                                .unwrap_or(Value::Null),
                        ))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                out.push(Unfinished {
                    id,
                    composite,
                    input: serde_json::from_str(&input).unwrap_or(Value::Null),
                    recorded: recorded_of(entries, state == "compensating"),
                });
            }
            Ok(out)
        })
    }

    /// The `limit` most recent sagas, newest first, with their steps.
    pub fn recent(&self, limit: usize) -> Result<Vec<SagaRecord>, SagaLogError> {
        self.records("", limit)
    }

    /// The sagas in `state` (`compensation_failed`: the ones waiting for a person), newest
    /// first, at most `limit`.
    pub fn in_state(&self, state: &str, limit: usize) -> Result<Vec<SagaRecord>, SagaLogError> {
        self.records(state, limit)
    }

    /// How many sagas the log holds in each state.
    pub fn counts(&self) -> Result<Vec<(String, u64)>, SagaLogError> {
        self.with(|c| {
            let mut counts =
                c.prepare("SELECT state, count(*) FROM sagas GROUP BY state ORDER BY state")?;
            counts
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.unsigned_abs())))?
                .collect()
        })
    }

    /// Marks a `compensation_failed` saga `resolved`: a person has put right what its failed
    /// undo left, and says how in `note` (kept as the saga's last step entry). A resolved saga
    /// is kept and pruned like one that ended well.
    pub fn resolve(&self, id: &str, note: &str) -> Result<(), SagaLogError> {
        let state = self
            .state_of(id)?
            .ok_or_else(|| SagaLogError::Unknown(id.to_owned()))?;
        if state != SagaState::CompensationFailed.as_str() {
            return Err(SagaLogError::NotFailed {
                id: id.to_owned(),
                state,
            });
        }
        let at = now();
        let resolved = self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let updated = tx.execute(
                "UPDATE sagas SET state = 'resolved', updated_at = ?2 WHERE id = ?1 AND state = 'compensation_failed'",
                params![id, at],
            )?;
            if updated == 1 {
                tx.execute(
                    "INSERT INTO saga_steps (saga_id, step, state, value, at) VALUES (?1, '(operator)', 'resolved', ?2, ?3)",
                    params![id, note, at],
                )?;
            }
            tx.commit()?;
            Ok(updated == 1)
        })?;
        if resolved {
            Ok(())
        } else {
            // Resolved by someone else between the two reads.
            let state = self.state_of(id)?.unwrap_or_default();
            Err(SagaLogError::NotFailed {
                id: id.to_owned(),
                state,
            })
        }
    }

    /// Sagas (in `state`, or all when it is empty), newest first, with their steps.
    fn records(&self, state: &str, limit: usize) -> Result<Vec<SagaRecord>, SagaLogError> {
        self.with(|c| {
            let mut sagas = c.prepare(
                "SELECT id, composite, state, failed_step, started_at, updated_at FROM sagas WHERE ?2 = '' OR state = ?2 ORDER BY started_at DESC LIMIT ?1",
            )?;
            let mut records: Vec<SagaRecord> = sagas
                .query_map(params![limit as i64, state], |r| {
                    Ok(SagaRecord {
                        id: r.get(0)?,
                        composite: r.get(1)?,
                        state: r.get(2)?,
                        failed_step: r.get(3)?,
                        started_at: r.get(4)?,
                        updated_at: r.get(5)?,
                        steps: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut steps = c.prepare(
                "SELECT step, state, attempts, error, at, CASE WHEN state = 'resolved' THEN value END FROM saga_steps WHERE saga_id = ?1 ORDER BY seq",
            )?;
            for record in &mut records {
                record.steps = steps
                    .query_map([&record.id], |r| {
                        let mut step = serde_json::json!({
                            "step": r.get::<_, String>(0)?,
                            "state": r.get::<_, String>(1)?,
                            "attempts": r.get::<_, Option<i64>>(2)?,
                            "error": r.get::<_, Option<String>>(3)?,
                            "at": r.get::<_, String>(4)?,
                        });
                        if let Some(note) = r.get::<_, Option<String>>(5)? {
                            step["note"] = Value::String(note);
                        }
                        Ok(step)
                    })?
                    .collect::<rusqlite::Result<_>>()?;
            }
            Ok(records)
        })
    }

    /// The state the log shows for saga `id`.
    pub fn state_of(&self, id: &str) -> Result<Option<String>, SagaLogError> {
        self.with(|c| {
            c.query_row("SELECT state FROM sagas WHERE id = ?1", [id], |r| r.get(0))
                .optional()
        })
    }

    /// Runs one write on the blocking pool; a failure is logged, not returned: the saga goes
    /// on (its undo still runs in this process), only its recovery after a crash is at risk.
    fn write(
        self: &Arc<Self>,
        what: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<usize> + Send + 'static,
    ) -> JournalWrite<'static> {
        let log = self.clone();
        Box::pin(async move {
            let done = tokio::task::spawn_blocking(move || log.with(f)).await;
            match done {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(what, error = %e, "saga log write failed"),
                Err(e) => tracing::warn!(what, error = %e, "saga log write did not run"),
            }
        })
    }
}

/// A saga's step entries, oldest first, as recovery needs them: a step's last word counts (a
/// step settled after a failure has `launched`, then `succeeded` or `not_taken`).
fn recorded_of(entries: Vec<(String, String, Value)>, compensating: bool) -> Recorded {
    let mut recorded = Recorded {
        compensating,
        ..Recorded::default()
    };
    for (step, state, value) in entries {
        recorded.succeeded.retain(|(s, _)| *s != step);
        recorded.in_doubt.retain(|(s, _)| *s != step);
        match state.as_str() {
            "succeeded" => recorded.succeeded.push((step, value)),
            "launched" => {
                let args: JsonObject = match value {
                    Value::Object(o) => o,
                    _ => JsonObject::new(),
                };
                recorded.in_doubt.push((step, args));
            }
            _ => {}
        }
    }
    recorded
}

impl SagaJournal for Arc<SagaLog> {
    fn launched<'a>(
        &'a self,
        saga: &'a str,
        step: &'a str,
        args: &'a JsonObject,
    ) -> JournalWrite<'a> {
        let (id, step, args, at) = (
            saga.to_owned(),
            step.to_owned(),
            Value::Object(args.clone()).to_string(),
            now(),
        );
        self.write("launched", move |c| {
            c.execute(
                "INSERT INTO saga_steps (saga_id, step, state, value, at) VALUES (?1, ?2, 'launched', ?3, ?4)",
                params![id, step, args, at],
            )
        })
    }

    fn not_taken<'a>(&'a self, saga: &'a str, step: &'a str) -> JournalWrite<'a> {
        let (id, step, at) = (saga.to_owned(), step.to_owned(), now());
        self.write("not_taken", move |c| {
            c.execute(
                "INSERT INTO saga_steps (saga_id, step, state, at) VALUES (?1, ?2, 'not_taken', ?3)",
                params![id, step, at],
            )
        })
    }

    fn started<'a>(
        &'a self,
        saga: &'a str,
        composite: &'a str,
        input: &'a Value,
    ) -> JournalWrite<'a> {
        let (id, composite, input, at) = (
            saga.to_owned(),
            composite.to_owned(),
            input.to_string(),
            now(),
        );
        self.write("started", move |c| {
            c.execute(
                "INSERT INTO sagas (id, composite, input, state, started_at, updated_at) VALUES (?1, ?2, ?3, 'running', ?4, ?4)",
                params![id, composite, input, at],
            )
        })
    }

    fn succeeded<'a>(&'a self, saga: &'a str, step: &'a str, value: &'a Value) -> JournalWrite<'a> {
        let (id, step, value, at) = (saga.to_owned(), step.to_owned(), value.to_string(), now());
        self.write("succeeded", move |c| {
            c.execute(
                "INSERT INTO saga_steps (saga_id, step, state, value, at) VALUES (?1, ?2, 'succeeded', ?3, ?4)",
                params![id, step, value, at],
            )
        })
    }

    fn compensating<'a>(&'a self, saga: &'a str, failed_step: &'a str) -> JournalWrite<'a> {
        let (id, failed, at) = (saga.to_owned(), failed_step.to_owned(), now());
        self.write("compensating", move |c| {
            c.execute(
                "UPDATE sagas SET state = 'compensating', failed_step = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, failed, at],
            )
        })
    }

    fn undone<'a>(
        &'a self,
        saga: &'a str,
        step: &'a str,
        report: &'a Compensation,
    ) -> JournalWrite<'a> {
        let state = if report.outcome == "compensated" {
            "compensated"
        } else {
            "compensation_failed"
        };
        let (id, step, attempts, error, at) = (
            saga.to_owned(),
            step.to_owned(),
            i64::from(report.attempts),
            report.error.clone(),
            now(),
        );
        self.write("undone", move |c| {
            c.execute(
                "INSERT INTO saga_steps (saga_id, step, state, attempts, error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, step, state, attempts, error, at],
            )
        })
    }

    fn ended<'a>(&'a self, saga: &'a str, state: SagaState) -> JournalWrite<'a> {
        let (id, state, at) = (saga.to_owned(), state.as_str(), now());
        let log = self.prune_due().then(|| self.clone());
        self.write("ended", move |c| {
            let updated = c.execute(
                "UPDATE sagas SET state = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, state, at],
            )?;
            // The end is written either way: a pruning that fails is tried again later.
            if let Some(log) = log
                && let Err(e) = log.prune(c)
            {
                tracing::warn!(error = %e, "saga log pruning failed");
            }
            Ok(updated)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    fn counting(total: &Arc<AtomicU64>) -> PrunedReport {
        let total = total.clone();
        Box::new(move |n| {
            total.fetch_add(n, Ordering::Relaxed);
        })
    }

    async fn run(log: &Arc<SagaLog>, id: &str, state: Option<SagaState>) {
        log.started(id, "place_order", &Value::Null).await;
        log.succeeded(id, id, &serde_json::json!({"orderId": id}))
            .await;
        if let Some(state) = state {
            log.ended(id, state).await;
        }
    }

    fn count(log: &SagaLog, table: &str) -> i64 {
        log.with(|c| c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)))
            .expect("count")
    }

    #[tokio::test]
    async fn ended_sagas_past_keep_ended_are_deleted_with_their_steps_the_ones_needing_a_person_stay()
    -> anyhow::Result<()> {
        let dir = testkit::TempDir::new("saga-log-keep")?;
        let path = dir.path().join("sagas.db");
        let pruned = Arc::new(AtomicU64::new(0));
        let log = SagaLog::open(&path, 3, counting(&pruned))?;
        run(&log, "unfinished", None).await;
        run(&log, "needs-a-person", Some(SagaState::CompensationFailed)).await;
        for i in 0..10 {
            let state = if i % 2 == 0 {
                SagaState::Completed
            } else {
                SagaState::Compensated
            };
            run(&log, &format!("s{i}"), Some(state)).await;
        }
        // Pruned every 3 ends: never more than 3 + 2 ended well in between.
        let kept = log.recent(100)?;
        assert!(kept.len() <= 2 + 3 + 2, "{kept:?}");
        drop(log);
        // Opening prunes to exactly what is kept.
        let log = SagaLog::open(&path, 3, counting(&pruned))?;
        let ids: Vec<String> = log.recent(100)?.into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["s9", "s8", "s7", "needs-a-person", "unfinished"]);
        assert_eq!(pruned.load(Ordering::Relaxed), 7);
        assert_eq!(count(&log, "sagas"), 5);
        // One `succeeded` step each: the deleted sagas' steps went with them.
        assert_eq!(count(&log, "saga_steps"), 5);
        // What recovery reads is untouched.
        let unfinished = log.unfinished(chrono::Utc::now())?;
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].id, "unfinished");
        Ok(())
    }

    #[tokio::test]
    async fn a_person_resolves_only_a_saga_whose_undo_failed_and_it_is_then_pruned_like_the_others()
    -> anyhow::Result<()> {
        let dir = testkit::TempDir::new("saga-log-resolve")?;
        let path = dir.path().join("sagas.db");
        let pruned = Arc::new(AtomicU64::new(0));
        let log = SagaLog::open(&path, 1, counting(&pruned))?;
        run(&log, "failed", Some(SagaState::CompensationFailed)).await;
        run(&log, "done", Some(SagaState::Completed)).await;
        run(&log, "unfinished", None).await;
        assert_eq!(log.in_state("compensation_failed", 10)?.len(), 1);

        log.resolve("failed", "released RES-1 by hand")?;
        assert_eq!(log.state_of("failed")?.as_deref(), Some("resolved"));
        assert!(log.in_state("compensation_failed", 10)?.is_empty());
        let record = log.in_state("resolved", 10)?;
        let last = record[0].steps.last().cloned().unwrap_or_default();
        assert_eq!(last["state"], "resolved");
        assert_eq!(last["note"], "released RES-1 by hand");

        let again = log.resolve("failed", "twice").map_err(|e| e.to_string());
        assert_eq!(
            again,
            Err(
                "saga `failed` is resolved: only a compensation_failed saga is resolved by hand"
                    .into()
            )
        );
        assert!(matches!(
            log.resolve("done", "x"),
            Err(SagaLogError::NotFailed { state, .. }) if state == "completed"
        ));
        assert!(matches!(log.resolve("nope", "x"), Err(SagaLogError::Unknown(id)) if id == "nope"));
        assert!(matches!(
            log.resolve("unfinished", "x"),
            Err(SagaLogError::NotFailed { state, .. }) if state == "running"
        ));

        // Resolved, it counts as ended well: keeping one, the older of the two goes.
        drop(log);
        let log = SagaLog::open(&path, 1, counting(&pruned))?;
        let states = log.counts()?;
        assert_eq!(
            states,
            [("completed".to_owned(), 1), ("running".to_owned(), 1)],
            "{states:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_log_within_keep_ended_loses_nothing() -> anyhow::Result<()> {
        let dir = testkit::TempDir::new("saga-log-within")?;
        let path = dir.path().join("sagas.db");
        let pruned = Arc::new(AtomicU64::new(0));
        let log = SagaLog::open(&path, 64, counting(&pruned))?;
        for i in 0..64 {
            run(&log, &format!("s{i:02}"), Some(SagaState::Completed)).await;
        }
        drop(log);
        let log = SagaLog::open(&path, 64, counting(&pruned))?;
        assert_eq!(log.recent(1000)?.len(), 64);
        assert_eq!(pruned.load(Ordering::Relaxed), 0);
        Ok(())
    }
}
