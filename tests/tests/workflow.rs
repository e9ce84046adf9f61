//! End-to-end tests of the clinical workflow services against real peers: DCMTK storescu as the
//! modality, DCMTK storescp as the archive, and a storage commitment requester written with the
//! project's own association code (DCMTK ships no storage commitment SCU).

use anyhow::{Context, Result, bail};
use medgate_appliance::workflow::assoc::MessageAssociation;
use medgate_dicom::command::{field, status, tags};
use medgate_dicom::commitment::{self as sc, Reference, Request, reason};
use medgate_dicom::dataset;
use medgate_dicom::negotiate::AcceptorPolicy;
use medgate_dicom::pdu::RequestorRoles;
use medgate_e2e::appliance::{ct_files, dimse_destination, paths, tempdir};
use medgate_e2e::{
    Appliance, Peer, Storescp, StorescpOptions, free_port, require_tool, wait_listening,
    workspace_bin,
};
use medgate_sim::studies::{GeneratedFile, Patient, Study};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn references(files: &[GeneratedFile]) -> Vec<Reference> {
    files
        .iter()
        .map(|f| Reference {
            sop_class: f.sop_class_uid.clone(),
            sop_instance: f.sop_instance_uid.clone(),
        })
        .collect()
}

/// Sends an N-ACTION storage commitment request; returns the N-ACTION-RSP status.
async fn request_commitment(assoc: &mut MessageAssociation, request: &Request) -> Result<u16> {
    let ctx = assoc
        .context_for(sc::SOP_CLASS)
        .cloned()
        .context("storage commitment context not accepted")?;
    let id = assoc.next_message_id();
    let data = dataset::encode(&sc::request_dataset(request), &ctx.transfer_syntax)?;
    assoc.send(ctx.id, &sc::action_rq(id), Some(&data)).await?;
    let rsp = assoc
        .receive()
        .await?
        .context("released instead of N-ACTION-RSP")?;
    assert_eq!(rsp.command.command_field(), field::N_ACTION_RSP);
    assert_eq!(
        rsp.command.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO),
        Some(id)
    );
    Ok(rsp.command.status().unwrap_or(0xFFFF))
}

/// Waits for an N-EVENT-REPORT-RQ, answers it with success, returns (event type, outcome).
async fn receive_report(assoc: &mut MessageAssociation) -> Result<(u16, sc::Outcome)> {
    let msg = assoc
        .receive()
        .await?
        .context("released instead of N-EVENT-REPORT")?;
    assert_eq!(msg.command.command_field(), field::N_EVENT_REPORT_RQ);
    let event = msg
        .command
        .u16(tags::EVENT_TYPE_ID)
        .context("no Event Type ID")?;
    let ts = assoc
        .contexts
        .iter()
        .find(|c| c.id == msg.context_id)
        .context("report on an unknown context")?
        .transfer_syntax
        .clone();
    let ds = dataset::decode(msg.dataset.as_deref().context("no data set")?, &ts)?;
    let outcome = sc::outcome_from_dataset(&ds)?;
    let id = msg.command.message_id().context("no message id")?;
    assoc
        .send(
            msg.context_id,
            &sc::event_report_rsp(id, event, status::SUCCESS),
            None,
        )
        .await?;
    Ok((event, outcome))
}

