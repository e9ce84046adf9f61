-- analytics (issue 13 part 2): rollups of the study events, written in the transaction that
-- stores the events (new ones only), so every figure is a sum over a few rows whatever the
-- volume. Days are UTC days (days since 1970-01-01), slots five minutes (at_ms / 300000).

-- Per site, day, modality ('' when not known) and device: every analytics page reads this.
CREATE TABLE analytics_daily (
    site_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    modality TEXT NOT NULL,
    device_id TEXT NOT NULL,
    studies BIGINT NOT NULL,
    images BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    forwarded BIGINT NOT NULL,
    images_forwarded BIGINT NOT NULL,
    bytes_forwarded BIGINT NOT NULL,
    PRIMARY KEY (site_id, day, modality, device_id)
);
-- Ranges of days across every site (trends, the year's overview): covering, so a year's
-- range is read from the index alone (half the time of an index plus table lookups).
CREATE INDEX analytics_daily_day ON analytics_daily (day, site_id, modality, studies, images,
    bytes, forwarded, images_forwarded, bytes_forwarded, device_id);

-- Per site, five-minute slot and modality, kept 8 days: the wall's today and last hour.
CREATE TABLE analytics_recent (
    site_id TEXT NOT NULL,
    slot BIGINT NOT NULL,
    modality TEXT NOT NULL,
    studies BIGINT NOT NULL,
    images BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    forwarded BIGINT NOT NULL,
    images_forwarded BIGINT NOT NULL,
    bytes_forwarded BIGINT NOT NULL,
    PRIMARY KEY (site_id, slot, modality)
);
CREATE INDEX analytics_recent_slot ON analytics_recent (slot);

-- Forwarding delay (C-STORE success at the appliance -> archive confirmation): confirmations
-- per site, day and log-scale bucket (4 per doubling), so percentiles over any range are sums.
CREATE TABLE analytics_delay (
    site_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (site_id, day, bucket)
);
CREATE INDEX analytics_delay_day ON analytics_delay (day, site_id, bucket, n);

-- Events stored before this migration are rolled up once at start (rolled = 0); events stored
-- since are rolled up as they are stored (rolled = 1).
ALTER TABLE events ADD COLUMN rolled BIGINT NOT NULL DEFAULT 0;
CREATE INDEX events_not_rolled ON events (kind) WHERE rolled = 0;

-- The wall's "today" reads analytics_recent now, not the day's events: migration 13's index on
-- the event time served only that scan, and cost every event insert.
DROP INDEX events_at_kind;
