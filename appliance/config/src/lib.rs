//! What the Medgate fleet may set on an appliance, as a crate both sides link: the fleet-owned
//! tables of the configuration ([`DesiredConfig`]), their validation with one [`Problem`] per
//! exact key, the checked values they hold ([`check`]: AE titles, UIDs, `host:port`, networks,
//! listening addresses), the parsed peers the appliance wires from ([`endpoints`]) and the
//! configuration schema versions ([`schema`]).
//!
//! Sans-IO and light: no sockets, no files, no spool, no hardware, no DICOM codec — the fleet
//! manager links it instead of the whole appliance. The box-local part of the file
//! (`appliance.data_dir`, `appliance.fleet_enrollment`, `[fleet]`, `[hardware]`, `[status]`)
//! is the appliance's own ([`BOX_LOCAL_KEYS`]).

pub mod check;
pub mod desired;
pub mod endpoints;
pub mod rules;
pub mod schema;
pub mod sections;
pub mod tag;
pub mod workflow;

pub use check::{AeTitle, HostPort, Network, parse_bind, validate_ae_title, validate_uid};
pub use desired::{BOX_LOCAL_KEYS, DesiredAppliance, DesiredConfig, strip_box_local};
pub use endpoints::{Destination, Endpoints};
pub use schema::{SCHEMA_VERSION, keys_not_known};
pub use sections::{
    DestinationKind, DestinationSection, DestinationTls, ForwardSection, ListenerSection,
    ListenerTls, SpoolSection,
};

/// A validation failure: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `destination[0].address` or `rules.coerce[0].set.IssuerOfPatientID`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}
