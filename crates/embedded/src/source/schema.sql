-- The shop's operational database, `coffee_shop`, as SPEC.md defines it: primary keys
-- everywhere, phone numbers as text. Triggers copy every committed row change of `orders`
-- and `order_details` into `changelog`, the embedded stand-in for MySQL's row binlog.
CREATE TABLE IF NOT EXISTS stores (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    district TEXT NOT NULL,
    city TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS payment_method (
    id INTEGER PRIMARY KEY,
    method_name TEXT NOT NULL,
    bank TEXT,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS product_category (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category_id INTEGER NOT NULL REFERENCES product_category(id),
    unit_price INTEGER NOT NULL CHECK (unit_price > 0),
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    tier TEXT NOT NULL CHECK (tier IN ('regular', 'silver', 'gold', 'diamond')),
    updated_at INTEGER NOT NULL
);
-- customer_id has no foreign key: most buyers are not registered customers.
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    customer_id INTEGER,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    payment_method_id INTEGER NOT NULL REFERENCES payment_method(id),
    num_products INTEGER NOT NULL CHECK (num_products > 0),
    status TEXT
);
CREATE TABLE IF NOT EXISTS order_details (
    order_id TEXT NOT NULL REFERENCES orders(id),
    product_id TEXT NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    discount_percent INTEGER NOT NULL DEFAULT 0,
    subtotal INTEGER NOT NULL CHECK (subtotal >= 0),
    is_suggestion INTEGER NOT NULL DEFAULT 0 CHECK (is_suggestion IN (0, 1)),
    PRIMARY KEY (order_id, product_id)
);
-- One row per committed row change; `txn` groups the rows of one transaction, `ts_us` is
-- when that transaction started (microseconds since the epoch).
CREATE TABLE IF NOT EXISTS changelog (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txn INTEGER NOT NULL,
    tbl TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('c', 'u', 'd')),
    before TEXT,
    after TEXT,
    ts_us INTEGER NOT NULL
);
-- The triggers that fill it are made from the captured tables' columns (`capture_triggers`).
