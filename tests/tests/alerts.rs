//! alerts (issue 13 part 3 and its e-mail test in part 5): a real appliance enrolled with a real
//! fleet, forwarding to a real storescp archive. The archive is killed while a study waits: an
//! "archive unreachable" alert is raised and its e-mail arrives at a real SMTP server (aiosmtpd,
//! STARTTLS required, AUTH PLAIN, a certificate of a CA made by this test) and at a webhook
//! receiver (signed with HMAC-SHA256); the archive comes back: a "cleared" e-mail and webhook
//! follow. Neither carries any patient data of the studies sent. Acknowledging the alert through
//! the API is audited.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use medgate_e2e::privacy::{assert_clean, forbidden};
use medgate_e2e::{Appliance, Fleet, Storescp, free_port};
use medgate_sim::studies::{GeneratedFile, Patient, Study};
use medgate_testkit::{Peer, wait_listening};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SITE: &str = "st-gallus";
const DEVICE: &str = "ct-alerts-1";
const WEBHOOK_SECRET: &str = "a shared webhook secret for the test";

/// A CA made by the test and the SMTP server's certificate for `localhost`: (ca, cert, key).
fn smtp_pki(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir)?;
    let pki = medgate_testkit::Pki::new(&pki_dir);
    let (cert, key) = pki.issue("smtp", &["localhost"], "smtp.test");
    Ok((pki.ca(), cert, key))
}

/// One request the webhook receiver got: headers (lower-case names) and body.
type Hook = (HashMap<String, String>, String);

/// A small HTTP/1.1 server answering 200 to every POST and keeping what it got.
async fn webhook_receiver() -> Result<(u16, Arc<Mutex<Vec<Hook>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let got: Arc<Mutex<Vec<Hook>>> = Arc::default();
    let keep = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, len);
                    }
                };
                while buf.len() < head_end + length {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                    .collect();
                let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
                keep.lock().expect("lock").push((headers, body));
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    Ok((port, got))
}

