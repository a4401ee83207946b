-- The customer identity service: the bank's customers as the bank knows them, admin API tokens
-- with their roles and region scopes, and the record of every admin change.

-- One row per bank customer. `id` is the bank's customer number: it never reaches a plugin.
-- `tags` is a JSON array of strings, sorted and without duplicates.
CREATE TABLE customers (
    id            TEXT PRIMARY KEY,
    region        TEXT NOT NULL,
    tier          TEXT NOT NULL,
    tags          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'frozen')),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- Every change of a customer's tags: which were added and removed (JSON arrays), when, by whom.
CREATE TABLE customer_tag_changes (
    customer_id   TEXT NOT NULL REFERENCES customers (id),
    changed_at_ms INTEGER NOT NULL,
    added         TEXT NOT NULL,
    removed       TEXT NOT NULL,
    source        TEXT NOT NULL
);
CREATE INDEX customer_tag_changes_by_customer ON customer_tag_changes (customer_id, changed_at_ms);

-- Admin API tokens: only the SHA-256 digest of each token is kept.
CREATE TABLE admin_tokens (
    name          TEXT PRIMARY KEY,
    digest        BLOB NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('head_office', 'branch_admin', 'reviewer', 'viewer')),
    region        TEXT,
    created_at_ms INTEGER NOT NULL
);

-- Every admin change: who (token name), what, on what, when, and the target before and after
-- (JSON). Ids are time-ordered, so the id is the paging cursor.
CREATE TABLE admin_audit (
    id     TEXT PRIMARY KEY,
    at_ms  INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    region TEXT,
    before TEXT,
    after  TEXT
);
