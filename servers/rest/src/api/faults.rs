//! HTTP-level fault injection: latency, 503s and 429s with `Retry-After`, and a requests-per-second
//! limit, so clients of the API can be exercised against the failures real services produce.
//!
//! Latency, jitter, the 503 share and the always-failing routes reuse the kit's seeded
//! [`kit::Faults`] generator (a route plays the part of a tool name); the 429 share is drawn from a
//! second generator seeded from the same `--seed`, so one seed fixes the whole sequence. The
//! rate limit is a token bucket: it depends on arrival times, not on the seed. `/health` and
//! `/debug/*` are never faulted, so probes and tests can always observe the API.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{ApiState, routes::ApiError};

/// Parses a share between 0 and 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number between 0 and 1"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is outside 0..1"))
    }
}

/// Parses a positive requests-per-second limit.
fn parse_rps(s: &str) -> Result<f64, String> {
    let rps: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of requests per second"))?;
    if rps.is_finite() && rps > 0.0 {
        Ok(rps)
    } else {
        Err(format!("{rps} must be above 0"))
    }
}

/// Fault flags of the `retail-api` binary; each has a `RETAIL_API_*` environment variable.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct HttpFaultArgs {
    /// Delay added to every request, in milliseconds.
    #[arg(long, env = "RETAIL_API_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Random extra delay of up to this many milliseconds, added to `--latency-ms`.
    #[arg(long, env = "RETAIL_API_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,
    /// Share of requests (0..1) answered `503 Service Unavailable`.
    #[arg(long, env = "RETAIL_API_FAILURE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub failure_rate: f64,
    /// Routes that always answer 503, by first path segment (`inventory`, `stock`, `shipments`,
    /// `products`, `warehouses`, `reservations`), comma-separated.
    #[arg(long, env = "RETAIL_API_FAIL_ROUTES", value_delimiter = ',')]
    pub fail_routes: Vec<String>,
    /// Share of requests (0..1) answered `429 Too Many Requests` with `Retry-After`.
    #[arg(long, env = "RETAIL_API_THROTTLE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub throttle_rate: f64,
    /// Seconds announced in `Retry-After` on injected 429s and 503s (the rate limit announces its
    /// own wait instead).
    #[arg(long, env = "RETAIL_API_RETRY_AFTER_SECS", default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Requests per second admitted (token bucket, bursts up to one second's worth); the rest get
    /// 429 with `Retry-After` saying when a request will be admitted again.
    #[arg(long, env = "RETAIL_API_RATE_LIMIT_RPS", value_parser = parse_rps)]
    pub rate_limit_rps: Option<f64>,
    /// Seed for the fault generators; the same seed gives the same faults in the same order.
    #[arg(long, env = "RETAIL_API_FAULT_SEED")]
    pub seed: Option<u64>,
}

impl HttpFaultArgs {
    /// Whether any fault is asked for.
    pub fn is_set(&self) -> bool {
        self.latency_ms > 0
            || self.jitter_ms > 0
            || self.failure_rate > 0.0
            || !self.fail_routes.is_empty()
            || self.throttle_rate > 0.0
            || self.rate_limit_rps.is_some()
    }
}

/// The same flags on `rest-mcp-server`, prefixed `--api-`, for the API it bundles in-process
/// (its own `--latency-ms` etc. fault the MCP tools, not the HTTP API).
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct BundledApiFaultArgs {
    /// Bundled API: delay added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub api_latency_ms: u64,
    /// Bundled API: random extra delay of up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub api_jitter_ms: u64,
    /// Bundled API: share of requests (0..1) answered 503.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub api_failure_rate: f64,
    /// Bundled API: routes that always answer 503 (first path segment), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub api_fail_routes: Vec<String>,
    /// Bundled API: share of requests (0..1) answered 429 with `Retry-After`.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub api_throttle_rate: f64,
    /// Bundled API: seconds announced in `Retry-After` on injected 429s and 503s.
    #[arg(long, default_value_t = 1)]
    pub api_retry_after_secs: u64,
    /// Bundled API: requests per second admitted; the rest get 429.
    #[arg(long, value_parser = parse_rps)]
    pub api_rate_limit_rps: Option<f64>,
    /// Bundled API: seed for the fault generators.
    #[arg(long)]
    pub api_seed: Option<u64>,
}

impl From<BundledApiFaultArgs> for HttpFaultArgs {
    fn from(a: BundledApiFaultArgs) -> Self {
        Self {
            latency_ms: a.api_latency_ms,
            jitter_ms: a.api_jitter_ms,
            failure_rate: a.api_failure_rate,
            fail_routes: a.api_fail_routes,
            throttle_rate: a.api_throttle_rate,
            retry_after_secs: a.api_retry_after_secs,
            rate_limit_rps: a.api_rate_limit_rps,
            seed: a.api_seed,
        }
    }
}

