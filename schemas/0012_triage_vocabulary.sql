-- The triage worklist shows and ranks every active package's read of a study version (issue 15).
--
-- abnormal_class: a package described by its vocabulary states an abnormal class (its class, or a
-- class within the method's validated error: "no emphysema, possibly emphysema" is abnormal); the
-- worklist ranks by it after the COVID-19 extent class. False for results without classifications
-- (COVID-19 reads, refusals, jobs not done).
--
-- vocabulary: what the worklist shows of such a read, its classifications and its whole-region
-- measurements (for the classified value's unit); NULL for results without classifications, so
-- the page never opens the (large) result document of a COVID-19 read for it.
ALTER TABLE jobs
    ADD COLUMN abnormal_class boolean GENERATED ALWAYS AS (
        coalesce(jsonb_path_exists(result,
            '$.classifications[*] ? (@.class.abnormal == true || @.possible[*].abnormal == true)'), false)
    ) STORED,
    ADD COLUMN vocabulary jsonb GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(result->'classifications') = 'array'
                  AND jsonb_array_length(result->'classifications') > 0
             -- jsonb_set, not jsonb_build_object: a generated column takes immutable functions only
             THEN jsonb_set(jsonb_set('{}'::jsonb, '{classifications}', result->'classifications'), '{measurements}',
                  coalesce(jsonb_path_query_array(result, '$.measurements[*] ? (@.zone == null)'), '[]'::jsonb))
        END
    ) STORED;
