-- The digest of the request an idempotency key was first used with, so the
-- same key with a different request is refused rather than answered with
-- the first answer. Keys stored before this version have none (NULL) and
-- replay as before.
ALTER TABLE writ_idempotency ADD COLUMN request_digest TEXT;
