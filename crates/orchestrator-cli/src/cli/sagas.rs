//! `mcp-orchestrator sagas`: the saga log as a person reads it. A saga whose undo failed after
//! every attempt (`compensation_failed`) left the systems disagreeing; the orchestrator cannot
//! put that right, so it keeps the saga until someone has and says so with `sagas resolve`.
//!
//! Reads and writes the log file the configuration names, not a running orchestrator: it works
//! whether or not one runs (SQLite lets both use the file at once).

use std::path::Path;

use orchestrator::saga_log::{SagaLog, SagaRecord};

use crate::output::table;

/// How many sagas waiting for a person are listed.
const LISTED: usize = 100;

/// Lists the sagas waiting for a person and the log's counts by state; exit code 0.
pub fn list(config: &Path, json: bool) -> anyhow::Result<i32> {
    let Some(log) = open(config)? else {
        return Ok(0);
    };
    let waiting = log.in_state("compensation_failed", LISTED)?;
    let counts = log.counts()?;
    if json {
        let counts: serde_json::Map<String, serde_json::Value> = counts
            .into_iter()
            .map(|(state, n)| (state, n.into()))
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "log": log.path().display().to_string(),
                "counts": counts,
                "compensationFailed": waiting,
            }))?
        );
        return Ok(0);
    }
    out!("saga log: {}", log.path().display());
    let counts: Vec<String> = counts
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    out!(
        "sagas: {}",
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        }
    );
    if waiting.is_empty() {
        out!("no saga waits for a person");
        return Ok(0);
    }
    out!(
        "{} saga(s) whose undo failed: put right what the failed undo left, then `mcp-orchestrator sagas resolve <ID> --note <what you did>`",
        waiting.len()
    );
    let mut t = table(&[
        "saga",
        "composite",
        "failed step",
        "started",
        "undo that failed",
    ]);
    for saga in &waiting {
        t.add_row([
            saga.id.clone(),
            saga.composite.clone(),
            saga.failed_step.clone().unwrap_or_default(),
            saga.started_at.clone(),
            failed_undos(saga),
        ]);
    }
    out!("{t}");
    Ok(0)
}

/// Marks saga `id` resolved; exit code 1 (with the reason on stderr) when it is not one whose
/// undo failed.
pub fn resolve(config: &Path, id: &str, note: &str) -> anyhow::Result<i32> {
    if note.trim().is_empty() {
        eprintln!("--note must say what was done to put the systems right");
        return Ok(2);
    }
    let Some(log) = open(config)? else {
        eprintln!("no saga `{id}`: there is no saga log yet");
        return Ok(1);
    };
    match log.resolve(id, note) {
        Ok(()) => {
            out!("saga {id}: resolved");
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

/// The log the configuration names, or `None` (said on stdout) when no saga has written one.
fn open(config: &Path) -> anyhow::Result<Option<std::sync::Arc<SagaLog>>> {
    let config = super::load(config)?;
    let settings = &config.saga_log;
    if !settings.path.exists() {
        out!(
            "no saga log at {} (no saga has run)",
            settings.path.display()
        );
        return Ok(None);
    }
    Ok(Some(SagaLog::open(
        &settings.path,
        settings.keep_ended,
        Box::new(|_| {}),
    )?))
}

/// Each undo that failed, with its error.
fn failed_undos(saga: &SagaRecord) -> String {
    saga.steps
        .iter()
        .filter(|s| s["state"] == "compensation_failed")
        .map(|s| {
            format!(
                "{}: {}",
                s["step"].as_str().unwrap_or("?"),
                s["error"].as_str().unwrap_or("(no error recorded)")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
