-- The study/series/instance index of received instances (firstread Store SCP).
-- One row per SOP Instance; files live under the storage root at `path`.
-- Patient and study attributes are first-received-wins; receive times are updated on every instance.

CREATE TABLE studies (
    study_instance_uid      text PRIMARY KEY,
    patient_id              text,
    patient_name            text,
    patient_birth_date      text,
    patient_sex             text,
    study_date              text,
    study_time              text,
    accession_number        text,
    study_description       text,
    study_id                text,
    referring_physician_name text,
    specific_character_set  text,
    -- provenance: the first association that delivered an instance of this study
    calling_ae_title        text NOT NULL,
    called_ae_title         text NOT NULL,
    peer_address            text NOT NULL,
    first_received_at       timestamptz NOT NULL DEFAULT now(),
    last_received_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE series (
    series_instance_uid     text PRIMARY KEY,
    study_instance_uid      text NOT NULL REFERENCES studies DEFERRABLE INITIALLY DEFERRED,
    modality                text,
    series_number           integer,
    series_description      text,
    body_part_examined      text,
    frame_of_reference_uid  text,
    first_received_at       timestamptz NOT NULL DEFAULT now(),
    last_received_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX series_study_idx ON series (study_instance_uid);

CREATE TABLE instances (
    sop_instance_uid        text PRIMARY KEY,
    series_instance_uid     text NOT NULL REFERENCES series DEFERRABLE INITIALLY DEFERRED,
    study_instance_uid      text NOT NULL REFERENCES studies DEFERRABLE INITIALLY DEFERRED,
    sop_class_uid           text NOT NULL,
    transfer_syntax_uid     text NOT NULL,
    instance_number         integer,
    image_type              text,
    image_position_patient  double precision[],
    image_orientation_patient double precision[],
    pixel_spacing           double precision[],
    slice_thickness         double precision,
    rows                    integer,
    columns                 integer,
    number_of_frames        integer,
    convolution_kernel      text,
    -- relative to the storage root
    path                    text NOT NULL,
    size_bytes              bigint NOT NULL,
    calling_ae_title        text NOT NULL,
    called_ae_title         text NOT NULL,
    peer_address            text NOT NULL,
    association_id          uuid,
    received_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_series_idx ON instances (series_instance_uid);
CREATE INDEX instances_study_idx ON instances (study_instance_uid);
