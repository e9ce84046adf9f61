//! Every domain operation of the fleet, in one place: enrollment and claims, registry status
//! (with the broker's revocation list), room and tags, sites, configuration (validated by the
//! appliance's code, published retained), commands, peers, the live feed and upkeep. The REST
//! handlers ([`crate::api`]) parse, call one of these and serialise; the MQTT ingestion
//! ([`crate::ingest`]) records through the store and tells these what changed.
//!
//! [`Ops`] is given its [`Publisher`] at construction: a command or configuration is handed to
//! the MQTT client, which sends it once (re)connected; tests give it a memory.

pub mod access;
// alerts (issue 13 part 3): listing, acknowledgement, silence.
pub mod alerts;
// analytics (issue 13 part 2): the region's numbers within the caller's sites.
pub mod analytics;
// console-auth (issue 12): single sign-on.
pub mod fleet;
// ota (issue 14 part 2): bundles, campaigns, the campaigns' tick.
pub mod ota;
pub mod sso;

use std::time::Duration;

use medgate_contract::{
    AeTitle, Command, CommandAction, CommandId, DesiredConfig, DeviceId, DeviceTopics, Schema,
    SiteId, Token, now_ms,
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::ca::{Ca, CaError};
use crate::config::FleetConfig;
use crate::model::{
    CommandFile, CommandRecord, CommandState, ConfigScope, Device, DeviceConfig, DeviceStatus,
    EventRecord, FileState, PeerRecord, Site, TelemetrySample,
};
use crate::publish::{PublishError, Publisher};
use crate::store::audit::Outcome;
use crate::store::config::Document;
use crate::store::{Store, StoreError, db_int, from_db, now_db};

pub use access::Actor;

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
    /// Not allowed (an unknown, expired or used claim token; outside the caller's role or
    /// sites).
    #[error("{0}")]
    Forbidden(String),
    /// Not authenticated (a wrong password, an unknown or expired setup token).
    #[error("{0}")]
    Unauthenticated(String),
    /// Too many failed logins for this user or from this address.
    #[error(
        "too many failed logins for this user or from this address; try again in {retry_after_secs} s"
    )]
    Throttled {
        /// Seconds until a login may be tried again.
        retry_after_secs: u64,
    },
    /// Database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The MQTT client.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The CA.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The broker's revocation list could not be written.
    #[error("broker.crl_file {path}: {source}")]
    Crl {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// A stored value is not what it must be (an id of the registry that no longer parses).
    #[error("{0}")]
    Corrupt(String),
    /// ota (issue 14 part 2): a bundle refused on upload, with its stable code.
    #[error("{message}")]
    Refused {
        /// The refusal's code (`bad_signature`, `bundle_expired`, …).
        code: &'static str,
        /// What happened and what to do.
        message: String,
    },
    /// ota: a request body larger than allowed.
    #[error("{0}")]
    TooLarge(String),
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
        .map_err(|_| OpError::Random)?;
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
fn reported_config_schema(inventory: Option<&medgate_contract::Inventory>) -> u32 {
    inventory.and_then(|i| i.config_schema).unwrap_or(1)
}

/// A new claim token (shown once) and what it enrolls.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NewClaim {
    /// The token.
    pub token: String,
    /// The site.
    #[schema(value_type = String)]
    pub site: SiteId,
    /// The device.
    #[schema(value_type = String)]
    pub device: DeviceId,
    /// Not valid after (Unix ms).
    pub expires_ms: i64,
}

/// What an enrolled device needs to connect.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Enrolled {
    /// Its site.
    #[schema(value_type = String)]
    pub site: SiteId,
    /// Its id.
    #[schema(value_type = String)]
    pub device: DeviceId,
    /// Its certificate.
    pub certificate_pem: String,
    /// The fleet CA.
    pub ca_pem: String,
    /// `host:port`.
    pub broker: String,
    /// Whether the broker speaks TLS.
    pub broker_tls: bool,
}

/// A device's new desired version.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeviceVersion {
    /// The device.
    pub device: String,
    /// Its desired version now.
    pub version: i64,
}

/// A stored configuration document and the devices whose desired version it set.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ConfigApplied {
    /// Its scope.
    pub scope: ConfigScope,
    /// Its target (device id, site id or tag).
    pub target: String,
    /// The document's revision.
    pub revision: i64,
    /// The devices concerned.
    pub devices: Vec<DeviceVersion>,
    /// Box-local keys the document had (a whole appliance file sent as JSON), dropped: the
    /// document stored and sent carries none.
    pub ignored_box_local_keys: Vec<String>,
}

