//! Picking up a changed `mcp.json` while running, from any of three triggers: the file watcher
//! (`orchestrator.reload.watch`), SIGHUP, and the HTTP front's `POST /admin/reload`. Each reads
//! and validates the whole file, then [`Gateway::apply`] puts it in force; a file that does not
//! validate is refused, logged, and shown in `orchestrator://status` (`config.lastReloadError`),
//! and the running configuration stays.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, ConfigError},
    gateway::{Gateway, ReloadSummary},
};

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not parse or validate, or names a tool no server lists.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

/// Reloads one gateway from one file.
#[derive(Debug)]
pub struct Reloader {
    gateway: Arc<Gateway>,
    path: PathBuf,
}

impl Reloader {
    /// A reloader of `gateway` from the file at `path`.
    pub fn new(gateway: Arc<Gateway>, path: &Path) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            path: path.to_path_buf(),
        })
    }

    /// Reads, validates and applies the file. `trigger` names what asked, for the log.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadSummary, ReloadError> {
        let outcome = match Config::load(&self.path) {
            Ok(config) => self.gateway.apply(config).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(summary) if summary.same_digest => {
                self.gateway.metrics().config_reload("unchanged");
                tracing::debug!(trigger, "config reload: file unchanged");
                Ok(summary)
            }
            Ok(summary) => {
                self.gateway.metrics().config_reload("applied");
                tracing::info!(
                    trigger,
                    added = ?summary.added,
                    removed = ?summary.removed,
                    restarted = ?summary.restarted,
                    unchanged = summary.unchanged.len(),
                    "config reloaded"
                );
                Ok(summary)
            }
            Err(e) => {
                let message = self.gateway.config().redact(&e.to_string());
                tracing::error!(trigger, error = %message, "config reload refused; the running configuration stays");
                self.gateway.record_reload_error(message);
                self.gateway.metrics().config_reload("refused");
                Err(ReloadError::Invalid(e))
            }
        }
    }

    /// Reloads on SIGHUP, and on changes to the file when `watch`, until `shutdown`. A watcher
    /// that cannot start is logged and skipped: SIGHUP and the admin endpoint still work.
    pub fn spawn_triggers(
        self: &Arc<Self>,
        watch: bool,
        debounce: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = mpsc::channel::<()>(1);
        let watcher = if watch {
            match watch_file(&self.path, tx.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot watch the config file; reload with SIGHUP or POST /admin/reload");
                    None
                }
            }
        } else {
            None
        };
        let reloader = self.clone();
        tokio::spawn(async move {
            // Dropped when the task ends, which stops the watcher thread.
            let _watcher = watcher;
            reloader.run(rx, tx, debounce, shutdown).await;
        })
    }

    async fn run(
        &self,
        mut file_changed: mpsc::Receiver<()>,
        _keep_open: mpsc::Sender<()>,
        debounce: Duration,
        shutdown: CancellationToken,
    ) {
        let mut hangup = hangups();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = file_changed.recv() => {
                    // Editors write in steps (truncate, write, rename): wait for a quiet moment.
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            more = tokio::time::timeout(debounce, file_changed.recv()) => {
                                if more.is_err() { break }
                            }
                        }
                    }
                    let _ = self.reload("file watcher").await;
                }
                Some(()) = next_hangup(&mut hangup) => {
                    let _ = self.reload("SIGHUP").await;
                }
            }
        }
    }
}

/// Watches the file's folder (not the file: an editor that saves by rename replaces the inode a
/// file watch would follow) and reports events naming the file.
fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let name = path.file_name().map(|n| n.to_os_string());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            // Full means a reload is already due; one more changes nothing.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    match hangups {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}
