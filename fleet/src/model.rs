//! The fleet's domain: what the registry, the ingestion and the API speak of, as types.
//!
//! Statuses are enums (stored as their `snake_case` names, the same words the REST API shows);
//! records are structs whose serde form is the REST API's JSON. The desired configuration itself
//! stays a JSON object: it is the appliance's document, validated by the appliance's code.

use std::fmt;
use std::str::FromStr;

use medgate_contract::{
    CommandAction, CommandOutput, ConfigProblem, ConfigStatus, EventBody, Inventory, Modality,
    Refusal, SopClassUid, TelemetrySnapshot,
};
use serde::{Deserialize, Serialize};

/// A stored value that does not read as its type (a word not among an enum's names, an invalid id).
#[derive(Debug, Clone, thiserror::Error)]
#[error("unreadable {what} {value:?} in the database")]
pub struct Unreadable {
    /// Which enum.
    pub what: &'static str,
    /// The word read.
    pub value: String,
}

/// Enums stored as words: `as_str`, `Display`, `FromStr`.
macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The stored (and shown) word.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Unreadable;
            fn from_str(s: &str) -> Result<Self, Unreadable> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(Unreadable { what: $what, value: s.to_owned() }),
                }
            }
        }
    };
}

word_enum!(
    /// A device's place in the registry.
    DeviceStatus, "device status" {
        /// Reported without enrollment; waits for approval.
        Pending = "pending",
        /// Enrolled or approved.
        Approved = "approved",
        /// Its messages are refused, its certificate is on the revocation list.
        Revoked = "revoked",
        /// Taken out of service (refused and revoked as well).
        Decommissioned = "decommissioned",
    }
);

impl DeviceStatus {
    /// Whether the device's messages are recorded.
    pub fn admits(self) -> bool {
        !self.on_revocation_list()
    }

    /// Whether its certificate belongs on the broker's revocation list.
    pub fn on_revocation_list(self) -> bool {
        matches!(self, DeviceStatus::Revoked | DeviceStatus::Decommissioned)
    }
}

word_enum!(
    /// Whether a device is connected, as last heard.
    Connection, "connection" {
        /// Never heard from.
        Unknown = "unknown",
        /// Connected.
        Online = "online",
        /// Gone (last will, clean shutdown or missed heartbeats).
        Offline = "offline",
    }
);

word_enum!(
    /// What a configuration document applies to.
    ConfigScope, "configuration scope" {
        /// One device (target: its id).
        Device = "device",
        /// Every device of a site (target: the site id).
        Site = "site",
        /// Every device with a tag (target: the tag).
        Tag = "tag",
    }
);

word_enum!(
    /// How a device's running configuration compares with its desired one.
    Drift, "drift" {
        /// No desired configuration.
        None = "none",
        /// The device applied the desired version.
        InSync = "in_sync",
        /// The device answered the desired version and did not apply it.
        Failed = "failed",
        /// The device has not answered the desired version yet.
        Pending = "pending",
    }
);

impl Drift {
    /// The one rule: from the desired version, and the version and outcome of the device's
    /// last report.
    pub fn of(desired: Option<i64>, reported: Option<(i64, ConfigStatus)>) -> Drift {
        match (desired, reported) {
            (None, _) => Drift::None,
            (Some(d), Some((r, ConfigStatus::Applied))) if d == r => Drift::InSync,
            (Some(d), Some((r, _))) if d == r => Drift::Failed,
            _ => Drift::Pending,
        }
    }
}

word_enum!(
    /// Where a command is; states only move forward (queued → accepted → a final one).
    CommandState, "command state" {
        /// Stored and sent; no answer yet.
        Queued = "queued",
        /// The device will run it.
        Accepted = "accepted",
        /// Done.
        Succeeded = "succeeded",
        /// Ran and failed.
        Failed = "failed",
        /// Refused by the device.
        Rejected = "rejected",
        /// Arrived too late.
        Expired = "expired",
    }
);

word_enum!(
    /// Where the file a command produced (the diagnostics bundle) is.
    FileState, "file state" {
        /// Some chunks are in.
        Receiving = "receiving",
        /// Every byte is in, size and SHA-256 as announced: it can be downloaded.
        Complete = "complete",
        /// Every byte is in, but the size or digest is not the announced one.
        Failed = "failed",
    }
);

/// The file a command produced, as received so far (its content is fetched on its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CommandFile {
    /// Its name on the device (`diag-<ms>.json`).
    pub name: String,
    /// Its announced size (bytes).
    pub bytes: i64,
    /// Its announced SHA-256, hexadecimal.
    pub sha256: String,
    /// Where it is.
    #[schema(value_type = String)]
    pub state: FileState,
    /// Why it failed.
    pub reason: Option<String>,
}

impl CommandState {
    /// Whether the device may still answer it.
    pub fn is_open(self) -> bool {
        matches!(self, CommandState::Queued | CommandState::Accepted)
    }

    /// The states an acknowledgement may move a command from.
    pub fn predecessors(self) -> &'static [CommandState] {
        match self {
            CommandState::Queued => &[],
            CommandState::Accepted => &[CommandState::Queued],
            _ => &[CommandState::Queued, CommandState::Accepted],
        }
    }
}

