//! kill -9 against the directory slot backend, for real: a child process (this test binary,
//! re-run in child mode) installs or switches in a loop and is killed at varied moments; the
//! parent reopens the slot directory and checks that one complete version is in force, that a
//! switch never looks committed without a commit, and that the device can try again.

use medgate_bundle::Version;
use medgate_bundle::slot::{DirBackend, SlotBackend};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

const CHILD: &str = "MEDGATE_SLOT_KILL_CHILD";
const OLD: &[u8] = b"the old binaries";

fn v(s: &str) -> Version {
    s.parse().expect("version")
}

fn new_payload() -> Vec<u8> {
    (0..(4u32 << 20)).map(|i| i.to_le_bytes()[1]).collect()
}

/// The child: `install` writes 1.1.0 slowly and never finishes; `switch` flips between the
/// versions for ever. It writes `started` once under way.
fn child(mode: &str, root: &Path) -> R {
    let mut slots = DirBackend::open(root)?;
    std::fs::write(root.join("started"), b"")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    if mode == "install" {
        let mut inst = slots.begin_install(&v("1.1.0"))?;
        let chunk = vec![0xa5u8; 64 << 10];
        while Instant::now() < deadline {
            inst.write(&chunk)?;
            std::thread::sleep(Duration::from_millis(1));
        }
        return Ok(());
    }
    while Instant::now() < deadline {
        if slots.status()?.probation.is_some() {
            slots.rollback()?;
        } else {
            slots.switch(&v("1.1.0"))?;
        }
    }
    Ok(())
}

fn spawn(test: &str, mode: &str, root: &Path) -> R<std::process::Child> {
    let _ = std::fs::remove_file(root.join("started"));
    let child = Command::new(std::env::current_exe()?)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{mode}:{}", root.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let waited = Instant::now();
    while !root.join("started").exists() {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the child never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(child)
}

fn run_child_if_asked() -> Option<R> {
    let arg = std::env::var(CHILD).ok()?;
    let (mode, root) = arg.split_once(':')?;
    Some(child(mode, Path::new(root)))
}

/// 1.0.0 in force, committed.
fn base(root: &Path) -> R<DirBackend> {
    let mut slots = DirBackend::open(root)?;
    let mut inst = slots.begin_install(&v("1.0.0"))?;
    inst.write(OLD)?;
    slots.finish_install(inst)?;
    slots.switch(&v("1.0.0"))?;
    Ok(slots)
}

#[test]
fn kill_9_during_install_leaves_the_old_version() -> R {
    if let Some(r) = run_child_if_asked() {
        return r;
    }
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    drop(base(root)?);
    for delay_ms in [0, 5, 30] {
        let mut c = spawn(
            "kill_9_during_install_leaves_the_old_version",
            "install",
            root,
        )?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.kill()?; // SIGKILL
        c.wait()?;
        let mut slots = DirBackend::open(root)?;
        let s = slots.status()?;
        assert_eq!(
            (s.active, s.installed, s.probation),
            (Some(v("1.0.0")), vec![], None)
        );
        assert_eq!(std::fs::read(root.join("current/payload"))?, OLD);
        assert_eq!(std::fs::read_dir(root.join("staging"))?.count(), 0);
        // The device can try again.
        let mut inst = slots.begin_install(&v("1.1.0"))?;
        inst.write(&new_payload())?;
        slots.finish_install(inst)?;
        assert_eq!(slots.status()?.installed, vec![v("1.1.0")]);
        std::fs::remove_dir_all(slots.version_dir(&v("1.1.0")))?;
    }
    Ok(())
}

#[test]
fn kill_9_during_switch_and_rollback_leaves_one_version_in_force() -> R {
    if let Some(r) = run_child_if_asked() {
        return r;
    }
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let mut slots = base(root)?;
    let new = new_payload();
    let mut inst = slots.begin_install(&v("1.1.0"))?;
    inst.write(&new)?;
    slots.finish_install(inst)?;
    drop(slots);
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..24u64 {
        let mut c = spawn(
            "kill_9_during_switch_and_rollback_leaves_one_version_in_force",
            "switch",
            root,
        )?;
        std::thread::sleep(Duration::from_millis(round % 8 * 3));
        c.kill()?;
        c.wait()?;
        let s = DirBackend::open(root)?.status()?;
        let active = s.active.clone().ok_or("a version in force")?;
        let payload = std::fs::read(root.join("current/payload"))?;
        match (active.to_string().as_str(), &s.probation) {
            ("1.0.0", None) => assert_eq!(payload, OLD),
            ("1.1.0", Some(p)) => {
                assert_eq!((&p.trying, &p.previous), (&v("1.1.0"), &v("1.0.0")));
                assert_eq!(payload, new);
            }
            other => panic!("round {round}: inconsistent slots after kill -9: {other:?}"),
        }
        seen.insert(active.to_string());
    }
    eprintln!("versions in force after the kills: {seen:?}");
    Ok(())
}
