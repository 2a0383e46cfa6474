//! Collected OpenTelemetry metrics in the Prometheus text exposition format 0.0.4, for
//! `GET /metrics`.
//!
//! Names follow the OpenTelemetry-to-Prometheus conventions: characters outside `[a-zA-Z0-9_:]`
//! (the dots of `mcp.orchestrator.upstream.calls`) become `_`, the unit is appended as a word
//! (`s` → `_seconds`; annotations such as `{call}` add nothing) and counters end in `_total`.
//! Monotonic sums are counters; other sums and gauges are gauges; explicit-bucket histograms are
//! histograms with cumulative `le` buckets, `_sum` and `_count`. Exponential histograms have no
//! 0.0.4 form and are left out (the orchestrator records none).

use std::{collections::BTreeMap, fmt::Write as _};

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A series' labels, sorted by name.
type Labels = Vec<(String, String)>;

/// One metric family: its `# TYPE`, `# HELP` and the sample lines of each series, kept by labels
/// so the output is in a stable order (the SDK reports data points in no particular order).
struct Family {
    kind: &'static str,
    help: String,
    series: BTreeMap<Labels, String>,
}

/// Renders every metric of `collected`, families sorted by name.
pub fn encode(collected: &ResourceMetrics) -> String {
    // Keyed by the exposed name, so a family reported by two scopes is written once.
    let mut families = BTreeMap::new();
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => add(&mut families, metric, data),
                AggregatedMetrics::U64(data) => add(&mut families, metric, data),
                AggregatedMetrics::I64(data) => add(&mut families, metric, data),
            }
        }
    }
    let mut out = String::new();
    for (name, family) in &families {
        if !family.help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        }
        let _ = writeln!(out, "# TYPE {name} {}", family.kind);
        for lines in family.series.values() {
            out.push_str(lines);
        }
    }
    out
}

/// A sample value as the format writes it.
trait SampleValue: Copy {
    fn text(self) -> String;
}

impl SampleValue for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl SampleValue for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl SampleValue for f64 {
    fn text(self) -> String {
        float(self)
    }
}

fn add<T: SampleValue>(
    families: &mut BTreeMap<String, Family>,
    metric: &Metric,
    data: &MetricData<T>,
) {
    let base = base_name(metric.name(), metric.unit());
    let (name, kind) = match data {
        MetricData::Sum(sum) if sum.is_monotonic() => (with_suffix(base, "_total"), "counter"),
        MetricData::Sum(_) | MetricData::Gauge(_) => (base, "gauge"),
        MetricData::Histogram(_) => (base, "histogram"),
        MetricData::ExponentialHistogram(_) => return,
    };
    let family = families.entry(name.clone()).or_insert_with(|| Family {
        kind,
        help: metric.description().to_owned(),
        series: BTreeMap::new(),
    });
    if family.kind != kind {
        // Two instruments of different kinds under one exposed name: the format allows one.
        return;
    }
    let series = &mut family.series;
    match data {
        MetricData::Sum(sum) => {
            for point in sum.data_points() {
                let labels = labels(point.attributes());
                let out = series.entry(labels.clone()).or_default();
                sample(out, &name, &labels, None, point.value().text());
            }
        }
        MetricData::Gauge(gauge) => {
            for point in gauge.data_points() {
                let labels = labels(point.attributes());
                let out = series.entry(labels.clone()).or_default();
                sample(out, &name, &labels, None, point.value().text());
            }
        }
        MetricData::Histogram(histogram) => {
            let bucket = format!("{name}_bucket");
            for point in histogram.data_points() {
                let labels = labels(point.attributes());
                let out = series.entry(labels.clone()).or_default();
                // OpenTelemetry counts per bucket; Prometheus buckets count everything ≤ `le`.
                let mut cumulative = 0u64;
                for (bound, count) in point.bounds().zip(point.bucket_counts()) {
                    cumulative += count;
                    let le = float(bound);
                    sample(out, &bucket, &labels, Some(&le), cumulative.to_string());
                }
                let count = point.count().to_string();
                sample(out, &bucket, &labels, Some("+Inf"), count.clone());
                sample(
                    out,
                    &format!("{name}_sum"),
                    &labels,
                    None,
                    point.sum().text(),
                );
                sample(out, &format!("{name}_count"), &labels, None, count);
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// Writes `name{labels,le="…"} value`.
fn sample(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    le: Option<&str>,
    value: String,
) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let le = le.map(|le| ("le".to_owned(), le.to_owned()));
        for (key, value) in labels.iter().chain(le.as_ref()) {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{key}=\"{}\"", escape_label_value(value));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&value);
    out.push('\n');
}

/// Attributes as sorted, sanitized label pairs.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Labels {
    let mut labels: Labels = attributes
        .map(|kv| {
            (
                sanitize(kv.key.as_str(), false),
                kv.value.as_str().into_owned(),
            )
        })
        .collect();
    labels.sort();
    labels
}

/// The exposed name of an instrument: sanitized, with its unit as a suffix.
fn base_name(name: &str, unit: &str) -> String {
    let name = sanitize(name, true);
    match unit_word(unit) {
        Some(unit) => with_suffix(name, &format!("_{unit}")),
        None => name,
    }
}

fn with_suffix(mut name: String, suffix: &str) -> String {
    if !name.ends_with(suffix) {
        name.push_str(suffix);
    }
    name
}

/// The word a UCUM unit becomes in a name; `None` for no unit, dimensionless `1` and
/// annotations such as `{call}`.
fn unit_word(unit: &str) -> Option<String> {
    let unit = unit.trim();
    if unit.is_empty() || unit == "1" || unit.starts_with('{') {
        return None;
    }
    let word = match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "%" => "percent",
        other => return Some(sanitize(&other.replace('/', "_per_"), false)),
    };
    Some(word.to_owned())
}