/// What happens to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// How long to wait before answering.
    pub delay: Duration,
    /// The answer instead of the handler's, if any.
    pub fault: Option<Fault>,
}

/// An injected answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 with `Retry-After: secs`.
    Throttled {
        /// Seconds the client is asked to wait.
        retry_after_secs: u64,
        /// Why, for the body.
        reason: String,
    },
    /// 503 with `Retry-After: secs`.
    Unavailable {
        /// Seconds the client is asked to wait.
        retry_after_secs: u64,
        /// Why, for the body.
        reason: String,
    },
}

/// A token bucket: `rate` tokens a second, holding at most `rate` (one second's burst).
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate.max(1.0),
            last: now,
        }
    }

    /// Takes a token, or says how long until one is available.
    fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// The fault generator of one API instance.
#[derive(Debug)]
pub struct HttpFaults {
    /// Latency, jitter, the 503 share and always-failing routes (the kit's generator).
    base: kit::Faults,
    throttle_rate: f64,
    retry_after_secs: u64,
    /// Draws the 429 share; separate from `base` because the kit's generator is private to it.
    throttle_rng: Mutex<ChaCha8Rng>,
    limiter: Option<Mutex<TokenBucket>>,
    /// `--fail-routes`, to name a route (not a tool) when one of them fails.
    fail_routes: std::collections::HashSet<String>,
}

impl HttpFaults {
    /// Builds the generators from the flags.
    pub fn new(args: &HttpFaultArgs) -> Self {
        let base = kit::Faults::new(&kit::FaultArgs {
            latency_ms: args.latency_ms,
            jitter_ms: args.jitter_ms,
            failure_rate: args.failure_rate,
            fail_tools: args.fail_routes.clone(),
            seed: args.seed,
            ..kit::FaultArgs::default()
        });
        let throttle_rng = match args.seed {
            // A different stream than the kit's, from the same seed.
            Some(seed) => ChaCha8Rng::seed_from_u64(seed ^ 0x7429_7429_7429_7429),
            None => ChaCha8Rng::from_os_rng(),
        };
        Self {
            base,
            throttle_rate: args.throttle_rate,
            retry_after_secs: args.retry_after_secs,
            throttle_rng: Mutex::new(throttle_rng),
            limiter: args
                .rate_limit_rps
                .map(|rps| Mutex::new(TokenBucket::new(rps, Instant::now()))),
            fail_routes: args.fail_routes.iter().cloned().collect(),
        }
    }

    /// Whether any fault is configured (a healthy API skips the generators entirely).
    pub fn is_active(&self) -> bool {
        self.base.is_active() || self.throttle_rate > 0.0 || self.limiter.is_some()
    }

    /// Decides the fate of one request to `route` arriving at `now`.
    pub fn decide(&self, route: &str, now: Instant) -> Verdict {
        let base = self.base.decide(route);
        let over_limit = self.limiter.as_ref().and_then(|l| {
            // A poisoned lock only means a panic mid-update; the bucket is still usable.
            let mut bucket = l.lock().unwrap_or_else(|e| e.into_inner());
            bucket.try_take(now).err()
        });
        let throttled = self.throttle_rate > 0.0 && {
            let mut rng = self.throttle_rng.lock().unwrap_or_else(|e| e.into_inner());
            rng.random::<f64>() < self.throttle_rate
        };
        let fault = if let Some(wait) = over_limit {
            Some(Fault::Throttled {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                reason: "request rate over the configured limit".into(),
            })
        } else if throttled {
            Some(Fault::Throttled {
                retry_after_secs: self.retry_after_secs,
                reason: format!("injected throttling (rate {})", self.throttle_rate),
            })
        } else {
            base.failure.map(|e| Fault::Unavailable {
                retry_after_secs: self.retry_after_secs,
                reason: if self.fail_routes.contains(route) {
                    format!("injected failure: route `{route}` is configured to always fail")
                } else {
                    e.message
                },
            })
        };
        Verdict {
            delay: base.delay,
            fault,
        }
    }
}

/// Paths that are never faulted: probes and the debug view must keep working in a chaos demo.
fn exempt(path: &str) -> bool {
    path == "/health" || path.starts_with("/debug/")
}

