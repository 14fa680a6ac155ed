-- Retention (crates/firstread/src/retention.rs): a study whose received images were purged keeps
-- its row, its series, its result objects and its jobs; these say when and how many.
ALTER TABLE studies
    ADD COLUMN purged_at timestamptz,
    ADD COLUMN purged_instances integer;
