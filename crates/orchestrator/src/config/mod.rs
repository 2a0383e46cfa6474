//! `mcp.json`: the `mcpServers` map that Claude Desktop, VS Code and Cursor use, plus an
//! `orchestrator` section; parsed, `${env:VAR}`-expanded and validated into [`Config`].
//!
//! Every error names the JSON path of the offending value and what was expected
//! (`mcpServers.sql.args[1]: invalid type: integer `1`, expected a string`), because a config file
//! is edited by hand and a vague error costs the user a search.

pub mod cache;
pub mod env;
pub mod limits;
pub mod policy;
pub mod readiness;
pub mod reload;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::naming::MAX_TOOL_NAME;

/// A configuration error: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// JSON path of the offending value (`mcpServers.sql.url`), or the file for I/O and syntax.
    pub path: String,
    /// What was expected.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

// ---- the file as written ---------------------------------------------------------------------

/// The file as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// Editors' schema hint; ignored.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The upstream servers, by name.
    #[serde(default)]
    pub mcp_servers: BTreeMap<String, ServerEntry>,
    /// The orchestrator's own settings.
    #[serde(default)]
    pub orchestrator: OrchestratorSection,
}

/// How an upstream is reached, when `type` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportType {
    /// A child process speaking over stdin/stdout.
    Stdio,
    /// Streamable HTTP.
    Http,
    /// Streamable HTTP (VS Code's name for it).
    StreamableHttp,
}

/// One entry of `mcpServers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerEntry {
    /// `stdio`, `http` or `streamable-http`; inferred from `command`/`url` when absent.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub transport_type: Option<TransportType>,
    /// Program to start (stdio). A relative path with a `/` resolves against the config's folder;
    /// a bare name is looked up on `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment for the child (added to the orchestrator's own).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the child; relative to the config's folder. Default: that folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Endpoint (HTTP), e.g. `http://127.0.0.1:8091/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Headers sent with every HTTP request (use `${env:VAR}` for secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Keep the entry but do not connect.
    #[serde(default)]
    pub disabled: bool,
}

/// The `orchestrator` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestratorSection {
    /// Address of the HTTP front for `serve --http` (default `127.0.0.1:8080`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Between the server prefix and the tool name (default `__`).
    #[serde(default = "default_separator")]
    pub tool_name_separator: String,
    /// Per-server options, by the names used in `mcpServers`.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerOptions>,
    /// Exposed tool names (after prefixing) to keep; globs; empty keeps all.
    #[serde(default)]
    pub allow_tools: Vec<String>,
    /// Exposed tool names to hide; globs; applied after `allowTools`.
    #[serde(default)]
    pub deny_tools: Vec<String>,
    /// Resilience settings for every server (timeouts, retry, breaker, bulkhead).
    #[serde(default)]
    pub defaults: policy::PolicyDefaults,
    /// Composite tools, by name.
    #[serde(default)]
    pub composites: BTreeMap<String, crate::workflow::CompositeConfig>,
    /// Result cache rules.
    #[serde(default)]
    pub cache: cache::CacheConfig,
    /// Caps on request fan-out, result size, per-client concurrency and upstream stderr.
    #[serde(default)]
    pub limits: limits::LimitsConfig,
    /// Picking up a changed config file while running.
    #[serde(default)]
    pub reload: reload::ReloadConfig,
    /// What `/readyz` waits for.
    #[serde(default)]
    pub readiness: readiness::ReadinessConfig,
    /// Where saga composites write their progress.
    #[serde(default)]
    pub sagas: SagasConfig,
}

/// `orchestrator.sagas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SagasConfig {
    /// The saga log, relative to the config file's folder (default `data/orchestrator/sagas.db`).
    pub log_path: Option<String>,
    /// How many sagas that ended well (`completed`, `compensated`, `resolved`) the log keeps;
    /// older ones are deleted. A long-running service would otherwise grow the file by every
    /// saga it ran.
    pub keep_ended: u32,
}

impl Default for SagasConfig {
    fn default() -> Self {
        Self {
            log_path: None,
            keep_ended: 10_000,
        }
    }
}

/// The saga log's file and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaLogSettings {
    /// The file.
    pub path: PathBuf,
    /// `orchestrator.sagas.keepEnded`, checked.
    pub keep_ended: u32,
}

