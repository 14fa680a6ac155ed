-- Triage and notifications.
--
-- last_image_at: when the study's last analysable image arrived (result objects indexed later do
-- not move it), for "time since the last image" and the time to result.
ALTER TABLE studies ADD COLUMN last_image_at timestamptz;
UPDATE studies SET last_image_at = last_received_at WHERE analysable;

-- Notification deliveries are jobs too: one per (study version, model, '<rule>/<channel>').
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('analysis', 'export', 'notify'));
-- the triage page's per-study job lookups and the latest analysis of each study
CREATE INDEX jobs_study_idx ON jobs (study_instance_uid, kind, study_version);
-- the triage order, readable without opening the result document of every analysis
ALTER TABLE jobs
    ADD COLUMN result_status text GENERATED ALWAYS AS (result->>'status') STORED,
    ADD COLUMN extent_class text GENERATED ALWAYS AS (result->'findings'->>'extent_class') STORED,
    ADD COLUMN severity_score integer GENERATED ALWAYS AS ((result->'findings'->>'severity_score')::integer) STORED;

-- Radiologist feedback on a first read: one row per statement (the latest counts); never updated.
CREATE TABLE feedback (
    id                 bigserial PRIMARY KEY,
    study_instance_uid text NOT NULL,
    study_version      integer NOT NULL,
    model              text NOT NULL,
    model_version      text NOT NULL,
    verdict            text NOT NULL CHECK (verdict IN ('agree', 'disagree', 'not_assessable')),
    -- the SFR extent class the radiologist would give (with 'disagree')
    extent_class       text CHECK (extent_class IN ('none_or_minimal', 'moderate', 'extensive', 'severe', 'critical')),
    comment            text NOT NULL DEFAULT '',
    author             text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (verdict = 'disagree' OR extent_class IS NULL)
);
CREATE INDEX feedback_study_idx ON feedback (study_instance_uid, study_version, id DESC);

-- The triage page's order and filters.
CREATE INDEX studies_calling_ae_idx ON studies (calling_ae_title);
CREATE INDEX studies_last_image_idx ON studies (last_image_at DESC);

-- Live updates for the triage page: a study appears or gets a new version, a job changes state,
-- feedback is given. Not on every instance (the ingest path stays free of NOTIFY).
CREATE FUNCTION firstread_triage_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('firstread_triage', NEW.study_instance_uid);
    RETURN NULL;
END $$;
CREATE TRIGGER studies_triage_insert AFTER INSERT ON studies
    FOR EACH ROW EXECUTE FUNCTION firstread_triage_changed();
CREATE TRIGGER studies_triage_version AFTER UPDATE ON studies
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version OR OLD.queued_version IS DISTINCT FROM NEW.queued_version)
    EXECUTE FUNCTION firstread_triage_changed();
-- the page shows analysis and notification jobs, not exports
CREATE TRIGGER jobs_triage AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.kind <> 'export') EXECUTE FUNCTION firstread_triage_changed();
CREATE TRIGGER feedback_triage AFTER INSERT ON feedback
    FOR EACH ROW EXECUTE FUNCTION firstread_triage_changed();
