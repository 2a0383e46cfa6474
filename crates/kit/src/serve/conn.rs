//! Accepts TCP connections for the HTTP front and serves each with hyper, bounded in number and
//! in time.
//!
//! - At most `max` connections are open; one beyond it is answered 503 (naming the limit) and
//!   closed at once, so a client that hoards idle connections learns why instead of hanging.
//! - A connection that has started a request's headers must finish them within the header read
//!   timeout (slow-header clients), and one with no request in progress is closed after the idle
//!   timeout (hyper's header timer, which runs from when the connection is ready for a request).
//! - On shutdown, accepting stops at once and open connections finish their current request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::{FrontLimit, FrontStats};

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnLimits {
    pub(super) max: usize,
    pub(super) header_read_timeout: Duration,
    pub(super) idle: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then waits for open connections
/// to finish.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    stats: Arc<FrontStats>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max));
    // HTTP/1.1 only: MCP clients speak it, and detecting HTTP/2 prior knowledge would wait for
    // a connection's first bytes with no timer running, so a silent connection stayed forever.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper arms this timer whenever the connection waits for a request head, idle
        // keep-alive included: it is the idle timeout. The header timeout proper is ours.
        .header_read_timeout(limits.idle);
    let builder = Arc::new(builder);
    loop {
        let (stream, _peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: keep
                    // serving the connections we have, and try again shortly.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY a pooled client stalls ~40 ms per call (Nagle + delayed ACK).
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let conn = Connection {
                    builder: builder.clone(),
                    router: router.clone(),
                    limits,
                    stats: stats.clone(),
                    stop: stop.clone(),
                    _slot: slot,
                };
                tokio::spawn(conn.run(stream));
            }
            Err(_) => {
                stats.enforce(FrontLimit::Connections);
                tokio::spawn(refuse_connection(stream, limits.max));
            }
        }
    }
    // Every slot back means every connection closed.
    let _ = slots.acquire_many(limits.max as u32).await;
    Ok(())
}

/// Answers a connection over the cap with 503 and closes it, without reading its request: the
/// point is to spend nothing on it.
async fn refuse_connection(mut stream: TcpStream, max: usize) {
    let body = super::refusal::plain_text(
        FrontLimit::Connections,
        &format!("too many connections: the server holds its limit of {max} (--max-connections)"),
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One accepted connection and what it needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    limits: ConnLimits,
    stats: Arc<FrontStats>,
    stop: CancellationToken,
    /// Held while the connection is open.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        self.stats.connection_opened();
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Watched {
            io: stream,
            activity: activity.clone(),
        });
        let service = {
            let activity = activity.clone();
            let router = self.router.clone();
            tower::service_fn(move |request: hyper::Request<Incoming>| {
                let activity = activity.clone();
                let router = router.clone();
                async move {
                    let busy = activity.request_started();
                    let response = router.oneshot(request.map(Body::new)).await?;
                    Ok::<_, std::convert::Infallible>(response.map(|body| {
                        Body::new(http_body_util::BodyExt::map_err(
                            TrackedBody { body, _busy: busy },
                            axum::Error::new,
                        ))
                    }))
                }
            })
        };
        let conn = self
            .builder
            .serve_connection(io, TowerToHyperService::new(service));
        tokio::pin!(conn);
        let mut shutting_down = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                () = self.stop.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = activity.head_started.notified() => {
                    let Some(head) = activity.pending_head() else { continue };
                    let deadline = tokio::time::Instant::now() + self.limits.header_read_timeout;
                    tokio::select! {
                        _ = conn.as_mut() => break,
                        () = tokio::time::sleep_until(deadline) => {
                            if activity.pending_head() == Some(head) {
                                self.stats.enforce(FrontLimit::HeaderReadTimeout);
                                tracing::debug!(
                                    "closing a connection whose request headers took over {} s \
                                     (--header-read-timeout-secs)",
                                    self.limits.header_read_timeout.as_secs()
                                );
                                break;
                            }
                        }
                    }
                }
            }
        }
        self.stats.connection_closed();
    }
}

/// What a connection is doing, as far as its timeouts care.
#[derive(Debug, Default)]
struct Activity {
    /// Requests whose responses are still being sent.
    busy: AtomicUsize,
    /// Bytes of a request head arrived and the head is not complete yet.
    head_pending: AtomicBool,
    /// Counts request heads started, so the timer of one head never closes the next.
    heads: AtomicU64,
    /// Woken when a request head starts arriving.
    head_started: Notify,
}

impl Activity {
    /// Bytes came in: with no request in progress, they start a request head.
    fn bytes_read(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && !self.head_pending.swap(true, Ordering::AcqRel)
        {
            self.heads.fetch_add(1, Ordering::AcqRel);
            self.head_started.notify_one();
        }
    }

    /// Which head is pending now, if any.
    fn pending_head(&self) -> Option<u64> {
        self.head_pending
            .load(Ordering::Acquire)
            .then(|| self.heads.load(Ordering::Acquire))
    }

    /// hyper parsed a head and called the service.
    fn request_started(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_pending.store(false, Ordering::Release);
        Busy(self.clone())
    }
}

/// A request in progress; dropped when its response body ends (or is abandoned).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection marked busy until it is done.
    struct TrackedBody {
        #[pin]
        body: Body,
        _busy: Busy,
    }
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The connection's socket, telling [`Activity`] when bytes arrive.
    struct Watched {
        #[pin]
        io: TcpStream,
        activity: Arc<Activity>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
