//! The real peers Medgate's tests start, on loopback with free ports, for every suite (the
//! end-to-end tests in `tests/`, the report crate's and the fleet's integration tests).
//!
//! - [`ports`]: free ports on 127.0.0.1, waiting for a port to listen.
//! - [`peer`]: [`Peer`], a child process killed on drop, with its log; [`require_tool`],
//!   [`workspace_bin`], process statistics.
//! - [`dcmtk`]: [`Storescp`], [`Storescu`] (per-file outcomes, parallel runs), [`echoscu`].
//! - [`orthanc`]: [`Orthanc`] (start, REST queries, stop and restart on the same ports and
//!   storage).
//! - [`mosquitto`]: [`Mosquitto`] (a listener of its own, or a configuration written by
//!   `medgate-fleet broker-config`; graceful stop, kill, restart).
//! - [`postgres`]: [`Postgres`] (initdb + pg_ctl as the postgres user, in a temporary directory).
//! - [`pki`]: [`Pki`], a test CA with server and client certificates.
//! - [`mqtt`]: [`Collector`], every message published on a filter.
//! - [`http`]: an HTTP client for loopback, STOW-RS requests.
//!
//! A missing peer is a failure, never a skip: CI (`ci/test`) installs them. Deliberately no
//! medgate crate here, so that every suite can use it without a dependency cycle.

pub mod dcmtk;
pub mod http;
pub mod mosquitto;
pub mod mqtt;
pub mod orthanc;
pub mod peer;
pub mod pki;
pub mod ports;
pub mod postgres;

pub use dcmtk::{
    EchoReport, StoreOutcome, StoreStatus, Storescp, StorescpOptions, Storescu, StorescuReport,
    echoscu, storescu,
};
pub use http::{HttpReply, http_client, stow_rs};
pub use mosquitto::Mosquitto;
pub use mqtt::Collector;
pub use orthanc::{Orthanc, OrthancOptions};
pub use peer::{Peer, ProcStats, proc_stats, require_tool, workspace_bin, workspace_root};
pub use pki::Pki;
pub use ports::{free_port, wait_listening, wait_listening_blocking};
pub use postgres::Postgres;
