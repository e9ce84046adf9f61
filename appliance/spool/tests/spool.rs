//! The spool's promises, on a real filesystem.

use medgate_dicom::part10::{FileMeta, encode_meta};
use medgate_spool::{Admission, ObjectRecord, Spool, SpoolConfig, WorkflowStore};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

fn cfg(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        data_dir: dir.to_path_buf(),
        destinations: vec!["archive".into(), "web".into()],
        high_watermark_percent: 99.9,
        low_watermark_percent: 99.0,
        max_bytes: 0,
        retention: Duration::from_secs(3600),
        segment_bytes: 1 << 20,
        warm_bytes: 4 << 20,
    }
}

/// Whether object `id` is in the spool with its bytes where the spool says they are.
fn present(spool: &Spool, id: u64) -> bool {
    spool
        .locate_id(id)
        .expect("locate")
        .is_some_and(|l| l.path.exists())
}

/// The bytes of object `id` as the spool serves them.
fn bytes_of(spool: &Spool, id: u64) -> Vec<u8> {
    let loc = spool.locate_id(id).expect("locate").expect("present");
    let mut out = Vec::new();
    loc.open()
        .expect("open")
        .read_to_end(&mut out)
        .expect("read");
    out
}

fn dataset(instance: &str) -> Vec<u8> {
    let mut d = Vec::new();
    let mut el = |g: u16, e: u16, vr: &[u8; 2], v: &[u8]| {
        d.extend_from_slice(&g.to_le_bytes());
        d.extend_from_slice(&e.to_le_bytes());
        d.extend_from_slice(vr);
        d.extend_from_slice(&medgate_dicom::length::len16(v.len()).to_le_bytes());
        d.extend_from_slice(v);
    };
    el(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0");
    let mut inst = instance.as_bytes().to_vec();
    if inst.len() % 2 == 1 {
        inst.push(0);
    }
    el(0x0008, 0x0018, b"UI", &inst);
    el(0x0008, 0x0060, b"CS", b"OT");
    d
}

fn store(spool: &Spool, instance: &str) -> ObjectRecord {
    let mut bytes = encode_meta(&meta(instance));
    bytes.extend_from_slice(&dataset(instance));
    commit_bytes(spool, instance, &bytes)
}

fn meta(instance: &str) -> FileMeta {
    FileMeta {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
        sop_instance_uid: instance.into(),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        source_ae: Some("MODALITY".into()),
    }
}

/// Writes `bytes` in pieces, as PDVs arrive, and commits them.
fn commit_bytes(spool: &Spool, instance: &str, bytes: &[u8]) -> ObjectRecord {
    let mut temp = spool.begin().expect("begin");
    for chunk in bytes.chunks(16 * 1024) {
        temp.write_all(chunk).expect("write");
    }
    let m = meta(instance);
    let rec = ObjectRecord::incoming(
        &m.sop_class_uid,
        &m.sop_instance_uid,
        &m.transfer_syntax,
        "MODALITY",
        "MEDGATE",
        Default::default(),
    );
    spool.commit(temp, rec).expect("commit")
}

#[test]
fn commit_confirm_and_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, report) = Spool::open(cfg(dir.path())).expect("open");
    assert_eq!(report.objects, 0);
    let a = store(&spool, "1.2.3.1");
    let b = store(&spool, "1.2.3.2");
    assert!(b.id > a.id);
    assert!(present(&spool, a.id));
    assert_eq!(
        spool.pending_for("archive").expect("pending"),
        vec![a.id, b.id]
    );
    assert!(!spool.confirm(a.id, "archive").expect("confirm"));
    assert!(spool.confirm(a.id, "web").expect("confirm"));
    // Released but within retention and below the watermark: kept.
    assert_eq!(spool.evict().expect("evict"), 0);
    assert!(present(&spool, a.id));
    assert_eq!(spool.usage().objects, 2);
}

