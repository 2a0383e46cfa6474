//! The soak's temporary folder and `mcp.json`: the three bundled servers over stdio, Cosmos flaky.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde_json::{Value, json};

/// The orchestrator binary.
pub const ORCHESTRATOR: &str = "mcp-orchestrator";

/// The bundled servers, as (name in `mcpServers`, binary).
pub const SERVERS: [(&str, &str); 3] = [
    ("sql", "sql-mcp-server"),
    ("cosmos", "cosmos-mcp-server"),
    ("rest", "rest-mcp-server"),
];

/// The server that fails a share of its calls on purpose (`--failure-rate`).
pub const FLAKY: &str = "cosmos";

/// The server whose process is killed every few seconds.
pub const KILLED: &str = "rest";

/// The healthy server.
pub const HEALTHY: &str = "sql";

/// The repository's `mcp.json`, compiled in: the soak runs the composites and policy defaults
/// that ship, and cargo rebuilds the driver when they change.
const REPO_CONFIG: &str = include_str!("../../../mcp.json");

/// How a call's success depends on the faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Only healthy servers can fail it: it must always succeed.
    Healthy,
    /// It depends on the flaky server.
    Flaky,
    /// It depends on the killed server.
    Killed,
}

impl Role {
    /// The role of calls to `server`.
    pub fn of_server(server: &str) -> Self {
        match server {
            FLAKY => Role::Flaky,
            KILLED => Role::Killed,
            _ => Role::Healthy,
        }
    }

    /// The name used in the report.
    pub fn label(self) -> &'static str {
        match self {
            Role::Healthy => "healthy",
            Role::Flaky => "flaky",
            Role::Killed => "killed",
        }
    }

    /// The server whose pass-through calls have this role.
    pub fn server(self) -> &'static str {
        match self {
            Role::Healthy => HEALTHY,
            Role::Flaky => FLAKY,
            Role::Killed => KILLED,
        }
    }

    /// Every role, in report order.
    pub const ALL: [Role; 3] = [Role::Healthy, Role::Flaky, Role::Killed];
}

/// What the soak changes in the repository's `orchestrator` section, and how it runs the
/// flaky server.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--failure-rate` of the flaky server.
    pub failure_rate: f64,
    /// `--seed` of the flaky server.
    pub seed: u64,
    /// `orchestrator.defaults.retry.maxAttempts`.
    pub max_attempts: u32,
    /// `orchestrator.limits.maxConcurrentCallsPerClient`: the soak is one client keeping this
    /// many calls in flight, which must not be refused as too many.
    pub in_flight: usize,
    /// Where the flaky server listens when the soak runs it over HTTP itself (for an outage):
    /// `http://127.0.0.1:PORT/mcp`. `None`: the orchestrator starts it over stdio.
    pub flaky_url: Option<String>,
}

/// The flaky server's arguments beside the transport: its data in `dir`, the injected failures.
pub fn flaky_args(dir: &Path, faults: &Options) -> Vec<String> {
    vec![
        "--data-dir".to_owned(),
        dir.join(FLAKY).display().to_string(),
        "--failure-rate".to_owned(),
        faults.failure_rate.to_string(),
        "--seed".to_owned(),
        faults.seed.to_string(),
        // No throttling: the flaky server's failures are the injected ones only.
        "--ru-per-second".to_owned(),
        "1000000".to_owned(),
    ]
}

/// The children the orchestrator should have when all is well: one process per server it
/// starts over stdio (not the flaky server when the soak runs it over HTTP), by executable, and
/// beside each the watchdog shell that kills it should the orchestrator die (`/bin/sh`, named
/// by the executable it resolves to, as the process table shows it).
pub fn expected_children(flaky_over_http: bool) -> BTreeMap<String, u32> {
    let mut children: BTreeMap<String, u32> = SERVERS
        .iter()
        .filter(|(name, _)| !(flaky_over_http && *name == FLAKY))
        .map(|(_, bin)| ((*bin).to_owned(), 1))
        .collect();
    let stdio = children.len() as u32;
    let shell = std::fs::canonicalize("/bin/sh")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "sh".to_owned());
    *children.entry(shell).or_default() += stdio;
    children
}

