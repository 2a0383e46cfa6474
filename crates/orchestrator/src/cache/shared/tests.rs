//! The shared layer against a real `redis-server` (testkit starts one per test): what several
//! instances see of one another's loads and invalidations, and what an outage leaves working.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rmcp::model::{CallToolResult, ContentBlock};
use testkit::redis::RedisServer;

use super::*;
use crate::cache::{CacheSettings, Lookup, ResultCache};

const TTL: Duration = Duration::from_secs(60);

/// How long a condition that depends on Redis (a background write, a pub/sub message, a
/// reconnection) may take before the test fails: generous, since the tests wait for the
/// condition, not for the time.
const PATIENCE: Duration = Duration::from_secs(15);

/// One orchestrator instance's cache, sharing `redis` under `prefix`.
fn instance(redis: &RedisServer, prefix: &str) -> (ResultCache, Arc<SharedStats>) {
    instance_on(redis, prefix, None)
}

/// [`instance`], listening on `channel` instead of the prefix's.
fn instance_on(
    redis: &RedisServer,
    prefix: &str,
    channel: Option<&str>,
) -> (ResultCache, Arc<SharedStats>) {
    let settings = SharedSettings::new(
        &redis.url(),
        prefix.to_owned(),
        Duration::from_millis(250),
        channel.map(str::to_owned),
    )
    .expect("valid url");
    let stats = Arc::new(SharedStats::new());
    let cache = ResultCache::with_shared(CacheSettings::default(), settings, Arc::clone(&stats))
        .expect("cache with redis");
    (cache, stats)
}

/// Waits until `condition` holds, failing the test with `what` after [`PATIENCE`].
async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn subscribed(stats: &[&Arc<SharedStats>]) {
    eventually("every instance is subscribed", || async {
        stats.iter().all(|s| s.subscribed())
    })
    .await;
}

/// Whether Redis holds the entry of `key` under `prefix`.
async fn in_redis(redis: &RedisServer, prefix: &str, key: &str) -> bool {
    let client = redis::Client::open(redis.url()).expect("url");
    let Ok(mut con) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("EXISTS")
        .arg(format!("{prefix}entry:{key}"))
        .query_async::<i64>(&mut con)
        .await
        .is_ok_and(|n| n == 1)
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

/// Loads `key` (tagged `customer:1`) through `cache`, the upstream answering `text`; returns
/// the answer's text and the lookup.
async fn load(cache: &ResultCache, key: &str, runs: &AtomicUsize, text: &str) -> (String, Lookup) {
    let (result, lookup) = cache
        .get_or_load(key.to_owned(), TTL, vec!["customer:1".to_owned()], async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(ok(text))
        })
        .await;
    (text_of(&result.expect("answered")), lookup)
}

#[tokio::test]
async fn a_result_loaded_on_one_instance_is_an_l2_hit_on_another_and_fills_its_l1() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, a_stats) = instance(&redis, "t1:");
    let (b, b_stats) = instance(&redis, "t1:");
    subscribed(&[&a_stats, &b_stats]).await;
    let runs = AtomicUsize::new(0);

    assert_eq!(
        load(&a, "k", &runs, "from A").await,
        ("from A".to_owned(), Lookup::Miss)
    );
    eventually("A's background write reached redis", || {
        in_redis(&redis, "t1:", "k")
    })
    .await;
    // B never ran the loader: Redis answered, and the answer is reported as a hit.
    assert_eq!(
        load(&b, "k", &runs, "from B").await,
        ("from A".to_owned(), Lookup::Hit)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!((b_stats.hits(), b_stats.misses()), (1, 0));
    // The L2 hit filled B's L1: the next call does not ask Redis again.
    assert_eq!(
        load(&b, "k", &runs, "from B").await,
        ("from A".to_owned(), Lookup::Hit)
    );
    assert_eq!(b_stats.hits(), 1, "served from L1");
    assert_eq!(b.snapshot().hits, 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let status = b.shared_snapshot().expect("configured");
    assert!(
        status.configured && status.connected && status.subscribed,
        "{status:?}"
    );
    assert_eq!(status.errors, 0);
}

#[tokio::test]
async fn a_tag_invalidation_on_one_instance_evicts_every_instances_copy() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, a_stats) = instance(&redis, "t2:");
    let (b, b_stats) = instance(&redis, "t2:");
    subscribed(&[&a_stats, &b_stats]).await;
    let runs = AtomicUsize::new(0);
    load(&a, "k", &runs, "before the write").await;
    eventually("A's write reached redis", || in_redis(&redis, "t2:", "k")).await;
    assert_eq!(load(&b, "k", &runs, "unused").await.1, Lookup::Hit);

    // A write through A: Redis's copy is gone by the time the invalidation returns...
    a.invalidate_tags(&["customer:1".to_owned()]).await;
    assert!(!in_redis(&redis, "t2:", "k").await);
    // ...and B's L1 copy goes when the message arrives: B's next call asks the upstream.
    eventually("B reloads after A's invalidation", || async {
        load(&b, "k", &runs, "after the write").await
            == ("after the write".to_owned(), Lookup::Miss)
    })
    .await;
    assert_eq!(
        load(&b, "k", &runs, "unused").await,
        ("after the write".to_owned(), Lookup::Hit)
    );
    // A, whose L1 dropped it at once, takes B's fresh answer from Redis (or reloads itself if
    // B's background write has not landed yet); never the value from before the write.
    assert_ne!(
        load(&a, "k", &runs, "after the write").await.0,
        "before the write"
    );
}

