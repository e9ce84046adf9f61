//! The appliance side of Medgate's fleet reporting.
//!
//! - [`Outbox`]: durable (sled) queue of messages for the fleet: events, command
//!   acknowledgements, configuration reports. Published at least once, in order, kept across
//!   broker outages and restarts; an event is kept until the fleet's receipt names it.
//! - [`delivery`]: the session's publishing window and receipt bookkeeping (sans-IO).
//! - [`Reporter`]: the MQTT client task (rumqttc, rustls with ring, client certificate): birth,
//!   state and last will, telemetry, outbox replay, commands and desired configuration.
//! - [`TelemetrySource`] and [`CommandHandler`]: what the appliance implements.
//!
//! Capture and forwarding never wait on MQTT: [`Reporter::event`] appends to the outbox and
//! returns.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn f<S: medgate_report::TelemetrySource, H: medgate_report::CommandHandler>(cfg: medgate_report::ReporterConfig, s: Arc<S>, h: Arc<H>) -> Result<(), Box<dyn std::error::Error>> {
//! let reporter = medgate_report::Reporter::start(cfg, std::path::Path::new("/var/lib/medgate/outbox"), s, h)?;
//! reporter.event(medgate_contract::EventBody::DiskWatermarkCrossed {
//!     watermark: medgate_contract::Watermark::High,
//!     crossing: medgate_contract::Crossing::Above,
//!     used_percent: 91,
//! })?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod delivery;
pub mod handler;
pub mod outbox;
pub mod reporter;

pub use config::{ConfigError, ReporterConfig, TlsFiles};
pub use handler::{
    ApplyOutcome, CommandFailure, CommandHandler, CommandResult, ProducedFile, TelemetrySource,
};
pub use outbox::{Entry, Outbox, OutboxError};
pub use reporter::{ReportError, Reporter, ReporterStatus};
