-- ota (issue 14 part 2): update bundles, stored in the database (1 MiB chunks, base64 in
-- portable TEXT as command_file_chunks) so that every replica serves them; campaigns and their
-- devices. A campaign row changes by compare-and-set on its revision: two replicas running the
-- same tick never both act.
CREATE TABLE bundles (
    sha256 TEXT PRIMARY KEY,
    product TEXT NOT NULL,
    version TEXT NOT NULL,
    hardware TEXT NOT NULL,
    payload_kind TEXT NOT NULL,
    size BIGINT NOT NULL,
    min_installed TEXT,
    floor TEXT,
    expires_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_ms BIGINT NOT NULL
);

CREATE TABLE bundle_chunks (
    sha256 TEXT NOT NULL,
    idx BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (sha256, idx)
);

CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    targets TEXT NOT NULL,
    waves TEXT NOT NULL,
    soak_secs BIGINT NOT NULL,
    failure_threshold_pct BIGINT NOT NULL,
    mode TEXT NOT NULL,
    deadline_ms BIGINT,
    windows TEXT NOT NULL,
    released_waves BIGINT NOT NULL,
    acknowledged_failures BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    approved_by TEXT,
    approved_ms BIGINT,
    paused_reason TEXT,
    revision BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX campaigns_state ON campaigns (state);
CREATE INDEX campaigns_bundle ON campaigns (bundle_sha256);

CREATE TABLE campaign_devices (
    campaign_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    wave BIGINT NOT NULL,
    state TEXT NOT NULL,
    fail TEXT,
    code TEXT,
    version TEXT,
    running TEXT,
    since_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    baseline_errors BIGINT,
    baseline_p99_ms BIGINT,
    PRIMARY KEY (campaign_id, device_id)
);
CREATE INDEX campaign_devices_device ON campaign_devices (device_id);
