//! `orchestrator.limits`: caps on what one agent, composite or upstream may cost, each with a safe
//! default (see [`crate::limits`] for what each does when reached).
//!
//! A value of zero, or one so large that it is no limit at all, is a configuration error naming
//! the field: a limit that is off by mistake should not be found in production.

use std::{fmt::Display, ops::RangeInclusive};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::limits::{self, Limits, StderrLimits, UpstreamLimits};

/// `orchestrator.limits` as written; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Calls one agent session may have in flight (default 16).
    pub max_concurrent_calls_per_client: usize,
    /// Items one `forEach` step may fan out over (default 1000); a step's `maxItems` overrides.
    pub max_for_each_items: usize,
    /// Serialized size of a `tools/call` result returned to an agent (default 1 MiB).
    pub max_result_bytes: usize,
    /// Resource subscriptions one agent session may hold (default 1000).
    pub max_subscriptions_per_client: usize,
    /// 2026-07-28 calls held at once while their agents answer (default 1000).
    pub max_held_calls: usize,
    /// Stderr lines logged per second per stdio upstream (default 200).
    pub upstream_stderr_lines_per_second: u32,
    /// Longest upstream stderr line logged, in bytes (default 2000).
    pub upstream_stderr_max_line_bytes: usize,
    /// Largest request sent to an upstream, `_meta` included (default 4 MiB); a server's
    /// `maxRequestBytes` overrides.
    pub upstream_max_request_bytes: usize,
    /// Largest message read from a stdio upstream (default 16 MiB).
    pub upstream_max_message_bytes: usize,
    /// How long listing an upstream's tools, resources and prompts may take (default 30 s).
    pub upstream_list_timeout_ms: u64,
    /// How long an upstream's question to the agent (elicitation, sampling, roots) may wait for
    /// its answer (default 10 min).
    pub user_input_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = Limits::default();
        Self {
            max_concurrent_calls_per_client: d.max_concurrent_calls_per_client,
            max_for_each_items: d.max_for_each_items,
            max_result_bytes: d.max_result_bytes,
            max_subscriptions_per_client: d.max_subscriptions_per_client,
            max_held_calls: d.max_held_calls,
            upstream_stderr_lines_per_second: d.stderr.lines_per_second,
            upstream_stderr_max_line_bytes: d.stderr.max_line_bytes,
            upstream_max_request_bytes: d.upstream.max_request_bytes,
            upstream_max_message_bytes: d.upstream.max_message_bytes,
            upstream_list_timeout_ms: d.upstream.list_timeout.as_millis() as u64,
            user_input_timeout_ms: d.upstream.user_input_timeout.as_millis() as u64,
        }
    }
}

/// `value` if it is in `range`, else an error naming `orchestrator.limits.<field>`.
fn within<T: PartialOrd + Display + Copy>(
    value: T,
    range: &RangeInclusive<T>,
    field: &str,
) -> Result<T, ConfigError> {
    within_at(value, range, &format!("orchestrator.limits.{field}"))
}

/// `value` if it is in `range`, else an error naming `path`.
pub(super) fn within_at<T: PartialOrd + Display + Copy>(
    value: T,
    range: &RangeInclusive<T>,
    path: &str,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            path,
            format!("must be {}-{}, got {value}", range.start(), range.end()),
        ))
    }
}

