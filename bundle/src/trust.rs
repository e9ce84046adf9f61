//! The key model: an offline root delegates to vendor signing keys; the device's trust store.
//!
//! - The **root document** lists the root keys and their threshold. It is signed by a threshold
//!   of its own keys; a new root (version + 1) must also be signed by a threshold of the
//!   previous root's keys (rotation).
//! - The **keys document** lists the vendor signing keys and their k-of-n threshold, with a
//!   version and an expiry; it is signed by a threshold of the root keys.
//! - The device's [`TrustStore`] keeps the current root and keys documents (a version lower
//!   than the one kept is refused: rollback), the keys retired by a newer keys document (so a
//!   bundle signed by one says so), the version floor raised by installed bundles, and the
//!   region's countersigning policy set by the hospital.
//!
//! Everything takes the time as input (sans-IO).

use crate::canonical;
use crate::keys::{Context, KeyId, PublicKey, Sig, SigningKey, Tally};
use crate::types::{Name, Timestamp, Version};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A key set: who may sign and how many of them must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    /// The keys.
    pub keys: Vec<PublicKey>,
    /// How many distinct keys of `keys` must sign.
    pub threshold: u32,
}

impl KeySet {
    fn check(&self, what: &'static str) -> Result<(), TrustError> {
        let distinct: BTreeSet<KeyId> = self.keys.iter().map(PublicKey::id).collect();
        let n = self.keys.len();
        let t = usize::try_from(self.threshold).unwrap_or(usize::MAX);
        if distinct.len() != n || t == 0 || t > n {
            return Err(TrustError::InvalidKeySet {
                what,
                keys: n,
                distinct: distinct.len(),
                threshold: self.threshold,
            });
        }
        Ok(())
    }
    /// The ids of the keys.
    pub fn ids(&self) -> BTreeSet<KeyId> {
        self.keys.iter().map(PublicKey::id).collect()
    }
    fn threshold(&self) -> usize {
        usize::try_from(self.threshold).unwrap_or(usize::MAX)
    }
}

/// The kind tag of a root document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootKind {
    /// The only value.
    #[serde(rename = "medgate-root")]
    Root,
}

/// The kind tag of a keys document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeysKind {
    /// The only value.
    #[serde(rename = "medgate-keys")]
    Keys,
}

/// The offline root: its keys and threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootDoc {
    /// Always `medgate-root`.
    #[serde(rename = "type")]
    pub kind: RootKind,
    /// 1 for the first root; each rotation adds one.
    pub version: u64,
    /// After this the root is not trusted (rotate before).
    pub expires: Timestamp,
    /// The root keys.
    pub root: KeySet,
}

/// The vendor signing keys the root delegates bundle signing to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysDoc {
    /// Always `medgate-keys`.
    #[serde(rename = "type")]
    pub kind: KeysKind,
    /// Increases with every new keys document.
    pub version: u64,
    /// After this no bundle verifies until a newer keys document arrives (freeze attacks).
    pub expires: Timestamp,
    /// The vendor keys and the k of k-of-n.
    pub signing: KeySet,
}

/// One signature on a trust document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocSignature {
    /// The signer (a hint: the key is looked up in the signing set).
    pub key_id: KeyId,
    /// The signature over the canonical bytes of `signed`.
    pub sig: Sig,
}

/// A document and its signatures, as stored in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed<T> {
    /// The document; signatures cover its canonical bytes.
    pub signed: T,
    /// The signatures.
    pub signatures: Vec<DocSignature>,
}

/// A document that knows its signing context.
pub trait Document: Serialize + DeserializeOwned + Clone {
    /// The context its signatures use.
    const CONTEXT: Context;
    /// Its version.
    fn version(&self) -> u64;
    /// Its expiry.
    fn expires(&self) -> Timestamp;
}

impl Document for RootDoc {
    const CONTEXT: Context = Context::Root;
    fn version(&self) -> u64 {
        self.version
    }
    fn expires(&self) -> Timestamp {
        self.expires
    }
}

impl Document for KeysDoc {
    const CONTEXT: Context = Context::Keys;
    fn version(&self) -> u64 {
        self.version
    }
    fn expires(&self) -> Timestamp {
        self.expires
    }
}

