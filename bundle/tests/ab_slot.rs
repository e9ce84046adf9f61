//! The A/B slot backend on a fake box: plain files for the partitions, a directory for the ESP
//! (the real `os-image/lib/medgate-slot` renames its UKIs), a file for /proc/cmdline, and real
//! signed `root_image` bundles streamed into it.

use medgate_bundle::format::MetaKind;
use medgate_bundle::rootimage::{Header, Slot};
use medgate_bundle::slot::{Probation, SlotBackend, SlotError};
use medgate_bundle::slot_ab::{AbBackend, AbPaths, SlotTool};
use medgate_bundle::{BundleError, PayloadKind, Unverified, Version};
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

mod common;
use common::*;

struct Fake {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

/// A box booted from slot A (image version 0.1.0), both UKIs good, A the newer generation.
fn fake() -> R<(Fake, AbBackend)> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_path_buf();
    let parts = root.join("by-partlabel");
    fs::create_dir_all(&parts)?;
    for (name, size) in [
        ("root-A", 64 << 10),
        ("root-A-verity", 8 << 10),
        ("root-B", 64 << 10),
        ("root-B-verity", 8 << 10),
    ] {
        fs::write(parts.join(name), vec![b'o'; size])?;
    }
    let linux = root.join("esp/EFI/Linux");
    fs::create_dir_all(&linux)?;
    fs::write(linux.join("medgate-1-A.efi"), b"uki A 0.1.0")?;
    fs::write(linux.join("medgate-0-B.efi"), b"uki B 0.1.0")?;
    fs::write(
        root.join("cmdline"),
        "root=/dev/mapper/root medgate.slot=A ro\n",
    )?;
    fs::write(root.join("image-version"), "0.1.0\n")?;
    let b = AbBackend::new(
        AbPaths {
            partitions: parts,
            cmdline: root.join("cmdline"),
            image_version: root.join("image-version"),
            state: root.join("state"),
        },
        SlotTool::Direct {
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("../os-image/lib/medgate-slot"),
            esp: Some(root.join("esp")),
        },
    );
    Ok((Fake { _tmp: tmp, root }, b))
}

fn payload(root: &[u8], verity: &[u8], a: &[u8], b: &[u8]) -> Vec<u8> {
    let h = Header {
        root: root.len() as u64,
        verity: verity.len() as u64,
        uki_a: a.len() as u64,
        uki_b: b.len() as u64,
    };
    let mut p = h.to_bytes().to_vec();
    for part in [root, verity, a, b] {
        p.extend_from_slice(part);
    }
    p
}

/// Signs `bytes` as a `root_image` bundle of `version`, verifies it and installs it; with
/// `tamper`, a payload byte is changed after signing.
fn install(
    b: &mut AbBackend,
    version: &str,
    bytes: &[u8],
    tamper: bool,
) -> R<Result<(), SlotError>> {
    let mut w = World::new()?;
    w.payload = bytes.to_vec();
    w.device.accepts = PayloadKind::RootImage;
    w.device.installed = v("0.1.0");
    let mut meta = w.meta(version)?;
    meta.payload = PayloadKind::RootImage;
    meta.min_installed = None;
    assert_eq!(meta.kind, MetaKind::Bundle);
    let mut file = w.file(
        &meta,
        &[
            (&w.vendor[0], medgate_bundle::Role::Vendor),
            (&w.vendor[1], medgate_bundle::Role::Vendor),
        ],
        &w.payload,
    )?;
    if tamper {
        let last = file.len() - 1;
        file[last] ^= 1;
    }
    let verified = Unverified::open(Cursor::new(file), w.device.max_payload)?
        .verify(&w.trust, &w.device, w.now)?;
    Ok(b.install(&v(version), &mut verified.payload()))
}

