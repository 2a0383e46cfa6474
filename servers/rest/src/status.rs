//! The one place where the REST API's answers become the workspace's error convention.
//!
//! | API answer | `errorKind` | retryable |
//! |---|---|---|
//! | 400, 422 and other 4xx not listed | `invalid` | no |
//! | 404, 410 | `not_found` | no |
//! | 409, 412 | `conflict` | no |
//! | 429 | `throttled` (`retryAfterMs` from `Retry-After`) | yes |
//! | 408, 502, 503, 504 | `unavailable` (`retryAfterMs` from `Retry-After`) | yes |
//! | 401, 403, 3xx, 500 and other 5xx, an unreadable body | `internal` | no |
//! | connection refused, timeout, connection lost mid-answer | `unavailable` | yes |
//!
//! 401/403 and redirects are `internal`: they mean this server is misconfigured (credentials, base
//! URL), which neither the caller's arguments nor a retry can fix. Every error also carries
//! `httpStatus` in `_meta` when the API answered, and the API's `code` and `details` (as
//! `apiCode`, `details`) when its body has them: a 409 `insufficient_stock` names the product and
//! the units available there.

use chrono::{DateTime, Utc};
use http::{HeaderValue, StatusCode};
use kit::{ErrorKind, ToolError};

/// Longest wait accepted from `Retry-After`; a larger value is capped rather than trusted.
pub const MAX_RETRY_AFTER_MS: u64 = 10 * 60 * 1000;

/// `_meta` key with the HTTP status the API answered.
pub const META_HTTP_STATUS: &str = "httpStatus";

/// `_meta` key with the API's stable error code (`insufficient_stock`, `conflict`, ...).
pub const META_API_CODE: &str = "apiCode";

/// `_meta` key with the API's machine-readable error details.
pub const META_DETAILS: &str = "details";

/// How a request failed before the API answered with a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// Nothing listens at the base URL, or the connection could not be made.
    Connect,
    /// The connect or request timeout expired.
    Timeout,
    /// The connection broke while sending or receiving.
    Interrupted,
}

impl TransportFailure {
    /// Classifies a reqwest error.
    pub fn of(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            TransportFailure::Timeout
        } else if error.is_connect() {
            TransportFailure::Connect
        } else {
            TransportFailure::Interrupted
        }
    }
}

/// The tool error for a request that got no HTTP answer; `detail` names the endpoint and cause.
pub fn from_transport(failure: TransportFailure, detail: &str) -> ToolError {
    let what = match failure {
        TransportFailure::Connect => "cannot connect to the REST API",
        TransportFailure::Timeout => "the REST API did not answer in time",
        TransportFailure::Interrupted => "the connection to the REST API broke",
    };
    ToolError::unavailable(format!("{what}: {detail}")).with_retryable(true)
}

/// The error kind for a non-success HTTP status.
pub fn kind_of(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        404 | 410 => ErrorKind::NotFound,
        409 | 412 => ErrorKind::Conflict,
        429 => ErrorKind::Throttled,
        408 | 502..=504 => ErrorKind::Unavailable,
        401 | 403 => ErrorKind::Internal,
        400..=499 => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    }
}

/// The tool error for a non-success answer of the API.
///
/// `body` is the answer's body: the API's own message (`{"error": {"message"}}`) is quoted when
/// present. `now` resolves a `Retry-After` given as an HTTP date.
pub fn from_status(
    status: StatusCode,
    retry_after: Option<&HeaderValue>,
    body: &[u8],
    endpoint: &str,
    now: DateTime<Utc>,
) -> ToolError {
    let kind = kind_of(status);
    let reason = api_message(body).unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned()
    });
    let mut error = ToolError::new(
        kind,
        format!(
            "the REST API answered {} for {endpoint}: {reason}",
            status.as_u16()
        ),
    )
    .with_meta(META_HTTP_STATUS, status.as_u16().into());
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(code) = value.pointer("/error/code").and_then(|c| c.as_str()) {
            // Untrusted text on its way to an agent: keep it short.
            error = error.with_meta(
                META_API_CODE,
                code.chars().take(64).collect::<String>().into(),
            );
        }
        if let Some(details) = value.pointer("/error/details").filter(|d| d.is_object()) {
            error = error.with_meta(META_DETAILS, details.clone());
        }
    }
    if kind.retryable_by_default()
        && let Some(ms) = retry_after.and_then(|v| retry_after_ms(v, now))
    {
        error = error.with_retry_after_ms(ms);
    }
    error
}

/// Reads `Retry-After` (delay in seconds, or an HTTP date) as milliseconds from `now`, capped at
/// [`MAX_RETRY_AFTER_MS`]; `None` when it is neither.
pub fn retry_after_ms(value: &HeaderValue, now: DateTime<Utc>) -> Option<u64> {
    let text = value.to_str().ok()?.trim();
    let ms = if let Ok(secs) = text.parse::<u64>() {
        secs.saturating_mul(1000)
    } else {
        let at = DateTime::parse_from_rfc2822(text).ok()?.with_timezone(&Utc);
        u64::try_from((at - now).num_milliseconds()).unwrap_or(0)
    };
    Some(ms.min(MAX_RETRY_AFTER_MS))
}

