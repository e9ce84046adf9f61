-- Medgate fleet schema, portable between SQLite and PostgreSQL: TEXT, BIGINT and nothing else;
-- times are Unix milliseconds; JSON documents are TEXT.
CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    room TEXT,
    -- pending | approved | revoked | decommissioned
    status TEXT NOT NULL,
    -- online | offline | unknown
    connection TEXT NOT NULL,
    boot_id TEXT,
    last_seen_ms BIGINT,
    inventory TEXT,
    telemetry_interval_secs BIGINT,
    running_config_version BIGINT,
    cert_serial TEXT,
    events_received BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX devices_site ON devices (site_id);

CREATE TABLE device_tags (
    device_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
);

-- Raw telemetry (bucket_secs = 0) and downsampled buckets (bucket_secs > 0).
CREATE TABLE telemetry (
    device_id TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    bucket_secs BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (device_id, bucket_secs, ts_ms)
);

-- Events, deduplicated by (device, id).
CREATE TABLE events (
    device_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (device_id, event_id)
);
CREATE INDEX events_received ON events (received_ms);

CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    action TEXT NOT NULL,
    -- queued | accepted | succeeded | failed | rejected | expired
    status TEXT NOT NULL,
    code TEXT,
    output TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    expires_ms BIGINT
);
CREATE INDEX commands_device ON commands (device_id);

-- Desired configuration documents per scope: device, site or tag.
CREATE TABLE config_documents (
    scope TEXT NOT NULL,
    target TEXT NOT NULL,
    revision BIGINT NOT NULL,
    config TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, target)
);

-- The effective desired configuration of each device, versioned per device.
CREATE TABLE device_desired (
    device_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    source TEXT NOT NULL,
    config TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE device_reported (
    device_id TEXT PRIMARY KEY,
    running_version BIGINT NOT NULL,
    desired_version BIGINT NOT NULL,
    status TEXT NOT NULL,
    problems TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);

-- Calling AEs each appliance has seen (modality onboarding).
CREATE TABLE peers (
    device_id TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    ip TEXT NOT NULL,
    called_ae TEXT NOT NULL,
    sop_classes TEXT NOT NULL,
    modalities TEXT NOT NULL,
    accepted BIGINT NOT NULL,
    refusal TEXT,
    associations BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    approved BIGINT NOT NULL,
    PRIMARY KEY (device_id, calling_ae, ip)
);

CREATE TABLE claim_tokens (
    token_hash TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms BIGINT,
    created_ms BIGINT NOT NULL
);