#[test]
fn unconfirmed_objects_are_never_evicted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = cfg(dir.path());
    c.retention = Duration::ZERO;
    c.max_bytes = 1; // always above every watermark
    c.high_watermark_percent = 50.0;
    c.low_watermark_percent = 10.0;
    let (spool, _) = Spool::open(c).expect("open");
    let a = store(&spool, "1.2.3.1");
    let b = store(&spool, "1.2.3.2");
    assert!(matches!(spool.admission(), Admission::Full(_)));
    spool.confirm(a.id, "archive").expect("confirm");
    spool.confirm(a.id, "web").expect("confirm");
    spool.confirm(b.id, "archive").expect("confirm");
    assert_eq!(spool.evict().expect("evict"), 1);
    assert!(!present(&spool, a.id));
    assert!(present(&spool, b.id), "b is not confirmed by web");
    assert_eq!(spool.usage().objects, 1);
}

#[test]
fn reopen_keeps_state_and_removes_temp_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = {
        let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
        let a = store(&spool, "1.2.3.1");
        let b = store(&spool, "1.2.3.2");
        spool.confirm(a.id, "archive").expect("confirm");
        spool
            .quarantine(b.id, "web", "0122 SOP class not supported")
            .expect("quarantine");
        // An object whose bytes were still arriving when the power went.
        std::fs::write(
            dir.path().join("spool/tmp/00000000000000ff.part"),
            b"partial",
        )
        .expect("write");
        spool.flush().expect("flush");
        (a, b)
    };
    let (spool, report) = Spool::open(cfg(dir.path())).expect("reopen");
    assert_eq!(report.objects, 2);
    assert_eq!(report.removed_temp_files, 1);
    assert_eq!(report.reindexed, 0);
    assert_eq!(spool.pending_for("archive").expect("p"), vec![b.id]);
    assert_eq!(spool.pending_for("web").expect("p"), vec![a.id]);
    let q = spool.quarantined().expect("q");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].reason, "0122 SOP class not supported");
    assert_eq!(
        spool.release_quarantine(None, None).expect("retry"),
        vec![(b.id, "web".to_string())]
    );
    assert_eq!(spool.pending_for("web").expect("p"), vec![a.id, b.id]);
    // New ids stay above the old ones.
    assert!(store(&spool, "1.2.3.3").id > b.id);
}

#[test]
fn lost_index_is_rebuilt_from_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ids: Vec<u64> = {
        let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
        let ids = (0..5)
            .map(|i| store(&spool, &format!("1.2.3.{i}")).id)
            .collect();
        spool.flush().expect("flush");
        ids
    };
    // Corrupt the index beyond repair.
    let index = dir.path().join("index");
    std::fs::remove_dir_all(&index).expect("rm index");
    std::fs::write(&index, b"not a directory").expect("garbage");
    let (spool, report) = Spool::open(cfg(dir.path())).expect("reopen");
    assert!(report.index_rebuilt);
    assert_eq!(report.reindexed, 5);
    assert_eq!(spool.pending_for("archive").expect("p"), ids);
    let rec = spool.get(ids[2]).expect("get").expect("record");
    assert_eq!(rec.sop_instance_uid, "1.2.3.2");
    assert_eq!(rec.calling_ae, "MODALITY");
    assert_eq!(rec.summary.modality.as_deref(), Some("OT"));
}

#[test]
fn damaged_files_are_moved_aside_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SpoolConfig {
        segment_bytes: 0,
        ..cfg(dir.path())
    };
    let id = {
        let (spool, _) = Spool::open(files.clone()).expect("open");
        let a = store(&spool, "1.2.3.1");
        spool.flush().expect("flush");
        std::fs::write(spool.object_path(a.id), b"garbage").expect("damage");
        a.id
    };
    std::fs::remove_dir_all(dir.path().join("index")).expect("rm index");
    let (spool, report) = Spool::open(files).expect("reopen");
    assert_eq!(report.damaged_files, 1);
    assert!(!spool.object_path(id).exists());
    assert!(
        dir.path()
            .join("spool/damaged")
            .join(format!("{id:016x}.dcm"))
            .exists()
    );
}

