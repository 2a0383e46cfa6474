//! One timer kept pending for as long as a front serves, so that the per-call timers (an
//! attempt's timeout, a call's deadline) do not each cost the runtime two system calls.
//!
//! Tokio's timer driver remembers, when its thread goes to sleep, the earliest deadline it must
//! wake for. A timer registered with an earlier deadline, or when none was pending at all, makes
//! it wake its own thread at once (a write to its eventfd, and one more `epoll_wait` that returns
//! only that), even when that thread is the one registering it and is not asleep. Between two
//! calls no timer is pending, so every call paid this for each timer it set: `strace` counted two
//! eventfd writes and three `epoll_wait`s per pass-through call where two suffice. With a timer
//! that is always due within [`PERIOD`], any deadline further away than that is registered
//! quietly. Call timeouts are seconds by default; a shorter one works as before, waking the
//! thread when registered.

use std::time::Duration;

/// How often the pending timer fires: well under the default call timeouts, and rare enough to
/// cost nothing while idle.
pub const PERIOD: Duration = Duration::from_millis(500);

/// Keeps a timer pending on the current runtime until the returned guard is dropped.
pub fn hold() -> Floor {
    let task = tokio::spawn(async {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
        }
    });
    Floor(task)
}

/// Ends the pending timer when dropped.
#[derive(Debug)]
pub struct Floor(tokio::task::JoinHandle<()>);

impl Drop for Floor {
    fn drop(&mut self) {
        self.0.abort();
    }
}
