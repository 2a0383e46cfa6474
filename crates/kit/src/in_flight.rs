//! Counts the tool calls a process is running, so shutdown can let them finish.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::Notify;

/// A shared counter of running calls; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    count: AtomicUsize,
    /// Woken whenever the count drops to zero, so `idle` does not poll.
    idle: Notify,
}

/// Held for the duration of one call; dropping it ends the call.
#[derive(Debug)]
pub struct CallGuard {
    inner: Arc<Inner>,
}

impl InFlight {
    /// Starts counting one call until the guard drops.
    pub fn enter(&self) -> CallGuard {
        self.inner.count.fetch_add(1, Ordering::SeqCst);
        CallGuard {
            inner: self.inner.clone(),
        }
    }

    /// Calls running now.
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Resolves once no call is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_the_last_guard() {
        let in_flight = InFlight::default();
        let a = in_flight.enter();
        let b = in_flight.enter();
        assert_eq!(in_flight.count(), 2);
        let waiter = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.idle().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("idle resolves")
            .expect("task ok");
    }
}
