//! The Medgate appliance: a DICOM edge that receives objects from modalities, keeps every one
//! durably in its spool and forwards it to the regional archive.
//!
//! - [`config`]: the TOML configuration and its validation.
//! - [`listener`]: the association acceptor (C-ECHO, C-STORE into the spool).
//! - [`scu`]: the association requestor (C-ECHO, C-STORE from a file).
//! - [`forward`]: per-destination queues and workers (C-STORE, STOW-RS).
//! - [`conn`]: PDU reading and writing over TCP or TLS.
//! - [`tls`]: rustls configurations from PEM files.
//! - [`metrics`], [`status`]: Prometheus metrics and the local HTTP endpoint.
//! - [`board`]: the box: hardware profile, watchdogs, LEDs, inventory.
//! - [`app`]: wiring and lifecycle.
//! - [`datadir`]: one appliance per data directory (lock), owner-only files.
//! - [`fleet`]: enrollment, reporting to the fleet manager and its commands (configuration with
//!   rollback, restart, quarantine, diagnostics); the supervisor `run` uses.
//! - [`events`]: what capture and forwarding tell the fleet (codes and counts only).
//! - [`diagnostics`], [`logbuf`]: the diagnostics bundle and the recent log lines it holds.
//! - [`workflow`]: clinical workflow services: storage commitment (SCP).

pub mod app;
pub mod board;
pub mod config;
pub mod conn;
pub mod datadir;
pub mod diagnostics;
pub mod events;
pub mod fleet;
pub mod forward;
pub mod ingest;
pub mod listener;
pub mod logbuf;
pub mod metrics;
pub mod rules;
pub mod scu;
pub mod status;
pub mod tls;
pub mod workflow;
