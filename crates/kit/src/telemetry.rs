//! Logs to stderr, spans (and a metric reader) for an OTLP collector, and trace continuation
//! from a request's `_meta`.
//!
//! Stdout belongs to the stdio transport, so every log line goes to stderr. Export is opt-in by the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable and never blocks a call: spans are batched on
//! the Tokio runtime and a dead collector only produces warnings.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource, metrics::periodic_reader_with_async_runtime::PeriodicReader,
    propagation::TraceContextPropagator, runtime, trace::SdkTracerProvider,
    trace::span_processor_with_async_runtime::BatchSpanProcessor,
};
use rmcp::model::MetaObject;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::LevelFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from the `OTEL_*` settings.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
}

/// Keeps the exporter alive; call [`TelemetryGuard::shutdown`] before exit to flush spans.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes and stops the exporter; waits at most a few seconds for a slow collector.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let flush = tokio::task::spawn_blocking(move || provider.shutdown());
            match tokio::time::timeout(std::time::Duration::from_secs(5), flush).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "span export did not flush"),
                Ok(Err(e)) => tracing::warn!(error = %e, "span export flush task failed"),
                Err(_) => tracing::warn!("span export flush timed out"),
            }
        }
    }

    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

/// Installs the global subscriber: fmt to stderr (filtered by `RUST_LOG`, default `info`) and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer exporting over OTLP/HTTP.
///
/// `service_name` is used unless `OTEL_SERVICE_NAME` says otherwise. Must run inside a Tokio
/// runtime (the batch exporter runs on it).
pub fn init(service_name: &str, format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    init_with_default(service_name, format, "info,rmcp=warn")
}

/// Like [`init`], with the log filter used when `RUST_LOG` is unset.
pub fn init_with_default(
    service_name: &str,
    format: LogFormat,
    default_filter: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    // The filter sits on the fmt layer only: `RUST_LOG=warn` must quiet the logs without
    // silencing the spans that carry trace ids across processes.
    // Set once the subscriber is installed: the JSON formatter asks it for each line's span
    // context (a dispatcher cannot be looked up from inside its own event dispatch).
    let dispatch = Arc::new(OnceLock::new());
    let env_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(crate::log_fields::EscapedFields)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
                dispatch: dispatch.clone(),
            })
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(env_filter);

    let endpoint_set = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|v| !v.trim().is_empty())
        .unwrap_or(false)
        || std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|v| !v.trim().is_empty())
            .unwrap_or(false);

    let provider = if endpoint_set {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
        Some(
            SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(resource(service_name))
                .build(),
        )
    } else {
        None
    };

    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service_name.to_owned()))
            .with_filter(LevelFilter::INFO)
            // rmcp's own per-message spans would double every span we export.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                !meta.target().starts_with("rmcp")
            }))
    });

    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    tracing::dispatcher::get_default(|d| dispatch.set(d.downgrade()).ok());

    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Ok(TelemetryGuard { provider })
}

/// The resource every exporter of this process reports: `service.name` is `service_name` unless
/// `OTEL_SERVICE_NAME` names the process (the SDK reads that variable itself).
pub fn resource(service_name: &str) -> Resource {
    if std::env::var("OTEL_SERVICE_NAME").is_ok() {
        Resource::builder().build()
    } else {
        Resource::builder()
            .with_service_name(service_name.to_owned())
            .build()
    }
}

/// The metric reader [`otlp_metric_reader`] builds.
pub type OtlpMetricReader = PeriodicReader<opentelemetry_otlp::MetricExporter>;

/// A reader that pushes metrics over OTLP/HTTP, when `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set; `None` otherwise.
///
/// The exporter reads the same `OTEL_EXPORTER_OTLP_*` variables as the span exporter (endpoint,
/// headers, timeout), so one setting sends both signals to one collector; it posts to
/// `/v1/metrics` every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s). Export runs on its own
/// Tokio task and never blocks a call: a slow collector is cut off after
/// `OTEL_METRIC_EXPORT_TIMEOUT` ms and a failed export is dropped. The reader starts once given to
/// a meter provider, which must happen inside a Tokio runtime; shut that provider down off the
/// runtime's worker threads (its shutdown waits for a last export).
pub fn otlp_metric_reader() -> Result<Option<OtlpMetricReader>, TelemetryError> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(Some(
        PeriodicReader::builder(exporter, runtime::Tokio).build(),
    ))
}

