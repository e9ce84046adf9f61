-- diagnostics download (issue 12): files commands produce (the collect_diagnostics bundle), sent
-- in FileChunk messages. Chunks wait here, keyed by (command, offset), until all bytes are in.
CREATE TABLE command_file_chunks (
    command_id TEXT NOT NULL,
    byte_offset BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (command_id, byte_offset)
);
-- One row per file: receiving | complete | failed; content is base64 (portable TEXT).
CREATE TABLE command_files (
    command_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    name TEXT NOT NULL,
    total_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    content TEXT,
    updated_ms BIGINT NOT NULL
);
