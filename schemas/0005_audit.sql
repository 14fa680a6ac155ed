-- The audit trail: every access to patient data and every authentication, appended, never
-- changed. Action names and outcomes after DICOM PS3.15 A.5 (IHE ATNA): see crates/audit.
CREATE TABLE audit_events (
    id                  bigserial PRIMARY KEY,
    at                  timestamptz NOT NULL DEFAULT now(),
    -- who: an AE title, a user, or how an HTTP client authenticated
    actor               text NOT NULL,
    actor_kind          text NOT NULL CHECK (actor_kind IN ('ae', 'user', 'token', 'session', 'anonymous', 'node')),
    -- from where (IP address and port, or AE@host:port for a destination)
    address             text,
    action              text NOT NULL,
    study_instance_uid  text,
    outcome             text NOT NULL CHECK (outcome IN ('success', 'failure')),
    detail              jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_study_idx ON audit_events (study_instance_uid, at);
CREATE INDEX audit_events_at_idx ON audit_events (at);

-- append-only: the node inserts; nothing updates, deletes or truncates it
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
