-- writ ledger, version 3: the revocation feed and each grant's last
-- re-decision. The same text runs on SQLite, PostgreSQL and CockroachDB.
--
-- The feed's cursor is `seq`, handed out from the one row of
-- writ_feed_head: a writer adds its rows in the transaction that revokes or
-- narrows, and takes that row (an UPDATE, which holds the row's lock until
-- commit) just before it inserts them. So writers append one at a time, in
-- the order they commit, and a reader that sees a row also sees every row
-- with a smaller `seq`: there are no gaps for a reader to skip past.
CREATE TABLE writ_feed_head (
    feed     TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
INSERT INTO writ_feed_head (feed, last_seq) VALUES ('revocations', 0);
CREATE TABLE writ_revocations (
    seq            BIGINT PRIMARY KEY,
    grant_id       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    subject_id     TEXT NOT NULL,
    task_id        TEXT,
    credential_ref TEXT,
    reason         TEXT,
    revoked_by     TEXT NOT NULL,
    recorded_at    BIGINT NOT NULL,
    scope          TEXT,
    expires_at     BIGINT
);
-- The last re-decision that changed the grant (revoked or narrowed it):
-- the decision as JSON, trace included, and when it was made.
ALTER TABLE writ_grants ADD COLUMN redecision TEXT;
ALTER TABLE writ_grants ADD COLUMN redecided_at BIGINT;
