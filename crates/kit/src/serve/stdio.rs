//! The stdio front: one session over stdin/stdout, drained on EOF or a signal.

use std::{sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use rmcp::{RoleServer, ServerHandler, ServiceExt, service::TxJsonRpcMessage};
use tokio_util::sync::CancellationToken;

use super::{FrontStats, ServeError, signal::listen_for_shutdown, unanswered::Unanswered};
use crate::{framing::FrameError, in_flight::InFlight};

/// Serves one stdio session until stdin EOF or a shutdown signal.
///
/// Either way, requests already read are answered before the process exits, for up to `grace`.
/// rmcp alone would end the session at stdin EOF and give handlers a fixed 5 s to answer; here the
/// input stream is held open after EOF until every request read has been answered (or `grace`
/// passed), so `--shutdown-grace-secs` means the same on both triggers. Waiting on requests read
/// rather than on `in_flight` also covers a request whose handler task has not started yet.
///
/// At most `max_pending` requests are read and not yet answered; a reused id in flight is refused
/// (see [`Unanswered`]).
pub(super) async fn serve_stdio<H: ServerHandler>(
    handler: H,
    in_flight: InFlight,
    grace: Duration,
    max_message_bytes: usize,
    max_pending: usize,
    stats: Arc<FrontStats>,
) -> Result<(), ServeError> {
    let signal = listen_for_shutdown();
    let unanswered = Unanswered::new(max_pending, stats);
    // Cancelled when stdin closed and `grace` passed with requests still unanswered.
    let overdue = CancellationToken::new();
    let (sink, stream) = crate::framing::stdio(max_message_bytes, unanswered.clone());
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
    let stream =
        stream.chain(futures::stream::once(after_eof).filter_map(|()| std::future::ready(None)));
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