/// DCMTK storescp serves one association at a time: one sender, so that no association of ours
/// waits behind another (the reports' timing depends on it).
fn archive_destination(port: u16) -> String {
    dimse_destination("archive", port, "ARCHIVE").replace("parallel = 2", "parallel = 1")
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_commitment_reported_on_the_same_association() -> Result<()> {
    let t = tempdir("commit-same")?;
    let archive_port = free_port();
    // An archive that only takes uncompressed data: an RLE object is refused for good
    // (quarantined), so it cannot be committed.
    let strict = StorescpOptions {
        ae: "ARCHIVE".into(),
        accept_all_transfer_syntaxes: false,
        ..StorescpOptions::default()
    };
    let _archive = Storescp::start_with(&t.path().join("archive"), archive_port, strict).await?;
    let appliance = Appliance::start(
        &t.path().join("appliance"),
        &format!(
            "{}\n[commitment]\npoll_interval_secs = 1\n",
            archive_destination(archive_port)
        ),
    )
    .await?;
    let files = ct_files(&t.path().join("studies"), 71, 3)?;
    let mut study = Study::new(Patient::synthetic(73), "ACC73", 73);
    let rle = study.rle_image(&t.path().join("studies"), &Default::default())?;
    let mut sent = paths(&files);
    sent.push(rle.path.clone());
    appliance
        .storescu()
        .calling_ae("CT01")
        .args(["-xr"])
        .send(&sent)
        .await?
        .expect_all_success(sent.len())?;

    let mut assoc = MessageAssociation::connect(
        &format!("127.0.0.1:{}", appliance.port),
        "CT01",
        "MEDGATE",
        &[sc::SOP_CLASS],
        &[],
        Duration::from_secs(10),
    )
    .await?;
    let never_sent = Reference {
        sop_class: files[0].sop_class_uid.clone(),
        sop_instance: "2.25.999999999999999".into(),
    };
    let mut refs = references(&files);
    refs.push(never_sent.clone());
    let quarantined = Reference {
        sop_class: rle.sop_class_uid.clone(),
        sop_instance: rle.sop_instance_uid.clone(),
    };
    refs.push(quarantined.clone());
    let request = Request {
        transaction_uid: "2.25.7100001".into(),
        references: refs,
    };
    assert_eq!(
        request_commitment(&mut assoc, &request).await?,
        status::SUCCESS
    );
    let (event, outcome) = receive_report(&mut assoc).await?;
    assoc.release().await;

    assert_eq!(event, sc::EVENT_FAILURES);
    assert_eq!(outcome.transaction_uid, request.transaction_uid);
    assert_eq!(
        sorted(
            outcome
                .success
                .iter()
                .map(|r| r.sop_instance.clone())
                .collect()
        ),
        sorted(files.iter().map(|f| f.sop_instance_uid.clone()).collect())
    );
    let failed: Vec<(Reference, u16)> = outcome
        .failed
        .iter()
        .map(|f| (f.reference.clone(), f.reason))
        .collect();
    assert_eq!(
        failed,
        vec![
            (never_sent, reason::NO_SUCH_OBJECT),
            (quarantined, reason::PROCESSING_FAILURE)
        ]
    );

    let s = appliance
        .wait_status("report counted", Duration::from_secs(10), |s| {
            s["workflow"]["commitment"]["reported_failures"] == 1
        })
        .await?;
    assert_eq!(s["workflow"]["commitment"]["pending"], 0, "{s}");
    let m = appliance.metrics().await?;
    assert!(m.contains("medgate_commitment_requests_total 1"), "{m}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_commitment_survives_a_restart_and_reports_on_a_new_association() -> Result<()> {
    commitment_across_a_restart("commit-new", 72, false).await
}

/// The spool index is rebuildable (from the files); the pending commitment is not, and lives
/// apart from it: a damaged index is rebuilt and the request is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_commitment_survives_a_damaged_spool_index() -> Result<()> {
    commitment_across_a_restart("commit-index", 74, true).await
}

/// A request waits for an archive that is down; the appliance is killed (and its spool index
/// damaged beyond repair if `damage_index`) and restarted; once the archive is up the appliance
/// calls the requester back on a new association and reports success.
async fn commitment_across_a_restart(name: &str, seed: u64, damage_index: bool) -> Result<()> {
    let t = tempdir(name)?;
    let archive_port = free_port();
    let requester = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let requester_port = requester.local_addr()?.port();
    let mut appliance = Appliance::start(
        &t.path().join("appliance"),
        &format!(
            "{}\n[commitment]\npoll_interval_secs = 1\nretry_secs = 1\n\n[[commitment.requester]]\nae_title = \"CT02\"\naddress = \"127.0.0.1:{requester_port}\"\n",
            archive_destination(archive_port)
        ),
    )
    .await?;
    // The archive is down: the objects wait in the spool, the commitment waits for them.
    let files = ct_files(&t.path().join("studies"), seed, 2)?;
    appliance
        .storescu()
        .calling_ae("CT02")
        .send(&paths(&files))
        .await?
        .expect_all_success(files.len())?;
    let mut assoc = MessageAssociation::connect(
        &format!("127.0.0.1:{}", appliance.port),
        "CT02",
        "MEDGATE",
        &[sc::SOP_CLASS],
        &[],
        Duration::from_secs(10),
    )
    .await?;
    let request = Request {
        transaction_uid: format!("2.25.{seed}00001"),
        references: references(&files),
    };
    assert_eq!(
        request_commitment(&mut assoc, &request).await?,
        status::SUCCESS
    );
    assoc.release().await;
    let s = appliance
        .wait_status("request pending", Duration::from_secs(10), |s| {
            s["workflow"]["commitment"]["pending"] == 1
        })
        .await?;
    assert_eq!(s["workflow"]["commitment"]["requests"], 1, "{s}");

    // Power cut; on restart the request is still there.
    appliance.kill9()?;
    if damage_index {
        let index = appliance.dir.join("data").join("index");
        anyhow::ensure!(index.is_dir(), "no spool index at {}", index.display());
        std::fs::remove_dir_all(&index)?;
        std::fs::write(&index, b"not a sled database")?;
    }
    appliance.restart().await?;
    let s = appliance
        .wait_status(
            "request still pending after restart",
            Duration::from_secs(10),
            |s| s["workflow"]["commitment"]["pending"] == 1,
        )
        .await?;
    assert_eq!(s["startup"]["index_rebuilt"], damage_index, "{s}");
    if damage_index {
        assert_eq!(s["startup"]["reindexed"], files.len(), "{s}");
    }

    // The archive comes up; once it confirmed both, the appliance calls the modality back.
    let _archive = Storescp::start(&t.path().join("archive"), archive_port, "ARCHIVE").await?;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), requester.accept())
        .await
        .context("the appliance did not call the requester back")??;
    let policy = AcceptorPolicy {
        ae_title: "CT02".into(),
        called_ae_titles: vec![],
        calling_ae_titles: vec!["MEDGATE".into()],
        private_sop_classes: vec![],
        transfer_syntaxes: vec![],
        max_pdu: 65_536,
        services: vec![sc::SOP_CLASS.into()],
    };
    let mut back = MessageAssociation::accept(
        Box::new(stream),
        &policy,
        &[sc::SOP_CLASS],
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(back.peer_ae, "MEDGATE");
    assert_eq!(
        back.roles,
        vec![(
            sc::SOP_CLASS.to_string(),
            RequestorRoles {
                scu: false,
                scp: true
            }
        )],
        "the appliance proposes the SCP role on its own association (PS3.4 J.3.3)"
    );
    let (event, outcome) = receive_report(&mut back).await?;
    assert_eq!(event, sc::EVENT_SUCCESS);
    assert!(outcome.failed.is_empty());
    assert_eq!(
        sorted(
            outcome
                .success
                .iter()
                .map(|r| r.sop_instance.clone())
                .collect()
        ),
        sorted(files.iter().map(|f| f.sop_instance_uid.clone()).collect())
    );
    assert!(back.receive().await?.is_none(), "the appliance releases");
    appliance
        .wait_status("reported", Duration::from_secs(10), |s| {
            s["workflow"]["commitment"]["reported_success"] == 1
                && s["workflow"]["commitment"]["pending"] == 0
        })
        .await?;
    Ok(())
}

