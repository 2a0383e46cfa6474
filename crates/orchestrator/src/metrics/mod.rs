//! The orchestrator's metrics as OpenTelemetry instruments: read by `GET /metrics` in the
//! Prometheus text format and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, pushed over OTLP beside
//! the spans.
//!
//! Two kinds of instruments:
//! - *recorded* on the gateway's call path: upstream calls, errors by kind, upstream latency,
//!   cache lookups, composite latency and step outcomes;
//! - *observed* at collection time from the figures each server's policy stack already keeps for
//!   `orchestrator://status`: retries, breaker state and transitions, bulkhead in-flight, queued
//!   and rejected. Nothing is counted twice, so `/metrics` and status always agree.
//!
//! | instrument | kind | unit | attributes |
//! |---|---|---|---|
//! | `mcp.orchestrator.upstream.calls` | counter | `{call}` | `server`, `tool`, `outcome` (`ok`/`error`) |
//! | `mcp.orchestrator.upstream.errors` | counter | `{error}` | `server`, `kind` |
//! | `mcp.orchestrator.upstream.duration` | histogram | `s` | `server` |
//! | `mcp.orchestrator.upstream.retries` | counter (observed) | `{retry}` | `server` |
//! | `mcp.orchestrator.breaker.state` | gauge (observed) | | `server` (0 closed, 1 open, 2 half-open) |
//! | `mcp.orchestrator.breaker.transitions` | counter (observed) | `{transition}` | `server`, `to` |
//! | `mcp.orchestrator.bulkhead.in_flight` | gauge (observed) | `{call}` | `server` |
//! | `mcp.orchestrator.bulkhead.queued` | gauge (observed) | `{call}` | `server` |
//! | `mcp.orchestrator.bulkhead.rejected` | counter (observed) | `{call}` | `server` |
//! | `mcp.orchestrator.upstream.questions` | counter (observed) | `{request}` | `server`, `method` (`elicitation/create`, `sampling/createMessage`, `roots/list`), `outcome` (`answered`, `not_declared`, `wrong_era`, `cancelled`, `timed_out`, `failed`, `no_origin`) |
//! | `mcp.orchestrator.cache.lookups` | counter | `{lookup}` | `tool`, `result` (`hit`/`miss`) |
//! | `mcp.orchestrator.cache.l2.hits` | counter (observed) | `{lookup}` | (L1 misses answered from Redis; only with `orchestrator.cache.redis`) |
//! | `mcp.orchestrator.cache.l2.misses` | counter (observed) | `{lookup}` | (L1 misses Redis could not answer) |
//! | `mcp.orchestrator.cache.l2.errors` | counter (observed) | `{error}` | (Redis operations that failed or timed out) |
//! | `mcp.orchestrator.cache.l2.connected` | gauge (observed) | | (1 when Redis answered the last operation, else 0) |
//! | `mcp.orchestrator.composite.duration` | histogram | `s` | `composite`, `outcome` |
//! | `mcp.orchestrator.composite.steps` | counter | `{step}` | `composite`, `step`, `outcome` |
//! | `mcp.orchestrator.limits.enforced` | counter | `{event}` | `limit` (`clientCalls`: a call refused by `maxConcurrentCallsPerClient`; `resultBytes`: a result cut to `maxResultBytes`; `subscriptions`: a `resources/subscribe` refused by `maxSubscriptionsPerClient`; `upstreamRequestBytes`: a request refused as too large for its upstream; `upstreamMessageBytes`: an upstream's answer over `upstreamMaxMessageBytes`; `heldCalls`: a 2026-07-28 call that asked for input while `maxHeldCalls` calls were held) |
//!
//! Labels are bounded: server, tool, composite and step names come from the configuration and the
//! upstreams' tool lists, kinds and outcomes from fixed sets; never arguments or ids.

pub mod prometheus;

use std::{
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter, MeterProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, MeterProviderBuilder, Pipeline, SdkMeterProvider,
        Temporality, data::ResourceMetrics, reader::MetricReader,
    },
};

use crate::{
    cache::{Lookup, shared::SharedStats},
    error::CallError,
    policy::{breaker::BreakerState, classify::Answer},
    upstream::Upstream,
    workflow::executor::Source,
};

/// Bucket bounds of the latency histograms, in seconds: 1 ms to 1 min, where MCP calls fall.
/// (The SDK's default bounds, 0 to 10,000, suit milliseconds, not seconds.)
const LATENCY_BOUNDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The instrumentation scope of every instrument here.
const SCOPE: &str = "mcp-orchestrator";