#[test]
fn purge_quarantine_deletes_only_what_no_destination_still_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
    let a = store(&spool, "1.2.3.1");
    let b = store(&spool, "1.2.3.2");
    let c = store(&spool, "1.2.3.3");
    // a: refused by web, confirmed by archive -> deleted by the purge.
    spool.confirm(a.id, "archive").expect("confirm");
    spool.quarantine(a.id, "web", "0122").expect("quarantine");
    // b: refused by web, archive still pending -> kept, web gives up on it.
    spool.quarantine(b.id, "web", "0122").expect("quarantine");
    // c: not quarantined at all -> untouched.
    let (objects, bytes) = spool.purge_quarantine(None).expect("purge");
    assert_eq!((objects, bytes), (1, a.size));
    assert!(!present(&spool, a.id));
    assert!(present(&spool, b.id), "archive still needs b");
    assert!(spool.quarantined().expect("q").is_empty());
    assert_eq!(spool.pending_for("web").expect("p"), vec![c.id]);
    assert_eq!(spool.pending_for("archive").expect("p"), vec![b.id, c.id]);
    // Received after the cut-off: kept.
    spool.quarantine(c.id, "web", "0122").expect("quarantine");
    assert_eq!(
        spool
            .purge_quarantine(Some(c.received_at_ms))
            .expect("purge"),
        (0, 0)
    );
    assert_eq!(spool.quarantined().expect("q").len(), 1);
}

#[test]
fn routed_objects_wait_only_for_their_destinations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
    let mut temp = spool.begin().expect("begin");
    let mut bytes = encode_meta(&FileMeta {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
        sop_instance_uid: "1.2.3.9".into(),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        source_ae: None,
    });
    bytes.extend_from_slice(&dataset("1.2.3.9"));
    temp.write_all(&bytes).expect("write");
    let rec = store(&spool, "1.2.3.8");
    let to: std::collections::BTreeSet<String> = ["web".to_string()].into();
    let routed = spool.commit_to(temp, rec, Some(&to)).expect("commit");
    assert_eq!(routed.pending, to);
    assert!(
        !spool
            .pending_for("archive")
            .expect("pending")
            .contains(&routed.id)
    );
    // Released as soon as the one destination it was routed to confirmed it.
    assert!(spool.confirm(routed.id, "web").expect("confirm"));
    // A destination that is not configured never swallows an object: it goes everywhere.
    let mut temp = spool.begin().expect("begin");
    temp.write_all(&bytes).expect("write");
    let nowhere: std::collections::BTreeSet<String> = ["gone".to_string()].into();
    let rec = spool.get(routed.id).expect("get").expect("record");
    let everywhere = spool.commit_to(temp, rec, Some(&nowhere)).expect("commit");
    assert_eq!(everywhere.pending.len(), 2);
}

#[test]
fn reindexed_files_are_routed_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
        let a = store(&spool, "1.2.3.1");
        spool.flush().expect("flush");
        a.id
    };
    std::fs::remove_dir_all(dir.path().join("index")).expect("drop the index");
    let router: medgate_spool::Router = std::sync::Arc::new(|_path, rec| {
        (rec.summary.modality.as_deref() == Some("OT")).then(|| ["archive".to_string()].into())
    });
    let (spool, report) = Spool::open_with_router(cfg(dir.path()), Some(router)).expect("open");
    assert_eq!(report.reindexed, 1);
    let rec = spool.get(id).expect("get").expect("record");
    assert_eq!(rec.pending, ["archive".to_string()].into());
}

