-- The triage worklist ranks a study version by every active package's read (issue 15): after
-- the COVID-19 extent class, a study version where a package described by its vocabulary states
-- an abnormal class (its class, or a class within the method's validated error: "no emphysema,
-- possibly emphysema" ranks as abnormal) comes first. Stored, so the order reads no result
-- document: false for results without classifications (COVID-19 reads, refusals, jobs not done).
ALTER TABLE jobs
    ADD COLUMN abnormal_class boolean GENERATED ALWAYS AS (
        coalesce(jsonb_path_exists(result,
            '$.classifications[*] ? (@.class.abnormal == true || @.possible[*].abnormal == true)'), false)
    ) STORED;
