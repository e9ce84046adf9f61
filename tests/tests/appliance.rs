//! End-to-end tests of the appliance's promises against real peers: DCMTK storescu as the
//! modality, DCMTK storescp and Orthanc as the archive. Each test starts its own appliance
//! process (the real `medgate-appliance` binary) with its own ports and spool.

use anyhow::{Context, Result, bail};
use medgate_dicom::command::{self, field};
use medgate_dicom::negotiate;
use medgate_dicom::pdata::{self, encode_command_pdus, pdata_header};
use medgate_dicom::pdu::Pdu;
use medgate_e2e::appliance::{ct_files, dimse_destination, paths, spool_files, tempdir};
use medgate_e2e::{
    Appliance, Orthanc, OrthancOptions, StoreStatus, Storescp, StorescpOptions, Storescu, echoscu,
    free_port, wait_listening, workspace_bin,
};
use medgate_sim::studies::{GeneratedFile, Patient, Study, UsOptions, big_object};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A test bench: a temp dir, a storescp archive and an appliance forwarding to it
/// (`listener_extra` is appended to the `[listener]` table).
async fn rig(name: &str, listener_extra: &str) -> Result<(tempfile::TempDir, Storescp, Appliance)> {
    let t = tempdir(name)?;
    let archive_port = free_port();
    let archive = Storescp::start(&t.path().join("archive"), archive_port, "ARCHIVE").await?;
    let appliance = Appliance::start_with(
        &t.path().join("appliance"),
        listener_extra,
        &dimse_destination("archive", archive_port, "ARCHIVE"),
    )
    .await?;
    Ok((t, archive, appliance))
}

/// Sends as `calling_ae` and expects the association to be rejected; returns storescu's log.
async fn rejected(
    appliance: &Appliance,
    calling_ae: &str,
    files: &[GeneratedFile],
) -> Result<String> {
    let report = appliance
        .storescu()
        .calling_ae(calling_ae)
        .send(&paths(files))
        .await?;
    assert_eq!(report.successes(), 0, "{calling_ae} was not rejected");
    assert!(
        report.log.contains("Association Rejected"),
        "{}",
        report.log
    );
    Ok(report.log)
}

/// The SOP Instance UIDs storescu saw acknowledged with Success.
fn acknowledged(report: &medgate_e2e::StorescuReport, files: &[GeneratedFile]) -> Vec<String> {
    report
        .outcomes
        .iter()
        .filter(|o| o.status == StoreStatus::Success)
        .filter_map(|o| {
            files.iter().find(|f| {
                o.file.ends_with(f.path.file_name().unwrap_or_default()) || f.path == o.file
            })
        })
        .map(|f| f.sop_instance_uid.clone())
        .collect()
}

