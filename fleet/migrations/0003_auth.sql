-- Named users, sessions, personal API tokens, the first-run setup token and the audit log.
-- Portable (TEXT and BIGINT); secrets are stored as SHA-256 (sessions, tokens) or argon2id
-- (passwords), never in clear.
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    -- admin | operator | viewer | auditor | vendor
    role TEXT NOT NULL,
    -- JSON array of site ids; NULL = every site
    sites TEXT,
    -- argon2id PHC string; NULL = cannot log in with a password
    password_hash TEXT,
    disabled_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE sessions (
    -- public id: listings and revocation
    id TEXT PRIMARY KEY,
    -- SHA-256 of the cookie's secret
    secret_hash TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    source TEXT,
    created_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX sessions_user ON sessions (user_name);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    sites TEXT,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    last_used_ms BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_name);

CREATE TABLE setup_tokens (
    token_hash TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms BIGINT
);

-- Append-only (no UPDATE or DELETE in the code; the next migration makes the database refuse
-- them). id: microseconds and a random suffix, so id order is time order.
CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    source TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    -- ok | denied | failed
    outcome TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT
);
CREATE INDEX audit_at ON audit (at_ms);
