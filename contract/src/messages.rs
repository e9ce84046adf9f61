//! The messages, one type per topic kind. Every payload is a JSON object with a `schema` field.
//!
//! Unknown fields are ignored (a newer peer may add some); unknown enum values of event and
//! command types decode to an `Other` variant or are rejected as invalid, as documented per type.
//! Strings are only the validated values of [`crate::values`]; everything else is numbers, booleans,
//! IP addresses and enums.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::values::{
    AeTitle, CommandId, EventId, HttpsUrl, MacAddress, Modality, Sha256Hex, SopClassUid, Token,
};

/// The message schema this crate writes. A reader accepts `1..=SCHEMA`.
pub const SCHEMA: u32 = 1;

/// The `schema` field: the schema version of the message. Decoding refuses 0 and versions newer
/// than [`SCHEMA`] (a breaking change); additions within a version are new optional fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Schema(u32);

impl Default for Schema {
    fn default() -> Self {
        Schema(SCHEMA)
    }
}

impl Schema {
    /// The version number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Schema {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if (1..=SCHEMA).contains(&v) {
            Ok(Schema(v))
        } else {
            Err(format!(
                "schema version {v} is not supported (this side reads 1..={SCHEMA}); upgrade it"
            ))
        }
    }
}

impl From<Schema> for u32 {
    fn from(s: Schema) -> u32 {
        s.0
    }
}

/// Bytes and objects moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// DICOM objects (instances).
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A filesystem's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Total bytes.
    pub total_bytes: u64,
    /// Free bytes (available to the appliance).
    pub free_bytes: u64,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Interface name (`eth0`, `enp3s0`).
    pub name: Token,
    /// Hardware address, if any.
    #[serde(default)]
    pub mac: Option<MacAddress>,
    /// Configured addresses.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// Link state.
    #[serde(default)]
    pub link_up: bool,
    /// Link speed, if known.
    #[serde(default)]
    pub speed_mbps: Option<u32>,
}

/// Why an association of a calling AE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Calling AE title not in the allow-list.
    CallingAeNotAllowed,
    /// Called AE title is not ours.
    CalledAeNotRecognized,
    /// Source address not in the allowed networks.
    NetworkNotAllowed,
    /// No presentation context we accept.
    NoAcceptableContext,
    /// Too many associations at once.
    LimitExceeded,
    /// Any other reason (newer appliance).
    #[serde(other)]
    Other,
}

/// A calling AE the appliance has seen (for modality onboarding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The modality's (calling) AE title.
    pub calling_ae: AeTitle,
    /// The AE title it called.
    pub called_ae: AeTitle,
    /// Its source address.
    pub ip: IpAddr,
    /// SOP classes it proposed.
    #[serde(default)]
    pub sop_classes: Vec<SopClassUid>,
    /// Modality codes seen in its objects.
    #[serde(default)]
    pub modalities: Vec<Modality>,
    /// Whether its last association was accepted.
    pub accepted: bool,
    /// Why it was refused, when it was.
    #[serde(default)]
    pub refusal: Option<Refusal>,
    /// Associations seen from it.
    #[serde(default)]
    pub associations: u64,
    /// When it was last seen (Unix milliseconds).
    #[serde(default)]
    pub last_seen_ms: u64,
}

/// What an appliance is and has: sent in the birth message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Hardware serial number.
    pub serial: Token,
    /// Hardware profile (e.g. `nuc-13-i5`).
    pub hardware_profile: Token,
    /// Operating system image version.
    pub os_version: Token,
    /// Appliance software version.
    pub appliance_version: Token,
    /// The listener's own AE title.
    #[serde(default)]
    pub ae_title: Option<AeTitle>,
    /// Network interfaces.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// The data (spool) filesystem.
    #[serde(default)]
    pub disk: Disk,
    /// Calling AEs seen (accepted or refused).
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// The configuration schema version the appliance understands (`medgate_config`'s
    /// `SCHEMA_VERSION`); the fleet refuses desired keys it does not know. Absent: an appliance
    /// from before versions were reported, which understands version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<u32>,
}

/// Retained on `birth` at every connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Birth {
    /// Schema version (required).
    pub schema: Schema,
    /// When it was sent (Unix milliseconds).
    pub sent_at_ms: u64,
    /// Random per process start: tells a restart from a reconnect.
    pub boot_id: u64,
    /// The inventory.
    pub inventory: Inventory,
    /// Version of the configuration running (0: the local file, never set by the fleet).
    #[serde(default)]
    pub config_version: u64,
    /// Telemetry period.
    #[serde(default)]
    pub telemetry_interval_secs: u32,
}

