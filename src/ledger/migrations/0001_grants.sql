-- writ ledger, version 1: grants, per-subject counter rows, idempotent answers.
-- The same text runs on SQLite and PostgreSQL (and CockroachDB, YugabyteDB).
CREATE TABLE writ_grants (
    grant_id      TEXT PRIMARY KEY,
    decision_id   TEXT NOT NULL,
    policy_digest TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    task_id       TEXT,
    request       TEXT NOT NULL,
    scope         TEXT NOT NULL,
    ttl           BIGINT NOT NULL,
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    obligations   TEXT NOT NULL,
    credential_ref TEXT,
    revoked_at    BIGINT,
    revoked_by    TEXT,
    revoke_reason TEXT,
    narrowed      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX writ_grants_subject ON writ_grants (subject_id, issued_at);
CREATE INDEX writ_grants_task ON writ_grants (task_id);
CREATE TABLE writ_subjects (
    subject_id TEXT PRIMARY KEY,
    issued     BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE writ_idempotency (
    idempotency_key TEXT PRIMARY KEY,
    status          INTEGER NOT NULL,
    body            TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
