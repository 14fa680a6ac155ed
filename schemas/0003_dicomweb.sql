-- DICOMweb (PS3.18): each instance's DICOM JSON metadata (without Pixel Data, which is a
-- BulkDataURI relative to the DICOMweb root) is kept with its index row, so WADO-RS metadata
-- and QIDO-RS answers never open a file. `json`, not `jsonb`: the text is served as stored.
ALTER TABLE instances ADD COLUMN metadata json;

-- QIDO-RS matching keys most often sent (PS3.18 Table 10.6.1-5) and the study list order.
CREATE INDEX studies_patient_id_idx ON studies (patient_id);
CREATE INDEX studies_study_date_idx ON studies (study_date);
CREATE INDEX studies_accession_idx ON studies (accession_number);
CREATE INDEX studies_last_received_idx ON studies (last_received_at DESC);
-- Instances of a series in Instance Number order (metadata, retrieval); it serves lookups by
-- series too, so the single-column index goes.
CREATE INDEX instances_series_number_idx ON instances (series_instance_uid, instance_number, sop_instance_uid);
DROP INDEX instances_series_idx;
