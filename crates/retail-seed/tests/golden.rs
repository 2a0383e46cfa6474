//! Pins the generated dataset to reference values computed once from this code, so drift is
//! caught rather than silently shipped: a `rand`/`rand_chacha` upgrade that maps draws to ranges
//! differently, a reordered draw, an edited name list.
//!
//! Comparing two generations in one process cannot catch any of that (both sides change
//! together); these constants do. Every server seeds from this dataset, and demos, docs and
//! agents' expectations (CUST-0001 is a budget customer in `central`) are built on it, so a change
//! here must be deliberate: update the values and say why.

use retail_seed::{Dataset, ORDER_STATUSES, Order, dataset};

/// FNV-1a, 64 bits: tiny, portable and stable, unlike std's randomly keyed hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The digest and length of the dataset's JSON form (field order is the structs' order).
fn digest(data: &Dataset) -> (String, usize) {
    let json = serde_json::to_vec(data).expect("the dataset serializes");
    (format!("{:016x}", fnv1a(&json)), json.len())
}

#[test]
fn the_whole_dataset_matches_its_reference_digest() {
    assert_eq!(
        digest(dataset()),
        ("60b3aaec66bf727e".to_owned(), 616_171),
        "the seeded dataset changed; if on purpose, update every pinned value in this file \
         and in the servers' seed tests"
    );
}

/// An order's id, customer, status, creation time and total, to compare with pinned values.
fn order_row(o: &Order) -> (&str, &str, &str, &str, i64) {
    (
        o.id.as_str(),
        o.customer_id.as_str(),
        o.status,
        o.created_at.as_str(),
        o.total_cents,
    )
}

#[test]
fn readable_reference_values() {
    let d = dataset();
    let c = &d.customers[0];
    assert_eq!(
        (
            c.id.as_str(),
            c.name.as_str(),
            c.email.as_str(),
            c.region,
            c.segment,
            c.created_at.as_str()
        ),
        (
            "CUST-0001",
            "Ada Okafor",
            "ada.okafor1@example.com",
            "central",
            "budget",
            "2025-04-06T00:00:00Z"
        )
    );
    let c = &d.customers[199];
    assert_eq!(
        (c.id.as_str(), c.name.as_str(), c.region, c.segment),
        ("CUST-0200", "Tara Moreau", "central", "standard")
    );

    let p = &d.products[0];
    assert_eq!(
        (p.id.as_str(), p.name.as_str(), p.category, p.price_cents),
        ("PROD-001", "Travel Headphones", "electronics", 7999)
    );
    let p = &d.products[49];
    assert_eq!(
        (p.id.as_str(), p.name.as_str(), p.category, p.price_cents),
        ("PROD-050", "Eco Planner", "books", 17499)
    );

    let o = &d.orders[0];
    assert_eq!(
        order_row(o),
        (
            "ORD-00001",
            "CUST-0005",
            "delivered",
            "2025-11-01T03:21:52Z",
            255_289
        )
    );
    let products: Vec<&str> = o.lines.iter().map(|l| l.product_id.as_str()).collect();
    assert_eq!(products, ["PROD-036", "PROD-016", "PROD-012", "PROD-035"]);

    let o = &d.orders[1999];
    assert_eq!(
        order_row(o),
        (
            "ORD-02000",
            "CUST-0016",
            "processing",
            "2026-10-31T19:37:37Z",
            106_994
        )
    );
    let lines: Vec<(&str, i64, i64)> = o
        .lines
        .iter()
        .map(|l| (l.product_id.as_str(), l.quantity, l.unit_price_cents))
        .collect();
    assert_eq!(
        lines,
        [
            ("PROD-034", 2, 24199),
            ("PROD-021", 3, 10899),
            ("PROD-010", 1, 25899)
        ]
    );
}

#[test]
fn reference_counts_and_totals() {
    let d = dataset();
    assert_eq!(
        (d.customers.len(), d.products.len(), d.orders.len()),
        (200, 50, 2000)
    );
    let lines: usize = d.orders.iter().map(|o| o.lines.len()).sum();
    let total: i64 = d.orders.iter().map(|o| o.total_cents).sum();
    assert_eq!((lines, total), (4978, 199_654_834));
    let by_status: Vec<(&str, usize)> = ORDER_STATUSES
        .iter()
        .map(|s| (*s, d.orders.iter().filter(|o| o.status == *s).count()))
        .collect();
    assert_eq!(
        by_status,
        [
            ("processing", 27),
            ("shipped", 32),
            ("delivered", 1871),
            ("cancelled", 70)
        ]
    );
}