/// The breaker states, in gauge-value order.
const BREAKER_STATES: [BreakerState; 3] = [
    BreakerState::Closed,
    BreakerState::Open,
    BreakerState::HalfOpen,
];

/// Why metrics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The SDK refused to collect (the provider was shut down).
    #[error("cannot collect metrics: {0}")]
    Collect(String),
}

/// The orchestrator's instruments, their meter provider and the reader `/metrics` collects from.
///
/// One per gateway (`Gateway::start_with_metrics`); cheap to record into from
/// any task.
pub struct Metrics {
    /// Owns the readers; kept to shut export down cleanly.
    provider: SdkMeterProvider,
    /// The pull reader `/metrics` collects through.
    pull: PullReader,
    /// Whether an OTLP reader is attached too.
    exporting: bool,
    upstream_calls: Counter<u64>,
    upstream_errors: Counter<u64>,
    upstream_duration: Histogram<f64>,
    cache_lookups: Counter<u64>,
    composite_duration: Histogram<f64>,
    composite_steps: Counter<u64>,
    limits_enforced: Counter<u64>,
    config_reloads: Counter<u64>,
    sagas: Counter<u64>,
    saga_log_pruned: Counter<u64>,
    /// The same saga outcomes as plain counts, for `orchestrator://status`.
    saga_counts: SagaCounters,
    /// The same enforcements as plain counts, for `orchestrator://status` (an OTel counter cannot
    /// be read back).
    enforced: LimitCounters,
    /// The upstreams whose policy figures the observed instruments report. Weak, so metrics never
    /// keep an upstream (and its connection) alive.
    observed: Arc<RwLock<Vec<Weak<Upstream>>>>,
    /// What the HTTP front holds and refused, filled in by [`kit::serve`].
    front: Arc<kit::serve::FrontStats>,
    /// The shared cache layer's figures, once a gateway with one is built (observed, like the
    /// policies': the layer counts for `orchestrator://status` already).
    shared_cache: Arc<RwLock<Option<Arc<SharedStats>>>>,
}

/// Saga runs by outcome since start.
#[derive(Debug, Default)]
struct SagaCounters {
    completed: AtomicU64,
    compensated: AtomicU64,
    compensation_failed: AtomicU64,
    log_pruned: AtomicU64,
}

/// Saga runs by outcome since start, for status: a `compensationFailed` above zero needs a
/// person (the systems a saga wrote to may disagree).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaCounts {
    /// Every step succeeded.
    pub completed: u64,
    /// A step failed and everything that had succeeded was undone.
    pub compensated: u64,
    /// A step failed and an undo failed after every attempt.
    pub compensation_failed: u64,
    /// Ended sagas deleted from the saga log past `orchestrator.sagas.keepEnded`.
    #[serde(default)]
    pub log_pruned: u64,
}

/// How many times each limit the front applies took effect since start.
#[derive(Debug, Default)]
struct LimitCounters {
    client_calls: AtomicU64,
    result_bytes: AtomicU64,
    upstream_request_bytes: AtomicU64,
    upstream_message_bytes: AtomicU64,
    subscriptions: AtomicU64,
    held_calls: AtomicU64,
}

/// [`LimitCounters`] read at one moment, as `orchestrator://status` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitCounts {
    /// Calls refused by `maxConcurrentCallsPerClient`.
    pub client_calls: u64,
    /// Results cut to `maxResultBytes`.
    pub result_bytes: u64,
    /// Requests refused as too large for their upstream (`upstreamMaxRequestBytes`, a server's
    /// `maxRequestBytes`, or an HTTP 413).
    #[serde(default)]
    pub upstream_request_bytes: u64,
    /// Upstream answers over `upstreamMaxMessageBytes`.
    #[serde(default)]
    pub upstream_message_bytes: u64,
    /// Subscriptions refused by `maxSubscriptionsPerClient`.
    #[serde(default)]
    pub subscriptions: u64,
    /// 2026-07-28 calls that asked for input while `maxHeldCalls` calls were held.
    #[serde(default)]
    pub held_calls: u64,
}

