//! The attacks TUF lists, each against a real bundle file and a real directory slot: every one
//! is refused with its own error, and nothing is written to the slot.

use medgate_bundle::format::{BundleSignature, Role, write_bundle};
use medgate_bundle::keys::SigningKey;
use medgate_bundle::slot::{DirBackend, SlotBackend};
use medgate_bundle::trust::{KeySet, RegionPolicy};
use medgate_bundle::{
    BundleError, PayloadKind, Timestamp, TrustError, TrustStore, Unverified, Version,
};
use std::io::Cursor;

mod common;
use common::*;

/// Verify and install into a fresh directory slot; on refusal, check nothing was written.
fn install(w: &World, bytes: &[u8]) -> Result<Version, BundleError> {
    let dir = tempfile::tempdir().map_err(BundleError::Io)?;
    let mut slots =
        DirBackend::open(dir.path()).map_err(|e| BundleError::Io(std::io::Error::other(e)))?;
    let result = (|| {
        let opened = Unverified::open(Cursor::new(bytes), w.device.max_payload)?;
        let verified = opened.verify(&w.trust, &w.device, w.now)?;
        let version = verified.metadata().version.clone();
        let mut payload = verified.payload();
        slots.install(&version, &mut payload).map_err(|e| match e {
            medgate_bundle::slot::SlotError::Payload(b) => b,
            other => BundleError::Io(std::io::Error::other(other)),
        })?;
        Ok(version)
    })();
    let status = slots
        .status()
        .map_err(|e| BundleError::Io(std::io::Error::other(e)))?;
    let staging_empty = std::fs::read_dir(dir.path().join("staging"))
        .map_err(BundleError::Io)?
        .next()
        .is_none();
    match &result {
        Ok(version) => assert_eq!(status.installed, vec![version.clone()]),
        Err(e) => {
            assert!(
                status.installed.is_empty() && status.active.is_none(),
                "{e}: something was written"
            );
            assert!(staging_empty, "{e}: staging not cleaned");
        }
    }
    result
}

fn refused(result: Result<Version, BundleError>, code: &str) {
    match result {
        Ok(v) => panic!("expected {code}, but version {v} was installed"),
        Err(e) => {
            assert_eq!(e.code(), code, "wrong refusal: {e}");
            let msg = e.to_string();
            assert!(
                msg.len() > 40 && msg.contains(':'),
                "the message says what to do: {msg}"
            );
        }
    }
}

#[test]
fn a_good_bundle_installs_and_its_payload_is_intact() -> R {
    let w = World::new()?;
    let (_, file) = w.good("1.1.0")?;
    let dir = tempfile::tempdir()?;
    let mut slots = DirBackend::open(dir.path())?;
    let verified = Unverified::open(Cursor::new(&file), w.device.max_payload)?
        .verify(&w.trust, &w.device, w.now)?;
    let version = verified.metadata().version.clone();
    slots.install(&version, &mut verified.payload())?;
    let written = std::fs::read(slots.version_dir(&version).join("payload"))?;
    assert_eq!(written, w.payload);
    assert_eq!(install(&w, &file)?, v("1.1.0"));
    Ok(())
}

#[test]
fn tampered_payload() -> R {
    let w = World::new()?;
    let (_, mut file) = w.good("1.1.0")?;
    let last = file.len() - 1000;
    file[last] ^= 0x55;
    refused(install(&w, &file), "payload_digest_mismatch");
    Ok(())
}

#[test]
fn tampered_metadata() -> R {
    let w = World::new()?;
    let (_, file) = w.good("1.1.0")?;
    // Same length, still canonical JSON: the version becomes 1.9.0.
    let text = String::from_utf8_lossy(&file[28..]).into_owned();
    let at = 28 + text.find("\"1.1.0\"").ok_or("version in metadata")?;
    let mut file = file;
    file[at + 3] = b'9';
    refused(install(&w, &file), "tampered_metadata");
    // A byte that breaks canonical form (a space instead of the first quote of a key).
    let (_, mut file) = w.good("1.1.0")?;
    file[29] = b' ';
    assert!(matches!(
        install(&w, &file),
        Err(BundleError::MalformedMetadata(_) | BundleError::NonCanonicalMetadata)
    ));
    Ok(())
}