#[test]
fn lookup_by_sop_instance_and_service_state_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
        let a = store(&spool, "1.2.3.1");
        store(&spool, "1.2.3.2");
        let wanted = ["1.2.3.1".to_string(), "9.9.9".to_string()].into();
        let found = spool.find_by_sop_instance(&wanted).expect("scan");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, a.id);
        assert!(
            spool
                .find_by_sop_instance(&Default::default())
                .expect("empty")
                .is_empty()
        );
        let (state, _) = WorkflowStore::open(dir.path()).expect("workflow store");
        let t = state.tree("commitment").expect("tree");
        t.insert(b"txn", b"pending").expect("insert");
        t.flush().expect("flush");
        spool.flush().expect("flush");
    }
    let (_spool, _) = Spool::open(cfg(dir.path())).expect("reopen");
    let (state, _) = WorkflowStore::open(dir.path()).expect("workflow store");
    let t = state.tree("commitment").expect("tree");
    assert_eq!(
        t.get(b"txn").expect("get").as_deref(),
        Some(&b"pending"[..])
    );
}

#[test]
fn a_peer_keeps_its_last_outcome_and_the_modalities_it_sent() {
    use medgate_dicom::negotiate::{Knock, Offer};
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
    let knock = |rejection: Option<&str>| Knock {
        calling_ae: "CT1".into(),
        called_ae: "MEDGATE".into(),
        offers: vec![Offer {
            abstract_syntax: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
            accepted: None,
        }],
        rejection: rejection.map(str::to_string),
    };
    // Not known yet: nothing to add a modality to.
    assert_eq!(
        spool
            .record_peer_modality("CT1", "10.0.0.7", "CT", 16)
            .expect("modality"),
        None
    );
    let rec = spool
        .record_knock(
            &knock(Some("calling AE not allowed")),
            "10.0.0.7",
            Some("calling_ae_not_allowed"),
        )
        .expect("knock");
    assert_eq!(rec.last_accepted, Some(false));
    assert_eq!(rec.last_refusal.as_deref(), Some("calling_ae_not_allowed"));
    assert_eq!(rec.last_called_ae.as_deref(), Some("MEDGATE"));
    let rec = spool
        .record_knock(&knock(None), "10.0.0.7", None)
        .expect("knock");
    assert_eq!((rec.last_accepted, rec.last_refusal), (Some(true), None));
    let added = spool
        .record_peer_modality("CT1", "10.0.0.7", "CT", 16)
        .expect("modality")
        .expect("new code");
    assert!(added.modalities.contains("CT"));
    assert!(added.last_seen_ms >= rec.last_seen_ms);
    assert_eq!(
        spool
            .record_peer_modality("CT1", "10.0.0.7", "CT", 16)
            .expect("modality"),
        None,
        "already known"
    );
    assert_eq!(
        spool
            .record_peer_modality("CT1", "10.0.0.7", "SR", 1)
            .expect("modality"),
        None,
        "bounded"
    );
    drop(spool);
    let (spool, _) = Spool::open(cfg(dir.path())).expect("reopen");
    let peers = spool.peers().expect("peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].modalities.iter().collect::<Vec<_>>(), ["CT"]);
    assert_eq!(peers[0].accepted, 1);
    assert_eq!(peers[0].rejected, 1);
}

#[test]
fn admission_evicts_confirmed_objects_before_refusing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = {
        let (probe, _) = Spool::open(cfg(&dir.path().join("probe"))).expect("open");
        store(&probe, "1.2.3.9").size
    };
    let mut c = cfg(&dir.path().join("spool"));
    // Two objects fill the cap (100 % >= 99 %); the filesystem's own use stays below 99 %.
    c.max_bytes = 2 * size;
    c.high_watermark_percent = 99.0;
    c.low_watermark_percent = 10.0;
    c.retention = Duration::from_secs(3600); // long: only the watermark makes room
    let (spool, _) = Spool::open(c).expect("open");
    let a = store(&spool, "1.2.3.1");
    let b = store(&spool, "1.2.3.2");
    // Full, nothing confirmed: refused.
    assert!(matches!(spool.admission(), Admission::Full(_)));
    assert_eq!(spool.usage().objects, 2);
    for id in [a.id, b.id] {
        spool.confirm(id, "archive").expect("confirm");
        spool.confirm(id, "web").expect("confirm");
    }
    // Confirmed objects kept only for retention make room at once, oldest first, no more than
    // needed — without waiting for the housekeeping timer.
    assert_eq!(spool.admission(), Admission::Accept);
    assert!(!present(&spool, a.id), "the oldest was evicted");
    assert!(present(&spool, b.id), "one eviction was enough");
    assert_eq!(spool.usage().objects, 1);
}

