//! The peer harness of Medgate's end-to-end tests.
//!
//! Every peer is real and runs on loopback with free ports: DCMTK (`storescp`, `storescu`,
//! `echoscu`), Orthanc (with its DICOMweb plugin), and any binary of this workspace (the
//! appliance). A missing peer is a failure, never a skip: CI (`ci/test`) installs them.
//!
//! - [`appliance`]: [`Appliance`], the real `medgate-appliance` process with its configuration.
//! - [`ports`]: free ports on 127.0.0.1, waiting for a port to listen.
//! - [`peer`]: [`Peer`], a child process killed on drop, with its log; [`require_tool`],
//!   [`workspace_bin`], process statistics.
//! - [`dcmtk`]: [`Storescp`], [`Storescu`] (per-file outcomes, parallel runs), [`echoscu`].
//! - [`orthanc`]: [`Orthanc`] (start, REST queries, stop and restart on the same ports and storage).
//! - [`fleet`]: [`Fleet`] (the real `medgate-fleet serve`, zero-setup) and [`MqttCapture`] (every
//!   MQTT message, by `mosquitto_sub`).
//! - [`http`]: an HTTP client for loopback, STOW-RS requests.
//! - [`compare`]: [`dataset_equal`] / [`dataset_diff`] (element by element) and
//!   [`dataset_bytes_identical`] (raw data set bytes after the file meta group).
//!
//! The API is async (tokio); peers are plain `std::process::Child`ren so that `Drop` can kill
//! them synchronously.

pub mod appliance;
pub mod compare;
pub mod dcmtk;
pub mod fleet;
pub mod http;
pub mod orthanc;
pub mod peer;
pub mod ports;

pub use appliance::Appliance;
pub use compare::{
    assert_dataset_equal, dataset_bytes_identical, dataset_diff, dataset_equal, dataset_offset,
};
pub use dcmtk::{
    EchoReport, StoreOutcome, StoreStatus, Storescp, StorescpOptions, Storescu, StorescuReport,
    echoscu, storescu,
};
pub use fleet::{Fleet, Mosquitto, MqttCapture};
pub use http::{HttpReply, http_client, stow_rs};
pub use orthanc::{Orthanc, OrthancOptions};
pub use peer::{Peer, ProcStats, proc_stats, require_tool, workspace_bin, workspace_root};
pub use ports::{free_port, wait_listening};
