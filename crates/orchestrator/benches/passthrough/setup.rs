//! The release binaries the bench runs, and the configurations it gives the orchestrator.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub const SQL_BIN: &str = "sql-mcp-server";
pub const COSMOS_BIN: &str = "cosmos-mcp-server";
pub const REST_BIN: &str = "rest-mcp-server";
pub const ORCH_BIN: &str = "mcp-orchestrator";
/// The package that builds [`ORCH_BIN`] (the library's binary crate); the servers' packages are
/// named as their binaries.
const ORCH_PACKAGE: &str = "mcp-orchestrator-cli";
const PACKAGES: [&str; 4] = [SQL_BIN, COSMOS_BIN, REST_BIN, ORCH_PACKAGE];
const BINARIES: [&str; 4] = [SQL_BIN, COSMOS_BIN, REST_BIN, ORCH_BIN];

/// Where the binaries are: next to the bench ([`kit::binaries`], where `testkit` looks for them
/// too: `target/release` under `cargo bench`).
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Makes sure every binary is built and current. `cargo bench` builds none of them (they
    /// belong to other packages), so this runs `cargo build` for them (a no-op when they are
    /// fresh) unless `PASSTHROUGH_NO_BUILD` is set and they are all there.
    pub fn ensure() -> anyhow::Result<Self> {
        let dir = kit::binaries::dir()?;
        let present = || {
            BINARIES
                .iter()
                .all(|b| kit::binaries::path_in(&dir, b).exists())
        };
        if std::env::var_os("PASSTHROUGH_NO_BUILD").is_none() || !present() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
            let mut build = std::process::Command::new(cargo);
            build.args(["build", "--bins"]);
            for p in PACKAGES {
                build.args(["-p", p]);
            }
            // The profile the bench itself was built with (`release` under `cargo bench`).
            if dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let built = build.status().context("running cargo build")?.success();
            if !built && present() {
                eprintln!(
                    "warning: cargo build failed; measuring the binaries already in {}",
                    dir.display()
                );
            } else if !built {
                bail!("cargo build of {PACKAGES:?} failed");
            }
        }
        let binaries = Self { dir };
        for b in BINARIES {
            let path = binaries.path(b);
            if !path.exists() {
                bail!("{} not found after building", path.display());
            }
        }
        Ok(binaries)
    }

    /// The path of one of the binaries.
    pub fn path(&self, name: &str) -> PathBuf {
        kit::binaries::path_in(&self.dir, name)
    }

    /// The profile they were built in (`release`, or `debug` for the smoke run).
    pub fn profile(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The SQL server's arguments: its seeded data in memory, so every process starts the same.
pub fn sql_args() -> Vec<String> {
    vec!["--data-dir".to_owned(), ":memory:".to_owned()]
}

/// One stdio server of `mcpServers`: no added latency, no injected faults (set explicitly, so a
/// `MCP_FAULT_*` variable in the bench's environment cannot add any), quiet logs.
fn server(bins: &Binaries, bin: &str, args: &[&str]) -> Value {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.extend(["--latency-ms", "0", "--failure-rate", "0"].map(String::from));
    json!({
        "command": bins.path(bin).display().to_string(),
        "args": args,
        "env": { "RUST_LOG": "warn" }
    })
}

/// How the orchestrator reads its servers' tool results: `PASSTHROUGH_TOOL_RESULTS` (`raw`, the
/// default, or `typed`), so both paths can be measured with the same binaries; or `default`, which
/// writes no setting.
fn tool_results() -> String {
    std::env::var("PASSTHROUGH_TOOL_RESULTS").unwrap_or_else(|_| "raw".to_owned())
}

/// `orchestrator.servers` for `names`, each reading tool results as [`tool_results`] says;
/// `default` leaves the setting out, so binaries from before it existed can be measured too.
fn servers(names: &[&str]) -> Value {
    let mode = tool_results();
    if mode == "default" {
        return json!({});
    }
    names
        .iter()
        .map(|n| ((*n).to_owned(), json!({ "toolResults": mode })))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// An orchestrator naming only the SQL server, for the pass-through paths. One client keeps up
/// to `in_flight` calls in flight, over the default per-client cap, so the cap is raised to it.
pub fn sql_only(bins: &Binaries, in_flight: usize) -> Value {
    json!({
        "mcpServers": { "sql": server(bins, SQL_BIN, &["--data-dir", ":memory:"]) },
        "orchestrator": {
            "limits": { "maxConcurrentCallsPerClient": in_flight },
            "servers": servers(&["sql"])
        }
    })
}

/// The three bundled servers, as in `mcp.json` but on data in memory, with `composites` (which
/// may be empty).
pub fn three_servers(bins: &Binaries, composites: Value) -> Value {
    json!({
        "mcpServers": {
            "sql": server(bins, SQL_BIN, &["--data-dir", ":memory:"]),
            // Enough request units that no call of the bench is throttled.
            "cosmos": server(bins, COSMOS_BIN, &["--data-dir", ":memory:", "--ru-per-second", "1000000"]),
            "rest": server(bins, REST_BIN, &[])
        },
        "orchestrator": { "composites": composites, "servers": servers(&["sql", "cosmos", "rest"]) }
    })
}

/// The configurations written for this run, in a directory removed on drop.
pub struct Scratch(testkit::TempDir);

impl Scratch {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self(testkit::TempDir::new("passthrough")?))
    }

    /// Writes `config` as `<name>.json` and returns its path.
    pub fn config(&self, name: &str, config: &Value) -> anyhow::Result<PathBuf> {
        let path = self.0.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// `serve --config <config>` and `extra` arguments.
pub fn serve_args(config: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "serve".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}
