//! `orchestrator.reload`: how a running orchestrator picks up a changed `mcp.json`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `orchestrator.reload` as written; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the config file and reload when it changes (default true). SIGHUP and
    /// `POST /admin/reload` reload either way.
    pub watch: bool,
    /// Quiet time after the last change event before reloading (default 250 ms): editors write
    /// a file in several steps, and reading it halfway would refuse a good change.
    pub debounce_ms: u64,
    /// How long a removed or changed server's in-flight calls may run before it is stopped
    /// anyway (default 30 s).
    pub drain_grace_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce_ms: 250,
            drain_grace_ms: 30_000,
        }
    }
}

/// The validated reload settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Watch the file.
    pub watch: bool,
    /// Quiet time before a reload.
    pub debounce: Duration,
    /// Longest drain of a retired server.
    pub drain_grace: Duration,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        let d = ReloadConfig::default();
        Self {
            watch: d.watch,
            debounce: Duration::from_millis(d.debounce_ms),
            drain_grace: Duration::from_millis(d.drain_grace_ms),
        }
    }
}

impl ReloadConfig {
    /// Checks the bounds: a debounce over 10 s would look like a reload that never happens, and
    /// a drain grace over 10 min would keep retired servers (and their children) for too long.
    pub fn resolve(&self) -> Result<ReloadSettings, ConfigError> {
        if self.debounce_ms > 10_000 {
            return Err(ConfigError::new(
                "orchestrator.reload.debounceMs",
                format!("{} is over the 10000 ms maximum", self.debounce_ms),
            ));
        }
        if self.drain_grace_ms > 600_000 {
            return Err(ConfigError::new(
                "orchestrator.reload.drainGraceMs",
                format!("{} is over the 600000 ms maximum", self.drain_grace_ms),
            ));
        }
        Ok(ReloadSettings {
            watch: self.watch,
            debounce: Duration::from_millis(self.debounce_ms),
            drain_grace: Duration::from_millis(self.drain_grace_ms),
        })
    }
}