/// The mails the SMTP server accepted so far, in order.
fn mails(out: &Path) -> Vec<Value> {
    let mut v: Vec<(u64, Value)> = std::fs::read_dir(out)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let n = name.strip_suffix(".json")?.parse::<u64>().ok()?;
                    let text = std::fs::read_to_string(e.path()).ok()?;
                    Some((n, serde_json::from_str(&text).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|(n, _)| *n);
    v.into_iter().map(|(_, m)| m).collect()
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn study(dir: &Path, seed: u64) -> Result<(Patient, String, Vec<GeneratedFile>)> {
    let p = Patient::synthetic(seed);
    let acc = format!("ACCA{seed}");
    let mut s = Study::new(p.clone(), acc.clone(), seed);
    let files = s.one_of_each(&dir.join(seed.to_string()))?;
    Ok((p, acc, files))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_archive_mails_and_posts_its_alert_and_its_clear() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = tempfile::Builder::new()
        .prefix("medgate-e2e-alerts-")
        .tempdir()?;
    let dir = t.path();

    // The real SMTP server: STARTTLS required, AUTH PLAIN required, certificate of our CA.
    let (ca, cert, key) = smtp_pki(dir)?;
    let out = dir.join("mail");
    std::fs::create_dir_all(&out)?;
    let smtp_port = free_port();
    let mut smtp_cmd = Command::new("/usr/bin/python3");
    smtp_cmd
        .arg(medgate_testkit::workspace_root().join("tests/smtp/starttls_server.py"))
        .arg("--port")
        .arg(smtp_port.to_string())
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--out")
        .arg(&out)
        .args(["--user", "medgate", "--password", "smtp password 1"]);
    let mut smtp = Peer::spawn("aiosmtpd", smtp_cmd, &dir.join("smtp.log"))?;
    wait_listening(smtp_port, Duration::from_secs(20), || smtp.check_alive()).await?;
    let (hook_port, hooks) = webhook_receiver().await?;
    std::fs::write(dir.join("smtp-password"), "smtp password 1\n")?;
    std::fs::write(dir.join("webhook-secret"), format!("{WEBHOOK_SECRET}\n"))?;
    let alerts = format!(
        "[alerts]\nevaluate_secs = 1\narchive_unreachable_for_secs = 2\n\
         [alerts.email]\nserver = \"127.0.0.1:{smtp_port}\"\nserver_name = \"localhost\"\nca = \"{ca}\"\n\
         from = \"medgate-fleet@hospital.test\"\nto = [\"radiology-it@hospital.test\"]\n\
         username = \"medgate\"\npassword_file = \"{pw}\"\n\
         [alerts.webhook]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nsecret_file = \"{secret}\"\n",
        ca = ca.display(),
        pw = dir.join("smtp-password").display(),
        secret = dir.join("webhook-secret").display(),
    );
    let fleet = Fleet::start_extra(&dir.join("fleet"), &alerts).await?;

    // An enrolled appliance forwarding to a storescp archive.
    let settings = fleet.enroll(dir, SITE, DEVICE).await?;
    let archive_port = free_port();
    let mut archive = Storescp::start(&dir.join("archive"), archive_port, "ARCHIVE").await?;
    let appliance = Appliance::start_configured(
        &dir.join("appliance"),
        &format!("fleet_enrollment = \"{}\"\n", settings.display()),
        "",
        &format!(
            "[[destination]]\nname = \"archive\"\nkind = \"dimse\"\naddress = \"127.0.0.1:{archive_port}\"\ncalled_ae_title = \"ARCHIVE\"\n"
        ),
    )
    .await?;
    fleet
        .wait(
            "online with inventory",
            &format!("/api/v1/devices/{DEVICE}"),
            Duration::from_secs(30),
            |d| d["connection"] == "online" && d["inventory"]["ae_title"] == "MEDGATE",
        )
        .await?;

    // A study goes through while the archive is up.
    let (p1, a1, f1) = study(&dir.join("studies"), 8101)?;
    let paths: Vec<_> = f1.iter().map(|f| f.path.clone()).collect();
    appliance
        .storescu()
        .send(&paths)
        .await?
        .expect_all_success(f1.len())?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    // The archive stops; the next study waits at the appliance.
    archive.stop().await?;
    drop(archive);
    let (p2, a2, f2) = study(&dir.join("studies"), 8102)?;
    let paths2: Vec<_> = f2.iter().map(|f| f.path.clone()).collect();
    appliance
        .storescu()
        .send(&paths2)
        .await?
        .expect_all_success(f2.len())?;
    // The check below is not vacuous: the objects carry these values.
    let first = String::from_utf8_lossy(&std::fs::read(&f2[0].path)?).to_string();
    for value in [&p2.name, &p2.id, &a2] {
        assert!(first.contains(value.as_str()), "{value} is in the object");
    }
    let mut files = f1.clone();
    files.extend(f2.iter().cloned());
    let forbidden = forbidden(&[p1, p2], &[a1, a2], &files);

    // The "archive unreachable" mail arrives: over TLS, authenticated, worded with figures.
    let raised = wait_for("the alert e-mail", Duration::from_secs(90), || {
        mails(&out).into_iter().next()
    })
    .await?;
    let data = raised["data"].as_str().context("data")?.to_string();
    assert_eq!(raised["tls"], true, "{raised}");
    assert_eq!(raised["authenticated"], true, "{raised}");
    assert_eq!(raised["mail_from"], "medgate-fleet@hospital.test");
    assert_eq!(raised["rcpt_tos"][0], "radiology-it@hospital.test");
    let subject = data
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .context("subject")?
        .to_string();
    assert!(
        subject.starts_with(&format!("[Medgate CRITICAL] {DEVICE} archive unreachable:")),
        "{subject}"
    );
    for want in [DEVICE, "AE MEDGATE", "destination archive", SITE] {
        assert!(data.contains(want), "{want} not in the mail:\n{data}");
    }
    assert_clean("the alert e-mail", &data, &forbidden);
    // The API lists it firing.
    let (s, list) = fleet
        .send(Method::GET, "/api/v1/alerts?state=firing", None)
        .await?;
    assert_eq!(s, 200, "{list}");
    let alert = list["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["kind"] == "archive_unreachable"))
        .context("firing alert")?
        .clone();
    assert_eq!(alert["device"], DEVICE);
    assert_eq!(alert["severity"], "critical");
    let id = alert["id"].as_str().context("id")?.to_string();

    // Acknowledged in the API: audited.
    let (s, acked) = fleet
        .send(Method::POST, &format!("/api/v1/alerts/{id}/ack"), None)
        .await?;
    assert_eq!(s, 200, "{acked}");
    assert!(acked["acked_by"].is_string(), "{acked}");
    let (s, audit) = fleet
        .send(Method::GET, "/api/v1/audit?action=alert.ack", None)
        .await?;
    assert_eq!(s, 200, "{audit}");
    let entries = audit["entries"].as_array().context("entries")?;
    assert!(
        entries
            .iter()
            .any(|e| e["target"] == format!("alert:{id}") && e["outcome"] == "ok"),
        "{audit}"
    );

    // The archive returns: the queue drains and a "cleared" mail follows.
    let _archive = Storescp::start(&dir.join("archive2"), archive_port, "ARCHIVE").await?;
    appliance.wait_drained(Duration::from_secs(90)).await?;
    let cleared = wait_for("the cleared e-mail", Duration::from_secs(90), || {
        mails(&out).into_iter().nth(1)
    })
    .await?;
    let data2 = cleared["data"].as_str().context("data")?.to_string();
    assert!(
        data2.contains(&format!(
            "Subject: [Medgate CLEARED] {DEVICE} archive unreachable:"
        )),
        "{data2}"
    );
    assert!(data2.contains("Cleared:  "), "{data2}");
    assert_clean("the cleared e-mail", &data2, &forbidden);

    // The webhook got both, signed.
    let got = wait_for("both webhooks", Duration::from_secs(30), || {
        let h = hooks.lock().expect("lock").clone();
        (h.len() >= 2).then_some(h)
    })
    .await?;
    let events: Vec<String> = got
        .iter()
        .map(|(_, b)| {
            serde_json::from_str::<Value>(b).map_or(String::new(), |v| {
                v["event"].as_str().unwrap_or_default().to_string()
            })
        })
        .collect();
    assert_eq!(events, ["raised", "cleared"], "{got:?}");
    for (headers, body) in &got {
        assert_eq!(
            headers.get("x-medgate-signature").map(String::as_str),
            Some(
                medgate_fleet::alerts::signature(WEBHOOK_SECRET.as_bytes(), body.as_bytes())
                    .as_str()
            ),
            "{headers:?}"
        );
        let v: Value = serde_json::from_str(body)?;
        assert_eq!(v["alert"]["id"], id.as_str());
        assert_eq!(v["alert"]["kind"], "archive_unreachable");
        assert_clean("the webhook", body, &forbidden);
    }
    // The alert is resolved in the API; the notifications are counted.
    let (_, resolved) = fleet
        .send(Method::GET, "/api/v1/alerts?state=resolved", None)
        .await?;
    assert!(
        resolved["alerts"].as_array().is_some_and(|a| a
            .iter()
            .any(|a| a["id"] == id.as_str() && a["cleared_ms"].is_i64())),
        "{resolved}"
    );
    let lines = [
        "medgate_fleet_notifications_total{channel=\"email\",outcome=\"sent\"} 2",
        "medgate_fleet_notifications_total{channel=\"webhook\",outcome=\"sent\"} 2",
        "medgate_fleet_alerts_firing{kind=\"archive_unreachable\",severity=\"critical\"} 0",
    ];
    let start = Instant::now();
    loop {
        let metrics = reqwest::get(format!("{}/metrics", fleet.url()))
            .await?
            .text()
            .await?;
        if lines.iter().all(|l| metrics.contains(l)) {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!("{lines:?} not all in:\n{metrics}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(smtp);
    Ok(())
}
