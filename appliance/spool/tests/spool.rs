//! The spool's promises, on a real filesystem.

use medgate_dicom::part10::{FileMeta, encode_meta};
use medgate_spool::{Admission, ObjectRecord, Spool, SpoolConfig, WorkflowStore};
use std::io::Write;
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
    }
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
    let temp = spool.begin();
    let meta = FileMeta {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
        sop_instance_uid: instance.into(),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        source_ae: Some("MODALITY".into()),
    };
    let mut bytes = encode_meta(&meta);
    bytes.extend_from_slice(&dataset(instance));
    let mut f = std::fs::File::create(&temp.path).expect("create");
    f.write_all(&bytes).expect("write");
    let rec = ObjectRecord {
        id: 0,
        sop_class_uid: meta.sop_class_uid,
        sop_instance_uid: meta.sop_instance_uid,
        transfer_syntax: meta.transfer_syntax,
        calling_ae: "MODALITY".into(),
        called_ae: "MEDGATE".into(),
        size: bytes.len() as u64,
        received_at_ms: 0,
        summary: Default::default(),
        pending: Default::default(),
        confirmed: Default::default(),
        quarantined: Default::default(),
    };
    spool.commit(temp, f, rec).expect("commit")
}

#[test]
fn commit_confirm_and_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, report) = Spool::open(cfg(dir.path())).expect("open");
    assert_eq!(report.objects, 0);
    let a = store(&spool, "1.2.3.1");
    let b = store(&spool, "1.2.3.2");
    assert!(b.id > a.id);
    assert!(spool.object_path(a.id).exists());
    assert_eq!(
        spool.pending_for("archive").expect("pending"),
        vec![a.id, b.id]
    );
    assert!(!spool.confirm(a.id, "archive").expect("confirm"));
    assert!(spool.confirm(a.id, "web").expect("confirm"));
    // Released but within retention and below the watermark: kept.
    assert_eq!(spool.evict().expect("evict"), 0);
    assert!(spool.object_path(a.id).exists());
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
    assert!(!spool.object_path(a.id).exists());
    assert!(
        spool.object_path(b.id).exists(),
        "b is not confirmed by web"
    );
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
        let t = spool.begin();
        std::fs::write(&t.path, b"partial").expect("write");
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
    let id = {
        let (spool, _) = Spool::open(cfg(dir.path())).expect("open");
        let a = store(&spool, "1.2.3.1");
        spool.flush().expect("flush");
        std::fs::write(spool.object_path(a.id), b"garbage").expect("damage");
        a.id
    };
    std::fs::remove_dir_all(dir.path().join("index")).expect("rm index");
    let (spool, report) = Spool::open(cfg(dir.path())).expect("reopen");
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
    assert!(!spool.object_path(a.id).exists());
    assert!(spool.object_path(b.id).exists(), "archive still needs b");
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
    let temp = spool.begin();
    let mut bytes = encode_meta(&FileMeta {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
        sop_instance_uid: "1.2.3.9".into(),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        source_ae: None,
    });
    bytes.extend_from_slice(&dataset("1.2.3.9"));
    let mut f = std::fs::File::create(&temp.path).expect("create");
    f.write_all(&bytes).expect("write");
    let mut rec = store(&spool, "1.2.3.8");
    rec.size = bytes.len() as u64;
    let to: std::collections::BTreeSet<String> = ["web".to_string()].into();
    let routed = spool.commit_to(temp, f, rec, Some(&to)).expect("commit");
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
    let temp = spool.begin();
    let mut f = std::fs::File::create(&temp.path).expect("create");
    f.write_all(&bytes).expect("write");
    let nowhere: std::collections::BTreeSet<String> = ["gone".to_string()].into();
    let rec = spool.get(routed.id).expect("get").expect("record");
    let everywhere = spool
        .commit_to(temp, f, rec, Some(&nowhere))
        .expect("commit");
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
    assert!(!spool.object_path(a.id).exists(), "the oldest was evicted");
    assert!(spool.object_path(b.id).exists(), "one eviction was enough");
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
