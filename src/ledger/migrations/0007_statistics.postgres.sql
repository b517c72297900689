-- writ ledger, version 7, PostgreSQL only: no statistics for the columns no
-- query filters or sorts on. ANALYZE (autovacuum's, as the tables grow)
-- otherwise sorts and compares a sample of up to 30,000 values of each
-- column, and these are the wide ones: the stored request and answer (about
-- 500 bytes each), the obligations, the re-decision. On a 2-core host that
-- was about half of an analysis's CPU (docs/performance.md, "Grants on
-- PostgreSQL: the autovacuum's analysis, round 31"), taken from the grants
-- being recorded while it runs. No plan reads these statistics: grants are
-- found by grant_id, subject_id and issued_at, task_id, revoked_at and
-- expires_at; stored answers by key and created_at.
ALTER TABLE writ_grants
    ALTER COLUMN decision_id SET STATISTICS 0,
    ALTER COLUMN policy_digest SET STATISTICS 0,
    ALTER COLUMN request SET STATISTICS 0,
    ALTER COLUMN scope SET STATISTICS 0,
    ALTER COLUMN obligations SET STATISTICS 0,
    ALTER COLUMN credential_ref SET STATISTICS 0,
    ALTER COLUMN revoked_by SET STATISTICS 0,
    ALTER COLUMN revoke_reason SET STATISTICS 0,
    ALTER COLUMN redecision SET STATISTICS 0,
    ALTER COLUMN approval_attestation SET STATISTICS 0;
ALTER TABLE writ_idempotency
    ALTER COLUMN body SET STATISTICS 0,
    ALTER COLUMN request_digest SET STATISTICS 0;
