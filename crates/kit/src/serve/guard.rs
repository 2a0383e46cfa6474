//! The Host and Origin checks, applied to every route of the HTTP front alike (`/mcp`,
//! `/metrics`, anything mounted beside them): a page a browser loaded from elsewhere must not
//! reach any of them, through a foreign Origin or a DNS-rebound Host.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::Response,
};

use super::{FrontLimit, FrontStats, refusal::refuse};

/// What the guard lets through.
#[derive(Debug)]
pub(super) struct Guard {
    /// Lower-case host names (no port); `None` accepts any Host.
    hosts: Option<Vec<String>>,
    origins: Vec<OriginPattern>,
    stats: Arc<FrontStats>,
}

/// One allowed origin: `scheme://host[:port]`, the port `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OriginPattern {
    scheme: String,
    host: String,
    /// `None` for any port.
    port: Option<u16>,
}

/// An allowed origin that is not `scheme://host[:port|*]`.
#[derive(Debug, thiserror::Error)]
#[error("allowed origin `{0}` is not scheme://host[:port] (`:*` for any port)")]
pub struct BadOriginPattern(pub String);

impl OriginPattern {
    pub(super) fn parse(s: &str) -> Result<Self, BadOriginPattern> {
        let bad = || BadOriginPattern(s.to_owned());
        let (any_port, text) = match s.strip_suffix(":*") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let origin = Origin::parse(text).ok_or_else(bad)?;
        if any_port && origin.explicit_port {
            return Err(bad());
        }
        Ok(Self {
            scheme: origin.scheme,
            host: origin.host,
            port: (!any_port).then_some(origin.port),
        })
    }

    fn allows(&self, origin: &Origin) -> bool {
        self.scheme == origin.scheme
            && self.host == origin.host
            && self.port.is_none_or(|p| p == origin.port)
    }
}

/// A serialized origin (RFC 6454): a scheme, a host and a port, nothing else.
#[derive(Debug)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
    explicit_port: bool,
}

impl Origin {
    /// Parses `value` as a URL and accepts it only if it is exactly the serialization of its
    /// own origin: user info (`http://evil.com@127.0.0.1`), a path (`http://127.0.0.1:1/../`),
    /// a query or a fragment make it something a browser never sends, so it is refused rather
    /// than trimmed into an allowed one.
    fn parse(value: &str) -> Option<Self> {
        let url = url::Url::parse(value).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        let serialized = url.origin().ascii_serialization();
        if !serialized.eq_ignore_ascii_case(value) {
            return None;
        }
        let host = match url.host()? {
            url::Host::Domain(d) => d.to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        Some(Self {
            scheme: url.scheme().to_owned(),
            host,
            port: url.port_or_known_default()?,
            explicit_port: url.port().is_some(),
        })
    }
}

impl Guard {
    /// `hosts` holds `*` to accept any Host.
    pub(super) fn new(
        hosts: &[String],
        origins: &[String],
        stats: Arc<FrontStats>,
    ) -> Result<Self, BadOriginPattern> {
        let hosts = (!hosts.iter().any(|h| h == "*")).then(|| {
            hosts
                .iter()
                .map(|h| strip_brackets(h).to_ascii_lowercase())
                .collect()
        });
        let origins = origins
            .iter()
            .map(|o| OriginPattern::parse(o))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            hosts,
            origins,
            stats,
        })
    }

    fn host_allowed(&self, request: &Request) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        let authority = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        let Some(authority) = authority else {
            return false;
        };
        let Ok(authority) = authority.parse::<http::uri::Authority>() else {
            return false;
        };
        let host = strip_brackets(authority.host()).to_ascii_lowercase();
        hosts.contains(&host)
    }

    /// `Ok` for no Origin (not a browser) or an allowed one.
    fn origin_allowed(&self, request: &Request) -> Result<(), &'static str> {
        let Some(value) = request.headers().get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = value
            .to_str()
            .ok()
            .and_then(Origin::parse)
            .ok_or("malformed Origin header")?;
        if self.origins.iter().any(|p| p.allows(&origin)) {
            Ok(())
        } else {
            Err("Origin not allowed")
        }
    }
}

fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Middleware: 403 for a Host or Origin the guard does not allow, on any route.
pub(super) async fn check(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    if !guard.host_allowed(&request) {
        return refuse(
            &guard.stats,
            FrontLimit::Host,
            StatusCode::FORBIDDEN,
            "Host header not allowed (--allowed-hosts names the hosts this server answers to)"
                .into(),
            None,
            None,
        );
    }
    if let Err(why) = guard.origin_allowed(&request) {
        return refuse(
            &guard.stats,
            FrontLimit::Origin,
            StatusCode::FORBIDDEN,
            format!("{why} (--allowed-origins names the browser origins allowed)"),
            None,
            None,
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(hosts: &[&str], origins: &[&str]) -> Guard {
        Guard::new(
            &hosts.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &origins.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            Arc::default(),
        )
        .expect("valid patterns")
    }

    fn request(host: Option<&str>, origin: Option<&str>) -> Request {
        let mut b = http::Request::builder().uri("/metrics");
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(axum::body::Body::empty()).expect("request")
    }

    #[test]
    fn origins_are_compared_by_scheme_host_and_port_and_tricks_are_refused() {
        let g = guard(
            &["localhost"],
            &["http://127.0.0.1:*", "https://app.example:8443"],
        );
        let ok = |o: &str| g.origin_allowed(&request(None, Some(o))).is_ok();
        assert!(ok("http://127.0.0.1:5173"));
        assert!(ok("http://127.0.0.1"));
        assert!(ok("https://app.example:8443"));
        assert!(ok("HTTPS://APP.EXAMPLE:8443"));
        assert!(!ok("https://app.example"), "another port");
        assert!(!ok("http://app.example:8443"), "another scheme");
        assert!(!ok("http://evil.com@127.0.0.1"), "user info");
        assert!(!ok("http://127.0.0.1:3000/../"), "a path");
        assert!(!ok("http://127.0.0.1:3000/"), "a trailing slash");
        assert!(!ok("http://127.0.0.1.evil.com"), "a longer host");
        assert!(!ok("null"));
        assert!(!ok("http://127.0.0.1:3000?x"));
        assert!(g.origin_allowed(&request(None, None)).is_ok(), "no Origin");
    }

    #[test]
    fn hosts_are_compared_without_port_and_star_accepts_any() {
        let g = guard(&["localhost", "127.0.0.1", "::1"], &[]);
        let ok = |h: Option<&str>| g.host_allowed(&request(h, None));
        assert!(ok(Some("localhost:8080")));
        assert!(ok(Some("LOCALHOST")));
        assert!(ok(Some("[::1]:9")));
        assert!(!ok(Some("evil.example:8080")));
        assert!(!ok(Some("127.0.0.1.nip.io")));
        assert!(!ok(None), "no Host at all");
        let any = guard(&["*"], &[]);
        assert!(any.host_allowed(&request(Some("mcp.internal:80"), None)));
    }

    #[test]
    fn bad_patterns_are_named() {
        assert!(OriginPattern::parse("127.0.0.1:*").is_err());
        assert!(OriginPattern::parse("http://x:1:*").is_err());
        assert!(OriginPattern::parse("http://x/y").is_err());
        assert!(OriginPattern::parse("http://[::1]:*").is_ok());
    }
}
