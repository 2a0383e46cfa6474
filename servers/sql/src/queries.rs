//! The read tools' SQL: one function per question, on a read-only connection.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{
    Customer, CustomerOrders, MetricType, Metrics, Order, OrderLine, RankBy, RegionSales,
    SalesByRegion, TopCustomer, TopCustomers, money,
};
use retail_seed::period::Period;

/// One customer with lifetime figures, or `None` if the id is unknown.
pub fn customer(conn: &Connection, id: &str) -> rusqlite::Result<Option<Customer>> {
    conn.prepare_cached(
        "SELECT c.id, c.name, c.email, c.region, c.segment, c.created_at,
                COUNT(o.id), COALESCE(SUM(o.total_cents), 0)
         FROM customers c
         LEFT JOIN orders o ON o.customer_id = c.id AND o.status <> 'cancelled'
         WHERE c.id = ?1
         GROUP BY c.id",
    )?
    .query_row([id], |r| {
        Ok(Customer {
            customer_id: r.get(0)?,
            name: r.get(1)?,
            email: r.get(2)?,
            region: r.get(3)?,
            segment: r.get(4)?,
            created_at: r.get(5)?,
            order_count: r.get(6)?,
            total_spent: money(r.get(7)?),
        })
    })
    .optional()
}

fn customer_exists(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM customers WHERE id = ?1")?
        .exists([id])
}

/// The lines of the given orders, grouped by order id, in line order.
fn lines_of(
    conn: &Connection,
    order_ids: &[String],
) -> rusqlite::Result<HashMap<String, Vec<OrderLine>>> {
    let mut out: HashMap<String, Vec<OrderLine>> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT l.product_id, p.name, p.category, l.quantity, l.unit_price_cents
         FROM order_lines l JOIN products p ON p.id = l.product_id
         WHERE l.order_id = ?1 ORDER BY l.line_no",
    )?;
    for id in order_ids {
        let lines = stmt
            .query_map([id], |r| {
                let quantity: i64 = r.get(3)?;
                let unit: i64 = r.get(4)?;
                Ok(OrderLine {
                    product_id: r.get(0)?,
                    product_name: r.get(1)?,
                    category: r.get(2)?,
                    quantity,
                    unit_price: money(unit),
                    line_total: money(quantity * unit),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.insert(id.clone(), lines);
    }
    Ok(out)
}

fn order_head(r: &rusqlite::Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        order_id: r.get(0)?,
        customer_id: r.get(1)?,
        status: r.get(2)?,
        created_at: r.get(3)?,
        total: money(r.get(4)?),
        lines: Vec::new(),
    })
}

fn with_lines(conn: &Connection, mut orders: Vec<Order>) -> rusqlite::Result<Vec<Order>> {
    let ids: Vec<String> = orders.iter().map(|o| o.order_id.clone()).collect();
    let mut lines = lines_of(conn, &ids)?;
    for o in &mut orders {
        o.lines = lines.remove(&o.order_id).unwrap_or_default();
    }
    Ok(orders)
}

/// One order with its lines, or `None` if the id is unknown.
pub fn order(conn: &Connection, id: &str) -> rusqlite::Result<Option<Order>> {
    let head = conn
        .prepare_cached(
            "SELECT id, customer_id, status, created_at, total_cents FROM orders WHERE id = ?1",
        )?
        .query_row([id], order_head)
        .optional()?;
    match head {
        Some(o) => Ok(with_lines(conn, vec![o])?.pop()),
        None => Ok(None),
    }
}

/// A customer's newest orders, or `None` if the customer is unknown.
pub fn customer_orders(
    conn: &Connection,
    customer_id: &str,
    limit: i64,
) -> rusqlite::Result<Option<CustomerOrders>> {
    if !customer_exists(conn, customer_id)? {
        return Ok(None);
    }
    let total_orders: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM orders WHERE customer_id = ?1")?
        .query_row([customer_id], |r| r.get(0))?;
    let heads = conn
        .prepare_cached(
            "SELECT id, customer_id, status, created_at, total_cents FROM orders
             WHERE customer_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2",
        )?
        .query_map(params![customer_id, limit], order_head)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let orders = with_lines(conn, heads)?;
    Ok(Some(CustomerOrders {
        customer_id: customer_id.to_owned(),
        total_orders,
        count: orders.len(),
        orders,
    }))
}

/// The best customers by spend or order count, optionally since a timestamp.
pub fn top_customers(
    conn: &Connection,
    limit: i64,
    by: RankBy,
    since: Option<&str>,
) -> rusqlite::Result<Vec<TopCustomer>> {
    let order_by = match by {
        RankBy::Spend => "spent DESC, n DESC, c.id",
        RankBy::Orders => "n DESC, spent DESC, c.id",
    };
    let sql = format!(
        "SELECT c.id, c.name, c.region, c.segment, COUNT(o.id) AS n, SUM(o.total_cents) AS spent
         FROM customers c JOIN orders o ON o.customer_id = c.id
         WHERE o.status <> 'cancelled' AND o.created_at >= ?1
         GROUP BY c.id ORDER BY {order_by} LIMIT ?2"
    );
    let since = since.unwrap_or("0000");
    let mut rank = 0;
    conn.prepare_cached(&sql)?
        .query_map(params![since, limit], |r| {
            Ok(TopCustomer {
                rank: 0,
                customer_id: r.get(0)?,
                name: r.get(1)?,
                region: r.get(2)?,
                segment: r.get(3)?,
                order_count: r.get(4)?,
                total_spent: money(r.get(5)?),
            })
        })?
        .map(|c| {
            c.map(|mut c| {
                rank += 1;
                c.rank = rank;
                c
            })
        })
        .collect()
}

/// Builds the ranking result.
pub fn ranking(by: RankBy, since: Option<String>, customers: Vec<TopCustomer>) -> TopCustomers {
    TopCustomers {
        by,
        since,
        customers,
    }
}

/// Revenue and order count of non-cancelled orders in the period.
pub fn metrics(
    conn: &Connection,
    metric: MetricType,
    period: &Period,
) -> rusqlite::Result<Metrics> {
    let (order_count, revenue_cents): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(total_cents), 0) FROM orders
             WHERE status <> 'cancelled' AND created_at >= ?1 AND created_at < ?2",
        )?
        .query_row(params![period.from, period.to], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let revenue = money(revenue_cents);
    let average_basket = if order_count > 0 {
        (revenue / order_count as f64 * 100.0).round() / 100.0
    } else {
        0.0
    };
    let value = match metric {
        MetricType::Sales => revenue,
        MetricType::Orders => order_count as f64,
        MetricType::AverageBasket => average_basket,
    };
    Ok(Metrics {
        metric_type: metric,
        period: period.label.clone(),
        value,
        order_count,
        revenue,
        average_basket,
    })
}

