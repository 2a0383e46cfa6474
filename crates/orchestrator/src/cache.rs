//! The result cache: successful upstream tool results and resource reads, shared by identical
//! calls, with TTL tiers, single-flight loads and tag invalidation.
//!
//! One [`ResultCache`] serves every upstream server. An entry is keyed by server, tool and
//! *canonical* arguments ([`ResultCache::key`]), lives for the TTL its caller chose (a
//! [`Tier`] or an explicit duration, resolved by [`CacheSettings::ttl`]), and carries tags so a
//! write can drop every result it made stale ([`ResultCache::invalidate_tags`]).
//!
//! What is stored: only `Ok(result)` whose `is_error` is not `Some(true)`. Transport or policy
//! errors and tool-error results reach every caller waiting on the load, and the next call asks
//! the upstream again: caching a failure would turn one bad second into a bad TTL.
//!
//! A load may also decline to be stored ([`Loaded::store`]): a composite's degraded answer (a
//! fallback, a failed step) reaches its callers but is not kept for the TTL.
//!
//! An answer that carries its own cache hint (a `resources/read` result's `ttlMs` and
//! `cacheScope`, see [`CacheValue::hint`]) is kept only as the upstream allows: never when it
//! is stale at once (`ttlMs: 0`, or no hint) or `private` (it would reach other clients), and
//! never longer than its `ttlMs`. A private answer is not even shared with the concurrent
//! callers of its load: each of them asks the upstream itself. A hit tells what is left of the
//! upstream's TTL ([`CacheValue::aged`]). Tool results carry no hint in the protocol.
//!
//! The storage is [`moka::future::Cache`]: `try_get_with` gives single-flight (concurrent
//! identical misses run one load), an [`Expiry`] gives each entry its own TTL, and
//! `invalidate_entries_if` drops entries by predicate without blocking the caller.
//!
//! Invalidation and loads in flight: moka's predicates only reach entries stored *before* the
//! invalidation, so a load that read the upstream before a write and finishes after it would store
//! a stale entry. Every invalidation therefore bumps a generation counter; a load whose generation
//! changed while it ran is returned to its callers but not stored (and an entry that slipped in
//! between that check and moka's insert is removed right after). A caller that joined such a load
//! after the invalidation asks again, so it sees the write. The counter is cache-wide: any
//! invalidation during a load costs that load its entry, never correctness.
//!
//! Several instances ([`shared`], optional): with `orchestrator.cache.redis` set, this in-process
//! cache is the L1 in front of an L2 in Redis holding the same keys, TTLs and tags. An L1 miss asks
//! Redis inside the single-flight load (bounded by its short timeout) before the upstream; a hit
//! there fills L1, a successful upstream answer is written there in the background. Invalidations
//! reach Redis before they return (within the timeout) and the other instances' L1 through
//! pub/sub. Single flight stays per instance. Redis down or slow: L1 alone, never a failed call.

pub mod shared;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use rmcp::model::{CacheScope, CallToolResult, JsonObject, ReadResourceResult};
use serde_json::Value;

use crate::hints::CacheHint;
use shared::{Invalidation, Shared, SharedError, SharedSettings, SharedSnapshot, SharedStats};

/// A named TTL, so `mcp.json` says how fresh a result must be, not a number of milliseconds
/// repeated at every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Data that changes often (stock levels): default 60 s.
    Short,
    /// Data that changes during the day (customer behaviour): default 15 min.
    Medium,
    /// Data that rarely changes (product catalogue): default 1 h.
    Long,
}

/// How long one tool's or step's results are cached, as written in `mcp.json`:
/// `"cache": "short"` or `"cache": {"ttlMs": 30000}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(
    untagged,
    deny_unknown_fields,
    expecting = "a cache tier (\"short\", \"medium\" or \"long\") or {\"ttlMs\": <milliseconds>}"
)]
pub enum CacheSpec {
    /// One of the configured tiers; the duration comes from [`CacheSettings`].
    Tier(Tier),
    /// An explicit TTL. `0` means "do not cache" (every call goes upstream).
    Ttl {
        /// Time to live in milliseconds.
        #[serde(rename = "ttlMs")]
        ttl_ms: u64,
    },
}

/// Cache-wide settings: what each tier means, and how many entries fit.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// TTL of [`Tier::Short`].
    pub short: Duration,
    /// TTL of [`Tier::Medium`].
    pub medium: Duration,
    /// TTL of [`Tier::Long`].
    pub long: Duration,
    /// Upper bound on stored results, so a burst of distinct arguments cannot grow memory without
    /// limit; past it the least valuable entries are evicted (moka's TinyLFU).
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            short: Duration::from_secs(60),
            medium: Duration::from_secs(15 * 60),
            long: Duration::from_secs(60 * 60),
            max_entries: 10_000,
        }
    }
}

impl CacheSettings {
    /// The TTL a spec stands for under these settings.
    pub fn ttl(&self, spec: &CacheSpec) -> Duration {
        match spec {
            CacheSpec::Tier(Tier::Short) => self.short,
            CacheSpec::Tier(Tier::Medium) => self.medium,
            CacheSpec::Tier(Tier::Long) => self.long,
            CacheSpec::Ttl { ttl_ms } => Duration::from_millis(*ttl_ms),
        }
    }
}

/// What a load hands the cache ([`ResultCache::get_or_load_with`]).
#[derive(Debug)]
pub struct Loaded<V = CallToolResult> {
    /// The answer, for every caller waiting on the load.
    pub result: V,
    /// Tags the stored entry carries (a composite knows them only once its steps have run).
    pub tags: Vec<String>,
    /// Whether the answer may be stored; `false` answers the waiting callers and keeps nothing.
    pub store: bool,
}

/// What one entry holds: the cache keeps answers of more than one kind under one bound, one set
/// of figures and one invalidation.
#[derive(Debug, Clone)]
pub enum Cached {
    /// A `tools/call` result (a pass-through call's, a composite step's or a composite's).
    Tool(Arc<CallToolResult>),
    /// A `resources/read` result.
    Read(Arc<ReadResourceResult>),
}

/// An answer the cache can hold.
pub trait CacheValue: Send + Sync + Sized + 'static {
    /// Wraps it for storage.
    fn into_cached(this: Arc<Self>) -> Cached;
    /// Unwraps a stored answer of this kind; `None` for one of another kind.
    fn from_cached(cached: &Cached) -> Option<Arc<Self>>;
    /// A failure answered in the result (a tool error): reaches its callers, never stored.
    fn is_failure(&self) -> bool;
    /// The answer's own cache hint, for kinds that carry one on the wire.
    fn hint(&self) -> Option<CacheHint>;
    /// The stored answer as served `remaining` before its entry expires.
    fn aged(this: &Arc<Self>, _remaining: Duration) -> Arc<Self> {
        Arc::clone(this)
    }
}

