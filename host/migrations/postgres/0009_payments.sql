-- Payments plugins made through the core-banking port, whatever the connector: the host's own
-- record, for idempotency, refund limits, status and reports.
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    plugin_id       TEXT NOT NULL,
    region          TEXT NOT NULL,
    customer_number TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('debit', 'refund', 'payout')),
    minor_units     BIGINT NOT NULL CHECK (minor_units > 0),
    currency        TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'pending')),
    reason          TEXT,
    refunds         TEXT REFERENCES payments (id),
    -- For a debit: what its refunds (succeeded or pending) take back.
    refunded_minor  BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= minor_units),
    memo            TEXT NOT NULL,
    invocation_id   TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    UNIQUE (plugin_id, idempotency_key)
);
CREATE INDEX payments_by_plugin ON payments (plugin_id, created_at_ms);
CREATE INDEX payments_by_customer ON payments (customer_number, id);

-- The sandbox core-banking system (development and tests): accounts with balances, and every
-- transfer it was asked for, by the host's idempotency key.
CREATE TABLE sandbox_accounts (
    customer_number TEXT PRIMARY KEY,
    currency        TEXT NOT NULL,
    balance_minor   BIGINT NOT NULL CHECK (balance_minor >= 0),
    updated_at_ms   BIGINT NOT NULL
);
CREATE TABLE sandbox_transfers (
    idempotency_key TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    customer_number TEXT NOT NULL,
    minor_units     BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT,
    created_at_ms   BIGINT NOT NULL
);
