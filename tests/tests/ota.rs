//! End-to-end tests of update campaigns (issue 14): the real fleet (`medgate-fleet serve`,
//! embedded broker, SQLite) and real appliances on directory slots, enrolled with the real
//! `medgate-appliance enroll`; bundles made and signed with the real `medgate-bundle`, uploaded
//! through the API, offered over MQTT and downloaded over the fleet's device listener (HTTPS,
//! device certificate, Range).
//!
//! - five appliances: the canary first (held busy by a real storescu transfer, so that it shows
//!   "waiting for idle DICOM"), its soak, then the rest; every one ends on the new version and
//!   every instance acknowledged meanwhile reaches the archive;
//! - a new version that fails its health check: the canary rolls back by itself, the campaign
//!   pauses by itself, no other device is offered anything;
//! - a download cut halfway by the network, then the appliance killed with SIGKILL halfway:
//!   it resumes from the bytes it has (Range) and installs.
//!
//! A "version" is a slot directory whose program is the bundle's payload: here a small script
//! that execs the workspace's appliance binary (the slots, not the binary, say which version
//! runs), so bundles stay small.

use anyhow::{Context, Result, bail};
use medgate_e2e::appliance::{ct_files, dimse_destination, paths, tempdir};
use medgate_e2e::ota::{seed_slots, sign, trust_store, update_section, vendor_keys, wait_update};
use medgate_e2e::{Appliance, Fleet, Storescp, free_port, workspace_bin};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SITE: &str = "st-olav";

/// The fleet with `[updates]`: uploads checked with the vendor's trust store, devices served
/// on their own HTTPS listener; offers name `download_url` (the listener, or a proxy before it).
async fn fleet(dir: &Path, keys: &Path, download_port: u16, url_port: u16) -> Result<Fleet> {
    let trust = dir.join("fleet-trust.json");
    trust_store(keys, &trust)?;
    Fleet::start_extra(
        &dir.join("fleet"),
        &format!(
            "[updates]\ntrust_file = \"{}\"\ndownload_bind = \"127.0.0.1:{download_port}\"\ndownload_url = \"https://127.0.0.1:{url_port}\"\n",
            trust.display()
        ),
    )
    .await
}

/// One modality room: an enrolled appliance running from its slots (0.1.0), forwarding to the
/// archive, with its own trust store.
struct Room {
    name: String,
    slots: PathBuf,
    appliance: Appliance,
}

impl Room {
    async fn start(
        fleet: &Fleet,
        dir: &Path,
        keys: &Path,
        name: &str,
        archive: u16,
    ) -> Result<Room> {
        let home = dir.join(name);
        let settings = fleet.enroll(&home.join("enroll"), SITE, name).await?;
        let slots = home.join("slots");
        let program = seed_slots(&slots)?;
        trust_store(keys, &home.join("data/update/trust.json"))?;
        let appliance = Appliance::start_program(
            &home,
            Some(program),
            &format!("fleet_enrollment = \"{}\"\n", settings.display()),
            "",
            &format!(
                "{}{}",
                dimse_destination("archive", archive, "ARCHIVE"),
                update_section(&slots)
            ),
        )
        .await?;
        Ok(Room {
            name: name.to_owned(),
            slots,
            appliance,
        })
    }

    fn current(&self) -> Result<String> {
        Ok(std::fs::read_link(self.slots.join("current"))?
            .display()
            .to_string())
    }
}

/// A new version: a script that execs the appliance binary with what it is given (padded with
/// `pad` bytes of comment after the `exec`, never read, to make a bundle of some size).
fn version_script(dir: &Path, version: &str, pad: usize) -> Result<PathBuf> {
    let script = dir.join(format!("medgate-appliance-{version}"));
    let mut text = format!(
        "#!/bin/sh\nexec {} \"$@\"\n",
        workspace_bin("medgate-appliance")?.display()
    );
    text.push_str(&format!("# {}\n", "x".repeat(pad)));
    std::fs::write(&script, text)?;
    Ok(script)
}

/// Signs `payload` as `version` and uploads it; returns its SHA-256.
async fn upload(fleet: &Fleet, keys: &Path, payload: &Path, version: &str) -> Result<String> {
    let bundle = payload.with_extension("mgb");
    sign(keys, payload, version, &bundle)?;
    let (s, v) = fleet
        .post_bytes("/api/v1/bundles", std::fs::read(&bundle)?)
        .await?;
    if s != 201 {
        bail!("upload: {s} {v}");
    }
    assert_eq!(v["version"], version, "{v}");
    Ok(v["sha256"].as_str().context("sha256")?.to_owned())
}