impl CacheValue for CallToolResult {
    fn into_cached(this: Arc<Self>) -> Cached {
        Cached::Tool(this)
    }

    fn from_cached(cached: &Cached) -> Option<Arc<Self>> {
        match cached {
            Cached::Tool(r) => Some(Arc::clone(r)),
            Cached::Read(_) => None,
        }
    }

    fn is_failure(&self) -> bool {
        self.is_error == Some(true)
    }

    /// The protocol gives tool results no cache hint; the configured rules decide alone.
    fn hint(&self) -> Option<CacheHint> {
        None
    }
}

impl CacheValue for ReadResourceResult {
    fn into_cached(this: Arc<Self>) -> Cached {
        Cached::Read(this)
    }

    fn from_cached(cached: &Cached) -> Option<Arc<Self>> {
        match cached {
            Cached::Read(r) => Some(Arc::clone(r)),
            Cached::Tool(_) => None,
        }
    }

    fn is_failure(&self) -> bool {
        false
    }

    /// Always a hint: a read that says nothing is stale at once and private.
    fn hint(&self) -> Option<CacheHint> {
        Some(CacheHint::from_wire(self.ttl_ms, self.cache_scope))
    }

    /// Its `ttlMs` says what is left, so an agent does not keep it past the upstream's word.
    fn aged(this: &Arc<Self>, remaining: Duration) -> Arc<Self> {
        let mut aged = (**this).clone();
        aged.ttl_ms = Some(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX));
        Arc::new(aged)
    }
}

/// How many times a caller that shared a load begun before an invalidation asks again before it
/// takes what it gets (each round waits for a fresh load, so one is enough unless writes keep
/// coming).
const FRESH_LOAD_ROUNDS: usize = 3;

/// Whether a call was answered from a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A stored, unexpired entry answered without waiting for any upstream call.
    Hit,
    /// Nothing was stored: this caller either ran the load or shared a concurrent caller's load.
    Miss,
}

/// The cache's figures for the status report. Counters are totals since the cache was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheSnapshot {
    /// Entries stored now (approximate until pending maintenance has run, see
    /// [`ResultCache::run_pending_tasks`]).
    pub entries: u64,
    /// Calls answered from a stored entry.
    pub hits: u64,
    /// Calls that found nothing stored in this instance's memory. `misses - loads` is how many
    /// shared another caller's load or were answered from Redis (its own figures say which).
    pub misses: u64,
    /// Upstream calls the cache made (one per single-flight group, stored or not; a group Redis
    /// answered makes none).
    pub loads: u64,
    /// Entries removed by the cache itself: TTL expired or size bound reached.
    pub evictions: u64,
    /// Entries removed on request: tags, server/tool or all.
    pub invalidations: u64,
}

/// One stored result and what the cache needs to manage it.
#[derive(Debug)]
struct Entry {
    /// Shared so a hit costs a reference count, not a deep copy of the content.
    result: Cached,
    /// Read by [`EntryTtl`]: each entry expires after the TTL its caller chose.
    ttl: Duration,
    /// Matched by [`ResultCache::invalidate_tags`].
    tags: Box<[String]>,
    /// Tells the eviction listener whether a replaced entry had expired or been invalidated.
    stored_at: Instant,
    /// The invalidation generation when its load began (see the module doc).
    generation: u64,
}

/// Gives each entry the TTL recorded in it, so one cache holds several tiers.
struct EntryTtl;

impl Expiry<String, Arc<Entry>> for EntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        // A replaced value starts a fresh TTL: it is a fresh upstream answer.
        Some(value.ttl)
    }
}

/// Why a load's outcome was not stored. It travels through moka's error path so every caller
/// waiting on the load receives it, and is mapped back in [`ResultCache::get_or_load`].
enum Uncached<E> {
    /// An answer for the callers, not one to keep: the tool answered with `is_error: true`, the
    /// load declined to be stored, its hint forbids keeping it, or an invalidation ran while it
    /// loaded.
    Answer {
        /// The answer.
        result: Cached,
        /// The invalidation generation when the load began.
        generation: u64,
        /// Its hint says `private`: for the caller that loaded it only.
        private: bool,
    },
    /// The upstream call failed.
    Err(E),
}

/// Counters shared by the cache handle and moka's eviction listener.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Cached upstream tool results. Cloning is cheap and shares the same entries and figures.
#[derive(Clone)]
pub struct ResultCache {
    /// Key → entry; see the module doc for why moka.
    cache: Cache<String, Arc<Entry>>,
    /// Shared with the eviction listener, which counts removals moka performs in the background.
    counters: Arc<Counters>,
    /// Bumped by every invalidation, so a load that overlapped one is not stored (module doc).
    generation: Arc<AtomicU64>,
    /// The Redis layer, when configured; `None` keeps every Redis code path off.
    shared: Option<Arc<Shared>>,
}