/// DCMTK's worklist SCP as the RIS, serving the example worklist shipped with Debian's dcmtk
/// (converted with dump2dcm) under AE title `RIS`.
async fn start_ris(dir: &Path, port: u16) -> Result<Peer> {
    let db = dir.join("wlistdb");
    let ae_dir = db.join("RIS");
    std::fs::create_dir_all(&ae_dir)?;
    std::fs::write(ae_dir.join("lockfile"), b"")?;
    let examples = Path::new("/usr/share/doc/dcmtk/examples/wlistdb/OFFIS");
    let mut n = 0;
    for entry in std::fs::read_dir(examples).context("Debian dcmtk example worklist")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "dump") {
            let out = ae_dir.join(path.with_extension("wl").file_name().context("name")?);
            if !out.exists() {
                let st = Command::new(require_tool("/usr/bin/dump2dcm"))
                    .arg(&path)
                    .arg(&out)
                    .output()?;
                if !st.status.success() {
                    bail!(
                        "dump2dcm {}: {}",
                        path.display(),
                        String::from_utf8_lossy(&st.stderr)
                    );
                }
            }
            n += 1;
        }
    }
    assert_eq!(n, 10, "the example worklist has 10 entries");
    let mut cmd = Command::new(require_tool("/usr/bin/wlmscpfs"));
    cmd.arg("-v").arg("-dfp").arg(&db).arg(port.to_string());
    let mut peer = Peer::spawn("wlmscpfs", cmd, &dir.join(format!("wlmscpfs-{port}.log")))?;
    wait_listening(port, Duration::from_secs(20), || peer.check_alive()).await?;
    Ok(peer)
}

