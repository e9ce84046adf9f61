//! Medgate's signed update bundles (docs/ota.md).
//!
//! - [`types`]: the checked values (names, semver versions, instants, digests, serials).
//! - [`keys`]: ed25519 keys (ring), ids, domain-separated signatures, the k-of-n tally.
//! - [`canonical`]: the canonical JSON bytes that are signed.
//! - [`trust`]: the key model — offline root, delegated vendor keys, the device's trust store.
//! - [`format`]: the bundle file, streamed verification as a typestate
//!   (`Unverified` → `Verified` → `Payload`).
//! - [`agent`]: the update agent's decisions, sans-IO (campaign, DICOM activity, clock,
//!   download, health in; actions out).
//! - [`slot`]: the `SlotBackend` trait and the directory backend.
//! - [`rootimage`]: the `root_image` payload (root file system, verity hash tree, both UKIs).
//! - [`slot_ab`]: the image's A/B partitions as a slot backend (`medgate-slot`).
//!
//! Everything here takes time as input and does no network IO; only the slot backends touch
//! files (`slot::DirBackend` the directory it is given, `slot_ab::AbBackend` the partitions and,
//! through `medgate-slot`, the ESP).

pub mod agent;
pub mod canonical;
pub mod format;
pub mod keys;
pub mod local;
pub mod rootimage;
pub mod slot;
pub mod slot_ab;
pub mod trust;
pub mod types;

pub use format::{BundleError, BundleMeta, Device, PayloadKind, Role, Unverified, Verified};
pub use trust::{KeysDoc, RootDoc, Signed, TrustError, TrustStore};
pub use types::{Digest, Name, Timestamp, Version};
