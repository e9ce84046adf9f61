//! Commands: created `queued` by the console, moved forward by the device's acknowledgements.

use medgate_contract::{CommandAck, CommandAction, DeviceId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Recorded, Result, Store, json, json_opt, recorded, word};
use crate::model::{CommandFile, CommandRecord, CommandState};

impl<'r> sqlx::FromRow<'r, AnyRow> for CommandRecord {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(CommandRecord {
            id: r.try_get("id")?,
            device: r.try_get("device_id")?,
            action: json(r, "action")?,
            status: word(r, "status")?,
            code: r.try_get("code")?,
            output: json_opt(r, "output")?,
            created_ms: r.try_get("created_ms")?,
            updated_ms: r.try_get("updated_ms")?,
            expires_ms: r.try_get("expires_ms")?,
            file: match r.try_get::<Option<String>, _>("file_state")? {
                None => None,
                Some(_) => Some(CommandFile {
                    name: r.try_get("file_name")?,
                    bytes: r.try_get("file_bytes")?,
                    sha256: r.try_get("file_sha256")?,
                    state: word(r, "file_state")?,
                    reason: r.try_get("file_reason")?,
                }),
            },
        })
    }
}

/// `SELECT` of the columns a [`CommandRecord`] is read from (the command `c` and its file `f`,
/// joined), then `$tail`: one literal statement.
macro_rules! select_commands {
    ($tail:literal) => {
        concat!(
            "SELECT c.id, c.device_id, c.action, c.status, c.code, c.output, c.created_ms, ",
            "c.updated_ms, c.expires_ms, f.status AS file_state, f.name AS file_name, ",
            "f.total_bytes AS file_bytes, f.sha256 AS file_sha256, f.reason AS file_reason ",
            "FROM commands c LEFT JOIN command_files f ON f.command_id = c.id ",
            $tail
        )
    };
}

impl Store {
    /// Creates a command row (`queued`).
    pub async fn create_command(
        &self,
        id: &str,
        device: &str,
        action: &CommandAction,
        expires_ms: Option<i64>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO commands (id, device_id, action, status, created_ms, updated_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $5, $6)",
        )
        .bind(id)
        .bind(device)
        .bind(serde_json::to_string(action)?)
        .bind(CommandState::Queued.as_str())
        .bind(now)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Commands, newest first.
    pub async fn commands(&self, device: Option<&str>, limit: i64) -> Result<Vec<CommandRecord>> {
        Ok(sqlx::query_as::<_, CommandRecord>(select_commands!(
            "WHERE ($1 = '' OR c.device_id = $1) ORDER BY c.created_ms DESC, c.id LIMIT $2"
        ))
        .bind(device.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One command.
    pub async fn command(&self, id: &str) -> Result<Option<CommandRecord>> {
        Ok(
            sqlx::query_as::<_, CommandRecord>(select_commands!("WHERE c.id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records a command acknowledgement; states only move forward.
    pub(super) async fn record_ack(
        &self,
        c: &mut AnyConnection,
        device: &DeviceId,
        ack: &CommandAck,
        now: i64,
    ) -> Result<Recorded> {
        let status = CommandState::from(ack.status);
        let (Some(first), from) = (status.predecessors().first(), status.predecessors()) else {
            return Ok(Recorded::Duplicate);
        };
        let r = sqlx::query(
            "UPDATE commands SET status = $1, code = $2, output = $3, updated_ms = $4 \
             WHERE id = $5 AND device_id = $6 AND (status = $7 OR status = $8)",
        )
        .bind(status.as_str())
        .bind(ack.code.as_ref().map(|c| c.as_str().to_owned()))
        .bind(serde_json::to_string(&ack.output)?)
        .bind(now)
        .bind(ack.id.as_str())
        .bind(device.as_str())
        .bind(first.as_str())
        .bind(from.get(1).unwrap_or(first).as_str())
        .execute(&mut *c)
        .await?;
        Ok(recorded(&r))
    }
}