/// The attempts one call of `server`'s `tool` gets, and the `mcp.json` field it comes from:
/// the tool's `retry.maxAttempts` over the server's over `orchestrator.defaults`, else the
/// orchestrator's built-in 3.
pub fn retry_attempts(config: &Value, server: &str, tool: &str) -> (u32, String) {
    let layers = [
        format!("orchestrator.servers.{server}.tools.{tool}.retry.maxAttempts"),
        format!("orchestrator.servers.{server}.retry.maxAttempts"),
        "orchestrator.defaults.retry.maxAttempts".to_owned(),
    ];
    for path in layers {
        let pointer = format!("/{}", path.replace('.', "/"));
        if let Some(n) = config
            .pointer(&pointer)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
        {
            return (n, path);
        }
    }
    (
        BUILTIN_MAX_ATTEMPTS,
        "the orchestrator's built-in default".to_owned(),
    )
}

/// `retry.maxAttempts` when no layer of `mcp.json` sets it (`config/policy.rs`).
const BUILTIN_MAX_ATTEMPTS: u32 = 3;

/// The folder of the binaries: `explicit`, else the folder of this executable
/// (`target/<profile>/`, where cargo puts every workspace binary: [`kit::binaries`]), once the
/// orchestrator and every server are found in it.
pub fn bin_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match explicit {
        Some(d) => d,
        None => kit::binaries::dir()?,
    };
    let dir = dir
        .canonicalize()
        .with_context(|| dir.display().to_string())?;
    for bin in std::iter::once(ORCHESTRATOR).chain(SERVERS.iter().map(|(_, b)| *b)) {
        kit::binaries::find_in(&dir, bin)?;
    }
    Ok(dir)
}

/// A fresh temporary folder, removed on drop unless kept.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `$TMPDIR/mcp-soak-<pid>`.
    pub fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("mcp-soak-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| path.display().to_string())?;
        Ok(Self { path, keep: false })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the folder in place (for the logs after a failed run).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes `<dir>/mcp.json` and returns it with its path: the repository's `orchestrator`
/// section (composites, cache, policy defaults) with `retry.maxAttempts` and the per-client
/// limit set, and the three servers started from `bins` with their data in `dir` (the flaky one
/// reached at `faults.flaky_url` instead, when set).
pub fn write_config(dir: &Path, bins: &Path, faults: Options) -> anyhow::Result<(PathBuf, Value)> {
    let repo: Value =
        serde_json::from_str(REPO_CONFIG).context("parsing the repository mcp.json")?;
    let mut orchestrator = repo
        .get("orchestrator")
        .cloned()
        .context("the repository mcp.json has no `orchestrator` section")?;
    orchestrator["defaults"]["retry"]["maxAttempts"] = json!(faults.max_attempts);
    orchestrator["limits"]["maxConcurrentCallsPerClient"] = json!(faults.in_flight);
    let bin = |name: &str| kit::binaries::path_in(bins, name).display().to_string();
    let data = |name: &str| dir.join(name).display().to_string();
    let flaky = match &faults.flaky_url {
        Some(url) => json!({ "url": url }),
        None => json!({ "command": bin("cosmos-mcp-server"), "args": flaky_args(dir, &faults) }),
    };
    let config = json!({
        "mcpServers": {
            "sql": {
                "command": bin("sql-mcp-server"),
                "args": ["--data-dir", data("sql")]
            },
            "cosmos": flaky,
            "rest": { "command": bin("rest-mcp-server"), "args": [] }
        },
        "orchestrator": orchestrator
    });
    let path = dir.join("mcp.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok((path, config))
}

/// The composite `name` of `config`.
pub fn composite<'a>(config: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    config
        .pointer(&format!("/orchestrator/composites/{name}"))
        .with_context(|| format!("the repository mcp.json has no composite `{name}`"))
}

/// The servers a composite's success depends on: those of its critical steps and of every step
/// a critical step reads, transitively (a critical step that reads a failed step is skipped,
/// which fails the composite). Optional steps' servers are not in it: their failure only puts
/// their `fallback` (or null) in the answer.
pub fn critical_servers(def: &Value) -> anyhow::Result<BTreeSet<String>> {
    let steps = def
        .get("steps")
        .and_then(Value::as_object)
        .context("composite without `steps`")?;
    let mut todo: Vec<&str> = steps
        .iter()
        .filter(|(_, s)| s.get("critical").and_then(Value::as_bool) == Some(true))
        .map(|(name, _)| name.as_str())
        .collect();
    let mut seen = BTreeSet::new();
    let mut servers = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.to_owned()) {
            continue;
        }
        let step = steps
            .get(name)
            .with_context(|| format!("unknown step `{name}`"))?;
        let call = step
            .get("call")
            .and_then(Value::as_str)
            .with_context(|| format!("step `{name}` has no `call`"))?;
        let server = call.split_once('.').map_or(call, |(s, _)| s);
        servers.insert(server.to_owned());
        let mut refs = BTreeSet::new();
        for part in ["args", "forEach"] {
            if let Some(v) = step.get(part) {
                references(v, &mut refs);
            }
        }
        todo.extend(
            refs.iter()
                .filter_map(|r| steps.get_key_value(r.as_str()).map(|(k, _)| k.as_str())),
        );
    }
    Ok(servers)
}

