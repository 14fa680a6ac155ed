-- Triage ranks a first read by the highest extent class its method's validated error allows
-- (result.findings.uncertainty.extent_class[1]: "none or minimal, possibly moderate" ranks with
-- the moderate ones: the sickest first); results of before the uncertainty was recorded rank by
-- their class.
ALTER TABLE jobs
    ADD COLUMN extent_class_highest text GENERATED ALWAYS AS (
        coalesce(result->'findings'->'uncertainty'->'extent_class'->>1, result->'findings'->>'extent_class')
    ) STORED;
