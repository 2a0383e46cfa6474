//! What one HTTP client may hold of the front: sessions, connections, time and client data.
//!
//! Each limit is a flag with a default sized for a shared service on a small machine. Beyond a
//! limit the client gets an HTTP status and a JSON-RPC error naming the limit and its flag
//! ([`super::refusal`]), and the refusal is counted ([`super::FrontStats`]).

use std::time::Duration;

/// Default for [`HttpLimits::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 1_000;
/// Default for [`HttpLimits::session_idle_secs`].
pub const DEFAULT_SESSION_IDLE_SECS: u64 = 300;
/// Default for [`HttpLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// Default for [`HttpLimits::header_read_timeout_secs`].
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default for [`HttpLimits::body_read_timeout_secs`].
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 30;
/// Default for [`HttpLimits::idle_connection_secs`].
pub const DEFAULT_IDLE_CONNECTION_SECS: u64 = 60;
/// Default for [`HttpLimits::max_initialize_bytes`].
pub const DEFAULT_MAX_INITIALIZE_BYTES: usize = 64 * 1024;
/// Longest client name, version or title kept from `initialize`; longer ones are cut.
pub const MAX_CLIENT_INFO_CHARS: usize = 256;
/// Descriptors kept free of connections: upstream restarts (three per stdio child), log files,
/// the listener and sockets to HTTP upstreams must still open when connections are at their cap.
pub const RESERVED_DESCRIPTORS: usize = 256;

/// The HTTP front's limits (flags of every server's `serve`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HttpLimits {
    /// Live MCP sessions at once; an `initialize` beyond it gets 503 with `Retry-After`.
    #[arg(long, default_value_t = DEFAULT_MAX_SESSIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_sessions: usize,
    /// Seconds a session may go without a message before it is closed and its memory freed.
    #[arg(long, default_value_t = DEFAULT_SESSION_IDLE_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub session_idle_secs: u64,
    /// Open TCP connections at once; one beyond it gets 503 and is closed. Lowered at start to
    /// what the descriptor limit allows, with descriptors kept for upstreams.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,
    /// Seconds a client may take to send a request's headers once it started; then the
    /// connection is closed (slow-header clients hold no connection for long).
    #[arg(long, default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub header_read_timeout_secs: u64,
    /// Seconds a client may take to send a request's body; then 408.
    #[arg(long, default_value_t = DEFAULT_BODY_READ_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub body_read_timeout_secs: u64,
    /// Seconds a keep-alive connection may sit with no request before it is closed (also the
    /// time a new connection has to start its first request).
    #[arg(long, default_value_t = DEFAULT_IDLE_CONNECTION_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_connection_secs: u64,
    /// Largest `initialize` request: what a session keeps of its client for its whole life.
    #[arg(long, default_value_t = DEFAULT_MAX_INITIALIZE_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1_024..=16 * 1024 * 1024))]
    pub max_initialize_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            session_idle_secs: DEFAULT_SESSION_IDLE_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            body_read_timeout_secs: DEFAULT_BODY_READ_TIMEOUT_SECS,
            idle_connection_secs: DEFAULT_IDLE_CONNECTION_SECS,
            max_initialize_bytes: DEFAULT_MAX_INITIALIZE_BYTES,
        }
    }
}

impl HttpLimits {
    pub(super) fn session_idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_secs)
    }

    pub(super) fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub(super) fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_secs)
    }

    pub(super) fn idle_connection(&self) -> Duration {
        Duration::from_secs(self.idle_connection_secs)
    }
}

/// Raises the soft descriptor limit to the hard one, and returns how many connections fit in
/// it with [`RESERVED_DESCRIPTORS`] kept free: a front that ran out of descriptors could not
/// restart a crashed upstream (no descriptor left for its pipes) nor accept its operator's call.
pub(super) fn connections_that_fit(wanted: usize) -> usize {
    let Some(limit) = raise_descriptor_limit() else {
        return wanted;
    };
    let room = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(1);
    if room < wanted {
        tracing::warn!(
            max_connections = wanted,
            descriptor_limit = limit,
            lowered_to = room,
            "--max-connections lowered to fit the descriptor limit (RLIMIT_NOFILE) with {RESERVED_DESCRIPTORS} kept for upstreams"
        );
        room
    } else {
        wanted
    }
}

/// The soft `RLIMIT_NOFILE` after raising it to the hard limit, or `None` where it cannot be
/// read.
fn raise_descriptor_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}
