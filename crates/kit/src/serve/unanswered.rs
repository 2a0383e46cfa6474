//! The requests a stdio session has read and not answered yet: what shutdown waits for, what
//! makes a reused id a refusal, and what holds the reader back when answers are not consumed.
//!
//! rmcp keys a request's answer by its id: a second request reusing an id in flight would take
//! over the first one's slot, and only one answer would go out for the two. So a reused id is
//! refused at the door with JSON-RPC `-32600` naming it, and the first request keeps its answer.
//!
//! rmcp also reads on as long as input comes, spawning a task per request, and an answer the
//! client does not read waits in memory. With a cap on requests read and not answered
//! (`--max-pending-requests`), stdin is not read while the cap is reached; answers leave through a
//! bounded queue, so a client that pipelines requests and never reads stdout meets a full pipe,
//! not a server that grows until it is killed.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use rmcp::{
    RoleServer,
    model::{ClientNotification, JsonRpcMessage, RequestId},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
};
use tokio::sync::Notify;

use super::{FrontLimit, FrontStats};
use crate::framing::{Gate, INVALID_REQUEST, Refused};

/// The flag setting [`Unanswered`]'s cap, named where the cap takes effect.
pub(super) const MAX_PENDING_FLAG: &str = "--max-pending-requests";

/// Ids of the requests read and not answered yet, at most a fixed number; clones share the set.
#[derive(Debug, Clone)]
pub(super) struct Unanswered {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ids: Mutex<HashSet<RequestId>>,
    /// Requests read and not answered, at most: past it the reader waits.
    max_pending: usize,
    /// Woken whenever the set empties, so waiting for shutdown does not poll.
    emptied: Notify,
    /// Woken whenever a request is answered, so a reader held at the cap does not poll.
    answered: Notify,
    /// Whether the reader was held at the cap before, so the log says it once per session.
    held_before: AtomicBool,
    /// Where pauses and refused ids are counted.
    stats: Arc<FrontStats>,
}

impl Unanswered {
    /// An empty set that lets `max_pending` requests (at least one) wait for their answers.
    pub(super) fn new(max_pending: usize, stats: Arc<FrontStats>) -> Self {
        Self {
            inner: Arc::new(Inner {
                ids: Mutex::new(HashSet::new()),
                max_pending: max_pending.max(1),
                emptied: Notify::new(),
                answered: Notify::new(),
                held_before: AtomicBool::new(false),
                stats,
            }),
        }
    }

    fn ids(&self) -> MutexGuard<'_, HashSet<RequestId>> {
        // A poisoned set only means a panic mid-update; the ids in it are still right.
        self.inner.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a message on its way to the client: a response or error answers its request.
    pub(super) fn sent(&self, message: &TxJsonRpcMessage<RoleServer>) {
        let id = match message {
            JsonRpcMessage::Response(r) => Some(&r.id),
            JsonRpcMessage::Error(e) => e.id.as_ref(),
            _ => None,
        };
        if let Some(id) = id {
            self.settle(id);
        }
    }

    fn settle(&self, id: &RequestId) {
        let mut ids = self.ids();
        if ids.remove(id) {
            self.inner.answered.notify_waiters();
            if ids.is_empty() {
                self.inner.emptied.notify_waiters();
            }
        }
    }

    pub(super) fn count(&self) -> usize {
        self.ids().len()
    }

    /// Resolves once every request read has been answered.
    pub(super) async fn all_answered(&self) {
        loop {
            // Created before the check, so an answer between the two still wakes us.
            let emptied = self.inner.emptied.notified();
            if self.count() == 0 {
                return;
            }
            emptied.await;
        }
    }

    /// Takes `id` into the set once there is room; refuses an id already in it.
    async fn enter(&self, id: &RequestId) -> Result<(), Refused> {
        let mut paused = false;
        loop {
            // Created before the check, so an answer between the two still wakes us.
            let answered = self.inner.answered.notified();
            {
                let mut ids = self.ids();
                if ids.contains(id) {
                    self.inner.stats.enforce(FrontLimit::RequestIdInFlight);
                    return Err(Refused {
                        code: INVALID_REQUEST,
                        message: format!(
                            "Invalid request: id {} is already used by a request in flight; \
                             use a new id for each request",
                            serde_json::to_string(id).unwrap_or_default()
                        ),
                    });
                }
                if ids.len() < self.inner.max_pending {
                    ids.insert(id.clone());
                    return Ok(());
                }
            }
            if !paused {
                paused = true;
                self.inner.stats.enforce(FrontLimit::PendingRequests);
            }
            if !self.inner.held_before.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_pending = self.inner.max_pending,
                    "{} requests are waiting for answers the client has not read \
                     ({MAX_PENDING_FLAG}); reading stdin pauses until answers drain",
                    self.inner.max_pending
                );
            }
            answered.await;
        }
    }
}

