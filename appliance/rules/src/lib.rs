//! Coercion and routing rules of the Medgate appliance (sans-IO: readers and writers are the
//! caller's).
//!
//! Patients from many hospitals meet in one regional archive; the appliance in each room makes
//! its objects unambiguous before they leave: it sets the Issuer of Patient ID of its hospital,
//! fills Institution Name and Station Name when the modality leaves them empty, maps local
//! values to standard ones — each under conditions on modality, calling AE, SOP class or any
//! element — and routes each object to one or more of the configured destinations.
//!
//! - [`config`]: the `[rules]` TOML section and its validation (one problem per exact key), from
//!   `medgate-config`.
//! - [`tag`]: keywords and tags, VRs, what values may be written (from `medgate-config`).
//! - [`engine`]: compiled [`Rules`]: coercions in order, routing, the rules hash.
//! - [`dataset`]: a streaming walk over the top-level elements of a data set.
//! - [`rewrite`]: [`inspect`] an object and [`write_coerced`] it: only changed top-level elements
//!   differ, every other byte is copied as is (explicit and implicit VR little endian;
//!   deflated and big endian objects are refused and left unchanged).
//!
//! Values of elements are shown only by the local dry run; nothing here logs.

pub mod dataset;
pub mod engine;
pub mod rewrite;

/// The `[rules]` section and its validation live in `medgate-config` (the fleet validates them
/// without linking this crate's DICOM code); re-exported under their old paths.
pub use medgate_config::rules as config;
pub use medgate_config::tag;

pub use config::{CoerceRule, OneOrMany, Problem, RouteRule, RulesConfig, When, validate};
pub use engine::{Change, Context, Routing, Rules, rules_hash};
pub use rewrite::{Edit, InspectError, Inspection, encode_element, inspect, write_coerced};
