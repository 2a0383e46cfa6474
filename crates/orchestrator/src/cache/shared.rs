//! The shared (L2) layer of the result cache: the same entries in Redis, so several orchestrator
//! instances answer from one another's loads and drop what any of them invalidated.
//!
//! Layout in Redis, every key under the configured prefix (`mcp-orchestrator:` by default):
//!
//! | key | what | lifetime |
//! |---|---|---|
//! | `{prefix}entry:{cache key}` | the answer and its tags, JSON | the entry's TTL (`SET .. PX`) |
//! | `{prefix}tag:{tag}` | set of the entry keys carrying the tag | at least its longest entry |
//! | `{prefix}invalidated:{tag}` | Redis time (ms) of the tag's last invalidation | [`MARKER_TTL`] |
//! | `{prefix}invalidated` | Redis time (ms) of the last invalidation not by tag | [`MARKER_TTL`] |
//!
//! Why the markers: a load that read the upstream before a write and finishes after it must not
//! store its answer, or Redis would serve the pre-write value for a whole TTL. The L1 guards this
//! with its generation counter; across instances the same question is asked in Redis itself, on
//! one clock: the lookup that missed records Redis's `TIME`, and the write script refuses to
//! store when any of the entry's tags (or everything) was invalidated at or after that time.
//!
//! Other instances learn of an invalidation through a pub/sub channel; each runs a subscriber
//! task ([`subscribe`]) that applies it to its own L1 (bumping its generation, so its loads in
//! flight are not stored either). Messages carry the sender's instance id so it ignores its own.
//!
//! Degradation: every Redis operation is bounded by `timeoutMs`. A failure or timeout marks Redis
//! unavailable for [`RETRY_AFTER`], during which calls skip it entirely (L1 only, no added
//! latency); the next operation after that probes it again. The state changes are logged once
//! each ("unavailable", "back"), and counted in [`SharedStats`]. An invalidation that could not
//! reach Redis is kept and replayed before this instance uses Redis again.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rmcp::model::{CallToolResult, ReadResourceResult};
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Cached, ResultCache};

/// How long Redis is left alone after a failure before an operation probes it again: short
/// enough that sharing resumes soon after an outage, long enough that an outage does not cost
/// every call a timeout.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long an invalidation marker lives. It only has to outlive the loads in flight when the
/// invalidation ran; a load running longer than this (far past any call deadline) could store
/// a pre-write answer.
pub const MARKER_TTL: Duration = Duration::from_secs(15 * 60);

/// How often the subscriber pings Redis on its connection: a connection that died without a
/// word (a NAT or firewall dropping it) would otherwise leave this instance deaf to other
/// instances' invalidations. A missed ping counts as a disconnection (resubscribe, flush L1).
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Invalidations kept for replay while Redis is unavailable; past this, one "everything" stands
/// for them all.
const MAX_PENDING: usize = 256;

/// `orchestrator.cache.redis`, validated.
#[derive(Clone, PartialEq)]
pub struct SharedSettings {
    /// The connection URL. May hold a password: never logged (see [`SharedSettings::host`]).
    pub url: String,
    /// Prepended to every key, so several deployments (or other users) share one Redis.
    pub key_prefix: String,
    /// Bound on every Redis operation; past it the call goes on with L1 alone.
    pub timeout: Duration,
    /// The pub/sub channel invalidations travel on.
    pub channel: String,
    /// `host:port` (or socket path) of the URL, what logs and status show instead of it.
    pub host: String,
}

