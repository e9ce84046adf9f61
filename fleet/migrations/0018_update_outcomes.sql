-- ota (issue 14): the ends of installs a device did without a campaign (`medgate-appliance
-- update --file`), as its telemetry reported them: each is audited once, whatever replica
-- reads the telemetry first and however often the device repeats it.
CREATE TABLE update_outcomes (
    device TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (device, outcome)
);
