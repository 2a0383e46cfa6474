//! First-run documents, generated from the shared retail dataset with a fixed ChaCha8 seed.
//!
//! The customers, regions, segments, products and categories are those of `retail-seed`, so a
//! composite tool can join what this server says about CUST-0042 with what the SQL server says
//! about the same customer. What the dataset does not hold (browsing behaviour) is drawn from one
//! seeded generator in a fixed order, so every machine and every run stores byte-identical
//! documents, etags included.
//!
//! Behaviour is shaped so the analysis tools have something real to find: customers who buy more
//! in stores browse more online, each customer favours one or two categories, about a fifth of the
//! customers stop visiting part-way through the year (churn), and each has their own tendency to
//! abandon carts.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retail_seed::{CATEGORIES, Product, timestamp, window_end, window_start};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::{
    containers::{ONLINE_SALES, PROFILES, SESSIONS, USER_EVENTS},
    item,
};

/// The seed of the behavioural data; changing it changes every document.
const SEED: u64 = 0xC05_0DB5_2025;

/// Share of customers whose visits stop before the end of the window.
const LAPSED_SHARE: f64 = 0.22;
/// Share of online orders later returned (read by sales reports, not counted as revenue).
const RETURNED_SHARE: f64 = 0.03;
/// Devices, in the order preferences are drawn.
const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];

/// One document to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedDoc {
    /// Container name.
    pub container: &'static str,
    /// Partition key value.
    pub pk: String,
    /// Document id.
    pub id: String,
    /// The body (carries `id` and the partition key field too).
    pub body: Value,
    /// `_ts`: when the document was last written, in the data's own timeline.
    pub ts: i64,
}

fn epoch(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| window_start())
}