impl Default for OrchestratorSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tool_name_separator: default_separator(),
            servers: BTreeMap::new(),
            allow_tools: Vec::new(),
            deny_tools: Vec::new(),
            defaults: policy::PolicyDefaults::default(),
            composites: BTreeMap::new(),
            cache: cache::CacheConfig::default(),
            limits: limits::LimitsConfig::default(),
            reload: reload::ReloadConfig::default(),
            readiness: readiness::ReadinessConfig::default(),
            sagas: SagasConfig::default(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_separator() -> String {
    "__".into()
}

/// `orchestrator.servers.<name>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerOptions {
    /// Prefix of this server's tools instead of its name (may be empty for no prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Upstream tool names to keep; globs; empty keeps all.
    #[serde(default)]
    pub allow_tools: Vec<String>,
    /// Upstream tool names to hide; globs.
    #[serde(default)]
    pub deny_tools: Vec<String>,
    /// Per-attempt timeout for this server's tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whole-call deadline for this server's tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Kind of operation of this server's tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<policy::Operation>,
    /// This server's tools are safe to repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_safe: Option<bool>,
    /// Retry settings for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<policy::RetryConfig>,
    /// Breaker settings for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<policy::BreakerConfig>,
    /// Bulkhead settings for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<policy::BulkheadConfig>,
    /// Per-tool overrides (timeouts, retry, `retrySafe`), by the upstream's own tool name.
    #[serde(default)]
    pub tools: BTreeMap<String, policy::CallPolicyConfig>,
    /// Largest request this server accepts, `_meta` included, when it differs from
    /// `orchestrator.limits.upstreamMaxRequestBytes` (a server started with another
    /// `--max-body-bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<usize>,
    /// Which protocol era to speak to it (default `auto`: the newest it supports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Era>,
    /// How its tool results are relayed (default `raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_results: Option<ToolResults>,
}

/// `orchestrator.servers.<name>.toolResults`: how a stdio server's tool results are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolResults {
    /// Kept as the server wrote them, only `_meta` and `resultType` parsed
    /// ([`kit::raw_result`]): the least work per byte, and fields newer than rmcp's types kept.
    #[default]
    Raw,
    /// Parsed into rmcp's `CallToolResult` and written out again.
    Typed,
}

/// `orchestrator.servers.<name>.protocol`: the protocol era the orchestrator speaks to a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Era {
    /// `server/discover` first (2026-07-28), `initialize` (2025-11-25) if the server does not
    /// know it.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// `initialize` with 2025-11-25 only: for a server whose 2026-07-28 side misbehaves.
    #[serde(rename = "2025-11-25")]
    Initialize,
    /// `server/discover` only; a server without it fails to connect.
    #[serde(rename = "2026-07-28")]
    Discover,
}

impl ServerOptions {
    /// The policy fields, as one layer.
    pub fn policy(&self) -> policy::PolicyDefaults {
        policy::PolicyDefaults {
            timeout_ms: self.timeout_ms,
            deadline_ms: self.deadline_ms,
            operation: self.operation,
            retry_safe: self.retry_safe,
            retry: self.retry.clone(),
            circuit_breaker: self.circuit_breaker.clone(),
            bulkhead: self.bulkhead.clone(),
        }
    }
}

// ---- the validated form ----------------------------------------------------------------------

/// How to reach one upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// A child process.
    Stdio {
        /// The program (resolved against the config's folder when relative with a `/`).
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment.
        env: BTreeMap<String, String>,
        /// Working directory.
        cwd: PathBuf,
    },
    /// Streamable HTTP.
    Http {
        /// Endpoint.
        url: String,
        /// Headers for every request.
        headers: BTreeMap<String, String>,
    },
}

impl Transport {
    /// `stdio` or `http`, for status.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Stdio { .. } => "stdio",
            Transport::Http { .. } => "http",
        }
    }
}

/// Tool name filters: keep what `allow` matches (everything if empty), then drop what `deny` matches.
#[derive(Debug, Clone)]
pub struct ToolFilter {
    allow: Option<GlobSet>,
    deny: GlobSet,
    /// The patterns as written: compiled sets cannot be compared, and a reload needs to know
    /// whether a server's filter changed.
    patterns: (Vec<String>, Vec<String>),
}