#[test]
fn bad_signature() -> R {
    let w = World::new()?;
    let meta = w.meta("1.1.0")?;
    let mut sigs = vec![
        BundleSignature::make(&meta, &w.vendor[0], Role::Vendor),
        BundleSignature::make(&meta, &w.vendor[1], Role::Vendor),
    ];
    // A signature by vendor 0 over other bytes, labelled with this bundle's serial and digest.
    let mut other = meta.clone();
    other.size += 1;
    sigs[1] = BundleSignature {
        sig: BundleSignature::make(&other, &w.vendor[1], Role::Vendor).sig,
        ..sigs[1].clone()
    };
    let mut file = Vec::new();
    write_bundle(
        &mut file,
        &meta,
        &sigs,
        &mut Cursor::new(&w.payload),
        &mut |_| {},
    )?;
    refused(install(&w, &file), "bad_signature");
    Ok(())
}

#[test]
fn unknown_key() -> R {
    let w = World::new()?;
    let stranger = SigningKey::generate()?;
    let meta = w.meta("1.1.0")?;
    let file = w.file(
        &meta,
        &[(&w.vendor[0], Role::Vendor), (&stranger, Role::Vendor)],
        &w.payload,
    )?;
    refused(install(&w, &file), "unknown_key");
    // A root key is not a vendor key either.
    let file = w.file(
        &meta,
        &[
            (&w.vendor[0], Role::Vendor),
            (&w.root_keys[0], Role::Vendor),
        ],
        &w.payload,
    )?;
    refused(install(&w, &file), "unknown_key");
    Ok(())
}

#[test]
fn threshold_not_met_and_one_key_counts_once() -> R {
    let w = World::new()?;
    let meta = w.meta("1.1.0")?;
    let file = w.file(&meta, &[(&w.vendor[0], Role::Vendor)], &w.payload)?;
    refused(install(&w, &file), "threshold_not_met");
    let same = (&w.vendor[2], Role::Vendor);
    let file = w.file(&meta, &[same, same, same, same], &w.payload)?;
    refused(install(&w, &file), "threshold_not_met");
    // A region signature does not count as a vendor one.
    let file = w.file(
        &meta,
        &[(&w.vendor[0], Role::Vendor), (&w.vendor[1], Role::Region)],
        &w.payload,
    )?;
    refused(install(&w, &file), "threshold_not_met");
    let file = w.file(&meta, &[], &w.payload)?;
    refused(install(&w, &file), "threshold_not_met");
    Ok(())
}

#[test]
fn rotated_out_key() -> R {
    let mut w = World::new()?;
    let newcomer = SigningKey::generate()?;
    let rk: Vec<&SigningKey> = w.root_keys.iter().collect();
    // Keys v2 drops vendor key 0.
    let v2 = keys_doc(
        &[&w.vendor[1], &w.vendor[2], &newcomer],
        2,
        2,
        w.now.plus_secs(90 * DAY),
    );
    w.trust.update_keys(signed(v2, &rk[..2]), w.now)?;
    let meta = w.meta("1.1.0")?;
    let file = w.file(
        &meta,
        &[(&w.vendor[0], Role::Vendor), (&w.vendor[1], Role::Vendor)],
        &w.payload,
    )?;
    refused(install(&w, &file), "rotated_out_key");
    let file = w.file(
        &meta,
        &[(&newcomer, Role::Vendor), (&w.vendor[1], Role::Vendor)],
        &w.payload,
    )?;
    assert_eq!(install(&w, &file)?, v("1.1.0"));
    Ok(())
}

#[test]
fn expired_metadata() -> R {
    let w = World::new()?;
    let mut meta = w.meta("1.1.0")?;
    meta.expires = w.now;
    let file = w.file(
        &meta,
        &[(&w.vendor[0], Role::Vendor), (&w.vendor[1], Role::Vendor)],
        &w.payload,
    )?;
    refused(install(&w, &file), "bundle_expired");
    Ok(())
}

