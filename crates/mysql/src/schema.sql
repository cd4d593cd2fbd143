-- The shop's operational database as SPEC.md defines it: primary keys everywhere, phone
-- numbers as text (a leading 0 is kept), customer_id without a foreign key (most buyers are
-- not registered customers). `CREATE TABLE IF NOT EXISTS`: running it again changes nothing.
CREATE TABLE IF NOT EXISTS stores (
    id INT PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    address VARCHAR(255) NOT NULL,
    district VARCHAR(255) NOT NULL,
    city VARCHAR(255) NOT NULL,
    updated_at DATETIME(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS payment_method (
    id INT PRIMARY KEY,
    method_name VARCHAR(255) NOT NULL,
    bank VARCHAR(255) NULL,
    updated_at DATETIME(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS product_category (
    id INT PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    updated_at DATETIME(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    id VARCHAR(32) PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    category_id INT NOT NULL,
    unit_price INT NOT NULL CHECK (unit_price > 0),
    updated_at DATETIME(3) NOT NULL,
    FOREIGN KEY (category_id) REFERENCES product_category (id)
);
CREATE TABLE IF NOT EXISTS customers (
    id INT PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    phone_number VARCHAR(32) NOT NULL,
    tier VARCHAR(16) NOT NULL CHECK (tier IN ('regular', 'silver', 'gold', 'diamond')),
    updated_at DATETIME(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id VARCHAR(36) PRIMARY KEY,
    timestamp DATETIME(3) NOT NULL,
    customer_id INT NULL,
    store_id INT NOT NULL,
    payment_method_id INT NOT NULL,
    num_products INT NOT NULL CHECK (num_products > 0),
    status VARCHAR(32) NULL,
    FOREIGN KEY (store_id) REFERENCES stores (id),
    FOREIGN KEY (payment_method_id) REFERENCES payment_method (id)
);
CREATE TABLE IF NOT EXISTS order_details (
    order_id VARCHAR(36) NOT NULL,
    product_id VARCHAR(32) NOT NULL,
    quantity INT NOT NULL CHECK (quantity > 0),
    discount_percent INT NOT NULL DEFAULT 0,
    subtotal INT NOT NULL CHECK (subtotal >= 0),
    is_suggestion BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (order_id, product_id),
    FOREIGN KEY (order_id) REFERENCES orders (id),
    FOREIGN KEY (product_id) REFERENCES products (id)
)