impl PartialEq for ToolFilter {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl ToolFilter {
    /// Compiles the globs; errors name the path of the bad pattern.
    fn new(allow: &[String], deny: &[String], path: &str) -> Result<Self, ConfigError> {
        let build = |patterns: &[String], field: &str| -> Result<GlobSet, ConfigError> {
            let mut b = GlobSetBuilder::new();
            for (i, p) in patterns.iter().enumerate() {
                let glob = Glob::new(p).map_err(|e| {
                    ConfigError::new(format!("{path}.{field}[{i}]"), format!("invalid glob: {e}"))
                })?;
                b.add(glob);
            }
            b.build()
                .map_err(|e| ConfigError::new(format!("{path}.{field}"), e.to_string()))
        };
        Ok(Self {
            allow: if allow.is_empty() {
                None
            } else {
                Some(build(allow, "allowTools")?)
            },
            deny: build(deny, "denyTools")?,
            patterns: (allow.to_vec(), deny.to_vec()),
        })
    }

    /// Keeps everything.
    pub fn all() -> Self {
        Self {
            allow: None,
            deny: GlobSet::empty(),
            patterns: (Vec::new(), Vec::new()),
        }
    }

    /// Whether `name` passes.
    pub fn keeps(&self, name: &str) -> bool {
        self.allow.as_ref().is_none_or(|a| a.is_match(name)) && !self.deny.is_match(name)
    }
}

/// One upstream, validated. Two specs are equal when the server would be started and called
/// the same way: a reload keeps such a server running.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    /// The name in `mcpServers`.
    pub name: String,
    /// What its tools are prefixed with (its name unless overridden; may be empty).
    pub prefix: String,
    /// How to reach it.
    pub transport: Transport,
    /// Which of its tools to expose.
    pub filter: ToolFilter,
    /// Timeouts, retry, breaker and bulkhead.
    pub policy: policy::ServerPolicy,
    /// How much of its stderr (stdio) reaches the log.
    pub stderr: crate::limits::StderrLimits,
    /// How large its messages may be, and how long its listings may take.
    pub limits: crate::limits::UpstreamLimits,
    /// Which protocol era to speak to it.
    pub era: Era,
    /// How its tool results are read.
    pub tool_results: ToolResults,
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder relative paths resolve against.
    pub base_dir: PathBuf,
    /// Enabled upstreams, by name order.
    pub servers: Vec<ServerSpec>,
    /// Names of entries marked `disabled`.
    pub disabled: Vec<String>,
    /// HTTP front address.
    pub listen: SocketAddr,
    /// Between prefix and tool name.
    pub separator: String,
    /// Filter on exposed names.
    pub filter: ToolFilter,
    /// Values substituted from `${env:..}`, never to be shown.
    pub secrets: Vec<String>,
    /// Composite tools, checked.
    pub workflows: Vec<crate::workflow::Workflow>,
    /// Cache rules.
    pub cache: cache::CacheRules,
    /// `orchestrator.limits`, checked.
    pub limits: crate::limits::Limits,
    /// `orchestrator.reload`, checked.
    pub reload: reload::ReloadSettings,
    /// Servers `/readyz` requires to be connected.
    pub required_servers: Vec<String>,
    /// The saga log's file and retention.
    pub saga_log: SagaLogSettings,
    /// SHA-256 of the file's text (hex), so status can tell which version of it is in force.
    pub digest: String,
}

