//! Coercion and routing rules against real peers: DCMTK storescu as the modality, Orthanc and
//! DCMTK storescp as archives, the real `medgate-appliance` binary in between.

use anyhow::{Context, Result};
use dicom_dictionary_std::tags;
use medgate_e2e::appliance::{dimse_destination, paths, tempdir};
use medgate_e2e::{
    Appliance, Orthanc, OrthancOptions, Storescp, Storescu, free_port, workspace_bin,
};
use medgate_sim::studies::{GeneratedFile, Patient, Study};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Removes Institution Name and Issuer of Patient ID from a file (a modality that sends neither).
fn strip_institution_and_issuer(path: &Path) -> Result<()> {
    let mut obj = dicom_object::open_file(path)?;
    obj.remove_element(tags::INSTITUTION_NAME);
    obj.remove_element(tags::ISSUER_OF_PATIENT_ID);
    obj.write_to_file(path)?;
    Ok(())
}

const COERCION: &str = r#"
[rules]
version = "e2e hospital A"

[[rules.coerce]]
name = "issuer hospital A"
when = { calling_ae = ["CT_HOSP_A"] }
set = { IssuerOfPatientID = "HOSP-A" }
fill = { InstitutionName = "Hospital A" }

[[rules.coerce]]
name = "another sender"
when = { calling_ae = ["OTHER_AE"] }
set = { StationName = "WRONG" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coercion_reaches_orthanc_and_every_other_element_is_unchanged() -> Result<()> {
    let t = tempdir("coerce")?;
    let orthanc = Orthanc::start(OrthancOptions::default()).await?;
    let extra = format!(
        "{}{COERCION}",
        dimse_destination("archive", orthanc.dicom_port(), orthanc.aet())
    );
    let appliance = Appliance::start(&t.path().join("appliance"), &extra).await?;

    // One of each kind (explicit and implicit VR, RLE encapsulated pixel data, multi-frame US,
    // ECG waveform); the CT slices and the implicit VR MR come without Institution Name and
    // Issuer of Patient ID, so those are inserted; the others have both, so the issuer is
    // replaced and the institution left alone.
    let mut study = Study::new(Patient::synthetic(81), "ACC81", 81);
    let files = study.one_of_each(&t.path().join("studies"))?;
    let mut stripped = Vec::new();
    for f in &files {
        if f.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
            || f.transfer_syntax_uid == "1.2.840.10008.1.2"
        {
            strip_institution_and_issuer(&f.path)?;
            stripped.push(f.sop_instance_uid.clone());
        }
    }
    assert!(
        stripped.len() >= 4,
        "CT slices and the implicit MR are stripped"
    );

    // The dry run shows what will happen, on the local console.
    let dry = Command::new(workspace_bin("medgate-appliance")?)
        .args(["rules", "dry-run", "--calling-ae", "CT_HOSP_A", "--config"])
        .arg(&appliance.config)
        .arg(&files[0].path)
        .output()?;
    let dry_text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{dry_text}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        dry_text.contains(
            "rule \"issuer hospital A\": (0010,0021) IssuerOfPatientID: (absent) -> \"HOSP-A\""
        ) && dry_text.contains(
            "rule \"issuer hospital A\": (0008,0080) InstitutionName: (absent) -> \"Hospital A\""
        ),
        "{dry_text}"
    );
    assert!(!dry_text.contains("WRONG"), "{dry_text}");

    appliance
        .storescu()
        .calling_ae("CT_HOSP_A")
        .send(&paths(&files))
        .await?
        .expect_all_success(files.len())?;
    let s = appliance.wait_drained(Duration::from_secs(60)).await?;
    assert_eq!(s["destinations"][0]["forwarded"], files.len(), "{s}");
    assert_eq!(s["rules"]["objects_coerced"], files.len(), "{s}");
    assert_eq!(s["rules"]["coercion_refused"], 0, "{s}");
    assert_eq!(s["rules"]["version"], "e2e hospital A");
    assert!(
        s["rules"]["hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:"))
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
    assert!(
        metrics.contains(&format!(
            "\nmedgate_rules_objects_coerced_total {}\n",
            files.len()
        )),
        "{metrics}"
    );

    let spooled = appliance.spool_files()?;
    for f in &files {
        let id = orthanc
            .find_instance(&f.sop_instance_uid)
            .await?
            .with_context(|| format!("{} not in Orthanc", f.sop_instance_uid))?;
        let tags = orthanc.instance_tags(&id).await?;
        assert_eq!(tags["IssuerOfPatientID"], "HOSP-A", "{}", f.path.display());
        let institution = if stripped.contains(&f.sop_instance_uid) {
            "Hospital A"
        } else {
            "Synthetic Regional Hospital"
        };
        assert_eq!(tags["InstitutionName"], institution, "{}", f.path.display());
        assert_eq!(tags["StationName"], "SIM-ROOM-1");

        // Element by element, what Orthanc holds differs from what the modality sent only in
        // the two coerced elements.
        let got = t.path().join(format!("{id}.dcm"));
        orthanc.save_instance_file(&id, &got).await?;
        let diffs = medgate_e2e::dataset_diff(&f.path, &got)?;
        assert!(
            diffs.iter().any(|d| d.starts_with("(0010,0021)")),
            "{}: the issuer was not changed: {diffs:?}",
            f.path.display()
        );
        let others: Vec<&String> = diffs
            .iter()
            .filter(|d| !d.starts_with("(0010,0021)") && !d.starts_with("(0008,0080)"))
            .collect();
        assert!(
            others.is_empty(),
            "{} ({}): elements other than the coerced ones changed: {others:?}",
            f.path.display(),
            f.transfer_syntax_uid
        );
        // And Orthanc got the spool's bytes as they are.
        let kept = spooled
            .get(&f.sop_instance_uid)
            .with_context(|| format!("{} not in the spool", f.sop_instance_uid))?;
        assert!(
            medgate_e2e::dataset_bytes_identical(kept, &got)?,
            "{}: Orthanc's data set differs from the spool's",
            f.path.display()
        );
    }

    // The rule change was audited at start-up.
    let audit = Command::new(workspace_bin("medgate-appliance")?)
        .args(["rules", "audit", "--config"])
        .arg(&appliance.config)
        .output()?;
    let audit_text = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{audit_text}");
    assert_eq!(audit_text.lines().count(), 1, "{audit_text}");
    assert!(
        audit_text.contains("start-up")
            && audit_text.contains(s["rules"]["hash"].as_str().unwrap_or("?")),
        "{audit_text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_sends_ct_and_us_to_their_archives_and_the_rest_to_the_default() -> Result<()> {
    let t = tempdir("route")?;
    let (ct_port, us_port, default_port) = (free_port(), free_port(), free_port());
    let mut ct = Storescp::start(&t.path().join("ct"), ct_port, "CTARCH").await?;
    let mut us = Storescp::start(&t.path().join("us"), us_port, "USARCH").await?;
    let mut archive = Storescp::start(&t.path().join("archive"), default_port, "ARCHIVE").await?;
    let extra = format!(
        "{}{}{}\n[rules]\ndefault_route = [\"archive\"]\n\n[[rules.route]]\nname = \"ct\"\nwhen = {{ modality = [\"CT\"] }}\nto = [\"ct-archive\"]\n\n[[rules.route]]\nname = \"us\"\nwhen = {{ modality = [\"US\"] }}\nto = [\"us-archive\"]\n",
        dimse_destination("ct-archive", ct_port, "CTARCH"),
        dimse_destination("us-archive", us_port, "USARCH"),
        dimse_destination("archive", default_port, "ARCHIVE"),
    );
    let appliance = Appliance::start(&t.path().join("appliance"), &extra).await?;

    let mut study = Study::new(Patient::synthetic(82), "ACC82", 82);
    let files = study.one_of_each(&t.path().join("studies"))?;
    appliance
        .storescu()
        .calling_ae("ANY_MODALITY")
        .send(&paths(&files))
        .await?
        .expect_all_success(files.len())?;
    let s = appliance.wait_drained(Duration::from_secs(60)).await?;

    let modality = |f: &GeneratedFile| -> Result<String> {
        let obj = dicom_object::open_file(&f.path)?;
        Ok(obj.element(tags::MODALITY)?.to_str()?.trim().to_string())
    };
    let mut expected: BTreeMap<&str, Vec<&GeneratedFile>> = BTreeMap::new();
    for f in &files {
        let to = match modality(f)?.as_str() {
            "CT" => "ct-archive",
            "US" => "us-archive",
            _ => "archive",
        };
        expected.entry(to).or_default().push(f);
    }
    assert_eq!(expected.len(), 3, "the study has CT, US and others");
    for d in s["destinations"].as_array().context("destinations")? {
        let name = d["name"].as_str().unwrap_or_default();
        let n = expected.get(name).map(Vec::len).unwrap_or(0);
        assert_eq!(d["forwarded"], n, "{name}: {s}");
        assert_eq!(d["queue_depth"], 0, "{name}: {s}");
    }
    assert_eq!(
        s["rules"]["routed_default"],
        expected["archive"].len(),
        "{s}"
    );

    let spooled = appliance.spool_files()?;
    for (name, scp) in [
        ("ct-archive", &mut ct),
        ("us-archive", &mut us),
        ("archive", &mut archive),
    ] {
        let want = &expected[name];
        scp.wait_for_files(want.len(), Duration::from_secs(30))
            .await?;
        // Give a wrongly routed object a moment to show up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let scp_files = scp.received_files()?;
        assert_eq!(scp_files.len(), want.len(), "{name} received {scp_files:?}");
        for f in want {
            let got = scp
                .file_for(&f.sop_instance_uid)
                .with_context(|| format!("{} did not reach {name}", f.path.display()))?;
            let kept = &spooled[&f.sop_instance_uid];
            assert!(medgate_e2e::dataset_bytes_identical(kept, &got)?);
            medgate_e2e::assert_dataset_equal(&f.path, &got)?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflated_object_is_not_coerced_but_stored_and_forwarded_unchanged() -> Result<()> {
    let t = tempdir("deflate")?;
    let port = free_port();
    let mut archive = Storescp::start(&t.path().join("archive"), port, "ARCHIVE").await?;
    let extra = format!(
        "{}{COERCION}",
        dimse_destination("archive", port, "ARCHIVE")
    );
    let appliance = Appliance::start(&t.path().join("appliance"), &extra).await?;

    let mut study = Study::new(Patient::synthetic(83), "ACC83", 83);
    let files = study.one_of_each(&t.path().join("studies"))?;
    let dx = files
        .iter()
        .find(|f| f.sop_class_uid.starts_with("1.2.840.10008.5.1.4.1.1.1.1"))
        .context("the study has a DX image")?;
    let deflated = t.path().join("dx-deflated.dcm");
    let out = Command::new(medgate_e2e::require_tool("/usr/bin/dcmconv"))
        .arg("+td")
        .arg(&dx.path)
        .arg(&deflated)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // storescu proposing deflated explicit VR little endian (`-xd`), so the bytes stay deflated.
    Storescu::new(appliance.port, "MEDGATE")
        .args(["-xd"])
        .calling_ae("CT_HOSP_A")
        .send(std::slice::from_ref(&deflated))
        .await?
        .expect_all_success(1)?;
    let s = appliance.wait_drained(Duration::from_secs(60)).await?;
    assert_eq!(s["rules"]["coercion_refused"], 1, "{s}");
    assert_eq!(s["rules"]["objects_coerced"], 0, "{s}");
    archive.wait_for_files(1, Duration::from_secs(30)).await?;
    let got = archive
        .file_for(&dx.sop_instance_uid)
        .context("the deflated object reached the archive")?;
    let kept = &appliance.spool_files()?[&dx.sop_instance_uid];
    assert!(medgate_e2e::dataset_bytes_identical(kept, &got)?);
    assert!(
        medgate_e2e::dataset_bytes_identical(&deflated, kept)?,
        "the deflated data set was changed on its way in"
    );
    let log = std::fs::read_to_string(appliance.dir.join("appliance-1.log"))?;
    assert!(log.contains("coercion refused"), "{log}");
    Ok(())
}