/// Connection state of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Connected and reporting.
    Online,
    /// Disconnected (last will, or clean shutdown).
    Offline,
}

/// Retained on `state`: `online` after the birth, `offline` as the last will or at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Schema version (required).
    pub schema: Schema,
    /// When it was produced (for the last will: when the connection was made).
    pub sent_at_ms: u64,
    /// The state.
    pub state: DeviceState,
    /// The boot it belongs to (see [`Birth::boot_id`]).
    pub boot_id: u64,
}

/// Queue state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Objects waiting to be forwarded (all destinations).
    pub depth: u64,
    /// Age of the oldest waiting object, seconds.
    pub oldest_age_secs: u64,
}

/// How one destination is doing, as its forwarder sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationState {
    /// Sending (or nothing to send).
    #[default]
    Ok,
    /// The last contact failed: waiting out a backoff before trying again.
    BackingOff,
    /// It refuses objects permanently: they go to quarantine.
    Quarantining,
    /// A state this side does not know (written by a newer appliance).
    #[serde(other)]
    Other,
}

/// Where an install stands on the appliance (the update agent's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePhase {
    /// Downloading the bundle.
    Downloading,
    /// Checking signatures, thresholds, expiry, compatibility and the payload's hash.
    Verifying,
    /// Writing the inactive slot.
    Installing,
    /// Installed, waiting for DICOM to be idle before switching.
    WaitingIdle,
    /// Switching to the new slot.
    Switching,
    /// Running the new version on probation until it proves healthy.
    Probing,
    /// Running the new version, committed.
    Installed,
    /// Back on the previous version (the new one did not prove healthy).
    RolledBack,
    /// The bundle was refused before anything was written.
    Refused,
    /// A step failed; the previous version runs.
    Failed,
    /// Cancelled by the fleet.
    Cancelled,
    /// A soft install whose deadline passed before DICOM was idle.
    Abandoned,
    /// A state this side does not know (written by a newer appliance).
    #[serde(other)]
    Other,
}

/// The update agent's state as the fleet sees it: codes and versions only, never words (the
/// fleet words them), so nothing free-form leaves the appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    /// Where the install under way, or the last one, stands.
    pub state: UpdatePhase,
    /// The version being installed (or last installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Token>,
    /// The version in force in the slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Token>,
    /// The campaign it belongs to (`local-…` for `update --file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<Token>,
    /// The running version is on probation (switched, not committed yet).
    #[serde(default)]
    pub on_probation: bool,
    /// Why: the wait's reason while waiting (`associations_active`, `study_arriving`, …), the
    /// final state's code otherwise (`bad_signature`, `health_deadline`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Token>,
}

/// One destination's queue (names and counts only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationQueue {
    /// The destination's configured name (`[[destination]] name`).
    pub name: Token,
    /// Objects waiting for it or in flight.
    pub depth: u64,
    /// Age of the oldest of them, seconds.
    pub oldest_age_secs: u64,
    /// Its objects in quarantine now.
    #[serde(default)]
    pub quarantined: u64,
    /// How it is doing.
    #[serde(default)]
    pub state: DestinationState,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
}

/// Error counts by area (cumulative since the appliance started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// DICOM receive side (aborted or malformed associations).
    pub receive: u64,
    /// Forwarding failures.
    pub forward: u64,
    /// Storage (spool, index) failures.
    pub storage: u64,
    /// Anything else.
    pub other: u64,
}

/// Objects flagged by the quality checks at ingest, per check (cumulative). The details stay on
/// the appliance (`medgate-appliance qc list`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QcCounts {
    /// Patient ID missing or empty.
    #[serde(default)]
    pub missing_patient_id: u64,
    /// Accession Number missing or empty.
    #[serde(default)]
    pub missing_accession_number: u64,
    /// Study Instance UID missing or empty.
    #[serde(default)]
    pub missing_study_instance_uid: u64,
    /// A modality the sending station is not expected to produce.
    #[serde(default)]
    pub unexpected_modality: u64,
    /// The same SOP Instance UID received again with different content.
    #[serde(default)]
    pub conflicting_duplicate: u64,
    /// An object of a study that had seemed complete.
    #[serde(default)]
    pub late_arrival: u64,
}

