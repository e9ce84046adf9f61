//! The bundle file and its verification.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "MGBUNDLE"
//! 8       2     format version, big endian (1)
//! 10      2     reserved, 0
//! 12      4     metadata length M (≤ 64 KiB), big endian
//! 16      4     signatures length S (≤ 64 KiB), big endian
//! 20      8     payload length P, big endian (= metadata `size`)
//! 28      M     metadata: canonical JSON (`BundleMeta`)
//! 28+M    S     signatures: canonical JSON array (`BundleSignature`)
//! 28+M+S  P     payload
//! ```
//!
//! Metadata and signatures come first so that a stream is judged before its payload is read.
//! The API makes the order a type: [`Unverified::open`] reads header, metadata and signatures
//! and offers no payload bytes; only [`Unverified::verify`] (signatures, thresholds, trust
//! documents' expiry, countersignature, compatibility, floor, expiry) gives a [`Verified`],
//! whose [`Verified::payload`] is a reader that hashes as it goes and fails at its end unless
//! size and SHA-256 are the signed ones — a slot backend commits what it wrote only after
//! that end (see `slot`).

use crate::canonical::{self, CanonicalError};
use crate::keys::{Context, KeyId, Sig, SigningKey, Tally};
use crate::trust::TrustStore;
use crate::types::{Digest, Hasher, Name, Serial, Timestamp, Version};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"MGBUNDLE";
/// The format version this code reads and writes.
pub const FORMAT: u16 = 1;
/// Header length.
pub const HEADER_LEN: usize = 28;
/// Largest metadata block.
pub const MAX_META: u32 = 64 * 1024;
/// Largest signatures block.
pub const MAX_SIGS: u32 = 64 * 1024;
/// Most signatures in a bundle.
pub const MAX_SIGNATURES: usize = 32;

/// The kind tag of bundle metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaKind {
    /// The only value.
    #[serde(rename = "medgate-bundle")]
    Bundle,
}

/// What the payload is, so that the right slot backend takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// The appliance's binaries (a Debian server: directory slot backend).
    ApplianceBinaries,
    /// A whole root file system image for the image's A/B partitions (with its verity hash).
    RootImage,
}

impl std::fmt::Display for PayloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ApplianceBinaries => "appliance_binaries",
            Self::RootImage => "root_image",
        })
    }
}

/// The signed metadata of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMeta {
    /// Always `medgate-bundle`.
    #[serde(rename = "type")]
    pub kind: MetaKind,
    /// The product it is for (`medgate-appliance`).
    pub product: Name,
    /// The version it installs.
    pub version: Version,
    /// The hardware profiles it runs on (at least one).
    pub hardware: Vec<Name>,
    /// The device must run at least this version to install it (else: an intermediate update).
    pub min_installed: Option<Version>,
    /// Once installed, nothing below this version installs again (a security fix's floor).
    pub floor: Option<Version>,
    /// The vendor sanctions installing this over a newer version (backing out a bad release);
    /// the operator must still ask for it, and the floor still holds.
    pub downgrade: bool,
    /// What the payload is.
    pub payload: PayloadKind,
    /// Payload length in bytes.
    pub size: u64,
    /// Payload SHA-256.
    pub sha256: Digest,
    /// When it was signed.
    pub created: Timestamp,
    /// After this it does not install (freeze attacks: an old bundle held back and replayed).
    pub expires: Timestamp,
    /// Random, per bundle: a signature names the bundle it was made for.
    pub serial: Serial,
}

/// Who signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A vendor signing key of the keys document.
    Vendor,
    /// A region's countersigning key.
    Region,
}

/// One signature in a bundle. The key signs `serial || metadata_sha256` in its role's context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSignature {
    /// Vendor or region.
    pub role: Role,
    /// The signer.
    pub key_id: KeyId,
    /// The serial of the bundle it was made for.
    pub serial: Serial,
    /// SHA-256 of the metadata bytes it was made for.
    pub metadata_sha256: Digest,
    /// The signature.
    pub sig: Sig,
}

fn signed_body(serial: &Serial, digest: &Digest) -> Vec<u8> {
    let mut body = serial.0.to_vec();
    body.extend_from_slice(&digest.0);
    body
}

fn context(role: Role) -> Context {
    match role {
        Role::Vendor => Context::Bundle,
        Role::Region => Context::Countersign,
    }
}

