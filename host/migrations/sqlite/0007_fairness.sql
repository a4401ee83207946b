-- Verifiable draws and richer invocation records.
--
-- A call's randomness now comes from the seed of its plugin, region and day, committed (its
-- SHA-256 published) before the day starts and revealed after it ends; an invocation records
-- which seed it drew from and each draw it made, and the ledger writes it committed.

ALTER TABLE invocations RENAME COLUMN seed TO seed_commitment;
ALTER TABLE invocations ADD COLUMN seed_region TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN seed_day TEXT NOT NULL DEFAULT '';
-- JSON array of the ids of the ledger writes the call committed (postings, holds).
ALTER TABLE invocations ADD COLUMN ledger_writes TEXT NOT NULL DEFAULT '[]';
CREATE INDEX invocations_by_plugin ON invocations (plugin_id, id);
CREATE INDEX invocations_by_caller ON invocations (caller, id);
CREATE INDEX invocations_by_start ON invocations (started_at_ms);

-- One seed per plugin, region (the enablement row's) and local day.
CREATE TABLE fairness_seeds (
    plugin_id       TEXT NOT NULL,
    region          TEXT NOT NULL,
    day             TEXT NOT NULL,
    seed            TEXT NOT NULL,
    commitment      TEXT NOT NULL,
    published_at_ms INTEGER NOT NULL,
    starts_at_ms    INTEGER NOT NULL,
    ends_at_ms      INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, region, day)
);
CREATE INDEX fairness_seeds_by_day ON fairness_seeds (day);

-- Every draw of every invocation, in order: the HMAC counter it started at, the bound it was
-- drawn below (NULL for 64 raw bits) and the value, both decimal text (they are unsigned
-- 64-bit numbers).
CREATE TABLE fairness_draws (
    invocation_id TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    counter       INTEGER NOT NULL,
    upper         TEXT,
    value         TEXT NOT NULL,
    PRIMARY KEY (invocation_id, seq)
);