impl fmt::Debug for ResultCache {
    // Not derived: moka's `Debug` prints every entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultCache")
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl ResultCache {
    /// An empty cache bounded by `settings.max_entries`.
    pub fn new(settings: CacheSettings) -> Self {
        let counters = Arc::new(Counters::default());
        let listener_counters = Arc::clone(&counters);
        let cache = Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(EntryTtl)
            .support_invalidation_closures()
            .eviction_listener(move |_key, entry: Arc<Entry>, cause| {
                let counter = match cause {
                    RemovalCause::Expired | RemovalCause::Size => &listener_counters.evictions,
                    RemovalCause::Explicit => &listener_counters.invalidations,
                    // A load stored a new value over one that was still present: moka reports
                    // this instead of `Expired` or `Explicit` when the old entry had expired, or
                    // had been invalidated, but maintenance had not removed it yet (a load never
                    // replaces a live entry, single-flight answers from it).
                    RemovalCause::Replaced if entry.stored_at.elapsed() >= entry.ttl => {
                        &listener_counters.evictions
                    }
                    RemovalCause::Replaced => &listener_counters.invalidations,
                };
                Counters::bump(counter);
            })
            .build();
        Self {
            cache,
            counters,
            generation: Arc::new(AtomicU64::new(0)),
            shared: None,
        }
    }

    /// A cache whose L1 (`settings`) sits in front of a shared L2 in Redis (module doc),
    /// counting into `stats`. Connects lazily: Redis need not be up yet. Must run inside a Tokio
    /// runtime (it starts the invalidation subscriber).
    pub fn with_shared(
        settings: CacheSettings,
        redis: SharedSettings,
        stats: Arc<SharedStats>,
    ) -> Result<Self, SharedError> {
        let local = Self::new(settings);
        let shared = Arc::new(Shared::new(redis, stats)?);
        shared.attach(local.clone());
        Ok(Self {
            shared: Some(shared),
            ..local
        })
    }

    /// The Redis layer's figures; `None` when there is none.
    pub fn shared_snapshot(&self) -> Option<SharedSnapshot> {
        self.shared
            .as_ref()
            .map(|s| s.stats().snapshot(&s.settings().host))
    }

    /// The cache key of one call: server, tool and arguments with object keys sorted at every
    /// depth, so argument order does not split entries. No arguments and `{}` are the same call.
    ///
    /// The key is a JSON array `["server","tool",{..}]`: unambiguous whatever characters the
    /// names hold, and [`ResultCache::invalidate_server_tool`] matches its prefix.
    pub fn key(server: &str, tool: &str, arguments: Option<&JsonObject>) -> String {
        let mut key = server_tool_prefix(server, tool);
        match arguments {
            Some(arguments) => write_canonical_object(arguments, &mut key),
            None => key.push_str("{}"),
        }
        key.push(']');
        key
    }

    /// The key of a `resources/read` of upstream `server`'s own `uri`: keyed like a call of a
    /// tool named `resources/read` with `{"uri": ..}`, which no tool can be (tool names hold no
    /// `/`), so `{"server": .., "tool": "resources/read"}` drops a server's stored reads.
    pub fn read_key(server: &str, uri: &str) -> String {
        let mut arguments = JsonObject::new();
        arguments.insert("uri".into(), Value::from(uri));
        Self::key(server, "resources/read", Some(&arguments))
    }

    /// Returns the cached result or runs `load` once for all concurrent callers of the same key.
    ///
    /// `load` returns the upstream outcome; only `Ok(result)` that is no failure (a tool result
    /// with `is_error: true` is one) and whose own hint allows it is stored, for `ttl` (or the
    /// hint's shorter TTL), with `tags`. A failure reaches every waiter as `Ok(result)` and an
    /// error as `Err(e)` (cloned per waiter); neither is stored, so the next call loads again.
    /// If the caller running the load is dropped, a waiting caller runs its own `load`.
    /// A zero `ttl` bypasses the cache (the call still counts as a miss and a load).
    pub async fn get_or_load<V, F, E>(
        &self,
        key: String,
        ttl: Duration,
        tags: Vec<String>,
        load: F,
    ) -> (Result<Arc<V>, E>, Lookup)
    where
        V: CacheValue,
        F: Future<Output = Result<V, E>> + Send,
        E: Clone + Send + Sync + 'static,
    {
        // Boxed: single flight (moka's and ours) is a state machine of about 20 KB, which every
        // future awaiting this one would carry and copy when moved, loaded from here or not:
        // rmcp's task for any request is as large as its largest handler's future.
        Box::pin(self.get_or_load_with(key, ttl, async move {
            load.await.map(|result| Loaded {
                result,
                tags,
                store: true,
            })
        }))
        .await
    }

    /// [`ResultCache::get_or_load`], with the tags and whether to store given by the load itself.
    ///
    /// Not stored either: an answer with [`Loaded::store`] false, and one whose load overlapped an
    /// invalidation (module doc); both still reach every caller waiting on the load, except a
    /// caller that arrived after that invalidation, which waits for a load of its own. An answer
    /// its hint marks private reaches only the caller that loaded it; the others load their own.
    pub async fn get_or_load_with<V, F, E>(
        &self,
        key: String,
        ttl: Duration,
        load: F,
    ) -> (Result<Arc<V>, E>, Lookup)
    where
        V: CacheValue,
        F: Future<Output = Result<Loaded<V>, E>> + Send,
        E: Clone + Send + Sync + 'static,
    {
        // Looked up first, apart from the load, so a caller that waited on a concurrent load is
        // reported as a miss: `Hit` promises an answer that cost no upstream wait.
        if let Some(entry) = self.cache.get(&key).await
            && let Some(result) = V::from_cached(&entry.result)
        {
            Counters::bump(&self.counters.hits);
            let remaining = entry.ttl.saturating_sub(entry.stored_at.elapsed());
            return (Ok(V::aged(&result, remaining)), Lookup::Hit);
        }
        Counters::bump(&self.counters.misses);

        // Polled through a pinned reference, so that when this caller only shared another
        // caller's load it still holds its own for the next round.
        let mut load = std::pin::pin!(load);
        if ttl.is_zero() {
            return self.load_alone(load.as_mut()).await;
        }
        let mut round = 1;
        loop {
            // The generation this caller saw before asking: a shared load begun earlier than a
            // later invalidation is not fresh enough for it.
            let arrived = self.generation.load(Ordering::SeqCst);
            let mut ran = false;
            // This caller's own answer, when it ran the load.
            let mut mine: Option<Arc<V>> = None;
            // Redis's time when the L2 lookup missed: a write of the load's answer presents it.
            let mut looked_at: Option<u64> = None;
            let mut from_l2 = false;
            let init = {
                let (load, ran, mine) = (load.as_mut(), &mut ran, &mut mine);
                let (looked_at, from_l2) = (&mut looked_at, &mut from_l2);
                let (counters, generation) = (&self.counters, &self.generation);
                let (shared, key) = (self.shared.as_deref(), &key);
                async move {
                    *ran = true;
                    let began = generation.load(Ordering::SeqCst);
                    if let Some(probe) = match shared {
                        Some(shared) => shared.get(key).await,
                        None => None,
                    } {
                        *looked_at = Some(probe.looked_at_ms);
                        if let Some(found) = probe.found
                            && let Some(result) = V::from_cached(&found.result)
                        {
                            *from_l2 = true;
                            *mine = Some(result);
                            if generation.load(Ordering::SeqCst) != began {
                                return Err(Uncached::Answer {
                                    result: found.result,
                                    generation: began,
                                    private: false,
                                });
                            }
                            return Ok(Arc::new(Entry {
                                result: found.result,
                                ttl: found.ttl.min(ttl),
                                tags: found.tags.into_boxed_slice(),
                                stored_at: Instant::now(),
                                generation: began,
                            }));
                        }
                    }
                    Counters::bump(&counters.loads);
                    let l = match load.await {
                        Ok(l) => l,
                        Err(e) => return Err(Uncached::Err(e)),
                    };
                    let hint = l.result.hint();
                    let keep = l.store && !l.result.is_failure();
                    let result = Arc::new(l.result);
                    *mine = Some(Arc::clone(&result));
                    let answer = |private| Uncached::Answer {
                        result: V::into_cached(Arc::clone(&result)),
                        generation: began,
                        private,
                    };
                    match hint {
                        _ if !keep => Err(answer(false)),
                        // The upstream's word: stale at once, or not for other clients.
                        Some(h) if !h.is_shareable() => Err(answer(h.scope == CacheScope::Private)),
                        // An invalidation ran while the upstream answered: the answer may
                        // predate the write, so it is not kept.
                        _ if generation.load(Ordering::SeqCst) != began => Err(answer(false)),
                        _ => Ok(Arc::new(Entry {
                            result: V::into_cached(result),
                            ttl: hint.map_or(ttl, |h| ttl.min(h.ttl)),
                            tags: l.tags.into_boxed_slice(),
                            stored_at: Instant::now(),
                            generation: began,
                        })),
                    }
                }
            };
            let (result, began) = match self.cache.try_get_with(key.clone(), init).await {
                Ok(entry) => {
                    if ran && self.generation.load(Ordering::SeqCst) != entry.generation {
                        // An invalidation ran between the check above and moka's insert, so its
                        // predicate may have missed this entry: drop it.
                        self.cache.invalidate(&key).await;
                    } else if ran
                        && !from_l2
                        && let (Some(shared), Some(looked_at)) = (&self.shared, looked_at)
                    {
                        shared.spawn_put(&key, &entry.result, &entry.tags, entry.ttl, looked_at);
                    }
                    (entry.result.clone(), entry.generation)
                }
                Err(uncached) => match &*uncached {
                    Uncached::Answer { private: true, .. } if !ran => {
                        // Another client's private answer: this caller asks for its own.
                        return self.load_alone(load.as_mut()).await;
                    }
                    Uncached::Answer {
                        result, generation, ..
                    } => (result.clone(), *generation),
                    Uncached::Err(e) => return (Err(e.clone()), Lookup::Miss),
                },
            };
            if let Some(mine) = mine {
                // Answered from Redis: no upstream call was waited for.
                let lookup = if from_l2 { Lookup::Hit } else { Lookup::Miss };
                return (Ok(mine), lookup);
            }
            if began < arrived && round < FRESH_LOAD_ROUNDS {
                round += 1;
                continue;
            }
            return match V::from_cached(&result) {
                Some(result) => (Ok(result), Lookup::Miss),
                // An answer of another kind under this key (keys name their kind, so not
                // expected): this caller's own load answers it.
                None => self.load_alone(load.as_mut()).await,
            };
        }
    }

    /// Runs this caller's own load, outside single flight and storing nothing.
    async fn load_alone<V, E>(
        &self,
        load: std::pin::Pin<&mut impl Future<Output = Result<Loaded<V>, E>>>,
    ) -> (Result<Arc<V>, E>, Lookup) {
        Counters::bump(&self.counters.loads);
        (load.await.map(|l| Arc::new(l.result)), Lookup::Miss)
    }

    /// Drops every entry carrying any of `tags` (a write calls this with the tags of what it
    /// changed). Returns how many stored entries matched now in this instance; removal itself
    /// happens in moka's maintenance, but matched entries are never served again. Entries stored
    /// after this call are not affected, and loads in flight during it are not stored at all
    /// (module doc). With a shared layer, Redis's entries go too and the other instances are
    /// told, before this returns (within the Redis timeout; see [`shared`] when it is down).
    pub async fn invalidate_tags(&self, tags: &[String]) -> usize {
        let n = self.invalidate_tags_locally(tags);
        if !tags.is_empty() {
            self.invalidate_shared(Invalidation::Tags {
                tags: tags.to_vec(),
            })
            .await;
        }
        n
    }

    /// Drops every entry of one tool of one server, whatever its arguments (keys made by
    /// [`ResultCache::key`]), here and in the shared layer.
    pub async fn invalidate_server_tool(&self, server: &str, tool: &str) {
        self.invalidate_server_tool_locally(server, tool);
        self.invalidate_shared(Invalidation::ServerTool {
            server: server.to_owned(),
            tool: tool.to_owned(),
        })
        .await;
    }

    /// Drops the entry under `key`, if any, here and in the shared layer; a load of it in flight
    /// is not stored.
    pub async fn invalidate_key(&self, key: &str) {
        self.invalidate_key_locally(key);
        self.invalidate_shared(Invalidation::Key {
            key: key.to_owned(),
        })
        .await;
    }

    /// Drops every entry, here and in the shared layer.
    pub async fn invalidate_all(&self) {
        self.invalidate_all_locally();
        self.invalidate_shared(Invalidation::All).await;
    }

    async fn invalidate_shared(&self, invalidation: Invalidation) {
        if let Some(shared) = &self.shared {
            shared.invalidate(invalidation).await;
        }
    }

    /// Applies an invalidation to this instance's L1 only (another instance sent it).
    pub(crate) fn invalidate_locally(&self, invalidation: &Invalidation) {
        match invalidation {
            Invalidation::Tags { tags } => {
                self.invalidate_tags_locally(tags);
            }
            Invalidation::ServerTool { server, tool } => {
                self.invalidate_server_tool_locally(server, tool)
            }
            Invalidation::Key { key } => self.invalidate_key_locally(key),
            Invalidation::All => self.invalidate_all_locally(),
        }
    }

    /// [`ResultCache::invalidate_tags`] in this instance's L1 only.
    fn invalidate_tags_locally(&self, tags: &[String]) -> usize {
        if tags.is_empty() {
            return 0;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        let tags: HashSet<String> = tags.iter().cloned().collect();
        let marked = self
            .cache
            .iter()
            .filter(|(_, entry)| has_any_tag(entry, &tags))
            .count();
        self.invalidate_if(move |_, entry| has_any_tag(entry, &tags));
        marked
    }

    fn invalidate_server_tool_locally(&self, server: &str, tool: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let prefix = server_tool_prefix(server, tool);
        self.invalidate_if(move |key, _| key.starts_with(&prefix));
    }

    fn invalidate_key_locally(&self, key: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let key = key.to_owned();
        self.invalidate_if(move |k, _| *k == key);
    }

    /// Drops every entry of this instance's L1 (also what the subscriber does after it missed
    /// messages).
    pub(crate) fn invalidate_all_locally(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    /// Runs moka's pending maintenance now (expiries, evictions, invalidations), so that
    /// [`ResultCache::snapshot`] is exact. The cache also does this on its own as it is used.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// The current figures.
    pub fn snapshot(&self) -> CacheSnapshot {
        let c = &self.counters;
        CacheSnapshot {
            entries: self.cache.entry_count(),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
        }
    }

    fn invalidate_if(
        &self,
        predicate: impl Fn(&String, &Arc<Entry>) -> bool + Send + Sync + 'static,
    ) {
        if let Err(e) = self.cache.invalidate_entries_if(predicate) {
            // Unreachable while `new` enables invalidation closures; should it ever happen,
            // dropping everything is safe and serving stale results is not.
            tracing::error!(error = %e, "cache predicate invalidation refused; invalidating all");
            self.cache.invalidate_all();
        }
    }
}

fn has_any_tag(entry: &Entry, tags: &HashSet<String>) -> bool {
    entry.tags.iter().any(|t| tags.contains(t))
}

/// `["server","tool",`: the start of every key of that tool. JSON string escaping makes the
/// prefix of one server/tool pair never the prefix of another's keys.
pub(crate) fn server_tool_prefix(server: &str, tool: &str) -> String {
    let mut prefix = String::from("[");
    write_json_str(server, &mut prefix);
    prefix.push(',');
    write_json_str(tool, &mut prefix);
    prefix.push(',');
    prefix
}

/// Writes `value` as compact JSON with every object's keys in sorted order.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(object) => write_canonical_object(object, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars have one compact form; `Display` for `Value` writes it.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_canonical_object(object: &JsonObject, out: &mut String) {
    // Sorted here rather than trusting the map's order: serde_json keeps insertion order when any
    // crate in the build enables its `preserve_order` feature.
    let mut fields: Vec<(&String, &Value)> = object.iter().collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(name, out);
        out.push(':');
        write_canonical(value, out);
    }
    out.push('}');
}

fn write_json_str(s: &str, out: &mut String) {
    out.push_str(&Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;

    fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(o) => o,
            other => panic!("not an object: {other}"),
        }
    }

