//! Resilience settings as written in mcp.json: `orchestrator.defaults`, `orchestrator.servers.<name>`
//! and `orchestrator.servers.<name>.tools.<tool>`, each overriding the one before field by field.
//!
//! Every field is optional where it is written, so a user sets only what differs; the built-in
//! defaults live in [`Resolved::builtin`] and the `DEFAULT_*` constants, in one place.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Per-attempt timeout of a simple read (tool annotated read-only).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-attempt timeout of a complex query (`operation: "query"`).
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-attempt timeout of a write (tool not annotated read-only).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-attempt timeout of a batch job (`operation: "batch"`).
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// What kind of operation a tool performs; picks its default timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// A simple read: 5 s.
    Read,
    /// A complex query: 30 s.
    Query,
    /// A write: 10 s.
    Write,
    /// A batch job: 2 min.
    Batch,
}

impl Operation {
    /// The default per-attempt timeout of this kind of operation.
    pub fn default_timeout(self) -> Duration {
        match self {
            Operation::Read => DEFAULT_READ_TIMEOUT,
            Operation::Query => DEFAULT_QUERY_TIMEOUT,
            Operation::Write => DEFAULT_WRITE_TIMEOUT,
            Operation::Batch => DEFAULT_BATCH_TIMEOUT,
        }
    }
}

/// How retry delays are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Each delay is the exponential delay ±20%.
    Proportional,
    /// Each delay is uniform in [0, exponential delay] ("full jitter").
    Full,
    /// No jitter (deterministic delays; for tests and demos).
    None,
}

/// `retry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = no retry). Default 3.
    pub max_attempts: Option<u32>,
    /// Delay before the first retry; doubles each time. Default 100 ms.
    pub base_delay_ms: Option<u64>,
    /// Cap of any one delay. Default 2000 ms.
    pub max_delay_ms: Option<u64>,
    /// `proportional` (±20%, default), `full` or `none`.
    pub jitter: Option<Jitter>,
    /// Retries allowed as a share of recent calls (0..1000, default 0.2): retries cannot multiply
    /// load on a struggling server.
    pub budget_ratio: Option<f64>,
    /// Retries always allowed per second, whatever the ratio (default 10).
    pub budget_min_per_second: Option<u32>,
}

/// `circuitBreaker`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open after this many failures in a row (0 disables the rule). Default 5.
    pub consecutive_failures: Option<u32>,
    /// Or when the failure share over `windowMs` exceeds this (0..1). Default 0.5.
    pub failure_rate: Option<f64>,
    /// ...with at least this many calls in the window. Default 20.
    pub min_calls: Option<u32>,
    /// The rate rule's window. Default 30000 ms.
    pub window_ms: Option<u64>,
    /// The longest it stays open before letting a probe through. Default 5000 ms.
    pub open_ms: Option<u64>,
    /// The first open period; each failed probe doubles it, up to `openMs`. Default 250 ms (or
    /// `openMs`, if that is shorter).
    pub min_open_ms: Option<u64>,
    /// Probe calls let through while half-open. Default 1.
    pub half_open_probes: Option<u32>,
}

/// `bulkhead`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls running at once to this server. Default 32.
    pub max_concurrent: Option<usize>,
    /// Calls waiting for a slot; beyond this, calls are rejected at once. Default 64.
    pub max_queue: Option<usize>,
}

/// Per-call settings that a server entry and a tool entry can override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallPolicyConfig {
    /// Per-attempt timeout; default by operation (read 5 s, query 30 s, write 10 s, batch 2 min).
    pub timeout_ms: Option<u64>,
    /// Whole-call deadline across attempts and delays; default 3 × the attempt timeout.
    pub deadline_ms: Option<u64>,
    /// The kind of operation; default `read` for tools annotated read-only, else `write`.
    pub operation: Option<Operation>,
    /// Repeating a call of this tool is safe even though it is not annotated read-only or
    /// idempotent (and carries no idempotency key).
    pub retry_safe: Option<bool>,
    /// Retry settings.
    pub retry: Option<RetryConfig>,
}