#[test]
fn an_index_held_by_another_handle_is_not_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
    let a = store(&spool, "1.2.3.1");
    // A second open while the first holds sled's lock: refused, nothing moved aside.
    let err = Spool::open(cfg(dir.path())).expect_err("second open");
    assert!(matches!(err, medgate_spool::SpoolError::Locked(_)), "{err}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(!names.iter().any(|n| n.contains("broken")), "{names:?}");
    assert_eq!(spool.get(a.id).expect("get").map(|r| r.id), Some(a.id));
}

#[test]
fn workflow_state_survives_an_index_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
        let (store, report) = WorkflowStore::open(dir.path()).expect("store");
        assert_eq!(report, Default::default());
        store
            .tree("commitment")
            .expect("tree")
            .insert("2.25.1", &b"pending"[..])
            .expect("insert");
        store.flush().expect("flush");
        spool.flush().expect("flush");
    }
    // Damage the index beyond repair: it is rebuilt from the files.
    let index = dir.path().join("index");
    std::fs::remove_dir_all(&index).expect("rm index");
    std::fs::write(&index, b"not a directory").expect("garbage");
    let (spool, report) = Spool::open(cfg(dir.path())).expect("reopen");
    assert!(report.index_rebuilt);
    let (store, _) = WorkflowStore::open(dir.path()).expect("store");
    assert_eq!(store.migrate_from(&spool).expect("migrate"), 0);
    let tree = store.tree("commitment").expect("tree");
    assert_eq!(
        tree.get("2.25.1").expect("get").as_deref(),
        Some(&b"pending"[..])
    );
}

#[test]
fn workflow_state_of_an_earlier_version_is_migrated_once_from_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // What an earlier version left: its state in `state:<name>` trees of the index.
        let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
        drop(spool);
        let db = sled::open(dir.path().join("index")).expect("index");
        let old = db.open_tree("state:commitment").expect("tree");
        old.insert("2.25.1", &b"old-1"[..]).expect("insert");
        old.insert("2.25.2", &b"old-2"[..]).expect("insert");
        db.open_tree("state:worklist")
            .expect("tree")
            .insert("q", &b"cached"[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
    let (store, _) = WorkflowStore::open(dir.path()).expect("store");
    // An entry the store has already is the newer one: never overwritten.
    store
        .tree("commitment")
        .expect("tree")
        .insert("2.25.2", &b"new-2"[..])
        .expect("insert");
    assert_eq!(store.migrate_from(&spool).expect("migrate"), 2);
    let get = |tree: &str, k: &str| {
        store
            .tree(tree)
            .expect("tree")
            .get(k)
            .expect("get")
            .map(|v| v.to_vec())
    };
    assert_eq!(get("commitment", "2.25.1"), Some(b"old-1".to_vec()));
    assert_eq!(get("commitment", "2.25.2"), Some(b"new-2".to_vec()));
    assert_eq!(get("worklist", "q"), Some(b"cached".to_vec()));
    // The old trees are gone from the index: the migration happens once.
    assert!(spool.legacy_state().expect("legacy").is_empty());
    store
        .tree("commitment")
        .expect("tree")
        .remove("2.25.1")
        .expect("remove");
    assert_eq!(store.migrate_from(&spool).expect("again"), 0);
    assert_eq!(get("commitment", "2.25.1"), None);
    drop((spool, store));
    // And it lasts: both reopen with the same content.
    let (spool, _) = Spool::open(cfg(dir.path())).expect("reopen");
    assert!(spool.legacy_state().expect("legacy").is_empty());
    let (store, _) = WorkflowStore::open(dir.path()).expect("store");
    assert_eq!(
        store
            .tree("worklist")
            .expect("tree")
            .get("q")
            .expect("get")
            .as_deref(),
        Some(&b"cached"[..])
    );
}

/// Stores an object of about `len` bytes (the data set padded with a private tag).
fn store_sized(spool: &Spool, instance: &str, len: usize) -> (ObjectRecord, Vec<u8>) {
    let mut bytes = encode_meta(&meta(instance));
    bytes.extend_from_slice(&dataset(instance));
    // (0009,0010) OB with an explicit 32-bit length: filler of the size asked for.
    let fill = len.saturating_sub(bytes.len() + 12) & !1;
    bytes.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0]);
    bytes.extend_from_slice(&u32::try_from(fill).expect("fits").to_le_bytes());
    bytes.extend((0..fill).map(|i| u8::try_from(i % 251).unwrap_or(0)));
    (commit_bytes(spool, instance, &bytes), bytes)
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("spool/segments"))
        .expect("segments dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").blocks() * 512
}