impl BundleSignature {
    /// Sign the metadata (its canonical bytes) with `key` as `role`.
    pub fn make(meta: &BundleMeta, key: &SigningKey, role: Role) -> Self {
        let digest = Digest::of(&canonical::to_bytes(meta));
        let sig = key.sign(context(role), &signed_body(&meta.serial, &digest));
        Self {
            role,
            key_id: key.public().id(),
            serial: meta.serial,
            metadata_sha256: digest,
            sig,
        }
    }
}

/// What the device is and may do: the facts a bundle is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its product.
    pub product: Name,
    /// Its hardware profile.
    pub hardware: Name,
    /// The version it runs.
    pub installed: Version,
    /// The payload kind its slot backend installs.
    pub accepts: PayloadKind,
    /// The largest payload its slot holds.
    pub max_payload: u64,
    /// The operator asked for a downgrade (it still needs the bundle's `downgrade` and the floor).
    pub allow_downgrade: bool,
}

/// Why a bundle was refused. Each refusal has its own variant; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading failed.
    #[error("reading the bundle failed: {0}")]
    Io(#[source] io::Error),
    /// Not a bundle.
    #[error(
        "not a Medgate bundle (bad magic): check the file is a .mgb written by `medgate-bundle sign`"
    )]
    NotABundle,
    /// A format this code does not read.
    #[error(
        "bundle format {0} is not supported (this version reads format {FORMAT}): update the agent first"
    )]
    UnsupportedFormat(u16),
    /// A block larger than allowed.
    #[error(
        "the bundle's {what} is {len} bytes, more than the {max} allowed: refused unread; it is not a bundle for this device"
    )]
    Oversized {
        what: &'static str,
        len: u64,
        max: u64,
    },
    /// The file ended early.
    #[error("the bundle ends inside its {what}: the file is truncated; download it again")]
    Truncated { what: &'static str },
    /// Bytes after the declared payload.
    #[error(
        "the bundle has data after its payload: the file was altered; download it again from the vendor or the fleet"
    )]
    TrailingData,
    /// Metadata that does not parse.
    #[error("the bundle's metadata is malformed ({0}): the file was altered or is not a bundle")]
    MalformedMetadata(String),
    /// Metadata not in canonical form (so its bytes are not the ones signed).
    #[error(
        "the bundle's metadata is not in canonical form: it was altered after signing; get the bundle again"
    )]
    NonCanonicalMetadata,
    /// Signatures block that does not parse.
    #[error("the bundle's signatures are malformed ({0}): the file was altered")]
    MalformedSignatures(String),
    /// Too many signatures.
    #[error("the bundle carries {0} signatures, more than the {MAX_SIGNATURES} allowed")]
    TooManySignatures(usize),
    /// Root document expired: freeze.
    #[error(
        "the device's root document (version {version}) expired at {expires}: apply a newer root before installing anything"
    )]
    RootExpired { version: u64, expires: Timestamp },
    /// Keys document expired: freeze.
    #[error(
        "the device's keys document (version {version}) expired at {expires}: apply a newer keys document before installing anything"
    )]
    KeysExpired { version: u64, expires: Timestamp },
    /// The keys document is not (any more) signed by the root in force.
    #[error(
        "the device's keys document (version {version}) is not signed by a threshold of the current root: apply a keys document the current root delegated"
    )]
    KeysNotTrusted { version: u64 },
    /// Signatures made for another bundle's metadata (mix and match).
    #[error(
        "signature by key {key} was made for another bundle (serial {theirs}, this one is {ours}): the metadata and signatures of different bundles were combined; refused"
    )]
    MixAndMatch {
        key: String,
        theirs: Serial,
        ours: Serial,
    },
    /// Signatures made for this bundle, but over other metadata bytes: the metadata was altered.
    #[error(
        "the metadata does not match what key {key} signed (sha256 {signed}, the file's is {found}): it was altered after signing; refused"
    )]
    TamperedMetadata {
        key: String,
        signed: String,
        found: String,
    },
    /// A signature by a key the keys document dropped.
    #[error(
        "signed by key {key}, which keys document version {keys_version} no longer lists (rotated out): have the bundle signed by current vendor keys"
    )]
    RotatedOutKey { key: String, keys_version: u64 },
    /// A signature by a key nobody delegated.
    #[error(
        "signed by key {key}, which is not a vendor signing key of keys document version {keys_version}: refused; sign with a delegated key"
    )]
    UnknownKey { key: String, keys_version: u64 },
    /// A signature that does not verify.
    #[error(
        "the signature by key {key} does not verify: the bundle was altered or the signature is forged"
    )]
    BadSignature { key: String },
    /// Too few distinct valid vendor signatures.
    #[error(
        "{have} distinct vendor keys signed, {need} needed (keys document version {keys_version}): collect more signatures (`medgate-bundle countersign --role vendor`)"
    )]
    ThresholdNotMet {
        have: usize,
        need: usize,
        keys_version: u64,
    },
    /// The region's countersignature is required and missing.
    #[error(
        "region {region} requires {need} countersignature(s) by its keys, the bundle has {have}: have the region countersign it (`medgate-bundle countersign --role region`)"
    )]
    MissingCountersignature {
        region: String,
        have: usize,
        need: usize,
    },
    /// The bundle expired.
    #[error("the bundle expired at {expires} (now {now}): ask the vendor for a fresh bundle")]
    BundleExpired { expires: Timestamp, now: Timestamp },
    /// Another product's bundle.
    #[error("the bundle is for product {bundle}, this device is {device}: wrong bundle")]
    WrongProduct { bundle: Name, device: Name },
    /// Not for this hardware.
    #[error(
        "the bundle runs on hardware profiles [{bundle}], this device is {device}: use the bundle built for {device}"
    )]
    WrongHardware { bundle: String, device: Name },
    /// A payload the slot backend cannot install.
    #[error(
        "the bundle's payload is {bundle}, this device's slots take {device}: use the {device} bundle"
    )]
    WrongPayloadKind {
        bundle: PayloadKind,
        device: PayloadKind,
    },
    /// Header and metadata disagree on the payload size.
    #[error(
        "the header says the payload is {header} bytes, the signed metadata {signed}: the file was altered"
    )]
    PayloadSizeMismatch { header: u64, signed: u64 },
    /// Below the floor.
    #[error(
        "version {version} is below this device's floor {floor} (a security fix it already installed): refused; install {floor} or later"
    )]
    BelowFloor { version: Version, floor: Version },
    /// Not newer than the installed version, and not a sanctioned downgrade asked for.
    #[error(
        "version {version} is not newer than the installed {installed}: refused as a downgrade; a downgrade needs a bundle the vendor marked `downgrade` and the operator's explicit request"
    )]
    Downgrade {
        version: Version,
        installed: Version,
    },
    /// The installed version is too old for this bundle.
    #[error(
        "the bundle needs at least version {needed} installed, this device runs {installed}: install {needed} first"
    )]
    InstalledTooOld { needed: Version, installed: Version },
    /// The payload's bytes are not the signed ones.
    #[error(
        "the payload's sha256 is {found}, the signed metadata says {signed}: the payload was altered or belongs to another bundle; nothing was installed"
    )]
    PayloadDigestMismatch { signed: Digest, found: Digest },
}

