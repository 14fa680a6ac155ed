-- Model versions (models as plug-ins): a model runs at one active version and any number of
-- shadow versions (analysed on the same studies; results indexed, never exported or notified).
-- Each analysis job names the version it runs and its role; export and notify jobs name the
-- version whose results they send. One analysis job per (study, study version, model, model
-- version).
ALTER TABLE jobs
    ADD COLUMN model_version text NOT NULL DEFAULT '',
    ADD COLUMN shadow boolean NOT NULL DEFAULT false;
-- analyses of before: the version their result names (jobs never run keep '', which the worker
-- reads as the model's active version)
UPDATE jobs SET model_version = result->'model'->>'version'
WHERE kind = 'analysis' AND result->'model'->>'version' IS NOT NULL;

ALTER TABLE jobs DROP CONSTRAINT jobs_unique;
ALTER TABLE jobs ADD CONSTRAINT jobs_unique
    UNIQUE (kind, site, study_instance_uid, study_version, model, model_version, destination);
-- `firstread models compare`: the done analyses of one model version
CREATE INDEX jobs_model_version_idx ON jobs (model, model_version) WHERE kind = 'analysis' AND state = 'done';
