-- The device page (console): every desired configuration version of a device, so that the
-- document a device runs (its reported running version) can be shown beside the one it is
-- asked to run; and when the certificate issued at enrollment expires.
CREATE TABLE device_desired_history (
    device_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    source TEXT NOT NULL,
    config TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, version)
);
INSERT INTO device_desired_history (device_id, version, source, config, updated_ms)
    SELECT device_id, version, source, config, updated_ms FROM device_desired;
ALTER TABLE devices ADD COLUMN cert_expires_ms BIGINT;
