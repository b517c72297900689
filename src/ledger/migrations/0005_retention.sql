-- writ ledger, version 5: retention. A sweep deletes what is older than
-- the retention and no longer holds (docs/lifecycle.md, "Retention").
--
-- The feed is pruned from its oldest end only, and the cursor it was
-- pruned to is kept in this row, updated in the transaction that deletes:
-- a reader whose cursor is before it learns that it missed rows (HTTP 410)
-- instead of being handed the rows after the gap.
INSERT INTO writ_feed_head (feed, last_seq) VALUES ('revocations_pruned', 0);
-- Stored answers are deleted by age, oldest first.
CREATE INDEX writ_idempotency_created ON writ_idempotency (created_at);
-- writ_subjects.issued is no longer maintained (a subject's row is only the
-- lock its issuances take; counts come from writ_grants); the column stays
-- so that a replica of the previous version, still running during a
-- rolling upgrade, keeps working.