impl BundleError {
    /// A stable code for the fleet, the audit trail and the console (`snake_case`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::NotABundle => "not_a_bundle",
            Self::UnsupportedFormat(_) => "unsupported_format",
            Self::Oversized { .. } => "oversized",
            Self::Truncated { .. } => "truncated",
            Self::TrailingData => "trailing_data",
            Self::MalformedMetadata(_) => "malformed_metadata",
            Self::NonCanonicalMetadata => "non_canonical_metadata",
            Self::MalformedSignatures(_) => "malformed_signatures",
            Self::TooManySignatures(_) => "too_many_signatures",
            Self::RootExpired { .. } => "root_expired",
            Self::KeysExpired { .. } => "keys_expired",
            Self::KeysNotTrusted { .. } => "keys_not_trusted",
            Self::MixAndMatch { .. } => "mix_and_match",
            Self::TamperedMetadata { .. } => "tampered_metadata",
            Self::RotatedOutKey { .. } => "rotated_out_key",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature { .. } => "bad_signature",
            Self::ThresholdNotMet { .. } => "threshold_not_met",
            Self::MissingCountersignature { .. } => "missing_countersignature",
            Self::BundleExpired { .. } => "bundle_expired",
            Self::WrongProduct { .. } => "wrong_product",
            Self::WrongHardware { .. } => "wrong_hardware",
            Self::WrongPayloadKind { .. } => "wrong_payload_kind",
            Self::PayloadSizeMismatch { .. } => "payload_size_mismatch",
            Self::BelowFloor { .. } => "below_floor",
            Self::Downgrade { .. } => "downgrade",
            Self::InstalledTooOld { .. } => "installed_too_old",
            Self::PayloadDigestMismatch { .. } => "payload_digest_mismatch",
        }
    }

    /// The bundle error an I/O error from [`Payload`] carries, if it carries one.
    pub fn from_io(e: io::Error) -> Self {
        if !e.get_ref().is_some_and(|inner| inner.is::<BundleError>()) {
            return Self::Io(e);
        }
        match e.into_inner().map(|inner| inner.downcast::<BundleError>()) {
            Some(Ok(b)) => *b,
            _ => Self::Io(io::Error::other("the payload check failed")),
        }
    }
}