/// Replaces characters a name may not hold with `_` (colons only allowed in metric names), folds
/// runs of `_`, and prefixes a leading digit.
fn sanitize(raw: &str, colons: bool) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    if raw.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':') {
            c
        } else {
            '_'
        };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// A float as the format writes it: `+Inf`, `-Inf`, `NaN`, else the shortest exact decimal.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

/// A label value between double quotes: backslash, double quote and line feed are escaped.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: backslash and line feed are escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, reader::MetricReader as _};

    use super::*;
    use crate::metrics::PullReader;

    /// A provider whose metrics `render` encodes.
    fn provider() -> (SdkMeterProvider, impl Fn() -> String) {
        let reader = PullReader(std::sync::Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        let render = move || {
            let mut collected = ResourceMetrics::default();
            reader.collect(&mut collected).expect("collected");
            encode(&collected)
        };
        (provider, render)
    }

    #[test]
    fn a_counter_is_a_total_with_help_type_and_sorted_labels() {
        let (provider, render) = provider();
        let calls = provider
            .meter("test")
            .u64_counter("mcp.test.calls")
            .with_description("Calls made")
            .with_unit("{call}")
            .build();
        let labels = [KeyValue::new("tool", "a"), KeyValue::new("server", "sql")];
        calls.add(2, &labels);
        calls.add(1, &labels);
        calls.add(
            5,
            &[KeyValue::new("server", "rest"), KeyValue::new("tool", "b")],
        );
        let expected = [
            "# HELP mcp_test_calls_total Calls made",
            "# TYPE mcp_test_calls_total counter",
            "mcp_test_calls_total{server=\"rest\",tool=\"b\"} 5",
            "mcp_test_calls_total{server=\"sql\",tool=\"a\"} 3",
        ];
        assert_eq!(render(), expected.map(|l| format!("{l}\n")).concat());
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_a_sum_and_a_count_and_its_unit_in_the_name() {
        let (provider, render) = provider();
        let latency = provider
            .meter("test")
            .f64_histogram("mcp.test.duration")
            .with_description("Latency")
            .with_unit("s")
            .with_boundaries(vec![0.1, 1.0])
            .build();
        for v in [0.05, 0.5, 0.7, 3.0] {
            latency.record(v, &[KeyValue::new("server", "sql")]);
        }
        let expected = [
            "# HELP mcp_test_duration_seconds Latency",
            "# TYPE mcp_test_duration_seconds histogram",
            "mcp_test_duration_seconds_bucket{server=\"sql\",le=\"0.1\"} 1",
            "mcp_test_duration_seconds_bucket{server=\"sql\",le=\"1\"} 3",
            "mcp_test_duration_seconds_bucket{server=\"sql\",le=\"+Inf\"} 4",
            "mcp_test_duration_seconds_sum{server=\"sql\"} 4.25",
            "mcp_test_duration_seconds_count{server=\"sql\"} 4",
        ];
        assert_eq!(render(), expected.map(|l| format!("{l}\n")).concat());
    }

    #[test]
    fn label_values_and_help_are_escaped_and_names_sanitized() {
        let (provider, render) = provider();
        let meter = provider.meter("test");
        let gauge = meter
            .i64_up_down_counter("mcp.test.in-flight")
            .with_description("Line one\nback\\slash")
            .build();
        gauge.add(
            -2,
            &[KeyValue::new("odd.key", "quote \" back \\ new\nline")],
        );
        let level = meter.f64_gauge("mcp.test.level").build();
        level.record(1.5, &[]);
        let text = render();
        assert!(
            text.contains("# HELP mcp_test_in_flight Line one\\nback\\\\slash\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE mcp_test_in_flight gauge\n"), "{text}");
        assert!(
            text.contains("mcp_test_in_flight{odd_key=\"quote \\\" back \\\\ new\\nline\"} -2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE mcp_test_level gauge\nmcp_test_level 1.5\n"),
            "{text}"
        );
    }

    #[test]
    fn units_become_words_and_names_and_floats_take_the_format_s_spelling() {
        assert_eq!(base_name("a.b", "ms"), "a_b_milliseconds");
        assert_eq!(base_name("a.b", "By/s"), "a_b_By_per_s");
        assert_eq!(base_name("a.b", "{request}"), "a_b");
        assert_eq!(base_name("a.b_seconds", "s"), "a_b_seconds");
        assert_eq!(with_suffix("x_total".into(), "_total"), "x_total");
        assert_eq!(sanitize("a..b::c", true), "a_b::c");
        assert_eq!(sanitize("a:b", false), "a_b");
        assert_eq!(sanitize("9lives", true), "_9lives");
        assert_eq!(float(1.0), "1");
        assert_eq!(float(0.0025), "0.0025");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
    }
}