/// The API's message from an error body, if the body has the API's error shape (or a flat
/// `message`/`error` string, as other deployments may send).
fn api_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value
        .pointer("/error/message")
        .or_else(|| value.get("message"))
        .or_else(|| value.get("error"))?
        .as_str()?;
    // An error body is untrusted text on its way to an agent: keep it short.
    Some(message.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .expect("valid date")
    }

    fn map(status: u16, retry_after: Option<&'static str>, body: &str) -> ToolError {
        let status = StatusCode::from_u16(status).expect("status");
        let header = retry_after.map(HeaderValue::from_static);
        from_status(status, header.as_ref(), body.as_bytes(), "GET /x", now())
    }

    #[test]
    fn client_faults_are_not_retryable() {
        for (status, kind) in [
            (400, ErrorKind::Invalid),
            (422, ErrorKind::Invalid),
            (414, ErrorKind::Invalid),
            (404, ErrorKind::NotFound),
            (410, ErrorKind::NotFound),
            (409, ErrorKind::Conflict),
        ] {
            let e = map(status, Some("5"), "");
            assert_eq!(e.kind, kind, "{status}");
            assert!(!e.retryable, "{status}");
            assert_eq!(e.retry_after_ms, None, "no wait hint on {status}");
            assert_eq!(e.extra_meta[META_HTTP_STATUS], status);
        }
    }

    #[test]
    fn throttling_and_outages_are_retryable_with_the_servers_wait() {
        let e = map(429, Some("2"), "");
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert!(e.retryable);
        assert_eq!(e.retry_after_ms, Some(2000));

        let e = map(503, Some("1"), "");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.retryable);
        assert_eq!(e.retry_after_ms, Some(1000));

        let e = map(503, None, "");
        assert_eq!(
            (e.kind, e.retryable, e.retry_after_ms),
            (ErrorKind::Unavailable, true, None)
        );
        let e = map(429, None, "");
        assert_eq!(
            (e.kind, e.retryable, e.retry_after_ms),
            (ErrorKind::Throttled, true, None)
        );
        for status in [408, 502, 504] {
            let e = map(status, None, "");
            assert_eq!(e.kind, ErrorKind::Unavailable, "{status}");
            assert!(e.retryable);
        }
    }

    #[test]
    fn misconfiguration_and_server_bugs_are_internal() {
        for status in [401, 403, 500, 501, 507, 301, 302] {
            let e = map(status, Some("3"), "");
            assert_eq!(e.kind, ErrorKind::Internal, "{status}");
            assert!(!e.retryable);
            assert_eq!(e.retry_after_ms, None);
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let v = HeaderValue::from_static;
        assert_eq!(retry_after_ms(&v("0"), now()), Some(0));
        assert_eq!(retry_after_ms(&v(" 7 "), now()), Some(7000));
        assert_eq!(
            retry_after_ms(&v("Fri, 02 Jan 2026 03:04:35 GMT"), now()),
            Some(30_000)
        );
        // A date in the past means "now".
        assert_eq!(
            retry_after_ms(&v("Thu, 01 Jan 2026 00:00:00 GMT"), now()),
            Some(0)
        );
        assert_eq!(
            retry_after_ms(&v("999999"), now()),
            Some(MAX_RETRY_AFTER_MS)
        );
        assert_eq!(retry_after_ms(&v("soon"), now()), None);
        assert_eq!(retry_after_ms(&v("-1"), now()), None);
    }

    #[test]
    fn the_apis_code_and_details_are_passed_on() {
        let body = r#"{"error":{"status":409,"code":"insufficient_stock","message":"short","details":{"productId":"PROD-002","requested":9,"available":3}}}"#;
        let e = map(409, None, body);
        assert_eq!((e.kind, e.retryable), (ErrorKind::Conflict, false));
        assert_eq!(e.extra_meta[META_API_CODE], "insufficient_stock");
        assert_eq!(e.extra_meta[META_DETAILS]["available"], 3);
        let e = map(404, None, r#"{"message":"bad id"}"#);
        assert!(!e.extra_meta.contains_key(META_DETAILS));
    }

    #[test]
    fn the_apis_message_is_quoted() {
        let body = r#"{"error":{"status":404,"code":"not_found","message":"product `PROD-999` does not exist"}}"#;
        let e = map(404, None, body);
        assert!(e.message.contains("404"), "{}", e.message);
        assert!(e.message.contains("product `PROD-999` does not exist"));
        let e = map(400, None, r#"{"message":"bad id"}"#);
        assert!(e.message.ends_with("bad id"));
        let e = map(503, None, "<html>down</html>");
        assert!(e.message.ends_with("Service Unavailable"), "{}", e.message);
    }

    #[test]
    fn transport_failures_are_unavailable_and_retryable() {
        for f in [
            TransportFailure::Connect,
            TransportFailure::Timeout,
            TransportFailure::Interrupted,
        ] {
            let e = from_transport(f, "GET http://127.0.0.1:1/inventory");
            assert_eq!(e.kind, ErrorKind::Unavailable);
            assert!(e.retryable);
            assert!(e.message.contains("127.0.0.1:1"));
        }
    }

    #[tokio::test]
    async fn reqwest_errors_are_classified() {
        // A port that was free a moment ago: connecting is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let err = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("nothing listens");
        assert_eq!(TransportFailure::of(&err), TransportFailure::Connect);

        // A listener that accepts but never answers: the request times out.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let conn = silent.accept().await;
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            drop(conn);
        });
        let err = reqwest::Client::new()
            .get(format!("http://{addr}/"))
            .timeout(std::time::Duration::from_millis(100))
            .send()
            .await
            .expect_err("no answer");
        assert_eq!(TransportFailure::of(&err), TransportFailure::Timeout);
        hold.abort();
    }
}
