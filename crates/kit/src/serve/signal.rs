//! SIGINT/SIGTERM, installed early so a signal during start-up drains instead of killing.

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    listen_for_shutdown().await
}

/// Installs the SIGINT/SIGTERM handlers now, and resolves on the first of them.
///
/// Unlike a plain `async fn`, the handlers are in place as soon as this returns, before the
/// future is first polled: a signal that arrives while the server is still starting is kept
/// for the future instead of killing the process (the default action) before it could drain.
pub(super) fn listen_for_shutdown() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