#[tokio::test]
async fn a_load_that_began_before_another_instances_invalidation_is_not_stored_in_redis() {
    let redis = RedisServer::start().expect("redis-server");
    // A hears nothing of B's invalidations (another channel), as when the message is late: its
    // L1 generation guard cannot help, so only Redis's invalidation markers keep A's answer out.
    let (a, a_stats) = instance_on(&redis, "t3:", Some("t3:elsewhere"));
    let (b, b_stats) = instance(&redis, "t3:");
    subscribed(&[&a_stats, &b_stats]).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let held = tokio::spawn({
        let (a, gate, started) = (a.clone(), Arc::clone(&gate), Arc::clone(&started));
        async move {
            a.get_or_load("k".into(), TTL, vec!["customer:1".into()], async move {
                started.notify_one();
                gate.notified().await;
                Ok::<_, String>(ok("read before the write"))
            })
            .await
        }
    });
    // A has looked in Redis (a miss) and is asking the upstream when B's write lands.
    started.notified().await;
    b.invalidate_tags(&["customer:1".to_owned()]).await;
    gate.notify_one();
    let (result, _) = held.await.expect("task ran");
    assert_eq!(text_of(&result.expect("answered")), "read before the write");
    // The refused write leaves nothing behind. A later write of A's lands: once it is in Redis
    // the earlier one has been decided too (A's writes queue on one multiplexed connection).
    // Under another tag: markers count in milliseconds, so a load of `customer:1` looked up in
    // the invalidation's own millisecond is (rightly) not stored either. A fresh key each try:
    // a write that outlives the Redis timeout on a loaded machine is dropped, not retried.
    let tries = AtomicUsize::new(0);
    eventually("a later write of A's reached redis", || async {
        let key = format!("other-{}", tries.fetch_add(1, Ordering::SeqCst));
        let (later, _) = a
            .get_or_load(key.clone(), TTL, vec!["customer:2".into()], async {
                Ok::<_, String>(ok("x"))
            })
            .await;
        assert_eq!(text_of(&later.expect("answered")), "x");
        tokio::time::sleep(Duration::from_millis(200)).await;
        in_redis(&redis, "t3:", &key).await
    })
    .await;
    assert!(
        !in_redis(&redis, "t3:", "k").await,
        "the pre-write answer was stored"
    );
}