fn read_exact_or<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BundleError::Truncated { what },
        _ => BundleError::Io(e),
    })
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Metadata length.
    pub meta_len: u32,
    /// Signatures length.
    pub sigs_len: u32,
    /// Payload length.
    pub payload_len: u64,
}

impl Header {
    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&FORMAT.to_be_bytes());
        b[12..16].copy_from_slice(&self.meta_len.to_be_bytes());
        b[16..20].copy_from_slice(&self.sigs_len.to_be_bytes());
        b[20..28].copy_from_slice(&self.payload_len.to_be_bytes());
        b
    }

    fn parse(b: &[u8; HEADER_LEN], max_payload: u64) -> Result<Self, BundleError> {
        if &b[..8] != MAGIC {
            return Err(BundleError::NotABundle);
        }
        let format = u16::from_be_bytes([b[8], b[9]]);
        if format != FORMAT || b[10..12] != [0, 0] {
            return Err(BundleError::UnsupportedFormat(format));
        }
        let meta_len = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
        let sigs_len = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
        let mut p = [0u8; 8];
        p.copy_from_slice(&b[20..28]);
        let payload_len = u64::from_be_bytes(p);
        let checks = [
            ("metadata", u64::from(meta_len), u64::from(MAX_META)),
            ("signatures block", u64::from(sigs_len), u64::from(MAX_SIGS)),
            ("payload", payload_len, max_payload),
        ];
        for (what, len, max) in checks {
            if len > max {
                return Err(BundleError::Oversized { what, len, max });
            }
        }
        Ok(Self {
            meta_len,
            sigs_len,
            payload_len,
        })
    }
}

fn block_len(len: usize, what: &'static str, max: u32) -> Result<u32, BundleError> {
    u32::try_from(len)
        .ok()
        .filter(|l| *l <= max)
        .ok_or(BundleError::Oversized {
            what,
            len: u64::try_from(len).unwrap_or(u64::MAX),
            max: u64::from(max),
        })
}

/// Write a bundle: header, metadata, signatures, then the payload copied from `payload`
/// (which must yield exactly `meta.size` bytes); `progress` is told the payload bytes written.
pub fn write_bundle<W: Write, R: Read>(
    out: &mut W,
    meta: &BundleMeta,
    sigs: &[BundleSignature],
    payload: &mut R,
    progress: &mut dyn FnMut(u64),
) -> Result<(), BundleError> {
    let meta_bytes = canonical::to_bytes(meta);
    let sig_bytes = canonical::to_bytes(&sigs);
    let header = Header {
        meta_len: block_len(meta_bytes.len(), "metadata", MAX_META)?,
        sigs_len: block_len(sig_bytes.len(), "signatures block", MAX_SIGS)?,
        payload_len: meta.size,
    };
    out.write_all(&header.to_bytes()).map_err(BundleError::Io)?;
    out.write_all(&meta_bytes).map_err(BundleError::Io)?;
    out.write_all(&sig_bytes).map_err(BundleError::Io)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = payload.read(&mut buf).map_err(BundleError::Io)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(BundleError::Io)?;
        done = done.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        progress(done);
    }
    if done != meta.size {
        return Err(BundleError::PayloadSizeMismatch {
            header: done,
            signed: meta.size,
        });
    }
    out.flush().map_err(BundleError::Io)
}

