//! `mcp.json` text → `Config::parse` (JSON, `${env:..}` expansion, typing, validation, composite
//! and cache compilation): any input is a config or a `ConfigError`, never a panic or a hang.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use orchestrator::{config::Config, policy::PolicyStack};

/// Some variables are set, some are not, so both expansion paths run.
fn lookup(name: &str) -> Option<String> {
    match name {
        _ if name.ends_with("UNSET") => None,
        "EMPTY" => Some(String::new()),
        "TOKEN" => Some("s3cr3t-token".to_owned()),
        "NESTED" => Some("${env:TOKEN}".to_owned()),
        _ => Some(format!("value-of-{name}")),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("/fuzz/base"), &lookup) {
        Ok(config) => {
            // What `check` and `status` do with a loaded config.
            let _ = config.redact(text);
            // Cache tags and invalidations are templates over the call's arguments.
            let args = serde_json::json!({ "customerId": "C-1", "n": 7, "list": [1, "x"] });
            let calls = config
                .workflows
                .iter()
                .flat_map(|w| w.steps.iter().map(|s| format!("{}.{}", s.server, s.tool)))
                .chain(config.cache.tools.keys().cloned());
            for call in calls {
                let _ = config.cache.tags_for(&call, &args);
                let _ = config.cache.invalidations_for(&call, &args);
            }
            // A valid config must be usable: every server's policy stack is built, every tool's
            // policy resolved, and the breaker driven open (which schedules its reopening).
            for spec in &config.servers {
                let stack = PolicyStack::new(&spec.name, spec.policy.clone());
                let tools = spec.policy.tools.keys().map(String::as_str);
                for tool in tools.chain(["any-tool"]) {
                    for read_only in [false, true] {
                        let _ = spec.policy.for_tool(tool, read_only);
                    }
                }
                let breaker = stack.breaker();
                let failures = breaker.settings().consecutive_failures;
                if failures <= 64 {
                    for _ in 0..=failures {
                        if let Ok(permit) = breaker.acquire() {
                            permit.failure();
                        }
                    }
                    let _ = breaker.snapshot();
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
