-- Secrets the host generates for itself when the configuration does not provide them.
CREATE TABLE host_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- Each plugin's key-value data, per region. Keys are bytes so prefix ranges compare bytewise.
CREATE TABLE store_entries (
    plugin_id TEXT NOT NULL,
    region    TEXT NOT NULL,
    key       BLOB NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (plugin_id, region, key)
) WITHOUT ROWID;

-- How many keys each plugin keeps per region, maintained with every commit so the key limit
-- is checked without counting rows.
CREATE TABLE store_usage (
    plugin_id TEXT NOT NULL,
    region    TEXT NOT NULL,
    key_count INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, region)
) WITHOUT ROWID;

-- One row per plugin invocation.
CREATE TABLE invocations (
    id             TEXT PRIMARY KEY,
    started_at_ms  INTEGER NOT NULL,
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
    fuel_consumed  INTEGER NOT NULL,
    duration_us    INTEGER NOT NULL,
    seed           TEXT NOT NULL
);