impl Gate for Unanswered {
    /// A request waits for room and is refused if its id is in flight; a cancellation means its
    /// request gets no answer, so it is not waited for either.
    async fn admit(&self, message: &RxJsonRpcMessage<RoleServer>) -> Result<(), Refused> {
        match message {
            JsonRpcMessage::Request(request) => self.enter(&request.id).await,
            JsonRpcMessage::Notification(n) => {
                if let ClientNotification::CancelledNotification(c) = &n.notification
                    && let Some(id) = &c.params.request_id
                {
                    self.settle(id);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn from_client(v: serde_json::Value) -> RxJsonRpcMessage<RoleServer> {
        serde_json::from_value(v).expect("a client message")
    }

    fn to_client(v: serde_json::Value) -> TxJsonRpcMessage<RoleServer> {
        serde_json::from_value(v).expect("a server message")
    }

    fn call(id: u32) -> RxJsonRpcMessage<RoleServer> {
        from_client(serde_json::json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "slow", "arguments": {} }
        }))
    }

    fn answer(id: u32) -> TxJsonRpcMessage<RoleServer> {
        to_client(serde_json::json!({
            "jsonrpc": "2.0", "id": id, "result": { "content": [] }
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn requests_read_are_waited_for_until_answered_or_cancelled() {
        let unanswered = Unanswered::new(16, Arc::default());
        assert_eq!(unanswered.admit(&call(1)).await, Ok(()));
        assert_eq!(unanswered.admit(&call(2)).await, Ok(()));
        let initialized = from_client(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/initialized"
        }));
        assert_eq!(unanswered.admit(&initialized).await, Ok(()));
        assert_eq!(unanswered.count(), 2);
        let waiter = tokio::spawn({
            let unanswered = unanswered.clone();
            async move { unanswered.all_answered().await }
        });
        unanswered.sent(&answer(1));
        // A notification to the client answers nothing.
        unanswered.sent(&to_client(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/tools/list_changed"
        })));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "request 2 is still unanswered");
        // A cancelled request gets no answer, so it is not waited for either.
        let cancelled = from_client(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": { "requestId": 2 }
        }));
        assert_eq!(unanswered.admit(&cancelled).await, Ok(()));
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("all answered")
            .expect("task ok");
        assert_eq!(unanswered.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_in_flight_is_refused_naming_it_and_free_again_once_answered() {
        let unanswered = Unanswered::new(16, Arc::default());
        assert_eq!(unanswered.admit(&call(7)).await, Ok(()));
        let refused = unanswered
            .admit(&call(7))
            .await
            .expect_err("id 7 is in flight");
        assert_eq!(refused.code, INVALID_REQUEST);
        assert!(refused.message.contains("id 7 "), "{}", refused.message);
        // A string id of the same digits is another id.
        let text_id = from_client(serde_json::json!({
            "jsonrpc": "2.0", "id": "7", "method": "ping"
        }));
        assert_eq!(unanswered.admit(&text_id).await, Ok(()));
        // The refusal took nothing from the first request: it is still awaited, once.
        assert_eq!(unanswered.count(), 2);
        unanswered.sent(&answer(7));
        assert_eq!(unanswered.admit(&call(7)).await, Ok(()), "7 is free again");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_cap_a_request_waits_until_an_answer_goes_out() {
        let unanswered = Unanswered::new(2, Arc::default());
        assert_eq!(unanswered.admit(&call(1)).await, Ok(()));
        assert_eq!(unanswered.admit(&call(2)).await, Ok(()));
        let third = tokio::spawn({
            let unanswered = unanswered.clone();
            async move { unanswered.admit(&call(3)).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !third.is_finished(),
            "held while two requests await answers"
        );
        // A duplicate is refused even at the cap: it would never get room of its own.
        assert!(unanswered.admit(&call(2)).await.is_err());
        unanswered.sent(&answer(1));
        let admitted = tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .expect("admitted once an answer went out")
            .expect("task ok");
        assert_eq!(admitted, Ok(()));
        assert_eq!(unanswered.count(), 2);
    }
}
