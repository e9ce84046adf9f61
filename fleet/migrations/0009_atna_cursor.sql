-- atna (issue 13 part 4): how far the audit log has been forwarded to the hospital's audit
-- repository (the id of the last entry written there). One row per destination; only ever moves
-- forward, so several replicas sharing it send at least once and rarely twice.
CREATE TABLE atna_cursor (
    name TEXT PRIMARY KEY,
    last_id TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
