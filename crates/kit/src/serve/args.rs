//! The flags every server shares for its transport and its HTTP security.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{DEFAULT_ALLOWED_ORIGINS, HttpLimits};

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A token is compared with what follows `Bearer ` in a header value, trimmed: one that is blank,
/// or holds spaces or control characters, could never be presented (or matches too much).
fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.trim().is_empty() {
        Err("the token must not be blank".into())
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("the token must not contain spaces or control characters".into())
    } else {
        Ok(Secret::new(s))
    }
}

/// Parses `PORT`, `HOST:PORT` or `[V6]:PORT`; a bare port binds 127.0.0.1.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("`{s}` is not PORT, HOST:PORT or [IPV6]:PORT"))
}

/// Transport and HTTP security flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Serve streamable HTTP on ADDR (PORT binds 127.0.0.1) at /mcp instead of stdio.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub http: Option<SocketAddr>,
    /// Bearer token every HTTP request must carry (`Authorization: Bearer TOKEN`).
    #[arg(long, env = "MCP_AUTH_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub token: Option<Secret>,
    /// Browser origins allowed to call the HTTP endpoint (`scheme://host:port`, `:*` for any port);
    /// a request carrying any other Origin gets 403.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_ALLOWED_ORIGINS.map(String::from))]
    pub allowed_origins: Vec<String>,
    /// Host names accepted in the Host header besides the loopback names: the names clients use
    /// to reach this machine (or a proxy in front of it); `*` accepts any. Needed to serve on
    /// every interface (0.0.0.0 or [::]).
    #[arg(long, value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Largest accepted request, in bytes: an HTTP body (larger → 413) or a stdio line (larger →
    /// JSON-RPC -32600, and the line is skipped).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Serve HTTP without sessions: each POST stands alone and answers with JSON.
    #[arg(long)]
    pub stateless: bool,
    /// Allow a non-loopback HTTP bind without `--token` (anyone who can reach it can call tools).
    #[arg(long)]
    pub allow_unauthenticated_remote: bool,
    /// Seconds to let in-flight calls finish after SIGINT/SIGTERM or, over stdio, after stdin
    /// closes; calls still running then are cancelled and the process exits.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// HTTP: milliseconds between SIGINT/SIGTERM and closing the listener, while `/readyz`
    /// already answers 503, so a load balancer's health check takes the instance out of
    /// rotation before connections are refused. 0 (the default) closes at once.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub drain_delay_ms: u64,
    /// What one client may hold of the HTTP front.
    #[command(flatten)]
    pub limits: HttpLimits,
    /// Stdio: requests read and not yet answered, at most. At the limit stdin is not read until
    /// answers go out, so a client that sends without reading cannot grow the process.
    #[arg(
        long,
        default_value_t = 256,
        value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u32).range(1..=1_000_000),
            |n| n as usize,
        )
    )]
    pub max_pending_requests: usize,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            http: None,
            token: None,
            allowed_origins: DEFAULT_ALLOWED_ORIGINS.map(String::from).to_vec(),
            allowed_hosts: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            stateless: false,
            allow_unauthenticated_remote: false,
            shutdown_grace_secs: 10,
            drain_delay_ms: 0,
            limits: HttpLimits::default(),
            max_pending_requests: 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_forms() {
        assert_eq!(
            parse_listen_addr("8080"),
            Ok("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_listen_addr("localhost:9"),
            Ok("127.0.0.1:9".parse().expect("addr"))
        );
        assert_eq!(
            parse_listen_addr("0.0.0.0:80"),
            Ok("0.0.0.0:80".parse().expect("addr"))
        );
        assert!(parse_listen_addr("nope").is_err());
    }

    #[test]
    fn blank_or_spaced_tokens_are_refused() {
        assert!(parse_secret(" ").is_err());
        assert!(parse_secret("\t").is_err());
        assert!(parse_secret("a b").is_err());
        assert!(parse_secret("abc\n").is_err());
        assert!(parse_secret("s3cr3t-Token_1.~+/=").is_ok());
    }

    #[test]
    fn secret_is_not_printed() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