#[tokio::test]
async fn with_redis_down_calls_go_on_with_l1_and_sharing_resumes_when_it_is_back() {
    let mut redis = RedisServer::start().expect("redis-server");
    let (a, a_stats) = instance(&redis, "t4:");
    let (b, b_stats) = instance(&redis, "t4:");
    subscribed(&[&a_stats, &b_stats]).await;
    let runs = AtomicUsize::new(0);

    redis.stop().expect("stopped");
    // Every call answers; A's own L1 still serves A.
    assert_eq!(
        load(&a, "k", &runs, "a").await,
        ("a".to_owned(), Lookup::Miss)
    );
    assert_eq!(
        load(&a, "k", &runs, "a").await,
        ("a".to_owned(), Lookup::Hit)
    );
    assert_eq!(
        load(&b, "k", &runs, "b").await,
        ("b".to_owned(), Lookup::Miss)
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "each instance loaded for itself"
    );
    // An invalidation still works locally while Redis is away.
    a.invalidate_tags(&["customer:1".to_owned()]).await;
    assert_eq!(
        load(&a, "k", &runs, "a2").await,
        ("a2".to_owned(), Lookup::Miss)
    );
    let status = a.shared_snapshot().expect("configured");
    assert!(!status.connected && status.errors >= 1, "{status:?}");
    assert!(status.last_error.is_some(), "{status:?}");

    redis.restart().expect("restarted");
    // Both reconnect by themselves (the subscriber too, flushing its L1 as it does).
    subscribed(&[&a_stats, &b_stats]).await;
    let mut round = 0;
    eventually("a result loaded on A is shared with B again", || {
        round += 1;
        let key = format!("after-{round}");
        let (a, b, runs, redis) = (&a, &b, &runs, &redis);
        async move {
            load(a, &key, runs, "shared").await;
            // Redis may still be resting after the outage: then A stored nothing there.
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                if in_redis(redis, "t4:", &key).await {
                    return load(b, &key, runs, "unused").await
                        == ("shared".to_owned(), Lookup::Hit);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    })
    .await;
    assert!(a_stats.connected() && b_stats.connected());
    // And invalidations travel again: B drops what A invalidates.
    load(&b, "k2", &runs, "old").await;
    a.invalidate_tags(&["customer:1".to_owned()]).await;
    eventually("B drops k2 after A's invalidation", || async {
        load(&b, "k2", &runs, "new").await.1 == Lookup::Miss
    })
    .await;
}

#[tokio::test]
async fn an_operators_invalidation_by_tool_or_of_everything_reaches_redis_and_every_instance() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, a_stats) = instance(&redis, "t5:");
    let (b, b_stats) = instance(&redis, "t5:");
    subscribed(&[&a_stats, &b_stats]).await;
    let runs = AtomicUsize::new(0);
    let args = |id: u64| match serde_json::json!({ "customerId": id }) {
        serde_json::Value::Object(o) => o,
        _ => unreachable!("an object"),
    };
    let orders = ResultCache::key("sql", "get_orders", Some(&args(1)));
    let other = ResultCache::key("sql", "get_orders_v2", Some(&args(1)));
    for key in [&orders, &other] {
        load(&a, key, &runs, "x").await;
        eventually("A's write reached redis", || in_redis(&redis, "t5:", key)).await;
        assert_eq!(load(&b, key, &runs, "unused").await.1, Lookup::Hit);
    }

    // Keys are JSON (`["sql","get_orders",{..}]`): glob characters in them match literally, so
    // `get_orders_v2` is not taken for `get_orders`.
    a.invalidate_server_tool("sql", "get_orders").await;
    assert!(!in_redis(&redis, "t5:", &orders).await);
    assert!(in_redis(&redis, "t5:", &other).await);
    eventually("B drops its get_orders copy", || async {
        load(&b, &orders, &runs, "new").await.1 == Lookup::Miss
    })
    .await;
    assert_eq!(load(&b, &other, &runs, "unused").await.1, Lookup::Hit);

    a.invalidate_all().await;
    assert!(!in_redis(&redis, "t5:", &other).await);
    eventually("B drops everything", || async {
        load(&b, &other, &runs, "new").await.1 == Lookup::Miss
    })
    .await;
}

#[tokio::test]
async fn a_redis_that_does_not_answer_in_time_is_skipped_and_every_call_answers() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, a_stats) = instance(&redis, "t6:");
    subscribed(&[&a_stats]).await;
    // Redis holds every client's commands for a while: slow, not down.
    let client = redis::Client::open(redis.url()).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query_async::<()>(&mut con)
        .await
        .expect("paused");
    let runs = AtomicUsize::new(0);
    assert_eq!(
        load(&a, "k", &runs, "x").await,
        ("x".to_owned(), Lookup::Miss)
    );
    assert_eq!(
        load(&a, "k", &runs, "x").await,
        ("x".to_owned(), Lookup::Hit)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let status = a.shared_snapshot().expect("configured");
    assert!(!status.connected && status.errors >= 1, "{status:?}");
    // The client's own response timeout (the same bound) or ours, whichever fires first.
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out") || e.contains("did not answer")),
        "{status:?}"
    );
}