/// A limit of `orchestrator.limits` taking effect on an agent's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitEvent {
    /// A call refused because its agent already had `maxConcurrentCallsPerClient` in flight.
    ClientCalls,
    /// A result cut to `maxResultBytes`.
    ResultBytes,
    /// A request refused as too large for its upstream.
    UpstreamRequestBytes,
    /// An upstream's answer over `upstreamMaxMessageBytes`.
    UpstreamMessageBytes,
    /// A `resources/subscribe` refused because its agent already held
    /// `maxSubscriptionsPerClient` subscriptions.
    Subscriptions,
    /// A 2026-07-28 agent's call that asked for input while `maxHeldCalls` calls were held.
    HeldCalls,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("exporting", &self.exporting)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics read by `/metrics` only: nothing is exported. What tests, benches and the library
    /// default (`Gateway::start`) use.
    pub fn new() -> Self {
        Self::build(SdkMeterProvider::builder(), false)
    }

    /// Metrics read by `/metrics` and also pushed by `export` (a periodic OTLP reader, say), with
    /// `resource` naming the process.
    pub fn exporting(resource: Resource, export: impl MetricReader) -> Self {
        Self::build(
            SdkMeterProvider::builder()
                .with_resource(resource)
                .with_reader(export),
            true,
        )
    }

    /// Metrics exported over OTLP when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is set, with the same settings and service name as
    /// the spans ([`kit::telemetry::otlp_metric_reader`]); otherwise `/metrics` only. Must run
    /// inside a Tokio runtime.
    pub fn from_env(service_name: &str) -> Result<Self, kit::telemetry::TelemetryError> {
        Ok(match kit::telemetry::otlp_metric_reader()? {
            Some(reader) => Self::exporting(kit::telemetry::resource(service_name), reader),
            None => Self::new(),
        })
    }

    fn build(builder: MeterProviderBuilder, exporting: bool) -> Self {
        let pull = PullReader(Arc::new(ManualReader::builder().build()));
        let provider = builder.with_reader(pull.clone()).build();
        let meter = provider.meter(SCOPE);
        let observed = Arc::new(RwLock::new(Vec::new()));
        observe_policies(&meter, &observed);
        let front = Arc::new(kit::serve::FrontStats::default());
        observe_front(&meter, &front);
        let shared_cache = Arc::new(RwLock::new(None));
        observe_shared_cache(&meter, &shared_cache);
        Self {
            shared_cache,
            upstream_calls: meter
                .u64_counter("mcp.orchestrator.upstream.calls")
                .with_description(
                    "Upstream tool calls (answered by the server or failed; cache hits excluded)",
                )
                .with_unit("{call}")
                .build(),
            upstream_errors: meter
                .u64_counter("mcp.orchestrator.upstream.errors")
                .with_description(
                    "Failed upstream tool calls by kind: a tool error's errorKind or the call error",
                )
                .with_unit("{error}")
                .build(),
            upstream_duration: meter
                .f64_histogram("mcp.orchestrator.upstream.duration")
                .with_description(
                    "Upstream tool call latency, retries and their delays included",
                )
                .with_unit("s")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            cache_lookups: meter
                .u64_counter("mcp.orchestrator.cache.lookups")
                .with_description("Result cache lookups by result")
                .with_unit("{lookup}")
                .build(),
            composite_duration: meter
                .f64_histogram("mcp.orchestrator.composite.duration")
                .with_description("Composite tool latency, from input check to result")
                .with_unit("s")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            composite_steps: meter
                .u64_counter("mcp.orchestrator.composite.steps")
                .with_description("Composite steps by outcome")
                .with_unit("{step}")
                .build(),
            limits_enforced: meter
                .u64_counter("mcp.orchestrator.limits.enforced")
                .with_description(
                    "Calls refused or results cut by orchestrator.limits, by limit",
                )
                .with_unit("{event}")
                .build(),
            sagas: meter
                .u64_counter("mcp.orchestrator.sagas")
                .with_description(
                    "Saga composites by outcome (completed, compensated, compensation_failed)",
                )
                .with_unit("{saga}")
                .build(),
            saga_log_pruned: meter
                .u64_counter("mcp.orchestrator.saga_log.pruned")
                .with_description(
                    "Ended sagas deleted from the saga log past orchestrator.sagas.keepEnded",
                )
                .with_unit("{saga}")
                .build(),
            saga_counts: SagaCounters::default(),
            config_reloads: meter
                .u64_counter("mcp.orchestrator.config.reloads")
                .with_description(
                    "Reloads of the config file by outcome (applied, unchanged, refused)",
                )
                .with_unit("{reload}")
                .build(),
            enforced: LimitCounters::default(),
            provider,
            pull,
            exporting,
            observed,
            front,
        }
    }

    /// Saga runs by outcome since start.
    pub fn saga_counts(&self) -> SagaCounts {
        let c = &self.saga_counts;
        SagaCounts {
            completed: c.completed.load(Ordering::Relaxed),
            compensated: c.compensated.load(Ordering::Relaxed),
            compensation_failed: c.compensation_failed.load(Ordering::Relaxed),
            log_pruned: c.log_pruned.load(Ordering::Relaxed),
        }
    }

    /// Counts ended sagas deleted from the saga log to keep it within its bound.
    pub fn saga_log_pruned(&self, sagas: u64) {
        self.saga_counts
            .log_pruned
            .fetch_add(sagas, Ordering::Relaxed);
        self.saga_log_pruned.add(sagas, &[]);
    }

    /// Counts one saga run by how it ended; `compensation_failed` needs a person.
    pub fn saga(&self, composite: &str, outcome: &'static str) {
        let count = match outcome {
            "completed" => &self.saga_counts.completed,
            "compensated" => &self.saga_counts.compensated,
            _ => &self.saga_counts.compensation_failed,
        };
        count.fetch_add(1, Ordering::Relaxed);
        self.sagas.add(
            1,
            &[
                KeyValue::new("composite", composite.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// Counts one reload of the config file: `applied`, `unchanged` (the file in force), or
    /// `refused` (invalid; the running configuration stayed), so a failed deploy can alert.
    pub fn config_reload(&self, outcome: &'static str) {
        self.config_reloads
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// Where the HTTP front counts its sessions, connections and refusals
    /// ([`kit::serve::Front::stats`]), reported as `mcp.orchestrator.http.*`.
    pub fn front_stats(&self) -> Arc<kit::serve::FrontStats> {
        self.front.clone()
    }

    /// Reports the policy figures (retries, breaker, bulkhead) of `upstreams` from now on.
    pub fn observe(&self, upstreams: &[Arc<Upstream>]) {
        let mut observed = self.observed.write().unwrap_or_else(|e| e.into_inner());
        // Servers a reload retired are gone: forget them rather than grow with every reload.
        observed.retain(|u| u.strong_count() > 0);
        observed.extend(upstreams.iter().map(Arc::downgrade));
    }

    /// Reports the shared cache layer's figures from now on.
    pub fn observe_shared_cache(&self, stats: Arc<SharedStats>) {
        *self.shared_cache.write().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }

    /// Whether an OTLP reader is attached.
    pub fn is_exporting(&self) -> bool {
        self.exporting
    }

    /// Records one upstream call that reached the policy stack (not a cache hit): its outcome,
    /// error kind and latency.
    pub fn upstream_call<T: Answer>(
        &self,
        server: &str,
        tool: &str,
        elapsed: Duration,
        outcome: &Result<T, CallError>,
    ) {
        let server = KeyValue::new("server", server.to_owned());
        let kind = error_kind(outcome);
        self.upstream_calls.add(
            1,
            &[
                server.clone(),
                KeyValue::new("tool", tool.to_owned()),
                KeyValue::new("outcome", if kind.is_some() { "error" } else { "ok" }),
            ],
        );
        if let Some(kind) = kind {
            self.upstream_errors
                .add(1, &[server.clone(), KeyValue::new("kind", kind)]);
        }
        self.upstream_duration
            .record(elapsed.as_secs_f64(), &[server]);
    }

    /// Records one enforcement of a limit the front applies to agents' calls.
    pub fn limit_enforced(&self, limit: LimitEvent) {
        let (limit, count) = match limit {
            LimitEvent::ClientCalls => ("clientCalls", &self.enforced.client_calls),
            LimitEvent::ResultBytes => ("resultBytes", &self.enforced.result_bytes),
            LimitEvent::UpstreamRequestBytes => (
                "upstreamRequestBytes",
                &self.enforced.upstream_request_bytes,
            ),
            LimitEvent::UpstreamMessageBytes => (
                "upstreamMessageBytes",
                &self.enforced.upstream_message_bytes,
            ),
            LimitEvent::Subscriptions => ("subscriptions", &self.enforced.subscriptions),
            LimitEvent::HeldCalls => ("heldCalls", &self.enforced.held_calls),
        };
        count.fetch_add(1, Ordering::Relaxed);
        self.limits_enforced
            .add(1, &[KeyValue::new("limit", limit)]);
    }

    /// How many times each limit took effect since start.
    pub fn limits_enforced(&self) -> LimitCounts {
        LimitCounts {
            client_calls: self.enforced.client_calls.load(Ordering::Relaxed),
            result_bytes: self.enforced.result_bytes.load(Ordering::Relaxed),
            upstream_request_bytes: self.enforced.upstream_request_bytes.load(Ordering::Relaxed),
            upstream_message_bytes: self.enforced.upstream_message_bytes.load(Ordering::Relaxed),
            subscriptions: self.enforced.subscriptions.load(Ordering::Relaxed),
            held_calls: self.enforced.held_calls.load(Ordering::Relaxed),
        }
    }

    /// Records one cache lookup of `tool` (`server.tool`, or a composite's name).
    pub fn cache_lookup(&self, tool: &str, lookup: Lookup) {
        let result = match lookup {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
        };
        self.cache_lookups.add(
            1,
            &[
                KeyValue::new("tool", tool.to_owned()),
                KeyValue::new("result", result),
            ],
        );
    }

    /// Records one run of `composite`: its latency and `outcome` (`ok`, `failed` or `deadline`),
    /// and each step's outcome from its `_meta.sources`.
    pub fn composite_run(
        &self,
        composite: &str,
        elapsed: Duration,
        outcome: &'static str,
        sources: &[Source],
    ) {
        let composite = KeyValue::new("composite", composite.to_owned());
        self.composite_duration.record(
            elapsed.as_secs_f64(),
            &[composite.clone(), KeyValue::new("outcome", outcome)],
        );
        for source in sources {
            self.composite_steps.add(
                1,
                &[
                    composite.clone(),
                    KeyValue::new("step", source.step.clone()),
                    KeyValue::new("outcome", source.outcome.as_str()),
                ],
            );
        }
    }

    /// Every metric now, in the Prometheus text exposition format 0.0.4
    /// ([`prometheus::CONTENT_TYPE`]).
    pub fn render_prometheus(&self) -> Result<String, MetricsError> {
        let mut collected = ResourceMetrics::default();
        self.pull
            .collect(&mut collected)
            .map_err(|e| MetricsError::Collect(e.to_string()))?;
        Ok(prometheus::encode(&collected))
    }

    /// Stops the provider, pushing a last export when exporting; waits at most a few seconds for
    /// a slow collector. The SDK's shutdown blocks on the export, so it runs off the runtime's
    /// worker threads.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let done = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(Duration::from_secs(5), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metric export did not flush"),
            Ok(Err(e)) => tracing::warn!(error = %e, "metric shutdown task failed"),
            Err(_) => tracing::warn!("metric export flush timed out"),
        }
    }
}

/// The error kind of a call's outcome, `None` when it succeeded: a tool error's `errorKind` (read
/// as `kit::ToolError` reads it, so an unknown kind is `internal`), else the call error's label.
fn error_kind<T: Answer>(outcome: &Result<T, CallError>) -> Option<&'static str> {
    match outcome {
        Ok(r) => r.tool_error().map(|e| e.kind.as_str()),
        Err(e) => Some(e.label()),
    }
}

/// The upstreams still alive among `observed`.
fn live(observed: &RwLock<Vec<Weak<Upstream>>>) -> Vec<Arc<Upstream>> {
    observed
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect()
}

fn server(upstream: &Upstream) -> KeyValue {
    KeyValue::new("server", upstream.name().to_owned())
}

/// One observed counter of the shared cache layer: name, description, unit, and its figure.
type SharedCounter = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SharedStats) -> u64,
);

