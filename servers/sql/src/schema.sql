-- The retail database: customers, products, orders and their lines.
-- Money is stored in integer cents; timestamps are RFC 3339 UTC text, so they sort as text.
CREATE TABLE IF NOT EXISTS customers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL UNIQUE,
    region      TEXT NOT NULL,
    segment     TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS products (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    category     TEXT NOT NULL,
    price_cents  INTEGER NOT NULL CHECK (price_cents > 0)
);

CREATE TABLE IF NOT EXISTS orders (
    id                      TEXT PRIMARY KEY,
    customer_id             TEXT NOT NULL REFERENCES customers(id),
    status                  TEXT NOT NULL,
    created_at              TEXT NOT NULL,
    total_cents             INTEGER NOT NULL,
    -- Set by create_order: the same key never creates a second order.
    idempotency_key         TEXT UNIQUE,
    -- What the key was first used for, so a reused key with other contents is refused.
    idempotency_fingerprint TEXT,
    -- Set by cancel_order when it cancels the order (NULL on orders cancelled before it existed,
    -- as the seeded ones were); a repeated cancel_order answers with these, not new ones.
    cancelled_at            TEXT,
    cancel_reason           TEXT
);

CREATE TABLE IF NOT EXISTS order_lines (
    order_id          TEXT NOT NULL REFERENCES orders(id),
    line_no           INTEGER NOT NULL,
    product_id        TEXT NOT NULL REFERENCES products(id),
    quantity          INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents  INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

CREATE INDEX IF NOT EXISTS orders_by_customer ON orders(customer_id, created_at);
CREATE INDEX IF NOT EXISTS orders_by_date ON orders(created_at);
CREATE INDEX IF NOT EXISTS order_lines_by_product ON order_lines(product_id);