impl From<medgate_contract::CommandStatus> for CommandState {
    fn from(s: medgate_contract::CommandStatus) -> Self {
        use medgate_contract::CommandStatus as S;
        match s {
            S::Accepted => CommandState::Accepted,
            S::Succeeded => CommandState::Succeeded,
            S::Failed => CommandState::Failed,
            S::Rejected => CommandState::Rejected,
            S::Expired => CommandState::Expired,
        }
    }
}

word_enum!(
    /// The database behind the store.
    Backend, "backend" {
        /// SQLite (zero setup).
        Sqlite = "sqlite",
        /// PostgreSQL (several replicas).
        Postgres = "postgres",
    }
);

impl PartialEq<&str> for Backend {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why a device message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The device is registered at another site than the topic's.
    OtherSite,
    /// The device is revoked or decommissioned.
    Revoked,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::OtherSite => "device is registered at another site",
            Refused::Revoked => "device is revoked or decommissioned",
        })
    }
}

/// A device's site and registry status: what admitting its messages needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Its site.
    pub site: String,
    /// Its status.
    pub status: DeviceStatus,
}

impl Registration {
    /// Whether a message from `site` may be recorded.
    pub fn admit(&self, site: &str) -> Result<(), Refused> {
        if self.site != site {
            Err(Refused::OtherSite)
        } else if !self.status.admits() {
            Err(Refused::Revoked)
        } else {
            Ok(())
        }
    }
}

/// A device as the API and the live feed show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Device {
    /// Its id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Free text.
    pub room: Option<String>,
    /// Registry status.
    pub status: DeviceStatus,
    /// Connection.
    pub connection: Connection,
    /// Last heard from (Unix ms).
    pub last_seen_ms: Option<i64>,
    /// From its last birth.
    #[schema(value_type = Option<Object>)]
    pub inventory: Option<Inventory>,
    /// The configuration version it runs.
    pub running_config_version: Option<i64>,
    /// Distinct events received.
    pub events_received: i64,
    /// The version of its desired configuration.
    pub desired_config_version: Option<i64>,
    /// Running against desired.
    pub config_drift: Drift,
    /// Its tags, by name.
    pub tags: Vec<String>,
}

/// A site with its device counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Site {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Created (Unix ms).
    pub created_ms: i64,
    /// Devices registered there.
    pub devices: i64,
    /// Of which online.
    pub online: i64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventRecord {
    /// The device.
    pub device: String,
    /// The event id (`boot-seq`).
    pub id: String,
    /// When it happened (device clock, Unix ms).
    pub at_ms: i64,
    /// When the fleet stored it.
    pub received_ms: i64,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event.
    #[schema(value_type = Object)]
    pub event: EventBody,
}

/// A telemetry sample (raw, `bucket_secs` 0) or bucket.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TelemetrySample {
    /// Send time, or start of the bucket (Unix ms).
    pub ts_ms: i64,
    /// Bucket width; 0 for a raw sample.
    pub bucket_secs: i64,
    /// The figures (the bucket's last sample).
    #[schema(value_type = Object)]
    pub data: TelemetrySnapshot,
}

/// A command and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CommandRecord {
    /// Its id.
    pub id: String,
    /// The device.
    pub device: String,
    /// What to do.
    #[schema(value_type = Object)]
    pub action: CommandAction,
    /// Where it is.
    pub status: CommandState,
    /// The device's error code.
    pub code: Option<String>,
    /// The device's figures.
    #[schema(value_type = Option<Object>)]
    pub output: Option<CommandOutput>,
    /// Created (Unix ms).
    pub created_ms: i64,
    /// Last changed.
    pub updated_ms: i64,
    /// Not to run after.
    pub expires_ms: Option<i64>,
    /// The file it produced (`collect_diagnostics`), once its first chunk arrived.
    pub file: Option<CommandFile>,
}

/// A calling AE a device has seen, with its approval.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PeerRecord {
    /// The modality's AE title.
    pub calling_ae: String,
    /// Its address.
    pub ip: String,
    /// The AE title it called.
    pub called_ae: String,
    /// SOP classes it proposed.
    #[schema(value_type = Vec<String>)]
    pub sop_classes: Vec<SopClassUid>,
    /// Modality codes of its objects.
    #[schema(value_type = Vec<String>)]
    pub modalities: Vec<Modality>,
    /// Whether its last association was accepted.
    pub accepted: bool,
    /// Why it was refused.
    #[schema(value_type = Option<String>)]
    pub refusal: Option<Refusal>,
    /// Associations seen.
    pub associations: i64,
    /// Last seen (device clock, Unix ms).
    pub last_seen_ms: i64,
    /// Approved in the console (added to the allow-list).
    pub approved: bool,
}

/// A desired configuration document of a device.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Desired {
    /// Its version (increases on change).
    pub version: i64,
    /// The document it came from (`scope:target`).
    pub source: String,
    /// The appliance configuration, as JSON.
    #[schema(value_type = Object)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Last changed.
    pub updated_ms: i64,
}

