//! The size of a value as compact JSON, measured without building the text: limits on what is
//! sent or returned (an upstream request, a tool result, a SQL result) check it before a large
//! message is ever held twice.

use serde::Serialize;

/// Counts bytes written and keeps none.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Size of `value` serialized as compact JSON; a value that fails to serialize counts as too
/// big to pass unexamined (`usize::MAX`).
pub fn serialized_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// Longest text serde_json writes for a number (`-1.7976931348623157e308`).
const MAX_NUMBER_LEN: usize = 24;

/// Most bytes one byte of a string can take inside a JSON string literal (`\u001f`).
const MAX_ESCAPED_BYTE: usize = 6;

/// Most bytes `s` can take as a JSON string literal, from its length alone.
pub fn string_bound(s: &str) -> usize {
    s.len().saturating_mul(MAX_ESCAPED_BYTE).saturating_add(2)
}

/// A size `value` cannot exceed as compact JSON, found by walking it without formatting
/// anything: each string byte counted as its longest escape, each number as the longest number.
/// A limit well above a value's size is checked at a fraction of the cost of
/// [`serialized_len`]; only a value whose bound is over the limit needs the exact count.
pub fn upper_bound(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => MAX_NUMBER_LEN,
        Value::String(s) => string_bound(s),
        // Brackets, and a comma after each element.
        Value::Array(items) => items
            .iter()
            .fold(2, |n, v| n.saturating_add(upper_bound(v)).saturating_add(1)),
        // Braces, and per entry its key, a colon and a comma.
        Value::Object(map) => map.iter().fold(2, |n, (k, v)| {
            n.saturating_add(string_bound(k))
                .saturating_add(upper_bound(v))
                .saturating_add(2)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_never_below_the_size() {
        let values = [
            serde_json::json!(null),
            serde_json::json!([true, false, -1.7976931348623157e308_f64, u64::MAX, i64::MIN]),
            serde_json::json!({"\u{1f}\"\\": "\n\r\t\u{0}\u{8}\u{c}é✓𝄞", "": [], "o": {}}),
            serde_json::json!({"a": [{"b": [1, 2.5, "x"]}, null], "long": "x".repeat(1000)}),
        ];
        for v in values {
            assert!(upper_bound(&v) >= serialized_len(&v), "{v}");
        }
    }

    #[test]
    fn counts_what_serde_json_writes() {
        let v = serde_json::json!({ "a": [1, "x\n"], "b": null });
        assert_eq!(
            serialized_len(&v),
            serde_json::to_vec(&v).expect("json").len()
        );
    }
}