/// SHA-256 of `text`, in lowercase hex (what `sha256sum` prints for the file).
fn digest(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn valid_name_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Config {
    /// Reads, expands and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let base_dir = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
        Self::parse(&text, &base_dir, &|v| std::env::var(v).ok()).map_err(|e| {
            if e.path.is_empty() {
                ConfigError::new(path.display().to_string(), e.message)
            } else {
                e
            }
        })
    }

    /// Parses config text; `lookup` resolves `${env:VAR}`.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw: Value = serde_json::from_str(text).map_err(|e| {
            ConfigError::new(
                "",
                format!(
                    "not valid JSON (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let secrets = env::expand(&mut raw, lookup).map_err(|e| {
            ConfigError::new(
                e.path.clone(),
                e.to_string().replace(&format!("{}: ", e.path), ""),
            )
        })?;
        let file: ConfigFile = serde_path_to_error::deserialize(raw).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::new(
                if path == "." { String::new() } else { path },
                e.inner().to_string(),
            )
        })?;
        let mut config = Self::validate(file, base_dir, secrets)?;
        config.digest = digest(text);
        Ok(config)
    }

    fn validate(
        file: ConfigFile,
        base_dir: &Path,
        secrets: Vec<String>,
    ) -> Result<Self, ConfigError> {
        let o = &file.orchestrator;
        let listen = kit::serve::parse_listen_addr(&o.listen)
            .map_err(|m| ConfigError::new("orchestrator.listen", m))?;
        if o.tool_name_separator.is_empty() || !valid_name_chars(&o.tool_name_separator) {
            return Err(ConfigError::new(
                "orchestrator.toolNameSeparator",
                "expected one or more of A-Z a-z 0-9 _ -",
            ));
        }
        let limits = o.limits.resolve()?;
        let reload = o.reload.resolve()?;
        for name in o.servers.keys() {
            if !file.mcp_servers.contains_key(name) {
                return Err(ConfigError::new(
                    format!("orchestrator.servers.{name}"),
                    format!("no server `{name}` in mcpServers"),
                ));
            }
        }
        let mut servers = Vec::new();
        let mut disabled = Vec::new();
        let mut prefixes: BTreeMap<String, String> = BTreeMap::new();
        for (name, entry) in &file.mcp_servers {
            let path = format!("mcpServers.{name}");
            if name.is_empty() || !valid_name_chars(name) {
                return Err(ConfigError::new(
                    path,
                    "server names may hold only A-Z a-z 0-9 _ -",
                ));
            }
            if entry.disabled {
                disabled.push(name.clone());
                continue;
            }
            let transport = transport_of(entry, &path, base_dir)?;
            let options = o.servers.get(name).cloned().unwrap_or_default();
            let prefix = options.prefix.clone().unwrap_or_else(|| name.clone());
            let opt_path = format!("orchestrator.servers.{name}");
            if !valid_name_chars(&prefix) {
                return Err(ConfigError::new(
                    format!("{opt_path}.prefix"),
                    "expected A-Z a-z 0-9 _ -",
                ));
            }
            let head = if prefix.is_empty() {
                0
            } else {
                prefix.len() + o.tool_name_separator.len()
            };
            if head >= MAX_TOOL_NAME {
                return Err(ConfigError::new(
                    if options.prefix.is_some() {
                        format!("{opt_path}.prefix")
                    } else {
                        path.clone()
                    },
                    format!(
                        "prefix `{prefix}` plus separator leaves no room in the {MAX_TOOL_NAME}-character tool name limit"
                    ),
                ));
            }
            if let Some(other) = prefixes.insert(prefix.clone(), name.clone())
                && !prefix.is_empty()
            {
                return Err(ConfigError::new(
                    format!("{opt_path}.prefix"),
                    format!("prefix `{prefix}` is already used by server `{other}`"),
                ));
            }
            servers.push(ServerSpec {
                name: name.clone(),
                prefix,
                transport,
                filter: ToolFilter::new(&options.allow_tools, &options.deny_tools, &opt_path)?,
                policy: policy::resolve_server(
                    &o.defaults,
                    &options.policy(),
                    &options.tools,
                    &opt_path,
                )?,
                stderr: limits.stderr,
                limits: crate::limits::UpstreamLimits {
                    max_request_bytes: match options.max_request_bytes {
                        Some(n) => limits::within_at(
                            n,
                            &crate::limits::UPSTREAM_MESSAGE_BYTES_RANGE,
                            &format!("{opt_path}.maxRequestBytes"),
                        )?,
                        None => limits.upstream.max_request_bytes,
                    },
                    ..limits.upstream
                },
                era: options.protocol.unwrap_or_default(),
                tool_results: options.tool_results.unwrap_or_default(),
            });
        }
        let enabled: std::collections::BTreeSet<String> =
            servers.iter().map(|s| s.name.clone()).collect();
        let workflows = o
            .composites
            .iter()
            .map(|(name, c)| {
                crate::workflow::Workflow::compile_with_limit(
                    name,
                    c,
                    &enabled,
                    limits.max_for_each_items,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cache = cache::CacheRules::from_config(&o.cache, &enabled)?;
        let required_servers = o.readiness.resolve(&enabled)?;
        Ok(Self {
            workflows,
            cache,
            limits,
            base_dir: base_dir.to_path_buf(),
            servers,
            disabled,
            listen,
            separator: o.tool_name_separator.clone(),
            filter: ToolFilter::new(&o.allow_tools, &o.deny_tools, "orchestrator")?,
            secrets,
            reload,
            required_servers,
            saga_log: SagaLogSettings {
                path: base_dir.join(
                    o.sagas
                        .log_path
                        .as_deref()
                        .unwrap_or("data/orchestrator/sagas.db"),
                ),
                keep_ended: limits::within_at(
                    o.sagas.keep_ended,
                    &(1..=10_000_000),
                    "orchestrator.sagas.keepEnded",
                )?,
            },
            digest: String::new(),
        })
    }

    /// Replaces every secret value in `text` with `***`.
    pub fn redact(&self, text: &str) -> String {
        redact(&self.secrets, text)
    }
}

/// Replaces each of `secrets` in `text` with `***` (values under 3 characters are left: masking
/// them would garble the text and hide nothing).
pub fn redact(secrets: &[String], text: &str) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.len() >= 3 {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

fn transport_of(
    entry: &ServerEntry,
    path: &str,
    base_dir: &Path,
) -> Result<Transport, ConfigError> {
    let kind = match (entry.transport_type, &entry.command, &entry.url) {
        (Some(TransportType::Stdio), Some(_), _) | (None, Some(_), None) => TransportType::Stdio,
        (Some(TransportType::Http | TransportType::StreamableHttp), _, Some(_))
        | (None, None, Some(_)) => TransportType::Http,
        (Some(TransportType::Stdio), None, _) => {
            return Err(ConfigError::new(
                format!("{path}.command"),
                "a stdio server needs a command",
            ));
        }
        (Some(_), _, None) => {
            return Err(ConfigError::new(
                format!("{path}.url"),
                "an HTTP server needs a url",
            ));
        }
        (None, Some(_), Some(_)) => {
            return Err(ConfigError::new(
                path.to_owned(),
                "has both `command` and `url`; set `type` to say which to use",
            ));
        }
        (None, None, None) => {
            return Err(ConfigError::new(
                path.to_owned(),
                "expected `command` (stdio) or `url` (streamable HTTP)",
            ));
        }
    };
    match kind {
        TransportType::Stdio => {
            let command = entry.command.clone().unwrap_or_default();
            if command.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.command"),
                    "must not be empty",
                ));
            }
            let resolved = if command.contains('/') && Path::new(&command).is_relative() {
                base_dir.join(&command).display().to_string()
            } else {
                command
            };
            let cwd = match &entry.cwd {
                Some(c) if Path::new(c).is_relative() => base_dir.join(c),
                Some(c) => PathBuf::from(c),
                None => base_dir.to_path_buf(),
            };
            Ok(Transport::Stdio {
                command: resolved,
                args: entry.args.clone(),
                env: entry.env.clone(),
                cwd,
            })
        }
        TransportType::Http | TransportType::StreamableHttp => {
            let url = entry.url.clone().unwrap_or_default();
            let parsed: http::Uri = url
                .parse()
                .map_err(|e| ConfigError::new(format!("{path}.url"), format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
                return Err(ConfigError::new(
                    format!("{path}.url"),
                    "expected an http:// or https:// URL with a host",
                ));
            }
            for name in entry.headers.keys() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(ConfigError::new(
                        format!("{path}.headers.{name}"),
                        "not a valid HTTP header name",
                    ));
                }
            }
            Ok(Transport::Http {
                url,
                headers: entry.headers.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/mcp"), &|v| {
            (v == "TOKEN").then(|| "sekrit".to_owned())
        })
    }

    #[test]
    fn claude_desktop_style_entries_parse() {
        let c = parse(
            r#"{ "mcpServers": {
                "sql": { "command": "./bin/sql", "args": ["--data-dir", "x"], "env": { "A": "1" } },
                "web": { "type": "http", "url": "http://127.0.0.1:9/mcp", "headers": { "Authorization": "Bearer ${env:TOKEN}" } },
                "off": { "command": "nope", "disabled": true }
            } }"#,
        )
        .expect("valid");
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.disabled, ["off"]);
        match &c.servers[0].transport {
            Transport::Stdio { command, cwd, .. } => {
                assert_eq!(command, "/etc/mcp/./bin/sql");
                assert_eq!(cwd, Path::new("/etc/mcp"));
            }
            other => panic!("{other:?}"),
        }
        match &c.servers[1].transport {
            Transport::Http { headers, .. } => {
                assert_eq!(headers["Authorization"], "Bearer sekrit")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.redact("token is sekrit"), "token is ***");
        assert_eq!(c.separator, "__");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn errors_name_the_json_path_and_what_was_expected() {
        let cases = [
            (
                r#"{ "mcpServers": { "sql": { "command": "x", "args": ["a", 1] } } }"#,
                "mcpServers.sql.args[1]",
                "expected a string",
            ),
            (
                r#"{ "mcpServers": { "sql": { "comand": "x" } } }"#,
                "mcpServers.sql.comand",
                "unknown field `comand`",
            ),
            (
                r#"{ "mcpServers": { "sql": {} } }"#,
                "mcpServers.sql",
                "expected `command`",
            ),
            (
                r#"{ "mcpServers": { "w": { "type": "http" } } }"#,
                "mcpServers.w.url",
                "needs a url",
            ),
            (
                r#"{ "mcpServers": { "w": { "url": "ftp://x/y" } } }"#,
                "mcpServers.w.url",
                "http://",
            ),
            (
                r#"{ "mcpServers": { "a b": { "command": "x" } } }"#,
                "mcpServers.a b",
                "server names",
            ),
            (
                r#"{ "mcpServers": { "w": { "url": "http://h/${env:MISSING}" } } }"#,
                "mcpServers.w.url",
                "MISSING",
            ),
            (
                r#"{ "orchestrator": { "listen": "nowhere" } }"#,
                "orchestrator.listen",
                "PORT",
            ),
            (
                r#"{ "orchestrator": { "toolNameSeparator": "." } }"#,
                "orchestrator.toolNameSeparator",
                "expected",
            ),
            (
                r#"{ "orchestrator": { "servers": { "ghost": {} } } }"#,
                "orchestrator.servers.ghost",
                "no server",
            ),
            (
                r#"{ "mcpServers": { "s": { "command": "x" } }, "orchestrator": { "servers": { "s": { "prefix": "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp" } } } }"#,
                "orchestrator.servers.s.prefix",
                "64",
            ),
            (
                r#"{ "mcpServers": { "s": { "command": "x" } }, "orchestrator": { "servers": { "s": { "denyTools": ["[bad"] } } } }"#,
                "orchestrator.servers.s.denyTools[0]",
                "invalid glob",
            ),
            (r#"{ "mcpServers": [] }"#, "mcpServers", "expected a map"),
            (
                r#"{ "orchestrator": { "limits": { "maxResultBytes": 0 } } }"#,
                "orchestrator.limits.maxResultBytes",
                "must be 1024-",
            ),
            (
                r#"{ "orchestrator": { "limits": { "maxResultByte": 9000 } } }"#,
                "orchestrator.limits.maxResultByte",
                "unknown field",
            ),
            (
                r#"{ "orchestrator": { "sagas": { "keepEnded": 0 } } }"#,
                "orchestrator.sagas.keepEnded",
                "must be 1-10000000, got 0",
            ),
            (
                r#"{ "orchestrator": { "sagas": { "keepEnded": -1 } } }"#,
                "orchestrator.sagas.keepEnded",
                "invalid value",
            ),
        ];
        for (text, path, message) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.path, path, "{text}: {err}");
            assert!(err.message.contains(message), "{text}: {err}");
        }
        let syntax = parse("{ nope").expect_err("syntax");
        assert!(syntax.message.contains("line 1"), "{syntax}");
    }

    #[test]
    fn filters_allow_then_deny() {
        let f = ToolFilter::new(
            &["get_*".into(), "query".into()],
            &["get_secret*".into()],
            "x",
        )
        .expect("globs");
        assert!(f.keeps("get_customer"));
        assert!(f.keeps("query"));
        assert!(!f.keeps("get_secret_key"));
        assert!(!f.keeps("create_order"));
        assert!(ToolFilter::all().keeps("anything"));
    }
}