impl<T: Document> Signed<T> {
    /// An unsigned envelope.
    pub fn new(doc: T) -> Self {
        Self {
            signed: doc,
            signatures: Vec::new(),
        }
    }
    /// Add `key`'s signature (replacing an earlier one by the same key).
    pub fn sign(&mut self, key: &SigningKey) {
        let id = key.public().id();
        let sig = key.sign(T::CONTEXT, &canonical::to_bytes(&self.signed));
        self.signatures.retain(|s| s.key_id != id);
        self.signatures.push(DocSignature { key_id: id, sig });
    }
    /// How its signatures count against `set`.
    pub fn tally(&self, set: &KeySet) -> Tally {
        let body = canonical::to_bytes(&self.signed);
        Tally::count(
            &set.keys,
            T::CONTEXT,
            &body,
            self.signatures.iter().map(|s| (&s.key_id, &s.sig)),
        )
    }
    fn signed_by(&self, set: &KeySet) -> Result<(), (usize, usize)> {
        let have = self.tally(set).valid_count();
        if have >= set.threshold() {
            Ok(())
        } else {
            Err((have, set.threshold()))
        }
    }
    /// Read from a file's bytes (JSON; the envelope itself need not be canonical).
    pub fn from_json(bytes: &[u8]) -> Result<Self, TrustError> {
        serde_json::from_slice(bytes).map_err(|e| TrustError::Malformed(e.to_string()))
    }
    /// The file form (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The region's countersigning policy, set on the device by the hospital (not by the vendor):
/// when present, a bundle installs only with a threshold of these keys' countersignatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPolicy {
    /// The region's name (messages).
    pub region: Name,
    /// Its keys and threshold.
    pub keys: KeySet,
}

/// A trust document update or a trust store that was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Not a document of the expected shape.
    #[error(
        "the trust document does not parse ({0}): use a file written by `medgate-bundle root`, `delegate` or `trust init`"
    )]
    Malformed(String),
    /// A key set with duplicates or an impossible threshold.
    #[error(
        "the {what} key set is invalid: {keys} keys ({distinct} distinct), threshold {threshold}; list each key once and choose 1 ≤ threshold ≤ keys"
    )]
    InvalidKeySet {
        /// Which set.
        what: &'static str,
        /// Keys listed.
        keys: usize,
        /// Distinct keys.
        distinct: usize,
        /// Threshold asked.
        threshold: u32,
    },
    /// A root document not signed by a threshold of its own keys.
    #[error(
        "root document version {version} is signed by {have} of its own keys, {need} needed: collect more root key holders' signatures (`medgate-bundle add-signature`)"
    )]
    RootNotSelfSigned {
        version: u64,
        have: usize,
        need: usize,
    },
    /// A new root not signed by a threshold of the previous root's keys.
    #[error(
        "new root version {version} is signed by {have} keys of root version {old}, {need} needed: a rotation must be signed by the old root's key holders too"
    )]
    RootNotSignedByOld {
        version: u64,
        old: u64,
        have: usize,
        need: usize,
    },
    /// A root document older than or equal to the one kept, but different.
    #[error(
        "root document version {offered} is not newer than the device's version {kept}: refused as a rollback; distribute the current root"
    )]
    RootRollback { offered: u64, kept: u64 },
    /// A root document that skips versions.
    #[error(
        "root document version {offered} does not follow the device's version {kept}: apply each root in turn ({next} first)"
    )]
    RootVersionGap { offered: u64, kept: u64, next: u64 },
    /// An expired root document.
    #[error(
        "root document version {version} expired at {expires}: the root key holders must sign a new root (rotation) before anything verifies"
    )]
    RootExpired { version: u64, expires: Timestamp },
    /// A keys document not signed by a threshold of the root keys.
    #[error(
        "keys document version {version} is signed by {have} root keys, {need} needed: have the root key holders sign it (`medgate-bundle delegate`)"
    )]
    KeysNotSignedByRoot {
        version: u64,
        have: usize,
        need: usize,
    },
    /// A keys document older than the one kept (or the same version with other content).
    #[error(
        "keys document version {offered} is not newer than the device's version {kept}: refused as a rollback; distribute the current keys document"
    )]
    KeysRollback { offered: u64, kept: u64 },
    /// An expired keys document.
    #[error(
        "keys document version {version} expired at {expires}: the root key holders must delegate a new keys document"
    )]
    KeysExpired { version: u64, expires: Timestamp },
}

/// What the device trusts, kept across restarts (its JSON is the trust store file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustStore {
    root: Signed<RootDoc>,
    keys: Signed<KeysDoc>,
    /// Vendor keys a newer keys document dropped.
    retired: BTreeSet<KeyId>,
    /// No bundle below this version installs (raised by installed bundles' `floor`).
    floor: Option<Version>,
    /// The region's countersigning policy, if the hospital requires one.
    region: Option<RegionPolicy>,
}

fn check_root(root: &Signed<RootDoc>, now: Timestamp) -> Result<(), TrustError> {
    root.signed.root.check("root")?;
    root.signed_by(&root.signed.root)
        .map_err(|(have, need)| TrustError::RootNotSelfSigned {
            version: root.signed.version,
            have,
            need,
        })?;
    if now >= root.signed.expires {
        return Err(TrustError::RootExpired {
            version: root.signed.version,
            expires: root.signed.expires,
        });
    }
    Ok(())
}

