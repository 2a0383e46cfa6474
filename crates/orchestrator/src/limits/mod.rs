//! Limits that keep one agent, one composite or one upstream from exhausting the orchestrator:
//! configured in `orchestrator.limits` (see [`crate::config::limits`]), with safe defaults.
//!
//! | limit | where it applies | beyond it |
//! |---|---|---|
//! | request size (`serve --max-body-bytes`) | the front's transport ([`kit::serve`]) | HTTP 413, stdio JSON-RPC `-32600` |
//! | [`Limits::max_concurrent_calls_per_client`] | [`client::ClientCalls`], per agent session | `throttled` tool error at once |
//! | [`Limits::max_for_each_items`] | the workflow executor, per `forEach` step | the step fails, `invalid` |
//! | [`Limits::max_result_bytes`] | [`result_size::truncate`], every `tools/call` result | truncated with a marker |
//! | [`Limits::max_subscriptions_per_client`] | [`crate::subscriptions`], per agent session | `resources/subscribe` refused, `-32600` |
//! | [`StderrLimits`] | [`stderr::relay`], each stdio upstream's stderr | lines cut, excess lines dropped and counted |
//! | [`UpstreamLimits::max_request_bytes`] | each request before it leaves for an upstream | refused at once, `invalid`, never retried |
//! | [`UpstreamLimits::max_message_bytes`] | each message read from a stdio upstream | the request it answers fails at once, `invalid` |
//! | [`UpstreamLimits::list_timeout`] | each listing of an upstream's tools, resources, prompts | shown in status, logged, reconnected with backoff |
//! | [`Limits::max_held_calls`] | [`crate::ask::suspend`], 2026-07-28 calls held for input | the call ends at once with `-32000` naming the setting |
//! | [`UpstreamLimits::user_input_timeout`] | each upstream question (elicitation, sampling, roots) put to an agent | the question is cancelled at the agent; the upstream gets an error naming the limit |
//!
//! None of them fails silently: each names itself (the config path) where it bites.
//!
//! - [`client`]: the per-session cap on calls in flight.
//! - [`result_size`]: truncation of results over the size limit.
//! - [`stderr`]: the upstream stderr relay, line length and rate capped.

pub mod client;
pub mod result_size;
pub mod stderr;

/// Default for [`Limits::max_concurrent_calls_per_client`].
pub const DEFAULT_MAX_CONCURRENT_CALLS_PER_CLIENT: usize = 16;
/// Default for [`Limits::max_for_each_items`].
pub const DEFAULT_MAX_FOR_EACH_ITEMS: usize = 1_000;
/// Default for [`Limits::max_result_bytes`]: 1 MiB.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1024 * 1024;
/// Default for [`Limits::max_subscriptions_per_client`].
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 1_000;
/// Default for [`Limits::max_held_calls`].
pub const DEFAULT_MAX_HELD_CALLS: usize = 1_000;
/// Default for [`StderrLimits::lines_per_second`].
pub const DEFAULT_STDERR_LINES_PER_SECOND: u32 = 200;
/// Default for [`StderrLimits::max_line_bytes`].
pub const DEFAULT_STDERR_MAX_LINE_BYTES: usize = 2_000;

/// Default for [`UpstreamLimits::max_request_bytes`]: 4 MiB, the bundled servers' own
/// `--max-body-bytes` default, so a request they would refuse never leaves.
pub const DEFAULT_UPSTREAM_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Default for [`UpstreamLimits::max_message_bytes`]: 16 MiB, what rmcp's clients accept by
/// default over stdio and HTTP alike.
pub const DEFAULT_UPSTREAM_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default for [`UpstreamLimits::list_timeout`].
pub const DEFAULT_UPSTREAM_LIST_TIMEOUT_MS: u64 = 30_000;
/// Default for [`UpstreamLimits::user_input_timeout`]: ten minutes, time for a person to read
/// and answer.
pub const DEFAULT_USER_INPUT_TIMEOUT_MS: u64 = 600_000;