#[test]
fn objects_go_to_segments_and_large_ones_to_files_byte_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
    let (small, small_bytes) = store_sized(&spool, "1.2.3.1", 100_000);
    let (big, big_bytes) = store_sized(&spool, "1.2.3.2", 3 << 20); // > one 1 MiB segment
    let (after, after_bytes) = store_sized(&spool, "1.2.3.3", 200_000);
    assert!(
        small.segment.is_some(),
        "a small object is a record of a segment"
    );
    assert!(
        big.segment.is_none(),
        "an object larger than a segment spills to its own file"
    );
    assert!(after.segment.is_some(), "the lane goes on after a spill");
    assert_eq!(
        small.segment.map(|s| s.segment),
        after.segment.map(|s| s.segment)
    );
    assert_eq!(bytes_of(&spool, small.id), small_bytes);
    assert_eq!(bytes_of(&spool, big.id), big_bytes);
    assert_eq!(bytes_of(&spool, after.id), after_bytes);
    assert_eq!(small.size, small_bytes.len() as u64);
    assert!(
        std::fs::read_dir(dir.path().join("spool/tmp"))
            .expect("tmp")
            .next()
            .is_none()
    );
    // And after a restart, from the index and from a rebuilt one alike.
    drop(spool);
    for rebuild in [false, true] {
        if rebuild {
            std::fs::remove_dir_all(dir.path().join("index")).expect("rm index");
        }
        let (spool, report) = Spool::open(cfg(dir.path())).expect("reopen");
        assert_eq!(report.objects, 3, "rebuild={rebuild}");
        assert_eq!(report.reindexed, if rebuild { 3 } else { 0 });
        assert_eq!(bytes_of(&spool, small.id), small_bytes);
        assert_eq!(bytes_of(&spool, big.id), big_bytes);
        assert_eq!(bytes_of(&spool, after.id), after_bytes);
        let rec = spool.get(after.id).expect("get").expect("rec");
        assert_eq!(rec.sop_instance_uid, "1.2.3.3");
    }
}

