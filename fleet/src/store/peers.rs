//! Peers: the calling AEs each device has seen (from births and `peer_seen` events), and their
//! approval in the console.

use medgate_contract::{DeviceId, Peer};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Result, Store, json, rows_changed};
use crate::model::PeerRecord;

impl<'r> sqlx::FromRow<'r, AnyRow> for PeerRecord {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        let refusal: Option<String> = r.try_get("refusal")?;
        Ok(PeerRecord {
            calling_ae: r.try_get("calling_ae")?,
            ip: r.try_get("ip")?,
            called_ae: r.try_get("called_ae")?,
            sop_classes: json(r, "sop_classes")?,
            modalities: json(r, "modalities")?,
            accepted: r.try_get::<i64, _>("accepted")? != 0,
            refusal: refusal
                .map(|s| serde_json::from_value(serde_json::Value::String(s)))
                .transpose()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            associations: r.try_get("associations")?,
            last_seen_ms: r.try_get("last_seen_ms")?,
            approved: r.try_get::<i64, _>("approved")? != 0,
        })
    }
}

impl Store {
    /// Stores what the device last said of a peer. A `peer_seen` event and the birth's inventory
    /// both carry the whole state (modalities so far, acceptance and refusal of the last
    /// association); the one seen last on the device wins, so an event resent after a reconnect,
    /// or a retained birth read again, never replaces a newer state with an older one.
    pub(super) async fn upsert_peer(
        &self,
        c: &mut AnyConnection,
        device: &DeviceId,
        p: &Peer,
    ) -> Result<()> {
        let refusal = match p.refusal.map(serde_json::to_value).transpose()? {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        };
        sqlx::query(
            "INSERT INTO peers (device_id, calling_ae, ip, called_ae, sop_classes, modalities, accepted, refusal, associations, last_seen_ms, approved) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0) \
             ON CONFLICT (device_id, calling_ae, ip) DO UPDATE SET called_ae = $4, sop_classes = $5, modalities = $6, \
             accepted = $7, refusal = $8, associations = $9, last_seen_ms = $10 \
             WHERE peers.last_seen_ms <= $10",
        )
        .bind(device.as_str())
        .bind(p.calling_ae.as_str())
        .bind(p.ip.to_string())
        .bind(p.called_ae.as_str())
        .bind(serde_json::to_string(&p.sop_classes)?)
        .bind(serde_json::to_string(&p.modalities)?)
        .bind(i64::from(p.accepted))
        .bind(refusal)
        .bind(super::db_int(p.associations))
        .bind(super::db_int(p.last_seen_ms))
        .execute(&mut *c)
        .await?;
        Ok(())
    }

    /// Calling AEs a device has seen.
    pub async fn peers(&self, device: &str) -> Result<Vec<PeerRecord>> {
        Ok(sqlx::query_as::<_, PeerRecord>(
            "SELECT calling_ae, ip, called_ae, sop_classes, modalities, accepted, refusal, associations, last_seen_ms, approved \
             FROM peers WHERE device_id = $1 ORDER BY calling_ae, ip",
        )
        .bind(device)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks a calling AE approved on a device. False if it was never seen there.
    pub async fn approve_peer(&self, device: &str, calling_ae: &str) -> Result<bool> {
        let r =
            sqlx::query("UPDATE peers SET approved = 1 WHERE device_id = $1 AND calling_ae = $2")
                .bind(device)
                .bind(calling_ae)
                .execute(&self.pool)
                .await?;
        Ok(rows_changed(&r))
    }
}
