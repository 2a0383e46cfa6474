//! First-run seeding from the shared retail dataset, in one transaction.

use rusqlite::{Connection, params};

/// Inserts the dataset unless the database already holds customers.
///
/// All or nothing: a crash mid-seed leaves an empty database that the next start seeds again.
pub fn seed_if_empty(conn: &mut Connection) -> rusqlite::Result<bool> {
    let existing: i64 = conn.query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0))?;
    if existing > 0 {
        return Ok(false);
    }
    let data = retail_seed::dataset();
    let tx = conn.transaction()?;
    {
        let mut customer = tx.prepare(
            "INSERT INTO customers (id, name, email, region, segment, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for c in &data.customers {
            customer.execute(params![
                c.id,
                c.name,
                c.email,
                c.region,
                c.segment,
                c.created_at
            ])?;
        }
        let mut product = tx.prepare(
            "INSERT INTO products (id, name, category, price_cents) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for p in &data.products {
            product.execute(params![p.id, p.name, p.category, p.price_cents])?;
        }
        let mut order = tx.prepare(
            "INSERT INTO orders (id, customer_id, status, created_at, total_cents)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut line = tx.prepare(
            "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_cents)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for o in &data.orders {
            order.execute(params![
                o.id,
                o.customer_id,
                o.status,
                o.created_at,
                o.total_cents
            ])?;
            for (i, l) in o.lines.iter().enumerate() {
                line.execute(params![
                    o.id,
                    i as i64 + 1,
                    l.product_id,
                    l.quantity,
                    l.unit_price_cents
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use crate::db::Database;

    fn dump(db: &Database) -> String {
        let reader = db.reader();
        let conn = reader.conn();
        let mut out = String::new();
        for sql in [
            "SELECT id || name || email || region || segment || created_at FROM customers ORDER BY id",
            "SELECT id || name || category || price_cents FROM products ORDER BY id",
            "SELECT id || customer_id || status || created_at || total_cents FROM orders ORDER BY id",
            "SELECT order_id || line_no || product_id || quantity || unit_price_cents FROM order_lines ORDER BY order_id, line_no",
        ] {
            let mut stmt = conn.prepare(sql).expect("prepare");
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .expect("query");
            for row in rows {
                out.push_str(&row.expect("row"));
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn two_fresh_databases_hold_identical_seed_data() {
        let a = Database::open(":memory:").expect("open a");
        let b = Database::open(":memory:").expect("open b");
        let (da, db) = (dump(&a), dump(&b));
        assert_eq!(da, db);
        assert!(da.contains("CUST-0200") && da.contains("PROD-050") && da.contains("ORD-02000"));
    }

    #[test]
    fn reopening_does_not_seed_twice() {
        let dir = std::env::temp_dir().join(format!("sql-seed-test-{}", std::process::id()));
        let path = dir.display().to_string();
        let first = Database::open(&path).expect("first open");
        let before = dump(&first);
        drop(first);
        let second = Database::open(&path).expect("second open");
        assert_eq!(dump(&second), before);
        drop(second);
        let _ = std::fs::remove_dir_all(dir);
    }
}
