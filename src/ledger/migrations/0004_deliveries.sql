-- writ ledger, version 4: where each webhook's push of the revocation feed
-- has got to. One row per webhook target; `delivered_seq` is the feed
-- cursor of the last row the receiver acknowledged (or rejected for good).
-- Replicas sharing the ledger advance it with a compare-and-set, so a
-- restarted or second replica resumes where delivery stopped.
CREATE TABLE writ_deliveries (
    target        TEXT PRIMARY KEY,
    delivered_seq BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
