//! The fleet's state and the operations the API and the ingestion share.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use medgate_contract::{
    Command, CommandAction, CommandId, DesiredConfig, DeviceId, DeviceTopics, Schema, SiteId,
    now_ms,
};
use rumqttc::AsyncClient;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::ca::Ca;
use crate::config::FleetConfig;
use crate::ingest;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Errors of fleet operations, mapped to HTTP statuses by the API.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// A desired configuration failed the appliance's validation.
    #[error("the configuration is not valid for the appliance")]
    InvalidConfig(Vec<String>),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Broker or CA.
    #[error("{0}")]
    Internal(String),
}

/// Shared state.
#[derive(Debug)]
pub struct App {
    /// Database.
    pub store: Store,
    /// Configuration.
    pub config: FleetConfig,
    /// Counters.
    pub metrics: Metrics,
    /// CA.
    pub ca: Ca,
    /// SHA-256 (hex) of the admin bearer token.
    pub admin_token_sha256: String,
    mqtt: OnceLock<AsyncClient>,
    live_tx: broadcast::Sender<String>,
}

/// SHA-256 in hexadecimal.
pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 32 random bytes from the system's CSPRNG, hexadecimal.
pub fn random_token() -> Result<String, OpError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| OpError::Internal("the system random generator failed".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Validates a desired configuration with the appliance's own code (`medgate_config`, the
/// crate the appliance builds its configuration with): box-local keys are ignored (see
/// [`medgate_config::strip_box_local`]), anything else must be a valid
/// [`medgate_config::DesiredConfig`]. One problem per line, `key: message`.
pub fn validate_appliance_config(config: &Value) -> Vec<String> {
    let Some(doc) = config.as_object() else {
        return vec!["config: must be a JSON object (the appliance TOML as JSON)".into()];
    };
    let mut doc = doc.clone();
    medgate_config::strip_box_local(&mut doc);
    match medgate_config::DesiredConfig::from_json(doc) {
        Err(p) => vec![p.to_string()],
        Ok(c) => c.validate().iter().map(ToString::to_string).collect(),
    }
}

/// The keys of a desired document (without box-local keys) that `device`, which understands
/// configuration schema `version`, does not know: one problem per key, naming the version.
pub fn schema_problems(
    doc: &serde_json::Map<String, Value>,
    device: &str,
    version: u32,
) -> Vec<String> {
    match medgate_config::keys_not_known(doc, version) {
        Err(e) => vec![format!("config: device {device:?} reports {e}")],
        Ok(keys) => keys
            .into_iter()
            .map(|k| {
                format!(
                    "{k}: device {device:?} understands configuration schema version {version}, which has no such key; update the appliance first or leave the key out"
                )
            })
            .collect(),
    }
}

/// The configuration schema version a device reported in its inventory; a device that never
/// said (a version from before it was reported) understands version 1.
fn reported_config_schema(device: &Value) -> u32 {
    device["inventory"]["config_schema"]
        .as_u64()
        .map_or(1, |v| u32::try_from(v).unwrap_or(u32::MAX))
}

impl App {
    /// A new state.
    pub fn new(store: Store, config: FleetConfig, ca: Ca, admin_token_sha256: String) -> App {
        let (live_tx, _) = broadcast::channel(4096);
        App {
            store,
            config,
            metrics: Metrics::default(),
            ca,
            admin_token_sha256,
            mqtt: OnceLock::new(),
            live_tx,
        }
    }

    /// Sets the MQTT client once connected.
    pub fn set_mqtt(&self, client: AsyncClient) {
        let _ = self.mqtt.set(client);
    }

    /// The MQTT client, once connected.
    pub(crate) fn mqtt_client(&self) -> Option<&AsyncClient> {
        self.mqtt.get()
    }

    fn mqtt(&self) -> Result<&AsyncClient, OpError> {
        self.mqtt
            .get()
            .ok_or_else(|| OpError::Internal("not connected to the broker yet".into()))
    }

    /// Subscribes to the live feed (JSON texts).
    pub fn subscribe_live(&self) -> broadcast::Receiver<String> {
        self.live_tx.subscribe()
    }

    /// Sends a change to the live feed.
    pub fn live(&self, v: Value) {
        let _ = self.live_tx.send(v.to_string());
    }

    /// Rewrites the broker's revocation list (`[broker] crl_file`), if configured, from the
    /// registry: the certificates of revoked and decommissioned devices. Written next to it and
    /// renamed, so the broker never reads half a file.
    pub async fn write_crl(&self) -> Result<(), String> {
        let Some(path) = &self.config.broker.crl_file else {
            return Ok(());
        };
        let revoked = self
            .store
            .revoked_serials()
            .await
            .map_err(|e| format!("revocation list: {e}"))?;
        let pem = self
            .ca
            .crl_pem(&revoked, now_ms())
            .map_err(|e| format!("revocation list: {e}"))?;
        let tmp = path.with_extension("pem.tmp");
        std::fs::write(&tmp, pem)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("broker.crl_file {}: {e}", path.display()))?;
        tracing::info!(
            path = %path.display(),
            revoked = revoked.len(),
            "broker revocation list written; restart the broker to apply it"
        );
        Ok(())
    }

    /// Sends a device's current record to the live feed.
    pub async fn live_device(&self, id: &str) {
        match self.store.device(id).await {
            Ok(Some(d)) => self.live(json!({"type": "device", "device": d})),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(device = id, error = %e, "cannot read a device for the live feed")
            }
        }
    }

    /// The full snapshot that starts every live feed.
    pub async fn snapshot(&self) -> Result<Value, StoreError> {
        Ok(
            json!({"type": "snapshot", "at_ms": now_ms(), "devices": self.store.devices(None).await?, "sites": self.store.sites().await?}),
        )
    }

    async fn topics_of(&self, device: &str) -> Result<DeviceTopics, OpError> {
        let (site, _) = self
            .store
            .device_site_status(device)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no device {device:?}")))?;
        let site = SiteId::new(site).map_err(|e| OpError::Internal(e.to_string()))?;
        let device = DeviceId::new(device).map_err(|e| OpError::Invalid(e.to_string()))?;
        Ok(DeviceTopics::new(site, device))
    }

    /// Creates a command and sends it; it is re-sent when the device next connects if still queued.
    pub async fn create_command(
        &self,
        device: &str,
        action: CommandAction,
        expires_in: Option<Duration>,
    ) -> Result<Value, OpError> {
        let topics = self.topics_of(device).await?;
        let id = format!("c-{}", &random_token()?[..24]);
        let now = now_ms();
        let expires = expires_in.map(|d| now + d.as_millis() as u64);
        let action_json =
            serde_json::to_value(&action).map_err(|e| OpError::Internal(e.to_string()))?;
        self.store
            .create_command(
                &id,
                device,
                &action_json,
                expires.map(|e| e as i64),
                now as i64,
            )
            .await?;
        let cmd = Command {
            schema: Schema::default(),
            id: CommandId::new(id.clone()).map_err(|e| OpError::Internal(e.to_string()))?,
            issued_at_ms: now,
            expires_at_ms: expires,
            action,
        };
        ingest::publish_command(self.mqtt()?, &topics, &cmd)
            .await
            .map_err(OpError::Internal)?;
        self.live(json!({"type": "command", "device": device, "id": id, "status": "queued"}));
        self.store
            .command(&id)
            .await?
            .ok_or_else(|| OpError::Internal("command vanished".into()))
    }

    /// Re-sends a device's queued, unexpired commands (after it connected).
    pub async fn resend_queued_commands(&self, device: &str) {
        let Ok(client) = self.mqtt() else { return };
        let Ok(topics) = self.topics_of(device).await else {
            return;
        };
        let Ok(commands) = self.store.commands(Some(device), 100).await else {
            return;
        };
        let now = now_ms();
        for c in commands.iter().filter(|c| c["status"] == "queued") {
            let expires = c["expires_ms"].as_u64();
            if expires.is_some_and(|e| e < now) {
                continue;
            }
            let (Some(id), Ok(action)) = (
                c["id"].as_str().and_then(|i| CommandId::new(i).ok()),
                serde_json::from_value::<CommandAction>(c["action"].clone()),
            ) else {
                continue;
            };
            let cmd = Command {
                schema: Schema::default(),
                id,
                issued_at_ms: c["created_ms"].as_u64().unwrap_or(now),
                expires_at_ms: expires,
                action,
            };
            if let Err(e) = ingest::publish_command(client, &topics, &cmd).await {
                tracing::warn!(device, error = %e, "cannot re-send a queued command");
            }
        }
    }

    /// Stores a desired configuration for a scope (`device`, `site`, `tag`) after validating it
    /// with the appliance's code (`medgate_config`) and checking its keys against the
    /// configuration schema version every device concerned reported, then updates and publishes
    /// the effective configuration of every device concerned. Returns the devices and their new
    /// versions (and the box-local keys it dropped from the document).
    pub async fn put_config(
        &self,
        scope: &str,
        target: &str,
        config: Value,
    ) -> Result<Value, OpError> {
        let Value::Object(mut doc) = config else {
            return Err(OpError::Invalid(
                "`config` must be a JSON object (the appliance TOML as JSON)".into(),
            ));
        };
        // Box-local keys (a whole appliance file sent as JSON has them) are the box's own: the
        // document stored and sent carries none.
        let ignored = medgate_config::strip_box_local(&mut doc);
        let config = Value::Object(doc);
        let problems = validate_appliance_config(&config);
        if !problems.is_empty() {
            return Err(OpError::InvalidConfig(problems));
        }
        if scope == "device" && self.store.device_site_status(target).await?.is_none() {
            return Err(OpError::NotFound(format!("no device {target:?}")));
        }
        let mut problems = Vec::new();
        if let Value::Object(doc) = &config {
            for device in self.store.devices_in(scope, target).await? {
                let version = self
                    .store
                    .device(&device)
                    .await?
                    .map_or(1, |d| reported_config_schema(&d));
                problems.extend(schema_problems(doc, &device, version));
            }
        }
        if !problems.is_empty() {
            return Err(OpError::InvalidConfig(problems));
        }
        let revision = self
            .store
            .put_config_document(scope, target, &config, now_ms() as i64)
            .await?;
        let mut updated = Vec::new();
        for device in self.store.devices_in(scope, target).await? {
            if let Some(v) = self.refresh_desired(&device).await? {
                updated.push(json!({"device": device, "version": v}));
            }
        }
        Ok(
            json!({"scope": scope, "target": target, "revision": revision, "devices": updated, "ignored_box_local_keys": ignored}),
        )
    }

    /// Recomputes a device's effective desired configuration; publishes it if it changed.
    pub async fn refresh_desired(&self, device: &str) -> Result<Option<i64>, OpError> {
        let Some((source, config)) = self.store.effective_config(device).await? else {
            return Ok(None);
        };
        let (version, changed) = self
            .store
            .set_device_desired(device, &source, &config, now_ms() as i64)
            .await?;
        if changed {
            self.publish_desired(device, version, config).await?;
            self.live_device(device).await;
        }
        Ok(Some(version))
    }

    async fn publish_desired(
        &self,
        device: &str,
        version: i64,
        config: Value,
    ) -> Result<(), OpError> {
        let topics = self.topics_of(device).await?;
        let Value::Object(config) = config else {
            return Err(OpError::Internal("stored config is not an object".into()));
        };
        let d = DesiredConfig {
            schema: Schema::default(),
            version: version as u64,
            issued_at_ms: now_ms(),
            config,
        };
        ingest::publish_desired(self.mqtt()?, &topics, &d)
            .await
            .map_err(OpError::Internal)
    }

    /// Re-publishes every device's desired configuration (retained), e.g. after the fleet
    /// (re)connected to a broker that keeps nothing (the embedded one).
    pub async fn republish_all_desired(&self) {
        let devices = match self.store.devices(None).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list devices to re-publish desired configurations");
                return;
            }
        };
        for d in devices {
            let Some(id) = d["id"].as_str() else { continue };
            if let Ok(c) = self.store.device_config(id).await
                && let Some(v) = c["desired"]["version"].as_i64()
                && let Err(e) = self
                    .publish_desired(id, v, c["desired"]["config"].clone())
                    .await
            {
                tracing::warn!(device = id, error = %e, "cannot re-publish the desired configuration");
            }
        }
    }

    /// Approves a calling AE seen by a device: adds it to the device's allow-list
    /// (`listener.allowed_calling_ae_titles`) through its desired configuration.
    pub async fn approve_peer(&self, device: &str, calling_ae: &str) -> Result<Value, OpError> {
        let ae = medgate_contract::AeTitle::new(calling_ae)
            .map_err(|e| OpError::Invalid(e.to_string()))?;
        let Some((_, mut config)) = self.store.effective_config(device).await? else {
            return Err(OpError::Conflict(format!(
                "device {device:?} has no desired configuration to add the AE to; set one first (PUT /api/v1/devices/{device}/config)"
            )));
        };
        if !self.store.approve_peer(device, ae.as_str()).await? {
            return Err(OpError::NotFound(format!(
                "device {device:?} has never seen calling AE {:?}",
                ae.as_str()
            )));
        }
        let list = config
            .pointer_mut("/listener")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| {
                OpError::Conflict("the desired configuration has no [listener] section".into())
            })?
            .entry("allowed_calling_ae_titles")
            .or_insert_with(|| json!([]));
        if let Some(arr) = list.as_array_mut()
            && !arr.iter().any(|v| v.as_str() == Some(ae.as_str()))
        {
            arr.push(json!(ae.as_str()));
        }
        self.put_config("device", device, config).await
    }

    /// Background upkeep: offline detection from missed heartbeats, telemetry downsampling and
    /// retention.
    pub fn spawn_upkeep(self: &Arc<Self>) {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                n += 1;
                let now = now_ms() as i64;
                match app
                    .store
                    .sweep_offline(app.config.devices.missed_heartbeats, now)
                    .await
                {
                    Ok(ids) => {
                        for id in ids {
                            tracing::info!(device = %id, "device missed its heartbeats: offline");
                            app.live_device(&id).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "offline sweep failed"),
                }
                if n % 12 == 0 {
                    let t = &app.config.telemetry;
                    let raw_before = now - (t.raw_retention_hours * 3_600_000) as i64;
                    let buckets_before = now - (t.retention_days * 86_400_000) as i64;
                    match app
                        .store
                        .downsample(raw_before, t.bucket_secs, buckets_before)
                        .await
                    {
                        Ok((folded, deleted)) if folded + deleted > 0 => {
                            tracing::info!(folded, deleted, "telemetry downsampled");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "telemetry downsampling failed"),
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn a_site_wide_document_needs_no_box_local_key() {
        let d = json!({
            "listener": {"ae_title": "MEDGATE", "bind": "0.0.0.0:104"},
            "destination": [{"name": "archive", "kind": "dimse", "address": "pacs:104", "called_ae_title": "PACS"}],
        });
        assert_eq!(validate_appliance_config(&d), Vec::<String>::new());
        let mut whole = d.clone();
        whole["appliance"] = json!({"name": "x", "data_dir": "/srv/medgate"});
        whole["status"] = json!({"bind": "127.0.0.1:8104"});
        assert_eq!(validate_appliance_config(&whole), Vec::<String>::new());
        let mut typo = d;
        typo["listner"] = json!({});
        let p = validate_appliance_config(&typo);
        assert!(p[0].contains("unknown field `listner`"), "{p:?}");
    }

    #[test]
    fn keys_a_device_does_not_know_are_refused_with_its_version() {
        let d = doc(json!({
            "listener": {"ae_title": "MEDGATE", "bind": "0.0.0.0:104", "tcp_fastopen": true},
        }));
        let p = schema_problems(&d, "ct-room-1", 1);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("listener.tcp_fastopen: "), "{p:?}");
        assert!(
            p[0].contains("device \"ct-room-1\" understands configuration schema version 1"),
            "{p:?}"
        );
        let known = doc(json!({"listener": {"ae_title": "MEDGATE", "bind": "0.0.0.0:104"}}));
        assert_eq!(
            schema_problems(&known, "ct-room-1", 1),
            Vec::<String>::new()
        );
        let p = schema_problems(&known, "ct-room-1", 0);
        assert!(p[0].contains("schema version 0"), "{p:?}");
        assert_eq!(reported_config_schema(&json!({"inventory": null})), 1);
        assert_eq!(
            reported_config_schema(&json!({"inventory": {"config_schema": 7}})),
            7
        );
    }
}