impl LimitsConfig {
    /// Checks every field against its accepted range.
    pub fn resolve(&self) -> Result<Limits, ConfigError> {
        Ok(Limits {
            max_concurrent_calls_per_client: within(
                self.max_concurrent_calls_per_client,
                &limits::CONCURRENT_CALLS_RANGE,
                "maxConcurrentCallsPerClient",
            )?,
            max_for_each_items: within(
                self.max_for_each_items,
                &limits::FOR_EACH_ITEMS_RANGE,
                "maxForEachItems",
            )?,
            max_result_bytes: within(
                self.max_result_bytes,
                &limits::RESULT_BYTES_RANGE,
                "maxResultBytes",
            )?,
            max_subscriptions_per_client: within(
                self.max_subscriptions_per_client,
                &limits::SUBSCRIPTIONS_RANGE,
                "maxSubscriptionsPerClient",
            )?,
            max_held_calls: within(
                self.max_held_calls,
                &limits::HELD_CALLS_RANGE,
                "maxHeldCalls",
            )?,
            stderr: StderrLimits {
                lines_per_second: within(
                    self.upstream_stderr_lines_per_second,
                    &limits::STDERR_LINES_PER_SECOND_RANGE,
                    "upstreamStderrLinesPerSecond",
                )?,
                max_line_bytes: within(
                    self.upstream_stderr_max_line_bytes,
                    &limits::STDERR_LINE_BYTES_RANGE,
                    "upstreamStderrMaxLineBytes",
                )?,
            },
            upstream: UpstreamLimits {
                max_request_bytes: within(
                    self.upstream_max_request_bytes,
                    &limits::UPSTREAM_MESSAGE_BYTES_RANGE,
                    "upstreamMaxRequestBytes",
                )?,
                max_message_bytes: within(
                    self.upstream_max_message_bytes,
                    &limits::UPSTREAM_MESSAGE_BYTES_RANGE,
                    "upstreamMaxMessageBytes",
                )?,
                list_timeout: std::time::Duration::from_millis(within(
                    self.upstream_list_timeout_ms,
                    &limits::UPSTREAM_LIST_TIMEOUT_MS_RANGE,
                    "upstreamListTimeoutMs",
                )?),
                user_input_timeout: std::time::Duration::from_millis(within(
                    self.user_input_timeout_ms,
                    &limits::USER_INPUT_TIMEOUT_MS_RANGE,
                    "userInputTimeoutMs",
                )?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Limits, ConfigError> {
        let config: LimitsConfig = serde_json::from_value(v)
            .map_err(|e| ConfigError::new("orchestrator.limits", e.to_string()))?;
        config.resolve()
    }

    #[test]
    fn an_empty_section_gives_the_defaults() {
        assert_eq!(parse(serde_json::json!({})), Ok(Limits::default()));
        let d = Limits::default();
        assert_eq!(d.max_concurrent_calls_per_client, 16);
        assert_eq!(d.max_for_each_items, 1_000);
        assert_eq!(d.max_result_bytes, 1024 * 1024);
        assert_eq!(d.max_subscriptions_per_client, 1_000);
        assert_eq!(d.stderr.lines_per_second, 200);
        assert_eq!(d.stderr.max_line_bytes, 2_000);
        assert_eq!(d.upstream.max_request_bytes, 4 * 1024 * 1024);
        assert_eq!(d.upstream.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(d.upstream.list_timeout.as_millis(), 30_000);
        assert_eq!(d.upstream.user_input_timeout.as_millis(), 600_000);
    }

    #[test]
    fn fields_override_one_by_one() {
        let l = parse(serde_json::json!({ "maxResultBytes": 4096, "maxForEachItems": 10 }))
            .expect("valid");
        assert_eq!(l.max_result_bytes, 4096);
        assert_eq!(l.max_for_each_items, 10);
        assert_eq!(
            l.max_concurrent_calls_per_client,
            Limits::default().max_concurrent_calls_per_client
        );
    }

    #[test]
    fn zero_and_absurd_values_name_the_field() {
        let cases = [
            (
                "maxConcurrentCallsPerClient",
                0u64,
                "must be 1-10000, got 0",
            ),
            ("maxConcurrentCallsPerClient", 1_000_000, "got 1000000"),
            ("maxForEachItems", 0, "must be 1-1000000"),
            ("maxResultBytes", 0, "must be 1024-1073741824"),
            ("maxResultBytes", 100, "got 100"),
            ("maxResultBytes", 1 << 40, "1073741824"),
            ("maxSubscriptionsPerClient", 0, "must be 1-1000000, got 0"),
            ("upstreamStderrLinesPerSecond", 0, "must be 1-100000"),
            ("upstreamStderrMaxLineBytes", 10, "must be 80-1048576"),
            ("upstreamMaxRequestBytes", 0, "must be 1024-1073741824"),
            ("upstreamMaxMessageBytes", 100, "must be 1024-1073741824"),
            ("upstreamListTimeoutMs", 0, "must be 100-600000"),
            ("userInputTimeoutMs", 10, "must be 1000-86400000"),
            ("maxHeldCalls", 0, "must be 1-1000000"),
        ];
        for (field, value, message) in cases {
            let e = parse(serde_json::json!({ field: value })).expect_err(field);
            assert_eq!(e.path, format!("orchestrator.limits.{field}"));
            assert!(e.message.contains(message), "{field}={value}: {e}");
        }
    }
}