/// What the appliance measures; the appliance fills it, the reporter stamps and sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetrySnapshot {
    /// Seconds since the appliance process started.
    pub uptime_secs: u64,
    /// Received from modalities (cumulative since start).
    pub received: Flow,
    /// Forwarded and confirmed by every destination (cumulative since start).
    pub forwarded: Flow,
    /// The forward queue.
    pub queue: QueueStats,
    /// Objects in quarantine (now).
    pub quarantine_objects: u64,
    /// The data filesystem.
    pub disk: Disk,
    /// Associations open now.
    pub associations_active: u32,
    /// Receive-to-confirmed forward latency over the last interval.
    pub forward_latency_ms: Percentiles,
    /// Errors (cumulative since start).
    pub errors: ErrorCounts,
    /// Quality-check flags (all zero when the checks are off).
    #[serde(default)]
    pub qc: QcCounts,
    /// The queue of each destination, in configuration order (`queue` is their aggregate).
    /// Absent from appliances that predate it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationQueue>,
    /// The update agent's state; absent without an agent (and from older appliances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateReport>,
}

/// Periodic telemetry (QoS 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Schema version (required).
    pub schema: Schema,
    /// When it was sent (Unix milliseconds).
    pub sent_at_ms: u64,
    /// The boot it belongs to.
    pub boot_id: u64,
    /// Sequence number within the boot.
    pub seq: u64,
    /// The figures.
    #[serde(flatten)]
    pub snapshot: TelemetrySnapshot,
}

/// Why an object went to quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineReason {
    /// The archive refused it permanently.
    RejectedByDestination,
    /// It is not parseable DICOM.
    Malformed,
    /// Forwarding gave up after the retry budget.
    RetriesExhausted,
    /// Any other reason (newer appliance).
    #[serde(other)]
    Other,
}

/// Which disk watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Watermark {
    /// Above it, new objects are refused.
    High,
    /// Eviction target.
    Low,
}

/// Which way a watermark was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crossing {
    /// Use went above it.
    Above,
    /// Use went back below it.
    Below,
}

/// What to do with the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineAction {
    /// Put objects back in the forward queue.
    Retry,
    /// Delete them.
    Purge,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A study (or the part of it one association carried) was received and spooled.
    StudyReceived {
        /// The sending modality.
        calling_ae: AeTitle,
        /// The AE title it called.
        called_ae: AeTitle,
        /// Modality code, when known.
        #[serde(default)]
        modality: Option<Modality>,
        /// SOP classes of its objects.
        #[serde(default)]
        sop_classes: Vec<SopClassUid>,
        /// Objects and bytes.
        received: Flow,
        /// From first object to last, milliseconds.
        duration_ms: u64,
    },
    /// A study was forwarded and confirmed by a destination.
    StudyForwarded {
        /// The destination's configured name.
        destination: Token,
        /// Modality code, when known.
        #[serde(default)]
        modality: Option<Modality>,
        /// Objects and bytes.
        forwarded: Flow,
        /// From receipt to confirmation, milliseconds.
        latency_ms: u64,
        /// Attempts it took.
        attempts: u32,
    },
    /// An object went to quarantine.
    ObjectQuarantined {
        /// Why.
        reason: QuarantineReason,
        /// Its sender.
        #[serde(default)]
        calling_ae: Option<AeTitle>,
        /// Its SOP class, when known.
        #[serde(default)]
        sop_class: Option<SopClassUid>,
        /// The destination that refused it, if any.
        #[serde(default)]
        destination: Option<Token>,
        /// Its size.
        bytes: u64,
    },
    /// The spool's use crossed a watermark.
    DiskWatermarkCrossed {
        /// Which watermark.
        watermark: Watermark,
        /// Which way.
        crossing: Crossing,
        /// Use now, percent.
        used_percent: u8,
    },
    /// A calling AE was seen for the first time, or its acceptance changed.
    PeerSeen(Peer),
    /// The quarantine was retried or purged (audit).
    QuarantineChanged {
        /// What was done.
        action: QuarantineAction,
        /// Objects affected.
        objects: u64,
        /// The command that asked for it.
        #[serde(default)]
        command: Option<CommandId>,
    },
    /// An event type this side does not know (written by a newer peer). Never written by this crate's users.
    #[serde(other)]
    Other,
}

/// An event (QoS 1, from the outbox, at least once; the fleet deduplicates by `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version (required).
    pub schema: Schema,
    /// Unique per device.
    pub id: EventId,
    /// When it happened (Unix milliseconds).
    pub at_ms: u64,
    /// What happened.
    pub event: EventBody,
}

