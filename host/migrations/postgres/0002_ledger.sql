-- The points ledger: double-entry postings between accounts, balances kept in the same
-- transaction, lots with expiry, holds, and permanent idempotency keys.

-- Every account. Ids: 'customer:<bank customer number>', 'budget:<plugin>:<region>',
-- 'sink:<plugin>:<region>', 'issuer', 'expired'. Only the issuer may go negative; the sum of
-- all balances is zero.
CREATE TABLE ledger_accounts (
    id      TEXT PRIMARY KEY,
    kind    TEXT NOT NULL CHECK (kind IN ('customer', 'budget', 'sink', 'issuer', 'expired')),
    balance BIGINT NOT NULL DEFAULT 0,
    CHECK (kind = 'issuer' OR balance >= 0)
);

-- Immutable postings: each moves a positive amount from one account to another.
CREATE TABLE ledger_postings (
    id            TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    from_account  TEXT NOT NULL REFERENCES ledger_accounts (id),
    to_account    TEXT NOT NULL REFERENCES ledger_accounts (id),
    amount        BIGINT NOT NULL CHECK (amount > 0),
    plugin_id     TEXT,
    region        TEXT,
    memo          TEXT NOT NULL,
    reverses      TEXT UNIQUE REFERENCES ledger_postings (id)
);
CREATE INDEX ledger_postings_from ON ledger_postings (from_account, id);
CREATE INDEX ledger_postings_to ON ledger_postings (to_account, id);

-- Points a customer received in one award, spent earliest-expiring first.
CREATE TABLE ledger_lots (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES ledger_accounts (id),
    award_posting TEXT NOT NULL REFERENCES ledger_postings (id),
    amount        BIGINT NOT NULL CHECK (amount > 0),
    remaining     BIGINT NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX ledger_lots_by_account ON ledger_lots (account_id, expires_at_ms, id);

-- Which lots each posting took points from or returned them to, so a reversal puts points
-- back where they came from.
CREATE TABLE ledger_lot_moves (
    posting_id TEXT NOT NULL REFERENCES ledger_postings (id),
    lot_id     TEXT NOT NULL REFERENCES ledger_lots (id),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    PRIMARY KEY (posting_id, lot_id)
);

-- Reserved points: they count against the available balance until captured, released or
-- expired.
CREATE TABLE ledger_holds (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES ledger_accounts (id),
    plugin_id       TEXT NOT NULL,
    region          TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'captured', 'released', 'expired')),
    capture_posting TEXT REFERENCES ledger_postings (id)
);
CREATE INDEX ledger_holds_open ON ledger_holds (account_id, status, expires_at_ms);

-- Reversals of awards: what was clawed back and what the customer still owes.
CREATE TABLE ledger_clawbacks (
    reversal_posting TEXT PRIMARY KEY,
    original_posting TEXT NOT NULL UNIQUE REFERENCES ledger_postings (id),
    clawed           BIGINT NOT NULL,
    owed             BIGINT NOT NULL
);

-- Idempotency keys, permanent and unique per scope (a plugin id, or '~admin'). A retry with
-- the same request returns the first result; the same key for another request is refused.
CREATE TABLE ledger_idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result      TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);

INSERT INTO ledger_accounts (id, kind, balance) VALUES ('issuer', 'issuer', 0), ('expired', 'expired', 0);