fn money(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// Picks an index with probability proportional to its weight.
fn weighted(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut roll = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
    for (i, w) in weights.iter().enumerate() {
        if roll < *w {
            return i;
        }
        roll -= w;
    }
    weights.len().saturating_sub(1)
}

/// Every first-run document, in a fixed order.
pub fn documents() -> Vec<SeedDoc> {
    let data = retail_seed::dataset();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let start = window_start();
    let end = window_end();

    let mut by_category: Vec<Vec<&Product>> = vec![Vec::new(); CATEGORIES.len()];
    let mut product_category: HashMap<&str, usize> = HashMap::new();
    for p in &data.products {
        if let Some(i) = CATEGORIES.iter().position(|c| *c == p.category) {
            by_category[i].push(p);
            product_category.insert(p.id.as_str(), i);
        }
    }
    // Store purchases per customer: how many orders, and which categories they bought.
    let mut store_orders: HashMap<&str, (usize, [f64; CATEGORIES.len()])> = HashMap::new();
    for o in &data.orders {
        let entry = store_orders
            .entry(o.customer_id.as_str())
            .or_insert((0, [0.0; CATEGORIES.len()]));
        entry.0 += 1;
        for l in &o.lines {
            if let Some(i) = product_category.get(l.product_id.as_str()) {
                entry.1[*i] += 1.0;
            }
        }
    }

    let mut docs = Vec::new();
    for (n, customer) in data.customers.iter().enumerate() {
        let n = n + 1;
        let (orders, bought) = store_orders
            .get(customer.id.as_str())
            .copied()
            .unwrap_or((0, [0.0; CATEGORIES.len()]));

        let preferred_device = DEVICES[weighted(&mut rng, &[0.5, 0.35, 0.15])];
        let marketing_opt_in = rng.random_bool(0.6);
        let mut weights = [1.0; CATEGORIES.len()];
        let favourite = rng.random_range(0..CATEGORIES.len());
        weights[favourite] += 4.0;
        if rng.random_bool(0.5) {
            weights[rng.random_range(0..CATEGORIES.len())] += 2.0;
        }
        for (w, b) in weights.iter_mut().zip(bought) {
            *w += 0.5 * b;
        }
        let segment_factor = match customer.segment {
            "premium" => 1.3,
            "budget" => 0.8,
            _ => 1.0,
        };
        let per_month =
            rng.random_range(0.3..2.2) * segment_factor * (1.0 + orders.min(30) as f64 / 20.0);
        let lapsed = rng.random_bool(LAPSED_SHARE);
        let active_end = if lapsed {
            start + Duration::days(rng.random_range(30..300))
        } else {
            end
        };
        let active_secs = (active_end - start).num_seconds().max(7200);
        let months = active_secs as f64 / (30.0 * 86_400.0);
        let count = ((per_month * months * rng.random_range(0.8..1.2)).round() as usize).max(1);
        let abandon = rng.random_range(0.15..0.85);
        let cart_chance = rng.random_range(0.2..0.5);

        let top_categories: Vec<&str> = {
            let mut ranked: Vec<usize> = (0..CATEGORIES.len()).collect();
            ranked.sort_by(|a, b| weights[*b].total_cmp(&weights[*a]).then(a.cmp(b)));
            ranked.iter().take(2).map(|i| CATEGORIES[*i]).collect()
        };
        docs.push(SeedDoc {
            container: PROFILES.name,
            pk: customer.id.clone(),
            id: customer.id.clone(),
            body: json!({
                "id": customer.id,
                "customerId": customer.id,
                "name": customer.name,
                "email": customer.email,
                "region": customer.region,
                "segment": customer.segment,
                "signupDate": customer.created_at,
                "preferredDevice": preferred_device,
                "marketingOptIn": marketing_opt_in,
                "interests": top_categories,
            }),
            ts: epoch(parse_ts(&customer.created_at)),
        });

        let mut starts: Vec<i64> = (0..count)
            .map(|_| rng.random_range(0..active_secs - 3600))
            .collect();
        starts.sort_unstable();
        let mut event_no = 0usize;
        let mut sale_no = 0usize;
        for (k, offset) in starts.into_iter().enumerate() {
            let session_id = format!("SES-{n:04}-{:04}", k + 1);
            let device = if rng.random_bool(0.7) {
                preferred_device
            } else {
                DEVICES[rng.random_range(0..DEVICES.len())]
            };
            let started = start + Duration::seconds(offset);
            let mut t = started;
            let mut event = |rng: &mut ChaCha8Rng, t: &mut DateTime<Utc>, body: Value| {
                event_no += 1;
                let id = format!("EVT-{n:04}-{event_no:05}");
                let mut body = body;
                if let Value::Object(m) = &mut body {
                    m.insert("id".into(), Value::from(id.clone()));
                    m.insert("userId".into(), Value::from(customer.id.clone()));
                    m.insert("sessionId".into(), Value::from(session_id.clone()));
                    m.insert("device".into(), Value::from(device));
                    m.insert("timestamp".into(), Value::from(timestamp(*t)));
                }
                let doc = SeedDoc {
                    container: USER_EVENTS.name,
                    pk: customer.id.clone(),
                    id,
                    body,
                    ts: epoch(*t),
                };
                *t += Duration::seconds(rng.random_range(20..240));
                doc
            };

            if rng.random_bool(0.3) {
                let c = weighted(&mut rng, &weights);
                docs.push(event(
                    &mut rng,
                    &mut t,
                    json!({"type": "search", "query": CATEGORIES[c], "category": CATEGORIES[c]}),
                ));
            }
            let views = 1 + rng.random_range(0..6);
            let mut viewed: Vec<&Product> = Vec::with_capacity(views);
            for _ in 0..views {
                let c = weighted(&mut rng, &weights);
                let Some(product) = pick(&mut rng, &by_category[c]) else {
                    continue;
                };
                viewed.push(product);
                docs.push(event(
                    &mut rng,
                    &mut t,
                    json!({"type": "page_view", "productId": product.id, "category": product.category}),
                ));
            }
            let mut cart: Vec<(&Product, i64)> = Vec::new();
            if !viewed.is_empty() && rng.random_bool(cart_chance) {
                let wanted = if viewed.len() > 1 && rng.random_bool(0.3) {
                    2
                } else {
                    1
                };
                while cart.len() < wanted {
                    let Some(p) = pick(&mut rng, &viewed) else {
                        break;
                    };
                    if cart.iter().any(|(c, _)| c.id == p.id) {
                        if viewed
                            .iter()
                            .all(|v| cart.iter().any(|(c, _)| c.id == v.id))
                        {
                            break;
                        }
                        continue;
                    }
                    let quantity = rng.random_range(1..=2);
                    cart.push((p, quantity));
                    docs.push(event(
                        &mut rng,
                        &mut t,
                        json!({"type": "add_to_cart", "productId": p.id, "category": p.category, "quantity": quantity}),
                    ));
                }
            }
            let purchased = !cart.is_empty() && !rng.random_bool(abandon);
            let mut order_id = Value::Null;
            if purchased {
                sale_no += 1;
                let sale_id = format!("WEB-{n:04}-{sale_no:03}");
                let total_cents: i64 = cart.iter().map(|(p, q)| p.price_cents * q).sum();
                let returned = rng.random_bool(RETURNED_SHARE);
                let channel = if device != "desktop" && rng.random_bool(0.6) {
                    "app"
                } else {
                    "web"
                };
                let items: Vec<Value> = cart
                    .iter()
                    .map(|(p, q)| {
                        json!({"productId": p.id, "category": p.category, "quantity": q, "unitPrice": money(p.price_cents)})
                    })
                    .collect();
                docs.push(SeedDoc {
                    container: ONLINE_SALES.name,
                    pk: customer.region.to_owned(),
                    id: sale_id.clone(),
                    body: json!({
                        "id": sale_id,
                        "region": customer.region,
                        "customerId": customer.id,
                        "sessionId": session_id,
                        "timestamp": timestamp(t),
                        "channel": channel,
                        "status": if returned { "returned" } else { "completed" },
                        "items": items,
                        "total": money(total_cents),
                    }),
                    ts: epoch(t),
                });
                let categories: Vec<&str> = cart.iter().map(|(p, _)| p.category).collect();
                docs.push(event(
                    &mut rng,
                    &mut t,
                    json!({"type": "purchase", "orderId": sale_id, "amount": money(total_cents), "categories": categories}),
                ));
                order_id = Value::from(sale_id);
            }
            let ended = t;
            docs.push(SeedDoc {
                container: SESSIONS.name,
                pk: customer.id.clone(),
                id: session_id.clone(),
                body: json!({
                    "id": session_id,
                    "userId": customer.id,
                    "startedAt": timestamp(started),
                    "endedAt": timestamp(ended),
                    "durationSeconds": (ended - started).num_seconds(),
                    "device": device,
                    "pageViews": viewed.len(),
                    "addedToCart": !cart.is_empty(),
                    "purchased": purchased,
                    "orderId": order_id,
                }),
                ts: epoch(ended),
            });
        }
    }
    docs
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &[&'a T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        Some(items[rng.random_range(0..items.len())])
    }
}

/// Inserts the first-run documents unless the store already holds any.
///
/// All or nothing: a crash mid-seed leaves an empty store that the next start seeds again.
pub fn seed_if_empty(conn: &mut Connection) -> rusqlite::Result<bool> {
    let existing: i64 = conn.query_row("SELECT COUNT(*) FROM docs", [], |r| r.get(0))?;
    if existing > 0 {
        return Ok(false);
    }
    let docs = documents();
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO docs (container, pk, id, body, etag, ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for d in &docs {
            let body = d.body.to_string();
            let etag = item::next_etag(None, &body, d.ts);
            insert.execute(params![d.container, d.pk, d.id, body, etag, d.ts])?;
        }
    }
    tx.commit()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::collections::{HashMap, HashSet};

    fn dump(store: &Store) -> String {
        let r = store.reader();
        let mut stmt = r
            .prepare(
                "SELECT container, pk, id, body, etag, ts FROM docs ORDER BY container, pk, id",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{}|{}|{}|{}|{}|{}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?
                ))
            })
            .expect("query");
        rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("\n")
    }

    /// FNV-1a, 64 bits: portable and stable, unlike std's randomly keyed hasher.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The stored line (`container|pk|id|body|etag|ts`) of one document.
    fn stored<'a>(dump: &'a str, container: &str, pk: &str, id: &str) -> &'a str {
        let prefix = format!("{container}|{pk}|{id}|");
        dump.lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{prefix} is seeded"))
    }

    // The seeded store is compared with reference values computed once from this code, not with
    // a second store seeded in the same process (which would change along with it): a change in
    // the shared dataset, in this file's draws, in a `rand` version or in etag derivation fails.

    #[test]
    fn the_seeded_store_matches_its_reference_digest() {
        let store = Store::open(":memory:").expect("open");
        let d = dump(&store);
        assert_eq!(
            (format!("{:016x}", fnv1a(d.as_bytes())), d.len()),
            ("9d670ca48ff3e3a2".to_owned(), 6_122_996),
            "the seeded documents changed; if on purpose, update the pinned values here"
        );
    }

    #[test]
    fn reference_documents_and_counts() {
        let store = Store::open(":memory:").expect("open");
        let d = dump(&store);
        assert_eq!(
            stored(&d, "profiles", "CUST-0001", "CUST-0001"),
            r#"profiles|CUST-0001|CUST-0001|{"customerId":"CUST-0001","email":"ada.okafor1@example.com","id":"CUST-0001","interests":["electronics","outdoor"],"marketingOptIn":true,"name":"Ada Okafor","preferredDevice":"mobile","region":"central","segment":"budget","signupDate":"2025-04-06T00:00:00Z"}|9823c11b72a3e9e7|1743897600"#
        );
        assert_eq!(
            stored(&d, "sessions", "CUST-0001", "SES-0001-0001"),
            r#"sessions|CUST-0001|SES-0001-0001|{"addedToCart":false,"device":"mobile","durationSeconds":915,"endedAt":"2025-12-16T05:24:27Z","id":"SES-0001-0001","orderId":null,"pageViews":6,"purchased":false,"startedAt":"2025-12-16T05:09:12Z","userId":"CUST-0001"}|05a001e4429ca3dc|1765862667"#
        );
        assert_eq!(
            stored(&d, "onlineSales", "central", "WEB-0001-001"),
            r#"onlineSales|central|WEB-0001-001|{"channel":"web","customerId":"CUST-0001","id":"WEB-0001-001","items":[{"category":"apparel","productId":"PROD-024","quantity":1,"unitPrice":325.99}],"region":"central","sessionId":"SES-0001-0008","status":"completed","timestamp":"2026-01-26T10:08:51Z","total":325.99}|714b683c3fb9127a|1769422131"#
        );
        let docs = documents();
        let counts: Vec<(&str, usize)> = ["profiles", "sessions", "userEvents", "onlineSales"]
            .into_iter()
            .map(|c| (c, docs.iter().filter(|d| d.container == c).count()))
            .collect();
        assert_eq!(
            counts,
            [
                ("profiles", 200),
                ("sessions", 4166),
                ("userEvents", 18263),
                ("onlineSales", 672)
            ]
        );
    }

    #[test]
    fn reopening_does_not_seed_twice() {
        let dir = std::env::temp_dir().join(format!("cosmos-seed-test-{}", std::process::id()));
        let path = dir.display().to_string();
        let first = Store::open(&path).expect("first open");
        let before = dump(&first);
        drop(first);
        let second = Store::open(&path).expect("second open");
        assert_eq!(dump(&second), before);
        drop(second);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn documents_match_the_shared_dataset() {
        let data = retail_seed::dataset();
        let docs = documents();
        let customers: HashMap<&str, &retail_seed::Customer> =
            data.customers.iter().map(|c| (c.id.as_str(), c)).collect();
        let products: HashMap<&str, &Product> =
            data.products.iter().map(|p| (p.id.as_str(), p)).collect();

        let profiles: Vec<&SeedDoc> = docs.iter().filter(|d| d.container == "profiles").collect();
        assert_eq!(profiles.len(), data.customers.len());
        for p in &profiles {
            let c = customers[p.pk.as_str()];
            assert_eq!(p.body["customerId"], c.id.as_str());
            assert_eq!(p.body["region"], c.region);
            assert_eq!(p.body["segment"], c.segment);
        }
        let (start, end) = (timestamp(window_start()), timestamp(window_end()));
        let mut regions = HashSet::new();
        let mut ids = HashSet::new();
        for d in &docs {
            assert!(
                ids.insert((d.container, d.pk.clone(), d.id.clone())),
                "unique key"
            );
            assert_eq!(d.body["id"], d.id.as_str());
            match d.container {
                "userEvents" | "sessions" => {
                    assert!(customers.contains_key(d.pk.as_str()));
                    assert_eq!(d.body["userId"], d.pk.as_str());
                }
                "onlineSales" => {
                    let buyer = customers[d.body["customerId"].as_str().expect("buyer")];
                    assert_eq!(
                        d.pk, buyer.region,
                        "sales are partitioned by the buyer's region"
                    );
                    let t = d.body["timestamp"].as_str().expect("timestamp");
                    assert!(*t >= *start && *t < *end, "{t} inside the window");
                    regions.insert(d.pk.clone());
                    let mut sum = 0.0;
                    for item in d.body["items"].as_array().expect("items") {
                        let p = products[item["productId"].as_str().expect("product")];
                        assert_eq!(item["category"], p.category);
                        sum += item["unitPrice"].as_f64().expect("price")
                            * item["quantity"].as_f64().expect("qty");
                    }
                    assert!((sum - d.body["total"].as_f64().expect("total")).abs() < 0.01);
                }
                _ => {}
            }
            if let Some(pid) = d.body.get("productId").and_then(Value::as_str) {
                assert_eq!(d.body["category"], products[pid].category);
            }
        }
        assert_eq!(
            regions.len(),
            retail_seed::REGIONS.len(),
            "every region sells online"
        );
    }
}
