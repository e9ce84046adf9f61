-- atna (issue 13 part 4): which replica forwards the audit log to destination `name`, until
-- when (Unix ms). Taken and renewed by one conditional upsert (the holder's own row, or any row
-- whose time is past), so one replica at a time sends and the others wait; a holder that
-- stops renewing is replaced once its lease runs out.
CREATE TABLE atna_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
