-- Which studies a model package takes (issue 15: its manifest's `[takes]`,
-- firstread_store::candidate::Takes): study assembly creates no analysis job, and re-analysis
-- queues none, for a study the model version does not take.
--
-- `takes` is that table as JSON: {"modality": ["CT"], "body_part": [...], "body_part_absent": bool,
-- "calling_ae_title": [...], "site": [...]}; an empty list takes any value. A study is taken when
--   - its site is listed (or the list is empty),
--   - one of its instances came from a listed calling AE title (or the list is empty),
--   - one of its series has a listed Modality and a listed Body Part Examined (spaces removed,
--     upper case), or none when `body_part_absent` (or the body part list is empty).
-- The volume builder applies the same body part rule to the series it chooses.
CREATE FUNCTION firstread_takes(p_site text, p_study text, takes jsonb) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT (jsonb_array_length(takes->'site') = 0 OR takes->'site' ? p_site)
       AND (jsonb_array_length(takes->'calling_ae_title') = 0 OR EXISTS (
               SELECT 1 FROM instances i
               WHERE i.site = p_site AND i.study_instance_uid = p_study
                 AND takes->'calling_ae_title' ? i.calling_ae_title))
       AND EXISTS (
               SELECT 1 FROM series s
               WHERE s.site = p_site AND s.study_instance_uid = p_study
                 AND upper(btrim(coalesce(s.modality, 'CT'))) IN
                     (SELECT upper(btrim(m)) FROM jsonb_array_elements_text(takes->'modality') AS m)
                 AND CASE
                     WHEN coalesce(regexp_replace(s.body_part_examined, '\s', '', 'g'), '') = ''
                         THEN coalesce((takes->>'body_part_absent')::boolean, true)
                     WHEN jsonb_array_length(takes->'body_part') = 0 THEN true
                     ELSE upper(regexp_replace(s.body_part_examined, '\s', '', 'g')) IN
                         (SELECT upper(regexp_replace(b, '\s', '', 'g'))
                          FROM jsonb_array_elements_text(takes->'body_part') AS b)
                 END)
$$;