/// Verify a whole bundle as a fleet does before it distributes it (on upload): everything
/// [`Unverified::verify_for_distribution`] checks, then the payload read to its end — its
/// length and SHA-256 the signed ones, nothing after it. Returns the verified metadata.
pub fn verify_for_distribution<R: Read>(
    reader: R,
    trust: &TrustStore,
    now: Timestamp,
) -> Result<BundleMeta, BundleError> {
    Unverified::open(reader, u64::MAX)?
        .verify_for_distribution(trust, now)?
        .payload()
        .check_all(&mut |_| {})
}

/// SHA-256 and length of a stream (the vendor tool's first pass).
pub fn hash_stream<R: Read>(r: &mut R, progress: &mut dyn FnMut(u64)) -> io::Result<(Digest, u64)> {
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((h.finish(), done));
        }
        h.update(&buf[..n]);
        done = done.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        progress(done);
    }
}

/// A bundle whose header, metadata and signatures were read, and nothing checked: it offers
/// what the file claims (for `inspect`) and [`Unverified::verify`], never payload bytes.
#[derive(Debug)]
pub struct Unverified<R> {
    reader: R,
    header: Header,
    meta_bytes: Vec<u8>,
    meta: BundleMeta,
    sigs: Vec<BundleSignature>,
}

impl<R: Read> Unverified<R> {
    /// Read header, metadata and signatures from `reader` (positioned at the file's start);
    /// a payload longer than `max_payload` is refused from the header alone.
    pub fn open(mut reader: R, max_payload: u64) -> Result<Self, BundleError> {
        let mut hb = [0u8; HEADER_LEN];
        read_exact_or(&mut reader, &mut hb, "header")?;
        let header = Header::parse(&hb, max_payload)?;
        let mut meta_bytes = vec![0u8; usize::try_from(header.meta_len).unwrap_or(0)];
        read_exact_or(&mut reader, &mut meta_bytes, "metadata")?;
        let mut sig_bytes = vec![0u8; usize::try_from(header.sigs_len).unwrap_or(0)];
        read_exact_or(&mut reader, &mut sig_bytes, "signatures block")?;
        let meta: BundleMeta = canonical::parse(&meta_bytes).map_err(|e| match e {
            CanonicalError::Malformed(m) => BundleError::MalformedMetadata(m),
            CanonicalError::NotCanonical => BundleError::NonCanonicalMetadata,
        })?;
        let sigs: Vec<BundleSignature> = serde_json::from_slice(&sig_bytes)
            .map_err(|e| BundleError::MalformedSignatures(e.to_string()))?;
        if sigs.len() > MAX_SIGNATURES {
            return Err(BundleError::TooManySignatures(sigs.len()));
        }
        Ok(Self {
            reader,
            header,
            meta_bytes,
            meta,
            sigs,
        })
    }

    /// What the file claims — NOT verified: show it, never act on it.
    pub fn claimed(&self) -> &BundleMeta {
        &self.meta
    }
    /// The signatures the file carries — NOT verified.
    pub fn signatures(&self) -> &[BundleSignature] {
        &self.sigs
    }
    /// The header.
    pub fn header(&self) -> Header {
        self.header
    }

    /// Check everything but the payload bytes: trust documents in force and not expired,
    /// a threshold of distinct vendor keys, the region's countersignature if required, then the
    /// bundle against the device (expiry, product, hardware, payload kind and size, floor,
    /// downgrade, minimum installed version).
    pub fn verify(
        self,
        trust: &TrustStore,
        device: &Device,
        now: Timestamp,
    ) -> Result<Verified<R>, BundleError> {
        self.check_trust(trust, now)?;
        check_device(&self.meta, self.header, trust, device, now)?;
        Ok(Verified {
            reader: self.reader,
            meta: self.meta,
        })
    }

    /// Check what holds for every device, before a fleet distributes the bundle: trust
    /// documents in force and not expired, a threshold of distinct vendor keys (rotated-out and
    /// unknown keys said as such), the region's countersignature if the trust store's policy
    /// requires it, the bundle's expiry and the header's payload length against the signed
    /// size. Nothing device-specific (hardware, installed version, floor: the device's checks).
    pub fn verify_for_distribution(
        self,
        trust: &TrustStore,
        now: Timestamp,
    ) -> Result<Verified<R>, BundleError> {
        self.check_trust(trust, now)?;
        if now >= self.meta.expires {
            return Err(BundleError::BundleExpired {
                expires: self.meta.expires,
                now,
            });
        }
        if self.header.payload_len != self.meta.size {
            return Err(BundleError::PayloadSizeMismatch {
                header: self.header.payload_len,
                signed: self.meta.size,
            });
        }
        Ok(Verified {
            reader: self.reader,
            meta: self.meta,
        })
    }