#[test]
fn deleted_records_give_their_space_back_and_dead_segments_recycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = cfg(dir.path());
    c.retention = Duration::ZERO;
    let (spool, _) = Spool::open(c.clone()).expect("open");
    // ~3 segments' worth of 200 KB objects; the archive confirms, web refuses the first (kept).
    let recs: Vec<ObjectRecord> = (0..12)
        .map(|i| store_sized(&spool, &format!("1.2.3.{i}"), 200_000).0)
        .collect();
    let first_seg = recs[0].segment.expect("in a segment").segment;
    let seg_path = segment_files(dir.path())
        .into_iter()
        .find(|p| p.file_stem().and_then(|s| s.to_str()) == Some(&format!("{first_seg:08x}")))
        .expect("first segment file");
    let before = allocated(&seg_path);
    for r in &recs {
        spool.confirm(r.id, "archive").expect("confirm");
        if r.id != recs[0].id {
            spool.confirm(r.id, "web").expect("confirm");
        }
    }
    spool
        .quarantine(recs[0].id, "web", "0122")
        .expect("quarantine");
    let evicted = spool.evict().expect("evict");
    assert_eq!(
        evicted, 11,
        "every confirmed object, never the quarantined one"
    );
    assert!(present(&spool, recs[0].id));
    let after = allocated(&seg_path);
    assert!(
        after + 400_000 < before,
        "the pinned segment gave the deleted records' bytes back: {before} -> {after}"
    );
    // A restart: the dead records stay dead, the quarantined one stays served.
    drop(spool);
    let (spool, report) = Spool::open(c.clone()).expect("reopen");
    assert_eq!(report.objects, 1);
    assert_eq!(report.torn_records, 0);
    assert!(present(&spool, recs[0].id));
    // Once it goes too, every segment is recycled: new objects reuse the same files.
    spool.purge_quarantine(None).expect("purge");
    let files_before: Vec<_> = segment_files(dir.path());
    for i in 0..12 {
        store_sized(&spool, &format!("1.2.4.{i}"), 200_000);
    }
    std::thread::sleep(Duration::from_millis(300));
    let files_after: Vec<_> = segment_files(dir.path());
    assert!(
        files_after.len() <= files_before.len() + 1,
        "segments are reused, not made anew: {} -> {}",
        files_before.len(),
        files_after.len()
    );
}

#[test]
fn a_spool_of_files_from_an_earlier_version_is_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = SpoolConfig {
        segment_bytes: 0,
        ..cfg(dir.path())
    };
    let (a, a_bytes) = {
        let (spool, _) = Spool::open(old).expect("open the old way");
        let (a, bytes) = store_sized(&spool, "1.2.3.1", 50_000);
        assert!(a.segment.is_none());
        spool.flush().expect("flush");
        (a, bytes)
    };
    let (spool, report) = Spool::open(cfg(dir.path())).expect("open with segments");
    assert_eq!(report.objects, 1);
    assert_eq!(bytes_of(&spool, a.id), a_bytes);
    assert_eq!(spool.pending_for("archive").expect("p"), vec![a.id]);
    let (b, _) = store_sized(&spool, "1.2.3.2", 50_000);
    assert!(b.segment.is_some());
    spool.confirm(a.id, "archive").expect("c");
    spool.confirm(a.id, "web").expect("c");
    let mut c = cfg(dir.path());
    c.retention = Duration::ZERO;
    drop(spool);
    let (spool, _) = Spool::open(c).expect("reopen");
    assert_eq!(spool.evict().expect("evict"), 1);
    assert!(
        !spool.object_path(a.id).exists(),
        "the old file is removed once released"
    );
}

