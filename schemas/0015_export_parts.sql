-- The SR first (issue 16): a first read's result set is exported in two parts to each
-- destination, the SR (`part` 'sr', queued as soon as it is written) and the other objects
-- (volumetric SR, SEG, key images: 'objects', queued once they are written), so the read reaches
-- the PACS while its larger objects are still being built. Jobs of other kinds, and export jobs
-- of before, have part ''. Adding a column with a constant default does not rewrite the table.
ALTER TABLE jobs ADD COLUMN part text NOT NULL DEFAULT '';
ALTER TABLE jobs DROP CONSTRAINT jobs_unique;
ALTER TABLE jobs ADD CONSTRAINT jobs_unique
    UNIQUE (kind, site, study_instance_uid, study_version, model, model_version, destination, part);