/// Store sales per customer region in the period; every region appears, even with no sales.
pub fn sales_by_region(conn: &Connection, period: &Period) -> rusqlite::Result<SalesByRegion> {
    let mut found: HashMap<String, (i64, i64)> = conn
        .prepare_cached(
            "SELECT c.region, COUNT(o.id), COALESCE(SUM(o.total_cents), 0)
             FROM orders o JOIN customers c ON c.id = o.customer_id
             WHERE o.status <> 'cancelled' AND o.created_at >= ?1 AND o.created_at < ?2
             GROUP BY c.region",
        )?
        .query_map(params![period.from, period.to], |r| {
            Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut names: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT region FROM customers ORDER BY region")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    names.sort();
    let regions: Vec<RegionSales> = names
        .into_iter()
        .map(|region| {
            let (order_count, cents) = found.remove(&region).unwrap_or((0, 0));
            RegionSales {
                region,
                order_count,
                revenue: money(cents),
            }
        })
        .collect();
    Ok(SalesByRegion {
        period: period.label.clone(),
        total_revenue: (regions.iter().map(|r| r.revenue).sum::<f64>() * 100.0).round() / 100.0,
        total_orders: regions.iter().map(|r| r.order_count).sum(),
        regions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;

    #[test]
    fn seeded_data_answers_the_read_tools() {
        let db = Database::open(":memory:").expect("open");
        let reader = db.reader();
        let conn = reader.conn();
        let c = customer(conn, "CUST-0001").expect("query").expect("exists");
        assert_eq!(c.customer_id, "CUST-0001");
        assert!(customer(conn, "CUST-9999").expect("query").is_none());

        let top = top_customers(conn, 10, RankBy::Spend, None).expect("top");
        assert_eq!(top.len(), 10);
        assert!(top.windows(2).all(|w| w[0].total_spent >= w[1].total_spent));
        assert_eq!(top[0].rank, 1);

        let orders = customer_orders(conn, &top[0].customer_id, 5)
            .expect("orders")
            .expect("exists");
        assert!(orders.count <= 5 && orders.count > 0);
        assert!(orders.orders.iter().all(|o| !o.lines.is_empty()));

        let all = metrics(conn, MetricType::Sales, &Period::all()).expect("metrics");
        let by_region = sales_by_region(conn, &Period::all()).expect("regions");
        assert_eq!(by_region.regions.len(), retail_seed::REGIONS.len());
        assert!((by_region.total_revenue - all.revenue).abs() < 0.01);
        assert_eq!(by_region.total_orders, all.order_count);
    }
}