impl fmt::Debug for SharedSettings {
    // Not derived: the URL may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSettings")
            .field("host", &self.host)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl SharedSettings {
    /// Checks `url` and derives what logs may show of it; `channel` defaults to
    /// `{prefix}invalidations`.
    pub fn new(
        url: &str,
        key_prefix: String,
        timeout: Duration,
        channel: Option<String>,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let host = client.get_connection_info().addr().to_string();
        Ok(Self {
            url: url.to_owned(),
            channel: channel.unwrap_or_else(|| format!("{key_prefix}invalidations")),
            key_prefix,
            timeout,
            host,
        })
    }
}

/// Why a Redis operation did not help this call. Never reaches an agent: the call goes on with
/// L1 alone.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within `timeoutMs`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// A stored value that is not what this version writes (another version, or foreign data).
    #[error("undecodable cache value: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The shared layer's figures, for `orchestrator://status` and metrics. Counters are totals
/// since start.
#[derive(Debug, Default)]
pub struct SharedStats {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    writes: AtomicU64,
    /// Whether the last operation succeeded (starts true: nothing has failed yet).
    connected: AtomicBool,
    /// Whether the invalidation subscriber is subscribed now.
    subscribed: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// [`SharedStats`] read at one moment, as `orchestrator://status` shows them under
/// `cache.redis`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedSnapshot {
    /// Whether `orchestrator.cache.redis` is set.
    pub configured: bool,
    /// Whether Redis answered the last operation.
    pub connected: bool,
    /// Whether this instance receives other instances' invalidations now.
    pub subscribed: bool,
    /// `host:port` of the Redis in use (never the URL: it may hold a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// L1 misses answered from Redis.
    pub hits: u64,
    /// L1 misses Redis could not answer either (the upstream was asked).
    pub misses: u64,
    /// Redis operations that failed or timed out.
    pub errors: u64,
    /// Entries this instance stored in Redis (refused writes, of answers an invalidation made
    /// stale while they loaded, not counted).
    pub writes: u64,
}

impl SharedStats {
    /// Fresh figures; connected until something fails.
    pub fn new() -> Self {
        Self {
            connected: AtomicBool::new(true),
            ..Self::default()
        }
    }

    /// L1 misses answered from Redis.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// L1 misses Redis could not answer.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Redis operations that failed or timed out.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether Redis answered the last operation.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether the invalidation subscriber is subscribed now.
    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// The figures now, for a configured layer talking to `host`.
    pub fn snapshot(&self, host: &str) -> SharedSnapshot {
        SharedSnapshot {
            configured: true,
            connected: self.connected(),
            subscribed: self.subscribed(),
            host: Some(host.to_owned()),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            hits: self.hits(),
            misses: self.misses(),
            errors: self.errors(),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

/// What an invalidation dropped; travels to the other instances as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Invalidation {
    /// Every entry carrying any of these tags.
    Tags {
        /// The tags.
        tags: Vec<String>,
    },
    /// Every entry of one tool of one server.
    ServerTool {
        /// The server.
        server: String,
        /// The tool.
        tool: String,
    },
    /// One entry.
    Key {
        /// Its cache key.
        key: String,
    },
    /// Everything.
    All,
}

/// One message on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The sending instance, which ignores its own messages (it applied them already).
    from: String,
    invalidation: Invalidation,
}

/// What an entry holds in Redis: the answer and the tags an L1 filled from it needs.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<CallToolResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read: Option<ReadResourceResult>,
}

/// An entry found in Redis.
pub(crate) struct Found {
    pub result: Cached,
    pub tags: Vec<String>,
    /// What is left of its TTL.
    pub ttl: Duration,
}

/// What a lookup learned: the entry if any, and Redis's time when it looked, which a later write
/// of the same key must present (module doc).
pub(crate) struct Probe {
    pub found: Option<Found>,
    pub looked_at_ms: u64,
}

/// Stores an entry unless one of its tags (or everything) was invalidated since the load began.
/// KEYS: entry, then n tag sets, then n tag markers, then the all-marker.
/// ARGV: value, ttl ms, load start ms, n.
const PUT_SCRIPT: &str = r"
local n = tonumber(ARGV[4])
local began = tonumber(ARGV[3])
local all = redis.call('GET', KEYS[2 * n + 2])
if all and tonumber(all) >= began then return 0 end
for i = 1, n do
  local at = redis.call('GET', KEYS[n + 1 + i])
  if at and tonumber(at) >= began then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 1, n do
  redis.call('SADD', KEYS[1 + i], KEYS[1])
  if redis.call('PTTL', KEYS[1 + i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1 + i], ARGV[2])
  end
end
return 1
";

/// Drops every entry of the given tags and their sets, marks the tags invalidated now (Redis
/// time), and tells the other instances.
/// KEYS: n tag sets, then n tag markers. ARGV: n, marker ttl ms, channel, message.
const INVALIDATE_TAGS_SCRIPT: &str = r"
local n = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dropped = 0
for i = 1, n do
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    dropped = dropped + redis.call('DEL', key)
  end
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[n + i], now, 'PX', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return dropped
";

/// Marks "everything invalidated now" (Redis time). KEYS: the all-marker. ARGV: marker ttl ms.
const MARK_ALL_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], now, 'PX', ARGV[1])
return now
";