/// What a device last reported of its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reported {
    /// Version it runs.
    pub running_version: i64,
    /// Desired version the report answers.
    pub desired_version: i64,
    /// How that went.
    #[schema(value_type = String)]
    pub status: ConfigStatus,
    /// Why, when not applied.
    #[schema(value_type = Vec<Object>)]
    pub problems: Vec<ConfigProblem>,
    /// When (device clock).
    pub at_ms: i64,
}

/// Desired and reported configuration of a device, with drift.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeviceConfig {
    /// Desired, if any.
    pub desired: Option<Desired>,
    /// Reported, if any.
    pub reported: Option<Reported>,
    /// Running against desired.
    pub drift: Drift,
}

/// What the registry knows of a device beyond [`Device`]: its boot, reporting period and
/// certificate (the device page shows them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeviceIdentity {
    /// The boot of its last birth (random per process start, hexadecimal).
    pub boot_id: Option<String>,
    /// Its telemetry period.
    pub telemetry_interval_secs: Option<i64>,
    /// The serial of the certificate issued at enrollment (hexadecimal).
    pub cert_serial: Option<String>,
    /// When that certificate expires (Unix ms); unknown for devices enrolled before it was kept.
    pub cert_expires_ms: Option<i64>,
    /// Registered (Unix ms).
    pub created_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_match_serde() {
        for s in DeviceStatus::ALL {
            assert_eq!(s.as_str().parse::<DeviceStatus>().ok(), Some(*s));
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
        for s in CommandState::ALL {
            assert_eq!(s.as_str().parse::<CommandState>().ok(), Some(*s));
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
        for d in Drift::ALL {
            assert_eq!(serde_json::to_value(d).ok(), Some(d.as_str().into()));
        }
        assert!("nonsense".parse::<Connection>().is_err());
    }

    #[test]
    fn drift_has_one_rule() {
        assert_eq!(
            Drift::of(None, Some((1, ConfigStatus::Applied))),
            Drift::None
        );
        assert_eq!(
            Drift::of(Some(2), Some((2, ConfigStatus::Applied))),
            Drift::InSync
        );
        assert_eq!(
            Drift::of(Some(2), Some((1, ConfigStatus::Applied))),
            Drift::Pending
        );
        assert_eq!(Drift::of(Some(2), None), Drift::Pending);
        for s in [ConfigStatus::Rejected, ConfigStatus::RolledBack] {
            assert_eq!(Drift::of(Some(2), Some((2, s))), Drift::Failed);
        }
    }

    #[test]
    fn admission_refuses_other_sites_and_revoked_devices() {
        let r = |status| Registration {
            site: "s".into(),
            status,
        };
        assert_eq!(r(DeviceStatus::Pending).admit("s"), Ok(()));
        assert_eq!(
            r(DeviceStatus::Approved).admit("t"),
            Err(Refused::OtherSite)
        );
        assert_eq!(r(DeviceStatus::Revoked).admit("s"), Err(Refused::Revoked));
        assert_eq!(
            r(DeviceStatus::Decommissioned).admit("s"),
            Err(Refused::Revoked)
        );
    }
}

// alerts (issue 13 part 3): what the rules raise, as stored and shown.
word_enum!(
    /// What an alert is about (one rule each).
    AlertKind, "alert kind" {
        /// The device has not been heard from.
        DeviceOffline = "device_offline",
        /// A destination (the archive) refuses connections or does not answer.
        ArchiveUnreachable = "archive_unreachable",
        /// The oldest object waiting for forwarding is old.
        OldestQueued = "oldest_queued",
        /// The data filesystem is filling up.
        DiskUse = "disk_use",
        /// Objects keep going to quarantine.
        QuarantineGrowing = "quarantine_growing",
        /// The device certificate ends soon (the device then loses its fleet link).
        CertificateExpiring = "certificate_expiring",
        /// The last software update failed, rolled back or was refused.
        UpdateFailed = "update_failed",
    }
);

word_enum!(
    /// How urgent an alert is.
    Severity, "alert severity" {
        /// Look at it today.
        Warning = "warning",
        /// Look at it now: images are or will be stuck.
        Critical = "critical",
    }
);

word_enum!(
    /// Where an alert stands.
    AlertState, "alert state" {
        /// Its condition holds.
        Firing = "firing",
        /// Its condition no longer holds.
        Resolved = "resolved",
    }
);

/// A raised alert (firing or resolved): the history of a (device, kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// Its id.
    pub id: String,
    /// The device.
    pub device: String,
    /// Its site.
    pub site: String,
    /// The rule.
    pub kind: AlertKind,
    /// Warning or critical.
    pub severity: Severity,
    /// Firing or resolved.
    pub state: AlertState,
    /// Raised (Unix ms).
    pub raised_ms: i64,
    /// Cleared (Unix ms), once resolved.
    pub cleared_ms: Option<i64>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When (Unix ms).
    pub acked_ms: Option<i64>,
    /// Notifications are held until then (Unix ms).
    pub silenced_until_ms: Option<i64>,
    /// What holds, in words with figures only (AE titles, counts, ages; never patient data).
    pub words: String,
}