/// Waits until the appliance forwarded `files` and the archive holds them; checks that what the
/// archive got is, byte for byte, the data set the appliance received (its spool). Returns each
/// file with the archive's copy.
async fn archive_holds_the_spooled_bytes<'a>(
    appliance: &Appliance,
    archive: &mut Storescp,
    files: &'a [GeneratedFile],
) -> Result<Vec<(&'a GeneratedFile, std::path::PathBuf)>> {
    appliance.wait_drained(Duration::from_secs(60)).await?;
    archive
        .wait_for_files(files.len(), Duration::from_secs(30))
        .await?;
    let spooled = spool_files(&appliance.dir.join("data"))?;
    let mut out = Vec::new();
    for f in files {
        let got = archive
            .file_for(&f.sop_instance_uid)
            .with_context(|| format!("{} did not reach the archive", f.sop_instance_uid))?;
        let kept = spooled
            .get(&f.sop_instance_uid)
            .with_context(|| format!("{} not in the spool", f.sop_instance_uid))?;
        assert!(
            medgate_e2e::dataset_bytes_identical(kept, &got)?,
            "{} ({}, {} bytes) was altered on its way through the appliance",
            f.path.display(),
            f.transfer_syntax_uid,
            std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0)
        );
        out.push((f, got));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_store_reach_storescp_byte_identical() -> Result<()> {
    let (t, mut archive, appliance) = rig("identical", "").await?;
    let echo = echoscu(appliance.port, &appliance.ae, "ECHOSCU").await?;
    assert!(echo.success, "C-ECHO failed: {echo:?}");

    let mut study = Study::new(Patient::synthetic(7), "ACC7", 7);
    let mut files = study.one_of_each(&t.path().join("studies"))?;
    files.extend(ct_files(&t.path().join("ct"), 8, 12)?);
    let report = appliance.storescu().send(&paths(&files)).await?;
    report.expect_all_success(files.len())?;

    for (f, got) in archive_holds_the_spooled_bytes(&appliance, &mut archive, &files).await? {
        // Both hold the data set the modality's file holds (storescu itself may re-encode
        // sequence lengths on the wire, so the file is compared element by element).
        medgate_e2e::assert_dataset_equal(&f.path, &got)?;
    }
    let s = appliance.status().await?;
    assert_eq!(s["objects_received"], files.len());
    assert_eq!(s["destinations"][0]["forwarded"], files.len());
    Ok(())
}

/// One object of each kind (all under 2 MiB: sent from memory) and a 2.8 MB US multi-frame
/// (streamed from its file), of patient `n`.
fn one_of_each_and_a_large_one(dir: &Path, n: u64) -> Result<Vec<GeneratedFile>> {
    let mut study = Study::new(Patient::synthetic(n), format!("ACC{n}"), n);
    let mut files = study.one_of_each(dir)?;
    files.push(study.us_multiframe(
        dir,
        &UsOptions {
            frames: 12,
            rows: 240,
            columns: 320,
        },
    )?);
    Ok(files)
}

/// An archive that takes only 4 KiB PDUs: objects sent from memory need several vectored writes
/// of PDUs (over 64 PDUs each), the one over 2 MiB is streamed from its segment; every one
/// arrives as the spool holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_archive_pdus_still_carry_every_byte() -> Result<()> {
    let t = tempdir("small-pdus")?;
    let archive_port = free_port();
    let opts = StorescpOptions {
        ae: "ARCHIVE".into(),
        max_pdu: 4096,
        ..StorescpOptions::default()
    };
    let mut archive = Storescp::start_with(&t.path().join("archive"), archive_port, opts).await?;
    let appliance = Appliance::start(
        &t.path().join("appliance"),
        &dimse_destination("archive", archive_port, "ARCHIVE"),
    )
    .await?;
    let files = one_of_each_and_a_large_one(&t.path().join("studies"), 11)?;
    let largest = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).map(|m| m.len()))
        .collect::<std::io::Result<Vec<u64>>>()?;
    assert!(
        largest.iter().any(|&n| n > 2 << 20)
            && largest.iter().any(|&n| n > 64 * 4096 && n < 2 << 20),
        "the set must hold an object streamed and one sent from memory in several writes: {largest:?}"
    );
    let report = appliance.storescu().send(&paths(&files)).await?;
    report.expect_all_success(files.len())?;
    archive_holds_the_spooled_bytes(&appliance, &mut archive, &files).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_down_then_back_everything_arrives() -> Result<()> {
    let t = tempdir("down")?;
    let archive_port = free_port(); // nothing listens yet: the archive is down
    let appliance = Appliance::start(
        &t.path().join("appliance"),
        &dimse_destination("archive", archive_port, "ARCHIVE"),
    )
    .await?;
    let files = ct_files(&t.path().join("ct"), 11, 20)?;
    let report = appliance.storescu().send(&paths(&files)).await?;
    report.expect_all_success(files.len())?;
    let acknowledged = Instant::now();

    // Capture does not wait on forwarding; the queue holds everything and says why.
    // The first attempt fails at once; poll rather than guess how long a loaded CI host takes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let s = loop {
        let s = appliance.status().await?;
        if s["destinations"][0]["last_error"].is_string() || tokio::time::Instant::now() > deadline
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["destinations"][0]["queue_depth"], files.len(), "{s}");
    assert_eq!(s["destinations"][0]["up"], false, "{s}");
    assert!(
        s["destinations"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot connect"),
        "{s}"
    );
    let metrics = medgate_e2e::http_client()
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            appliance.status_port
        ))
        .send()
        .await?
        .text()
        .await?;
    for line in [
        format!(
            "medgate_queue_depth{{destination=\"archive\"}} {}",
            files.len()
        ),
        "medgate_destination_up{destination=\"archive\"} 0".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }

    let down_for = acknowledged.elapsed();
    let mut archive = Storescp::start(&t.path().join("archive"), archive_port, "ARCHIVE").await?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    let got = archive
        .wait_for_files(files.len(), Duration::from_secs(30))
        .await?;
    assert_eq!(got.len(), files.len());
    // Delivery time counts from the modality's C-STORE success: every object waited at least
    // as long as the archive was down after it was acknowledged.
    let metrics = medgate_e2e::http_client()
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            appliance.status_port
        ))
        .send()
        .await?
        .text()
        .await?;
    let count = format!(
        "medgate_delivery_seconds_count{{destination=\"archive\"}} {}",
        files.len()
    );
    assert!(
        metrics.lines().any(|l| l == count),
        "{count} not in\n{metrics}"
    );
    let faster = metrics
        .lines()
        .filter_map(|l| {
            l.strip_prefix("medgate_delivery_seconds_bucket{destination=\"archive\",le=\"")
        })
        .filter_map(|l| l.split_once("\"} "))
        .filter(|(le, _)| {
            le.parse::<f64>()
                .is_ok_and(|le| le < down_for.as_secs_f64())
        })
        .map(|(le, n)| (le.to_string(), n.to_string()))
        .filter(|(_, n)| n != "0")
        .collect::<Vec<_>>();
    assert!(
        faster.is_empty(),
        "delivered faster than the archive was down ({down_for:?}): {faster:?}"
    );
    for f in &files {
        assert!(
            archive.file_for(&f.sop_instance_uid).is_some(),
            "{} missing",
            f.sop_instance_uid
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_acknowledged() -> Result<()> {
    let (t, mut archive, mut appliance) = rig("kill9", "").await?;
    let files = ct_files(&t.path().join("ct"), 21, 60)?;
    let mut acked: std::collections::BTreeSet<String> = Default::default();
    let mut remaining: Vec<GeneratedFile> = files.clone();
    let mut rounds = 0;
    while !remaining.is_empty() {
        rounds += 1;
        assert!(rounds < 20, "did not converge");
        let scu = appliance.storescu();
        let batch = paths(&remaining);
        let send = tokio::spawn(async move { scu.send(&batch).await });
        if rounds <= 4 {
            // Kill during ingest (and forwarding, which runs at the same time).
            tokio::time::sleep(Duration::from_millis(fastrand::u64(50..400))).await;
            appliance.kill9()?;
        }
        let report = send.await??;
        let ok = acknowledged(&report, &remaining);
        acked.extend(ok.iter().cloned());
        // A real modality resends what was not acknowledged.
        remaining.retain(|f| !ok.contains(&f.sop_instance_uid));
        if rounds <= 4 {
            appliance.restart().await?;
            let tmp = t.path().join("appliance/data/spool/tmp");
            let orphans = std::fs::read_dir(&tmp)?.count();
            assert_eq!(orphans, 0, "temp files left after restart");
        }
    }
    assert_eq!(acked.len(), files.len());
    appliance.wait_drained(Duration::from_secs(90)).await?;
    archive
        .wait_for_files(files.len(), Duration::from_secs(30))
        .await?;
    for f in &files {
        let got = archive
            .file_for(&f.sop_instance_uid)
            .with_context(|| format!("acknowledged {} lost", f.sop_instance_uid))?;
        medgate_e2e::assert_dataset_equal(&f.path, &got)?;
    }
    Ok(())
}

/// Thirty kill -9 during ingest and forwarding (issue 11's loop): whatever the modality was told
/// "success" for is at the archive in the end, byte-identical, and no restart leaves temp files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_kills_during_ingest_lose_nothing_acknowledged() -> Result<()> {
    const KILLS: usize = 30;
    let (t, mut archive, mut appliance) = rig("kill30", "").await?;
    let files = ct_files(&t.path().join("ct"), 22, 150)?;
    let mut acked: std::collections::BTreeSet<String> = Default::default();
    let mut remaining: Vec<GeneratedFile> = files.clone();
    let (mut kills, mut rounds) = (0, 0);
    while !remaining.is_empty() || kills < KILLS {
        rounds += 1;
        assert!(
            rounds < KILLS + 20,
            "did not converge: {} left",
            remaining.len()
        );
        // Once everything is acknowledged, kills go on during forwarding (and right after start).
        let batch = if remaining.is_empty() {
            Vec::new()
        } else {
            paths(&remaining)
        };
        let scu = appliance.storescu();
        let send = tokio::spawn(async move {
            if batch.is_empty() {
                return Ok(None);
            }
            scu.send(&batch).await.map(Some)
        });
        let killing = kills < KILLS;
        if killing {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(20..500))).await;
            appliance.kill9()?;
            kills += 1;
        }
        if let Some(report) = send.await?? {
            let ok = acknowledged(&report, &remaining);
            acked.extend(ok.iter().cloned());
            remaining.retain(|f| !ok.contains(&f.sop_instance_uid));
        }
        if killing {
            appliance.restart().await?;
            let tmp = t.path().join("appliance/data/spool/tmp");
            let orphans = std::fs::read_dir(&tmp)?.count();
            assert_eq!(orphans, 0, "temp files left after restart {kills}");
        }
    }
    assert_eq!(kills, KILLS);
    assert_eq!(acked.len(), files.len());
    appliance.wait_drained(Duration::from_secs(120)).await?;
    archive
        .wait_for_files(files.len(), Duration::from_secs(60))
        .await?;
    for f in &files {
        let got = archive.file_for(&f.sop_instance_uid).with_context(|| {
            format!(
                "acknowledged {} lost after {KILLS} kills",
                f.sop_instance_uid
            )
        })?;
        medgate_e2e::assert_dataset_equal(&f.path, &got)?;
    }
    let s = appliance.status().await?;
    assert_eq!(s["destinations"][0]["queue_depth"], 0, "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_past_watermark_refuses_then_resumes() -> Result<()> {
    let t = tempdir("full")?;
    let archive_port = free_port();
    // A 4 MB spool: about seven 0.53 MB slices fit under the 90% watermark.
    let extra = format!(
        "[spool]\nmax_bytes = 4000000\nhigh_watermark_percent = 95\nlow_watermark_percent = 40\nretention_hours = 0\n\n{}",
        dimse_destination("archive", archive_port, "ARCHIVE")
    );
    let appliance = Appliance::start(&t.path().join("appliance"), &extra).await?;
    let files = ct_files(&t.path().join("ct"), 31, 12)?;
    let report = appliance.storescu().send(&paths(&files)).await?;
    let refused: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| matches!(&o.status, StoreStatus::Failure(s) if s.contains("OutOfResources")))
        .collect();
    assert!(
        !refused.is_empty(),
        "expected A700 refusals: {:?}",
        report.outcomes
    );
    let first_round = acknowledged(&report, &files);
    assert!(first_round.len() >= 5, "{:?}", report.outcomes);
    assert_eq!(
        first_round.len() + refused.len(),
        files.len(),
        "{:?}",
        report.outcomes
    );
    let s = appliance.status().await?;
    assert!(
        s["spool_used_percent"].as_f64().unwrap_or(0.0) >= 95.0 * 0.9,
        "{s}"
    );

    // Space returns once the archive confirms and retention releases: ingest resumes.
    let mut archive = Storescp::start(&t.path().join("archive"), archive_port, "ARCHIVE").await?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    let started = Instant::now();
    loop {
        let s = appliance.status().await?;
        if s["spool_objects"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "spool not released: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rest: Vec<GeneratedFile> = files
        .iter()
        .filter(|f| !first_round.contains(&f.sop_instance_uid))
        .cloned()
        .collect();
    let report = appliance.storescu().send(&paths(&rest)).await?;
    report.expect_all_success(rest.len())?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    archive
        .wait_for_files(files.len(), Duration::from_secs(30))
        .await?;
    for f in &files {
        assert!(
            archive.file_for(&f.sop_instance_uid).is_some(),
            "{} missing",
            f.sop_instance_uid
        );
    }
    Ok(())
}

/// A raw DICOM client for malformed traffic, built on the sans-IO codec.
fn raw_associate(port: u16, abstract_syntax: &str, ts: &str) -> Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let rq = negotiate::association_rq(
        "RAWSCU",
        "MEDGATE",
        &[(1, abstract_syntax.to_string(), vec![ts.to_string()])],
        16384,
    );
    s.write_all(&pdata::encode_other(&Pdu::AssociationRQ(rq))?)?;
    let mut head = [0u8; 6];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    let mut all = head.to_vec();
    all.extend_from_slice(&body);
    Ok((s, all))
}