/// Fleet → appliance (QoS 1, not retained): ids of events the fleet has stored, new or already
/// known. MQTT acknowledges a message hop by hop only (to the broker); this receipt is the end-to-end
/// one: the appliance keeps each event in its outbox, and sends it again, until a receipt names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReceipt {
    /// Schema version (required).
    pub schema: Schema,
    /// The events stored (at most [`EventReceipt::MAX_IDS`]).
    pub ids: Vec<EventId>,
}

impl EventReceipt {
    /// Most ids in one receipt (about 40 bytes each: far below [`crate::MAX_PAYLOAD_BYTES`]).
    pub const MAX_IDS: usize = 1000;
}

/// What a command asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandAction {
    /// Restart the appliance service (after DICOM goes idle).
    Restart,
    /// Put quarantined objects back in the forward queue.
    RetryQuarantine,
    /// Delete quarantined objects older than the given age (all if absent).
    PurgeQuarantine {
        /// Minimum age of the objects to delete, seconds.
        #[serde(default)]
        older_than_secs: Option<u64>,
    },
    /// Build a diagnostics bundle (logs without patient data, configuration, state).
    CollectDiagnostics,
    /// End the backoff wait of one destination, or of all, so that forwarding is tried again
    /// now (after the archive came back). `output.destinations` = how many were woken; a name
    /// the appliance does not have is rejected with code `unknown_destination`.
    RetryNow {
        /// The destination's configured name; all destinations if absent.
        #[serde(default)]
        destination: Option<Token>,
    },
}

/// Fleet → appliance command (QoS 1, not retained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Schema version (required).
    pub schema: Schema,
    /// Chosen by the fleet; the acknowledgement carries it.
    pub id: CommandId,
    /// When the fleet issued it (Unix milliseconds).
    pub issued_at_ms: u64,
    /// After this (Unix milliseconds) the appliance answers `expired` instead of executing it.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// What to do.
    pub action: CommandAction,
}

/// The outcome of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Received; it will run (long commands send this first).
    Accepted,
    /// Done.
    Succeeded,
    /// Tried and failed (see `code`).
    Failed,
    /// Refused without trying (invalid, unsupported).
    Rejected,
    /// Arrived after its expiry.
    Expired,
}

/// Result figures of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// Objects affected (quarantine commands).
    #[serde(default)]
    pub objects: Option<u64>,
    /// Bytes (diagnostics bundle size, bytes purged).
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Digest of a produced file (diagnostics bundle).
    #[serde(default)]
    pub sha256: Option<Sha256Hex>,
    /// Name of a produced file (diagnostics bundle).
    #[serde(default)]
    pub file: Option<Token>,
    /// Destinations affected (`retry_now`).
    #[serde(default)]
    pub destinations: Option<u64>,
}

/// Appliance → fleet acknowledgement of a command (QoS 1, from the outbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAck {
    /// Schema version (required).
    pub schema: Schema,
    /// The command.
    pub id: CommandId,
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// Outcome.
    pub status: CommandStatus,
    /// A machine error code when not succeeded (e.g. `unsupported`, `io`, `busy`).
    #[serde(default)]
    pub code: Option<Token>,
    /// Figures.
    #[serde(default)]
    pub output: CommandOutput,
}

/// Fleet → appliance, retained: the configuration the fleet wants this appliance to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredConfig {
    /// Schema version (required).
    pub schema: Schema,
    /// Increases with every change (per device).
    pub version: u64,
    /// When the fleet set it (Unix milliseconds).
    pub issued_at_ms: u64,
    /// The appliance configuration (the TOML file as a JSON object). Configuration only: AE titles,
    /// addresses, limits; it never holds patient data.
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// Outcome of applying a desired configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigStatus {
    /// Running it.
    Applied,
    /// Refused by validation; the previous one keeps running.
    Rejected,
    /// Applied, but the listener did not come up: the previous one was restored.
    RolledBack,
}

/// A validation or apply error, as machine data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigProblem {
    /// Error code (e.g. `invalid_value`, `listener_down`).
    pub code: Token,
    /// The configuration key concerned (e.g. `listener.ae_title`).
    #[serde(default)]
    pub field: Option<Token>,
}

/// Appliance → fleet, retained: the configuration it runs and how the last desired one went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedConfig {
    /// Schema version (required).
    pub schema: Schema,
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// Version running now (0: the local file).
    pub running_version: u64,
    /// The desired version this report answers.
    pub desired_version: u64,
    /// How that went.
    pub status: ConfigStatus,
    /// Why, when not applied.
    #[serde(default)]
    pub problems: Vec<ConfigProblem>,
}

