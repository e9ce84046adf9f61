//! End-to-end tests of the appliance's update agent with real processes and the directory slot
//! backend (docs/ota.md): `medgate-appliance update --file` while a long storescu transfer runs
//! (waits, then switches, proves health, commits), a new version that fails its health check
//! (rolled back by itself), a tampered bundle (refused, nothing written).
//!
//! A "version" is a slot directory `versions/<v>/` whose `medgate-appliance` is the bundle's
//! payload (an executable); the test starts `<slots>/current/medgate-appliance run` as systemd
//! would. The good new version is a copy of the appliance binary; the bad one a script that
//! runs it with a configuration whose listener is elsewhere (so the old address does not answer).

use anyhow::{Context, Result};
use medgate_e2e::appliance::{ct_files, dimse_destination, paths, tempdir};
use medgate_e2e::ota::{current, seed_slots, sign, trust, update_cli, update_section, wait_update};
use medgate_e2e::{Appliance, Storescp, echoscu, free_port, workspace_bin};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

#[tokio::test]
async fn a_long_transfer_delays_the_switch_then_the_new_version_commits() -> Result<()> {
    let tmp = tempdir("update-busy")?;
    let dir = tmp.path();
    let slots = dir.join("slots");
    let program = seed_slots(&slots)?;
    let keys = trust(dir)?;
    let bundle = dir.join("medgate-0.2.0.mgb");
    sign(
        &keys,
        &workspace_bin("medgate-appliance")?,
        "0.2.0",
        &bundle,
    )?;
    let scp_port = free_port();
    let mut scp = Storescp::start(&dir.join("archive"), scp_port, "ARCHIVE").await?;
    let a = Appliance::start_program(
        dir,
        Some(program),
        "",
        "",
        &format!(
            "{}{}",
            dimse_destination("archive", scp_port, "ARCHIVE"),
            update_section(&slots)
        ),
    )
    .await?;
    let pid = a.pid();
    let files = ct_files(&dir.join("ct"), 14, 300)?;
    let scu = a.storescu();
    let list = paths(&files);
    let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
    let transfer = tokio::spawn(async move { scu.send_telling_pid(&list, Some(pid_tx)).await });
    let scu_pid = Pid::from_raw(i32::try_from(pid_rx.await?)?);
    a.wait_status("association open", Duration::from_secs(30), |s| {
        s["associations_active"].as_u64() == Some(1)
    })
    .await?;
    // The transfer is held mid-study (storescu stopped after its first store, its association
    // open) so that the update arrives while it runs however fast this machine sends 300
    // instances; resumed below.
    let out = update_cli(&a.config, &bundle)?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("the running service switches when DICOM is idle"),
        "{said}"
    );
    // While the transfer runs: waiting, with the reason, in the status and the metrics.
    let s = wait_update(
        &a,
        "waiting for the association",
        Duration::from_secs(20),
        |u| u["state"] == "waiting_idle" && u["reason"] == "associations_active",
    )
    .await?;
    assert_eq!(
        s["associations_active"], 1,
        "the transfer is still running: {s}"
    );
    assert_eq!(
        s["update"]["detail"], "1 association active",
        "{}",
        s["update"]
    );
    assert_eq!(
        current(&slots)?,
        "versions/0.1.0",
        "not switched while busy"
    );
    let metrics = a.metrics().await?;
    assert!(
        metrics.contains("medgate_update_state{state=\"waiting_idle\",reason=\"associations_active\",version=\"0.2.0\",running=\"0.1.0\"} 1"),
        "{metrics}"
    );
    assert!(
        !transfer.is_finished(),
        "the transfer was held open while the update waited"
    );
    kill(scu_pid, Signal::SIGCONT)?;
    let report = transfer.await??;
    report.expect_all_success(300)?;
    // Then quiet: the switch, health, the commit; the same process (exec) now runs 0.2.0.
    let s = wait_update(&a, "committed", Duration::from_secs(90), |u| {
        u["state"] == "installed" && u["running"] == "0.2.0"
    })
    .await?;
    assert_eq!(s["update"]["detail"], "healthy and committed");
    assert_eq!(current(&slots)?, "versions/0.2.0");
    assert!(!slots.join("probation").exists(), "committed");
    assert_eq!(
        a.pid(),
        pid,
        "the switch replaced the program in the same process"
    );
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    assert!(
        exe.ends_with("versions/0.2.0/payload"),
        "running {}",
        exe.display()
    );
    // Every acknowledged instance reached the archive.
    a.wait_drained(Duration::from_secs(120)).await?;
    let received = scp.wait_for_files(300, Duration::from_secs(60)).await?;
    assert_eq!(received.len(), 300);
    for f in &files {
        assert!(
            scp.file_for(&f.sop_instance_uid).is_some(),
            "{} not delivered",
            f.sop_instance_uid
        );
    }
    let log = std::fs::read_to_string(dir.join("appliance-1.log"))?;
    assert!(
        log.contains("state=\"waiting_idle\"") || log.contains("state=waiting_idle"),
        "{log}"
    );
    assert!(log.contains("update switched"), "{log}");
    Ok(())
}

