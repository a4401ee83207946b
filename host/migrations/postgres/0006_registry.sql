-- The plugin registry: regions, immutable plugin versions, their review, and what each region
-- runs. Every change bumps registry_generation in the same transaction, so every host sees a
-- change by polling one row.

-- Regions form a tree whose names say it: a child is its parent's name, '-', one more part
-- (cn -> cn-fj -> cn-fj-xm), so scope checks by name and the stored tree always agree.
CREATE TABLE regions (
    name          TEXT PRIMARY KEY,
    parent        TEXT REFERENCES regions (name),
    display_name  TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Component bytes, content-addressed by their sha256 (hex).
CREATE TABLE plugin_artifacts (
    digest        TEXT PRIMARY KEY,
    component     BYTEA NOT NULL,
    size_bytes    BIGINT NOT NULL
);

-- One row per (plugin, version), never changed after upload except by its review.
-- status: submitted, approved or rejected. grants: JSON of what the reviewer granted.
CREATE TABLE plugin_versions (
    plugin_id       TEXT NOT NULL,
    version         TEXT NOT NULL,
    digest          TEXT NOT NULL REFERENCES plugin_artifacts (digest),
    manifest        TEXT NOT NULL,
    status          TEXT NOT NULL,
    uploaded_by     TEXT NOT NULL,
    uploaded_at_ms  BIGINT NOT NULL,
    reviewed_by     TEXT,
    reviewed_at_ms  BIGINT,
    review_reason   TEXT,
    grants          TEXT,
    PRIMARY KEY (plugin_id, version)
);

-- What a region runs of a plugin; it applies to the region's subtree unless a region below
-- has its own row. setting: JSON of config, targeting, schedule and points validity.
-- revision counts the row's changes; previous_version is what rollback restores. A row that
-- disables the plugin may name no version.
CREATE TABLE plugin_enablements (
    region            TEXT NOT NULL REFERENCES regions (name),
    plugin_id         TEXT NOT NULL,
    revision          BIGINT NOT NULL,
    version           TEXT,
    previous_version  TEXT,
    enabled           BOOLEAN NOT NULL,
    setting           TEXT NOT NULL,
    updated_by        TEXT NOT NULL,
    updated_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (region, plugin_id),
    FOREIGN KEY (plugin_id, version) REFERENCES plugin_versions (plugin_id, version)
);

-- Kill switches: a plugin killed in a region stops there and in its whole subtree.
CREATE TABLE plugin_kills (
    region        TEXT NOT NULL REFERENCES regions (name),
    plugin_id     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    killed_by     TEXT NOT NULL,
    killed_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (region, plugin_id)
);

CREATE TABLE registry_generation (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    generation  BIGINT NOT NULL
);
INSERT INTO registry_generation (id, generation) VALUES (1, 0);