fn check_keys(keys: &Signed<KeysDoc>, root: &RootDoc, now: Timestamp) -> Result<(), TrustError> {
    keys.signed.signing.check("vendor signing")?;
    keys.signed_by(&root.root)
        .map_err(|(have, need)| TrustError::KeysNotSignedByRoot {
            version: keys.signed.version,
            have,
            need,
        })?;
    if now >= keys.signed.expires {
        return Err(TrustError::KeysExpired {
            version: keys.signed.version,
            expires: keys.signed.expires,
        });
    }
    Ok(())
}

impl TrustStore {
    /// The first trust of a device: the root shipped with its image, and a keys document that
    /// root delegated. Both are checked (signatures, thresholds, expiry).
    pub fn new(
        root: Signed<RootDoc>,
        keys: Signed<KeysDoc>,
        region: Option<RegionPolicy>,
        now: Timestamp,
    ) -> Result<Self, TrustError> {
        check_root(&root, now)?;
        check_keys(&keys, &root.signed, now)?;
        if let Some(region) = &region {
            region.keys.check("region")?;
        }
        Ok(Self {
            root,
            keys,
            retired: BTreeSet::new(),
            floor: None,
            region,
        })
    }

    /// Read a trust store file (its documents' signatures and key sets checked again, expiry
    /// not: an expired store still loads, so that a newer document can be applied to it).
    pub fn from_json(bytes: &[u8]) -> Result<Self, TrustError> {
        let store: Self =
            serde_json::from_slice(bytes).map_err(|e| TrustError::Malformed(e.to_string()))?;
        check_root(&store.root, Timestamp::from_unix(0))?;
        check_keys(&store.keys, &store.root.signed, Timestamp::from_unix(0))?;
        if let Some(region) = &store.region {
            region.keys.check("region")?;
        }
        Ok(store)
    }

    /// The file form (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Apply a new root (rotation): exactly the next version, signed by a threshold of the
    /// current root's keys and of its own, not expired. The same version again is a no-op.
    pub fn update_root(&mut self, new: Signed<RootDoc>, now: Timestamp) -> Result<(), TrustError> {
        let (kept, offered) = (self.root.signed.version, new.signed.version);
        if offered == kept && new.signed == self.root.signed {
            return Ok(());
        }
        if offered <= kept {
            return Err(TrustError::RootRollback { offered, kept });
        }
        if offered != kept.saturating_add(1) {
            return Err(TrustError::RootVersionGap {
                offered,
                kept,
                next: kept.saturating_add(1),
            });
        }
        new.signed_by(&self.root.signed.root)
            .map_err(|(have, need)| TrustError::RootNotSignedByOld {
                version: offered,
                old: kept,
                have,
                need,
            })?;
        check_root(&new, now)?;
        self.root = new;
        Ok(())
    }

    /// Apply a new keys document: a higher version, signed by a threshold of the current root,
    /// not expired. The same document again is a no-op. Keys it drops are remembered as retired.
    pub fn update_keys(&mut self, new: Signed<KeysDoc>, now: Timestamp) -> Result<(), TrustError> {
        let (kept, offered) = (self.keys.signed.version, new.signed.version);
        if offered == kept && new.signed == self.keys.signed {
            return Ok(());
        }
        if offered <= kept {
            return Err(TrustError::KeysRollback { offered, kept });
        }
        check_keys(&new, &self.root.signed, now)?;
        let now_ids = new.signed.signing.ids();
        self.retired
            .extend(self.keys.signed.signing.ids().difference(&now_ids));
        self.retired.retain(|id| !now_ids.contains(id));
        self.keys = new;
        Ok(())
    }

    /// Set or clear the region's countersigning policy (the hospital's decision, local).
    pub fn set_region(&mut self, region: Option<RegionPolicy>) -> Result<(), TrustError> {
        if let Some(region) = &region {
            region.keys.check("region")?;
        }
        self.region = region;
        Ok(())
    }

    /// Raise the floor (never lowers it).
    pub fn raise_floor(&mut self, floor: &Version) {
        if self.floor.as_ref().is_none_or(|f| f < floor) {
            self.floor = Some(floor.clone());
        }
    }

    /// The root document in force.
    pub fn root(&self) -> &RootDoc {
        &self.root.signed
    }
    /// The keys document in force.
    pub fn keys(&self) -> &KeysDoc {
        &self.keys.signed
    }
    /// The signed keys document (its signatures re-checked against the root at every use).
    pub(crate) fn keys_signed(&self) -> &Signed<KeysDoc> {
        &self.keys
    }
    /// Whether a vendor key was dropped by a newer keys document.
    pub fn is_retired(&self, id: &KeyId) -> bool {
        self.retired.contains(id)
    }
    /// The version floor.
    pub fn floor(&self) -> Option<&Version> {
        self.floor.as_ref()
    }
    /// The region's policy.
    pub fn region(&self) -> Option<&RegionPolicy> {
        self.region.as_ref()
    }
}