/// Accepted range of [`Limits::max_concurrent_calls_per_client`].
pub const CONCURRENT_CALLS_RANGE: std::ops::RangeInclusive<usize> = 1..=10_000;
/// Accepted range of [`Limits::max_for_each_items`] (and of a step's `maxItems`).
pub const FOR_EACH_ITEMS_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;
/// Accepted range of [`Limits::max_result_bytes`]: at least room for the truncation marker and
/// the `_meta` that explains it, at most 1 GiB.
pub const RESULT_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024 * 1024;
/// Accepted range of [`Limits::max_subscriptions_per_client`].
pub const SUBSCRIPTIONS_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;
/// Accepted range of [`Limits::max_held_calls`].
pub const HELD_CALLS_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;
/// Accepted range of [`StderrLimits::lines_per_second`].
pub const STDERR_LINES_PER_SECOND_RANGE: std::ops::RangeInclusive<u32> = 1..=100_000;
/// Accepted range of [`StderrLimits::max_line_bytes`].
pub const STDERR_LINE_BYTES_RANGE: std::ops::RangeInclusive<usize> = 80..=1024 * 1024;
/// Accepted range of [`UpstreamLimits::max_request_bytes`] and
/// [`UpstreamLimits::max_message_bytes`]: room for a handshake, at most 1 GiB.
pub const UPSTREAM_MESSAGE_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024 * 1024;
/// Accepted range of [`UpstreamLimits::list_timeout`], in milliseconds.
pub const UPSTREAM_LIST_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;
/// Accepted range of [`UpstreamLimits::user_input_timeout`], in milliseconds: a second to a day.
pub const USER_INPUT_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1_000..=86_400_000;

/// The limits, validated (`orchestrator.limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls one agent session may have in flight: one agent cannot take every upstream slot
    /// (bulkheads are per server and shared by all agents) and starve the others.
    pub max_concurrent_calls_per_client: usize,
    /// Items a `forEach` step may fan out over, unless the step sets its own `maxItems`: an
    /// upstream answering with a huge list must not turn one call into thousands.
    pub max_for_each_items: usize,
    /// Serialized size of a `tools/call` result returned to the agent: an agent's context is
    /// small, and one huge answer should not flood it or the transport.
    pub max_result_bytes: usize,
    /// Resource subscriptions one agent session may hold: each costs an entry here and a
    /// notification per change, so one agent cannot subscribe without bound.
    pub max_subscriptions_per_client: usize,
    /// 2026-07-28 calls held at once while their agents answer what they asked: a 2026-07-28
    /// agent has no session, so nothing else bounds how many one client keeps waiting (each
    /// holds a task and its upstream request for up to `userInputTimeoutMs`).
    pub max_held_calls: usize,
    /// How much of each stdio upstream's stderr reaches the orchestrator's log.
    pub stderr: StderrLimits,
    /// Sizes and listing time of every upstream's messages.
    pub upstream: UpstreamLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_calls_per_client: DEFAULT_MAX_CONCURRENT_CALLS_PER_CLIENT,
            max_for_each_items: DEFAULT_MAX_FOR_EACH_ITEMS,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            max_subscriptions_per_client: DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT,
            max_held_calls: DEFAULT_MAX_HELD_CALLS,
            stderr: StderrLimits::default(),
            upstream: UpstreamLimits::default(),
        }
    }
}

/// How much of an upstream's stderr is relayed into the orchestrator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StderrLimits {
    /// Lines logged per second per upstream; the rest are dropped and counted, so a server
    /// logging at `trace` cannot flood the orchestrator's log (or its disk).
    pub lines_per_second: u32,
    /// Longest line logged, in bytes; longer lines are cut with a marker. Also bounds the memory
    /// a line without a newline can take.
    pub max_line_bytes: usize,
}

impl Default for StderrLimits {
    fn default() -> Self {
        Self {
            lines_per_second: DEFAULT_STDERR_LINES_PER_SECOND,
            max_line_bytes: DEFAULT_STDERR_MAX_LINE_BYTES,
        }
    }
}

