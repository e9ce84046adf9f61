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
use crate::model::{CommandRecord, CommandState, ConfigScope};
use crate::store::config::Document;
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

/// Validates an appliance configuration with the appliance's own code
/// (`medgate_appliance::config`): one problem per line, `key: message`.
pub fn validate_appliance_config(config: &Value) -> Vec<String> {
    match serde_json::from_value::<medgate_appliance::config::Config>(config.clone()) {
        Err(e) => vec![e.to_string()],
        Ok(c) => c
            .validate()
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect(),
    }
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
        let reg = self
            .store
            .registration(device)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no device {device:?}")))?;
        let site = SiteId::new(reg.site).map_err(|e| OpError::Internal(e.to_string()))?;
        let device = DeviceId::new(device).map_err(|e| OpError::Invalid(e.to_string()))?;
        Ok(DeviceTopics::new(site, device))
    }

    /// Creates a command and sends it; it is re-sent when the device next connects if still queued.
    pub async fn create_command(
        &self,
        device: &str,
        action: CommandAction,
        expires_in: Option<Duration>,
    ) -> Result<CommandRecord, OpError> {
        let topics = self.topics_of(device).await?;
        let id = format!("c-{}", &random_token()?[..24]);
        let now = now_ms();
        let expires = expires_in.map(|d| now + d.as_millis() as u64);
        self.store
            .create_command(&id, device, &action, expires.map(|e| e as i64), now as i64)
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
        self.live(
            json!({"type": "command", "device": device, "id": id, "status": CommandState::Queued}),
        );
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
        for c in commands
            .into_iter()
            .filter(|c| c.status == CommandState::Queued)
        {
            let expires = c.expires_ms.map(|e| e.max(0) as u64);
            if expires.is_some_and(|e| e < now) {
                continue;
            }
            let Ok(id) = CommandId::new(c.id.as_str()) else {
                continue;
            };
            let cmd = Command {
                schema: Schema::default(),
                id,
                issued_at_ms: u64::try_from(c.created_ms).unwrap_or(now),
                expires_at_ms: expires,
                action: c.action,
            };
            if let Err(e) = ingest::publish_command(client, &topics, &cmd).await {
                tracing::warn!(device, error = %e, "cannot re-send a queued command");
            }
        }
    }

    /// Stores a desired configuration for a scope (`device`, `site`, `tag`) after validating it
    /// with the appliance's code, then updates and publishes the effective configuration of
    /// every device concerned. Returns the devices and their new versions.
    pub async fn put_config(
        &self,
        scope: ConfigScope,
        target: &str,
        config: Value,
    ) -> Result<Value, OpError> {
        let problems = validate_appliance_config(&config);
        let Value::Object(config) = config else {
            return Err(OpError::Invalid(
                "`config` must be a JSON object (the appliance TOML as JSON)".into(),
            ));
        };
        if !problems.is_empty() {
            return Err(OpError::InvalidConfig(problems));
        }
        if scope == ConfigScope::Device && self.store.registration(target).await?.is_none() {
            return Err(OpError::NotFound(format!("no device {target:?}")));
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
        Ok(json!({"scope": scope, "target": target, "revision": revision, "devices": updated}))
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
        config: Document,
    ) -> Result<(), OpError> {
        let topics = self.topics_of(device).await?;
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
            let id = d.id.as_str();
            if let Ok(c) = self.store.device_config(id).await
                && let Some(desired) = c.desired
                && let Err(e) = self
                    .publish_desired(id, desired.version, desired.config)
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
            .get_mut("listener")
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
        self.put_config(ConfigScope::Device, device, Value::Object(config))
            .await
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