#[test]
fn expired_keys_document_and_root() -> R {
    let mut w = World::new()?;
    let (_, file) = w.good("1.1.0")?;
    w.now = w.now.plus_secs(91 * DAY);
    refused(install(&w, &file), "keys_expired");
    w.now = w.now.plus_secs(365 * DAY);
    refused(install(&w, &file), "root_expired");
    // Nor is an expired keys document accepted as an update.
    let rk: Vec<&SigningKey> = w.root_keys.iter().collect();
    let vk: Vec<&SigningKey> = w.vendor.iter().collect();
    let old = keys_doc(&vk, 2, 5, Timestamp::from_unix(1));
    let mut trust = w.trust.clone();
    assert!(matches!(
        trust.update_keys(signed(old, &rk[..2]), Timestamp::from_unix(2)),
        Err(TrustError::KeysExpired { .. })
    ));
    Ok(())
}

#[test]
fn downgrade_below_installed_and_below_the_floor() -> R {
    let mut w = World::new()?;
    w.device.installed = v("1.4.0");
    let (_, file) = w.good("1.3.0")?;
    refused(install(&w, &file), "downgrade");
    let (_, same) = w.good("1.4.0")?;
    refused(install(&w, &same), "downgrade");
    // A sanctioned downgrade: the vendor marks it, the operator asks for it.
    let mut meta = w.meta("1.3.0")?;
    meta.downgrade = true;
    let sanctioned = w.file(
        &meta,
        &[(&w.vendor[0], Role::Vendor), (&w.vendor[1], Role::Vendor)],
        &w.payload,
    )?;
    refused(install(&w, &sanctioned), "downgrade");
    w.device.allow_downgrade = true;
    assert_eq!(install(&w, &sanctioned)?, v("1.3.0"));
    // ... but never below the floor.
    w.trust.raise_floor(&v("1.3.1"));
    refused(install(&w, &sanctioned), "below_floor");
    w.trust.raise_floor(&v("1.0.0"));
    assert_eq!(
        w.trust.floor(),
        Some(&v("1.3.1")),
        "the floor never goes down"
    );
    Ok(())
}

#[test]
fn installed_too_old() -> R {
    let mut w = World::new()?;
    w.device.installed = v("0.8.0");
    let (_, file) = w.good("1.1.0")?;
    refused(install(&w, &file), "installed_too_old");
    Ok(())
}

#[test]
fn wrong_hardware_product_and_payload_kind() -> R {
    let mut w = World::new()?;
    let (_, file) = w.good("1.1.0")?;
    w.device.hardware = "other-box".parse()?;
    refused(install(&w, &file), "wrong_hardware");
    w.device.hardware = "qemu-vm".parse()?;
    w.device.product = "medgate-fleet".parse()?;
    refused(install(&w, &file), "wrong_product");
    w.device.product = "medgate-appliance".parse()?;
    w.device.accepts = PayloadKind::RootImage;
    refused(install(&w, &file), "wrong_payload_kind");
    Ok(())
}

#[test]
fn missing_countersignature() -> R {
    let mut w = World::new()?;
    w.trust.set_region(Some(RegionPolicy {
        region: "north".parse()?,
        keys: KeySet {
            keys: vec![w.region.public()],
            threshold: 1,
        },
    }))?;
    let (meta, file) = w.good("1.1.0")?;
    refused(install(&w, &file), "missing_countersignature");
    // The region's key as a vendor signature is not a countersignature.
    let signers = [
        (&w.vendor[0], Role::Vendor),
        (&w.vendor[1], Role::Vendor),
        (&w.region, Role::Vendor),
    ];
    refused(
        install(&w, &w.file(&meta, &signers, &w.payload)?),
        "missing_countersignature",
    );
    let signers = [
        (&w.vendor[0], Role::Vendor),
        (&w.vendor[1], Role::Vendor),
        (&w.region, Role::Region),
    ];
    assert_eq!(
        install(&w, &w.file(&meta, &signers, &w.payload)?)?,
        v("1.1.0")
    );
    Ok(())
}