#[tokio::test]
async fn a_new_version_that_fails_its_health_check_is_rolled_back_by_itself() -> Result<()> {
    let tmp = tempdir("update-sick")?;
    let dir = tmp.path();
    let slots = dir.join("slots");
    let program = seed_slots(&slots)?;
    let keys = trust(dir)?;
    let archive = dimse_destination("archive", free_port(), "ARCHIVE");
    let a = Appliance::start_program(
        dir,
        Some(program),
        "",
        "",
        &format!("{archive}{}", update_section(&slots)),
    )
    .await?;
    // The new version: the appliance with a configuration whose listener is on another port,
    // so the modalities' address no longer answers C-ECHO.
    let good = std::fs::read_to_string(&a.config)?;
    let elsewhere = good.replace(
        &format!("127.0.0.1:{}", a.port),
        &format!("127.0.0.1:{}", free_port()),
    );
    let bad_config = dir.join("elsewhere.toml");
    std::fs::write(&bad_config, elsewhere)?;
    let script = dir.join("new-version.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} run --config {}\n",
            workspace_bin("medgate-appliance")?.display(),
            bad_config.display()
        ),
    )?;
    let bundle = dir.join("medgate-0.3.0.mgb");
    sign(&keys, &script, "0.3.0", &bundle)?;
    let out = update_cli(&a.config, &bundle)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = wait_update(&a, "rolled back", Duration::from_secs(90), |u| {
        u["state"] == "rolled_back" && u["running"] == "0.1.0"
    })
    .await?;
    let u = &s["update"];
    assert_eq!(u["code"], "health_deadline", "{u}");
    assert_eq!(
        u["detail"], "not healthy within 15 s of the switch: the listener did not answer C-ECHO",
        "{u}"
    );
    assert_eq!(
        current(&slots)?,
        "versions/0.1.0",
        "the old version is in force"
    );
    assert!(!slots.join("probation").exists());
    let exe = std::fs::read_link(format!("/proc/{}/exe", a.pid()))?;
    assert!(
        exe.ends_with("versions/0.1.0/payload"),
        "running {}",
        exe.display()
    );
    let echo = echoscu(a.port, &a.ae, "MODALITY").await?;
    assert!(
        echo.success,
        "the old version answers where the modalities call: {echo:?}"
    );
    let log = std::fs::read_to_string(dir.join("appliance-1.log"))?;
    assert!(log.contains("update rolling back"), "{log}");
    Ok(())
}

#[tokio::test]
async fn a_tampered_bundle_is_refused_and_nothing_is_written() -> Result<()> {
    let tmp = tempdir("update-tampered")?;
    let dir = tmp.path();
    let slots = dir.join("slots");
    seed_slots(&slots)?;
    let keys = trust(dir)?;
    let payload = dir.join("payload.bin");
    std::fs::write(&payload, vec![7u8; 4096])?;
    let bundle = dir.join("medgate-0.2.0.mgb");
    sign(&keys, &payload, "0.2.0", &bundle)?;
    let mut bytes = std::fs::read(&bundle)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&bundle, bytes)?;
    let config = dir.join("appliance.toml");
    std::fs::write(
        &config,
        format!(
            "[appliance]\nname = \"t\"\ndata_dir = \"{}\"\n\n[listener]\nae_title = \"MEDGATE\"\nbind = \"127.0.0.1:{}\"\n\n{}{}",
            dir.join("data").display(),
            free_port(),
            dimse_destination("archive", free_port(), "ARCHIVE"),
            update_section(&slots)
        ),
    )?;
    let out = update_cli(&config, &bundle)?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused (payload_digest_mismatch)"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    let versions: Vec<_> = std::fs::read_dir(slots.join("versions"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(versions, ["0.1.0"], "no version added");
    assert_eq!(
        std::fs::read_dir(slots.join("staging"))
            .context("staging")?
            .count(),
        0
    );
    assert_eq!(current(&slots)?, "versions/0.1.0");
    assert!(!dir.join("data/update/request.json").exists());
    assert!(!dir.join("data/update/state.json").exists());
    Ok(())
}