/// Reads until the peer closes; returns what it sent last (an A-ABORT is `07 00 ...`).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_other_associations_keep_working() -> Result<()> {
    let (t, mut archive, appliance) = rig("bad", "").await?;
    let files = ct_files(&t.path().join("ct"), 41, 30)?;
    // A well-behaved modality sends the whole time.
    let scu = appliance.storescu();
    let batch = paths(&files);
    let good = tokio::spawn(async move { scu.send(&batch).await });
    let port = appliance.port;
    let ct = files[0].sop_class_uid.clone();
    let ts = files[0].transfer_syntax_uid.clone();
    let abuse = tokio::task::spawn_blocking(move || -> Result<()> {
        // 1. Garbage instead of a PDU: aborted and closed.
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: medgate\r\n\r\n")?;
        let answer = read_until_closed(&mut s);
        assert!(
            answer.is_empty() || answer[0] == 0x07,
            "garbage answered with {answer:?}"
        );

        // 2. An absurd PDU length: refused at once, nothing allocated.
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xF0])?;
        let answer = read_until_closed(&mut s);
        assert!(answer.is_empty() || answer[0] == 0x07, "{answer:?}");

        // 3. A truncated A-ASSOCIATE-RQ, then silence: closed after the ARTIM timeout (5 s).
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.write_all(&[0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01])?;
        let started = Instant::now();
        let _ = read_until_closed(&mut s);
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "truncated PDU held the connection {:?}",
            started.elapsed()
        );

        // 4. An unknown SOP class: the presentation context is rejected (abstract syntax not supported).
        let (mut s, ac) = raw_associate(port, "1.2.3.4.5.6.7.8.9", &ts)?;
        assert_eq!(ac[0], 0x02, "expected A-ASSOCIATE-AC");
        let header = pdata::PduHeader::parse(
            &[ac[0], ac[1], ac[2], ac[3], ac[4], ac[5]],
            &pdata::FrameLimits::default(),
        )?;
        match pdata::decode_other(header, &ac[6..])? {
            Pdu::AssociationAC(ac) => {
                assert_eq!(ac.presentation_contexts[0].reason.clone() as u8, 3)
            }
            other => bail!("unexpected {other:?}"),
        }
        // Using the rejected context anyway is a protocol violation: A-ABORT.
        let cmd = command::store_rq(1, "1.2.3.4.5.6.7.8.9", "1.2.3.4.5.6.7.8.9.1").encode();
        s.write_all(&encode_command_pdus(1, &cmd, 16384))?;
        let answer = read_until_closed(&mut s);
        assert_eq!(answer.first(), Some(&0x07), "{answer:?}");

        // 5. Abort in the middle of an object: nothing of it is kept.
        let (mut s, ac) = raw_associate(port, &ct, &ts)?;
        assert_eq!(ac[0], 0x02);
        let cmd = command::store_rq(1, &ct, "1.2.826.0.1.3680043.99.1").encode();
        s.write_all(&encode_command_pdus(1, &cmd, 16384))?;
        let half = vec![0u8; 8000];
        let mut pdu = pdata_header(1, false, false, half.len()).to_vec();
        pdu.extend_from_slice(&half);
        s.write_all(&pdu)?;
        s.write_all(&[0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00])?;
        drop(s);

        // 6. A P-DATA item longer than its PDU.
        let (mut s, _) = raw_associate(port, &ct, &ts)?;
        s.write_all(&[
            0x04, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x03, 0x00, 0x00,
        ])?;
        let answer = read_until_closed(&mut s);
        assert_eq!(answer.first(), Some(&0x07), "{answer:?}");

        // 7. A data set that is not DICOM: C-STORE-RSP with a C000 status, association goes on.
        let (mut s, _) = raw_associate(port, &ct, &ts)?;
        let cmd = command::store_rq(5, &ct, "1.2.826.0.1.3680043.99.2").encode();
        s.write_all(&encode_command_pdus(1, &cmd, 16384))?;
        let junk = b"this is not a DICOM data set at all, not even close........".to_vec();
        let mut pdu = pdata_header(1, false, true, junk.len()).to_vec();
        pdu.extend_from_slice(&junk);
        s.write_all(&pdu)?;
        let mut head = [0u8; 6];
        s.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)?;
        let pdvs = pdata::parse_pdata(&body)?;
        let rsp = command::CommandSet::decode(pdvs[0].data)?;
        assert_eq!(rsp.command_field(), field::C_STORE_RSP);
        assert_eq!(rsp.status(), Some(command::status::CANNOT_UNDERSTAND));
        s.write_all(&pdata::encode_other(&Pdu::ReleaseRQ)?)?;
        let answer = read_until_closed(&mut s);
        assert_eq!(
            answer.first(),
            Some(&0x06),
            "expected A-RELEASE-RP, got {answer:?}"
        );
        Ok(())
    });
    abuse.await??;
    let report = good.await??;
    report.expect_all_success(files.len())?;
    let echo = echoscu(appliance.port, &appliance.ae, "ECHOSCU").await?;
    assert!(echo.success);
    appliance.wait_drained(Duration::from_secs(60)).await?;
    archive
        .wait_for_files(files.len(), Duration::from_secs(30))
        .await?;
    let s = appliance.status().await?;
    assert_eq!(
        s["objects_received"],
        files.len(),
        "only the good objects are kept: {s}"
    );
    assert_eq!(s["healthy"], true);
    let tmp = t.path().join("appliance/data/spool/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp)?.count(),
        0,
        "a partial object was kept"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gigabyte_object_with_bounded_memory() -> Result<()> {
    let (t, mut archive, appliance) = rig("big", "").await?;
    let big = big_object(&t.path().join("big.dcm"), 1 << 30)?;
    let report = appliance
        .storescu()
        .send(std::slice::from_ref(&big.path))
        .await?;
    report.expect_all_success(1)?;
    appliance.wait_drained(Duration::from_secs(300)).await?;
    archive.wait_for_files(1, Duration::from_secs(60)).await?;
    let stats = medgate_e2e::proc_stats(appliance.pid())?;
    assert!(
        stats.peak_rss_kib < 64 * 1024,
        "peak RSS {} KiB for a 1 GiB object",
        stats.peak_rss_kib
    );
    let got = archive
        .file_for(&big.sop_instance_uid)
        .context("1 GB object did not arrive")?;
    let dataset_len = |p: &Path| -> Result<u64> {
        Ok(std::fs::metadata(p)?.len() - medgate_e2e::dataset_offset(p)?)
    };
    assert_eq!(dataset_len(&got)?, dataset_len(&big.path)?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_objects_are_quarantined_visible_and_retryable() -> Result<()> {
    let t = tempdir("quarantine")?;
    let archive_port = free_port();
    // An archive that only takes uncompressed data: an RLE object is refused for good.
    let strict = StorescpOptions {
        ae: "ARCHIVE".into(),
        accept_all_transfer_syntaxes: false,
        ..StorescpOptions::default()
    };
    let mut archive = Storescp::start_with(&t.path().join("archive"), archive_port, strict).await?;
    let appliance = Appliance::start(
        &t.path().join("appliance"),
        &dimse_destination("archive", archive_port, "ARCHIVE"),
    )
    .await?;
    let mut study = Study::new(Patient::synthetic(51), "ACC51", 51);
    let dir = t.path().join("studies");
    let rle = study.rle_image(&dir, &Default::default())?;
    let mut files = ct_files(&dir, 52, 2)?;
    files.push(rle.clone());
    appliance
        .storescu()
        .send(&paths(&files))
        .await?
        .expect_all_success(files.len())?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    let s = appliance.status().await?;
    assert_eq!(s["destinations"][0]["quarantined"], 1, "{s}");
    let q = appliance.get("/api/quarantine").await?;
    let reason = q[0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("RLE Lossless"), "{q}");
    let out = appliance.cli(&["quarantine", "list"])?;
    let table = String::from_utf8_lossy(&out.stdout);
    let mut lines = table.lines();
    let header = lines.next().unwrap_or("");
    for column in [
        "ID",
        "DESTINATION",
        "FROM AE",
        "SOP CLASS",
        "SIZE",
        "REASON",
    ] {
        assert!(
            header.contains(column),
            "{column} not in the header of\n{table}"
        );
    }
    let row = lines.next().unwrap_or("");
    assert!(
        row.contains("archive") && row.contains("RLE Lossless"),
        "{table}"
    );
    assert!(row.contains("Image Storage"), "SOP class by name: {table}");
    assert!(table.contains("1 object(s)"), "{table}");
    let out = appliance.cli(&["quarantine", "list", "--json"])?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json, q, "--json prints what the API holds");

    // The archive is fixed; an operator retries.
    archive.stop().await?;
    drop(archive);
    let mut archive = Storescp::start(&t.path().join("archive2"), archive_port, "ARCHIVE").await?;
    let out = appliance.cli(&["quarantine", "retry"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 object(s) queued again"));
    archive.wait_for_files(1, Duration::from_secs(30)).await?;
    assert!(archive.file_for(&rle.sop_instance_uid).is_some());
    let s = appliance.wait_drained(Duration::from_secs(30)).await?;
    assert_eq!(s["destinations"][0]["quarantined"], 0, "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocking_modalities_are_recorded_for_onboarding() -> Result<()> {
    let (t, _archive, appliance) =
        rig("peers", "allowed_calling_ae_titles = [\"CT_ROOM_1\"]\n").await?;
    let files = ct_files(&t.path().join("ct"), 61, 1)?;
    rejected(&appliance, "US_CART_9", &files).await?;
    appliance
        .storescu()
        .calling_ae("CT_ROOM_1")
        .send(&paths(&files))
        .await?
        .expect_all_success(1)?;
    let peers = appliance.get("/api/peers").await?;
    let list = peers.as_array().context("peers")?;
    let us = list
        .iter()
        .find(|p| p["calling_ae"] == "US_CART_9")
        .context("refused AE not recorded")?;
    assert_eq!(us["rejected"], 1);
    assert!(
        us["last_rejection"]
            .as_str()
            .unwrap_or("")
            .contains("allow-list")
    );
    assert_eq!(us["address"], "127.0.0.1");
    let ct = list
        .iter()
        .find(|p| p["calling_ae"] == "CT_ROOM_1")
        .context("accepted AE not recorded")?;
    assert_eq!(ct["accepted"], 1);
    assert_eq!(ct["sop_classes"][&files[0].sop_class_uid], true);
    let out = appliance.cli(&["peers"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("US_CART_9 from 127.0.0.1"), "{text}");
    // SOP classes by name next to their UID, and the modalities a peer sent.
    assert!(
        text.contains(&format!("CT Image Storage ({})", files[0].sop_class_uid)),
        "{text}"
    );
    assert!(text.contains("modalities sent: CT"), "{text}");
    let out = appliance.cli(&["peers", "--json"])?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json.as_array().map(Vec::len), Some(list.len()));
    Ok(())
}

#[test]
fn config_check_names_every_problem() -> Result<()> {
    let t = tempdir("config")?;
    let bad = t.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[appliance]\nname = \"x\"\ndata_dir = \"relative/path\"\n[listener]\nae_title = \"WAY_TOO_LONG_AE_TITLE\"\nbind = \"0.0.0.0:104\"\n[spool]\nsegment_mib = 4096\nwarm_mib = 9999\n[[destination]]\nname = \"Archive\"\nkind = \"dimse\"\n",
    )?;
    let out = Command::new(workspace_bin("medgate-appliance")?)
        .args(["config", "check"])
        .arg(&bad)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "appliance.data_dir",
        "listener.ae_title",
        "spool.segment_mib",
        "spool.warm_mib",
        "destination[0].name",
        "destination[0].address",
        "destination[0].called_ae_title",
    ] {
        assert!(err.contains(expected), "missing {expected} in:\n{err}");
    }
    let example = Command::new(workspace_bin("medgate-appliance")?)
        .args(["config", "example"])
        .output()?;
    let good = t.path().join("good.toml");
    std::fs::write(&good, example.stdout)?;
    let out = Command::new(workspace_bin("medgate-appliance")?)
        .args(["config", "check"])
        .arg(&good)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_receives_by_c_store_and_stow_rs_with_equal_datasets() -> Result<()> {
    let t = tempdir("orthanc")?;
    let dimse = Orthanc::start(OrthancOptions::default()).await?;
    let web = Orthanc::start(OrthancOptions::default()).await?;
    let extra = format!(
        "{}\n[[destination]]\nname = \"archive-web\"\nkind = \"stow\"\nurl = \"{}\"\nparallel = 2\n",
        dimse_destination("archive", dimse.dicom_port(), dimse.aet()),
        web.dicomweb_url()
    );
    let appliance = Appliance::start(&t.path().join("appliance"), &extra).await?;
    // The large one is streamed from its file by both senders, the others sent from memory.
    let files = one_of_each_and_a_large_one(&t.path().join("studies"), 71)?;
    appliance
        .storescu()
        .send(&paths(&files))
        .await?
        .expect_all_success(files.len())?;
    let s = appliance.wait_drained(Duration::from_secs(60)).await?;
    for d in s["destinations"].as_array().context("destinations")? {
        assert_eq!(d["forwarded"], files.len(), "{s}");
    }
    for archive in [&dimse, &web] {
        assert_eq!(archive.count_instances().await?, files.len());
        for f in &files {
            let id = archive
                .find_instance(&f.sop_instance_uid)
                .await?
                .with_context(|| format!("{} not in Orthanc", f.sop_instance_uid))?;
            let got = t.path().join(format!("{id}.dcm"));
            archive.save_instance_file(&id, &got).await?;
            medgate_e2e::assert_dataset_equal(&f.path, &got)?;
        }
    }
    Ok(())
}

fn openssl(args: &[&str], dir: &Path) -> Result<()> {
    let out = Command::new("/usr/bin/openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, in `dir`.
fn make_pki(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=Medgate test CA",
        ],
        dir,
    )?;
    for (name, cn) in [("server", "localhost"), ("client", "medgate-device")] {
        openssl(
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
            dir,
        )?;
        std::fs::write(
            dir.join(format!("{name}.ext")),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )?;
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
            dir,
        )?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicom_tls_on_the_listener_and_to_the_archive() -> Result<()> {
    let t = tempdir("tls")?;
    let pki = t.path().join("pki");
    make_pki(&pki)?;
    let p = |f: &str| pki.join(f).display().to_string();
    // The archive speaks DICOM TLS and requires our client certificate.
    let archive_port = free_port();
    let tls_archive = StorescpOptions {
        ae: "ARCHIVE".into(),
        extra_args: vec![
            "+tls".into(),
            p("server.key"),
            p("server.crt"),
            "+cf".into(),
            p("ca.crt"),
        ],
        ..StorescpOptions::default()
    };
    let mut archive =
        Storescp::start_with(&t.path().join("archive"), archive_port, tls_archive).await?;
    let tls_port = free_port();
    let listener_tls = format!(
        "tls_bind = \"127.0.0.1:{tls_port}\"\n[listener.tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\nclient_ca = \"{}\"\n",
        p("server.crt"),
        p("server.key"),
        p("ca.crt")
    );
    let destination = format!(
        "{}[destination.tls]\nca = \"{}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\nserver_name = \"localhost\"\n",
        dimse_destination("archive", archive_port, "ARCHIVE"),
        p("ca.crt"),
        p("client.crt"),
        p("client.key")
    );
    let appliance =
        Appliance::start_with(&t.path().join("appliance"), &listener_tls, &destination).await?;
    wait_listening(tls_port, Duration::from_secs(10), || Ok(())).await?;
    let files = ct_files(&t.path().join("ct"), 81, 5)?;
    let mut scu = Storescu::new(tls_port, "MEDGATE");
    scu.extra_args = vec![
        "+tls".into(),
        p("client.key"),
        p("client.crt"),
        "+cf".into(),
        p("ca.crt"),
    ];
    scu.send(&paths(&files))
        .await?
        .expect_all_success(files.len())?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    archive
        .wait_for_files(files.len(), Duration::from_secs(30))
        .await?;
    for f in &files {
        let got = archive
            .file_for(&f.sop_instance_uid)
            .context("not forwarded over TLS")?;
        medgate_e2e::assert_dataset_equal(&f.path, &got)?;
    }
    // Plain DICOM to the TLS port is refused.
    let plain = Storescu::new(tls_port, "MEDGATE")
        .send(&paths(&files[..1]))
        .await?;
    assert_eq!(plain.successes(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn association_cap_rejects_transiently_then_admits() -> Result<()> {
    let (t, _archive, appliance) = rig("cap", "max_associations = 1\n").await?;
    let files = ct_files(&t.path().join("ct"), 91, 1)?;
    // One association holds the only slot.
    let port = appliance.port;
    let (held, ac) = tokio::task::spawn_blocking(move || {
        raw_associate(port, "1.2.840.10008.1.1", "1.2.840.10008.1.2")
    })
    .await??;
    assert_eq!(ac[0], 0x02);
    let busy = rejected(&appliance, "STORESCU", &files).await?;
    assert!(busy.contains("Transient"), "{busy}");
    drop(held);
    // The slot is free again once the peer went away.
    let started = Instant::now();
    loop {
        let r = appliance.storescu().send(&paths(&files)).await?;
        if r.successes() == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "slot not released: {}",
            r.log
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = appliance.status().await?;
    assert_eq!(s["objects_received"], 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_address_allow_list_rejects_and_records() -> Result<()> {
    let (t, _archive, appliance) =
        rig("networks", "allowed_networks = [\"10.20.0.0/16\"]\n").await?;
    let files = ct_files(&t.path().join("ct"), 95, 1)?;
    rejected(&appliance, "CT_ROOM_1", &files).await?;
    let peers = appliance.get("/api/peers").await?;
    let p = &peers[0];
    assert_eq!(p["calling_ae"], "CT_ROOM_1");
    assert_eq!(p["rejected"], 1);
    assert!(
        p["last_rejection"]
            .as_str()
            .unwrap_or("")
            .contains("not in listener.allowed_networks"),
        "{peers}"
    );
    // What it offered is recorded, so onboarding can approve it.
    assert!(
        p["sop_classes"].get(&files[0].sop_class_uid).is_some(),
        "{peers}"
    );
    Ok(())
}

/// Every file and directory under `dir` whose mode lets group or others in.
fn readable_by_others(dir: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mut wide = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            wide.push(format!("{} {:o}", p.display(), mode & 0o777));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(wide)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_on_the_same_data_dir_is_refused_and_changes_nothing() -> Result<()> {
    let (t, mut archive, appliance) = rig("second-start", "").await?;
    let files = ct_files(&t.path().join("ct"), 91, 6)?;
    appliance
        .storescu()
        .send(&paths(&files[..3]))
        .await?
        .expect_all_success(3)?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    let data = appliance.dir.join("data");
    let before: std::collections::BTreeSet<String> = std::fs::read_dir(&data)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();

    // The same configuration again, as a second `systemctl start` or a person by hand would.
    let started = Instant::now();
    let second = tokio::task::spawn_blocking({
        let config = appliance.config.clone();
        move || {
            Command::new(workspace_bin("medgate-appliance")?)
                .args(["run", "--config"])
                .arg(&config)
                .env("RUST_BACKTRACE", "1")
                .output()
                .map_err(anyhow::Error::from)
        }
    })
    .await??;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second start succeeded: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal took {:?}",
        started.elapsed()
    );
    for needle in [
        format!(
            "in use by another medgate-appliance (pid {})",
            appliance.pid()
        ),
        "systemctl status medgate-appliance".to_string(),
        "nothing under".to_string(),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} not in {stderr}");
    }
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    assert!(
        !stderr.contains("\u{1b}["),
        "ANSI colour codes in {stderr:?}"
    );
    let after: std::collections::BTreeSet<String> = std::fs::read_dir(&data)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(before, after, "the second start changed {}", data.display());
    assert!(
        !after.iter().any(|n| n.contains("broken")),
        "moved aside: {after:?}"
    );

    // The first instance keeps serving and forwarding, and re-sent nothing.
    appliance
        .storescu()
        .send(&paths(&files[3..]))
        .await?
        .expect_all_success(3)?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    archive.wait_for_files(6, Duration::from_secs(30)).await?;
    let s = appliance.status().await?;
    assert_eq!(s["objects_received"], 6, "{s}");
    assert_eq!(s["destinations"][0]["forwarded"], 6, "{s}");
    let log = appliance.log();
    assert!(!log.contains("rebuilding"), "{log}");
    // Its stderr is a file, not a terminal (as under journald): plain text, no colour codes.
    assert!(
        !log.contains('\u{1b}'),
        "ANSI colour codes in the log: {log:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_data_on_disk_is_owner_only_under_umask_022() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // The harness starts the appliance under `umask 022`, as a person would by hand.
    let (t, _archive, mut appliance) = rig("umask", "").await?;
    let files = ct_files(&t.path().join("ct"), 92, 4)?;
    appliance
        .storescu()
        .send(&paths(&files))
        .await?
        .expect_all_success(files.len())?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    let data = appliance.dir.join("data");
    let wide = readable_by_others(&data)?;
    assert!(wide.is_empty(), "readable by others: {wide:#?}");

    // A spool left wider by an older version or a restored backup: tightened at start, and said.
    appliance.kill9()?;
    let objects = data.join("spool").join("objects");
    std::fs::set_permissions(&objects, std::fs::Permissions::from_mode(0o755))?;
    let one = medgate_e2e::appliance::spool_holders(&data)?
        .into_iter()
        .next()
        .context("no spool file")?;
    std::fs::set_permissions(&one, std::fs::Permissions::from_mode(0o644))?;
    appliance.restart().await?;
    let wide = readable_by_others(&data)?;
    assert!(
        wide.is_empty(),
        "readable by others after restart: {wide:#?}"
    );
    let log = appliance.log();
    assert!(
        log.contains("readable by others") && log.contains("made them owner-only"),
        "{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_objects_make_room_instead_of_a700() -> Result<()> {
    let t = tempdir("make-room")?;
    let archive_port = free_port();
    let _archive = Storescp::start(&t.path().join("archive"), archive_port, "ARCHIVE").await?;
    // A 4 MB spool (a 0.53 MB slice is ~13 %), confirmed objects kept for a week: only the
    // watermark lets them go, and the housekeeping timer only below 90 %.
    let extra = format!(
        "[spool]\nmax_bytes = 4000000\nhigh_watermark_percent = 95\nlow_watermark_percent = 90\nretention_hours = 168\n\n{}",
        dimse_destination("archive", archive_port, "ARCHIVE")
    );
    let appliance = Appliance::start(&t.path().join("appliance"), &extra).await?;
    let files = ct_files(&t.path().join("ct"), 71, 14)?;
    appliance
        .storescu()
        .send(&paths(&files[..6]))
        .await?
        .expect_all_success(6)?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    // Twice what fits, in one association: every object is accepted, room is made from the
    // confirmed ones as needed.
    appliance
        .storescu()
        .send(&paths(&files[6..]))
        .await?
        .expect_all_success(files.len() - 6)?;
    let s = appliance.wait_drained(Duration::from_secs(60)).await?;
    let objects = s["spool_objects"].as_u64().unwrap_or(u64::MAX);
    assert!(objects <= 8, "the spool kept more than its cap: {s}");
    assert_eq!(s["destinations"][0]["forwarded"], files.len(), "{s}");
    // The readout names each measure.
    assert_eq!(s["spool"]["max_bytes"], 4_000_000, "{s}");
    assert!(s["spool"]["cap_used_percent"].as_f64().is_some(), "{s}");
    assert!(
        s["spool"]["filesystem_used_percent"].as_f64().is_some(),
        "{s}"
    );
    let out = appliance.cli(&["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "of its own (",
        "of its cap spool.max_bytes",
        "filesystem:  ",
        "used by everything on it",
        "watermarks:  refuses new objects (A700) at 95.0% of the fuller of filesystem and cap",
        "config:      the local file",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_now_ends_the_backoff_after_the_archive_is_back() -> Result<()> {
    let t = tempdir("retry-now")?;
    let archive_port = free_port(); // the archive is down
    // A long backoff: without retry-now the next attempt would come 30-60 s later. One
    // association: storescp (no --fork) serves one at a time, a second would time out.
    let extra = format!(
        "[forward]\ninitial_backoff_ms = 60000\nmax_backoff_secs = 300\n\n{}",
        dimse_destination("archive", archive_port, "ARCHIVE")
            .replace("parallel = 2", "parallel = 1")
    );
    let appliance = Appliance::start(&t.path().join("appliance"), &extra).await?;
    let files = ct_files(&t.path().join("ct"), 81, 5)?;
    appliance
        .storescu()
        .send(&paths(&files))
        .await?
        .expect_all_success(files.len())?;
    let s = appliance
        .wait_status("the archive seen down", Duration::from_secs(15), |s| {
            s["destinations"][0]["last_error"].is_string()
        })
        .await?;
    let d = &s["destinations"][0];
    assert_eq!(d["up"], false, "{s}");
    assert_eq!(d["last_error_cleared"], false, "{s}");
    assert!(d["last_error_at_ms"].as_u64().is_some(), "{s}");
    let out = appliance.cli(&["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DOWN, retrying"), "{text}");
    assert!(
        text.contains("last error ") && text.contains(" s ago: "),
        "{text}"
    );

    let unknown = appliance.cli(&["retry-now", "nosuch"])?;
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("no destination \"nosuch\"") && err.contains("archive"),
        "{err}"
    );

    let mut archive = Storescp::start(&t.path().join("archive"), archive_port, "ARCHIVE").await?;
    let asked = Instant::now();
    let out = appliance.cli(&["retry-now", "archive"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backoff ended for archive"));
    let s = appliance.wait_drained(Duration::from_secs(20)).await?;
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "drained only after {:?}",
        asked.elapsed()
    );
    archive
        .wait_for_files(files.len(), Duration::from_secs(20))
        .await?;
    let d = &s["destinations"][0];
    assert_eq!(d["up"], true, "{s}");
    assert_eq!(
        d["last_error_cleared"], true,
        "the error is history now: {s}"
    );
    let out = appliance.cli(&["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sends succeeded since"), "{text}");
    let log = appliance.log();
    assert!(log.contains("destination reachable again"), "{log}");
    Ok(())
}