/// The middleware: waits, then answers with the injected fault or lets the request through.
pub(crate) async fn inject(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let faults = &state.faults;
    if !faults.is_active() || exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let route = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let verdict = faults.decide(&route, Instant::now());
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    match verdict.fault {
        None => next.run(request).await,
        Some(Fault::Throttled {
            retry_after_secs,
            reason,
        }) => {
            tracing::info!(%route, retry_after_secs, %reason, "injected 429");
            ApiError::Throttled {
                retry_after_secs,
                reason,
            }
            .into_response()
        }
        Some(Fault::Unavailable {
            retry_after_secs,
            reason,
        }) => {
            tracing::info!(%route, retry_after_secs, %reason, "injected 503");
            ApiError::Unavailable {
                retry_after_secs,
                reason,
            }
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(seed: u64) -> HttpFaultArgs {
        HttpFaultArgs {
            latency_ms: 5,
            jitter_ms: 20,
            failure_rate: 0.2,
            throttle_rate: 0.2,
            retry_after_secs: 3,
            seed: Some(seed),
            ..HttpFaultArgs::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let now = Instant::now();
        let a = HttpFaults::new(&args(9));
        let b = HttpFaults::new(&args(9));
        let da: Vec<_> = (0..300).map(|_| a.decide("inventory", now)).collect();
        let db: Vec<_> = (0..300).map(|_| b.decide("inventory", now)).collect();
        assert_eq!(da, db);
        let c = HttpFaults::new(&args(10));
        let dc: Vec<_> = (0..300).map(|_| c.decide("inventory", now)).collect();
        assert_ne!(da, dc);
    }

    #[test]
    fn shares_of_429_and_503_follow_the_rates() {
        let now = Instant::now();
        let faults = HttpFaults::new(&args(1));
        let verdicts: Vec<_> = (0..4000).map(|_| faults.decide("stock", now)).collect();
        let throttled = verdicts
            .iter()
            .filter(|v| {
                matches!(
                    v.fault,
                    Some(Fault::Throttled {
                        retry_after_secs: 3,
                        ..
                    })
                )
            })
            .count() as f64;
        let unavailable = verdicts
            .iter()
            .filter(|v| {
                matches!(
                    v.fault,
                    Some(Fault::Unavailable {
                        retry_after_secs: 3,
                        ..
                    })
                )
            })
            .count() as f64;
        // 429 is decided first: 20 % of all, then 20 % of the remaining 80 % get 503.
        assert!((0.17..0.23).contains(&(throttled / 4000.0)), "{throttled}");
        assert!(
            (0.13..0.19).contains(&(unavailable / 4000.0)),
            "{unavailable}"
        );
        assert!(
            verdicts.iter().all(
                |v| v.delay >= Duration::from_millis(5) && v.delay <= Duration::from_millis(25)
            )
        );
    }

    #[test]
    fn listed_routes_always_fail_and_no_flags_mean_no_faults() {
        let now = Instant::now();
        let faults = HttpFaults::new(&HttpFaultArgs {
            fail_routes: vec!["shipments".into()],
            ..HttpFaultArgs::default()
        });
        match faults.decide("shipments", now).fault {
            Some(Fault::Unavailable { reason, .. }) => assert_eq!(
                reason,
                "injected failure: route `shipments` is configured to always fail"
            ),
            other => panic!("expected 503, got {other:?}"),
        }
        assert_eq!(faults.decide("inventory", now).fault, None);
        let none = HttpFaults::new(&HttpFaultArgs::default());
        assert!(!none.is_active());
        assert!(!HttpFaultArgs::default().is_set());
    }

    #[test]
    fn the_rate_limit_admits_a_second_worth_then_throttles_until_refilled() {
        let start = Instant::now();
        let faults = HttpFaults::new(&HttpFaultArgs {
            rate_limit_rps: Some(2.0),
            ..HttpFaultArgs::default()
        });
        assert_eq!(faults.decide("stock", start).fault, None);
        assert_eq!(faults.decide("stock", start).fault, None);
        match faults.decide("stock", start).fault {
            Some(Fault::Throttled {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Half a second refills one token at 2/s.
        let later = start + Duration::from_millis(500);
        assert_eq!(faults.decide("stock", later).fault, None);
        assert!(faults.decide("stock", later).fault.is_some());
    }

    #[test]
    fn bucket_wait_is_the_time_to_the_next_token() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0.5, start);
        assert_eq!(bucket.try_take(start), Ok(()));
        let wait = bucket.try_take(start).expect_err("empty");
        assert_eq!(wait, Duration::from_secs(2));
    }

    #[test]
    fn rates_are_validated() {
        assert!(parse_rate("1.1").is_err());
        assert!(parse_rate("x").is_err());
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert!(parse_rps("0").is_err());
        assert!(parse_rps("-1").is_err());
        assert_eq!(parse_rps("2.5"), Ok(2.5));
    }

    #[test]
    fn probes_are_exempt() {
        assert!(exempt("/health"));
        assert!(exempt("/debug/last-traceparent"));
        assert!(!exempt("/inventory"));
    }
}