/// A JSON event format that adds the OpenTelemetry `trace_id` and `span_id` of the event's
/// innermost exported span to each line, so log lines can be joined to their trace, and the
/// `correlation_id` of the innermost span in scope that names one (a call's span), so every line
/// of a call names its call even when export is off.
struct WithTraceIds<F> {
    inner: F,
    dispatch: Arc<OnceLock<tracing::dispatcher::WeakDispatch>>,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let ids = self
            .dispatch
            .get()
            .and_then(tracing::dispatcher::WeakDispatch::upgrade)
            .and_then(|dispatch| {
                ctx.event_scope()?.find_map(|span| {
                    let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
                    let sc = cx.span().span_context().clone();
                    sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
                })
            });
        // The JSON format prints only the innermost span's fields; a call's correlation id sits
        // on its outer span, so it is looked up through the whole scope.
        let correlation = ctx.event_scope().and_then(|mut scope| {
            scope.find_map(|span| {
                let extensions = span.extensions();
                let fields = extensions.get::<FormattedFields<N>>()?;
                crate::correlation::from_json_fields(&fields.fields)
            })
        });
        let mut extra = Vec::new();
        if let Some((trace_id, span_id)) = ids {
            extra.push(format!(
                "\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
            ));
        }
        if let Some(id) = correlation {
            extra.push(format!(
                "\"{}\":{}",
                crate::correlation::SPAN_FIELD,
                serde_json::Value::String(id)
            ));
        }
        match line.trim_end().strip_suffix('}') {
            Some(head) if !extra.is_empty() => {
                let sep = if head.ends_with('{') { "" } else { "," };
                writeln!(writer, "{head}{sep}{}}}", extra.join(","))
            }
            _ => writer.write_str(&line),
        }
    }
}

/// Reads W3C trace headers out of an MCP `_meta` object.
struct MetaExtractor<'a>(&'a MetaObject);

impl Extractor for MetaExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Makes `span` a child of the trace named by `traceparent`/`tracestate` in `meta`, if present.
///
/// Returns whether a remote parent was found, so callers can log an orphan call.
pub fn continue_trace_from_meta(span: &tracing::Span, meta: &MetaObject) -> bool {
    if meta.get_traceparent().is_none() {
        return false;
    }
    let cx = TraceContextPropagator::new().extract(&MetaExtractor(meta));
    span.set_parent(cx).is_ok()
}

/// The W3C headers (`traceparent`, `tracestate`) naming `span`, for an outgoing request.
///
/// Empty when the span is not recorded by an OpenTelemetry layer (export is off).
pub fn trace_headers(span: &tracing::Span) -> HashMap<String, String> {
    struct MapInjector<'a>(&'a mut HashMap<String, String>);
    impl Injector for MapInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_owned(), value);
        }
    }
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut MapInjector(&mut headers));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extractor_reads_traceparent_from_meta() {
        let mut meta = MetaObject::new();
        meta.set_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let cx = TraceContextPropagator::new().extract(&MetaExtractor(&meta));
        use opentelemetry::trace::TraceContextExt;
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_remote());
    }

    /// Collects what a fmt layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

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

    #[test]
    fn json_lines_name_the_correlation_id_and_trace_of_every_enclosing_span() {
        let captured = Captured::default();
        let writer = captured.clone();
        let dispatch = Arc::new(OnceLock::new());
        let fmt_layer = tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
                dispatch: dispatch.clone(),
            })
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(move || writer.clone());
        // A provider without exporters still gives spans valid ids.
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(fmt_layer)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            tracing::dispatcher::get_default(|d| dispatch.set(d.downgrade()).ok());
            let call = tracing::info_span!("call", correlation_id = "c-1\"q");
            let attempt = tracing::info_span!(parent: &call, "attempt", n = 1);
            attempt.in_scope(|| tracing::info!("inside the attempt"));
            call.in_scope(|| tracing::info!("in the call"));
            tracing::info!("outside");
        });

        let bytes = captured.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        let (inside, in_call, outside) = (&lines[0], &lines[1], &lines[2]);
        assert_eq!(inside["span"]["name"], "attempt", "{inside}");
        for line in [inside, in_call] {
            assert_eq!(line["correlation_id"], "c-1\"q", "{line}");
            assert_eq!(line["trace_id"].as_str().map(str::len), Some(32), "{line}");
            assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
        }
        assert_eq!(inside["trace_id"], in_call["trace_id"]);
        assert_ne!(inside["span_id"], in_call["span_id"]);
        assert_eq!(outside["fields"]["message"], "outside");
        for key in ["correlation_id", "trace_id", "span_id"] {
            assert!(outside.get(key).is_none(), "{outside}");
        }
    }
}
