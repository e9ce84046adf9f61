-- alerts (issue 13 part 3): raised alerts (firing while cleared_ms is NULL) with their
-- acknowledgement and silence, and the notification outbox (one row per alert, event and
-- channel; delivered with retries, kept across restarts).
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    raised_ms BIGINT NOT NULL,
    cleared_ms BIGINT,
    acked_by TEXT,
    acked_ms BIGINT,
    silenced_until_ms BIGINT,
    words TEXT NOT NULL
);
-- At most one firing alert per device and kind, whichever replica raises it.
CREATE UNIQUE INDEX alerts_one_firing ON alerts (device_id, kind) WHERE cleared_ms IS NULL;
CREATE INDEX alerts_raised ON alerts (raised_ms);
CREATE INDEX alerts_site_raised ON alerts (site_id, raised_ms);

CREATE TABLE alert_notifications (
    alert_id TEXT NOT NULL,
    event TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    next_ms BIGINT NOT NULL,
    last_error TEXT,
    created_ms BIGINT NOT NULL,
    done_ms BIGINT,
    PRIMARY KEY (alert_id, event, channel)
);
CREATE INDEX alert_notifications_due ON alert_notifications (status, next_ms);
