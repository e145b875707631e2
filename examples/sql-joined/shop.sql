-- A small shop database for the sql-joined example (SQLite). Create it with:
--   sqlite3 sql-joined-shop.db < examples/sql-joined/shop.sql
-- Products live in one table; their category is a node of a tree, their descriptions
-- one row per language, their prices one row per change (the latest applies).

CREATE TABLE categories (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES categories (id),
    name TEXT NOT NULL
);
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    category_id INTEGER REFERENCES categories (id),
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE product_descriptions (
    product_id INTEGER NOT NULL REFERENCES products (id),
    locale TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (product_id, locale)
);
CREATE TABLE prices (
    product_id INTEGER NOT NULL REFERENCES products (id),
    valid_from TEXT NOT NULL,
    price NUMERIC NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (product_id, valid_from)
);

INSERT INTO categories VALUES
    (1, NULL, 'Kitchen'), (2, 1, 'Cookware'), (3, 2, 'Pans'), (4, 1, 'Knives'),
    (5, NULL, 'Garden'), (6, 5, 'Tools');

INSERT INTO products VALUES
    (1, 'PAN-24', 'Cast iron pan 24 cm', 3, 1),
    (2, 'PAN-28', 'Cast iron pan 28 cm', 3, 1),
    (3, 'KNF-CHEF', 'Chef''s knife', 4, 1),
    (4, 'POT-5L', 'Stock pot 5 l', 2, 1),
    (5, 'SHV-01', 'Garden shovel', 6, 1),
    (6, 'RAKE-01', 'Leaf rake', 6, 1),
    (7, 'OLD-01', 'Discontinued kettle', 2, 0);

INSERT INTO product_descriptions VALUES
    (1, 'en', '<p>Pre-seasoned, oven safe to 260&nbsp;&deg;C.</p>'),
    (1, 'es', '<p>Curada, apta para horno hasta 260&nbsp;&deg;C.</p>'),
    (2, 'en', '<p>Pre-seasoned, for a family of four.</p>'),
    (3, 'en', '<p>20 cm blade, German steel.</p>'),
    (3, 'es', '<p>Hoja de 20 cm, acero alemán.</p>'),
    (4, 'es', '<p>Olla de acero inoxidable.</p>'),
    (5, 'en', '<p>Ash handle.</p>'),
    (6, 'en', '<p>Twenty-two tines.</p>'),
    (7, 'en', '<p>No longer made.</p>');

INSERT INTO prices VALUES
    (1, '2024-01-01', 39.90, 'EUR'), (1, '2024-06-01', 34.90, 'EUR'),
    (2, '2024-01-01', 49.90, 'EUR'),
    (3, '2023-11-15', 89.00, 'EUR'), (3, '2024-03-01', 95.00, 'EUR'), (3, '2024-09-01', 79.00, 'EUR'),
    (4, '2024-02-01', 59.00, 'EUR'),
    (5, '2024-04-01', 24.50, 'EUR'),
    (6, '2024-04-01', 17.00, 'EUR'),
    (7, '2022-01-01', 29.00, 'EUR');