/// The shared cache layer's figures, once a gateway with one registers them (nothing before).
fn observe_shared_cache(meter: &Meter, shared: &Arc<RwLock<Option<Arc<SharedStats>>>>) {
    let read = |s: &Arc<RwLock<Option<Arc<SharedStats>>>>| {
        s.read().unwrap_or_else(|e| e.into_inner()).clone()
    };
    let counters: [SharedCounter; 3] = [
        (
            "mcp.orchestrator.cache.l2.hits",
            "Result cache L1 misses answered from Redis",
            "{lookup}",
            SharedStats::hits,
        ),
        (
            "mcp.orchestrator.cache.l2.misses",
            "Result cache L1 misses Redis could not answer either",
            "{lookup}",
            SharedStats::misses,
        ),
        (
            "mcp.orchestrator.cache.l2.errors",
            "Redis operations of the result cache that failed or timed out (the call went on without Redis)",
            "{error}",
            SharedStats::errors,
        ),
    ];
    for (name, description, unit, figure) in counters {
        let s = shared.clone();
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(move |obs| {
                if let Some(stats) = read(&s) {
                    obs.observe(figure(&stats), &[]);
                }
            })
            .build();
    }
    let s = shared.clone();
    meter
        .u64_observable_gauge("mcp.orchestrator.cache.l2.connected")
        .with_description("1 when Redis answered the result cache's last operation, else 0")
        .with_callback(move |obs| {
            if let Some(stats) = read(&s) {
                obs.observe(u64::from(stats.connected()), &[]);
            }
        })
        .build();
}

