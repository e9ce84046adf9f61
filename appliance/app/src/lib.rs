//! The Medgate appliance: a DICOM edge that receives objects from modalities, keeps every one
//! durably in its spool and forwards it to the regional archive.
//!
//! - [`config`]: the TOML configuration and its validation.
//! - [`listener`]: the association acceptor, a pump over `medgate_dicom::acceptor`.
//! - [`ingest`]: one received object, from its C-STORE-RQ to the response (spool commit,
//!   rules, fan-out).
//! - [`scu`]: the association requestor (C-ECHO, C-STORE from a file).
//! - [`forward`]: per-destination queues and workers (C-STORE, STOW-RS).
//! - [`conn`]: PDU reading and writing over TCP or TLS.
//! - [`tls`]: rustls configurations from PEM files.
//! - [`metrics`], [`status`]: Prometheus metrics and the local HTTP endpoint.
//! - [`board`]: the box: hardware profile, watchdogs, LEDs, inventory.
//! - [`handle`]: the running appliance's handle ([`handle::App`]) and [`handle::Hooks`].
//! - [`app`]: the wiring that starts an appliance from a configuration, and its lifecycle.
//! - [`datadir`]: one appliance per data directory (lock), owner-only files.
//! - [`supervisor`]: the process supervisor `run` uses, with or without a fleet: data directory
//!   claim, configuration changes and restarts with rollback (a pure state machine and its
//!   driver).
//! - [`fleet`]: enrollment, reporting to the fleet manager and its commands (configuration,
//!   restart, quarantine, diagnostics), attached to the supervisor.
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
pub mod handle;
pub mod ingest;
pub mod listener;
pub mod logbuf;
pub mod metrics;
pub mod rules;
pub mod scu;
pub mod status;
pub mod supervisor;
pub mod tls;
pub mod update;
pub mod workflow;
