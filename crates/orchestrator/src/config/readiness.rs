//! `orchestrator.readiness`: what `/readyz` waits for before a load balancer sends calls here.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `orchestrator.readiness` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReadinessConfig {
    /// Servers that must be connected for the instance to be ready (default none). Every other
    /// server is optional: an instance without it still serves the rest, and composites give
    /// partial results, so one server down does not take every instance out of rotation.
    pub required_servers: Vec<String>,
}

impl ReadinessConfig {
    /// The required servers, each checked against `enabled`.
    pub fn resolve(
        &self,
        enabled: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, ConfigError> {
        for (i, name) in self.required_servers.iter().enumerate() {
            if !enabled.contains(name) {
                return Err(ConfigError::new(
                    format!("orchestrator.readiness.requiredServers[{i}]"),
                    format!("no enabled server `{name}` in mcpServers"),
                ));
            }
        }
        Ok(self.required_servers.clone())
    }
}
