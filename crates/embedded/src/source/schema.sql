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

CREATE TRIGGER IF NOT EXISTS orders_insert AFTER INSERT ON orders BEGIN
    INSERT INTO changelog (txn, tbl, op, before, after, ts_us) VALUES (
        brewline_txn(), 'orders', 'c', NULL,
        json_object('id', NEW.id, 'timestamp', NEW.timestamp, 'customer_id', NEW.customer_id,
            'store_id', NEW.store_id, 'payment_method_id', NEW.payment_method_id,
            'num_products', NEW.num_products, 'status', NEW.status),
        brewline_txn_us());
END;
CREATE TRIGGER IF NOT EXISTS orders_update AFTER UPDATE ON orders BEGIN
    INSERT INTO changelog (txn, tbl, op, before, after, ts_us) VALUES (
        brewline_txn(), 'orders', 'u',
        json_object('id', OLD.id, 'timestamp', OLD.timestamp, 'customer_id', OLD.customer_id,
            'store_id', OLD.store_id, 'payment_method_id', OLD.payment_method_id,
            'num_products', OLD.num_products, 'status', OLD.status),
        json_object('id', NEW.id, 'timestamp', NEW.timestamp, 'customer_id', NEW.customer_id,
            'store_id', NEW.store_id, 'payment_method_id', NEW.payment_method_id,
            'num_products', NEW.num_products, 'status', NEW.status),
        brewline_txn_us());
END;
CREATE TRIGGER IF NOT EXISTS orders_delete AFTER DELETE ON orders BEGIN
    INSERT INTO changelog (txn, tbl, op, before, after, ts_us) VALUES (
        brewline_txn(), 'orders', 'd',
        json_object('id', OLD.id, 'timestamp', OLD.timestamp, 'customer_id', OLD.customer_id,
            'store_id', OLD.store_id, 'payment_method_id', OLD.payment_method_id,
            'num_products', OLD.num_products, 'status', OLD.status),
        NULL, brewline_txn_us());
END;
CREATE TRIGGER IF NOT EXISTS order_details_insert AFTER INSERT ON order_details BEGIN
    INSERT INTO changelog (txn, tbl, op, before, after, ts_us) VALUES (
        brewline_txn(), 'order_details', 'c', NULL,
        json_object('order_id', NEW.order_id, 'product_id', NEW.product_id,
            'quantity', NEW.quantity, 'discount_percent', NEW.discount_percent,
            'subtotal', NEW.subtotal, 'is_suggestion', NEW.is_suggestion),
        brewline_txn_us());
END;
CREATE TRIGGER IF NOT EXISTS order_details_update AFTER UPDATE ON order_details BEGIN
    INSERT INTO changelog (txn, tbl, op, before, after, ts_us) VALUES (
        brewline_txn(), 'order_details', 'u',
        json_object('order_id', OLD.order_id, 'product_id', OLD.product_id,
            'quantity', OLD.quantity, 'discount_percent', OLD.discount_percent,
            'subtotal', OLD.subtotal, 'is_suggestion', OLD.is_suggestion),
        json_object('order_id', NEW.order_id, 'product_id', NEW.product_id,
            'quantity', NEW.quantity, 'discount_percent', NEW.discount_percent,
            'subtotal', NEW.subtotal, 'is_suggestion', NEW.is_suggestion),
        brewline_txn_us());
END;
CREATE TRIGGER IF NOT EXISTS order_details_delete AFTER DELETE ON order_details BEGIN
    INSERT INTO changelog (txn, tbl, op, before, after, ts_us) VALUES (
        brewline_txn(), 'order_details', 'd',
        json_object('order_id', OLD.order_id, 'product_id', OLD.product_id,
            'quantity', OLD.quantity, 'discount_percent', OLD.discount_percent,
            'subtotal', OLD.subtotal, 'is_suggestion', OLD.is_suggestion),
        NULL, brewline_txn_us());
END;
