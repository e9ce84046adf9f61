//! Files commands produce (the `collect_diagnostics` bundle), from `FileChunk` messages: chunks
//! are kept by (command, offset), idempotently; once all bytes are in they are assembled in order,
//! checked (size, sha256) and the file kept, base64 in a TEXT column.

use base64::Engine as _;
use medgate_contract::{CommandAction, DeviceId, FileChunk, MAX_FILE_BYTES};
use sqlx::{AnyConnection, Row};

use super::{Result, Store};

/// What became of one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Stored; the file is not complete yet.
    Stored,
    /// Its file was already complete or failed, or it was already stored.
    Duplicate,
    /// The last missing chunk: the file is complete and its digest matches.
    Complete,
    /// All bytes are in but the size or digest does not match: recorded as failed.
    Failed(String),
    /// Not accepted (the reason, for the log).
    Refused(&'static str),
}

impl Store {
    /// Records one chunk sent by `device`, on `c` (the ingest batch's transaction).
    pub async fn record_file_chunk(
        &self,
        c: &mut AnyConnection,
        device: &DeviceId,
        chunk: &FileChunk,
        now: i64,
    ) -> Result<ChunkOutcome> {
        if chunk.total_bytes > MAX_FILE_BYTES {
            return Ok(ChunkOutcome::Refused("file larger than MAX_FILE_BYTES"));
        }
        let Some(data) = chunk.bytes() else {
            return Ok(ChunkOutcome::Refused("chunk data is not base64"));
        };
        let end = chunk.offset.saturating_add(data.len() as u64);
        if data.is_empty() || end > chunk.total_bytes {
            return Ok(ChunkOutcome::Refused("chunk outside the file"));
        }
        let row = sqlx::query("SELECT device_id, action FROM commands WHERE id = $1")
            .bind(chunk.command.as_str())
            .fetch_optional(&mut *c)
            .await?;
        let Some(row) = row else {
            return Ok(ChunkOutcome::Refused("unknown command"));
        };
        let owner: String = row.try_get("device_id")?;
        if owner != device.as_str() {
            return Ok(ChunkOutcome::Refused("command of another device"));
        }
        let action: CommandAction = serde_json::from_str(&row.try_get::<String, _>("action")?)?;
        if action != CommandAction::CollectDiagnostics {
            return Ok(ChunkOutcome::Refused("command produces no file"));
        }
        let offset = i64::try_from(chunk.offset).unwrap_or(i64::MAX);
        let total = i64::try_from(chunk.total_bytes).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO command_files (command_id, device_id, name, total_bytes, sha256, status, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, 'receiving', $6) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(chunk.command.as_str())
        .bind(device.as_str())
        .bind(chunk.name.as_str())
        .bind(total)
        .bind(chunk.sha256.as_str())
        .bind(now)
        .execute(&mut *c)
        .await?;
        // Touching the file's row first takes its row lock (PostgreSQL; SQLite has one writer):
        // the chunks of one file, recorded by several replicas at once, are assembled one
        // transaction after the other, and the last one sees all the others' chunks.
        let receiving = sqlx::query(
            "UPDATE command_files SET updated_ms = $1 WHERE command_id = $2 AND status = 'receiving'",
        )
        .bind(now)
        .bind(chunk.command.as_str())
        .execute(&mut *c)
        .await?
        .rows_affected();
        if receiving == 0 {
            return Ok(ChunkOutcome::Duplicate);
        }
        let file =
            sqlx::query("SELECT total_bytes, sha256 FROM command_files WHERE command_id = $1")
                .bind(chunk.command.as_str())
                .fetch_one(&mut *c)
                .await?;
        let inserted = sqlx::query(
            "INSERT INTO command_file_chunks (command_id, byte_offset, data) VALUES ($1, $2, $3) \
             ON CONFLICT (command_id, byte_offset) DO NOTHING",
        )
        .bind(chunk.command.as_str())
        .bind(offset)
        .bind(&chunk.data)
        .execute(&mut *c)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(ChunkOutcome::Duplicate);
        }
        let want_total: i64 = file.try_get("total_bytes")?;
        let want_sha: String = file.try_get("sha256")?;
        let rows = sqlx::query(
            "SELECT byte_offset, data FROM command_file_chunks WHERE command_id = $1 ORDER BY byte_offset",
        )
        .bind(chunk.command.as_str())
        .fetch_all(&mut *c)
        .await?;
        let mut content = Vec::new();
        for r in &rows {
            let at: i64 = r.try_get("byte_offset")?;
            if at != len_i64(&content) {
                return Ok(ChunkOutcome::Stored); // a gap (or overlap): wait for more
            }
            let text: String = r.try_get("data")?;
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(b) => content.extend_from_slice(&b),
                Err(_) => return Ok(ChunkOutcome::Stored),
            }
        }
        if (len_i64(&content)) < want_total {
            return Ok(ChunkOutcome::Stored);
        }
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &content));
        let outcome = if len_i64(&content) != want_total {
            ChunkOutcome::Failed(format!(
                "{} bytes received, {want_total} announced",
                content.len()
            ))
        } else if digest != want_sha {
            ChunkOutcome::Failed(format!("sha256 {digest} received, {want_sha} announced"))
        } else {
            ChunkOutcome::Complete
        };
        let (status, reason, stored) = match &outcome {
            ChunkOutcome::Complete => (
                "complete",
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&content)),
            ),
            ChunkOutcome::Failed(r) => ("failed", Some(r.clone()), None),
            _ => ("receiving", None, None),
        };
        sqlx::query("UPDATE command_files SET status = $1, reason = $2, content = $3, updated_ms = $4 WHERE command_id = $5")
            .bind(status)
            .bind(reason)
            .bind(stored)
            .bind(now)
            .bind(chunk.command.as_str())
            .execute(&mut *c)
            .await?;
        sqlx::query("DELETE FROM command_file_chunks WHERE command_id = $1")
            .bind(chunk.command.as_str())
            .execute(&mut *c)
            .await?;
        Ok(outcome)
    }

    /// The content of a command's complete file (`None`: no such file, or not complete).
    pub async fn command_file_content(&self, command: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT content FROM command_files WHERE command_id = $1 AND status = 'complete'",
        )
        .bind(command)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let content: Option<String> = r.try_get("content")?;
        Ok(content.and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok()))
    }
}

fn len_i64(bytes: &[u8]) -> i64 {
    i64::try_from(bytes.len()).unwrap_or(i64::MAX)
}