/// Registers the observed instruments: each reads the policy figures of every live upstream when
/// a reader collects. The SDK keeps the callbacks for the provider's lifetime.
/// The HTTP front's figures: sessions and connections held now, and refusals by limit.
fn observe_front(meter: &Meter, front: &Arc<kit::serve::FrontStats>) {
    let f = front.clone();
    meter
        .u64_observable_gauge("mcp.orchestrator.http.sessions")
        .with_description("MCP sessions open on the HTTP front (--max-sessions caps them)")
        .with_unit("{session}")
        .with_callback(move |obs| obs.observe(f.sessions() as u64, &[]))
        .build();
    let f = front.clone();
    meter
        .u64_observable_gauge("mcp.orchestrator.http.connections")
        .with_description("TCP connections open on the HTTP front (--max-connections caps them)")
        .with_unit("{connection}")
        .with_callback(move |obs| obs.observe(f.connections() as u64, &[]))
        .build();
    let f = front.clone();
    meter
        .u64_observable_counter("mcp.orchestrator.front.refused")
        .with_description(
            "Requests or connections the front refused, closed or paused, by the limit that did it",
        )
        .with_unit("{refusal}")
        .with_callback(move |obs| {
            for limit in kit::serve::FrontLimit::ALL {
                obs.observe(f.enforced(limit), &[KeyValue::new("limit", limit.name())]);
            }
        })
        .build();
}

