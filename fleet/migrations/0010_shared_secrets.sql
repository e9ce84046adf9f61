-- Secrets every replica of the fleet shares, made once by whichever replica needs one first:
-- the key that signs the login form's CSRF token and the pending single-sign-on cookie, so a
-- form served by one replica is accepted by another behind a load balancer without sticky
-- sessions. The value is hexadecimal random; it never leaves the database and the processes.
CREATE TABLE shared_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
