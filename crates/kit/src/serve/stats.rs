//! What the front holds now and what it refused (HTTP sessions and connections, and the stdio
//! front's pauses and refused ids), for a process's metrics.
//!
//! Kept as plain counters here, so every server shares them without a metrics stack; the
//! orchestrator reads them into its own instruments.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

/// A limit of the HTTP front, as named in refusals, logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrontLimit {
    /// `--max-sessions`.
    Sessions,
    /// `--max-connections`.
    Connections,
    /// `--header-read-timeout-secs`.
    HeaderReadTimeout,
    /// `--body-read-timeout-secs`.
    BodyReadTimeout,
    /// `--idle-connection-secs`.
    IdleConnection,
    /// `--max-initialize-bytes`.
    InitializeBytes,
    /// `--max-body-bytes`.
    BodyBytes,
    /// The Host check (`--allowed-hosts`).
    Host,
    /// The Origin check (`--allowed-origins`).
    Origin,
    /// Stdio: `--max-pending-requests` paused reading (counted once per paused request).
    PendingRequests,
    /// Stdio: a request id reused while a request with it is in flight.
    RequestIdInFlight,
}

impl FrontLimit {
    /// Every limit, in a stable order (for metrics).
    pub const ALL: [FrontLimit; 11] = [
        FrontLimit::Sessions,
        FrontLimit::Connections,
        FrontLimit::HeaderReadTimeout,
        FrontLimit::BodyReadTimeout,
        FrontLimit::IdleConnection,
        FrontLimit::InitializeBytes,
        FrontLimit::BodyBytes,
        FrontLimit::Host,
        FrontLimit::Origin,
        FrontLimit::PendingRequests,
        FrontLimit::RequestIdInFlight,
    ];

    /// The name used in metric labels and in the `data.limit` of a refusal.
    pub fn name(self) -> &'static str {
        match self {
            FrontLimit::Sessions => "maxSessions",
            FrontLimit::Connections => "maxConnections",
            FrontLimit::HeaderReadTimeout => "headerReadTimeout",
            FrontLimit::BodyReadTimeout => "bodyReadTimeout",
            FrontLimit::IdleConnection => "idleConnection",
            FrontLimit::InitializeBytes => "maxInitializeBytes",
            FrontLimit::BodyBytes => "maxBodyBytes",
            FrontLimit::Host => "allowedHosts",
            FrontLimit::Origin => "allowedOrigins",
            FrontLimit::PendingRequests => "maxPendingRequests",
            FrontLimit::RequestIdInFlight => "requestIdInFlight",
        }
    }

    /// The flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            FrontLimit::Sessions => "--max-sessions",
            FrontLimit::Connections => "--max-connections",
            FrontLimit::HeaderReadTimeout => "--header-read-timeout-secs",
            FrontLimit::BodyReadTimeout => "--body-read-timeout-secs",
            FrontLimit::IdleConnection => "--idle-connection-secs",
            FrontLimit::InitializeBytes => "--max-initialize-bytes",
            FrontLimit::BodyBytes => "--max-body-bytes",
            FrontLimit::Host => "--allowed-hosts",
            FrontLimit::Origin => "--allowed-origins",
            FrontLimit::PendingRequests => "--max-pending-requests",
            FrontLimit::RequestIdInFlight => {
                "(none: JSON-RPC ids are unique among requests in flight)"
            }
        }
    }

    fn index(self) -> usize {
        FrontLimit::ALL
            .iter()
            .position(|l| *l == self)
            .unwrap_or_default()
    }
}

/// Live counts and refusals of one HTTP front; share it through an `Arc`.
#[derive(Debug, Default)]
pub struct FrontStats {
    sessions: AtomicUsize,
    /// Places taken by `initialize` requests whose session is being created.
    reserved: AtomicUsize,
    connections: AtomicUsize,
    enforced: [AtomicU64; FrontLimit::ALL.len()],
}

impl FrontStats {
    /// MCP sessions alive now.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// TCP connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// How many times `limit` refused or closed something since start.
    pub fn enforced(&self, limit: FrontLimit) -> u64 {
        self.enforced[limit.index()].load(Ordering::Relaxed)
    }

    /// Takes a place for a new session if sessions alive and places taken stay within `max`;
    /// held until the `initialize` is answered (its session is counted alive by then), so
    /// concurrent `initialize` requests can never open more than `max` sessions between them.
    pub(super) fn reserve_session(self: &Arc<Self>, max: usize) -> Option<SessionPlace> {
        let reserved = self.reserved.fetch_add(1, Ordering::AcqRel) + 1;
        if self.sessions() + reserved > max {
            self.reserved.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(SessionPlace(self.clone()))
    }

    pub(super) fn set_sessions(&self, n: usize) {
        self.sessions.store(n, Ordering::Relaxed);
    }

    pub(super) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn enforce(&self, limit: FrontLimit) {
        self.enforced[limit.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// A place for a session being created; given back on drop.
#[derive(Debug)]
pub(super) struct SessionPlace(Arc<FrontStats>);

impl Drop for SessionPlace {
    fn drop(&mut self) {
        self.0.reserved.fetch_sub(1, Ordering::AcqRel);
    }
}