/// `orchestrator.defaults` (and the policy part of `orchestrator.servers.<name>`): everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDefaults {
    /// Per-attempt timeout; default by operation.
    pub timeout_ms: Option<u64>,
    /// Whole-call deadline; default 3 × the attempt timeout.
    pub deadline_ms: Option<u64>,
    /// Kind of operation.
    pub operation: Option<Operation>,
    /// Safe to repeat although not annotated so.
    pub retry_safe: Option<bool>,
    /// Retry settings.
    pub retry: Option<RetryConfig>,
    /// Breaker settings.
    pub circuit_breaker: Option<BreakerConfig>,
    /// Bulkhead settings.
    pub bulkhead: Option<BulkheadConfig>,
}

impl PolicyDefaults {
    /// The per-call part.
    pub fn call(&self) -> CallPolicyConfig {
        CallPolicyConfig {
            timeout_ms: self.timeout_ms,
            deadline_ms: self.deadline_ms,
            operation: self.operation,
            retry_safe: self.retry_safe,
            retry: self.retry.clone(),
        }
    }
}

/// The resolved per-call policy of one tool.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPolicy {
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Whole-call deadline.
    pub deadline: Duration,
    /// Configured as safe to repeat.
    pub retry_safe: bool,
    /// Attempts in all.
    pub max_attempts: u32,
    /// First retry delay.
    pub base_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// Jitter mode.
    pub jitter: Jitter,
}

/// The resolved server-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerPolicy {
    /// Breaker.
    pub breaker: crate::policy::breaker::BreakerSettings,
    /// Bulkhead.
    pub bulkhead: crate::policy::bulkhead::BulkheadSettings,
    /// Retry budget: share of recent calls.
    pub budget_ratio: f64,
    /// Retry budget: floor per second.
    pub budget_min_per_second: u32,
    /// Server-level per-call settings (before tool overrides).
    pub call: CallPolicyConfig,
    /// Tool overrides, by the upstream's tool name.
    pub tools: BTreeMap<String, CallPolicyConfig>,
}

fn pick<T: Clone>(over: &Option<T>, under: &Option<T>) -> Option<T> {
    over.clone().or_else(|| under.clone())
}

impl RetryConfig {
    fn over(&self, under: &RetryConfig) -> RetryConfig {
        RetryConfig {
            max_attempts: pick(&self.max_attempts, &under.max_attempts),
            base_delay_ms: pick(&self.base_delay_ms, &under.base_delay_ms),
            max_delay_ms: pick(&self.max_delay_ms, &under.max_delay_ms),
            jitter: pick(&self.jitter, &under.jitter),
            budget_ratio: pick(&self.budget_ratio, &under.budget_ratio),
            budget_min_per_second: pick(&self.budget_min_per_second, &under.budget_min_per_second),
        }
    }
}

impl CallPolicyConfig {
    /// This layer over `under`, field by field.
    pub fn over(&self, under: &CallPolicyConfig) -> CallPolicyConfig {
        CallPolicyConfig {
            timeout_ms: pick(&self.timeout_ms, &under.timeout_ms),
            deadline_ms: pick(&self.deadline_ms, &under.deadline_ms),
            operation: pick(&self.operation, &under.operation),
            retry_safe: pick(&self.retry_safe, &under.retry_safe),
            retry: match (&self.retry, &under.retry) {
                (Some(a), Some(b)) => Some(a.over(b)),
                (a, b) => pick(a, b),
            },
        }
    }

