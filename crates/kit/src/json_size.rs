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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_serde_json_writes() {
        let v = serde_json::json!({ "a": [1, "x\n"], "b": null });
        assert_eq!(
            serialized_len(&v),
            serde_json::to_vec(&v).expect("json").len()
        );
    }
}