/// A site's id and name.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SiteName {
    /// Its id.
    #[schema(value_type = String)]
    pub id: SiteId,
    /// Its name.
    pub name: String,
}

/// The fleet's operations.
#[derive(Debug)]
pub struct Ops {
    /// Database.
    pub store: Store,
    /// Configuration.
    pub config: FleetConfig,
    /// CA.
    pub ca: Ca,
    publisher: Publisher,
    live_tx: broadcast::Sender<String>,
    // console-auth (issue 12): the identity provider, and the key signing the login form's
    // CSRF token and the pending single sign-on cookie (shared by the replicas, through the
    // database; read once per process).
    sso: Option<sso::Sso>,
    form_key: tokio::sync::OnceCell<ring::hmac::Key>,
    /// wall (issue 13 part 1): the "fleet changed" signal and display link revocations.
    pub wall: crate::wall::Hub,
    /// ota (issue 14): the last local-install outcome seen per device, so that a device that
    /// repeats it in every telemetry sample costs no database write (the table decides once
    /// across replicas; this only spares the repeats).
    local_outcomes: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Ops {
    /// The operations over a store, sending through `publisher`.
    pub fn new(store: Store, config: FleetConfig, ca: Ca, publisher: Publisher) -> Ops {
        let (live_tx, _) = broadcast::channel(4096);
        let sso = sso::from_config(&config);
        Ops {
            store,
            config,
            ca,
            publisher,
            live_tx,
            sso,
            form_key: tokio::sync::OnceCell::new(),
            wall: crate::wall::Hub::new(),
            local_outcomes: std::sync::Mutex::default(),
        }
    }

    /// What sends to devices.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    // ---- live feed ----

    /// Subscribes to the live feed (JSON texts).
    pub fn subscribe_live(&self) -> broadcast::Receiver<String> {
        self.live_tx.subscribe()
    }

    /// Sends a change to the live feed.
    pub fn live(&self, v: Value) {
        let _ = self.live_tx.send(v.to_string());
        self.wall.changed();
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

    // ---- reads ----

    /// Devices (of a site) within a site scope.
    pub async fn devices(
        &self,
        scope: &crate::auth::SiteScope,
        site: Option<&str>,
    ) -> Result<Vec<Device>, OpError> {
        let mut devices = self.store.devices(site).await?;
        devices.retain(|d| scope.allows(&d.site));
        Ok(devices)
    }

    /// One device.
    pub async fn device(&self, id: &str) -> Result<Option<Device>, OpError> {
        Ok(self.store.device(id).await?)
    }

    /// Events, newest first (at most 10,000).
    pub async fn events(
        &self,
        device: Option<&str>,
        since_ms: i64,
        limit: Option<i64>,
    ) -> Result<Vec<EventRecord>, OpError> {
        let limit = limit.unwrap_or(100).clamp(1, 10_000);
        Ok(self.store.events(device, since_ms, limit).await?)
    }

    /// Distinct events stored for a device.
    pub async fn event_count(&self, device: &str) -> Result<i64, OpError> {
        Ok(self.store.event_count(device).await?)
    }

    /// Telemetry of a device between two times (at most 100,000 samples).
    pub async fn telemetry(
        &self,
        device: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Vec<TelemetrySample>, OpError> {
        let limit = limit.unwrap_or(1000).clamp(1, 100_000);
        Ok(self
            .store
            .telemetry(
                device,
                from_ms.unwrap_or(0),
                to_ms.unwrap_or(i64::MAX),
                limit,
            )
            .await?)
    }

    /// Calling AEs a device has seen.
    pub async fn peers(&self, device: &str) -> Result<Vec<PeerRecord>, OpError> {
        Ok(self.store.peers(device).await?)
    }

    /// Desired and reported configuration of a device; `None` if no such device.
    pub async fn device_config(&self, device: &str) -> Result<Option<DeviceConfig>, OpError> {
        if self.store.registration(device).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.store.device_config(device).await?))
    }

    /// A device's boot, reporting period and certificate; `None` if no such device.
    pub async fn device_identity(
        &self,
        device: &str,
    ) -> Result<Option<crate::model::DeviceIdentity>, OpError> {
        Ok(self.store.device_identity(device).await?)
    }

    /// Telemetry of a device over `[from_ms, to_ms]`, at most one sample per `step_ms`.
    pub async fn telemetry_series(
        &self,
        device: &str,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<TelemetrySample>, OpError> {
        Ok(self
            .store
            .telemetry_series(device, from_ms, to_ms, step_ms)
            .await?)
    }

    /// A device's latest telemetry sample.
    pub async fn latest_telemetry(&self, device: &str) -> Result<Option<TelemetrySample>, OpError> {
        Ok(self.store.latest_telemetry(device).await?)
    }

    /// The document of one desired version of a device, if the history still has it.
    pub async fn desired_version(
        &self,
        device: &str,
        version: i64,
    ) -> Result<Option<Document>, OpError> {
        Ok(self.store.desired_version(device, version).await?)
    }

    /// The configuration schema version a device understands (from its inventory; 1 if it
    /// never said).
    pub async fn config_schema_of(&self, device: &str) -> Result<u32, OpError> {
        let d = self.store.device(device).await?;
        Ok(reported_config_schema(
            d.as_ref().and_then(|d| d.inventory.as_ref()),
        ))
    }

    /// A device's commands, newest first.
    pub async fn commands(&self, device: &str) -> Result<Vec<CommandRecord>, OpError> {
        Ok(self.store.commands(Some(device), 500).await?)
    }

    /// One command.
    pub async fn command(&self, id: &str) -> Result<Option<CommandRecord>, OpError> {
        Ok(self.store.command(id).await?)
    }

    /// The file a command produced (the diagnostics bundle), for download: its description and
    /// bytes. Audited as `diagnostics.download` (who took which device's bundle, when).
    pub async fn command_file(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<(CommandFile, Vec<u8>), OpError> {
        let command = self
            .store
            .command(id)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no command {id}")))?;
        let Some(file) = command.file else {
            return Err(OpError::NotFound(format!(
                "command {id} has no file: only collect_diagnostics produces one, and its first bytes have not arrived"
            )));
        };
        match file.state {
            FileState::Complete => {}
            FileState::Receiving => {
                return Err(OpError::Conflict(format!(
                    "the file of command {id} is still arriving from the appliance; try again in a few seconds"
                )));
            }
            FileState::Failed => {
                return Err(OpError::Conflict(format!(
                    "the file of command {id} arrived damaged ({}); send collect_diagnostics again",
                    file.reason.as_deref().unwrap_or("digest mismatch")
                )));
            }
        }
        let content = self.store.command_file_content(id).await?.ok_or_else(|| {
            OpError::Corrupt(format!("command {id}: complete file without content"))
        })?;
        self.audit(
            actor,
            "diagnostics.download",
            &command.device,
            Outcome::Ok,
            None,
            Some(format!(
                "command {id}: {} ({} bytes, sha256 {})",
                file.name, file.bytes, file.sha256
            )),
        )
        .await;
        Ok((file, content))
    }

    /// Sites with device counts, within a site scope.
    pub async fn sites(&self, scope: &crate::auth::SiteScope) -> Result<Vec<Site>, OpError> {
        let mut sites = self.store.sites().await?;
        sites.retain(|s| scope.allows(&s.id));
        Ok(sites)
    }

    // ---- registry ----

    /// Sets a device's room and tags (tags: 1-64 characters of a token); its desired
    /// configuration follows its new tags. `None` if no such device.
    pub async fn patch_device(
        &self,
        actor: &Actor,
        id: &str,
        room: Option<&str>,
        tags: Option<&[String]>,
    ) -> Result<Option<Device>, OpError> {
        let Some(before) = self.store.device(id).await? else {
            return Ok(None);
        };
        if let Some(t) = tags
            .unwrap_or_default()
            .iter()
            .find(|t| Token::new(t.as_str()).is_err())
        {
            return Err(OpError::Invalid(format!(
                "tag {t:?}: 1-64 characters A-Za-z0-9._:+~-"
            )));
        }
        self.store.set_device_meta(id, room, tags).await?;
        if tags.is_some() {
            self.refresh_desired(id).await?;
        }
        self.live_device(id).await;
        let after = self.device(id).await?;
        let meta = |d: &Device| json!({"room": d.room, "tags": d.tags}).to_string();
        self.audit(
            actor,
            "device.patch",
            &format!("device:{id}"),
            Outcome::Ok,
            Some(meta(&before)),
            after.as_ref().map(meta),
        )
        .await;
        Ok(after)
    }

    /// Sets a device's registry status and rewrites the broker's revocation list (a failure to
    /// write it is logged: the status stands). `None` if no such device.
    pub async fn set_status(
        &self,
        actor: &Actor,
        id: &str,
        status: DeviceStatus,
    ) -> Result<Option<Device>, OpError> {
        let before = self.store.registration(id).await?;
        if !self.store.set_device_status(id, status, now_db()).await? {
            return Ok(None);
        }
        tracing::info!(device = %id, %status, "device registry status changed");
        if let Err(e) = self.write_crl().await {
            tracing::error!(device = %id, error = %e, "the broker's revocation list was not updated");
        }
        self.live_device(id).await;
        self.audit(
            actor,
            &format!("device.{}", status.as_str()),
            &format!("device:{id}"),
            Outcome::Ok,
            before.map(|r| json!({"status": r.status}).to_string()),
            Some(json!({"status": status}).to_string()),
        )
        .await;
        self.device(id).await
    }

    /// Rewrites the broker's revocation list (`[broker] crl_file`), if configured, from the
    /// registry: the certificates of revoked and decommissioned devices. Written next to it and
    /// renamed, so the broker never reads half a file.
    pub async fn write_crl(&self) -> Result<(), OpError> {
        let Some(path) = &self.config.broker.crl_file else {
            return Ok(());
        };
        let revoked = self.store.revoked_serials().await?;
        let pem = self.ca.crl_pem(&revoked, now_ms())?;
        let tmp = path.with_extension("pem.tmp");
        std::fs::write(&tmp, pem)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| OpError::Crl {
                path: path.clone(),
                source,
            })?;
        tracing::info!(
            path = %path.display(),
            revoked = revoked.len(),
            "broker revocation list written; restart the broker to apply it"
        );
        Ok(())
    }

    /// Creates or renames a site (name: 1-200 characters, trimmed).
    pub async fn put_site(
        &self,
        actor: &Actor,
        site: &SiteId,
        name: &str,
    ) -> Result<SiteName, OpError> {
        actor.check_site(site.as_str())?;
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(OpError::Invalid("name: 1-200 characters".into()));
        }
        let before = self
            .store
            .sites()
            .await?
            .into_iter()
            .find(|s| s.id == site.as_str());
        self.store.upsert_site(site, name, now_db()).await?;
        self.audit(
            actor,
            "site.put",
            &format!("site:{site}"),
            Outcome::Ok,
            before.map(|s| json!({"name": s.name}).to_string()),
            Some(json!({"name": name}).to_string()),
        )
        .await;
        Ok(SiteName {
            id: site.clone(),
            name: name.to_owned(),
        })
    }

    // ---- enrollment ----

    /// A one-time claim token for a device at a site; refused if the device is registered at
    /// another site.
    pub async fn create_claim(
        &self,
        actor: &Actor,
        site: SiteId,
        device: DeviceId,
    ) -> Result<NewClaim, OpError> {
        actor.check_site(site.as_str())?;
        if let Some(reg) = self.store.registration(device.as_str()).await?
            && reg.site != site.as_str()
        {
            return Err(OpError::Conflict(format!(
                "device {device} is registered at site {}",
                reg.site
            )));
        }
        let token = random_token()?;
        let now = now_db();
        let expires_ms = now.saturating_add(db_int(
            self.config
                .devices
                .claim_token_hours
                .saturating_mul(3_600_000),
        ));
        self.store
            .create_claim(
                &sha256_hex(token.as_bytes()),
                &site,
                &device,
                expires_ms,
                now,
            )
            .await?;
        // The token itself is never written anywhere but to the caller.
        self.audit(
            actor,
            "claim.create",
            &format!("device:{device}"),
            Outcome::Ok,
            None,
            Some(json!({"site": site, "device": device, "expires_ms": expires_ms}).to_string()),
        )
        .await;
        Ok(NewClaim {
            token,
            site,
            device,
            expires_ms,
        })
    }

    /// Enrolls a device with its claim token (used once) and CSR: signs its certificate and
    /// approves it, in one transaction.
    pub async fn enroll(&self, token: &str, csr_pem: &str) -> Result<Enrolled, OpError> {
        let now = now_db();
        let Some(claim) = self
            .store
            .use_claim(&sha256_hex(token.trim().as_bytes()), now)
            .await?
        else {
            return Err(OpError::Forbidden(
                "claim token unknown, expired or already used; ask hospital IT for a new claim token".into(),
            ));
        };
        let issued = self
            .ca
            .sign_device_csr(
                csr_pem,
                claim.device.as_str(),
                self.config.devices.certificate_days,
            )
            .map_err(|e| OpError::Invalid(format!("csr_pem: {e}")))?;
        self.store
            .enroll(&claim.site, &claim.device, &issued.serial, now)
            .await?;
        // console-fleet: the room the claim named.
        self.store
            .apply_claim_room(&sha256_hex(token.trim().as_bytes()), claim.device.as_str())
            .await?;
        let days_ms = self
            .config
            .devices
            .certificate_days
            .saturating_mul(86_400_000);
        self.store
            .set_cert_expiry(
                claim.device.as_str(),
                now_db().saturating_add(db_int(days_ms)),
            )
            .await?;
        tracing::info!(device = %claim.device, site = %claim.site, serial = %issued.serial, "device enrolled");
        self.live_device(claim.device.as_str()).await;
        let (host, port) = crate::ingest::broker_endpoint(&self.config);
        // The embedded broker speaks plain MQTT (lab and demo only); an external one speaks TLS.
        let broker_tls = self.config.broker.mode == crate::config::BrokerMode::External
            && self.config.broker.tls.is_some();
        Ok(Enrolled {
            site: claim.site,
            device: claim.device,
            certificate_pem: issued.certificate_pem,
            ca_pem: self.ca.cert_pem().to_owned(),
            broker: format!("{host}:{port}"),
            broker_tls,
        })
    }

    // ---- commands ----

    async fn topics_of(&self, device: &str) -> Result<DeviceTopics, OpError> {
        let reg = self
            .store
            .registration(device)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no device {device:?}")))?;
        let site = SiteId::new(reg.site).map_err(|e| OpError::Corrupt(e.to_string()))?;
        let device = DeviceId::new(device).map_err(|e| OpError::Invalid(e.to_string()))?;
        Ok(DeviceTopics::new(site, device))
    }

    /// Creates a command and sends it; it is re-sent when the device next connects if still queued.
    pub async fn create_command(
        &self,
        actor: &Actor,
        device: &str,
        action: CommandAction,
        expires_in: Option<Duration>,
    ) -> Result<CommandRecord, OpError> {
        let topics = self.topics_of(device).await?;
        let id = format!("c-{}", &random_token()?[..24]);
        let now = now_ms();
        let expires = expires_in.map(|d| now + u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.store
            .create_command(&id, device, &action, expires.map(db_int), db_int(now))
            .await?;
        let cmd = Command {
            schema: Schema::default(),
            id: CommandId::new(id.clone()).map_err(|e| OpError::Corrupt(e.to_string()))?,
            issued_at_ms: now,
            expires_at_ms: expires,
            action,
        };
        self.publisher.command(&topics, &cmd).await?;
        self.live(
            json!({"type": "command", "device": device, "id": id, "status": CommandState::Queued}),
        );
        self.audit(
            actor,
            "command.create",
            &format!("device:{device}"),
            Outcome::Ok,
            None,
            Some(json!({"command": id, "action": cmd.action, "expires_ms": expires}).to_string()),
        )
        .await;
        self.store
            .command(&id)
            .await?
            .ok_or_else(|| OpError::Corrupt(format!("command {id} vanished")))
    }

    /// Re-sends a device's queued, unexpired commands (after it connected).
    pub async fn resend_queued_commands(&self, device: &str) {
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
            let expires = c.expires_ms.map(from_db);
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
            if let Err(e) = self.publisher.command(&topics, &cmd).await {
                tracing::warn!(device, error = %e, "cannot re-send a queued command");
            }
        }
    }

    // ---- configuration ----

    /// Stores a desired configuration for a scope after validating it with the appliance's code,
    /// then updates and publishes the effective configuration of every device concerned.
    /// Returns the devices and their new versions.
    pub async fn put_config(
        &self,
        actor: &Actor,
        scope: ConfigScope,
        target: &str,
        config: Value,
    ) -> Result<ConfigApplied, OpError> {
        match scope {
            ConfigScope::Device => {}
            ConfigScope::Site => {
                SiteId::new(target).map_err(|e| OpError::Invalid(e.to_string()))?;
            }
            ConfigScope::Tag => {
                Token::new(target).map_err(|e| OpError::Invalid(e.to_string()))?;
            }
        }
        let Value::Object(mut config) = config else {
            return Err(OpError::Invalid(
                "`config` must be a JSON object (the appliance TOML as JSON)".into(),
            ));
        };
        // Box-local keys (a whole appliance file sent as JSON has them) are the box's own.
        let ignored_box_local_keys = medgate_config::strip_box_local(&mut config);
        let problems = validate_appliance_config(&Value::Object(config.clone()));
        if !problems.is_empty() {
            return Err(OpError::InvalidConfig(problems));
        }
        if scope == ConfigScope::Device && self.store.registration(target).await?.is_none() {
            return Err(OpError::NotFound(format!("no device {target:?}")));
        }
        // Every device concerned must know every key (version skew once updates roll out).
        let mut problems = Vec::new();
        for device in self.store.devices_in(scope, target).await? {
            let version = self
                .store
                .device(&device)
                .await?
                .map_or(1, |d| reported_config_schema(d.inventory.as_ref()));
            problems.extend(schema_problems(&config, &device, version));
        }
        if !problems.is_empty() {
            return Err(OpError::InvalidConfig(problems));
        }
        // The audit entry has the document before the change beside the one after it.
        let before = self.store.config_document(scope, target).await?;
        let revision = self
            .store
            .put_config_document(scope, target, &config, now_db())
            .await?;
        self.audit(
            actor,
            "config.put",
            &format!("{}:{target}", scope.as_str()),
            Outcome::Ok,
            before.map(|(r, c)| json!({"revision": r, "config": c}).to_string()),
            Some(json!({"revision": revision, "config": config}).to_string()),
        )
        .await;
        let mut updated = Vec::new();
        for device in self.store.devices_in(scope, target).await? {
            if let Some(v) = self.refresh_desired(&device).await? {
                updated.push(DeviceVersion { device, version: v });
            }
        }
        Ok(ConfigApplied {
            scope,
            target: target.to_owned(),
            revision,
            devices: updated,
            ignored_box_local_keys,
        })
    }

    /// Recomputes a device's effective desired configuration; publishes it if it changed.
    pub async fn refresh_desired(&self, device: &str) -> Result<Option<i64>, OpError> {
        let Some((source, config)) = self.store.effective_config(device).await? else {
            return Ok(None);
        };
        let (version, changed) = self
            .store
            .set_device_desired(device, &source, &config, now_db())
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
            version: from_db(version),
            issued_at_ms: now_ms(),
            config,
        };
        Ok(self.publisher.desired(&topics, &d).await?)
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
        // ota (issue 14 part 2): the offers of the live campaigns, retained too.
        self.republish_updates().await;
    }