fn observe_policies(meter: &Meter, observed: &Arc<RwLock<Vec<Weak<Upstream>>>>) {
    let o = observed.clone();
    meter
        .u64_observable_counter("mcp.orchestrator.upstream.retries")
        .with_description("Retries of failed upstream attempts")
        .with_unit("{retry}")
        .with_callback(move |obs| {
            for u in live(&o) {
                obs.observe(u.policy().snapshot().retries, &[server(&u)]);
            }
        })
        .build();
    let o = observed.clone();
    meter
        .u64_observable_counter("mcp.orchestrator.retry.budget_exhausted")
        .with_description("Retries the server's retry budget refused")
        .with_unit("{retry}")
        .with_callback(move |obs| {
            for u in live(&o) {
                obs.observe(u.policy().snapshot().budget_exhausted, &[server(&u)]);
            }
        })
        .build();
    let o = observed.clone();
    meter
        .u64_observable_gauge("mcp.orchestrator.breaker.state")
        .with_description("Circuit breaker state: 0 closed, 1 open, 2 half-open")
        .with_callback(move |obs| {
            for u in live(&o) {
                obs.observe(u.policy().breaker().state() as u64, &[server(&u)]);
            }
        })
        .build();
    let o = observed.clone();
    meter
        .u64_observable_counter("mcp.orchestrator.breaker.transitions")
        .with_description("Circuit breaker transitions by the state entered")
        .with_unit("{transition}")
        .with_callback(move |obs| {
            for u in live(&o) {
                let breaker = u.policy().breaker();
                for to in BREAKER_STATES {
                    obs.observe(
                        breaker.transitions_into(to),
                        &[server(&u), KeyValue::new("to", to.as_str())],
                    );
                }
            }
        })
        .build();
    let o = observed.clone();
    meter
        .u64_observable_gauge("mcp.orchestrator.bulkhead.in_flight")
        .with_description("Calls holding a bulkhead running slot")
        .with_unit("{call}")
        .with_callback(move |obs| {
            for u in live(&o) {
                obs.observe(
                    u.policy().bulkhead().snapshot().running as u64,
                    &[server(&u)],
                );
            }
        })
        .build();
    let o = observed.clone();
    meter
        .u64_observable_gauge("mcp.orchestrator.bulkhead.queued")
        .with_description("Calls waiting for a bulkhead running slot")
        .with_unit("{call}")
        .with_callback(move |obs| {
            for u in live(&o) {
                obs.observe(
                    u.policy().bulkhead().snapshot().queued as u64,
                    &[server(&u)],
                );
            }
        })
        .build();
    let o = observed.clone();
    meter
        .u64_observable_counter("mcp.orchestrator.bulkhead.rejected")
        .with_description("Calls refused because the bulkhead was full")
        .with_unit("{call}")
        .with_callback(move |obs| {
            for u in live(&o) {
                obs.observe(u.policy().bulkhead().snapshot().rejected, &[server(&u)]);
            }
        })
        .build();
    let o = observed.clone();
    meter
        .u64_observable_counter("mcp.orchestrator.upstream.questions")
        .with_description(
            "Requests an upstream made of the agent behind a call (elicitation, sampling, roots)",
        )
        .with_unit("{request}")
        .with_callback(move |obs| {
            for u in live(&o) {
                for ((method, outcome), n) in u.stats().questions() {
                    obs.observe(
                        n,
                        &[
                            server(&u),
                            KeyValue::new("method", method),
                            KeyValue::new("outcome", outcome),
                        ],
                    );
                }
            }
        })
        .build();
}