#[test]
fn oversized_and_truncated_files() -> R {
    let mut w = World::new()?;
    let (_, file) = w.good("1.1.0")?;
    refused(install(&w, &file[..file.len() - 1]), "truncated");
    refused(install(&w, &file[..20]), "truncated");
    refused(install(&w, &file[..100]), "truncated");
    let mut longer = file.clone();
    longer.extend_from_slice(b"more");
    refused(install(&w, &longer), "trailing_data");
    // A header announcing a huge metadata block or payload is refused before reading it.
    let mut huge = file.clone();
    huge[12..16].copy_from_slice(&(10u32 << 20).to_be_bytes());
    refused(install(&w, &huge), "oversized");
    let mut huge = file.clone();
    huge[20..28].copy_from_slice(&(1u64 << 40).to_be_bytes());
    refused(install(&w, &huge), "oversized");
    // A header that disagrees with the signed size.
    let mut lie = file.clone();
    lie[20..28].copy_from_slice(&(w.payload.len() as u64 - 1).to_be_bytes());
    refused(install(&w, &lie), "payload_size_mismatch");
    w.device.max_payload = 1000;
    refused(install(&w, &file), "oversized");
    refused(
        install(&w, b"GIF89a not a bundle at all, but long enough"),
        "not_a_bundle",
    );
    Ok(())
}

#[test]
fn mix_and_match() -> R {
    let w = World::new()?;
    let (meta_a, file_a) = w.good("1.1.0")?;
    let (meta_b, _) = w.good("1.2.0")?;
    // Bundle B's metadata with bundle A's signatures.
    let opened = Unverified::open(Cursor::new(&file_a), w.device.max_payload)?;
    let sigs_a = opened.signatures().to_vec();
    let mut mixed = Vec::new();
    write_bundle(
        &mut mixed,
        &meta_b,
        &sigs_a,
        &mut Cursor::new(&w.payload),
        &mut |_| {},
    )?;
    refused(install(&w, &mixed), "mix_and_match");
    // Bundle A's metadata and signatures with another payload.
    let other: Vec<u8> = w.payload.iter().rev().copied().collect();
    let mut swapped = Vec::new();
    write_bundle(
        &mut swapped,
        &meta_a,
        &sigs_a,
        &mut Cursor::new(&other),
        &mut |_| {},
    )?;
    refused(install(&w, &swapped), "payload_digest_mismatch");
    Ok(())
}

#[test]
fn rollback_of_the_keys_and_root_documents() -> R {
    let mut w = World::new()?;
    let rk: Vec<&SigningKey> = w.root_keys.iter().collect();
    let vk: Vec<&SigningKey> = w.vendor.iter().collect();
    let exp = w.now.plus_secs(90 * DAY);
    w.trust
        .update_keys(signed(keys_doc(&vk, 2, 3, exp), &rk[..2]), w.now)?;
    assert_eq!(w.trust.keys().version, 3);
    let old = signed(keys_doc(&vk, 1, 2, exp), &rk[..2]);
    assert!(matches!(
        w.trust.update_keys(old, w.now),
        Err(TrustError::KeysRollback {
            offered: 2,
            kept: 3
        })
    ));
    // Same version, other content (equivocation): also refused.
    let same_v = signed(keys_doc(&vk, 1, 3, exp), &rk[..2]);
    assert!(matches!(
        w.trust.update_keys(same_v, w.now),
        Err(TrustError::KeysRollback { .. })
    ));
    // A keys document signed by one root key only (threshold 2).
    let weak = signed(keys_doc(&vk, 1, 4, exp), &rk[..1]);
    assert!(matches!(
        w.trust.update_keys(weak, w.now),
        Err(TrustError::KeysNotSignedByRoot {
            have: 1,
            need: 2,
            ..
        })
    ));
    assert_eq!(w.trust.keys().version, 3);

    // Root rotation: v2 signed by 2 old and 2 new keys.
    let new_root = (0..3)
        .map(|_| SigningKey::generate())
        .collect::<Result<Vec<_>, _>>()?;
    let nk: Vec<&SigningKey> = new_root.iter().collect();
    let r2 = root_doc(&nk, 2, 2, w.now.plus_secs(365 * DAY));
    let only_new = signed(r2.clone(), &nk[..2]);
    assert!(matches!(
        w.trust.clone().update_root(only_new, w.now),
        Err(TrustError::RootNotSignedByOld { have: 0, .. })
    ));
    let only_old = signed(r2.clone(), &rk[..2]);
    assert!(matches!(
        w.trust.clone().update_root(only_old, w.now),
        Err(TrustError::RootNotSelfSigned { have: 0, .. })
    ));
    let gap = signed(
        root_doc(&nk, 2, 3, w.now.plus_secs(365 * DAY)),
        &[rk[0], rk[1], nk[0], nk[1]],
    );
    assert!(matches!(
        w.trust.clone().update_root(gap, w.now),
        Err(TrustError::RootVersionGap { .. })
    ));
    let good = signed(r2, &[rk[0], rk[2], nk[1], nk[2]]);
    w.trust.update_root(good, w.now)?;
    assert_eq!(w.trust.root().version, 2);
    // The old root again: rollback.
    let r1 = signed(root_doc(&rk, 2, 1, w.now.plus_secs(365 * DAY)), &rk[..2]);
    assert!(matches!(
        w.trust.update_root(r1, w.now),
        Err(TrustError::RootRollback {
            offered: 1,
            kept: 2
        })
    ));
    // The keys document the old root signed is no longer trusted: bundles wait for a new one.
    let (_, file) = w.good("1.1.0")?;
    refused(install(&w, &file), "keys_not_trusted");
    w.trust
        .update_keys(signed(keys_doc(&vk, 2, 4, exp), &nk[..2]), w.now)?;
    assert_eq!(install(&w, &file)?, v("1.1.0"));
    // The old root keys cannot delegate any more.
    let by_old = signed(keys_doc(&vk, 1, 5, exp), &rk[..3]);
    assert!(matches!(
        w.trust.update_keys(by_old, w.now),
        Err(TrustError::KeysNotSignedByRoot { .. })
    ));
    // The trust store survives a round trip through its file.
    let back = TrustStore::from_json(w.trust.to_json().as_bytes())?;
    assert_eq!(back, w.trust);
    Ok(())
}