async fn devices_online(fleet: &Fleet, rooms: &[Room]) -> Result<()> {
    for r in rooms {
        fleet
            .wait(
                "online with its update agent",
                &format!("/api/v1/devices/{}", r.name),
                Duration::from_secs(60),
                |d| d["connection"] == "online",
            )
            .await?;
    }
    Ok(())
}

async fn create(fleet: &Fleet, body: Value) -> Result<String> {
    let (s, v) = fleet
        .send(reqwest::Method::POST, "/api/v1/campaigns", Some(body))
        .await?;
    if s != 201 {
        bail!("create campaign: {s} {v}");
    }
    assert_eq!(v["campaign"]["state"], "draft", "{v}");
    Ok(v["campaign"]["id"].as_str().context("id")?.to_owned())
}

async fn command(fleet: &Fleet, id: &str, what: &str) -> Result<Value> {
    let (s, v) = fleet
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/campaigns/{id}/{what}"),
            None,
        )
        .await?;
    if s != 200 {
        bail!("{what}: {s} {v}");
    }
    Ok(v)
}

/// Each device's `state` (and `code`) in the campaign view.
fn states(v: &Value) -> BTreeMap<String, String> {
    v["devices"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    let mut s = d["state"].as_str().unwrap_or("?").to_owned();
                    if let Some(c) = d["code"].as_str().or(d["fail"].as_str()) {
                        s = format!("{s} ({c})");
                    }
                    (d["device"].as_str().unwrap_or("?").to_owned(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the campaign until `done`, checking `always` at every poll and printing every change
/// of what the API shows (the walk-through of the closing note).
async fn follow(
    fleet: &Fleet,
    id: &str,
    timeout: Duration,
    always: impl Fn(&Value) -> Result<()>,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let started = Instant::now();
    let mut shown = String::new();
    loop {
        let v = fleet.get(&format!("/api/v1/campaigns/{id}")).await?;
        let now = format!(
            "{} {:?}",
            v["campaign"]["state"].as_str().unwrap_or("?"),
            states(&v)
        );
        if now != shown {
            println!(
                "[{:>5.1} s] campaign {now}",
                started.elapsed().as_secs_f64()
            );
            shown = now;
        }
        always(&v)?;
        if done(&v) {
            return Ok(v);
        }
        if started.elapsed() > timeout {
            bail!(
                "campaign {id}: not done after {timeout:?}; last {v}\n{}",
                fleet.peer.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn device<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["devices"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["device"] == name))
        .unwrap_or(&Value::Null)
}

/// A modality sending to `room` one 5-slice study after another until stopped, resending a study its association
/// could not finish (the moment of a switch, when the listener is between two processes), as
/// a modality retries. Returns the SOP Instance UIDs acknowledged.
fn modality(
    room: &Room,
    dir: &Path,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<Vec<String>>>> {
    let scu = room.appliance.storescu();
    let dir = dir.join(format!("modality-{seed}"));
    Ok(tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut batch = 0u64;
        while !*stop.borrow() {
            let files = ct_files(&dir.join(batch.to_string()), seed * 1000 + batch, 5)?;
            let mut tries = 0;
            loop {
                let report = scu.send(&paths(&files)).await?;
                if report.expect_all_success(files.len()).is_ok() {
                    acknowledged.extend(files.iter().map(|f| f.sop_instance_uid.clone()));
                    break;
                }
                tries += 1;
                if tries > 30 {
                    report.expect_all_success(files.len())?;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            batch += 1;
            // Between studies a modality is quiet for a while (a patient leaves, the next is
            // positioned): long enough for the appliance to see the study complete
            // (study_stable_secs) and switch; a study sent without pause is never cut.
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        Ok(acknowledged)
    }))
}

#[tokio::test]
async fn a_campaign_updates_the_canary_first_then_the_rest_while_dicom_keeps_flowing() -> Result<()>
{
    let tmp = tempdir("ota-campaign")?;
    let dir = tmp.path();
    let keys = vendor_keys(dir)?;
    let download = free_port();
    let fleet = fleet(dir, &keys, download, download).await?;
    let archive_port = free_port();
    let mut archive = Storescp::start(&dir.join("archive"), archive_port, "ARCHIVE").await?;
    let mut rooms = Vec::new();
    for i in 1..=5 {
        rooms.push(Room::start(&fleet, dir, &keys, &format!("room-{i}"), archive_port).await?);
    }
    devices_online(&fleet, &rooms).await?;
    let sha = upload(&fleet, &keys, &version_script(dir, "0.2.0", 0)?, "0.2.0").await?;
    let id = create(
        &fleet,
        json!({
            "name": "0.2.0 for St Olav",
            "bundle": sha,
            "targets": {"sites": [SITE]},
            "canary": ["room-1"],
            "wave_shares": [100],
            "soak_secs": 6,
            "failure_threshold_pct": 20,
        }),
    )
    .await?;

    // A CT study arriving at the canary, held mid-transfer (storescu stopped after its first
    // store, its association open) until the fleet shows the canary waiting for it.
    let study = ct_files(&dir.join("ct-study"), 77, 40)?;
    let scu = rooms[0].appliance.storescu();
    let list = paths(&study);
    let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
    let transfer = tokio::spawn(async move { scu.send_telling_pid(&list, Some(pid_tx)).await });
    let scu_pid = Pid::from_raw(i32::try_from(pid_rx.await?)?);
    rooms[0]
        .appliance
        .wait_status("association open", Duration::from_secs(30), |s| {
            s["associations_active"].as_u64() == Some(1)
        })
        .await?;

    // Modalities keep sending to the four others throughout.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut modalities = Vec::new();
    for (i, r) in rooms.iter().enumerate().skip(1) {
        modalities.push(modality(r, dir, i as u64 + 1, stop_rx.clone())?);
    }

    command(&fleet, &id, "approve").await?;
    let only_canary = |v: &Value| -> Result<()> {
        let canary = device(v, "room-1")["state"].as_str().unwrap_or("");
        for r in &rooms[1..] {
            let s = device(v, &r.name)["state"].as_str().unwrap_or("");
            if s != "pending" && canary != "healthy" {
                bail!(
                    "{} left pending ({s}) before the canary was healthy ({canary}): {v}",
                    r.name
                );
            }
        }
        Ok(())
    };
    let v = follow(&fleet, &id, Duration::from_secs(90), &only_canary, |v| {
        let c = device(v, "room-1");
        c["state"] == "waiting_idle" && c["code"] == "associations_active"
    })
    .await?;
    assert_eq!(
        rooms[0].current()?,
        "versions/0.1.0",
        "not switched while busy: {v}"
    );
    let s = rooms[0].appliance.status().await?;
    assert_eq!(s["update"]["detail"], "1 association active", "{s}");
    kill(scu_pid, Signal::SIGCONT)?;
    transfer.await??.expect_all_success(study.len())?;

    // The canary switches, proves healthy, soaks; only then the rest.
    let v = follow(&fleet, &id, Duration::from_secs(240), &only_canary, |v| {
        v["campaign"]["state"] == "completed"
    })
    .await?;
    for r in &rooms {
        let d = device(&v, &r.name);
        assert_eq!(d["state"], "healthy", "{}: {v}", r.name);
        assert_eq!(d["running"], "0.2.0", "{}: {v}", r.name);
        assert_eq!(r.current()?, "versions/0.2.0", "{}", r.name);
        let s = wait_update(&r.appliance, "committed", Duration::from_secs(10), |u| {
            u["state"] == "installed" && u["running"] == "0.2.0"
        })
        .await?;
        assert_eq!(s["update"]["campaign"], id.as_str());
    }
    stop_tx.send(true)?;
    let mut acknowledged: Vec<String> = study.iter().map(|f| f.sop_instance_uid.clone()).collect();
    for m in modalities {
        acknowledged.extend(m.await??);
    }
    for r in &rooms {
        r.appliance.wait_drained(Duration::from_secs(120)).await?;
    }
    assert!(
        acknowledged.len() > 40,
        "the modalities sent during the campaign"
    );
    for uid in &acknowledged {
        assert!(
            archive.file_for(uid).is_some(),
            "{uid} acknowledged but not at the archive"
        );
    }
    archive.stop().await?;
    // Audited: the campaign's steps and each device's install.
    let audit = fleet.get("/api/v1/audit?limit=200").await?;
    let text = audit.to_string();
    for action in [
        "update.bundle_upload",
        "update.campaign_create",
        "update.campaign_approve",
    ] {
        assert!(text.contains(action), "{action} not audited: {text}");
    }
    assert!(text.contains("update.device_installed"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_canary_that_fails_its_health_check_rolls_back_and_pauses_the_campaign() -> Result<()> {
    let tmp = tempdir("ota-rollback")?;
    let dir = tmp.path();
    let keys = vendor_keys(dir)?;
    let download = free_port();
    let fleet = fleet(dir, &keys, download, download).await?;
    let archive = free_port();
    let mut rooms = Vec::new();
    for i in 1..=3 {
        rooms.push(Room::start(&fleet, dir, &keys, &format!("room-{i}"), archive).await?);
    }
    devices_online(&fleet, &rooms).await?;
    // The new version listens elsewhere: the modalities' address no longer answers C-ECHO.
    let good = std::fs::read_to_string(&rooms[0].appliance.config)?;
    let elsewhere = dir.join("elsewhere.toml");
    std::fs::write(
        &elsewhere,
        good.replace(
            &format!("127.0.0.1:{}", rooms[0].appliance.port),
            &format!("127.0.0.1:{}", free_port()),
        ),
    )?;
    let script = dir.join("medgate-appliance-0.3.0");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} run --config {}\n",
            workspace_bin("medgate-appliance")?.display(),
            elsewhere.display()
        ),
    )?;
    let sha = upload(&fleet, &keys, &script, "0.3.0").await?;
    let id = create(
        &fleet,
        json!({
            "name": "0.3.0, sick",
            "bundle": sha,
            "targets": {"sites": [SITE]},
            "canary": ["room-1"],
            "wave_shares": [50, 100],
            "soak_secs": 5,
            "failure_threshold_pct": 0,
        }),
    )
    .await?;
    command(&fleet, &id, "approve").await?;
    let untouched = |v: &Value| -> Result<()> {
        for r in &rooms[1..] {
            let s = &device(v, &r.name)["state"];
            if s != "pending" {
                bail!(
                    "{} was touched ({s}) though only the canary was offered: {v}",
                    r.name
                );
            }
        }
        Ok(())
    };
    let v = follow(&fleet, &id, Duration::from_secs(120), untouched, |v| {
        v["campaign"]["state"] == "paused"
    })
    .await?;
    let c = device(&v, "room-1");
    assert_eq!(c["state"], "failed", "{v}");
    assert_eq!(c["fail"], "rolled_back", "{v}");
    assert_eq!(c["code"], "health_deadline", "{v}");
    assert_eq!(
        c["running"], "0.1.0",
        "a device that rolled back is never shown as done: {v}"
    );
    let reason = v["campaign"]["paused_reason"].as_str().unwrap_or("");
    assert!(reason.contains("failure_threshold"), "{v}");
    // The canary runs the old version, by itself; the others never heard of 0.3.0.
    let s = wait_update(
        &rooms[0].appliance,
        "rolled back",
        Duration::from_secs(10),
        |u| u["state"] == "rolled_back" && u["running"] == "0.1.0",
    )
    .await?;
    assert_eq!(s["update"]["code"], "health_deadline");
    assert_eq!(rooms[0].current()?, "versions/0.1.0");
    for r in &rooms[1..] {
        assert_eq!(r.current()?, "versions/0.1.0", "{}", r.name);
        let s = r.appliance.status().await?;
        assert!(
            s["update"]["version"].is_null() || s["update"]["version"] != "0.3.0",
            "{}: {s}",
            r.name
        );
        assert!(
            !r.appliance.dir.join("data/update/download").exists(),
            "{} downloaded",
            r.name
        );
    }
    // Still paused a few ticks later: nothing new is offered by itself.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let v = fleet.get(&format!("/api/v1/campaigns/{id}")).await?;
    assert_eq!(v["campaign"]["state"], "paused", "{v}");
    untouched(&v)?;
    Ok(())
}

/// A TCP relay to `to` that passes at most `rate` bytes per second towards the client and
/// cuts its first connection after `cut_after` bytes.
async fn relay(to: u16, rate: usize, cut_after: usize) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                continue;
            };
            let limit = if first { cut_after } else { usize::MAX };
            first = false;
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = n.min(limit.saturating_sub(sent));
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                }
                up.abort();
            });
        }
    });
    Ok(port)
}

