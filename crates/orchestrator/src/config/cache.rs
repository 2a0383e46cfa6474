//! `orchestrator.cache`: tier lengths, which tools are cached, the tags their entries carry, and
//! which writes invalidate which tags.
//!
//! Tags are templates over the call's arguments (`"customer:${args.customerId}"`), so a write
//! invalidates exactly the entries it can have changed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ConfigError;
use crate::{
    cache::{CacheSettings, CacheSpec, shared::SharedSettings},
    template::{Scope, Template},
};

/// `orchestrator.cache` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// TTL of the `short` tier (default 60000 ms; 1-5 min is typical).
    pub short_ms: Option<u64>,
    /// TTL of the `medium` tier (default 900000 ms; 15-60 min is typical).
    pub medium_ms: Option<u64>,
    /// TTL of the `long` tier (default 3600000 ms; 1-24 h is typical).
    pub long_ms: Option<u64>,
    /// Entries kept at most (default 10000).
    pub max_entries: Option<u64>,
    /// `"server.tool": spec`: cache this tool's results on every call, pass-through included.
    /// Listing a tool here also allows caching it when it is not annotated read-only.
    #[serde(default)]
    pub tools: BTreeMap<String, CacheSpec>,
    /// `"server.tool": [tag templates]`: tags its cached entries carry.
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<String>>,
    /// `"server.tool": [tag templates]`: tags a successful call of this (write) tool invalidates.
    #[serde(default)]
    pub invalidates: BTreeMap<String, Vec<String>>,
    /// A shared L2 in Redis behind the in-process cache, for several instances (off when absent).
    pub redis: Option<RedisConfig>,
}

/// `orchestrator.cache.redis` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]` (`rediss://` is not built in). Put a password
    /// in through `${env:NAME}`: it is then redacted, and never logged either way.
    pub url: String,
    /// Prefix of every key and of the default channel (default `mcp-orchestrator:`).
    pub key_prefix: Option<String>,
    /// Bound on every Redis operation, in ms (default 50): past it a call goes on without Redis.
    pub timeout_ms: Option<u64>,
    /// Pub/sub channel of invalidations (default `{keyPrefix}invalidations`).
    pub channel: Option<String>,
}

/// Default `orchestrator.cache.redis.keyPrefix`.
pub const DEFAULT_KEY_PREFIX: &str = "mcp-orchestrator:";
/// Default `orchestrator.cache.redis.timeoutMs`: a same-zone Redis answers in about a millisecond,
/// so this only trips when it is in trouble, and costs a call little when it does.
pub const DEFAULT_TIMEOUT_MS: u64 = 50;

/// The validated rules.
#[derive(Debug, Clone, Default)]
pub struct CacheRules {
    /// Tier lengths and size.
    pub settings: CacheSettings,
    /// Tools cached on every call.
    pub tools: HashMap<String, CacheSpec>,
    /// The shared L2, when configured.
    pub redis: Option<SharedSettings>,
    tags: HashMap<String, Vec<Template>>,
    invalidates: HashMap<String, Vec<Template>>,
}

fn render_tags(templates: Option<&Vec<Template>>, args: &Value) -> Vec<String> {
    let scope = Scope::new().with("args", args);
    templates
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t.render(&scope).ok())
                .map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl CacheRules {
    /// Tags an entry of `server.tool` with these arguments carries.
    pub fn tags_for(&self, call: &str, args: &Value) -> Vec<String> {
        render_tags(self.tags.get(call), args)
    }

    /// Tags a successful call of `server.tool` with these arguments invalidates.
    pub fn invalidations_for(&self, call: &str, args: &Value) -> Vec<String> {
        render_tags(self.invalidates.get(call), args)
    }

    /// Validates the section; `servers` are the enabled upstream names.
    pub fn from_config(c: &CacheConfig, servers: &BTreeSet<String>) -> Result<Self, ConfigError> {
        let base = "orchestrator.cache";
        let d = CacheSettings::default();
        let dur =
            |v: Option<u64>, field: &str, default: Duration| -> Result<Duration, ConfigError> {
                match v {
                    Some(0) => Err(ConfigError {
                        path: format!("{base}.{field}"),
                        message: "must be at least 1".into(),
                    }),
                    Some(ms) => Ok(Duration::from_millis(ms)),
                    None => Ok(default),
                }
            };
        let settings = CacheSettings {
            short: dur(c.short_ms, "shortMs", d.short)?,
            medium: dur(c.medium_ms, "mediumMs", d.medium)?,
            long: dur(c.long_ms, "longMs", d.long)?,
            max_entries: c.max_entries.unwrap_or(d.max_entries),
        };
        let check_call = |field: &str, call: &str| -> Result<(), ConfigError> {
            match call.split_once('.') {
                Some((server, tool)) if servers.contains(server) && !tool.is_empty() => Ok(()),
                _ => Err(ConfigError {
                    path: format!("{base}.{field}.{call}"),
                    message: "expected `<server>.<tool>` naming an enabled server".into(),
                }),
            }
        };
        let compile = |field: &str,
                       map: &BTreeMap<String, Vec<String>>|
         -> Result<HashMap<String, Vec<Template>>, ConfigError> {
            let mut out = HashMap::new();
            for (call, tags) in map {
                check_call(field, call)?;
                let mut ts = Vec::new();
                for (i, tag) in tags.iter().enumerate() {
                    let path = format!("{base}.{field}.{call}[{i}]");
                    let t = Template::compile(&Value::String(tag.clone())).map_err(|e| {
                        ConfigError {
                            path: path.clone(),
                            message: e.to_string(),
                        }
                    })?;
                    if let Some(r) = t.references().into_iter().find(|r| r.root != "args") {
                        return Err(ConfigError {
                            path,
                            message: format!("tags may refer only to `args`, not `{}`", r.root),
                        });
                    }
                    ts.push(t);
                }
                out.insert(call.clone(), ts);
            }
            Ok(out)
        };
        for call in c.tools.keys() {
            check_call("tools", call)?;
        }
        let redis = c.redis.as_ref().map(redis_settings).transpose()?;
        Ok(Self {
            redis,
            settings,
            tools: c.tools.clone().into_iter().collect(),
            tags: compile("tags", &c.tags)?,
            invalidates: compile("invalidates", &c.invalidates)?,
        })
    }
}

