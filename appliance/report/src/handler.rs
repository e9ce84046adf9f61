//! What the appliance implements: where telemetry comes from, and how commands are carried out.

use std::future::Future;
use std::time::Duration;

use medgate_contract::{
    CommandOutput, ConfigProblem, DesiredConfig, DesiredUpdate, Inventory, TelemetrySnapshot, Token,
};

/// The appliance's figures. Both methods are called from the reporter's task and must return
/// quickly without blocking (read atomics or a cached value; never wait on a lock held by capture).
pub trait TelemetrySource: Send + Sync + 'static {
    /// Current figures, sent every `telemetry_interval_secs`.
    fn snapshot(&self) -> TelemetrySnapshot;
    /// The inventory, sent (retained) at every connect.
    fn inventory(&self) -> Inventory;
}

/// How a desired configuration went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Validated, applied, the listener came up with it.
    Applied,
    /// Refused by validation: nothing changed.
    Rejected(Vec<ConfigProblem>),
    /// Applied, but the listener did not come up: the previous configuration was restored.
    RolledBack(Vec<ConfigProblem>),
}

/// A command that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFailure {
    /// `true`: refused without trying (unsupported, busy); `false`: tried and failed.
    pub rejected: bool,
    /// Machine error code, e.g. `unsupported`, `busy`, `io`.
    pub code: Token,
}

impl CommandFailure {
    /// Tried and failed with `code` (falls back to `failed` if `code` is not a valid token).
    pub fn failed(code: &str) -> Self {
        Self {
            rejected: false,
            code: token_or(code, "failed"),
        }
    }

    /// Refused without trying.
    pub fn rejected(code: &str) -> Self {
        Self {
            rejected: true,
            code: token_or(code, "rejected"),
        }
    }
}

fn token_or(code: &str, fallback: &str) -> Token {
    Token::new(code)
        .unwrap_or_else(|_| Token::new(fallback).unwrap_or_else(|_| unreachable_token()))
}

fn unreachable_token() -> Token {
    // "x" is always a valid token; this path exists only to avoid a panic path in library code.
    Token::new("x").unwrap_or_else(|e| panic!("token rule changed: {e}"))
}

/// Result of a command.
pub type CommandResult = Result<CommandOutput, CommandFailure>;

/// A file a command produced (the diagnostics bundle), to send to the fleet with the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducedFile {
    /// The result: `file`, `bytes` and `sha256` describe `content` (the reporter checks them).
    pub output: CommandOutput,
    /// The file's bytes, at most [`medgate_contract::MAX_FILE_BYTES`].
    pub content: Vec<u8>,
}

/// The appliance's side of commands. The reporter validates, deduplicates and acknowledges
/// commands (an `accepted` acknowledgement first, then the result) and records the quarantine
/// audit events; the appliance only does the work. Each call runs on its own task: a slow one
/// never delays reporting, and capture never waits on any of them.
pub trait CommandHandler: Send + Sync + 'static {
    /// Validate and apply a configuration from the fleet, rolling back by itself if the
    /// listener does not come up with it. `desired.version` is newer than any answered before.
    fn apply_config(&self, desired: &DesiredConfig) -> impl Future<Output = ApplyOutcome> + Send;
    /// Restart the appliance service (when DICOM is idle). Return once it is scheduled.
    fn restart(&self) -> impl Future<Output = CommandResult> + Send;
    /// Put every quarantined object back in the forward queue; `output.objects` = how many.
    fn retry_quarantine(&self) -> impl Future<Output = CommandResult> + Send;
    /// Delete quarantined objects older than `older_than` (all if `None`); `output.objects` and
    /// `output.bytes` = what was deleted.
    fn purge_quarantine(
        &self,
        older_than: Option<Duration>,
    ) -> impl Future<Output = CommandResult> + Send;
    /// Build a diagnostics bundle (logs without patient data, configuration, state);
    /// `output.file`, `output.bytes`, `output.sha256` describe it. The reporter sends its content
    /// to the fleet in [`medgate_contract::FileChunk`]s before the `succeeded` acknowledgement.
    fn collect_diagnostics(
        &self,
    ) -> impl Future<Output = Result<ProducedFile, CommandFailure>> + Send;
    /// End the backoff wait of the destination named `destination` (all if `None`) so that
    /// forwarding is tried now; `output.destinations` = how many were woken. A name the
    /// appliance does not have: `CommandFailure::rejected("unknown_destination")`. Without an
    /// implementation the command is rejected as `unsupported`.
    fn retry_now(&self, destination: Option<Token>) -> impl Future<Output = CommandResult> + Send {
        let _ = destination;
        async { Err(CommandFailure::rejected("unsupported")) }
    }
    /// The fleet's update instruction for this device (`update/desired`, retained: it comes
    /// again at every connect). Hand it to the update agent and return at once; the agent
    /// reports where it stands in the telemetry's `update`. Without an update agent it is
    /// logged and ignored.
    fn desired_update(&self, desired: DesiredUpdate) {
        tracing::warn!(campaign = %desired.campaign, "an update instruction arrived, but this appliance has no update agent ([update] is not configured); ignored");
    }
}