#[tokio::test]
async fn a_download_cut_halfway_and_a_kill_9_resume_from_the_bytes_on_disk() -> Result<()> {
    let tmp = tempdir("ota-resume")?;
    let dir = tmp.path();
    let keys = vendor_keys(dir)?;
    let listener = free_port();
    // 4 MB at 1 MB/s: the first connection is cut after 1 MB.
    let proxy = relay(listener, 1024 * 1024, 1024 * 1024).await?;
    let fleet = fleet(dir, &keys, listener, proxy).await?;
    let archive = free_port();
    let mut room = Room::start(&fleet, dir, &keys, "room-1", archive).await?;
    devices_online(&fleet, std::slice::from_ref(&room)).await?;
    let sha = upload(
        &fleet,
        &keys,
        &version_script(dir, "0.2.0", 4 * 1024 * 1024)?,
        "0.2.0",
    )
    .await?;
    let id = create(
        &fleet,
        json!({"name": "resume", "bundle": sha, "canary": ["room-1"], "soak_secs": 2}),
    )
    .await?;
    command(&fleet, &id, "approve").await?;
    let part = room
        .appliance
        .dir
        .join(format!("data/update/download/{sha}.mgb"));
    // Cut by the network at 1 MB; then, once it has resumed past 2 MB, killed.
    let started = Instant::now();
    loop {
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if have > 2 * 1024 * 1024 {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            bail!(
                "the download did not get past 2 MB: {have}\n{}",
                room.appliance.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    room.appliance.kill9()?;
    let kept = std::fs::metadata(&part)?.len();
    assert!(kept > 2 * 1024 * 1024, "{kept}");
    assert_eq!(room.current()?, "versions/0.1.0");
    room.appliance.restart().await?;
    let v = follow(
        &fleet,
        &id,
        Duration::from_secs(120),
        |_| Ok(()),
        |v| v["campaign"]["state"] == "completed",
    )
    .await?;
    assert_eq!(device(&v, "room-1")["state"], "healthy", "{v}");
    assert_eq!(room.current()?, "versions/0.2.0");
    // Two resumes, each from the bytes on disk: the fleet served ranges that start past 0.
    let log = std::fs::read_to_string(fleet.dir.join("fleet.log"))?;
    let starts: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("bundle download") && !l.contains("refused"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("start="))
                .and_then(|s| s.parse().ok())
        })
        .collect();
    assert_eq!(starts.first(), Some(&0), "{starts:?}");
    assert!(
        starts.iter().filter(|&&s| s > 512 * 1024).count() >= 2,
        "resumed twice, past the cut and past the kill: {starts:?}"
    );
    assert!(
        !part.exists(),
        "the downloaded copy is dropped once installed"
    );

    // The listener serves only devices with their certificate, and only what they were offered.
    let url = format!("https://127.0.0.1:{listener}/device/v1/bundles/{sha}");
    let identity = |dir: &Path| -> Result<reqwest::Client> {
        let pem = [
            std::fs::read(dir.join("identity/device.crt"))?,
            std::fs::read(dir.join("identity/device.key"))?,
        ]
        .concat();
        Ok(reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
                dir.join("identity/ca.crt"),
            )?)?)
            .identity(reqwest::Identity::from_pem(&pem)?)
            .build()?)
    };
    let room_dir = dir.join("room-1/enroll");
    let rsp = identity(&room_dir)?
        .get(&url)
        .header(reqwest::header::RANGE, "bytes=100-199")
        .send()
        .await?;
    assert_eq!(rsp.status().as_u16(), 206);
    assert_eq!(rsp.bytes().await?.len(), 100);
    // A device of the fleet that no campaign offered this bundle.
    let other = dir.join("room-9");
    fleet.enroll(&other, SITE, "room-9").await?;
    let rsp = identity(&other)?.get(&url).send().await?;
    assert_eq!(rsp.status().as_u16(), 403, "{:?}", rsp.text().await);
    // No certificate: the handshake itself fails.
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            room_dir.join("identity/ca.crt"),
        )?)?)
        .build()?;
    assert!(
        anonymous.get(&url).send().await.is_err(),
        "served without a certificate"
    );
    Ok(())
}
