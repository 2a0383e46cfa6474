//! The retail company's reference data, generated deterministically and shared by every server.
//!
//! The SQL server stores these customers, products and orders; the document server holds
//! behaviour for the same customers; the REST API holds stock for the same products and a
//! shipping status for the same orders. Generating all of it from one seeded, portable generator
//! (ChaCha8, whose output is fixed by its specification) is what lets composite tools join across
//! servers: the ids line up on every machine and every run.

use std::sync::LazyLock;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

pub mod period;
use serde::Serialize;

/// Sales regions, shared by stores (SQL) and online sales (documents).
pub const REGIONS: [&str; 5] = ["north", "south", "east", "west", "central"];
/// Customer segments.
pub const SEGMENTS: [&str; 3] = ["premium", "standard", "budget"];
/// Product categories.
pub const CATEGORIES: [&str; 5] = ["electronics", "home", "outdoor", "apparel", "books"];
/// Order statuses.
pub const ORDER_STATUSES: [&str; 4] = ["processing", "shipped", "delivered", "cancelled"];

/// Number of seeded customers.
pub const CUSTOMER_COUNT: usize = 200;
/// Number of seeded products.
pub const PRODUCT_COUNT: usize = 50;
/// Number of seeded orders.
pub const ORDER_COUNT: usize = 2000;

/// The seed of the whole dataset; changing it changes every id's data.
const SEED: u64 = 0x5EED_2025_1101;

/// A customer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Customer {
    /// `CUST-0001` .. `CUST-0200`.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Unique email address.
    pub email: String,
    /// One of [`REGIONS`].
    pub region: &'static str,
    /// One of [`SEGMENTS`].
    pub segment: &'static str,
    /// When the account was opened (RFC 3339, UTC).
    pub created_at: String,
}

/// A product.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    /// `PROD-001` .. `PROD-050`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// One of [`CATEGORIES`].
    pub category: &'static str,
    /// Unit price in cents.
    pub price_cents: i64,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderLine {
    /// The product bought.
    pub product_id: String,
    /// How many.
    pub quantity: i64,
    /// Price per unit at the time of the order, in cents.
    pub unit_price_cents: i64,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    /// `ORD-00001` .. `ORD-02000`, ascending with `created_at`.
    pub id: String,
    /// The buyer.
    pub customer_id: String,
    /// One of [`ORDER_STATUSES`].
    pub status: &'static str,
    /// When it was placed (RFC 3339, UTC).
    pub created_at: String,
    /// The lines, at least one.
    pub lines: Vec<OrderLine>,
    /// Sum of quantity × unit price over the lines, in cents.
    pub total_cents: i64,
}

/// The whole dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dataset {
    /// Customers in id order.
    pub customers: Vec<Customer>,
    /// Products in id order.
    pub products: Vec<Product>,
    /// Orders in id (and date) order.
    pub orders: Vec<Order>,
}

/// The first instant covered by seeded orders.
pub fn window_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// The end (exclusive) of the twelve months covered by seeded orders.
pub fn window_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Formats a timestamp the way every server stores it.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The dataset, generated once per process.
pub fn dataset() -> &'static Dataset {
    static DATA: LazyLock<Dataset> = LazyLock::new(generate);
    &DATA
}

const FIRST: [&str; 20] = [
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi",
    "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sami", "Tara",
];
const LAST: [&str; 20] = [
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Patel",
    "Rossi",
    "Nakamura",
    "Schmidt",
    "Garcia",
    "Kowalski",
    "Haddad",
    "Murphy",
    "Silva",
    "Novak",
    "Chen",
    "Dubois",
    "Larsen",
    "Mensah",
    "Ortiz",
    "Weber",
    "Yilmaz",
];
const ADJECTIVES: [&str; 10] = [
    "Compact",
    "Classic",
    "Smart",
    "Rugged",
    "Premium",
    "Essential",
    "Eco",
    "Pro",
    "Travel",
    "Deluxe",
];
const NOUNS: [[&str; 10]; 5] = [
    [
        "Headphones",
        "Speaker",
        "Charger",
        "Tablet",
        "Camera",
        "Keyboard",
        "Monitor",
        "Router",
        "Watch",
        "Drone",
    ],
    [
        "Lamp", "Kettle", "Blender", "Pillow", "Rug", "Toaster", "Vase", "Clock", "Shelf", "Mirror",
    ],
    [
        "Tent", "Backpack", "Lantern", "Bottle", "Jacket", "Stove", "Hammock", "Compass", "Cooler",
        "Chair",
    ],
    [
        "Sneakers", "Hoodie", "Scarf", "Jeans", "Cap", "Gloves", "Raincoat", "Socks", "Belt",
        "Sweater",
    ],
    [
        "Cookbook",
        "Atlas",
        "Novel",
        "Journal",
        "Guide",
        "Anthology",
        "Dictionary",
        "Biography",
        "Comic",
        "Planner",
    ],
];