/// How large an upstream's messages may be, and how long its listings may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// Largest request sent to the upstream, `_meta` included. An upstream refuses a larger one
    /// in a way a caller cannot always see (over stdio the bundled servers answer `-32600` with
    /// `id: null`, which no request can be matched to), so the call would wait out its deadline,
    /// be retried, and count against a breaker every agent shares; refused before it leaves, it
    /// is the caller's fault at once.
    pub max_request_bytes: usize,
    /// Largest message read from a stdio upstream (one line). A larger one is never held whole:
    /// the request it answers fails at once naming this limit, instead of waiting for a deadline.
    pub max_message_bytes: usize,
    /// How long listing what an upstream offers (tools, resources, templates, prompts) may take:
    /// a server that connects but never lists would otherwise hold its tools back forever.
    pub list_timeout: std::time::Duration,
    /// How long a question an upstream asks the agent (elicitation, sampling, roots) may wait
    /// for its answer. The call's own deadlines stop meanwhile (a person is reading), so
    /// without this a question nobody answers would hold the call, its bulkhead slot and the
    /// upstream's handler forever.
    pub user_input_timeout: std::time::Duration,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_UPSTREAM_MAX_REQUEST_BYTES,
            max_message_bytes: DEFAULT_UPSTREAM_MAX_MESSAGE_BYTES,
            list_timeout: std::time::Duration::from_millis(DEFAULT_UPSTREAM_LIST_TIMEOUT_MS),
            user_input_timeout: std::time::Duration::from_millis(DEFAULT_USER_INPUT_TIMEOUT_MS),
        }
    }
}

/// `n` bytes for a human: `512 bytes`, `1.5 KiB`, `3.2 MiB` (whole numbers without a decimal).
pub fn human_bytes(n: usize) -> String {
    const KIB: f64 = 1024.0;
    let value = n as f64;
    let (scaled, unit) = if n < 1024 {
        return format!("{n} bytes");
    } else if value < KIB * KIB {
        (value / KIB, "KiB")
    } else if value < KIB * KIB * KIB {
        (value / (KIB * KIB), "MiB")
    } else {
        (value / (KIB * KIB * KIB), "GiB")
    };
    let rounded = (scaled * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0} {unit}")
    } else {
        format!("{rounded:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_human_wrote_them() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1024), "1 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1024 * 1024), "1 MiB");
        assert_eq!(human_bytes(3_355_443), "3.2 MiB");
        assert_eq!(human_bytes(2 * 1024 * 1024 * 1024), "2 GiB");
    }

    #[test]
    fn defaults_are_inside_their_ranges() {
        let d = Limits::default();
        assert!(CONCURRENT_CALLS_RANGE.contains(&d.max_concurrent_calls_per_client));
        assert!(FOR_EACH_ITEMS_RANGE.contains(&d.max_for_each_items));
        assert!(RESULT_BYTES_RANGE.contains(&d.max_result_bytes));
        assert!(SUBSCRIPTIONS_RANGE.contains(&d.max_subscriptions_per_client));
        assert!(HELD_CALLS_RANGE.contains(&d.max_held_calls));
        assert!(STDERR_LINES_PER_SECOND_RANGE.contains(&d.stderr.lines_per_second));
        assert!(STDERR_LINE_BYTES_RANGE.contains(&d.stderr.max_line_bytes));
        assert!(UPSTREAM_MESSAGE_BYTES_RANGE.contains(&d.upstream.max_request_bytes));
        assert!(UPSTREAM_MESSAGE_BYTES_RANGE.contains(&d.upstream.max_message_bytes));
        assert!(
            UPSTREAM_LIST_TIMEOUT_MS_RANGE.contains(&(d.upstream.list_timeout.as_millis() as u64))
        );
        assert!(
            USER_INPUT_TIMEOUT_MS_RANGE
                .contains(&(d.upstream.user_input_timeout.as_millis() as u64))
        );
    }
}
