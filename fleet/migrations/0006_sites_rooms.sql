-- Sites get a time zone and rooms; the devices list filters by appliance version and hardware
-- profile in the query (kept from each birth, so no JSON is read per row); a claim token may
-- name the room its appliance goes to.
ALTER TABLE sites ADD COLUMN time_zone TEXT;
CREATE TABLE site_rooms (
    site_id TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (site_id, name)
);
ALTER TABLE devices ADD COLUMN appliance_version TEXT;
ALTER TABLE devices ADD COLUMN hardware_profile TEXT;
ALTER TABLE claim_tokens ADD COLUMN room TEXT;
CREATE INDEX device_tags_tag ON device_tags (tag);
