//! The text log's field formatter: every value with its control characters escaped, so that no
//! logged value can start a line of its own.
//!
//! Tool names, resource URIs, arguments and upstream stderr come from clients and servers this
//! process does not control. Written raw, a `\n` in one of them ends the line and lets the rest
//! pose as a line of our own (`2026-01-01T00:00:00Z  INFO ...`), a `\r` rewrites the line on a
//! terminal, and an ANSI escape recolours or hides text. tracing-subscriber's default fields
//! escape ANSI in the message only. Here every field of every event and span goes through one
//! escaping writer, so a value we never thought of is covered as well as the ones we did. (The
//! JSON format needs none of this: JSON strings escape control characters.)

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::{RecordFields, VisitOutput},
    fmt::{
        FormatFields,
        format::{DefaultVisitor, Writer},
    },
};

/// Formats fields as tracing-subscriber's default text format does (`message key=value ...`),
/// with control characters in every value escaped (`\n`, `\r`, `\u{1b}`).
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor(DefaultVisitor::new(writer, true));
        fields.record(&mut visitor);
        visitor.0.finish()
    }
}

/// The default visitor, handed every value behind [`Escaped`].
struct EscapingVisitor<'a>(DefaultVisitor<'a>);

/// Fields that name a span for the OpenTelemetry exporter (`otel.name`, `otel.kind`,
/// `otel.status_code`): a text line already shows the span's name and its own fields, so they
/// are left out of it, which also spares formatting them for every span a call opens.
fn for_exporter_only(field: &Field) -> bool {
    field.name().starts_with("otel.")
}

impl Visit for EscapingVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if for_exporter_only(field) {
            return;
        }
        self.0.record_debug(field, &Escaped(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if for_exporter_only(field) {
            return;
        }
        // Most values hold nothing to escape: they skip the escaping writer.
        let clean = !value.chars().any(needs_escape);
        // The default visitor prints the message as written and other strings quoted.
        if clean {
            self.0.record_str(field, value);
        } else if field.name() == "message" {
            self.0
                .record_debug(field, &Escaped(&format_args!("{value}")));
        } else {
            self.0.record_debug(field, &Escaped(&value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.record_error(field, &EscapedError::of(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.record_i64(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.record_u64(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.record_bool(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.record_f64(field, value);
    }
}

/// A value whose `Debug` output has its control characters escaped.
struct Escaped<'a>(&'a dyn fmt::Debug);

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{:?}", self.0)
    }
}

/// An error and its sources with their messages escaped, so the default visitor can still print
/// the chain as `error error.sources=[..]`.
#[derive(Debug)]
struct EscapedError {
    message: String,
    source: Option<Box<EscapedError>>,
}

impl EscapedError {
    fn of(error: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            message: escape(&error.to_string()),
            source: error.source().map(|s| Box::new(Self::of(s))),
        }
    }
}

impl fmt::Display for EscapedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EscapedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Passes text on with every character that could break or disguise a log line escaped.
struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0;
        for (i, c) in s.char_indices() {
            if !needs_escape(c) {
                continue;
            }
            self.0.write_str(&s[clean..i])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            clean = i + c.len_utf8();
        }
        self.0.write_str(&s[clean..])
    }
}

/// Control characters (C0 but tab, DEL, C1: line breaks, carriage return, ANSI escapes and their
/// 8-bit forms), the Unicode line and paragraph separators, and the bidirectional overrides that
/// can make a line read differently from what it holds.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with [`needs_escape`] characters escaped.
pub fn escape(text: &str) -> String {
    struct Text<'a>(&'a str);
    impl fmt::Display for Text<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            EscapingWriter(f).write_str(self.0)
        }
    }
    Text(text).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Collects what a fmt layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer\nfailure")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner\r\x1b[2Kcause")]
    struct Inner;

    /// Logs one event with hostile values in every kind of field, inside a span with one too.
    fn log_hostile_values(with_escaping: bool) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone());
        let forged = "x\n2026-01-01T00:00:00.000000Z  INFO forged line\r\x1b[31mred";
        let log = || {
            let span = tracing::info_span!("tools/call", gen_ai.tool.name = %forged);
            span.in_scope(|| {
                tracing::info!(
                    display = %forged,
                    debug = ?forged,
                    text = forged,
                    error = &Outer(Inner) as &(dyn std::error::Error + 'static),
                    "message {forged}"
                );
            });
            span.record("gen_ai.tool.name", "late\nvalue");
        };
        if with_escaping {
            let subscriber = tracing_subscriber::registry().with(layer.fmt_fields(EscapedFields));
            tracing::subscriber::with_default(subscriber, log);
        } else {
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, log);
        }
        let bytes = captured.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn no_value_can_break_or_recolour_a_line() {
        let out = log_hostile_values(true);
        assert_eq!(out.matches('\n').count(), 1, "one event, one line: {out}");
        assert!(out.ends_with('\n'), "{out}");
        assert!(
            !out.contains(['\r', '\u{1b}']),
            "no raw carriage return or escape: {out:?}"
        );
        assert!(
            out.contains(
                r"message x\n2026-01-01T00:00:00.000000Z  INFO forged line\r\u{1b}[31mred"
            ),
            "the message is readable, escaped: {out}"
        );
        assert!(out.contains(r"display=x\n2026"), "Display fields: {out}");
        assert!(
            out.contains(r"gen_ai.tool.name=x\n2026"),
            "span fields: {out}"
        );
        assert!(
            out.contains(r"error=outer\nfailure error.sources=[inner\r\u{1b}[2Kcause]"),
            "errors and their sources: {out}"
        );
    }

    #[test]
    fn the_default_fields_let_a_value_forge_a_line() {
        // What the escaping guards against: the same event through the default field formatter.
        let out = log_hostile_values(false);
        assert!(
            out.lines()
                .any(|l| l.starts_with("2026-01-01T00:00:00.000000Z  INFO forged line")),
            "{out}"
        );
    }

    #[test]
    fn escape_keeps_plain_text_and_tabs() {
        assert_eq!(escape("plain\ttext é ✓"), "plain\ttext é ✓");
        assert_eq!(
            escape("a\nb\rc\u{1b}d\u{9b}e\u{2028}f\u{202e}"),
            "a\\nb\\rc\\u{1b}d\\u{9b}e\\u{2028}f\\u{202e}"
        );
    }
}
