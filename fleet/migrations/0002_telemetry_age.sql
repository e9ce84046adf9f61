-- Downsampling and retention select telemetry by age (bucket_secs, ts_ms); without this index
-- they scan the whole table (every minute, while ingestion waits for the write lock).
CREATE INDEX telemetry_age ON telemetry (bucket_secs, ts_ms);
