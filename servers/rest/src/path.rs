//! Request URLs built from the configured base URL and tool arguments, so an argument can never
//! make this server call anything but that base URL.
//!
//! Arguments become single path segments: each is checked (not empty, not `.` or `..`, which URL
//! normalisation would silently drop or resolve, no control characters, bounded length) and then
//! percent-encoded, `/`, `?`, `#` and `%` included. `../health` becomes the one segment
//! `..%2Fhealth`, and `http://evil` the one segment `http:%2F%2Fevil`, both under the base path.

use kit::{ToolError, ToolFailure};
use reqwest::Url;

/// Longest argument accepted as a path segment.
pub const MAX_SEGMENT_LEN: usize = 128;

/// Checks that `value` (the argument `field`) can be sent as one path segment.
pub fn segment<'a>(field: &str, value: &'a str) -> Result<&'a str, ToolFailure> {
    let problem = if value.is_empty() {
        Some("must not be empty".to_owned())
    } else if value == "." || value == ".." {
        Some(format!("`{value}` is not an id"))
    } else if value.chars().count() > MAX_SEGMENT_LEN {
        Some(format!("must be at most {MAX_SEGMENT_LEN} characters"))
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    };
    match problem {
        Some(message) => Err(ToolFailure::invalid_params(field, message)),
        None => Ok(value),
    }
}

/// Parses and checks a `--base-url`: http or https, a host, no query, fragment or credentials.
pub fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{s}` must be an http:// or https:// URL"));
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        return Err(format!("`{s}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{s}` must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{s}` must not carry credentials (they would be logged)"
        ));
    }
    Ok(url)
}

/// `base` with `segments` appended, each percent-encoded as one segment.
///
/// Segments must have passed [`segment`] (or be literals of this crate). Fails only for a base
/// URL that [`parse_base_url`] would have refused.
pub fn endpoint(base: &Url, segments: &[&str]) -> Result<Url, ToolError> {
    let mut url = base.clone();
    {
        let mut path = url.path_segments_mut().map_err(|()| {
            ToolError::internal(format!("the base URL `{base}` cannot take a path"))
        })?;
        // `http://host/api/` and `http://host/api` mean the same prefix.
        path.pop_if_empty();
        path.extend(segments);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        parse_base_url("http://127.0.0.1:8090").expect("base")
    }

    #[test]
    fn ids_become_single_encoded_segments() {
        let url = endpoint(&base(), &["products", "PROD-001"]).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:8090/products/PROD-001");
        let url = endpoint(&base(), &["products", "../health"]).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:8090/products/..%2Fhealth");
        let url = endpoint(&base(), &["products", "http://evil.example/x"]).expect("url");
        assert_eq!(url.host_str(), Some("127.0.0.1"));
        assert_eq!(url.port(), Some(8090));
        assert_eq!(url.path(), "/products/http:%2F%2Fevil.example%2Fx");
        let url = endpoint(&base(), &["products", "a?b=1#c"]).expect("url");
        assert_eq!(url.query(), None);
        assert_eq!(url.fragment(), None);
        assert_eq!(url.path(), "/products/a%3Fb=1%23c");
        // Already-encoded dots stay literal: the server decodes once, to `%2e%2e`.
        let url = endpoint(&base(), &["products", "%2e%2e"]).expect("url");
        assert_eq!(url.path(), "/products/%252e%252e");
        let url = endpoint(&base(), &["products", "\\..\\x"]).expect("url");
        assert_eq!(url.path_segments().map(|s| s.count()), Some(2));
    }

    #[test]
    fn a_base_path_is_kept_as_prefix() {
        for b in ["http://127.0.0.1:9/api/v1", "http://127.0.0.1:9/api/v1/"] {
            let base = parse_base_url(b).expect("base");
            let url = endpoint(&base, &["stock", "low"]).expect("url");
            assert_eq!(url.as_str(), "http://127.0.0.1:9/api/v1/stock/low");
        }
    }

    #[test]
    fn segments_that_normalisation_would_change_are_refused() {
        for bad in ["", ".", "..", "a\nb", "a\u{0}b"] {
            let err = segment("productId", bad).expect_err(bad);
            assert!(
                matches!(&err, ToolFailure::InvalidParams { field, .. } if field == "productId"),
                "{bad:?}: {err:?}"
            );
        }
        assert!(segment("orderId", &"9".repeat(MAX_SEGMENT_LEN + 1)).is_err());
        assert_eq!(segment("orderId", "ORD-00001").ok(), Some("ORD-00001"));
        // Odd but harmless: encoded as one segment, and the API answers 400 or 404.
        assert!(segment("productId", "../x").is_ok());
        assert!(segment("productId", "...").is_ok());
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(parse_base_url("https://api.example.com/retail").is_ok());
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("not a url").is_err());
        assert!(parse_base_url("http://x/?q=1").is_err());
        assert!(parse_base_url("http://x/#f").is_err());
        assert!(parse_base_url("http://user:pw@x/").is_err());
        assert!(parse_base_url("mailto:a@b").is_err());
    }
}