/// The Redis layer of one [`ResultCache`]. Built only when `orchestrator.cache.redis` is set.
pub(crate) struct Shared {
    settings: SharedSettings,
    /// Multiplexed and reconnecting by itself (on the next operation after an I/O error).
    manager: ConnectionManager,
    stats: Arc<SharedStats>,
    /// Tells this instance's messages from the others'.
    instance: String,
    /// Until when Redis is left alone after a failure (module doc).
    resting_until: Mutex<Option<Instant>>,
    /// Invalidations that could not reach Redis, replayed before it is used again.
    pending: Mutex<Vec<Invalidation>>,
    /// Stops the subscriber when the cache goes.
    _subscriber: DropGuard,
    /// Where the subscriber is handed its L1 once the cache exists.
    local: tokio::sync::watch::Sender<Option<ResultCache>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Connects lazily (the first operation connects) and starts the invalidation subscriber.
    /// Must run inside a Tokio runtime.
    pub fn new(settings: SharedSettings, stats: Arc<SharedStats>) -> Result<Self, SharedError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.timeout))
            .set_connection_timeout(Some(connect_timeout(settings.timeout)))
            // Few and short: our own timeout bounds every caller, and the next operation after
            // a failed reconnection starts another.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let instance = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        let stop = CancellationToken::new();
        let (local, local_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(subscribe(
            client,
            settings.clone(),
            instance.clone(),
            Arc::clone(&stats),
            local_rx,
            stop.clone(),
        ));
        Ok(Self {
            settings,
            manager,
            stats,
            instance,
            resting_until: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            _subscriber: stop.drop_guard(),
            local,
        })
    }

    /// Hands the subscriber the L1 it invalidates (a view of the cache without this layer, so
    /// applying another instance's invalidation does not publish it again).
    pub fn attach(&self, local: ResultCache) {
        self.local.send_replace(Some(local));
    }

    /// The figures.
    pub fn stats(&self) -> &Arc<SharedStats> {
        &self.stats
    }

    /// The settings.
    pub fn settings(&self) -> &SharedSettings {
        &self.settings
    }

    /// Looks `key` up. `None` when Redis is unavailable (the caller loads from the upstream and
    /// stores nothing in Redis).
    pub async fn get(&self, key: &str) -> Option<Probe> {
        let entry = self.entry_key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(&entry)
            .cmd("PTTL")
            .arg(&entry)
            .cmd("TIME");
        let outcome = self
            .run(async |mut con| {
                let (value, pttl, (secs, micros)): (Option<Vec<u8>>, i64, (u64, u64)) =
                    pipe.query_async(&mut con).await?;
                let looked_at_ms = secs * 1000 + micros / 1000;
                let found = match value {
                    // Expiring now (or no expiry, which this layer never writes): not worth it.
                    Some(_) if pttl <= 0 => None,
                    Some(bytes) => Some(decode(&bytes, pttl)?),
                    None => None,
                };
                Ok(Probe {
                    found,
                    looked_at_ms,
                })
            })
            .await?;
        let counter = match outcome.found {
            Some(_) => &self.stats.hits,
            None => &self.stats.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some(outcome)
    }

    /// Stores an entry in the background (the caller has its answer already), unless an
    /// invalidation of one of its tags ran in Redis since `looked_at_ms`.
    pub fn spawn_put(
        self: &Arc<Self>,
        key: &str,
        result: &Cached,
        tags: &[String],
        ttl: Duration,
        looked_at_ms: u64,
    ) {
        let stored = Stored {
            tags: tags.to_vec(),
            tool: match result {
                Cached::Tool(r) => Some((**r).clone()),
                Cached::Read(_) => None,
            },
            read: match result {
                Cached::Read(r) => Some((**r).clone()),
                Cached::Tool(_) => None,
            },
        };
        let value = match serde_json::to_vec(&stored) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "cache entry not encodable; not shared");
                return;
            }
        };
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUT_SCRIPT)
            .arg(2 * tags.len() + 2)
            .arg(self.entry_key(key));
        for tag in tags {
            cmd.arg(self.tag_key(tag));
        }
        for tag in tags {
            cmd.arg(self.marker_key(tag));
        }
        cmd.arg(self.all_marker_key())
            .arg(value)
            .arg(ttl_ms)
            .arg(looked_at_ms)
            .arg(tags.len());
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let stored = this
                .run(async |mut con| Ok(cmd.query_async::<i64>(&mut con).await?))
                .await;
            if stored == Some(1) {
                this.stats.writes.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Drops what `invalidation` covers from Redis and tells the other instances, within the
    /// timeout; if Redis is unavailable it is kept and replayed later (module doc).
    pub async fn invalidate(&self, invalidation: Invalidation) {
        if self.resting() || !self.replay_pending().await {
            self.keep_pending(invalidation);
            return;
        }
        if self.apply_remote(&invalidation).await.is_none() {
            self.keep_pending(invalidation);
        }
    }

    fn keep_pending(&self, invalidation: Invalidation) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING || invalidation == Invalidation::All {
            *pending = vec![Invalidation::All];
        } else if !pending.contains(&Invalidation::All) {
            pending.push(invalidation);
        }
    }

    /// Runs one invalidation against Redis (no pending replay first).
    async fn apply_remote(&self, invalidation: &Invalidation) -> Option<()> {
        let message = serde_json::to_string(&Message {
            from: self.instance.clone(),
            invalidation: invalidation.clone(),
        })
        .ok()?;
        let marker_ms = MARKER_TTL.as_millis() as u64;
        match invalidation {
            Invalidation::Tags { tags } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(INVALIDATE_TAGS_SCRIPT).arg(2 * tags.len());
                for tag in tags {
                    cmd.arg(self.tag_key(tag));
                }
                for tag in tags {
                    cmd.arg(self.marker_key(tag));
                }
                cmd.arg(tags.len())
                    .arg(marker_ms)
                    .arg(&self.settings.channel)
                    .arg(message);
                self.run_raw(async |mut con| Ok(cmd.query_async::<i64>(&mut con).await?))
                    .await
                    .map(drop)
            }
            other => {
                // Not by tag: mark everything invalidated (so no load in flight anywhere stores
                // its answer), drop the matching entries, then tell the others.
                let pattern = match other {
                    Invalidation::ServerTool { server, tool } => Some(format!(
                        "{}*",
                        glob_escape(&self.entry_key(&super::server_tool_prefix(server, tool)))
                    )),
                    Invalidation::All => Some(format!("{}*", glob_escape(&self.entry_key("")))),
                    Invalidation::Key { .. } | Invalidation::Tags { .. } => None,
                };
                let all_marker = self.all_marker_key();
                let channel = self.settings.channel.clone();
                let single = match other {
                    Invalidation::Key { key } => Some(self.entry_key(key)),
                    _ => None,
                };
                self.run_raw(async move |mut con| {
                    redis::cmd("EVAL")
                        .arg(MARK_ALL_SCRIPT)
                        .arg(1)
                        .arg(&all_marker)
                        .arg(marker_ms)
                        .query_async::<i64>(&mut con)
                        .await?;
                    if let Some(key) = single {
                        redis::cmd("DEL")
                            .arg(key)
                            .query_async::<i64>(&mut con)
                            .await?;
                    }
                    if let Some(pattern) = pattern {
                        delete_matching(&mut con, &pattern).await?;
                    }
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(message)
                        .query_async::<i64>(&mut con)
                        .await?;
                    Ok(())
                })
                .await
            }
        }
    }

    /// Runs `op` within the timeout, after replaying pending invalidations; records the outcome.
    /// `None` when Redis is resting after a failure, or failed now.
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(ConnectionManager) -> Result<T, SharedError>,
    ) -> Option<T> {
        if self.resting() || !self.replay_pending().await {
            return None;
        }
        self.run_raw(op).await
    }

    /// Whether Redis is being left alone after a failure.
    fn resting(&self) -> bool {
        self.resting_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Sends the invalidations Redis missed; `false` if it failed again (they are kept).
    async fn replay_pending(&self) -> bool {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (i, invalidation) in pending.iter().enumerate() {
            if self.apply_remote(invalidation).await.is_none() {
                for rest in &pending[i..] {
                    self.keep_pending(rest.clone());
                }
                return false;
            }
        }
        if !pending.is_empty() {
            tracing::info!(
                replayed = pending.len(),
                "invalidations missed while redis was unavailable reached it"
            );
        }
        true
    }

    /// [`Shared::run`] without the replay.
    async fn run_raw<T>(
        &self,
        op: impl AsyncFnOnce(ConnectionManager) -> Result<T, SharedError>,
    ) -> Option<T> {
        if self.resting() {
            return None;
        }
        let timeout = self.settings.timeout;
        let outcome = match tokio::time::timeout(timeout, op(self.manager.clone())).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SharedError::Timeout(timeout)),
        };
        match outcome {
            Ok(value) => {
                *self.resting_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if !self.stats.connected.swap(true, Ordering::Relaxed) {
                    tracing::info!(redis = %self.settings.host, "redis back: the cache is shared again");
                }
                Some(value)
            }
            Err(SharedError::Decode(e)) => {
                // Redis works; the value does not. Treated as a miss, and counted.
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "undecodable shared cache entry ignored");
                None
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let message = self.redact(&e.to_string());
                *self
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
                *self.resting_until.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now() + RETRY_AFTER);
                if self.stats.connected.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        redis = %self.settings.host,
                        error = %message,
                        "redis unavailable: the cache runs on this instance's memory alone"
                    );
                }
                None
            }
        }
    }

    /// An error text without the URL's password, should the client ever quote it.
    fn redact(&self, text: &str) -> String {
        redact_url(&self.settings.url, text)
    }

    fn entry_key(&self, key: &str) -> String {
        format!("{}entry:{key}", self.settings.key_prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}tag:{tag}", self.settings.key_prefix)
    }

    fn marker_key(&self, tag: &str) -> String {
        format!("{}invalidated:{tag}", self.settings.key_prefix)
    }

    fn all_marker_key(&self) -> String {
        format!("{}invalidated", self.settings.key_prefix)
    }
}