/// `findscu -W` against the appliance; returns the identifiers received.
async fn findscu(
    appliance: &Appliance,
    out: &Path,
    calling_ae: &str,
    keys: &[&str],
    extra: &[&str],
) -> Result<Vec<dicom_object::DefaultDicomObject>> {
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    let mut cmd = tokio::process::Command::new(require_tool("/usr/bin/findscu"));
    cmd.env("TCP_NODELAY", "1")
        .args([
            "-W", "-v", "-aet", calling_ae, "-aec", "MEDGATE", "-X", "-od",
        ])
        .arg(out)
        .args(extra);
    for k in keys {
        cmd.args(["-k", k]);
    }
    cmd.arg("127.0.0.1").arg(appliance.port.to_string());
    let output = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .context("findscu timed out")??;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("findscu failed: {log}\n{}", appliance.log());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    files
        .iter()
        .map(|f| dicom_object::open_file(f).with_context(|| format!("{}\n{log}", f.display())))
        .collect()
}

fn names(objs: &[dicom_object::DefaultDicomObject]) -> Vec<String> {
    sorted(
        objs.iter()
            .map(|o| {
                dataset::string(o, dicom_dictionary_std::tags::PATIENT_NAME).unwrap_or_default()
            })
            .collect(),
    )
}

fn strs(v: &[&str]) -> Vec<String> {
    sorted(v.iter().map(|s| s.to_string()).collect())
}

