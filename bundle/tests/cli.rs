//! The vendor tool end to end: the ceremonies of docs/ota.md with the real binary.

use std::path::Path;
use std::process::{Command, Output};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn tool(dir: &Path, args: &[&str]) -> R<Output> {
    let out = Command::new(env!("CARGO_BIN_EXE_medgate-bundle"))
        .current_dir(dir)
        .args(args)
        .output()?;
    Ok(out)
}

fn ok(dir: &Path, args: &[&str]) -> R<String> {
    let out = tool(dir, args)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?} failed: {text}");
    Ok(text)
}

fn fails(dir: &Path, args: &[&str]) -> R<String> {
    let out = tool(dir, args)?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should have failed");
    Ok(text)
}

#[test]
fn ceremonies_sign_verify_countersign_rotate() -> R {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    for name in ["r1", "r2", "r3", "v1", "v2", "v3", "north"] {
        ok(d, &["keygen", "--name", name])?;
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(d.join("r1.key"))?.permissions().mode() & 0o777,
        0o600
    );
    assert!(
        fails(d, &["keygen", "--name", "r1"])?.contains("must not exist"),
        "keygen never overwrites"
    );

    let out = ok(
        d,
        &[
            "root",
            "--key",
            "r1.pub",
            "--key",
            "r2.pub",
            "--key",
            "r3.pub",
            "--threshold",
            "2",
            "--version",
            "1",
            "--expires",
            "2099-01-01",
            "--sign-with",
            "r1.key",
            "--out",
            "root.json",
        ],
    )?;
    assert!(out.contains("NOT reached"), "{out}");
    let out = ok(d, &["add-signature", "root.json", "--sign-with", "r3.key"])?;
    assert!(
        out.contains("signed by 2 of 3") && out.contains("threshold reached"),
        "{out}"
    );
    ok(
        d,
        &[
            "delegate",
            "--root",
            "root.json",
            "--key",
            "v1.pub",
            "--key",
            "v2.pub",
            "--key",
            "v3.pub",
            "--threshold",
            "2",
            "--version",
            "1",
            "--expires",
            "2099-01-01",
            "--sign-with",
            "r1.key",
            "--sign-with",
            "r2.key",
            "--out",
            "keys.json",
        ],
    )?;
    ok(
        d,
        &[
            "trust",
            "init",
            "--root",
            "root.json",
            "--keys",
            "keys.json",
            "--out",
            "trust.json",
        ],
    )?;

    std::fs::write(d.join("payload.bin"), vec![7u8; 3 << 20])?;
    let sign = |key2: &str, version: &str, out: &str| -> R<String> {
        ok(
            d,
            &[
                "sign",
                "--payload",
                "payload.bin",
                "--kind",
                "appliance-binaries",
                "--version",
                version,
                "--hardware",
                "qemu-vm",
                "--expires-days",
                "30",
                "--sign-with",
                "v1.key",
                "--sign-with",
                key2,
                "--out",
                out,
            ],
        )
    };
    sign("v2.key", "1.1.0", "b.mgb")?;
    let out = ok(d, &["inspect", "b.mgb"])?;
    assert!(
        out.contains("NOT VERIFIED") && out.contains("1.1.0") && out.contains("qemu-vm"),
        "{out}"
    );
    let verify = [
        "verify",
        "b.mgb",
        "--trust",
        "trust.json",
        "--hardware",
        "qemu-vm",
        "--installed",
        "1.0.0",
    ];
    let out = ok(d, &verify)?;
    assert!(out.contains("verified: medgate-appliance 1.1.0"), "{out}");
    let err = fails(
        d,
        &[
            "verify",
            "b.mgb",
            "--trust",
            "trust.json",
            "--hardware",
            "generic-1u-2nic",
            "--installed",
            "1.0.0",
        ],
    )?;
    assert!(err.contains("refused (wrong_hardware)"), "{err}");
    let err = fails(
        d,
        &[
            "verify",
            "b.mgb",
            "--trust",
            "trust.json",
            "--hardware",
            "qemu-vm",
            "--installed",
            "1.2.0",
        ],
    )?;
    assert!(err.contains("refused (downgrade)"), "{err}");

    // Tampered payload: the last byte.
    let mut bytes = std::fs::read(d.join("b.mgb"))?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(d.join("bad.mgb"), &bytes)?;
    let err = fails(
        d,
        &[
            "verify",
            "bad.mgb",
            "--trust",
            "trust.json",
            "--hardware",
            "qemu-vm",
            "--installed",
            "1.0.0",
        ],
    )?;
    assert!(err.contains("refused (payload_digest_mismatch)"), "{err}");
    // Nobody countersigns an altered bundle by mistake: the tool checks the payload it copies.
    let err = fails(
        d,
        &[
            "countersign",
            "bad.mgb",
            "--role",
            "region",
            "--sign-with",
            "north.key",
            "--out",
            "bad-north.mgb",
        ],
    )?;
    assert!(err.contains("nothing written"), "{err}");
    assert!(!d.join("bad-north.mgb").exists() && !d.join("bad-north.mgb.tmp").exists());

    // One vendor key is not enough; a second one added later is.
    ok(
        d,
        &[
            "sign",
            "--payload",
            "payload.bin",
            "--kind",
            "appliance-binaries",
            "--version",
            "1.2.0",
            "--hardware",
            "qemu-vm",
            "--expires-days",
            "30",
            "--sign-with",
            "v3.key",
            "--out",
            "one.mgb",
        ],
    )?;
    let err = fails(
        d,
        &[
            "verify",
            "one.mgb",
            "--trust",
            "trust.json",
            "--hardware",
            "qemu-vm",
            "--installed",
            "1.0.0",
        ],
    )?;
    assert!(err.contains("refused (threshold_not_met)"), "{err}");
    ok(
        d,
        &[
            "countersign",
            "one.mgb",
            "--role",
            "vendor",
            "--sign-with",
            "v2.key",
            "--out",
            "one.mgb",
        ],
    )?;
    ok(
        d,
        &[
            "verify",
            "one.mgb",
            "--trust",
            "trust.json",
            "--hardware",
            "qemu-vm",
            "--installed",
            "1.0.0",
        ],
    )?;

    // The region requires its countersignature.
    ok(
        d,
        &[
            "trust",
            "init",
            "--root",
            "root.json",
            "--keys",
            "keys.json",
            "--region",
            "north",
            "--region-key",
            "north.pub",
            "--out",
            "trust-north.json",
        ],
    )?;
    let err = fails(
        d,
        &[
            "verify",
            "b.mgb",
            "--trust",
            "trust-north.json",
            "--hardware",
            "qemu-vm",
            "--installed",
            "1.0.0",
        ],
    )?;
    assert!(err.contains("refused (missing_countersignature)"), "{err}");
    ok(
        d,
        &[
            "countersign",
            "b.mgb",
            "--role",
            "region",
            "--sign-with",
            "north.key",
            "--out",
            "b-north.mgb",
        ],
    )?;
    ok(
        d,
        &[
            "verify",
            "b-north.mgb",
            "--trust",
            "trust-north.json",
            "--hardware",
            "qemu-vm",
            "--installed",
            "1.0.0",
        ],
    )?;

    // Rotation: v1 retired by keys version 2; then the root rotates to new keys.
    ok(
        d,
        &[
            "delegate",
            "--root",
            "root.json",
            "--key",
            "v2.pub",
            "--key",
            "v3.pub",
            "--threshold",
            "2",
            "--version",
            "2",
            "--expires",
            "2099-01-01",
            "--sign-with",
            "r2.key",
            "--sign-with",
            "r3.key",
            "--out",
            "keys2.json",
        ],
    )?;
    ok(
        d,
        &[
            "trust",
            "update",
            "--trust",
            "trust.json",
            "--keys",
            "keys2.json",
        ],
    )?;
    let err = fails(d, &verify)?;
    assert!(err.contains("refused (rotated_out_key)"), "{err}");
    let err = fails(
        d,
        &[
            "trust",
            "update",
            "--trust",
            "trust.json",
            "--keys",
            "keys.json",
        ],
    )?;
    assert!(err.contains("rollback"), "{err}");
    for name in ["n1", "n2"] {
        ok(d, &["keygen", "--name", name])?;
    }
    ok(
        d,
        &[
            "root",
            "--previous",
            "root.json",
            "--key",
            "n1.pub",
            "--key",
            "n2.pub",
            "--threshold",
            "2",
            "--version",
            "2",
            "--expires",
            "2099-01-01",
            "--sign-with",
            "r1.key",
            "--sign-with",
            "r2.key",
            "--sign-with",
            "n1.key",
            "--sign-with",
            "n2.key",
            "--out",
            "root2.json",
        ],
    )?;
    ok(
        d,
        &[
            "delegate",
            "--root",
            "root2.json",
            "--key",
            "v2.pub",
            "--key",
            "v3.pub",
            "--threshold",
            "2",
            "--version",
            "3",
            "--expires",
            "2099-01-01",
            "--sign-with",
            "n1.key",
            "--sign-with",
            "n2.key",
            "--out",
            "keys3.json",
        ],
    )?;
    let out = ok(
        d,
        &[
            "trust",
            "update",
            "--trust",
            "trust.json",
            "--root",
            "root2.json",
            "--keys",
            "keys3.json",
        ],
    )?;
    assert!(out.contains("root version 2, keys version 3"), "{out}");
    ok(
        d,
        &[
            "verify",
            "one.mgb",
            "--trust",
            "trust.json",
            "--hardware",
            "qemu-vm",
            "--installed",
            "1.0.0",
        ],
    )?;
    Ok(())
}
