//! Continuation tokens for `query_items`: opaque to callers, checked on the way back in.
//!
//! A token carries the offset of the next page and a fingerprint of the query that issued it
//! (container, partition, filter, sort). A token presented with a different query, or one that was
//! edited or truncated, is refused rather than silently returning some other page.

/// Token format version; bump it when the layout changes so old tokens are refused cleanly.
const VERSION: &str = "c1";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this server issued (bad encoding or layout).
    #[error("not a continuation token issued by this server")]
    Malformed,
    /// Issued for another query.
    #[error(
        "this continuation token belongs to a different query (container, partition key, filter and orderBy must not change between pages)"
    )]
    OtherQuery,
}

/// FNV-1a 64 of `text`: a stable fingerprint (std's hasher is seeded per process).
pub fn fingerprint(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The token for the page starting at `offset` of the query fingerprinted `query`.
pub fn encode(offset: u64, query: u64) -> String {
    let plain = format!(
        "{VERSION}:{offset}:{query:016x}:{:04x}",
        check(offset, query)
    );
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The offset carried by `token`, if it was issued for the query fingerprinted `query`.
pub fn decode(token: &str, query: u64) -> Result<u64, TokenError> {
    if !token.len().is_multiple_of(2) || token.len() > 256 {
        return Err(TokenError::Malformed);
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(TokenError::Malformed)?;
    let plain = String::from_utf8(bytes).map_err(|_| TokenError::Malformed)?;
    let mut parts = plain.split(':');
    let (Some(VERSION), Some(offset), Some(issued_for), Some(sum), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    let offset: u64 = offset.parse().map_err(|_| TokenError::Malformed)?;
    let issued_for = u64::from_str_radix(issued_for, 16).map_err(|_| TokenError::Malformed)?;
    let sum = u16::from_str_radix(sum, 16).map_err(|_| TokenError::Malformed)?;
    if sum != check(offset, issued_for) {
        return Err(TokenError::Malformed);
    }
    if issued_for != query {
        return Err(TokenError::OtherQuery);
    }
    Ok(offset)
}

/// A short checksum so an edited offset is caught rather than served.
fn check(offset: u64, query: u64) -> u16 {
    (fingerprint(&format!("{offset}/{query}")) & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let q = fingerprint("userEvents|CUST-0001|filter");
        let token = encode(200, q);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(decode(&token, q), Ok(200));
    }

    #[test]
    fn tokens_are_tied_to_their_query() {
        let token = encode(100, fingerprint("a"));
        assert_eq!(
            decode(&token, fingerprint("b")),
            Err(TokenError::OtherQuery)
        );
    }

    #[test]
    fn garbage_and_edits_are_refused() {
        let q = fingerprint("a");
        for bad in ["", "zz", "abc", "not a token", &"00".repeat(200)] {
            assert_eq!(decode(bad, q), Err(TokenError::Malformed), "{bad:?}");
        }
        // Re-encode a token with an edited offset but the old checksum.
        let token = encode(100, q);
        let bytes: Vec<u8> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16).expect("hex"))
            .collect();
        let plain = String::from_utf8(bytes)
            .expect("utf8")
            .replace(":100:", ":900:");
        let forged: String = plain.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decode(&forged, q), Err(TokenError::Malformed));
    }
}
