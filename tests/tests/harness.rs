//! Self-tests of the peer harness against the REAL peers (DCMTK, Orthanc 1.10.1 + DICOMweb).
//! They also pin down the peer facts the appliance relies on (byte identity, STOW-RS answers).
//! Run with `-- --nocapture` to see the STOW-RS replies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use medgate_e2e::peer::DCMDRLE;
use medgate_e2e::{
    Orthanc, OrthancOptions, Storescp, Storescu, dataset_bytes_identical, dataset_diff,
    dataset_equal, echoscu, free_port, require_tool, storescu,
};
use medgate_sim::studies::{CtOptions, GeneratedFile, Patient, Study};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn ct_series(dir: &Path, seed: u64, slices: u32) -> Vec<GeneratedFile> {
    let mut study = Study::new(Patient::synthetic(seed), format!("ACC{seed:07}"), seed);
    study
        .ct_series(
            dir,
            &CtOptions {
                slices,
                ..CtOptions::default()
            },
        )
        .expect("generate a CT series")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Saves Orthanc's copy of `file` next to the test's files and returns its path.
async fn orthanc_copy(orthanc: &Orthanc, file: &GeneratedFile, dir: &Path) -> PathBuf {
    let id = orthanc
        .find_instance(&file.sop_instance_uid)
        .await
        .expect("query Orthanc")
        .unwrap_or_else(|| panic!("{} not in Orthanc", file.sop_instance_uid));
    let path = dir.join(format!("orthanc-{id}.dcm"));
    orthanc
        .save_instance_file(&id, &path)
        .await
        .expect("fetch the instance file");
    path
}

#[tokio::test]
async fn ct_series_via_storescu_to_storescp_bit_preserving_is_byte_identical() {
    let work = tempdir();
    let files = ct_series(&work.path().join("src"), 101, 5);
    let port = free_port();
    let scp = Storescp::start(&work.path().join("received"), port, "ARCHIVE")
        .await
        .expect("start storescp");
    let report = storescu(port, "ARCHIVE", &[work.path().join("src")])
        .await
        .expect("run storescu");
    report.expect_all_success(5).expect("5 stores succeed");
    for file in &files {
        let received = scp
            .file_for(&file.sop_instance_uid)
            .unwrap_or_else(|| panic!("{} not received", file.sop_instance_uid));
        assert!(
            dataset_bytes_identical(&file.path, &received).expect("compare bytes"),
            "{} changed on the way",
            file.path.display()
        );
        assert!(dataset_equal(&file.path, &received).expect("compare elements"));
    }
}

#[tokio::test]
async fn every_kind_of_object_reaches_storescp_and_storescu_reencodes_only_what_it_must() {
    let work = tempdir();
    let src = work.path().join("src");
    let mut study = Study::new(Patient::synthetic(102), "ACC0000102", 102);
    let files = study.one_of_each(&src).expect("generate");
    let port = free_port();
    let scp = Storescp::start(&work.path().join("received"), port, "ARCHIVE")
        .await
        .expect("start storescp");
    // -xr: propose RLE Lossless too, or storescu tries (and fails) to decompress the RLE object.
    let report = Storescu::new(port, "ARCHIVE")
        .args(["-xr"])
        .send(&[&src])
        .await
        .expect("run storescu");
    report
        .expect_all_success(files.len())
        .expect("every kind is stored");
    for file in &files {
        let received = scp.file_for(&file.sop_instance_uid).expect("received");
        let diffs = dataset_diff(&file.path, &received).expect("compare");
        let identical = dataset_bytes_identical(&file.path, &received).expect("compare");
        let name = file
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?");
        match &name[..2] {
            // storescu sends Implicit VR files as Explicit VR unless only -xi is proposed.
            "mr" => assert!(!identical, "implicit VR MR sent as explicit VR"),
            // storescu re-encodes undefined-length sequences with explicit lengths.
            "ec" => {
                assert!(!identical, "ECG sequences re-encoded by storescu");
                assert!(diffs.is_empty(), "ECG content changed: {diffs:?}");
            }
            _ => {
                assert!(identical, "{name} changed on the way");
                assert!(diffs.is_empty(), "{name}: {diffs:?}");
            }
        }
    }
    // Proposing only Implicit VR keeps the implicit VR object byte for byte.
    let mr = files
        .iter()
        .find(|f| f.transfer_syntax_uid == "1.2.840.10008.1.2")
        .expect("an implicit VR file");
    std::fs::remove_file(scp.file_for(&mr.sop_instance_uid).expect("received")).expect("rm");
    Storescu::new(port, "ARCHIVE")
        .args(["-xi"])
        .send(&[&mr.path])
        .await
        .expect("run storescu")
        .expect_all_success(1)
        .expect("stored");
    let received = scp.file_for(&mr.sop_instance_uid).expect("received");
    assert!(dataset_bytes_identical(&mr.path, &received).expect("compare"));
    // The RLE object is a real RLE image: DCMTK decodes it.
    let rle = files
        .iter()
        .find(|f| f.transfer_syntax_uid == "1.2.840.10008.1.2.5")
        .expect("an RLE file");
    let out = work.path().join("decoded.dcm");
    let status = std::process::Command::new(require_tool(DCMDRLE))
        .arg(&rle.path)
        .arg(&out)
        .status()
        .expect("run dcmdrle");
    assert!(status.success(), "dcmdrle could not decode the RLE object");
}

#[tokio::test]
async fn parallel_storescu_associations_all_arrive() {
    let work = tempdir();
    let files = ct_series(&work.path().join("src"), 103, 8);
    let batches: Vec<Vec<PathBuf>> = files
        .chunks(2)
        .map(|c| c.iter().map(|f| f.path.clone()).collect())
        .collect();
    let port = free_port();
    let mut scp = Storescp::start(&work.path().join("received"), port, "ARCHIVE")
        .await
        .expect("start storescp");
    let reports = Storescu::new(port, "ARCHIVE")
        .send_parallel(&batches)
        .await
        .expect("run 4 storescu");
    assert_eq!(reports.len(), 4);
    for r in &reports {
        r.expect_all_success(2).expect("2 stores per association");
    }
    assert_eq!(scp.wait_for_files(8, WAIT).await.expect("8 files").len(), 8);
}

#[tokio::test]
async fn ct_series_via_storescu_to_orthanc_is_stored_unchanged() {
    let work = tempdir();
    let files = ct_series(&work.path().join("src"), 104, 5);
    let orthanc = Orthanc::start(OrthancOptions::default())
        .await
        .expect("start Orthanc");
    let report = storescu(
        orthanc.dicom_port(),
        orthanc.aet(),
        &[work.path().join("src")],
    )
    .await
    .expect("run storescu");
    report.expect_all_success(5).expect("5 stores succeed");
    assert_eq!(orthanc.count_instances().await.expect("count"), 5);
    assert_eq!(orthanc.instances().await.expect("list").len(), 5);
    for file in &files {
        let copy = orthanc_copy(&orthanc, file, work.path()).await;
        let diffs = dataset_diff(&file.path, &copy).expect("compare");
        assert!(
            diffs.is_empty(),
            "Orthanc changed {}: {diffs:?}",
            file.path.display()
        );
        // Fact: Orthanc 1.10.1 keeps the received data set bytes; only the meta group is its own.
        assert!(
            dataset_bytes_identical(&file.path, &copy).expect("compare"),
            "Orthanc re-encoded {}",
            file.path.display()
        );
    }
    assert_eq!(
        orthanc.find_instance("2.25.1").await.expect("query"),
        None,
        "an unknown UID is not found"
    );
}

#[tokio::test]
async fn echoscu_reaches_orthanc_and_fails_on_a_closed_port() {
    let orthanc = Orthanc::start(OrthancOptions::default())
        .await
        .expect("start Orthanc");
    let ok = echoscu(orthanc.dicom_port(), orthanc.aet(), "MEDGATE")
        .await
        .expect("run echoscu");
    assert!(ok.success, "C-ECHO to Orthanc failed:\n{}", ok.log);
    let closed = echoscu(free_port(), "NOBODY", "MEDGATE")
        .await
        .expect("run echoscu");
    assert!(
        !closed.success,
        "C-ECHO to a closed port succeeded:\n{}",
        closed.log
    );
}

#[tokio::test]
async fn orthanc_down_then_back_keeps_its_instances() {
    let work = tempdir();
    let files = ct_series(&work.path().join("src"), 105, 5);
    let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    let mut orthanc = Orthanc::start(OrthancOptions::default())
        .await
        .expect("start Orthanc");
    let port = orthanc.dicom_port();
    storescu(port, orthanc.aet(), &paths[..3])
        .await
        .expect("run storescu")
        .expect_all_success(3)
        .expect("3 stored");
    orthanc.stop().await.expect("stop Orthanc");
    assert!(!orthanc.is_running());
    // The archive is down: the association cannot even be requested.
    let down = storescu(port, "ORTHANC", &paths[3..])
        .await
        .expect("run storescu");
    assert_eq!(down.successes(), 0);
    assert_ne!(
        down.exit_code,
        Some(0),
        "storescu succeeded against a stopped Orthanc"
    );
    orthanc.restart().await.expect("restart Orthanc");
    assert_eq!(orthanc.dicom_port(), port, "same port after restart");
    assert_eq!(orthanc.count_instances().await.expect("count"), 3);
    storescu(port, orthanc.aet(), &paths[3..])
        .await
        .expect("run storescu")
        .expect_all_success(2)
        .expect("2 stored after restart");
    assert_eq!(orthanc.wait_for_instances(5, WAIT).await.expect("count"), 5);
    for file in &files {
        assert!(
            orthanc
                .find_instance(&file.sop_instance_uid)
                .await
                .expect("query")
                .is_some()
        );
    }
}

fn referenced_sop_uids(body: &Value) -> Vec<String> {
    body["00081199"]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["00081155"]["Value"][0].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn stow_rs_to_orthanc_answers_as_documented() {
    let work = tempdir();
    let mut study = Study::new(Patient::synthetic(106), "ACC0000106", 106);
    let all = study
        .one_of_each(&work.path().join("src"))
        .expect("generate");
    let ct = &all[0];
    let ecg = all
        .iter()
        .find(|f| f.path.to_string_lossy().contains("ecg-"))
        .expect("an ECG");
    let dx = all
        .iter()
        .find(|f| f.path.to_string_lossy().contains("dx-"))
        .expect("a DX");
    let mr = all
        .iter()
        .find(|f| f.path.to_string_lossy().contains("mr-"))
        .expect("an MR");
    let read = |f: &GeneratedFile| std::fs::read(&f.path).expect("read");
    let orthanc = Orthanc::start(OrthancOptions::default())
        .await
        .expect("start Orthanc");

    // 1. Success: 200, application/dicom+json, every instance in ReferencedSOPSequence.
    let ok = orthanc.stow(&[read(ct), read(ecg)]).await.expect("POST");
    println!(
        "STOW success: {} {:?}\n{}",
        ok.status, ok.content_type, ok.body
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.content_type.as_deref(), Some("application/dicom+json"));
    let body = ok.json().expect("JSON body");
    assert_eq!(
        referenced_sop_uids(&body),
        vec![ct.sop_instance_uid.clone(), ecg.sop_instance_uid.clone()]
    );
    assert!(
        body["00081198"]["Value"].is_null(),
        "no FailedSOPSequence items"
    );
    assert!(
        body["00081190"]["Value"][0]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/studies/{}", ct.study_instance_uid)))
    );
    // STOW-RS keeps the bytes too, even the undefined-length sequences that storescu re-encodes.
    for f in [ct, ecg] {
        let copy = orthanc_copy(&orthanc, f, work.path()).await;
        assert!(dataset_bytes_identical(&f.path, &copy).expect("compare"));
    }

    // 2. The same instance again: 200, referenced again (Orthanc keeps the first copy).
    let dup = orthanc.stow(&[read(ct)]).await.expect("POST");
    assert_eq!(dup.status, 200);
    assert_eq!(
        referenced_sop_uids(&dup.json().expect("JSON")),
        vec![ct.sop_instance_uid.clone()]
    );

    // 3. Garbage, or a truncated file: 400, NO Content-Type header, a JSON body with empty
    //    FailedSOPSequence and ReferencedSOPSequence (an unparsable part cannot be named).
    let garbage = orthanc
        .stow(&[b"not DICOM at all".repeat(20)])
        .await
        .expect("POST");
    let ct_bytes = read(ct);
    let truncated = orthanc
        .stow(&[ct_bytes[..ct_bytes.len() / 2].to_vec()])
        .await
        .expect("POST");
    for (what, r) in [("garbage", &garbage), ("truncated", &truncated)] {
        println!("STOW {what}: {} {:?}\n{}", r.status, r.content_type, r.body);
        assert_eq!(r.status, 400, "{what}");
        assert_eq!(r.content_type, None, "{what}");
        let body = r.json().expect("JSON body");
        assert!(body["00081199"]["Value"].is_null(), "{what}");
        assert!(body["00081198"]["Value"].is_null(), "{what}");
    }

    // 4. A good and a bad part together: 400 overall, yet the good one IS stored and referenced.
    let mixed = orthanc
        .stow(&[read(dx), b"garbage".repeat(10)])
        .await
        .expect("POST");
    println!(
        "STOW mixed: {} {:?}\n{}",
        mixed.status, mixed.content_type, mixed.body
    );
    assert_eq!(mixed.status, 400);
    assert_eq!(
        referenced_sop_uids(&mixed.json().expect("JSON")),
        vec![dx.sop_instance_uid.clone()]
    );
    assert!(
        orthanc
            .find_instance(&dx.sop_instance_uid)
            .await
            .expect("query")
            .is_some()
    );

    // 5. POST /studies/{uid} with an instance of another study: 409, the instance in
    //    FailedSOPSequence with FailureReason (0008,1197) 272 = 0x0110 (processing failure).
    let url = format!("{}/studies/2.25.1", orthanc.dicomweb_url());
    let conflict = medgate_e2e::stow_rs(orthanc.client(), &url, &[read(mr)])
        .await
        .expect("POST");
    println!(
        "STOW wrong study: {} {:?}\n{}",
        conflict.status, conflict.content_type, conflict.body
    );
    assert_eq!(conflict.status, 409);
    let body = conflict.json().expect("JSON");
    assert_eq!(
        body["00081198"]["Value"][0]["00081155"]["Value"][0].as_str(),
        Some(mr.sop_instance_uid.as_str())
    );
    assert_eq!(
        body["00081198"]["Value"][0]["00081197"]["Value"][0].as_u64(),
        Some(272)
    );
    assert!(
        orthanc
            .find_instance(&mr.sop_instance_uid)
            .await
            .expect("query")
            .is_none()
    );

    // 6. Not multipart: 415 with Orthanc's own JSON error.
    let resp = orthanc
        .client()
        .post(format!("{}/studies", orthanc.dicomweb_url()))
        .header("Content-Type", "application/dicom")
        .body(read(ct))
        .send()
        .await
        .expect("POST");
    let wrong_type = medgate_e2e::http::reply(resp).await.expect("reply");
    println!(
        "STOW not multipart: {} {:?}\n{}",
        wrong_type.status, wrong_type.content_type, wrong_type.body
    );
    assert_eq!(wrong_type.status, 415);
    assert_eq!(
        wrong_type.json().expect("JSON")["HttpStatus"].as_u64(),
        Some(415)
    );

    // CT, ECG, DX stored; nothing else.
    assert_eq!(orthanc.count_instances().await.expect("count"), 3);
}