/// The reader `/metrics` collects through. The provider takes ownership of its readers and
/// `ManualReader` is not `Clone`, so both hold it through an `Arc`.
#[derive(Debug, Clone)]
struct PullReader(Arc<ManualReader>);

impl MetricReader for PullReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::CallToolResult;

    use super::*;
    use crate::{
        config::Config,
        relay::Relay,
        workflow::executor::{Source, SourceOutcome},
    };

    /// The value of the sample `name{labels}` in `text` (labels in any order).
    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let mut found: Vec<String> = rest
                .trim_end_matches('}')
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| p.trim_end_matches('"').to_owned())
                .collect();
            found.sort();
            let mut wanted: Vec<String> =
                labels.iter().map(|(k, v)| format!("{k}=\"{v}")).collect();
            wanted.sort();
            (found == wanted).then(|| value.parse().ok()).flatten()
        })
    }

    fn upstream(policy: serde_json::Value) -> Arc<Upstream> {
        let text = serde_json::json!({
            "mcpServers": { "sql": { "command": "never-started" } },
            "orchestrator": { "servers": { "sql": policy } }
        })
        .to_string();
        let mut config =
            Config::parse(&text, std::path::Path::new("."), &|_| None).expect("valid config");
        let (changed, _) = tokio::sync::watch::channel(0);
        let (upstream, _supervisor) = Upstream::supervised(
            config.servers.remove(0),
            Arc::new(Relay::default()),
            changed,
            Vec::new(),
        );
        Arc::new(upstream)
    }

    fn tool_error(kind: &str) -> Result<CallToolResult, CallError> {
        let mut r = CallToolResult::error(vec![]);
        let mut meta = rmcp::model::MetaObject::new();
        meta.insert("errorKind".into(), kind.into());
        r.meta = Some(meta);
        Ok(r)
    }

    #[test]
    fn calls_count_by_outcome_and_errors_by_kind() {
        let m = Metrics::new();
        let ms = Duration::from_millis;
        m.upstream_call(
            "sql",
            "get_customer",
            ms(3),
            &Ok(CallToolResult::success(vec![])),
        );
        m.upstream_call("sql", "get_customer", ms(20), &tool_error("unavailable"));
        m.upstream_call("sql", "get_customer", ms(40), &tool_error("made_up"));
        m.upstream_call(
            "sql",
            "query",
            ms(2_000),
            &Err::<CallToolResult, _>(CallError::Cancelled),
        );
        let text = m.render_prometheus().expect("collected");
        let calls = "mcp_orchestrator_upstream_calls_total";
        let ok = [
            ("server", "sql"),
            ("tool", "get_customer"),
            ("outcome", "ok"),
        ];
        let failed = [
            ("server", "sql"),
            ("tool", "get_customer"),
            ("outcome", "error"),
        ];
        assert_eq!(sample(&text, calls, &ok), Some(1.0), "{text}");
        assert_eq!(sample(&text, calls, &failed), Some(2.0), "{text}");
        let errors = "mcp_orchestrator_upstream_errors_total";
        for (kind, n) in [("unavailable", 1.0), ("internal", 1.0), ("cancelled", 1.0)] {
            assert_eq!(
                sample(&text, errors, &[("server", "sql"), ("kind", kind)]),
                Some(n),
                "{kind}: {text}"
            );
        }
        let count = "mcp_orchestrator_upstream_duration_seconds_count";
        assert_eq!(sample(&text, count, &[("server", "sql")]), Some(4.0));
        let bucket = "mcp_orchestrator_upstream_duration_seconds_bucket";
        let le = |b| [("server", "sql"), ("le", b)];
        assert_eq!(sample(&text, bucket, &le("0.005")), Some(1.0), "{text}");
        assert_eq!(sample(&text, bucket, &le("0.05")), Some(3.0), "{text}");
        assert_eq!(sample(&text, bucket, &le("+Inf")), Some(4.0), "{text}");
    }

    #[test]
    fn the_shared_cache_layer_is_reported_only_once_registered() {
        let m = Metrics::new();
        let text = m.render_prometheus().expect("collected");
        assert!(!text.contains("cache_l2"), "{text}");
        m.observe_shared_cache(Arc::new(SharedStats::new()));
        let text = m.render_prometheus().expect("collected");
        for name in [
            "mcp_orchestrator_cache_l2_hits_total",
            "mcp_orchestrator_cache_l2_misses_total",
            "mcp_orchestrator_cache_l2_errors_total",
        ] {
            assert_eq!(sample(&text, name, &[]), Some(0.0), "{name} in {text}");
        }
        assert_eq!(
            sample(&text, "mcp_orchestrator_cache_l2_connected", &[]),
            Some(1.0)
        );
    }

    #[test]
    fn cache_lookups_and_composites_are_labelled_by_name() {
        let m = Metrics::new();
        m.cache_lookup("sql.get_customer", Lookup::Miss);
        m.cache_lookup("sql.get_customer", Lookup::Hit);
        m.cache_lookup("sql.get_customer", Lookup::Hit);
        let source = |step: &str, outcome| Source {
            step: step.into(),
            server: "sql".into(),
            tool: "t".into(),
            outcome,
            error_kind: None,
            error: None,
            latency_ms: 1.0,
            items: None,
            failed_items: None,
            started_ms: 0.0,
            compensation: None,
            settled: None,
        };
        let sources = [
            source("orders", SourceOutcome::Ok),
            source("behavior", SourceOutcome::Fallback),
        ];
        m.composite_run("insights", Duration::from_millis(30), "ok", &sources);
        m.composite_run("insights", Duration::from_secs(9), "deadline", &[]);
        let text = m.render_prometheus().expect("collected");
        let lookups = "mcp_orchestrator_cache_lookups_total";
        let tool = ("tool", "sql.get_customer");
        assert_eq!(
            sample(&text, lookups, &[tool, ("result", "hit")]),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, lookups, &[tool, ("result", "miss")]),
            Some(1.0)
        );
        let steps = "mcp_orchestrator_composite_steps_total";
        let step = |s, o| [("composite", "insights"), ("step", s), ("outcome", o)];
        assert_eq!(sample(&text, steps, &step("orders", "ok")), Some(1.0));
        assert_eq!(
            sample(&text, steps, &step("behavior", "fallback")),
            Some(1.0)
        );
        let count = "mcp_orchestrator_composite_duration_seconds_count";
        for outcome in ["ok", "deadline"] {
            let labels = [("composite", "insights"), ("outcome", outcome)];
            assert_eq!(sample(&text, count, &labels), Some(1.0), "{text}");
        }
    }

    #[tokio::test]
    async fn breaker_and_bulkhead_figures_are_observed_at_collection() {
        let up = upstream(serde_json::json!({
            "circuitBreaker": { "consecutiveFailures": 2, "openMs": 60000 },
            "bulkhead": { "maxConcurrent": 1, "maxQueue": 0 }
        }));
        let m = Metrics::new();
        m.observe(std::slice::from_ref(&up));
        let text = m.render_prometheus().expect("collected");
        let sql = [("server", "sql")];
        assert_eq!(
            sample(&text, "mcp_orchestrator_breaker_state", &sql),
            Some(0.0)
        );

        let breaker = up.policy().breaker();
        for _ in 0..2 {
            breaker.acquire().expect("closed").unreachable();
        }
        let slot = up.policy().bulkhead().enter().await.expect("a free slot");
        assert!(up.policy().bulkhead().enter().await.is_err(), "full");
        let text = m.render_prometheus().expect("collected");
        assert_eq!(
            sample(&text, "mcp_orchestrator_breaker_state", &sql),
            Some(1.0)
        );
        let transitions = "mcp_orchestrator_breaker_transitions_total";
        let to = |s| [("server", "sql"), ("to", s)];
        assert_eq!(sample(&text, transitions, &to("open")), Some(1.0), "{text}");
        assert_eq!(sample(&text, transitions, &to("closed")), Some(0.0));
        let in_flight = "mcp_orchestrator_bulkhead_in_flight";
        assert_eq!(sample(&text, in_flight, &sql), Some(1.0), "{text}");
        let rejected = "mcp_orchestrator_bulkhead_rejected_total";
        assert_eq!(sample(&text, rejected, &sql), Some(1.0), "{text}");
        let retries = "mcp_orchestrator_upstream_retries_total";
        assert_eq!(sample(&text, retries, &sql), Some(0.0), "{text}");
        let refused = "mcp_orchestrator_retry_budget_exhausted_total";
        assert_eq!(sample(&text, refused, &sql), Some(0.0), "{text}");

        drop(slot);
        let text = m.render_prometheus().expect("collected");
        assert_eq!(sample(&text, in_flight, &sql), Some(0.0));
        drop(up);
        let text = m.render_prometheus().expect("collected");
        assert_eq!(
            sample(&text, in_flight, &sql),
            None,
            "a dropped upstream is no longer observed"
        );
    }
}