    /// Checks ranges; `path` names this layer in errors.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let err = |field: &str, message: &str| ConfigError {
            path: format!("{path}.{field}"),
            message: message.to_owned(),
        };
        if self.timeout_ms == Some(0) {
            return Err(err("timeoutMs", "must be at least 1"));
        }
        if self.deadline_ms == Some(0) {
            return Err(err("deadlineMs", "must be at least 1"));
        }
        if let Some(r) = &self.retry {
            if let Some(n) = r.max_attempts
                && !(1..=10).contains(&n)
            {
                return Err(err("retry.maxAttempts", "must be between 1 and 10"));
            }
            if let (Some(a), Some(b)) = (r.base_delay_ms, r.max_delay_ms)
                && a > b
            {
                return Err(err("retry.baseDelayMs", "must not exceed retry.maxDelayMs"));
            }
            if let Some(x) = r.budget_ratio
                && !(0.0..=1000.0).contains(&x)
            {
                return Err(err("retry.budgetRatio", "must be between 0 and 1000"));
            }
        }
        Ok(())
    }

    /// The policy of a tool whose annotations say `read_only`.
    pub fn resolve(&self, read_only: bool) -> CallPolicy {
        let operation = self.operation.unwrap_or(if read_only {
            Operation::Read
        } else {
            Operation::Write
        });
        let timeout = self
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| operation.default_timeout());
        let retry = self.retry.clone().unwrap_or_default();
        CallPolicy {
            timeout,
            deadline: self
                .deadline_ms
                .map(Duration::from_millis)
                .unwrap_or(timeout * 3),
            retry_safe: self.retry_safe.unwrap_or(false),
            max_attempts: retry.max_attempts.unwrap_or(3),
            base_delay: Duration::from_millis(retry.base_delay_ms.unwrap_or(100)),
            max_delay: Duration::from_millis(retry.max_delay_ms.unwrap_or(2000)),
            jitter: retry.jitter.unwrap_or(Jitter::Proportional),
        }
    }
}

impl BreakerConfig {
    fn over(&self, under: &BreakerConfig) -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: pick(&self.consecutive_failures, &under.consecutive_failures),
            failure_rate: pick(&self.failure_rate, &under.failure_rate),
            min_calls: pick(&self.min_calls, &under.min_calls),
            window_ms: pick(&self.window_ms, &under.window_ms),
            open_ms: pick(&self.open_ms, &under.open_ms),
            min_open_ms: pick(&self.min_open_ms, &under.min_open_ms),
            half_open_probes: pick(&self.half_open_probes, &under.half_open_probes),
        }
    }
}

/// Resolves the server-wide policy from the layers; errors name the offending field.
pub fn resolve_server(
    defaults: &PolicyDefaults,
    server: &PolicyDefaults,
    tools: &BTreeMap<String, CallPolicyConfig>,
    path: &str,
) -> Result<ServerPolicy, ConfigError> {
    defaults.call().validate("orchestrator.defaults")?;
    server.call().validate(path)?;
    for (tool, cfg) in tools {
        cfg.validate(&format!("{path}.tools.{tool}"))?;
        if cfg
            .retry
            .as_ref()
            .is_some_and(|r| r.budget_ratio.is_some() || r.budget_min_per_second.is_some())
        {
            return Err(ConfigError {
                path: format!("{path}.tools.{tool}.retry"),
                message: "the retry budget is per server; set it on the server or in defaults"
                    .into(),
            });
        }
    }
    let breaker = server
        .circuit_breaker
        .clone()
        .unwrap_or_default()
        .over(&defaults.circuit_breaker.clone().unwrap_or_default());
    let breaker_cfg_min_open = breaker.min_open_ms;
    let bulkhead_w = server.bulkhead.clone().unwrap_or_default();
    let bulkhead_d = defaults.bulkhead.clone().unwrap_or_default();
    let b = crate::policy::breaker::BreakerSettings::default();
    let breaker = crate::policy::breaker::BreakerSettings {
        consecutive_failures: breaker
            .consecutive_failures
            .unwrap_or(b.consecutive_failures),
        failure_rate: breaker.failure_rate.unwrap_or(b.failure_rate),
        min_calls: breaker.min_calls.unwrap_or(b.min_calls),
        window: breaker
            .window_ms
            .map(Duration::from_millis)
            .unwrap_or(b.window),
        open_for: breaker
            .open_ms
            .map(Duration::from_millis)
            .unwrap_or(b.open_for),
        min_open: Duration::ZERO,
        half_open_probes: breaker.half_open_probes.unwrap_or(b.half_open_probes),
    };
    let mut breaker = breaker;
    breaker.min_open = match breaker_cfg_min_open {
        Some(ms) => Duration::from_millis(ms),
        None => b.min_open.min(breaker.open_for),
    };
    let bpath = |f: &str| format!("{path}.circuitBreaker.{f}");
    if !(0.0..=1.0).contains(&breaker.failure_rate) {
        return Err(ConfigError {
            path: bpath("failureRate"),
            message: "must be between 0 and 1".into(),
        });
    }
    if breaker.open_for.is_zero() {
        return Err(ConfigError {
            path: bpath("openMs"),
            message: "must be at least 1".into(),
        });
    }
    if breaker.min_open.is_zero() {
        return Err(ConfigError {
            path: bpath("minOpenMs"),
            message: "must be at least 1".into(),
        });
    }
    if breaker.min_open > breaker.open_for {
        return Err(ConfigError {
            path: bpath("minOpenMs"),
            message: "must not exceed openMs".into(),
        });
    }
    if breaker.half_open_probes == 0 {
        return Err(ConfigError {
            path: bpath("halfOpenProbes"),
            message: "must be at least 1".into(),
        });
    }
    let d = crate::policy::bulkhead::BulkheadSettings::default();
    let bulkhead = crate::policy::bulkhead::BulkheadSettings {
        max_concurrent: bulkhead_w
            .max_concurrent
            .or(bulkhead_d.max_concurrent)
            .unwrap_or(d.max_concurrent),
        max_queue: bulkhead_w
            .max_queue
            .or(bulkhead_d.max_queue)
            .unwrap_or(d.max_queue),
    };
    if bulkhead.max_concurrent == 0 {
        return Err(ConfigError {
            path: format!("{path}.bulkhead.maxConcurrent"),
            message: "must be at least 1".into(),
        });
    }
    let call = server.call().over(&defaults.call());
    let retry = call.retry.clone().unwrap_or_default();
    Ok(ServerPolicy {
        breaker,
        bulkhead,
        budget_ratio: retry.budget_ratio.unwrap_or(0.2),
        budget_min_per_second: retry.budget_min_per_second.unwrap_or(10),
        tools: tools.clone(),
        call,
    })
}