const NAME: &str = "PatientName";
const PID: &str = "PatientID";
const MODALITY: &str = "ScheduledProcedureStepSequence[0].Modality";
const STATION: &str = "ScheduledProcedureStepSequence[0].ScheduledStationAETitle";
const DATE: &str = "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worklist_proxied_cached_and_served_when_the_ris_is_down() -> Result<()> {
    let t = tempdir("worklist")?;
    let ris_port = free_port();
    let mut ris = start_ris(t.path(), ris_port).await?;
    let appliance = Appliance::start(
        &t.path().join("appliance"),
        &format!(
            "{}\n[worklist]\nupstream = \"127.0.0.1:{ris_port}\"\ncalled_ae_title = \"RIS\"\ntimeout_secs = 5\ncache_ttl_secs = 1\n",
            archive_destination(free_port())
        ),
    )
    .await?;
    let out = t.path().join("rsp");

    // RIS up: everything, then the CT steps (matched by the RIS).
    let all = findscu(
        &appliance,
        &out,
        "CT01",
        &[NAME, PID, MODALITY, STATION, DATE],
        &[],
    )
    .await?;
    assert_eq!(all.len(), 10, "{}", appliance.log());
    let ct = findscu(
        &appliance,
        &out,
        "CT01",
        &[NAME, PID, &format!("{MODALITY}=CT"), DATE],
        &[],
    )
    .await?;
    let ct_names = strs(&[
        "VIVALDI^ANTONIO",
        "HAYDN^FRANZ^JOSEPH",
        "BEETHOVEN^LUDWIG^VAN",
        "MOZART^WOLFGANG^AMADEUS",
    ]);
    assert_eq!(names(&ct), ct_names);
    // Only the keys asked for come back (the appliance asked the RIS for more, for its cache).
    for o in &ct {
        assert!(
            o.element_opt(dicom_dictionary_std::tags::ACCESSION_NUMBER)?
                .is_none()
        );
        assert!(
            o.element_opt(dicom_dictionary_std::tags::PATIENT_ID)?
                .is_some()
        );
    }
    let s = appliance.get("/api/status").await?;
    assert_eq!(s["workflow"]["worklist"]["upstream_up"], true, "{s}");
    assert_eq!(s["workflow"]["worklist"]["cache_entries"], 10, "{s}");
    assert_eq!(s["workflow"]["worklist"]["upstream_answers"], 2, "{s}");

    // Uplink cut: the RIS is gone. The cache answers, matched here.
    ris.kill()?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the 1 s TTL: stale
    let cached_ct = findscu(
        &appliance,
        &out,
        "CT01",
        &[NAME, PID, &format!("{MODALITY}=CT"), DATE],
        &[],
    )
    .await?;
    assert_eq!(names(&cached_ct), ct_names);
    for o in &cached_ct {
        assert!(
            o.element_opt(dicom_dictionary_std::tags::ACCESSION_NUMBER)?
                .is_none()
        );
    }
    // Scheduled station AE against multi-valued stations: wklist3 (CR) and wklist8 (CT).
    let station = findscu(
        &appliance,
        &out,
        "CT01",
        &[NAME, &format!("{STATION}=NN77")],
        &[],
    )
    .await?;
    assert_eq!(
        names(&station),
        strs(&["VIVALDI^ANTONIO", "BEETHOVEN^LUDWIG^VAN"])
    );
    // Name wildcard and an open date range: wklist2 (19960406) and wklist3 (19960123), not wklist1 (1995).
    let range = findscu(
        &appliance,
        &out,
        "CT01",
        &["PatientName=VIV*", &format!("{DATE}=19960101-")],
        &[],
    )
    .await?;
    assert_eq!(range.len(), 2);
    let dates = sorted(
        range
            .iter()
            .map(|o| {
                let item = &dataset::items(
                    o,
                    dicom_dictionary_std::tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
                )[0];
                dataset::string(
                    item,
                    dicom_dictionary_std::tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                )
                .unwrap_or_default()
            })
            .collect(),
    );
    assert_eq!(dates, strs(&["19960123", "19960406"]));
    // Nothing matches: success with no entries.
    let none = findscu(&appliance, &out, "CT01", &["PatientName=NOBODY*"], &[]).await?;
    assert!(none.is_empty());
    // A cancel after the first response is answered, and the association goes on.
    let _ = findscu(&appliance, &out, "CT01", &[NAME], &["--cancel", "1"]).await?;

    let s = appliance.get("/api/status").await?;
    let w = &s["workflow"]["worklist"];
    assert_eq!(w["upstream_up"], false, "{s}");
    assert_eq!(w["cache_stale"], true, "{s}");
    assert!(
        w["stale_entries_returned"].as_u64().unwrap_or(0) >= 8,
        "{s}"
    );
    assert_eq!(w["cache_answers"], 5, "{s}");
    let m = appliance.metrics().await?;
    assert!(m.contains("medgate_worklist_cache_stale 1"), "{m}");
    let cli = Command::new(workspace_bin("medgate-appliance")?)
        .args(["status", "--url"])
        .arg(format!("http://127.0.0.1:{}", appliance.status_port))
        .output()?;
    let cli = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.contains("UNREACHABLE") && cli.contains("CACHE STALE"),
        "{cli}"
    );
    assert!(m.contains("medgate_worklist_upstream_up 0"), "{m}");

    // Patient data stays on the appliance: not in the log, the metrics or the status.
    let log = std::fs::read_to_string(appliance.dir.join("appliance-1.log"))?;
    assert!(log.contains("answering from a STALE cache"), "{log}");
    for secret in ["VIVALDI", "AV35674", "HAYDN", "MWA484763", "BEETHOVEN"] {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!m.contains(secret), "{secret} in the metrics");
        assert!(!s.to_string().contains(secret), "{secret} in the status");
    }
    Ok(())
}