/// Validates `orchestrator.cache.redis`.
fn redis_settings(c: &RedisConfig) -> Result<SharedSettings, ConfigError> {
    let base = "orchestrator.cache.redis";
    let error = |field: &str, message: String| ConfigError {
        path: format!("{base}.{field}"),
        message,
    };
    let timeout_ms = match c.timeout_ms {
        Some(0) => return Err(error("timeoutMs", "must be at least 1".into())),
        Some(ms) => ms,
        None => DEFAULT_TIMEOUT_MS,
    };
    let key_prefix = c
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if c.channel.as_deref() == Some("") {
        return Err(error("channel", "must not be empty".into()));
    }
    if !(c.url.starts_with("redis://")
        || c.url.starts_with("redis+unix://")
        || c.url.starts_with("unix://"))
    {
        return Err(error(
            "url",
            "expected a `redis://host[:port][/db]` URL (TLS `rediss://` is not supported)".into(),
        ));
    }
    SharedSettings::new(
        &c.url,
        key_prefix,
        Duration::from_millis(timeout_ms),
        c.channel.clone(),
    )
    .map_err(|e| {
        let message = format!("not a Redis URL: {e}");
        error("url", crate::cache::shared::redact_url(&c.url, &message))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(redis: Value) -> Result<CacheRules, ConfigError> {
        let config: CacheConfig =
            serde_json::from_value(json!({ "redis": redis })).expect("parses");
        CacheRules::from_config(&config, &BTreeSet::new())
    }

    #[test]
    fn redis_is_off_unless_configured_and_defaults_are_filled_in() {
        let off = CacheRules::from_config(&CacheConfig::default(), &BTreeSet::new()).expect("ok");
        assert!(off.redis.is_none());
        let on = rules(json!({"url": "redis://127.0.0.1:6379/0"}))
            .expect("valid")
            .redis
            .expect("configured");
        assert_eq!(on.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(on.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert_eq!(on.channel, "mcp-orchestrator:invalidations");
        assert_eq!(on.host, "127.0.0.1:6379");
    }

    #[test]
    fn bad_redis_settings_name_their_field_and_keep_the_password_out() {
        for (redis, path) in [
            (
                json!({"url": "http://cache:6379"}),
                "orchestrator.cache.redis.url",
            ),
            (
                json!({"url": "redis://:hunter22@cache:notaport/0"}),
                "orchestrator.cache.redis.url",
            ),
            (
                json!({"url": "redis://cache", "timeoutMs": 0}),
                "orchestrator.cache.redis.timeoutMs",
            ),
            (
                json!({"url": "redis://cache", "channel": ""}),
                "orchestrator.cache.redis.channel",
            ),
        ] {
            let e = rules(redis.clone()).expect_err(&format!("{redis} must be refused"));
            assert_eq!(e.path, path, "{redis}: {}", e.message);
            assert!(!e.message.contains("hunter22"), "{}", e.message);
        }
        let unknown = serde_json::from_value::<CacheConfig>(
            json!({"redis": {"url": "redis://cache", "timeout": 5}}),
        )
        .expect_err("unknown field");
        assert!(unknown.to_string().contains("timeout"), "{unknown}");
    }
}
