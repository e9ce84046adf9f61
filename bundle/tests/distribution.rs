//! What a fleet checks on upload (`format::verify_for_distribution`): everything that holds for
//! every device — signatures, threshold, rotated-out keys, trust documents, expiry, the
//! region's countersignature, the payload's length and hash, nothing trailing — and nothing
//! device-specific (hardware, installed version, floor are the device's).

use medgate_bundle::BundleError;
use medgate_bundle::format::{BundleSignature, Role, verify_for_distribution, write_bundle};
use medgate_bundle::keys::SigningKey;
use medgate_bundle::trust::{KeySet, RegionPolicy};
use std::io::Cursor;

mod common;
use common::*;

fn check(w: &World, file: &[u8]) -> Result<medgate_bundle::BundleMeta, BundleError> {
    verify_for_distribution(Cursor::new(file), &w.trust, w.now)
}

fn refused(result: Result<medgate_bundle::BundleMeta, BundleError>, code: &str) {
    match result {
        Ok(m) => panic!("expected {code}, but version {} passed", m.version),
        Err(e) => {
            assert_eq!(e.code(), code, "wrong refusal: {e}");
            assert!(e.to_string().contains(':'), "says what to do: {e}");
        }
    }
}

#[test]
fn a_good_bundle_passes_with_its_metadata() -> R {
    let w = World::new()?;
    let (meta, file) = w.good("1.1.0")?;
    assert_eq!(check(&w, &file)?, meta);
    Ok(())
}

#[test]
fn no_device_checks_on_upload() -> R {
    let mut w = World::new()?;
    // Older than what the test device runs, below its floor, for other hardware: the fleet
    // stores it; whether a device installs it is the device's decision.
    w.device.installed = v("9.0.0");
    w.trust.raise_floor(&v("5.0.0"));
    let mut meta = w.meta("1.1.0")?;
    meta.hardware = vec!["some-other-box".parse()?];
    meta.min_installed = Some(v("8.0.0"));
    let file = w.file(
        &meta,
        &[(&w.vendor[0], Role::Vendor), (&w.vendor[1], Role::Vendor)],
        &w.payload,
    )?;
    assert_eq!(check(&w, &file)?.version, v("1.1.0"));
    Ok(())
}

#[test]
fn tampered_payload_and_trailing_bytes() -> R {
    let w = World::new()?;
    let (_, mut file) = w.good("1.1.0")?;
    let at = file.len() - 10;
    file[at] ^= 0x01;
    refused(check(&w, &file), "payload_digest_mismatch");
    let (_, mut file) = w.good("1.1.0")?;
    file.push(0);
    refused(check(&w, &file), "trailing_data");
    let (_, file) = w.good("1.1.0")?;
    refused(check(&w, &file[..file.len() - 1]), "truncated");
    Ok(())
}

#[test]
fn bad_signature_unknown_key_threshold() -> R {
    let w = World::new()?;
    let meta = w.meta("1.1.0")?;
    let mut other = meta.clone();
    other.size += 1;
    let good = BundleSignature::make(&meta, &w.vendor[0], Role::Vendor);
    let forged = BundleSignature {
        sig: BundleSignature::make(&other, &w.vendor[1], Role::Vendor).sig,
        ..BundleSignature::make(&meta, &w.vendor[1], Role::Vendor)
    };
    let mut file = Vec::new();
    write_bundle(
        &mut file,
        &meta,
        &[good, forged],
        &mut Cursor::new(&w.payload),
        &mut |_| {},
    )?;
    refused(check(&w, &file), "bad_signature");

    let stranger = SigningKey::generate()?;
    let file = w.file(
        &meta,
        &[(&w.vendor[0], Role::Vendor), (&stranger, Role::Vendor)],
        &w.payload,
    )?;
    refused(check(&w, &file), "unknown_key");

    let file = w.file(&meta, &[(&w.vendor[0], Role::Vendor)], &w.payload)?;
    refused(check(&w, &file), "threshold_not_met");
    Ok(())
}

#[test]
fn rotated_out_key() -> R {
    let mut w = World::new()?;
    let rk: Vec<&SigningKey> = w.root_keys.iter().collect();
    let v2 = keys_doc(
        &[&w.vendor[1], &w.vendor[2]],
        2,
        2,
        w.now.plus_secs(90 * DAY),
    );
    w.trust.update_keys(signed(v2, &rk[..2]), w.now)?;
    let (_, file) = w.good("1.1.0")?; // vendor keys 0 and 1: 0 was retired
    refused(check(&w, &file), "rotated_out_key");
    Ok(())
}

#[test]
fn expired_bundle_and_expired_keys() -> R {
    let mut w = World::new()?;
    let mut meta = w.meta("1.1.0")?;
    meta.expires = w.now;
    let file = w.file(
        &meta,
        &[(&w.vendor[0], Role::Vendor), (&w.vendor[1], Role::Vendor)],
        &w.payload,
    )?;
    refused(check(&w, &file), "bundle_expired");
    let (_, file) = w.good("1.1.0")?;
    w.now = w.now.plus_secs(91 * DAY);
    refused(check(&w, &file), "keys_expired");
    Ok(())
}

#[test]
fn region_policy_requires_the_countersignature() -> R {
    let mut w = World::new()?;
    w.trust.set_region(Some(RegionPolicy {
        region: "north".parse()?,
        keys: KeySet {
            keys: vec![w.region.public()],
            threshold: 1,
        },
    }))?;
    let (meta, file) = w.good("1.1.0")?;
    refused(check(&w, &file), "missing_countersignature");
    let signers = [
        (&w.vendor[0], Role::Vendor),
        (&w.vendor[1], Role::Vendor),
        (&w.region, Role::Region),
    ];
    assert_eq!(check(&w, &w.file(&meta, &signers, &w.payload)?)?, meta);
    Ok(())
}

#[test]
fn not_a_bundle() -> R {
    let w = World::new()?;
    refused(
        check(&w, b"PK\x03\x04 a zip file, not a bundle at all"),
        "not_a_bundle",
    );
    Ok(())
}
