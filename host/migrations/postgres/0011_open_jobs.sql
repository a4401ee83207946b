-- Each plugin's open (pending or running) jobs, kept as a count beside the row the commits
-- lock, so checking the limit of pending jobs reads one row instead of counting the
-- plugin's open jobs (every outstanding coupon's expiry job, say) on every call.
-- A trigger keeps it exact whatever changes a job's status, in the same transaction.
ALTER TABLE jobs_usage ADD COLUMN open_jobs BIGINT NOT NULL DEFAULT 0;

INSERT INTO jobs_usage (plugin_id, open_jobs)
SELECT plugin_id, COUNT(*) FILTER (WHERE status IN ('pending', 'running')) FROM jobs
GROUP BY plugin_id
ON CONFLICT (plugin_id) DO UPDATE SET open_jobs = EXCLUDED.open_jobs;

CREATE FUNCTION jobs_count_open() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta BIGINT := 0;
    plugin TEXT;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN ('pending', 'running') THEN
        delta := delta - 1;
        plugin := OLD.plugin_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status IN ('pending', 'running') THEN
        delta := delta + 1;
        plugin := NEW.plugin_id;
    END IF;
    IF delta <> 0 THEN
        INSERT INTO jobs_usage (plugin_id, open_jobs) VALUES (plugin, delta)
        ON CONFLICT (plugin_id) DO UPDATE SET open_jobs = jobs_usage.open_jobs + delta;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_open AFTER INSERT OR UPDATE OF status OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION jobs_count_open();
