//! A call's deadlines stop while its user answers a question: an upstream that asks "delete 3
//! files?" must not see its call time out because the user took a minute to read it. Every
//! deadline a call runs under (the attempt timeout, the call deadline, a composite's deadline)
//! is measured with [`expiry`], which does not count the time a question was pending.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

// Tokio's clock, so tests can run it paused.
use tokio::{sync::Notify, time::Instant};

/// Time one agent call spent waiting for its user; cheap to clone (shared by the call's
/// upstream requests).
#[derive(Debug, Clone, Default)]
pub struct UserWait(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// Woken when the last pending question is answered.
    resumed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Questions pending now.
    pending: usize,
    /// Since when at least one has been pending.
    since: Option<Instant>,
    /// Time spent with a question pending, before `since`.
    total: Duration,
}

/// Pauses the call's deadlines until dropped.
#[derive(Debug)]
pub struct Waiting(UserWait);

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut state = self.0.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending = state.pending.saturating_sub(1);
        if state.pending == 0
            && let Some(since) = state.since.take()
        {
            state.total += since.elapsed();
            drop(state);
            self.0.0.resumed.notify_waiters();
        }
    }
}

impl UserWait {
    /// Pauses the deadlines while the returned guard lives (several may overlap).
    pub fn begin(&self) -> Waiting {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.pending == 0 {
            state.since = Some(Instant::now());
        }
        state.pending += 1;
        Waiting(self.clone())
    }

    /// Time paused up to `now`, and whether a question is pending.
    fn paused(&self, now: Instant) -> (Duration, bool) {
        let state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        let running = state
            .since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        (state.total + running, state.pending > 0)
    }
}

/// Completes once `limit` has passed, not counting the time `wait` was paused; without `wait`,
/// a plain sleep.
pub async fn expiry(limit: Duration, wait: Option<UserWait>) {
    let Some(wait) = wait else {
        return tokio::time::sleep(limit).await;
    };
    let start = Instant::now();
    let (before, _) = wait.paused(start);
    loop {
        // Registered before the check, so an answer in between still wakes us.
        let resumed = wait.0.resumed.notified();
        let now = Instant::now();
        let (paused, pending) = wait.paused(now);
        if pending {
            resumed.await;
            continue;
        }
        let end = start + limit + paused.saturating_sub(before);
        if end <= now {
            return;
        }
        tokio::time::sleep_until(end).await;
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

/// `tokio::time::timeout`, with the user's answering time left out (see [`expiry`]).
///
/// A named future rather than an `async fn`: the call path passes it closures' futures that
/// borrow, and an `async fn` generic over them defeats the compiler's `Send` proof.
pub fn within<F: Future>(limit: Duration, wait: Option<UserWait>, future: F) -> Within<F> {
    Within {
        future,
        expiry: Box::pin(expiry(limit, wait)),
    }
}

pin_project_lite::pin_project! {
    /// See [`within`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Within<F> {
        #[pin]
        future: F,
        expiry: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Expired>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(out) = this.future.poll(cx) {
            return std::task::Poll::Ready(Ok(out));
        }
        this.expiry.as_mut().poll(cx).map(|()| Err(Expired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pending_question_stops_the_clock() {
        let wait = UserWait::default();
        let w = wait.clone();
        let answered = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let question = w.begin();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(question);
        });
        // 100 ms of work with a 30 s question in the middle: within a 200 ms deadline.
        let work = tokio::time::sleep(Duration::from_secs(30) + Duration::from_millis(100));
        let started = tokio::time::Instant::now();
        assert_eq!(
            within(Duration::from_millis(200), Some(wait.clone()), work).await,
            Ok(())
        );
        assert!(started.elapsed() >= Duration::from_secs(30));
        answered.await.expect("the answering task");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_still_passes_without_a_question() {
        let wait = UserWait::default();
        let work = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(
            within(Duration::from_millis(200), Some(wait.clone()), work).await,
            Err(Expired)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn time_after_the_answer_counts_again() {
        let wait = UserWait::default();
        drop(wait.begin());
        let question = wait.begin();
        let w = wait.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(question);
            drop(w);
        });
        let started = tokio::time::Instant::now();
        expiry(Duration::from_millis(300), Some(wait.clone())).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(5300) && took < Duration::from_millis(5400),
            "{took:?}"
        );
    }
}
