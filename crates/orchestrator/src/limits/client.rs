//! The cap on calls one agent session has in flight: beyond it a call is refused at once with a
//! retryable `throttled` tool error, never queued, so one agent cannot starve the others.
//!
//! A "client" is one MCP session: the front makes one handler per stdio connection and per HTTP
//! session, and each holds one [`ClientCalls`]. A stateless HTTP front (`serve --stateless`, or
//! 2026-07-28 agents) makes one handler per request, so there the cap bounds one request only and
//! the per-server bulkheads are what bounds an agent.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a refused agent is told to wait: a slot frees when any of its calls finishes, which
/// for most tools is a matter of milliseconds.
pub const RETRY_AFTER_MS: u64 = 100;

/// The config path named in refusals.
pub const CONFIG_PATH: &str = "orchestrator.limits.maxConcurrentCallsPerClient";

/// One session's calls in flight, at most `limit`.
#[derive(Debug, Clone)]
pub struct ClientCalls {
    /// One permit per call allowed in flight; shared by clones of the session's handler.
    slots: Arc<Semaphore>,
    /// The cap, for the refusal's message.
    limit: usize,
}

/// Refusal: the session already has `limit` calls in flight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many calls in flight from this client: at most {limit} at once ({CONFIG_PATH}); \
     retry when one of them has finished"
)]
pub struct ClientLimitReached {
    /// The cap.
    pub limit: usize,
}

impl ClientLimitReached {
    /// The tool error the agent receives: `throttled`, retryable, with a short `retryAfterMs`.
    pub fn to_tool_error(&self) -> kit::ToolError {
        kit::ToolError::throttled(self.to_string(), RETRY_AFTER_MS)
            .with_meta("reason", "client_limit".into())
            .with_meta("limit", self.limit.into())
    }
}

impl ClientCalls {
    /// A session allowed `limit` calls at once (validated ≥ 1 by the config layer).
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Takes a slot for one call, held until the permit drops; refuses at once when none is free.
    pub fn try_enter(&self) -> Result<OwnedSemaphorePermit, ClientLimitReached> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ClientLimitReached { limit: self.limit })
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_past_the_cap_is_refused_at_once_and_a_slot_frees_on_drop() {
        let calls = ClientCalls::new(2);
        let a = calls.try_enter().expect("first");
        let _b = calls.clone().try_enter().expect("second, through a clone");
        assert_eq!(calls.in_flight(), 2);
        let refused = calls.try_enter().expect_err("third");
        assert_eq!(refused, ClientLimitReached { limit: 2 });
        let error = refused.to_tool_error();
        assert_eq!(error.kind, kit::ErrorKind::Throttled);
        assert!(error.retryable);
        assert_eq!(error.retry_after_ms, Some(RETRY_AFTER_MS));
        assert!(
            error.message.contains("at most 2") && error.message.contains(CONFIG_PATH),
            "{}",
            error.message
        );
        let meta = error.meta();
        assert_eq!(meta.get("reason"), Some(&"client_limit".into()));
        drop(a);
        assert_eq!(calls.in_flight(), 1);
        let _slot = calls.try_enter().expect("a slot freed");
    }

    #[test]
    fn sessions_do_not_share_slots() {
        let one = ClientCalls::new(1);
        let other = ClientCalls::new(1);
        let _held = one.try_enter().expect("one");
        assert!(one.try_enter().is_err());
        let _slot = other.try_enter().expect("the other session is unaffected");
    }
}
