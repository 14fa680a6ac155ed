-- Early readiness without the grace for a sender known to send each study whole (issue 16).
--
-- Early readiness waits `early_ready_grace` after the release of a study's last association, in
-- case its sender opens the next association of the same study (one association per series).
-- A sender (calling AE title from one peer host) whose recent studies each came over a single
-- association of it is not waited for: its study is ready once that association is released.
-- One study of it that came over several associations (a sender that sends series by series, a
-- series sent again later) makes it wait again, for its next 20 studies.

CREATE INDEX associations_sender_idx ON associations (calling_ae_title, closed_at DESC);
CREATE INDEX study_deliveries_association_idx ON study_deliveries (association_id);

-- Whether the sender (p_calling, p_host: the peer address without its port) sends whole studies:
-- among its 20 most recent studies other than (p_site, p_study) delivered over associations
-- closed in the last 30 days, at least p_trust_after (0: never) and each over one association
-- of it.
CREATE FUNCTION firstread_sends_whole_studies(
    p_calling text, p_host text, p_site text, p_study text, p_trust_after integer
) RETURNS boolean
LANGUAGE sql STABLE AS $$
    WITH recent AS (
        SELECT count(*) AS associations, max(a.closed_at) AS last_closed
        FROM associations a JOIN study_deliveries d ON d.association_id = a.id
        WHERE a.calling_ae_title = p_calling
          AND regexp_replace(a.peer_address, ':[0-9]+$', '') = p_host
          AND a.closed_at > now() - interval '30 days'
          AND NOT (d.site = p_site AND d.study_instance_uid = p_study)
        GROUP BY d.site, d.study_instance_uid
        ORDER BY last_closed DESC
        LIMIT 20
    )
    SELECT p_trust_after > 0 AND count(*) >= p_trust_after AND coalesce(bool_and(associations = 1), false)
    FROM recent
$$;

-- Study assembly is woken when an association ends (LISTEN firstread_assembly), instead of on
-- its next tick.
CREATE FUNCTION firstread_association_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('firstread_assembly', coalesce(NEW.ending, ''));
    RETURN NEW;
END $$;
CREATE TRIGGER associations_closed AFTER UPDATE OF closed_at ON associations
    FOR EACH ROW WHEN (OLD.closed_at IS NULL AND NEW.closed_at IS NOT NULL)
    EXECUTE FUNCTION firstread_association_closed();
