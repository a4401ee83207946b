-- Analytics events plugins emit (`events.emit`), written with the call's commit. The host's own
-- event per invocation is the invocation record. Both are kept for audit.retention_days.
CREATE TABLE events (
    id            TEXT PRIMARY KEY,
    at_ms         INTEGER NOT NULL,
    plugin_id     TEXT NOT NULL,
    region        TEXT NOT NULL,
    caller_kind   TEXT NOT NULL,
    caller        TEXT NOT NULL,
    name          TEXT NOT NULL,
    properties    TEXT NOT NULL,
    invocation_id TEXT NOT NULL
);
CREATE INDEX events_by_plugin ON events (plugin_id, at_ms);
CREATE INDEX events_by_time ON events (at_ms);
CREATE INDEX payments_by_time ON payments (created_at_ms);
CREATE INDEX ledger_postings_by_plugin ON ledger_postings (plugin_id, created_at_ms);
