-- Each plugin's open (pending or running) jobs, kept as a count beside the row the commits
-- lock, so checking the limit of pending jobs reads one row instead of counting the
-- plugin's open jobs (every outstanding coupon's expiry job, say) on every call.
-- Triggers keep it exact whatever changes a job's status, in the same transaction.
ALTER TABLE jobs_usage ADD COLUMN open_jobs INTEGER NOT NULL DEFAULT 0;

INSERT OR IGNORE INTO jobs_usage (plugin_id) SELECT DISTINCT plugin_id FROM jobs;
UPDATE jobs_usage SET open_jobs = (
    SELECT COUNT(*) FROM jobs
    WHERE jobs.plugin_id = jobs_usage.plugin_id AND jobs.status IN ('pending', 'running')
);

CREATE TRIGGER jobs_open_on_insert AFTER INSERT ON jobs
WHEN NEW.status IN ('pending', 'running')
BEGIN
    INSERT OR IGNORE INTO jobs_usage (plugin_id) VALUES (NEW.plugin_id);
    UPDATE jobs_usage SET open_jobs = open_jobs + 1 WHERE plugin_id = NEW.plugin_id;
END;

CREATE TRIGGER jobs_open_on_update AFTER UPDATE OF status ON jobs
WHEN (OLD.status IN ('pending', 'running')) <> (NEW.status IN ('pending', 'running'))
BEGIN
    UPDATE jobs_usage
    SET open_jobs = open_jobs + CASE WHEN NEW.status IN ('pending', 'running') THEN 1 ELSE -1 END
    WHERE plugin_id = NEW.plugin_id;
END;

CREATE TRIGGER jobs_open_on_delete AFTER DELETE ON jobs
WHEN OLD.status IN ('pending', 'running')
BEGIN
    UPDATE jobs_usage SET open_jobs = open_jobs - 1 WHERE plugin_id = OLD.plugin_id;
END;
