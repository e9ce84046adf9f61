-- Failed logins, for the throttle (per account and per source address, sliding window): kept in
-- the database so that every replica counts the failures of all, and pruned past the window.
CREATE TABLE login_failures (
    key TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX login_failures_key ON login_failures (key, at_ms);
CREATE INDEX login_failures_at ON login_failures (at_ms);