/// `spool.segment_mib` changed on a running site: segments of the old size are still read and
/// evicted, new ones have the new size; with 0 new objects go to files of their own, and back.
#[test]
fn changing_the_segment_size_or_going_to_files_keeps_every_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sized = |segment_bytes: u64| SpoolConfig {
        segment_bytes,
        ..cfg(dir.path())
    };
    let mut kept: Vec<(ObjectRecord, Vec<u8>)> = Vec::new();
    for (i, segment_bytes) in [1u64 << 20, 2 << 20, 0, 1 << 20].into_iter().enumerate() {
        let (spool, report) = Spool::open(sized(segment_bytes)).expect("open");
        assert_eq!(
            report.objects,
            kept.len() as u64,
            "segment_bytes={segment_bytes}"
        );
        for (rec, bytes) in &kept {
            assert_eq!(
                &bytes_of(&spool, rec.id),
                bytes,
                "segment_bytes={segment_bytes}"
            );
        }
        // Past the segments made before (ready and warm ones of 1 MiB, three objects each).
        let n = if segment_bytes == 2 << 20 { 16 } else { 1 };
        for j in 0..n {
            let (rec, bytes) = store_sized(&spool, &format!("1.2.3.{i}.{j}"), 300_000);
            if segment_bytes == 0 {
                assert!(rec.segment.is_none(), "segment_mib = 0: a file of its own");
            }
            kept.push((rec, bytes));
        }
        if segment_bytes == 2 << 20 {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !segment_files(dir.path())
                .iter()
                .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == 2 << 20))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no segment of the new size was made"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                kept.iter().any(|(r, _)| r.segment.is_some()),
                "objects still go to segments"
            );
        }
        spool.flush().expect("flush");
    }
    // Every one released and evicted, whichever way it was stored.
    let mut c = sized(1 << 20);
    c.retention = Duration::ZERO;
    let (spool, _) = Spool::open(c).expect("reopen");
    for (rec, _) in &kept {
        spool.confirm(rec.id, "archive").expect("c");
        spool.confirm(rec.id, "web").expect("c");
    }
    assert_eq!(spool.evict().expect("evict"), kept.len() as u64);
    for (rec, _) in &kept {
        assert!(!present(&spool, rec.id));
    }
}

/// A kill -9 or power cut while an object is being committed leaves its record torn: any prefix
/// of its bytes may be on disk, with or without its header. Whatever the offset, every record
/// acknowledged before it is served byte for byte, the torn one never.
#[test]
fn torn_writes_at_random_offsets_are_cut_and_never_served() {
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..24 {
        let dir = tempfile::tempdir().expect("tempdir");
        let lagging_index = dir.path().join("index.before");
        let (acked, torn) = {
            let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
            let acked: Vec<(ObjectRecord, Vec<u8>)> = (0..4)
                .map(|i| store_sized(&spool, &format!("1.2.3.{i}"), rng.usize(2_000..150_000)))
                .collect();
            spool.flush().expect("flush");
            copy_dir(&dir.path().join("index"), &lagging_index);
            let torn = store_sized(&spool, "1.2.3.99", rng.usize(2_000..150_000)).0;
            (acked, torn)
        };
        let slot = torn.segment.expect("in a segment");
        let seg = dir
            .path()
            .join(format!("spool/segments/{:08x}.seg", slot.segment));
        // Bytes from `cut` on never reached the disk: the file holds what was there before
        // (zeros of a fresh segment), or ends there.
        let end = slot.offset + 4096 + torn.size;
        let cut = rng.u64(slot.offset..end);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open segment");
        if round % 3 == 0 {
            f.set_len(cut).expect("truncate");
        } else {
            use std::os::unix::fs::FileExt;
            let zeros = vec![0u8; usize::try_from(end - cut).expect("fits")];
            f.write_all_at(&zeros, cut).expect("tear");
        }
        drop(f);
        // The index either lags (the torn record's entry never written) or is gone.
        std::fs::remove_dir_all(dir.path().join("index")).expect("rm index");
        if round % 2 == 0 {
            std::fs::rename(&lagging_index, dir.path().join("index")).expect("lagging index");
        }
        let (spool, report) = Spool::open(cfg(dir.path())).expect("reopen");
        assert_eq!(
            report.objects, 4,
            "round {round}: cut at {cut} of {}..{end}",
            slot.offset
        );
        assert!(
            spool.get(torn.id).expect("get").is_none(),
            "round {round}: the torn record is not served"
        );
        for (rec, bytes) in &acked {
            assert_eq!(
                &bytes_of(&spool, rec.id),
                bytes,
                "round {round}: acknowledged {} intact",
                rec.sop_instance_uid
            );
        }
        // Appending goes on, and the next restart agrees.
        let (next, next_bytes) = store_sized(&spool, "1.2.3.100", 30_000);
        drop(spool);
        let (spool, report) = Spool::open(cfg(dir.path())).expect("reopen again");
        assert_eq!(report.objects, 5, "round {round}");
        assert_eq!(bytes_of(&spool, next.id), next_bytes);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}