    /// Trust documents, vendor threshold, region countersignature.
    fn check_trust(&self, trust: &TrustStore, now: Timestamp) -> Result<(), BundleError> {
        let root = trust.root();
        if now >= root.expires {
            return Err(BundleError::RootExpired {
                version: root.version,
                expires: root.expires,
            });
        }
        let keys = trust.keys();
        if now >= keys.expires {
            return Err(BundleError::KeysExpired {
                version: keys.version,
                expires: keys.expires,
            });
        }
        let trusted = trust.keys_signed().tally(&root.root).valid_count();
        if trusted < usize::try_from(root.root.threshold).unwrap_or(usize::MAX) {
            return Err(BundleError::KeysNotTrusted {
                version: keys.version,
            });
        }
        let digest = Digest::of(&self.meta_bytes);
        self.check_vendor(trust, &digest)?;
        if let Some(region) = trust.region() {
            let (tally, _) = self.tally(Role::Region, &region.keys.keys, &digest);
            let need = usize::try_from(region.keys.threshold).unwrap_or(usize::MAX);
            if tally.valid_count() < need {
                return Err(BundleError::MissingCountersignature {
                    region: region.region.to_string(),
                    have: tally.valid_count(),
                    need,
                });
            }
        }
        Ok(())
    }

    /// Count the signatures of `role` whose serial and digest are this bundle's; the first
    /// one that is for other metadata is returned as the error it is.
    fn tally(
        &self,
        role: Role,
        keys: &[crate::keys::PublicKey],
        digest: &Digest,
    ) -> (Tally, Option<BundleError>) {
        let body = signed_body(&self.meta.serial, digest);
        let mut foreign = None;
        let mine: Vec<&BundleSignature> = self
            .sigs
            .iter()
            .filter(|s| s.role == role)
            .filter(|s| {
                if s.serial != self.meta.serial {
                    foreign.get_or_insert(BundleError::MixAndMatch {
                        key: s.key_id.short(),
                        theirs: s.serial,
                        ours: self.meta.serial,
                    });
                    false
                } else if s.metadata_sha256 != *digest {
                    foreign.get_or_insert(BundleError::TamperedMetadata {
                        key: s.key_id.short(),
                        signed: s.metadata_sha256.short(),
                        found: digest.short(),
                    });
                    false
                } else {
                    true
                }
            })
            .collect();
        let tally = Tally::count(
            keys,
            context(role),
            &body,
            mine.iter().map(|s| (&s.key_id, &s.sig)),
        );
        (tally, foreign)
    }

    fn check_vendor(&self, trust: &TrustStore, digest: &Digest) -> Result<(), BundleError> {
        let keys = trust.keys();
        let (tally, foreign) = self.tally(Role::Vendor, &keys.signing.keys, digest);
        let need = usize::try_from(keys.signing.threshold).unwrap_or(usize::MAX);
        if tally.valid_count() >= need {
            return Ok(());
        }
        // Not enough: say the most specific reason.
        if let Some(e) = foreign {
            return Err(e);
        }
        if let Some(id) = tally.unknown.iter().find(|id| trust.is_retired(id)) {
            return Err(BundleError::RotatedOutKey {
                key: id.short(),
                keys_version: keys.version,
            });
        }
        if let Some(id) = tally.unknown.iter().next() {
            return Err(BundleError::UnknownKey {
                key: id.short(),
                keys_version: keys.version,
            });
        }
        if let Some(id) = tally.bad.iter().next() {
            return Err(BundleError::BadSignature { key: id.short() });
        }
        Err(BundleError::ThresholdNotMet {
            have: tally.valid_count(),
            need,
            keys_version: keys.version,
        })
    }
}

