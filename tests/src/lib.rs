//! The peer harness of Medgate's end-to-end tests.
//!
//! Every peer is real and runs on loopback with free ports: DCMTK (`storescp`, `storescu`,
//! `echoscu`), Orthanc (with its DICOMweb plugin), and any binary of this workspace (the
//! appliance). A missing peer is a failure, never a skip: CI (`ci/test`) installs them.
//!
//! - [`appliance`]: [`Appliance`], the real `medgate-appliance` process with its configuration.
//! - [`ports`], [`peer`], [`dcmtk`], [`orthanc`], [`mosquitto`], [`http`]: the peers, from
//!   medgate-testkit (shared with the report crate's and the fleet's tests).
//! - [`fleet`]: [`Fleet`] (the real `medgate-fleet serve`, zero-setup) and [`MqttCapture`] (every
//!   MQTT message, by `mosquitto_sub`).
//! - [`http`]: an HTTP client for loopback, STOW-RS requests.
//! - [`monitoring`]: the shipped Prometheus rules and Grafana dashboard, as the metrics see them.
//! - [`privacy`]: the patient values a test sent, and the check that a text holds none of them.
//! - [`compare`]: [`dataset_equal`] / [`dataset_diff`] (element by element) and
//!   [`dataset_bytes_identical`] (raw data set bytes after the file meta group).
//!
//! The API is async (tokio); peers are plain `std::process::Child`ren so that `Drop` can kill
//! them synchronously.

pub mod appliance;
pub mod compare;
pub mod fleet;
pub mod monitoring;
pub mod ota;
pub mod privacy;
// The peers themselves live in medgate-testkit, shared with the other suites.
pub use medgate_testkit::{dcmtk, http, mosquitto, orthanc, peer, ports};

pub use appliance::Appliance;
pub use compare::{
    assert_dataset_equal, dataset_bytes_identical, dataset_diff, dataset_equal, dataset_offset,
};
pub use dcmtk::{
    EchoReport, StoreOutcome, StoreStatus, Storescp, StorescpOptions, Storescu, StorescuReport,
    echoscu, storescu,
};
pub use fleet::{Fleet, MqttCapture};
pub use http::{HttpReply, http_client, stow_rs};
pub use medgate_testkit::Mosquitto;
pub use orthanc::{Orthanc, OrthancOptions};
pub use peer::{Peer, ProcStats, proc_stats, require_tool, workspace_bin, workspace_root};
pub use ports::{free_port, wait_listening};
