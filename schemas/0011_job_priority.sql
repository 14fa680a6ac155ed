-- Queue priorities (issue 15, re-analysis): workers claim the highest priority first, then the
-- oldest. Live jobs (assembly, exports, notifications) keep 0; `firstread reanalyse` queues its
-- analysis jobs below (-10), so a live study that arrives during a re-analysis backlog is the next
-- job a worker takes. A running job is never interrupted.
ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 0;

-- the claim's order: kind, then priority descending, then run_after and id
DROP INDEX IF EXISTS jobs_claimable_idx;
CREATE INDEX jobs_claimable_idx ON jobs (kind, priority DESC, run_after, id) WHERE state IN ('queued', 'running');