fn esp(root: &Path) -> R<Vec<String>> {
    let mut names = fs::read_dir(root.join("esp/EFI/Linux"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}

/// What systemd-boot and the kernel do at the reboot into `slot` (one try counted).
fn reboot_into(f: &Fake, slot: &str, version: &str) -> R {
    let linux = f.root.join("esp/EFI/Linux");
    for name in esp(&f.root)? {
        if let Some(gen_) = name.strip_suffix(&format!("-{slot}+3.efi")) {
            fs::rename(
                linux.join(&name),
                linux.join(format!("{gen_}-{slot}+2-1.efi")),
            )?;
        }
    }
    fs::write(f.root.join("cmdline"), format!("medgate.slot={slot}\n"))?;
    fs::write(f.root.join("image-version"), format!("{version}\n"))?;
    Ok(())
}

fn ver(s: &str) -> Version {
    v(s)
}

#[test]
fn a_fresh_image_runs_its_own_version_in_slot_a() -> R {
    let (_f, b) = fake()?;
    let s = b.status()?;
    assert_eq!(
        (s.active, s.installed, s.probation),
        (Some(ver("0.1.0")), vec![], None)
    );
    assert_eq!(b.booted()?, Slot::A);
    Ok(())
}

#[test]
fn install_switch_reboot_on_probation_commit() -> R {
    let (f, mut b) = fake()?;
    let root = vec![b'R'; 40 << 10];
    install(
        &mut b,
        "0.2.0",
        &payload(&root, b"hashtree", b"new uki A", b"new uki B"),
        false,
    )??;
    let parts = f.root.join("by-partlabel");
    let written = fs::read(parts.join("root-B"))?;
    assert!(
        written[..root.len()] == root[..],
        "the root image is written"
    );
    assert!(
        written[root.len()..].iter().all(|&c| c == b'o'),
        "nothing beyond the image"
    );
    assert_eq!(&fs::read(parts.join("root-B-verity"))?[..8], b"hashtree");
    assert!(
        fs::read(parts.join("root-A"))?.iter().all(|&c| c == b'o'),
        "the booted slot is untouched"
    );
    assert_eq!(
        esp(&f.root)?,
        ["medgate-0-B+0-1.efi", "medgate-1-A.efi"],
        "installed: B's new UKI is in place but B is not picked until the switch"
    );
    assert_eq!(
        fs::read(f.root.join("esp/EFI/Linux/medgate-0-B+0-1.efi"))?,
        b"new uki B"
    );
    assert!(
        !f.root.join("state/uki-B.efi").exists(),
        "the staged UKI is removed"
    );
    let s = b.status()?;
    assert_eq!(
        (s.active, s.installed),
        (Some(ver("0.1.0")), vec![ver("0.2.0")])
    );
    assert!(matches!(
        b.switch(&ver("0.3.0")),
        Err(SlotError::NotInstalled(_))
    ));
    assert!(matches!(
        b.switch(&ver("0.1.0")),
        Err(SlotError::AlreadyActive(_))
    ));
    b.switch(&ver("0.2.0"))?;
    assert_eq!(
        esp(&f.root)?,
        ["medgate-1-A.efi", "medgate-2-B+3.efi"],
        "B next, 3 tries"
    );
    reboot_into(&f, "B", "0.2.0")?;
    let s = b.status()?;
    let p = Probation {
        trying: ver("0.2.0"),
        previous: ver("0.1.0"),
    };
    assert_eq!((s.active, s.probation), (Some(ver("0.2.0")), Some(p)));
    b.commit()?;
    assert_eq!(esp(&f.root)?, ["medgate-1-A.efi", "medgate-2-B.efi"]);
    let s = b.status()?;
    assert_eq!(
        (s.active, s.installed, s.probation),
        (Some(ver("0.2.0")), vec![ver("0.1.0")], None)
    );
    b.commit()?; // already good (the health gate's systemd-bless-boot may be first): fine
    Ok(())
}

#[test]
fn a_cut_or_bad_payload_leaves_nothing_new_bootable() -> R {
    let (f, mut b) = fake()?;
    let p = payload(&[b'R'; 4096], b"hash", b"uki A", b"uki B");
    let e = install(&mut b, "0.2.0", &p, true)?.expect_err("tampered");
    assert!(
        matches!(
            e,
            SlotError::Payload(BundleError::PayloadDigestMismatch { .. })
        ),
        "{e}"
    );
    assert_eq!(
        esp(&f.root)?,
        ["medgate-0-B+0-1.efi", "medgate-1-A.efi"],
        "B out of rotation"
    );
    assert_eq!(
        fs::read(f.root.join("esp/EFI/Linux/medgate-0-B+0-1.efi"))?,
        b"uki B 0.1.0",
        "no new UKI: the half-written root is never booted"
    );
    assert!(
        !f.root.join("state/uki-B.efi").exists(),
        "the staged UKI is gone"
    );
    let s = b.status()?;
    assert_eq!((s.active, s.installed), (Some(ver("0.1.0")), vec![]));
    assert!(matches!(
        b.switch(&ver("0.2.0")),
        Err(SlotError::NotInstalled(_))
    ));
    // Too large for the partition: refused before a byte is written.
    let before = fs::read(f.root.join("by-partlabel/root-B"))?;
    let big = payload(&vec![b'X'; 65 << 10], b"hash", b"a", b"b");
    let e = install(&mut b, "0.2.0", &big, false)?.expect_err("too big");
    assert!(
        e.to_string()
            .contains("root file system is 66560 bytes, 65536 fit"),
        "{e}"
    );
    assert!(
        fs::read(f.root.join("by-partlabel/root-B"))? == before,
        "nothing written"
    );
    // Not a root image at all.
    let e = install(&mut b, "0.2.0", &[0u8; 100], false)?.expect_err("not a root image");
    assert!(e.to_string().contains("is not a root image"), "{e}");
    // ... and the next good install works.
    install(&mut b, "0.2.0", &p, false)??;
    assert_eq!(b.status()?.installed, vec![ver("0.2.0")]);
    Ok(())
}

#[test]
fn rollback_takes_the_booted_slot_out_and_the_other_boots() -> R {
    let (f, mut b) = fake()?;
    install(
        &mut b,
        "0.2.0",
        &payload(&[b'R'; 4096], b"hash", b"uki A", b"uki B"),
        false,
    )??;
    b.switch(&ver("0.2.0"))?;
    reboot_into(&f, "B", "0.2.0")?;
    b.rollback()?;
    assert_eq!(esp(&f.root)?, ["medgate-1-A.efi", "medgate-2-B+0-2.efi"]);
    assert_eq!(b.esp_status()?.next, Some(Slot::A));
    assert!(
        matches!(b.commit(), Err(SlotError::NoProbation)),
        "a slot marked bad is not committed"
    );
    Ok(())
}

#[test]
fn without_a_slot_on_the_command_line_it_says_so() -> R {
    let (f, b) = fake()?;
    fs::write(f.root.join("cmdline"), "root=/dev/sda1 ro\n")?;
    let e = b.status().expect_err("not booted from a slot");
    assert!(
        e.to_string().contains("names no slot (medgate.slot=A|B)"),
        "{e}"
    );
    Ok(())
}

/// The backend through the root helper's file protocol (`os-image/lib/medgate-slot-apply`), with
/// a thread in place of the path unit: a whole install, switch and status, and a request the
/// helper refuses.
#[test]
fn through_the_root_helper() -> R {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (f, direct) = fake()?;
    drop(direct);
    let dir = f.root.join("state");
    let answers = f.root.join("answers");
    fs::create_dir_all(&dir)?;
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("../os-image/lib/medgate-slot-apply");
    let slot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../os-image/lib/medgate-slot");
    let stop = Arc::new(AtomicBool::new(false));
    let unit = {
        let (stop, dir, answers, esp) = (
            stop.clone(),
            dir.clone(),
            answers.clone(),
            f.root.join("esp"),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if dir.join("request").exists() {
                    let _ = std::process::Command::new(&helper)
                        .env("MEDGATE_SLOT_APPLY_DIR", &dir)
                        .env("MEDGATE_SLOT_APPLY_ANSWERS", &answers)
                        .env("MEDGATE_SLOT", &slot)
                        .env("MEDGATE_ESP", &esp)
                        .output();
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let mut b = AbBackend::new(
        AbPaths {
            partitions: f.root.join("by-partlabel"),
            cmdline: f.root.join("cmdline"),
            image_version: f.root.join("image-version"),
            state: dir.clone(),
        },
        SlotTool::Helper {
            dir: dir.clone(),
            answers,
            timeout: std::time::Duration::from_secs(20),
        },
    );
    let result = (|| -> R {
        install(
            &mut b,
            "0.2.0",
            &payload(&[b'R'; 4096], b"hash", b"uki A", b"uki B"),
            false,
        )??;
        assert_eq!(
            fs::read(f.root.join("esp/EFI/Linux/medgate-0-B+0-1.efi"))?,
            b"uki B"
        );
        b.switch(&ver("0.2.0"))?;
        assert_eq!(esp(&f.root)?, ["medgate-1-A.efi", "medgate-2-B+3.efi"]);
        assert_eq!(b.esp_status()?.next, Some(Slot::B));
        let e = b
            .slot_command(&["install-uki", "B", "/etc/passwd"])
            .expect_err("refused");
        assert!(e.to_string().contains("install-uki takes only"), "{e}");
        let e = b
            .slot_command(&["set-next", "B", "--tries", "0"])
            .expect_err("refused");
        assert!(
            e.to_string().contains("set-next needs A|B --tries 1-9"),
            "{e}"
        );
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = unit.join();
    result
}
