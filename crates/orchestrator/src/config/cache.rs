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
    cache::{CacheSettings, CacheSpec},
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
}

/// The validated rules.
#[derive(Debug, Clone, Default)]
pub struct CacheRules {
    /// Tier lengths and size.
    pub settings: CacheSettings,
    /// Tools cached on every call.
    pub tools: HashMap<String, CacheSpec>,
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
        Ok(Self {
            settings,
            tools: c.tools.clone().into_iter().collect(),
            tags: compile("tags", &c.tags)?,
            invalidates: compile("invalidates", &c.invalidates)?,
        })
    }
}