/// The names `${name...}` references start with, anywhere in `v` (`$${` is a literal).
fn references(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            let bytes = s.as_bytes();
            let mut i = 0;
            while let Some(at) = s[i..].find("${") {
                let start = i + at;
                i = start + 2;
                if start > 0 && bytes[start - 1] == b'$' {
                    continue;
                }
                let name: String = s[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| references(x, out)),
        Value::Object(map) => map.values().for_each(|x| references(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_servers_follow_references_of_critical_steps_only() -> anyhow::Result<()> {
        let def = json!({ "steps": {
            "a": { "call": "sql.x", "critical": true, "args": { "id": "${b.id}", "lit": "$${c.id}" } },
            "b": { "call": "cosmos.y", "args": { "q": "${input.q}" } },
            "c": { "call": "rest.z" },
            "d": { "call": "rest.w", "args": { "id": "${a.id}" } }
        }});
        let servers = critical_servers(&def)?;
        assert_eq!(
            servers,
            BTreeSet::from(["sql".to_owned(), "cosmos".to_owned()])
        );
        Ok(())
    }

    #[test]
    fn retry_attempts_come_from_the_closest_layer_that_sets_them() {
        let mut config = json!({ "orchestrator": {
            "defaults": { "retry": { "maxAttempts": 2 } },
            "servers": { "cosmos": { "tools": { "other": { "retry": { "maxAttempts": 9 } } } } }
        }});
        let at = |c: &Value| retry_attempts(c, "cosmos", "get_user_behavior");
        assert_eq!(
            at(&config),
            (2, "orchestrator.defaults.retry.maxAttempts".to_owned())
        );
        config["orchestrator"]["servers"]["cosmos"]["retry"] = json!({ "maxAttempts": 4 });
        assert_eq!(
            at(&config),
            (
                4,
                "orchestrator.servers.cosmos.retry.maxAttempts".to_owned()
            )
        );
        config["orchestrator"]["servers"]["cosmos"]["tools"]["get_user_behavior"] =
            json!({ "retry": { "maxAttempts": 1 } });
        assert_eq!(
            at(&config),
            (
                1,
                "orchestrator.servers.cosmos.tools.get_user_behavior.retry.maxAttempts".to_owned()
            )
        );
        assert_eq!(at(&json!({})).0, BUILTIN_MAX_ATTEMPTS);
    }

    #[test]
    fn the_flaky_server_is_reached_by_url_when_the_soak_runs_it() -> anyhow::Result<()> {
        let dir = TempDir::new()?;
        let bins = Path::new("/bin");
        let mut faults = Options {
            failure_rate: 0.2,
            seed: 1,
            max_attempts: 2,
            in_flight: 64,
            flaky_url: None,
        };
        let (_, stdio) = write_config(dir.path(), bins, faults.clone())?;
        assert!(stdio.pointer("/mcpServers/cosmos/command").is_some());
        faults.flaky_url = Some("http://127.0.0.1:9/mcp".to_owned());
        let (_, http) = write_config(dir.path(), bins, faults)?;
        assert_eq!(
            http["mcpServers"]["cosmos"],
            json!({ "url": "http://127.0.0.1:9/mcp" })
        );
        let all = expected_children(false);
        let servers = |c: &BTreeMap<String, u32>| {
            c.keys()
                .filter(|k| k.ends_with("-mcp-server"))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(servers(&all).len(), 3);
        // One watchdog shell per stdio child.
        assert_eq!(all.values().sum::<u32>(), 6, "{all:?}");
        let without_flaky = expected_children(true);
        assert_eq!(
            servers(&without_flaky),
            ["rest-mcp-server", "sql-mcp-server"]
        );
        assert_eq!(without_flaky.values().sum::<u32>(), 4, "{without_flaky:?}");
        Ok(())
    }
}