#[test]
fn invalid_key_sets_are_refused() -> R {
    let w = World::new()?;
    let rk: Vec<&SigningKey> = w.root_keys.iter().collect();
    let dup = signed(
        root_doc(&[rk[0], rk[0]], 2, 1, w.now.plus_secs(DAY)),
        &rk[..1],
    );
    let keys = signed(
        keys_doc(&[&w.vendor[0]], 1, 1, w.now.plus_secs(DAY)),
        &rk[..1],
    );
    assert!(matches!(
        TrustStore::new(dup, keys.clone(), None, w.now),
        Err(TrustError::InvalidKeySet { distinct: 1, .. })
    ));
    let zero = signed(root_doc(&rk, 0, 1, w.now.plus_secs(DAY)), &rk[..1]);
    assert!(matches!(
        TrustStore::new(zero, keys, None, w.now),
        Err(TrustError::InvalidKeySet { threshold: 0, .. })
    ));
    Ok(())
}

#[test]
fn every_single_byte_change_is_refused() -> R {
    let mut w = World::new()?;
    w.payload = (0..700u32).map(|i| (i * 7).to_le_bytes()[0]).collect();
    let (_, file) = w.good("1.1.0")?;
    assert_eq!(install(&w, &file)?, v("1.1.0"));
    let mut codes = std::collections::BTreeSet::new();
    for at in 0..file.len() {
        for bit in [0x01u8, 0x20, 0x80] {
            let mut bad = file.clone();
            bad[at] ^= bit;
            let opened = Unverified::open(Cursor::new(&bad), w.device.max_payload);
            let result = opened
                .and_then(|u| u.verify(&w.trust, &w.device, w.now))
                .and_then(|ok| ok.payload().check_all(&mut |_| {}));
            match result {
                Ok(_) => panic!("byte {at} ^ {bit:#04x} of {} was accepted", file.len()),
                Err(e) => codes.insert(e.code()),
            };
        }
    }
    // Every part of the file is covered, each by its own check.
    for code in [
        "not_a_bundle",
        "unsupported_format",
        "oversized",
        "truncated",
        "malformed_metadata",
        "tampered_metadata",
        "bad_signature",
        "unknown_key",
        "mix_and_match",
        "payload_digest_mismatch",
    ] {
        assert!(codes.contains(code), "{code} never seen: {codes:?}");
    }
    Ok(())
}
