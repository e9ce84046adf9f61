-- The wall's display links (docs/fleet.md, "The wall"): a read-only, full-screen view for a TV,
-- opened by a secret URL instead of a session. The secret is stored as its SHA-256 only (a long
-- random token, like API tokens); a link never expires by itself and is revoked in the console.
CREATE TABLE display_links (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    -- what the screen is ("IT office TV")
    name TEXT NOT NULL,
    -- JSON array of site ids; NULL = every site
    sites TEXT,
    -- night mode (dimmed) from this local hour (0-23) to that one; both NULL = never
    night_from BIGINT,
    night_to BIGINT,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    -- last time a wall opened with it (to the minute)
    last_used_ms BIGINT
);
