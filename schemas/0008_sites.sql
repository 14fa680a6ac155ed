-- Sites (hospitals): every study belongs to the site of the peer (or the user, for STOW-RS)
-- that sent it, and each site sees only its own. Study, series and SOP Instance UIDs are
-- global, but the same study sent by two sites is two records, one per site: every key starts
-- with the site. Rows of before sites existed belong to the site 'default'.
ALTER TABLE studies ADD COLUMN site text NOT NULL DEFAULT 'default';
ALTER TABLE series ADD COLUMN site text NOT NULL DEFAULT 'default';
ALTER TABLE instances ADD COLUMN site text NOT NULL DEFAULT 'default';
ALTER TABLE study_deliveries ADD COLUMN site text NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN site text NOT NULL DEFAULT 'default';
ALTER TABLE feedback ADD COLUMN site text NOT NULL DEFAULT 'default';
ALTER TABLE audit_events ADD COLUMN site text;

ALTER TABLE instances DROP CONSTRAINT instances_series_instance_uid_fkey;
ALTER TABLE instances DROP CONSTRAINT instances_study_instance_uid_fkey;
ALTER TABLE series DROP CONSTRAINT series_study_instance_uid_fkey;
ALTER TABLE instances DROP CONSTRAINT instances_pkey;
ALTER TABLE series DROP CONSTRAINT series_pkey;
ALTER TABLE studies DROP CONSTRAINT studies_pkey;
ALTER TABLE studies ADD PRIMARY KEY (site, study_instance_uid);
ALTER TABLE series ADD PRIMARY KEY (site, series_instance_uid);
ALTER TABLE instances ADD PRIMARY KEY (site, sop_instance_uid);
ALTER TABLE series ADD FOREIGN KEY (site, study_instance_uid) REFERENCES studies DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE instances ADD FOREIGN KEY (site, series_instance_uid) REFERENCES series DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE instances ADD FOREIGN KEY (site, study_instance_uid) REFERENCES studies DEFERRABLE INITIALLY DEFERRED;
-- lookups by UID alone (a caller that sees several sites), and within a site
DROP INDEX series_study_idx;
CREATE INDEX series_study_idx ON series (site, study_instance_uid);
DROP INDEX instances_study_idx;
CREATE INDEX instances_study_idx ON instances (site, study_instance_uid);
DROP INDEX instances_series_number_idx;
CREATE INDEX instances_series_number_idx ON instances (site, series_instance_uid, instance_number, sop_instance_uid);
CREATE INDEX studies_uid_idx ON studies (study_instance_uid);
CREATE INDEX instances_sop_idx ON instances (sop_instance_uid);
CREATE INDEX instances_study_uid_idx ON instances (study_instance_uid);
CREATE INDEX instances_series_uid_idx ON instances (series_instance_uid);

ALTER TABLE study_deliveries DROP CONSTRAINT study_deliveries_pkey;
ALTER TABLE study_deliveries ADD PRIMARY KEY (site, study_instance_uid, association_id);

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_study_instance_uid_study_version_model_destinatio_key;
ALTER TABLE jobs ADD CONSTRAINT jobs_unique UNIQUE (kind, site, study_instance_uid, study_version, model, destination);
DROP INDEX jobs_study_idx;
CREATE INDEX jobs_study_idx ON jobs (site, study_instance_uid, kind, study_version);
CREATE INDEX jobs_study_uid_idx ON jobs (study_instance_uid, study_version);

DROP INDEX feedback_study_idx;
CREATE INDEX feedback_study_idx ON feedback (site, study_instance_uid, study_version, id DESC);
CREATE INDEX studies_site_idx ON studies (site, last_image_at DESC);

-- The sites a user sees; '*' is every site (node operators; the users of before sites existed,
-- who saw every study, keep seeing them).
ALTER TABLE users ADD COLUMN sites text[] NOT NULL DEFAULT '{}';
UPDATE users SET sites = '{*}';

-- the triage page's live updates name the study with its site
CREATE OR REPLACE FUNCTION firstread_triage_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('firstread_triage', NEW.site || '/' || NEW.study_instance_uid);
    RETURN NULL;
END $$;
