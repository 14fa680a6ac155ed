-- Study assembly and the job queue.
--
-- Stability: every indexed instance pushes studies.stable_at to now() + stable_after in the same
-- statement that indexes it. A study is ready when stable_at has passed, it holds an analysable
-- instance, and no open association (one whose node still heartbeats) is delivering to it.
-- Versions: studies.version is the study version to analyse next; queued_version the last one a job
-- was created for. A late arrival (an analysable instance after its version was queued) opens
-- version + 1 when late re-analysis is on.

ALTER TABLE studies
    ADD COLUMN stable_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN version integer NOT NULL DEFAULT 1,
    ADD COLUMN queued_version integer NOT NULL DEFAULT 0,
    ADD COLUMN analysable boolean NOT NULL DEFAULT false;
CREATE INDEX studies_pending_idx ON studies (stable_at) WHERE queued_version < version AND analysable;

-- Associations being received, per node process; heartbeat_at moves while the node lives.
CREATE TABLE associations (
    id              uuid PRIMARY KEY,
    node_id         text NOT NULL,
    calling_ae_title text NOT NULL,
    called_ae_title text NOT NULL,
    peer_address    text NOT NULL,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    ending          text
);
CREATE INDEX associations_open_idx ON associations (node_id) WHERE closed_at IS NULL;

-- Which associations delivered to which study.
CREATE TABLE study_deliveries (
    study_instance_uid text NOT NULL,
    association_id     uuid NOT NULL,
    PRIMARY KEY (study_instance_uid, association_id)
);

-- Jobs: analysis (one per study, study version and model) and export (one per result set and
-- destination). Claimed with FOR UPDATE SKIP LOCKED under a renewable lease.
CREATE TABLE jobs (
    id                 bigserial PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('analysis', 'export')),
    study_instance_uid text NOT NULL,
    study_version      integer NOT NULL,
    model              text NOT NULL DEFAULT '',
    destination        text NOT NULL DEFAULT '',
    payload            jsonb NOT NULL DEFAULT '{}',
    state              text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts           integer NOT NULL DEFAULT 0,
    max_attempts       integer NOT NULL,
    run_after          timestamptz NOT NULL DEFAULT now(),
    lease_owner        text,
    lease_expires_at   timestamptz,
    last_error         text,
    result             jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    UNIQUE (kind, study_instance_uid, study_version, model, destination)
);
CREATE INDEX jobs_claimable_idx ON jobs (kind, run_after) WHERE state IN ('queued', 'running');

-- One row per completed or failed execution of a job (exactly-once evidence, timings).
CREATE TABLE job_runs (
    id          bigserial PRIMARY KEY,
    job_id      bigint NOT NULL REFERENCES jobs ON DELETE CASCADE,
    attempt     integer NOT NULL,
    worker      text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('done', 'failed')),
    error       text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_runs_job_idx ON job_runs (job_id);

-- Wake workers when a job becomes claimable.
CREATE FUNCTION firstread_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'queued' THEN
        PERFORM pg_notify('firstread_jobs', NEW.kind);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW EXECUTE FUNCTION firstread_notify_job();