    fn ok(text: &str) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text(text)])
    }

    fn text_of(result: &CallToolResult) -> String {
        serde_json::to_value(&result.content).expect("content serializes")[0]["text"]
            .as_str()
            .expect("text content")
            .to_owned()
    }

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const TTL: Duration = Duration::from_secs(60);

    /// Loads `text` through the cache under `key`, counting loader runs in `runs`.
    async fn load(
        cache: &ResultCache,
        key: &str,
        tag_names: &[&str],
        runs: &AtomicUsize,
        text: &str,
    ) -> Lookup {
        let (result, lookup) = cache
            .get_or_load(key.to_owned(), TTL, tags(tag_names), async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(ok(text))
            })
            .await;
        result.expect("loaded");
        lookup
    }

    #[test]
    fn key_is_canonical_whatever_the_argument_order() {
        let a = object(json!({"a": 1, "b": {"y": [{"q": 1, "p": "x"}], "x": null}}));
        let b = object(json!({"b": {"x": null, "y": [{"p": "x", "q": 1}]}, "a": 1}));
        let key = ResultCache::key("sql", "get_orders", Some(&a));
        assert_eq!(key, ResultCache::key("sql", "get_orders", Some(&b)));
        assert_eq!(
            key,
            r#"["sql","get_orders",{"a":1,"b":{"x":null,"y":[{"p":"x","q":1}]}}]"#
        );
        // Different values, tools or servers never share a key; array order matters.
        let c = object(json!({"a": 2, "b": {"x": null, "y": [{"p": "x", "q": 1}]}}));
        assert_ne!(key, ResultCache::key("sql", "get_orders", Some(&c)));
        assert_ne!(key, ResultCache::key("sql", "get_order", Some(&a)));
        assert_ne!(key, ResultCache::key("rest", "get_orders", Some(&a)));
        let l1 = object(json!({"l": [1, 2]}));
        let l2 = object(json!({"l": [2, 1]}));
        assert_ne!(
            ResultCache::key("s", "t", Some(&l1)),
            ResultCache::key("s", "t", Some(&l2))
        );
        // No arguments and empty arguments are the same call.
        assert_eq!(
            ResultCache::key("s", "t", None),
            ResultCache::key("s", "t", Some(&JsonObject::new()))
        );
        // Names with JSON metacharacters cannot forge another pair's key.
        assert_ne!(
            ResultCache::key("a\",\"b", "c", None),
            ResultCache::key("a", "b\",\"c", None)
        );
    }

    #[test]
    fn spec_parses_from_config_and_maps_to_ttl() {
        let settings = CacheSettings::default();
        let short: CacheSpec = serde_json::from_value(json!("short")).expect("tier");
        assert_eq!(short, CacheSpec::Tier(Tier::Short));
        assert_eq!(settings.ttl(&short), Duration::from_secs(60));
        let medium: CacheSpec = serde_json::from_value(json!("medium")).expect("tier");
        assert_eq!(settings.ttl(&medium), Duration::from_secs(900));
        let long: CacheSpec = serde_json::from_value(json!("long")).expect("tier");
        assert_eq!(settings.ttl(&long), Duration::from_secs(3600));
        let explicit: CacheSpec = serde_json::from_value(json!({"ttlMs": 30000})).expect("ttl");
        assert_eq!(explicit, CacheSpec::Ttl { ttl_ms: 30_000 });
        assert_eq!(settings.ttl(&explicit), Duration::from_secs(30));
        assert_eq!(
            serde_json::to_value(&explicit).expect("serializes"),
            json!({"ttlMs": 30000})
        );
        assert_eq!(
            serde_json::to_value(CacheSpec::Tier(Tier::Long)).expect("serializes"),
            json!("long")
        );
        for bad in [
            json!("forever"),
            json!({"ttl": 5}),
            json!({"ttlMs": 5, "x": 1}),
        ] {
            let err = serde_json::from_value::<CacheSpec>(bad.clone())
                .expect_err(&format!("{bad} must be rejected"));
            assert!(err.to_string().contains("cache tier"), "{err}");
        }
    }

    #[tokio::test]
    async fn second_call_is_a_hit() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        assert_eq!(load(&cache, "k", &[], &runs, "one").await, Lookup::Miss);
        let (result, lookup) = cache
            .get_or_load("k".into(), TTL, vec![], async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(ok("two"))
            })
            .await;
        assert_eq!(lookup, Lookup::Hit);
        assert_eq!(text_of(&result.expect("hit")), "one");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let s = cache.snapshot();
        assert_eq!((s.hits, s.misses, s.loads), (1, 1, 1));
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        let get = |key: &'static str, ttl: Duration| {
            let cache = cache.clone();
            let runs = &runs;
            async move {
                cache
                    .get_or_load(key.into(), ttl, vec![], async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, String>(ok(key))
                    })
                    .await
                    .1
            }
        };
        assert_eq!(get("brief", Duration::from_millis(100)).await, Lookup::Miss);
        assert_eq!(get("lasting", TTL).await, Lookup::Miss);
        assert_eq!(get("brief", Duration::from_millis(100)).await, Lookup::Hit);
        // moka keeps its own clock, so this waits in real time (bounded and short).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(get("brief", Duration::from_millis(100)).await, Lookup::Miss);
        assert_eq!(get("lasting", TTL).await, Lookup::Hit);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        cache.run_pending_tasks().await;
        let s = cache.snapshot();
        assert_eq!(s.evictions, 1, "{s:?}");
        assert_eq!(s.entries, 2, "{s:?}");
    }

    #[tokio::test]
    async fn zero_ttl_is_not_cached() {
        let cache = ResultCache::new(CacheSettings::default());
        let spec = CacheSpec::Ttl { ttl_ms: 0 };
        let ttl = CacheSettings::default().ttl(&spec);
        let runs = AtomicUsize::new(0);
        for _ in 0..2 {
            let (result, lookup) = cache
                .get_or_load("k".into(), ttl, vec![], async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(ok("x"))
                })
                .await;
            assert_eq!(lookup, Lookup::Miss);
            assert_eq!(text_of(&result.expect("loaded")), "x");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_identical_misses_load_once() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let cache = cache.clone();
                let runs = Arc::clone(&runs);
                tokio::spawn(async move {
                    cache
                        .get_or_load("same".into(), TTL, vec![], async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, String>(ok("shared"))
                        })
                        .await
                })
            })
            .collect();
        for task in futures::future::join_all(tasks).await {
            let (result, _) = task.expect("task ran");
            assert_eq!(text_of(&result.expect("loaded")), "shared");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let s = cache.snapshot();
        assert_eq!(s.loads, 1);
        assert_eq!(s.hits + s.misses, 100);
    }

    #[tokio::test]
    async fn a_waiter_loads_itself_when_the_loading_caller_is_dropped() {
        let cache = ResultCache::new(CacheSettings::default());
        let first = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_load("k".into(), TTL, vec![], async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok::<_, String>(ok("never"))
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let waiter = cache.get_or_load("k".into(), TTL, vec![], async {
            Ok::<_, String>(ok("waiter"))
        });
        let abort = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            first.abort();
        };
        let started = Instant::now();
        let ((result, lookup), ()) = tokio::join!(waiter, abort);
        // It waited on the first caller's load until that was dropped, then ran its own.
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(text_of(&result.expect("loaded")), "waiter");
        assert_eq!(lookup, Lookup::Miss);
        assert_eq!(cache.snapshot().loads, 2);
    }

    #[tokio::test]
    async fn errors_reach_every_waiter_and_are_not_cached() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        let call = || {
            cache.get_or_load("k".into(), TTL, vec![], async {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                Err::<CallToolResult, _>("upstream down".to_owned())
            })
        };
        let outcomes = futures::future::join_all((0..10).map(|_| call())).await;
        for (result, lookup) in outcomes {
            assert_eq!(result.expect_err("error shared"), "upstream down");
            assert_eq!(lookup, Lookup::Miss);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // The next call asks the upstream again, and a success is then stored.
        let (result, lookup) = cache
            .get_or_load("k".into(), TTL, vec![], async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(ok("back"))
            })
            .await;
        assert_eq!(
            (text_of(&result.expect("ok")), lookup),
            ("back".into(), Lookup::Miss)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        cache.run_pending_tasks().await;
        assert_eq!(cache.snapshot().entries, 1);
    }

    #[tokio::test]
    async fn tool_errors_are_returned_but_not_cached() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        let call = || {
            cache.get_or_load("k".into(), TTL, vec![], async {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok::<_, String>(CallToolResult::error(vec![ContentBlock::text("throttled")]))
            })
        };
        let outcomes = futures::future::join_all((0..5).map(|_| call())).await;
        for (result, _) in outcomes {
            let result = result.expect("a tool error is an answer");
            assert_eq!(result.is_error, Some(true));
            assert_eq!(text_of(&result), "throttled");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let (result, lookup) = call().await;
        assert_eq!(result.expect("answer").is_error, Some(true));
        assert_eq!(lookup, Lookup::Miss);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        cache.run_pending_tasks().await;
        assert_eq!(cache.snapshot().entries, 0);
    }

    #[tokio::test]
    async fn tag_invalidation_drops_only_tagged_entries() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        load(&cache, "a", &["orders"], &runs, "a").await;
        load(&cache, "b", &["orders", "customer:42"], &runs, "b").await;
        load(&cache, "c", &["inventory"], &runs, "c").await;
        load(&cache, "d", &[], &runs, "d").await;

        assert_eq!(
            cache.invalidate_tags(&tags(&["orders", "unknown"])).await,
            2
        );
        assert_eq!(cache.invalidate_tags(&[]).await, 0);
        // Matched entries are never served again, even before maintenance removes them.
        assert_eq!(
            load(&cache, "a", &["orders"], &runs, "a2").await,
            Lookup::Miss
        );
        assert_eq!(load(&cache, "c", &[], &runs, "c").await, Lookup::Hit);
        assert_eq!(load(&cache, "d", &[], &runs, "d").await, Lookup::Hit);
        cache.run_pending_tasks().await;
        assert_eq!(load(&cache, "b", &[], &runs, "b2").await, Lookup::Miss);
        // The re-stored "a" was added after the invalidation, so it stays.
        assert_eq!(load(&cache, "a", &[], &runs, "a3").await, Lookup::Hit);

        cache.run_pending_tasks().await;
        let s = cache.snapshot();
        assert_eq!(s.invalidations, 2, "{s:?}");
        assert_eq!(s.entries, 4, "{s:?}");
        assert_eq!(s.evictions, 0, "{s:?}");
    }

    #[tokio::test]
    async fn server_tool_invalidation_drops_all_arguments_of_that_tool() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        let args = |id: u64| object(json!({ "customerId": id }));
        let k1 = ResultCache::key("sql", "get_orders", Some(&args(1)));
        let k2 = ResultCache::key("sql", "get_orders", Some(&args(2)));
        let other_tool = ResultCache::key("sql", "get_orders_v2", Some(&args(1)));
        let other_server = ResultCache::key("cosmos", "get_orders", Some(&args(1)));
        for key in [&k1, &k2, &other_tool, &other_server] {
            load(&cache, key, &[], &runs, "x").await;
        }
        cache.invalidate_server_tool("sql", "get_orders").await;
        assert_eq!(load(&cache, &k1, &[], &runs, "x").await, Lookup::Miss);
        assert_eq!(load(&cache, &k2, &[], &runs, "x").await, Lookup::Miss);
        assert_eq!(
            load(&cache, &other_tool, &[], &runs, "x").await,
            Lookup::Hit
        );
        assert_eq!(
            load(&cache, &other_server, &[], &runs, "x").await,
            Lookup::Hit
        );

        cache.invalidate_all().await;
        assert_eq!(
            load(&cache, &other_server, &[], &runs, "x").await,
            Lookup::Miss
        );
        cache.run_pending_tasks().await;
        let s = cache.snapshot();
        assert_eq!(s.entries, 1, "{s:?}");
        assert_eq!(s.invalidations, 6, "{s:?}");
    }

    #[tokio::test]
    async fn size_bound_evicts_and_counts() {
        let settings = CacheSettings {
            max_entries: 10,
            ..CacheSettings::default()
        };
        let cache = ResultCache::new(settings);
        let runs = AtomicUsize::new(0);
        for i in 0..50 {
            load(&cache, &format!("k{i}"), &[], &runs, "x").await;
        }
        cache.run_pending_tasks().await;
        let s = cache.snapshot();
        assert!(s.entries <= 10, "{s:?}");
        assert_eq!(s.evictions + s.entries, 50, "{s:?}");
        assert_eq!(s.invalidations, 0, "{s:?}");
    }

    #[tokio::test]
    async fn snapshot_figures_add_up() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        for round in 0..3 {
            for key in ["a", "b", "c", "d"] {
                let expected = if round == 0 {
                    Lookup::Miss
                } else {
                    Lookup::Hit
                };
                assert_eq!(load(&cache, key, &[], &runs, key).await, expected);
            }
        }
        cache.run_pending_tasks().await;
        let s = cache.snapshot();
        assert_eq!(
            s,
            CacheSnapshot {
                entries: 4,
                hits: 8,
                misses: 4,
                loads: 4,
                evictions: 0,
                invalidations: 0,
            }
        );
        assert_eq!(
            serde_json::to_value(s).expect("serializes"),
            json!({"entries": 4, "hits": 8, "misses": 4, "loads": 4, "evictions": 0, "invalidations": 0})
        );
        assert!(format!("{cache:?}").contains("hits: 8"));
    }

    #[tokio::test]
    async fn a_load_that_declines_to_be_stored_answers_but_is_not_kept() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        let runs = &runs;
        let call = |store: bool, text: &'static str| {
            cache.get_or_load_with("k".into(), TTL, async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(Loaded {
                    result: ok(text),
                    tags: tags(&["customer:1"]),
                    store,
                })
            })
        };
        let (degraded, lookup) = call(false, "degraded").await;
        assert_eq!(
            (text_of(&degraded.expect("answered")), lookup),
            ("degraded".to_owned(), Lookup::Miss)
        );
        // Not kept: the next call loads again, and a whole answer is then kept with its tags.
        let (whole, lookup) = call(true, "whole").await;
        assert_eq!(
            (text_of(&whole.expect("answered")), lookup),
            ("whole".to_owned(), Lookup::Miss)
        );
        assert_eq!(call(true, "again").await.1, Lookup::Hit);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(cache.invalidate_tags(&tags(&["customer:1"])).await, 1);
        assert_eq!(call(true, "after").await.1, Lookup::Miss);
    }

    /// Starts a load of `key` that answers `text` once `gate` is notified; returns when it runs.
    async fn load_held_at(
        cache: &ResultCache,
        key: &'static str,
        gate: &Arc<tokio::sync::Notify>,
        text: &'static str,
    ) -> tokio::task::JoinHandle<(Result<Arc<CallToolResult>, String>, Lookup)> {
        let loads = cache.snapshot().loads;
        let task = tokio::spawn({
            let (cache, gate) = (cache.clone(), Arc::clone(gate));
            async move {
                cache
                    .get_or_load(key.into(), TTL, tags(&["customer:1"]), async move {
                        gate.notified().await;
                        Ok::<_, String>(ok(text))
                    })
                    .await
            }
        });
        while cache.snapshot().loads == loads {
            tokio::task::yield_now().await;
        }
        task
    }

    #[tokio::test]
    async fn a_load_in_flight_when_its_tags_are_invalidated_is_not_stored() {
        let cache = ResultCache::new(CacheSettings::default());
        let gate = Arc::new(tokio::sync::Notify::new());
        let before = load_held_at(&cache, "k", &gate, "read before the write").await;
        // The write lands while the load is in flight.
        cache.invalidate_tags(&tags(&["customer:1"])).await;
        gate.notify_one();
        let (result, _) = before.await.expect("task ran");
        // The caller whose call began before the write gets what was read for it...
        assert_eq!(text_of(&result.expect("answered")), "read before the write");
        // ...but it is not kept: the next call asks the upstream again.
        let runs = AtomicUsize::new(0);
        assert_eq!(
            load(&cache, "k", &["customer:1"], &runs, "fresh").await,
            Lookup::Miss
        );
        assert_eq!(
            load(&cache, "k", &["customer:1"], &runs, "fresh").await,
            Lookup::Hit
        );
    }

    #[tokio::test]
    async fn a_caller_arriving_after_an_invalidation_does_not_take_an_older_load() {
        let cache = ResultCache::new(CacheSettings::default());
        let gate = Arc::new(tokio::sync::Notify::new());
        let before = load_held_at(&cache, "k", &gate, "read before the write").await;
        cache.invalidate_tags(&tags(&["customer:1"])).await;
        let after = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_load("k".into(), TTL, tags(&["customer:1"]), async {
                        Ok::<_, String>(ok("read after the write"))
                    })
                    .await
            }
        });
        // Let the second caller reach the load in flight and wait on it.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        let (first, _) = before.await.expect("task ran");
        let (second, _) = after.await.expect("task ran");
        assert_eq!(text_of(&first.expect("answered")), "read before the write");
        assert_eq!(text_of(&second.expect("answered")), "read after the write");
        // The second caller's own load began after the write: that one is kept.
        let runs = AtomicUsize::new(0);
        assert_eq!(load(&cache, "k", &[], &runs, "unused").await, Lookup::Hit);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    fn read(text: &str, ttl_ms: Option<u64>, scope: Option<CacheScope>) -> ReadResourceResult {
        let mut result =
            ReadResourceResult::new(vec![rmcp::model::ResourceContents::text(text, "test://r")]);
        result.ttl_ms = ttl_ms;
        result.cache_scope = scope;
        result
    }

    fn read_text(result: &ReadResourceResult) -> String {
        match &result.contents[0] {
            rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
            other => panic!("not text: {other:?}"),
        }
    }

    /// Reads `key` through the cache for `ttl`, the upstream answering `answer`.
    async fn read_through(
        cache: &ResultCache,
        key: &str,
        ttl: Duration,
        runs: &AtomicUsize,
        answer: ReadResourceResult,
    ) -> (Arc<ReadResourceResult>, Lookup) {
        let (result, lookup) = cache
            .get_or_load(key.to_owned(), ttl, vec![], async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(answer)
            })
            .await;
        (result.expect("read"), lookup)
    }

    #[tokio::test]
    async fn a_public_read_is_kept_no_longer_than_its_upstream_ttl() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        let public = Some(CacheScope::Public);
        let (first, lookup) =
            read_through(&cache, "r", TTL, &runs, read("one", Some(150), public)).await;
        assert_eq!(
            (read_text(&first), lookup),
            ("one".to_owned(), Lookup::Miss)
        );
        assert_eq!(first.ttl_ms, Some(150), "a fresh answer passes the hint on");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (hit, lookup) =
            read_through(&cache, "r", TTL, &runs, read("two", Some(150), public)).await;
        assert_eq!((read_text(&hit), lookup), ("one".to_owned(), Lookup::Hit));
        // A hit says what is left of the upstream's TTL, not the whole of it again.
        let left = hit.ttl_ms.expect("a hint");
        assert!(left > 0 && left <= 130, "{left} ms left");
        // Past the upstream's TTL, though the caller would keep it for a minute: asked again.
        // (moka keeps its own clock, so this waits in real time, bounded and short.)
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (fresh, lookup) =
            read_through(&cache, "r", TTL, &runs, read("three", Some(150), public)).await;
        assert_eq!(
            (read_text(&fresh), lookup),
            ("three".to_owned(), Lookup::Miss)
        );
        // And the caller's TTL bounds it when it is the shorter.
        let (_, lookup) = read_through(
            &cache,
            "short",
            Duration::from_millis(100),
            &runs,
            read("x", Some(3_600_000), public),
        )
        .await;
        assert_eq!(lookup, Lookup::Miss);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, lookup) = read_through(
            &cache,
            "short",
            Duration::from_millis(100),
            &runs,
            read("x", Some(3_600_000), public),
        )
        .await;
        assert_eq!(lookup, Lookup::Miss);
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_read_marked_stale_private_or_nothing_is_never_stored() {
        let cache = ResultCache::new(CacheSettings::default());
        for (key, answer) in [
            ("stale", read("x", Some(0), Some(CacheScope::Public))),
            (
                "private",
                read("x", Some(60_000), Some(CacheScope::Private)),
            ),
            ("silent", read("x", None, None)),
            // A TTL without a scope counts as private.
            ("unscoped", read("x", Some(60_000), None)),
        ] {
            let runs = AtomicUsize::new(0);
            for _ in 0..2 {
                let (_, lookup) = read_through(&cache, key, TTL, &runs, answer.clone()).await;
                assert_eq!(lookup, Lookup::Miss, "{key}");
            }
            assert_eq!(
                runs.load(Ordering::SeqCst),
                2,
                "{key} asked the upstream each time"
            );
        }
        cache.run_pending_tasks().await;
        assert_eq!(cache.snapshot().entries, 0);
    }

    /// Two concurrent reads of one key, the first held until `gate` opens; returns each one's
    /// text and how many times the upstream was asked.
    async fn two_concurrent_reads(scope: CacheScope) -> (String, String, usize) {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let first = tokio::spawn({
            let (cache, runs, gate) = (cache.clone(), Arc::clone(&runs), Arc::clone(&gate));
            async move {
                cache
                    .get_or_load("r".into(), TTL, vec![], async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok::<_, String>(read("first client's", Some(60_000), Some(scope)))
                    })
                    .await
            }
        });
        while cache.snapshot().loads == 0 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            async move {
                cache
                    .get_or_load("r".into(), TTL, vec![], async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, String>(read("second client's", Some(60_000), Some(scope)))
                    })
                    .await
            }
        });
        // Let the second caller reach the load in flight and wait on it.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        let (a, _) = first.await.expect("task ran");
        let (b, _) = second.await.expect("task ran");
        (
            read_text(&a.expect("read")),
            read_text(&b.expect("read")),
            runs.load(Ordering::SeqCst),
        )
    }

    #[tokio::test]
    async fn a_private_read_is_not_shared_even_with_a_concurrent_caller() {
        let (a, b, runs) = two_concurrent_reads(CacheScope::Private).await;
        assert_eq!(a, "first client's");
        assert_eq!(b, "second client's");
        assert_eq!(runs, 2);
        // The same race with a public answer: one upstream read serves both.
        let (a, b, runs) = two_concurrent_reads(CacheScope::Public).await;
        assert_eq!(
            (a.as_str(), b.as_str(), runs),
            ("first client's", "first client's", 1)
        );
    }

    #[tokio::test]
    async fn tool_results_and_reads_share_the_cache_without_mixing() {
        let cache = ResultCache::new(CacheSettings::default());
        let runs = AtomicUsize::new(0);
        load(&cache, "k", &[], &runs, "tool").await;
        // A read under a key holding a tool result is answered by its own load, not mistaken.
        let (result, lookup) = read_through(
            &cache,
            "k",
            TTL,
            &runs,
            read("read", Some(60_000), Some(CacheScope::Public)),
        )
        .await;
        assert_eq!(
            (read_text(&result), lookup),
            ("read".to_owned(), Lookup::Miss)
        );
        assert_eq!(load(&cache, "k", &[], &runs, "tool").await, Lookup::Hit);
    }
}