/// Raw bytes of one [`FileChunk`] (the last chunk of a file may be shorter). Base64 makes that
/// 171 KiB of JSON string, well under [`crate::MAX_PAYLOAD_BYTES`].
pub const FILE_CHUNK_BYTES: usize = 128 * 1024;

/// Largest file the appliance sends and the fleet accepts (bytes).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Appliance → fleet (QoS 1, from the outbox, at least once): one chunk of a file a command
/// produced (the diagnostics bundle of `collect_diagnostics`). Chunks may arrive twice and out of
/// order; the fleet keys them by (`command`, `offset`) and checks `total_bytes` and `sha256` once
/// all bytes are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    /// Schema version (required).
    pub schema: Schema,
    /// The command that produced the file.
    pub command: CommandId,
    /// The file's name (as in the command's ack).
    pub name: Token,
    /// Size of the whole file (bytes).
    pub total_bytes: u64,
    /// Digest of the whole file.
    pub sha256: Sha256Hex,
    /// Where this chunk starts in the file (bytes).
    pub offset: u64,
    /// The chunk's bytes, standard base64 with padding.
    pub data: String,
}

impl FileChunk {
    /// The chunks of `content`, [`FILE_CHUNK_BYTES`] each (the last one shorter), in order;
    /// none for an empty file (the fleet refuses empty chunks: send no empty file).
    pub fn split<'a>(
        command: &'a CommandId,
        name: &'a Token,
        sha256: &'a Sha256Hex,
        content: &'a [u8],
    ) -> impl Iterator<Item = FileChunk> + 'a {
        use base64::Engine as _;
        let total = content.len() as u64;
        content
            .chunks(FILE_CHUNK_BYTES)
            .scan(0u64, move |offset, piece| {
                let chunk = FileChunk {
                    schema: Schema::default(),
                    command: command.clone(),
                    name: name.clone(),
                    total_bytes: total,
                    sha256: sha256.clone(),
                    offset: *offset,
                    data: base64::engine::general_purpose::STANDARD.encode(piece),
                };
                *offset += piece.len() as u64;
                Some(chunk)
            })
    }

    /// This chunk's bytes; `None` when `data` is not standard base64.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .ok()
    }
}

/// How a device installs an update it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallMode {
    /// Wait for idle DICOM (and the window); give up at the deadline, if any.
    Soft,
    /// Wait for idle DICOM and the window until the deadline, then switch at the first moment
    /// no association is open and no study is arriving (a study in flight is never cut).
    Forced,
}

/// A daily maintenance window in UTC (the fleet converts the site's time zone and publishes
/// again when its offset changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UtcWindow {
    /// Minutes after midnight UTC when it opens (0–1439).
    pub start_minute: u16,
    /// How long it stays open, in minutes (1–1440).
    pub minutes: u16,
}

/// What the fleet offers a device to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOffer {
    /// The version the bundle installs (as its signed metadata says; the device checks).
    pub version: Token,
    /// The bundle file's SHA-256 (the fleet's content address; the device checks it).
    pub sha256: Sha256Hex,
    /// The bundle file's size in bytes.
    pub size: u64,
    /// Where to download it (HTTPS, authenticated by the device certificate, with Range).
    pub url: HttpsUrl,
    /// Soft or time-forced.
    pub mode: InstallMode,
    /// Soft: give up waiting for idle DICOM after this; forced: switch at the first idle moment
    /// after this (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The site's maintenance window; none: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<UtcWindow>,
}

/// What the fleet wants of this device's update agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UpdateAction {
    /// Download, verify, install, wait for idle, switch, prove health.
    Install(UpdateOffer),
    /// Stop the campaign's install if it has not switched yet (a switched one proves health or
    /// rolls back as usual).
    Cancel,
}

/// Fleet → appliance, retained, QoS 1 (`update/desired`): the update this device is to install.
/// The device reports where it stands in its telemetry's `update` ([`UpdateReport`]); the same
/// message again (a reconnect, a retained copy) only repeats where the install stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredUpdate {
    /// Schema version (required).
    pub schema: Schema,
    /// The campaign.
    pub campaign: Token,
    /// When the fleet issued it (Unix milliseconds).
    pub issued_at_ms: u64,
    /// What to do.
    pub action: UpdateAction,
}