/// Rewrites a Part 10 file with `change` applied (a new file: the original stays).
fn rewrite(
    from: &Path,
    to: &Path,
    change: impl FnOnce(&mut dicom_object::DefaultDicomObject),
) -> Result<PathBuf> {
    let mut obj = dicom_object::open_file(from)?;
    change(&mut obj);
    obj.write_to_file(to)?;
    Ok(to.to_path_buf())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_checks_flag_but_never_refuse() -> Result<()> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let t = tempdir("qc")?;
    let archive_port = free_port();
    let mut archive = Storescp::start(&t.path().join("archive"), archive_port, "ARCHIVE").await?;
    let appliance = Appliance::start(
        &t.path().join("appliance"),
        &format!(
            "{}\n[qc]\ncomplete_after_secs = 3\n\n[[qc.station]]\nae_title = \"CT01\"\nmodalities = [\"CT\", \"SR\"]\n",
            archive_destination(archive_port)
        ),
    )
    .await?;
    let files = ct_files(&t.path().join("studies"), 81, 4)?;
    let flawed = t.path().join("flawed");
    std::fs::create_dir_all(&flawed)?;
    let no_ids = rewrite(&files[1].path, &flawed.join("no-ids.dcm"), |o| {
        o.remove_element(tags::PATIENT_ID);
        o.remove_element(tags::ACCESSION_NUMBER);
        o.remove_element(tags::STUDY_INSTANCE_UID);
    })?;
    let mr = rewrite(&files[2].path, &flawed.join("mr.dcm"), |o| {
        o.put(DataElement::new(
            tags::MODALITY,
            VR::CS,
            PrimitiveValue::from("MR"),
        ));
    })?;
    let changed = rewrite(&files[0].path, &flawed.join("changed.dcm"), |o| {
        o.put(DataElement::new(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            PrimitiveValue::from("CHANGED AFTER SENDING"),
        ));
    })?;
    let first = dicom_object::open_file(&files[0].path)?;
    let patient_id = dataset::string(&first, tags::PATIENT_ID)
        .context("the simulated study has a Patient ID")?;

    // One association with a clean object and two flawed ones: every one is acknowledged.
    appliance
        .storescu()
        .calling_ae("CT01")
        .send(&[files[0].path.clone(), no_ids, mr])
        .await?
        .expect_all_success(3)?;
    // A resend with the same content is not a conflict; the same SOP Instance UID with other
    // content is.
    appliance
        .storescu()
        .calling_ae("CT01")
        .send(&[files[0].path.clone()])
        .await?
        .expect_all_success(1)?;
    appliance
        .storescu()
        .calling_ae("CT01")
        .send(&[changed])
        .await?
        .expect_all_success(1)?;
    // The study has been quiet longer than complete_after_secs: one more slice is late.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    appliance
        .storescu()
        .calling_ae("CT01")
        .send(&[files[3].path.clone()])
        .await?
        .expect_all_success(1)?;

    let started = Instant::now();
    let qc = loop {
        let q = appliance.get("/api/qc").await?;
        if q["flags"].as_array().map_or(0, Vec::len) >= 6
            || started.elapsed() > Duration::from_secs(15)
        {
            break q;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let counts = &qc["counts"];
    for (check, n) in [
        ("missing_patient_id", 1),
        ("missing_accession_number", 1),
        ("missing_study_instance_uid", 1),
        ("unexpected_modality", 1),
        ("conflicting_duplicate", 1),
        ("late_arrival", 1),
    ] {
        assert_eq!(counts[check], n, "{check}: {qc}\n{}", appliance.log());
    }
    let flag_of = |check: &str| -> String {
        qc["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["check"] == check)
            .and_then(|f| f["sop_instance_uid"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(flag_of("missing_patient_id"), files[1].sop_instance_uid);
    assert_eq!(flag_of("unexpected_modality"), files[2].sop_instance_uid);
    assert_eq!(flag_of("conflicting_duplicate"), files[0].sop_instance_uid);
    assert_eq!(flag_of("late_arrival"), files[3].sop_instance_uid);

    // Flagged objects are forwarded like any other.
    archive.wait_for_files(4, Duration::from_secs(20)).await?;
    for f in &files {
        assert!(
            archive.file_for(&f.sop_instance_uid).is_some(),
            "{} not forwarded",
            f.sop_instance_uid
        );
    }

    // The CLI lists them; status and metrics count them without patient data.
    let out = Command::new(workspace_bin("medgate-appliance")?)
        .args(["qc", "list", "--url"])
        .arg(format!("http://127.0.0.1:{}", appliance.status_port))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("late_arrival"), "{text}");
    assert!(text.contains(&files[3].sop_instance_uid), "{text}");
    let s = appliance.get("/api/status").await?;
    assert_eq!(
        s["workflow"]["qc"]["flags"]["conflicting_duplicate"], 1,
        "{s}"
    );
    assert_eq!(s["workflow"]["qc"]["objects_checked"], 6, "{s}");
    let m = appliance.metrics().await?;
    assert!(
        m.contains("medgate_qc_flags{check=\"late_arrival\"} 1"),
        "{m}"
    );
    assert!(!m.contains(&patient_id) && !s.to_string().contains(&patient_id));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worklist_query_cancelled_while_the_ris_hangs() -> Result<()> {
    use medgate_dicom::worklist as mwl;
    let t = tempdir("worklist-cancel")?;
    // A "RIS" that accepts TCP connections and never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hung_port = hung.local_addr()?.port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
        }
    });
    let appliance = Appliance::start(
        &t.path().join("appliance"),
        &format!(
            "{}\n[worklist]\nupstream = \"127.0.0.1:{hung_port}\"\ncalled_ae_title = \"RIS\"\ntimeout_secs = 20\n",
            archive_destination(free_port())
        ),
    )
    .await?;
    let mut assoc = MessageAssociation::connect(
        &format!("127.0.0.1:{}", appliance.port),
        "CT01",
        "MEDGATE",
        &[mwl::SOP_CLASS],
        &[],
        Duration::from_secs(10),
    )
    .await?;
    let ctx = assoc
        .context_for(mwl::SOP_CLASS)
        .cloned()
        .context("worklist context accepted")?;
    let mut query = dataset::Dataset::new_empty();
    query.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::PATIENT_NAME,
        dicom_core::VR::PN,
        dicom_core::PrimitiveValue::Empty,
    ));
    let id = assoc.next_message_id();
    let started = Instant::now();
    assoc
        .send(
            ctx.id,
            &mwl::find_rq(id),
            Some(&dataset::encode(&query, &ctx.transfer_syntax)?),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assoc.send(ctx.id, &mwl::cancel_rq(id), None).await?;
    let rsp = assoc
        .receive()
        .await?
        .context("released instead of answering")?;
    assert_eq!(rsp.command.command_field(), field::C_FIND_RSP);
    assert_eq!(
        rsp.command.status(),
        Some(status::CANCEL),
        "final status Cancel, no entries"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the cancel did not wait for the RIS timeout: {:?}",
        started.elapsed()
    );
    // The association is still usable.
    let echo_ctx = assoc.context_for(mwl::SOP_CLASS).map(|c| c.id);
    assert!(echo_ctx.is_some());
    assoc.release().await;
    let s = appliance.get("/api/status").await?;
    assert_eq!(s["workflow"]["worklist"]["cancelled"], 1, "{s}");
    holder.abort();
    Ok(())
}