/// The connection attempt's own bound: connecting costs more round trips than one command, and
/// it runs in the background of callers already bounded by `timeoutMs`.
fn connect_timeout(timeout: Duration) -> Duration {
    (timeout * 4).max(Duration::from_millis(250))
}

fn decode(bytes: &[u8], pttl_ms: i64) -> Result<Found, SharedError> {
    let stored: Stored = serde_json::from_slice(bytes)?;
    let result = match (stored.tool, stored.read) {
        (Some(tool), _) => Cached::Tool(Arc::new(tool)),
        (None, Some(read)) => Cached::Read(Arc::new(read)),
        (None, None) => {
            return Err(SharedError::Decode(serde::de::Error::custom(
                "neither `tool` nor `read`",
            )));
        }
    };
    Ok(Found {
        result,
        tags: stored.tags,
        ttl: Duration::from_millis(u64::try_from(pttl_ms).unwrap_or(0)),
    })
}

/// Deletes every key matching `pattern` (SCAN, so Redis is never blocked on a large keyspace).
async fn delete_matching(con: &mut ConnectionManager, pattern: &str) -> Result<(), SharedError> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(con)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query_async::<i64>(con).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// `s` with Redis glob metacharacters escaped (keys are JSON, full of `[`).
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` with the password of `url` (if it has one) replaced by `***`.
pub fn redact_url(url: &str, text: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':').map(|(_, p)| p).or(Some(userinfo)))
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => text.replace(p, "***"),
        None => text.to_owned(),
    }
}

/// The subscriber: applies other instances' invalidations to this instance's L1. Resubscribes
/// after a disconnection (with backoff) and then drops all of L1, since invalidations sent while
/// it was away are lost (pub/sub does not queue).
async fn subscribe(
    client: redis::Client,
    settings: SharedSettings,
    instance: String,
    stats: Arc<SharedStats>,
    mut local: tokio::sync::watch::Receiver<Option<ResultCache>>,
    stop: CancellationToken,
) {
    let cache = tokio::select! {
        c = local.wait_for(Option::is_some) => match c {
            Ok(c) => c.clone(),
            Err(_) => return,
        },
        () = stop.cancelled() => return,
    };
    let Some(cache) = cache else { return };
    drop(local);
    let connect = || async {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&settings.channel).await?;
            Ok::<_, SharedError>(pubsub)
        };
        let bound = connect_timeout(settings.timeout);
        tokio::time::timeout(bound, subscribed)
            .await
            .unwrap_or(Err(SharedError::Timeout(bound)))
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times();
    loop {
        let pubsub = tokio::select! {
            p = connect.retry(backoff).notify(|e, after| {
                tracing::debug!(redis = %settings.host, error = %redact_url(&settings.url, &e.to_string()), ?after, "redis subscription failed; retrying");
            }) => p,
            () = stop.cancelled() => return,
        };
        let Ok(pubsub) = pubsub else { return };
        // Whatever L1 holds may have missed invalidations sent while this instance was not
        // listening (before the first subscription too).
        cache.invalidate_all_locally();
        stats.subscribed.store(true, Ordering::Relaxed);
        tracing::debug!(redis = %settings.host, channel = %settings.channel, "subscribed to cache invalidations");
        let (mut sink, mut messages) = pubsub.split();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                _ = heartbeat.tick() => {
                    let bound = connect_timeout(settings.timeout);
                    match tokio::time::timeout(bound, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => continue,
                        _ => break,
                    }
                }
                () = stop.cancelled() => {
                    stats.subscribed.store(false, Ordering::Relaxed);
                    return;
                }
            };
            let Some(message) = message else { break };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            match serde_json::from_str::<Message>(&payload) {
                Ok(m) if m.from == instance => {}
                Ok(m) => cache.invalidate_locally(&m.invalidation),
                Err(e) => {
                    tracing::debug!(error = %e, "foreign message on the invalidation channel")
                }
            }
        }
        stats.subscribed.store(false, Ordering::Relaxed);
        tracing::warn!(redis = %settings.host, "redis subscription lost; other instances' invalidations are missed until it is back");
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_texts_and_debug() {
        let url = "redis://user:s3cret-pw@cache.internal:6380/2";
        assert_eq!(
            redact_url(url, &format!("failed: {url}")),
            "failed: redis://user:***@cache.internal:6380/2"
        );
        assert_eq!(redact_url("redis://127.0.0.1/", "x"), "x");
        let settings =
            SharedSettings::new(url, "p:".into(), Duration::from_millis(50), None).expect("valid");
        assert_eq!(settings.host, "cache.internal:6380");
        assert_eq!(settings.channel, "p:invalidations");
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(glob_escape(r#"p:entry:["s","t","#), r#"p:entry:\["s","t","#);
        assert_eq!(glob_escape("a*b?c]"), r"a\*b\?c\]");
    }
}
