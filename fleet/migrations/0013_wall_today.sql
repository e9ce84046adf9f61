-- The wall's "today" figures read the day's study events of every device: an index on the
-- event time (the device's clock) and kind keeps that a range scan instead of a table scan.
CREATE INDEX events_at_kind ON events (at_ms, kind);
