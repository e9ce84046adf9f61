//! ota (issue 14 part 2): the fleet's update campaigns, sans-IO.
//!
//! - [`campaign`]: the campaign engine — a pure state machine (approve, pause, resume, cancel,
//!   device reports with their health, clock ticks in; offers, withdrawals, pauses, completion
//!   and per-device changes out). Waves, soak gating, the failure threshold and honest state
//!   (a device that rolled back is never done) are decided here and nowhere else.
//! - [`target`]: which devices a campaign targets (site, tag, current version, hardware).
//! - [`window`]: a site's maintenance window (local start and length, at a fixed UTC offset)
//!   as the offer's [`medgate_contract::UtcWindow`].
//!
//! The shell is [`crate::ops::ota`] (load, run, persist with compare-and-set, publish) and the
//! store [`crate::store::ota`].

pub mod campaign;
pub mod target;
pub mod window;
