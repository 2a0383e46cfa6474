//! The stdio front: one session over stdin/stdout, drained on EOF or a signal.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use rmcp::{
    RoleServer, ServerHandler, ServiceExt,
    model::{ClientNotification, JsonRpcMessage, RequestId},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{ServeError, signal::listen_for_shutdown};
use crate::{framing::FrameError, in_flight::InFlight};

/// Serves one stdio session until stdin EOF or a shutdown signal.
///
/// Either way, requests already read are answered before the process exits, for up to `grace`.
/// rmcp alone would end the session at stdin EOF and give handlers a fixed 5 s to answer; here the
/// input stream is held open after EOF until every request read has been answered (or `grace`
/// passed), so `--shutdown-grace-secs` means the same on both triggers. Waiting on requests read
/// rather than on `in_flight` also covers a request whose handler task has not started yet.
pub(super) async fn serve_stdio<H: ServerHandler>(
    handler: H,
    in_flight: InFlight,
    grace: Duration,
    max_message_bytes: usize,
) -> Result<(), ServeError> {
    let signal = listen_for_shutdown();
    let unanswered = Unanswered::default();
    // Cancelled when stdin closed and `grace` passed with requests still unanswered.
    let overdue = CancellationToken::new();
    let (sink, stream) = crate::framing::stdio(max_message_bytes);
    let sink = sink.with({
        let unanswered = unanswered.clone();
        move |message: TxJsonRpcMessage<RoleServer>| {
            unanswered.sent(&message);
            std::future::ready(Ok::<_, FrameError>(message))
        }
    });
    let after_eof = {
        let (unanswered, in_flight, overdue) =
            (unanswered.clone(), in_flight.clone(), overdue.clone());
        async move {
            if unanswered.count() > 0 {
                tracing::info!(
                    unanswered = unanswered.count(),
                    in_flight = in_flight.count(),
                    "stdin closed: finishing in-flight calls"
                );
            }
            if tokio::time::timeout(grace, unanswered.all_answered())
                .await
                .is_err()
            {
                tracing::warn!(
                    unanswered = unanswered.count(),
                    "grace period over; cancelling calls"
                );
                overdue.cancel();
                // Stay open: the session ends through cancellation, not through rmcp's drain.
                std::future::pending::<()>().await;
            }
        }
    };
    let stream = stream
        .inspect({
            let unanswered = unanswered.clone();
            move |message| unanswered.read(message)
        })
        .chain(futures::stream::once(after_eof).filter_map(|()| std::future::ready(None)));
    let running = match handler.serve((Box::pin(sink), Box::pin(stream))).await {
        Ok(running) => running,
        Err(e) => {
            // A client that connects and leaves before initializing is not a server failure.
            tracing::info!(reason = %e, "stdio client left before the session started");
            return Ok(());
        }
    };
    let ct = running.cancellation_token();
    let waiting = running.waiting();
    tokio::pin!(waiting);
    tokio::select! {
        // Stdin closed and every request read was answered.
        quit = &mut waiting => {
            return quit.map(|_| ()).map_err(|e| ServeError::Stdio(e.to_string()));
        }
        // Stdin closed, and `grace` passed first (already logged).
        _ = overdue.cancelled() => {}
        _ = signal => {
            tracing::info!(
                unanswered = unanswered.count(),
                in_flight = in_flight.count(),
                "shutdown signal: finishing in-flight calls"
            );
            if tokio::time::timeout(grace, unanswered.all_answered()).await.is_err() {
                tracing::warn!(
                    unanswered = unanswered.count(),
                    "grace period over; cancelling calls"
                );
            }
        }
    }
    ct.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), waiting).await;
    Ok(())
}

/// Ids of the requests read from stdin and not answered yet, so stdio shutdown can wait for
/// exactly those; clones share the set.
#[derive(Debug, Clone, Default)]
struct Unanswered {
    inner: Arc<UnansweredInner>,
}

#[derive(Debug, Default)]
struct UnansweredInner {
    ids: Mutex<HashSet<RequestId>>,
    /// Woken whenever the set empties, so waiting does not poll.
    emptied: Notify,
}

impl Unanswered {
    fn ids(&self) -> MutexGuard<'_, HashSet<RequestId>> {
        // A poisoned set only means a panic mid-update; the ids in it are still right.
        self.inner.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a message read from the client: a request now awaits its answer; a cancellation
    /// means its request will get none.
    fn read(&self, message: &RxJsonRpcMessage<RoleServer>) {
        match message {
            JsonRpcMessage::Request(request) => {
                self.ids().insert(request.id.clone());
            }
            JsonRpcMessage::Notification(n) => {
                if let ClientNotification::CancelledNotification(c) = &n.notification
                    && let Some(id) = &c.params.request_id
                {
                    self.settle(id);
                }
            }
            _ => {}
        }
    }

    /// Notes a message on its way to the client: a response or error answers its request.
    fn sent(&self, message: &TxJsonRpcMessage<RoleServer>) {
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
        if ids.remove(id) && ids.is_empty() {
            self.inner.emptied.notify_waiters();
        }
    }

    fn count(&self) -> usize {
        self.ids().len()
    }

    /// Resolves once every request read has been answered.
    async fn all_answered(&self) {
        loop {
            // Created before the check, so an answer between the two still wakes us.
            let emptied = self.inner.emptied.notified();
            if self.count() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_client(v: serde_json::Value) -> RxJsonRpcMessage<RoleServer> {
        serde_json::from_value(v).expect("a client message")
    }

    fn to_client(v: serde_json::Value) -> TxJsonRpcMessage<RoleServer> {
        serde_json::from_value(v).expect("a server message")
    }

    #[tokio::test(start_paused = true)]
    async fn requests_read_are_waited_for_until_answered_or_cancelled() {
        let unanswered = Unanswered::default();
        let call = |id: u32| {
            from_client(serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": "slow", "arguments": {} }
            }))
        };
        unanswered.read(&call(1));
        unanswered.read(&call(2));
        unanswered.read(&from_client(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/initialized"
        })));
        assert_eq!(unanswered.count(), 2);
        let waiter = tokio::spawn({
            let unanswered = unanswered.clone();
            async move { unanswered.all_answered().await }
        });
        unanswered.sent(&to_client(serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "result": { "content": [] }
        })));
        // A notification to the client answers nothing.
        unanswered.sent(&to_client(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/tools/list_changed"
        })));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "request 2 is still unanswered");
        // A cancelled request gets no answer, so it is not waited for either.
        unanswered.read(&from_client(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": { "requestId": 2 }
        })));
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("all answered")
            .expect("task ok");
        assert_eq!(unanswered.count(), 0);
    }
}
