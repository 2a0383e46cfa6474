//! Per-server call figures for status: counts, errors, latency percentiles, connection state.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Figures of one upstream, updated on every call.
#[derive(Debug)]
pub struct ServerStats {
    calls: AtomicU64,
    errors: AtomicU64,
    /// Microseconds, 1 µs to 10 min, 3 significant digits: enough for p99 of any call.
    latency: Mutex<Option<Histogram<u64>>>,
    last_error: Mutex<Option<(String, DateTime<Utc>)>>,
    /// Questions the server asked agents (elicitation, sampling, roots), by method and how they
    /// ended.
    questions: Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
}

impl Default for ServerStats {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
            last_error: Mutex::new(None),
            questions: Mutex::new(Default::default()),
        }
    }
}

fn new_histogram() -> Option<Histogram<u64>> {
    // Constant bounds that hdrhistogram accepts; `None` would only mean no latency figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).ok()
}

/// A snapshot for `orchestrator://status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    /// Calls routed to this server.
    pub calls: u64,
    /// Of which failed (tool errors included).
    pub errors: u64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// The last error and when it happened.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub last_error_at: Option<String>,
}

impl ServerStats {
    /// Counts a question the server asked (`method`), which ended as `outcome`.
    pub fn question(&self, method: &'static str, outcome: &'static str) {
        *self
            .questions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((method, outcome))
            .or_default() += 1;
    }

    /// Questions asked so far: `((method, outcome), count)`.
    pub fn questions(&self) -> Vec<((&'static str, &'static str), u64)> {
        self.questions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// Records one finished call.
    pub fn record(&self, elapsed: Duration, failed: Option<&str>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let micros = (elapsed.as_micros() as u64).max(1);
        if let Some(h) = self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            h.saturating_record(micros);
        }
        if let Some(e) = failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.set_error(e);
        }
    }

    /// Remembers an error that is not a call's (a failed connection, say).
    pub fn set_error(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((error.to_owned(), Utc::now()));
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(e, _)| e.clone())
    }

    /// A consistent copy of the figures.
    pub fn snapshot(&self) -> StatsSnapshot {
        let h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let pct = |q: f64| match h.as_ref() {
            Some(h) if !h.is_empty() => h.value_at_quantile(q) as f64 / 1000.0,
            _ => 0.0,
        };
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            last_error: last.as_ref().map(|(e, _)| e.clone()),
            last_error_at: last.map(|(_, t)| t.to_rfc3339()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_errors() {
        let s = ServerStats::default();
        for ms in 1..=100 {
            s.record(Duration::from_millis(ms), None);
        }
        s.record(Duration::from_millis(5), Some("boom"));
        let snap = s.snapshot();
        assert_eq!(snap.calls, 101);
        assert_eq!(snap.errors, 1);
        assert!((45.0..=55.0).contains(&snap.p50_ms), "{}", snap.p50_ms);
        assert!(snap.p99_ms >= 95.0, "{}", snap.p99_ms);
        assert_eq!(snap.last_error.as_deref(), Some("boom"));
    }
}
