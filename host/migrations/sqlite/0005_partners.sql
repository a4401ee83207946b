-- Partner systems (a merchant's till, a biller) and their API keys: each partner may call only
-- the plugins listed for it (`plugins`, a JSON array of plugin ids). Only key digests are kept.
CREATE TABLE partners (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    plugins       TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE partner_keys (
    digest        BLOB PRIMARY KEY,
    partner_id    TEXT NOT NULL REFERENCES partners (id),
    name          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (partner_id, name)
);