fn generate() -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let start = window_start();

    let customers: Vec<Customer> = (1..=CUSTOMER_COUNT)
        .map(|n| {
            let first = FIRST[(n - 1) % FIRST.len()];
            let last = LAST[((n - 1) / FIRST.len() + (n - 1) * 7) % LAST.len()];
            let days_before = rng.random_range(30..=1500);
            Customer {
                id: format!("CUST-{n:04}"),
                name: format!("{first} {last}"),
                email: format!(
                    "{}.{}{n}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase()
                ),
                region: REGIONS.choose(&mut rng).unwrap_or(&REGIONS[0]),
                segment: SEGMENTS.choose(&mut rng).unwrap_or(&SEGMENTS[0]),
                created_at: timestamp(start - Duration::days(days_before)),
            }
        })
        .collect();

    let products: Vec<Product> = (1..=PRODUCT_COUNT)
        .map(|n| {
            let category_index = (n - 1) % CATEGORIES.len();
            let noun = NOUNS[category_index][(n - 1) / CATEGORIES.len()];
            let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
            Product {
                id: format!("PROD-{n:03}"),
                name: format!("{adjective} {noun}"),
                category: CATEGORIES[category_index],
                price_cents: rng.random_range(5..=400) * 100 - 1,
            }
        })
        .collect();

    // A skewed pick of customers, so some buy far more than others and "top customers" means
    // something: the square of a uniform draw favours low indexes.
    let window_secs = (window_end() - start).num_seconds();
    let mut drafts: Vec<(i64, Order)> = (0..ORDER_COUNT)
        .map(|_| {
            let u: f64 = rng.random();
            let customer = &customers[((u * u) * CUSTOMER_COUNT as f64) as usize % CUSTOMER_COUNT];
            let offset = rng.random_range(0..window_secs);
            let line_count = rng.random_range(1..=4);
            let mut lines: Vec<OrderLine> = Vec::with_capacity(line_count);
            while lines.len() < line_count {
                let product = &products[rng.random_range(0..PRODUCT_COUNT)];
                if lines.iter().any(|l| l.product_id == product.id) {
                    continue;
                }
                lines.push(OrderLine {
                    product_id: product.id.clone(),
                    quantity: rng.random_range(1..=3),
                    unit_price_cents: product.price_cents,
                });
            }
            let total_cents = lines.iter().map(|l| l.quantity * l.unit_price_cents).sum();
            let age_days = (window_secs - offset) / 86_400;
            let roll: f64 = rng.random();
            let status = if roll < 0.04 {
                "cancelled"
            } else if age_days > 10 {
                "delivered"
            } else if age_days > 3 {
                "shipped"
            } else {
                "processing"
            };
            (
                offset,
                Order {
                    id: String::new(),
                    customer_id: customer.id.clone(),
                    status,
                    created_at: timestamp(start + Duration::seconds(offset)),
                    lines,
                    total_cents,
                },
            )
        })
        .collect();
    drafts.sort_by_key(|(offset, _)| *offset);
    let orders = drafts
        .into_iter()
        .enumerate()
        .map(|(i, (_, mut order))| {
            order.id = format!("ORD-{:05}", i + 1);
            order
        })
        .collect();

    Dataset {
        customers,
        products,
        orders,
    }
}

/// The day a seeded timestamp falls on, for callers that bucket by date.
pub fn date_of(timestamp: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(timestamp.get(..10)?, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(generate(), generate());
    }

    #[test]
    fn sizes_and_ids_are_as_documented() {
        let d = dataset();
        assert_eq!(d.customers.len(), CUSTOMER_COUNT);
        assert_eq!(d.products.len(), PRODUCT_COUNT);
        assert_eq!(d.orders.len(), ORDER_COUNT);
        assert_eq!(d.customers[0].id, "CUST-0001");
        assert_eq!(d.products[49].id, "PROD-050");
        assert_eq!(d.orders[1999].id, "ORD-02000");
        let emails: HashSet<_> = d.customers.iter().map(|c| &c.email).collect();
        assert_eq!(emails.len(), CUSTOMER_COUNT, "emails are unique");
    }

    #[test]
    fn orders_cover_twelve_months_in_every_region_and_reference_real_rows() {
        let d = dataset();
        let customers: HashSet<_> = d.customers.iter().map(|c| c.id.as_str()).collect();
        let products: HashSet<_> = d.products.iter().map(|p| p.id.as_str()).collect();
        let months: HashSet<_> = d.orders.iter().map(|o| &o.created_at[..7]).collect();
        assert_eq!(months.len(), 12);
        let regions: HashSet<_> = d
            .orders
            .iter()
            .filter_map(|o| d.customers.iter().find(|c| c.id == o.customer_id))
            .map(|c| c.region)
            .collect();
        assert_eq!(regions.len(), REGIONS.len());
        for o in &d.orders {
            assert!(customers.contains(o.customer_id.as_str()));
            assert!(!o.lines.is_empty());
            assert!(
                o.lines
                    .iter()
                    .all(|l| products.contains(l.product_id.as_str()))
            );
            let sum: i64 = o
                .lines
                .iter()
                .map(|l| l.quantity * l.unit_price_cents)
                .sum();
            assert_eq!(sum, o.total_cents);
        }
        assert!(
            d.orders
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at)
        );
    }
}
