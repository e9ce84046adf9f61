//! The test world shared by the integration tests: root, vendor and region keys, a device, a
//! trust store, and bundles made from a payload.
#![allow(dead_code)]

use medgate_bundle::format::{BundleSignature, MetaKind, Role, write_bundle};
use medgate_bundle::keys::SigningKey;
use medgate_bundle::trust::{KeySet, KeysKind, RootKind};
use medgate_bundle::types::Serial;
use medgate_bundle::{
    BundleMeta, Device, Digest, KeysDoc, PayloadKind, RootDoc, Signed, Timestamp, TrustStore,
    Version,
};
use std::io::Cursor;

pub type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

pub const DAY: u64 = 86_400;

pub fn v(s: &str) -> Version {
    s.parse().expect("test version")
}

pub struct World {
    pub now: Timestamp,
    pub root_keys: Vec<SigningKey>,
    pub vendor: Vec<SigningKey>,
    pub region: SigningKey,
    pub trust: TrustStore,
    pub device: Device,
    pub payload: Vec<u8>,
}

pub fn root_doc(keys: &[&SigningKey], threshold: u32, version: u64, expires: Timestamp) -> RootDoc {
    RootDoc {
        kind: RootKind::Root,
        version,
        expires,
        root: KeySet {
            keys: keys.iter().map(|k| k.public()).collect(),
            threshold,
        },
    }
}

pub fn keys_doc(keys: &[&SigningKey], threshold: u32, version: u64, expires: Timestamp) -> KeysDoc {
    KeysDoc {
        kind: KeysKind::Keys,
        version,
        expires,
        signing: KeySet {
            keys: keys.iter().map(|k| k.public()).collect(),
            threshold,
        },
    }
}

pub fn signed<T: medgate_bundle::trust::Document>(doc: T, by: &[&SigningKey]) -> Signed<T> {
    let mut s = Signed::new(doc);
    for k in by {
        s.sign(k);
    }
    s
}

impl World {
    /// Root: 3 keys, threshold 2. Vendor: 3 keys, threshold 2. No region policy.
    pub fn new() -> R<Self> {
        let now: Timestamp = "2026-12-02T04:40:00Z".parse()?;
        let root_keys = (0..3)
            .map(|_| SigningKey::generate())
            .collect::<Result<Vec<_>, _>>()?;
        let vendor = (0..3)
            .map(|_| SigningKey::generate())
            .collect::<Result<Vec<_>, _>>()?;
        let region = SigningKey::generate()?;
        let rk: Vec<&SigningKey> = root_keys.iter().collect();
        let root = signed(root_doc(&rk, 2, 1, now.plus_secs(365 * DAY)), &rk[..2]);
        let vk: Vec<&SigningKey> = vendor.iter().collect();
        let keys = signed(keys_doc(&vk, 2, 1, now.plus_secs(90 * DAY)), &rk[1..]);
        let trust = TrustStore::new(root, keys, None, now)?;
        let device = Device {
            product: "medgate-appliance".parse()?,
            hardware: "qemu-vm".parse()?,
            installed: v("1.0.0"),
            accepts: PayloadKind::ApplianceBinaries,
            max_payload: 4 << 20,
            allow_downgrade: false,
        };
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        Ok(Self {
            now,
            root_keys,
            vendor,
            region,
            trust,
            device,
            payload,
        })
    }

    pub fn meta(&self, version: &str) -> R<BundleMeta> {
        Ok(BundleMeta {
            kind: MetaKind::Bundle,
            product: "medgate-appliance".parse()?,
            version: v(version),
            hardware: vec!["generic-1u-2nic".parse()?, "qemu-vm".parse()?],
            min_installed: Some(v("0.9.0")),
            floor: None,
            downgrade: false,
            payload: PayloadKind::ApplianceBinaries,
            size: self.payload.len() as u64,
            sha256: Digest::of(&self.payload),
            created: self.now,
            expires: self.now.plus_secs(30 * DAY),
            serial: Serial(medgate_bundle::keys::random_bytes()?),
        })
    }

    pub fn file(
        &self,
        meta: &BundleMeta,
        signers: &[(&SigningKey, Role)],
        payload: &[u8],
    ) -> R<Vec<u8>> {
        let sigs: Vec<BundleSignature> = signers
            .iter()
            .map(|(k, role)| BundleSignature::make(meta, k, *role))
            .collect();
        let mut out = Vec::new();
        write_bundle(
            &mut out,
            meta,
            &sigs,
            &mut Cursor::new(payload),
            &mut |_| {},
        )?;
        Ok(out)
    }

    /// A good bundle: vendor keys 0 and 1.
    pub fn good(&self, version: &str) -> R<(BundleMeta, Vec<u8>)> {
        let meta = self.meta(version)?;
        let file = self.file(
            &meta,
            &[
                (&self.vendor[0], Role::Vendor),
                (&self.vendor[1], Role::Vendor),
            ],
            &self.payload,
        )?;
        Ok((meta, file))
    }
}
