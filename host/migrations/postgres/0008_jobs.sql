-- Scheduled plugin work: what a plugin asked `jobs.schedule` for, and how each run went.
--
-- A job runs for the caller and region of the call that scheduled it; `customer_number` is
-- kept for the job's ledger and never shown to the plugin. A host claims due jobs by taking a
-- lease (`lease_owner`, `lease_until_ms`); the job's completion commits with its writes only
-- while the lease is still that host's, so a job's effects land once.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    plugin_id       TEXT NOT NULL,
    region          TEXT NOT NULL,
    name            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    caller_kind     TEXT NOT NULL CHECK (caller_kind IN ('customer', 'partner', 'scheduler')),
    caller          TEXT NOT NULL,
    customer_number TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    due_at_ms       BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until_ms  BIGINT,
    created_at_ms   BIGINT NOT NULL,
    scheduled_by    TEXT NOT NULL,
    finished_at_ms  BIGINT,
    UNIQUE (plugin_id, idempotency_key)
);
CREATE INDEX jobs_due ON jobs (status, due_at_ms);
CREATE INDEX jobs_by_plugin ON jobs (plugin_id, status, id);

-- One row per plugin that schedules jobs: commits lock it while they count the plugin's
-- pending jobs against its limit, so concurrent commits on several hosts cannot pass it.
CREATE TABLE jobs_usage (
    plugin_id TEXT PRIMARY KEY,
    checks    BIGINT NOT NULL DEFAULT 0
);