impl ServerPolicy {
    /// The per-call policy of `tool`, given whether it is annotated read-only.
    pub fn for_tool(&self, tool: &str, read_only: bool) -> CallPolicy {
        match self.tools.get(tool) {
            Some(t) => t.over(&self.call).resolve(read_only),
            None => self.call.resolve(read_only),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn layer<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("a valid layer")
    }

    #[test]
    fn the_attempt_timeout_defaults_by_operation() {
        let none = CallPolicyConfig::default();
        // No `operation`: annotated read-only is a simple read, anything else a write.
        assert_eq!(none.resolve(true).timeout, Duration::from_secs(5));
        assert_eq!(none.resolve(false).timeout, Duration::from_secs(10));
        for (operation, secs) in [
            (Operation::Read, 5),
            (Operation::Query, 30),
            (Operation::Write, 10),
            (Operation::Batch, 120),
        ] {
            let cfg = CallPolicyConfig {
                operation: Some(operation),
                ..Default::default()
            };
            // The operation wins over the annotation either way.
            for read_only in [true, false] {
                let p = cfg.resolve(read_only);
                assert_eq!(p.timeout, Duration::from_secs(secs), "{operation:?}");
                assert_eq!(p.deadline, p.timeout * 3, "deadline is 3 × the timeout");
            }
        }
        let explicit = CallPolicyConfig {
            timeout_ms: Some(250),
            operation: Some(Operation::Batch),
            ..Default::default()
        };
        assert_eq!(explicit.resolve(true).timeout, Duration::from_millis(250));
    }

    #[test]
    fn tools_override_servers_which_override_defaults_field_by_field() {
        let defaults: PolicyDefaults = layer(json!({
            "timeoutMs": 1000, "deadlineMs": 9000,
            "retry": { "maxAttempts": 2, "baseDelayMs": 50, "maxDelayMs": 500, "jitter": "none" },
            "circuitBreaker": { "consecutiveFailures": 7, "openMs": 900 },
            "bulkhead": { "maxConcurrent": 3, "maxQueue": 5 }
        }));
        let server: PolicyDefaults = layer(json!({
            "timeoutMs": 2000,
            "retry": { "maxAttempts": 4, "budgetRatio": 0.5 },
            "circuitBreaker": { "openMs": 1500 },
            "bulkhead": { "maxQueue": 8 }
        }));
        let tools: BTreeMap<String, CallPolicyConfig> = layer(json!({
            "slow": { "timeoutMs": 3000, "retrySafe": true, "retry": { "baseDelayMs": 10 } }
        }));
        let p =
            resolve_server(&defaults, &server, &tools, "orchestrator.servers.s").expect("valid");

        let slow = p.for_tool("slow", false);
        assert_eq!(slow.timeout, Duration::from_millis(3000), "the tool's own");
        assert!(slow.retry_safe, "the tool's own");
        assert_eq!(slow.base_delay, Duration::from_millis(10), "the tool's own");
        assert_eq!(slow.max_attempts, 4, "from the server");
        assert_eq!(
            slow.max_delay,
            Duration::from_millis(500),
            "from the defaults"
        );
        assert_eq!(slow.jitter, Jitter::None, "from the defaults");
        assert_eq!(
            slow.deadline,
            Duration::from_millis(9000),
            "from the defaults"
        );

        let other = p.for_tool("other", false);
        assert_eq!(other.timeout, Duration::from_millis(2000), "the server's");
        assert_eq!(other.base_delay, Duration::from_millis(50), "the defaults'");
        assert!(!other.retry_safe);

        // Server-wide settings: the server's fields over the defaults', the rest built in.
        assert_eq!(p.breaker.open_for, Duration::from_millis(1500));
        assert_eq!(p.breaker.consecutive_failures, 7);
        assert_eq!(
            p.breaker.half_open_probes,
            crate::policy::breaker::BreakerSettings::default().half_open_probes
        );
        assert_eq!((p.bulkhead.max_concurrent, p.bulkhead.max_queue), (3, 8));
        assert_eq!(p.budget_ratio, 0.5);
        assert_eq!(p.budget_min_per_second, 10);
    }

    #[test]
    fn the_retry_budget_cannot_be_set_per_tool_and_errors_name_the_field() {
        let tools: BTreeMap<String, CallPolicyConfig> =
            layer(json!({ "t": { "retry": { "budgetRatio": 1.0 } } }));
        let e = resolve_server(
            &PolicyDefaults::default(),
            &PolicyDefaults::default(),
            &tools,
            "orchestrator.servers.s",
        )
        .expect_err("refused");
        assert_eq!(e.path, "orchestrator.servers.s.tools.t.retry");

        let server: PolicyDefaults = layer(json!({ "retry": { "maxAttempts": 0 } }));
        let e = resolve_server(
            &PolicyDefaults::default(),
            &server,
            &BTreeMap::new(),
            "orchestrator.servers.s",
        )
        .expect_err("refused");
        assert_eq!(e.path, "orchestrator.servers.s.retry.maxAttempts");
    }

    #[test]
    fn the_repository_mcp_json_gives_sql_query_a_30_s_timeout() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mcp.json");
        let config = crate::config::Config::load(&path).expect("the repository's mcp.json loads");
        let sql = config
            .servers
            .iter()
            .find(|s| s.name == "sql")
            .expect("a `sql` server");
        // `query` is annotated read-only, but mcp.json says `operation: query`.
        assert_eq!(
            sql.policy.for_tool("query", true).timeout,
            Duration::from_secs(30)
        );
        assert_eq!(
            sql.policy.for_tool("get_customer", true).timeout,
            Duration::from_secs(5),
            "other reads keep the read default"
        );
    }

    #[test]
    fn the_first_open_period_defaults_to_250_ms_within_open_ms_and_is_checked() {
        let resolve = |breaker: serde_json::Value| {
            let server: PolicyDefaults = layer(json!({ "circuitBreaker": breaker }));
            resolve_server(
                &PolicyDefaults::default(),
                &server,
                &BTreeMap::new(),
                "orchestrator.servers.s",
            )
        };
        let p = resolve(json!({})).expect("valid");
        assert_eq!(p.breaker.min_open, Duration::from_millis(250));
        let p = resolve(json!({ "openMs": 100 })).expect("valid");
        assert_eq!(
            p.breaker.min_open,
            Duration::from_millis(100),
            "never past openMs"
        );
        let e = resolve(json!({ "openMs": 100, "minOpenMs": 200 })).expect_err("refused");
        assert_eq!(e.path, "orchestrator.servers.s.circuitBreaker.minOpenMs");
        assert_eq!(e.message, "must not exceed openMs");
        let e = resolve(json!({ "minOpenMs": 0 })).expect_err("refused");
        assert_eq!(e.path, "orchestrator.servers.s.circuitBreaker.minOpenMs");
    }
}
