-- The same tables as migrations/sqlite/0001_foundation.sql, in PostgreSQL's types.

-- Secrets the host generates for itself when the configuration does not provide them.
CREATE TABLE host_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Each plugin's key-value data, per region. Keys are bytes so prefix ranges compare bytewise.
CREATE TABLE store_entries (
    plugin_id TEXT NOT NULL,
    region    TEXT NOT NULL,
    key       BYTEA NOT NULL,
    value     BYTEA NOT NULL,
    PRIMARY KEY (plugin_id, region, key)
);

-- How many keys each plugin keeps per region, maintained with every commit so the key limit
-- is checked without counting rows.
CREATE TABLE store_usage (
    plugin_id TEXT NOT NULL,
    region    TEXT NOT NULL,
    key_count BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, region)
);

-- One row per plugin invocation.
CREATE TABLE invocations (
    id             TEXT PRIMARY KEY,
    started_at_ms  BIGINT NOT NULL,
    plugin_id      TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    plugin_digest  TEXT NOT NULL,
    config_digest  TEXT NOT NULL,
    region         TEXT NOT NULL,
    caller_kind    TEXT NOT NULL,
    caller         TEXT NOT NULL,
    action         TEXT NOT NULL,
    input_digest   TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    fuel_consumed  BIGINT NOT NULL,
    duration_us    BIGINT NOT NULL,
    seed           TEXT NOT NULL
);