    // ---- peers ----

    /// Approves a calling AE seen by a device: adds it to the device's allow-list
    /// (`listener.allowed_calling_ae_titles`) through its desired configuration.
    pub async fn approve_peer(
        &self,
        actor: &Actor,
        device: &str,
        calling_ae: &str,
    ) -> Result<ConfigApplied, OpError> {
        let ae = AeTitle::new(calling_ae).map_err(|e| OpError::Invalid(e.to_string()))?;
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
        self.audit(
            actor,
            "peer.approve",
            &format!("device:{device}"),
            Outcome::Ok,
            None,
            Some(json!({"calling_ae": ae.as_str()}).to_string()),
        )
        .await;
        self.put_config(actor, ConfigScope::Device, device, Value::Object(config))
            .await
    }

    // ---- upkeep ----

    /// One round of upkeep: the update campaigns' tick, offline detection from missed
    /// heartbeats, and, when `downsample`,
    /// telemetry downsampling and retention and the analytics slots' pruning.
    pub async fn upkeep(&self, downsample: bool) {
        // ota (issue 14 part 2): every live campaign, one engine run each.
        self.ota_tick().await;
        let now = now_db();
        match self
            .store
            .sweep_offline(self.config.devices.missed_heartbeats, now)
            .await
        {
            Ok(ids) => {
                for id in ids {
                    tracing::info!(device = %id, "device missed its heartbeats: offline");
                    self.live_device(&id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "offline sweep failed"),
        }
        if downsample {
            let t = &self.config.telemetry;
            let raw_before =
                now.saturating_sub(db_int(t.raw_retention_hours.saturating_mul(3_600_000)));
            let buckets_before =
                now.saturating_sub(db_int(t.retention_days.saturating_mul(86_400_000)));
            match self
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
            // analytics: the wall's five-minute slots are kept 8 days.
            match self.store.prune_analytics_recent(now).await {
                Ok(n) if n > 0 => tracing::info!(
                    rows = n,
                    "analytics five-minute slots older than 8 days dropped"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "analytics pruning failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The operations against SQLite, with a publisher in memory: no broker, no HTTP.

    use std::sync::{Arc, Mutex};

    use medgate_contract::{DeviceTopics, Kind};

    use super::*;
    use crate::publish::Sent;

    struct Fixture {
        ops: Ops,
        sent: Arc<Mutex<Vec<Sent>>>,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let mut config = FleetConfig {
            data_dir: dir.path().to_owned(),
            ..FleetConfig::default()
        };
        config.broker.crl_file = Some(dir.path().join("crl.pem"));
        let ca = Ca::load_or_create(&dir.path().join("ca")).expect("ca");
        let (publisher, sent) = Publisher::memory();
        Fixture {
            ops: Ops::new(store, config, ca, publisher),
            sent,
            _dir: dir,
        }
    }

    fn ids(site: &str, device: &str) -> (SiteId, DeviceId) {
        (
            SiteId::new(site).expect("site"),
            DeviceId::new(device).expect("device"),
        )
    }

    fn example_config() -> Value {
        let text = include_str!("../../appliance/app/medgate-appliance.example.toml");
        let v: toml::Value = toml::from_str(text).expect("example parses");
        serde_json::to_value(v).expect("json")
    }

    fn topics(site: &str, device: &str) -> DeviceTopics {
        let (s, d) = ids(site, device);
        DeviceTopics::new(s, d)
    }

    #[tokio::test]
    async fn a_revoked_device_goes_on_the_revocation_list() {
        let f = fixture().await;
        let (site, dev) = ids("s", "d");
        f.ops
            .store
            .enroll(&site, &dev, "0a1b", 1)
            .await
            .expect("enroll");
        let d = f
            .ops
            .set_status(&Actor::cli(), "d", DeviceStatus::Revoked)
            .await
            .expect("status")
            .expect("known");
        assert_eq!(d.status, DeviceStatus::Revoked);
        let crl = f.ops.config.broker.crl_file.clone().expect("crl file");
        assert!(
            std::fs::read_to_string(crl)
                .expect("crl written")
                .contains("X509 CRL")
        );
        assert_eq!(
            f.ops.store.revoked_serials().await.expect("serials")[0].0,
            "0a1b"
        );
        assert!(
            f.ops
                .set_status(&Actor::cli(), "nobody", DeviceStatus::Revoked)
                .await
                .expect("status")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_saved_configuration_is_audited_before_and_after_and_kept_per_version() {
        let f = fixture().await;
        let (site, dev) = ids("s", "d");
        f.ops
            .store
            .register_device(&site, &dev, DeviceStatus::Approved, 1)
            .await
            .expect("register");
        let first = example_config();
        let mut second = first.clone();
        second["listener"]["max_associations"] = json!(7);
        for doc in [&first, &second] {
            f.ops
                .put_config(&Actor::cli(), ConfigScope::Device, "d", doc.clone())
                .await
                .expect("saved");
        }
        let entries = f
            .ops
            .audit_entries(&crate::store::audit::AuditFilter {
                action: Some("config.put".into()),
                ..Default::default()
            })
            .await
            .expect("audit");
        assert_eq!(entries.len(), 2);
        // Newest first: the second save has the first document before it.
        let doc_of = |text: &Option<String>| -> Value {
            serde_json::from_str::<Value>(text.as_deref().expect("recorded")).expect("json")
                ["config"]["listener"]["max_associations"]
                .clone()
        };
        assert_eq!(doc_of(&entries[0].after), json!(7));
        assert_eq!(doc_of(&entries[0].before), json!(32));
        assert!(entries[1].before.is_none(), "nothing before the first");
        // Each desired version's document stays readable (what a device runs may be older).
        let v1 = f
            .ops
            .desired_version("d", 1)
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(v1["listener"]["max_associations"], json!(32));
        let v2 = f
            .ops
            .desired_version("d", 2)
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(v2["listener"]["max_associations"], json!(7));
        assert!(f.ops.desired_version("d", 3).await.expect("read").is_none());
    }

    #[tokio::test]
    async fn a_configuration_is_validated_versioned_and_published_retained() {
        let f = fixture().await;
        let (site, dev) = ids("s", "d");
        f.ops
            .store
            .register_device(&site, &dev, DeviceStatus::Approved, 1)
            .await
            .expect("register");
        let err = f
            .ops
            .put_config(
                &Actor::cli(),
                ConfigScope::Device,
                "d",
                json!({"listener": {"ae_title": ""}}),
            )
            .await
            .expect_err("invalid");
        assert!(matches!(err, OpError::InvalidConfig(p) if !p.is_empty()));
        assert!(matches!(
            f.ops
                .put_config(&Actor::cli(), ConfigScope::Device, "d", json!([]))
                .await,
            Err(OpError::Invalid(_))
        ));
        let r = f
            .ops
            .put_config(&Actor::cli(), ConfigScope::Site, "s", example_config())
            .await
            .expect("site config");
        assert_eq!(
            serde_json::to_value(&r.devices).expect("json"),
            json!([{"device": "d", "version": 1}])
        );
        // The same document again changes nothing: no new version, nothing sent.
        f.ops
            .put_config(&Actor::cli(), ConfigScope::Site, "s", example_config())
            .await
            .expect("again");
        let sent = f.sent.lock().expect("sent").clone();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].topic, topics("s", "d").topic(Kind::ConfigDesired));
        assert!(sent[0].retain);
        let c = f
            .ops
            .device_config("d")
            .await
            .expect("config")
            .expect("known");
        assert_eq!(
            c.desired.map(|d| (d.version, d.source)),
            Some((1, "site:s".into()))
        );
        assert_eq!(c.drift, crate::model::Drift::Pending);
        assert!(matches!(
            f.ops
                .put_config(
                    &Actor::cli(),
                    ConfigScope::Device,
                    "nobody",
                    example_config()
                )
                .await,
            Err(OpError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_command_is_stored_queued_and_sent() {
        let f = fixture().await;
        let (site, dev) = ids("s", "d");
        f.ops
            .store
            .register_device(&site, &dev, DeviceStatus::Approved, 1)
            .await
            .expect("register");
        let action: CommandAction =
            serde_json::from_value(json!({"type": "retry_now"})).expect("action");
        let c = f
            .ops
            .create_command(&Actor::cli(), "d", action, Some(Duration::from_secs(60)))
            .await
            .expect("command");
        assert_eq!(c.status, CommandState::Queued);
        assert_eq!(f.ops.commands("d").await.expect("list")[0].id, c.id);
        f.ops.resend_queued_commands("d").await;
        let sent = f.sent.lock().expect("sent").clone();
        assert_eq!(sent.len(), 2, "sent, then sent again");
        assert!(
            sent.iter()
                .all(|s| s.topic == topics("s", "d").topic(Kind::Cmd) && !s.retain)
        );
        assert!(matches!(
            f.ops
                .create_command(&Actor::cli(), "nobody", c.action, None)
                .await,
            Err(OpError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_claim_is_refused_for_a_device_of_another_site_and_used_once() {
        let f = fixture().await;
        let (site, dev) = ids("s", "d");
        f.ops
            .store
            .register_device(&site, &dev, DeviceStatus::Pending, 1)
            .await
            .expect("register");
        let (other, _) = ids("t", "d");
        assert!(matches!(
            f.ops.create_claim(&Actor::cli(), other, dev.clone()).await,
            Err(OpError::Conflict(_))
        ));
        let claim = f
            .ops
            .create_claim(&Actor::cli(), site, dev)
            .await
            .expect("claim");
        // A bad CSR: the token is used up all the same (one attempt per token).
        assert!(matches!(
            f.ops.enroll(&claim.token, "not a CSR").await,
            Err(OpError::Invalid(_))
        ));
        assert!(matches!(
            f.ops.enroll(&claim.token, "not a CSR").await,
            Err(OpError::Forbidden(_))
        ));
    }

    #[tokio::test]
    async fn tags_are_checked_and_the_device_must_exist() {
        let f = fixture().await;
        let (site, dev) = ids("s", "d");
        f.ops
            .store
            .register_device(&site, &dev, DeviceStatus::Approved, 1)
            .await
            .expect("register");
        assert!(matches!(
            f.ops
                .patch_device(&Actor::cli(), "d", None, Some(&["no spaces".into()]))
                .await,
            Err(OpError::Invalid(_))
        ));
        let d = f
            .ops
            .patch_device(&Actor::cli(), "d", Some("CT room"), Some(&["ct".into()]))
            .await
            .expect("patch")
            .expect("known");
        assert_eq!(
            (d.room.as_deref(), d.tags),
            (Some("CT room"), vec!["ct".to_owned()])
        );
        assert!(
            f.ops
                .patch_device(&Actor::cli(), "nobody", None, None)
                .await
                .expect("patch")
                .is_none()
        );
    }
}

#[cfg(test)]
mod config_tests {
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
        assert_eq!(reported_config_schema(None), 1);
    }
}