fn check_device(
    meta: &BundleMeta,
    header: Header,
    trust: &TrustStore,
    device: &Device,
    now: Timestamp,
) -> Result<(), BundleError> {
    if now >= meta.expires {
        return Err(BundleError::BundleExpired {
            expires: meta.expires,
            now,
        });
    }
    if meta.product != device.product {
        return Err(BundleError::WrongProduct {
            bundle: meta.product.clone(),
            device: device.product.clone(),
        });
    }
    if !meta.hardware.contains(&device.hardware) {
        let bundle = meta
            .hardware
            .iter()
            .map(Name::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(BundleError::WrongHardware {
            bundle,
            device: device.hardware.clone(),
        });
    }
    if meta.payload != device.accepts {
        return Err(BundleError::WrongPayloadKind {
            bundle: meta.payload,
            device: device.accepts,
        });
    }
    if header.payload_len != meta.size {
        return Err(BundleError::PayloadSizeMismatch {
            header: header.payload_len,
            signed: meta.size,
        });
    }
    if meta.size > device.max_payload {
        return Err(BundleError::Oversized {
            what: "payload",
            len: meta.size,
            max: device.max_payload,
        });
    }
    if let Some(floor) = trust.floor() {
        if meta.version < *floor {
            return Err(BundleError::BelowFloor {
                version: meta.version.clone(),
                floor: floor.clone(),
            });
        }
    }
    if meta.version <= device.installed && !(meta.downgrade && device.allow_downgrade) {
        return Err(BundleError::Downgrade {
            version: meta.version.clone(),
            installed: device.installed.clone(),
        });
    }
    if let Some(needed) = &meta.min_installed {
        if device.installed < *needed {
            return Err(BundleError::InstalledTooOld {
                needed: needed.clone(),
                installed: device.installed.clone(),
            });
        }
    }
    Ok(())
}

/// A bundle whose metadata and signatures were verified for this device: its payload can be
/// read now, through a reader that checks size and hash at its end.
#[derive(Debug)]
pub struct Verified<R> {
    reader: R,
    meta: BundleMeta,
}

impl<R: Read> Verified<R> {
    /// The verified metadata.
    pub fn metadata(&self) -> &BundleMeta {
        &self.meta
    }
    /// The payload reader.
    pub fn payload(self) -> Payload<R> {
        Payload {
            remaining: self.meta.size,
            expected: self.meta.sha256,
            inner: self.reader,
            hasher: Hasher::default(),
            meta: self.meta,
            checked: false,
        }
    }
}

/// The payload of a verified bundle. Reading it hashes it; the read that reaches its end
/// returns an error (an [`io::Error`] carrying the [`BundleError`]) if the file ends early, has
/// bytes after it, or the SHA-256 is not the signed one — so a writer that copies it into a
/// slot learns of a bad payload before it commits anything.
#[derive(Debug)]
pub struct Payload<R> {
    inner: R,
    remaining: u64,
    expected: Digest,
    hasher: Hasher,
    meta: BundleMeta,
    checked: bool,
}

fn invalid(e: BundleError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<R: Read> Payload<R> {
    /// The verified metadata.
    pub fn metadata(&self) -> &BundleMeta {
        &self.meta
    }
    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
    /// Whether it was read to its end and its size and hash checked out.
    pub fn is_checked(&self) -> bool {
        self.checked
    }
    fn check_end(&mut self) -> io::Result<()> {
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => break,
                Ok(_) => return Err(invalid(BundleError::TrailingData)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let found = std::mem::take(&mut self.hasher).finish();
        if found != self.expected {
            return Err(invalid(BundleError::PayloadDigestMismatch {
                signed: self.expected,
                found,
            }));
        }
        self.checked = true;
        Ok(())
    }
    /// Read (and discard) the rest, checking it: the verify-only pass. `progress` is told the
    /// payload bytes read so far.
    pub fn check_all(mut self, progress: &mut dyn FnMut(u64)) -> Result<BundleMeta, BundleError> {
        let mut buf = vec![0u8; 1 << 20];
        let total = self.meta.size;
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(self.meta),
                Ok(_) => progress(total.saturating_sub(self.remaining)),
                Err(e) => return Err(BundleError::from_io(e)),
            }
        }
    }
}

impl<R: Read> Read for Payload<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            if !self.checked {
                self.check_end()?;
            }
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(invalid(BundleError::Truncated { what: "payload" }));
        }
        self.hasher.update(&buf[..n]);
        self.remaining = self
            .remaining
            .saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
        if self.remaining == 0 {
            self.check_end()?;
        }
        Ok(n)
    }
}
