//! atna (issue 13 part 4): the audit log reaches a real rsyslog as IHE ATNA messages. rsyslogd
//! runs from this test's own directory (its own configuration, work directory and pid file, no
//! system socket): imtcp over GnuTLS on a free loopback port with a certificate of a CA made by
//! the test, the fleet's client certificate required (x509/name), every record written by
//! omfile twice: as received, and as rsyslog parsed its RFC 5424 header. Audited actions through
//! the real API (a user created, a login, a failed login, a site and a claim) each arrive once,
//! in order, with exactly the header expected, and each payload validates against the PS3.15
//! schema (tests/atna/audit-message.rng, with xmllint). Then rsyslog stops: the fleet notices,
//! the next entries wait (backlog and connected on /metrics), and once rsyslog is back on the
//! same port they all arrive; none is lost (duplicates would be allowed, and are counted). No
//! message carries an entry's before/after JSON or a password.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use medgate_e2e::{Fleet, Peer, free_port, require_tool, wait_listening, workspace_root};
use reqwest::Method;
use serde_json::{Value, json};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
const XMLLINT: &str = "/usr/bin/xmllint";
const BOM: &str = "\u{FEFF}";
const PASSWORD: &str = "a long password for alice 1";

/// rsyslogd with a configuration of its own, in `dir`.
struct Rsyslog {
    dir: PathBuf,
    port: u16,
    peer: Option<Peer>,
    starts: u32,
}

impl Rsyslog {
    /// Writes the configuration (TLS with the certificates of `pki`, the fleet's client
    /// certificate required) and starts it.
    async fn start(dir: &Path, port: u16, pki: &medgate_testkit::Pki) -> Result<Rsyslog> {
        std::fs::create_dir_all(dir.join("work"))?;
        let conf = format!(
            r#"global(
  workDirectory="{dir}/work"
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{pki}/server.crt"
  defaultNetstreamDriverKeyFile="{pki}/server.key"
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.Authmode="x509/name" PermittedPeer=["medgate-fleet.test"])
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="raw" type="string" string="%rawmsg%\n")
template(name="fields" type="string"
         string="%pri%\t%protocol-version%\t%timereported:::date-rfc3339%\t%hostname%\t%app-name%\t%procid%\t%msgid%\t%structured-data%\t%msg%\n")
if $app-name == "medgate-fleet" then {{
  action(type="omfile" file="{dir}/raw.log" template="raw")
  action(type="omfile" file="{dir}/fields.log" template="fields")
}} else {{
  action(type="omfile" file="{dir}/other.log")
}}
"#,
            dir = dir.display(),
            ca = pki.ca().display(),
            pki = pki.dir.display(),
        );
        let path = dir.join("rsyslog.conf");
        std::fs::write(&path, conf)?;
        let check = Command::new(RSYSLOGD)
            .args(["-N1", "-f"])
            .arg(&path)
            .output()?;
        if !check.status.success() {
            bail!(
                "rsyslogd refused its configuration: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let mut r = Rsyslog {
            dir: dir.to_path_buf(),
            port,
            peer: None,
            starts: 0,
        };
        r.run().await?;
        Ok(r)
    }

    async fn run(&mut self) -> Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(RSYSLOGD);
        cmd.arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"));
        let mut peer = Peer::spawn(
            "rsyslogd",
            cmd,
            &self.dir.join(format!("rsyslogd-{}.log", self.starts)),
        )?;
        wait_listening(self.port, Duration::from_secs(20), || peer.check_alive()).await?;
        self.peer = Some(peer);
        Ok(())
    }

    async fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.peer.take() {
            p.stop(Duration::from_secs(10)).await?;
        }
        Ok(())
    }

    /// The records received so far, as received (one per line).
    fn raw(&self) -> Vec<String> {
        lines(&self.dir.join("raw.log"))
    }

    /// The records as rsyslog parsed them: tab-separated header fields, then the message.
    fn fields(&self) -> Vec<Vec<String>> {
        lines(&self.dir.join("fields.log"))
            .into_iter()
            .map(|l| l.splitn(9, '\t').map(str::to_owned).collect())
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut p) = self.peer.take() {
            let _ = p.kill();
        }
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// An audit entry as the API lists it.
#[derive(Debug, Clone)]
struct Entry {
    at: String,
    actor: String,
    action: String,
    target: String,
    outcome: String,
    before: Option<String>,
    after: Option<String>,
}

impl Entry {
    fn of(v: &Value) -> Result<Entry> {
        let s = |k: &str| -> Result<String> {
            Ok(v[k]
                .as_str()
                .with_context(|| format!("{k} of {v}"))?
                .to_owned())
        };
        Ok(Entry {
            at: medgate_fleet::atna::rfc3339(v["at_ms"].as_i64().context("at_ms")?),
            actor: s("actor")?,
            action: s("action")?,
            target: s("target")?,
            outcome: s("outcome")?,
            before: v["before"].as_str().map(str::to_owned),
            after: v["after"].as_str().map(str::to_owned),
        })
    }

    /// What identifies its message: time, user, action, object, outcome.
    fn key(&self) -> String {
        use base64::Engine;
        let outcome = match self.outcome.as_str() {
            "ok" => "0",
            "denied" => "4",
            _ => "8",
        };
        // A message names its object (and the action word) only if the entry has a target.
        let object = if self.target.is_empty() {
            String::new()
        } else {
            format!(
                "{}|{}",
                base64::engine::general_purpose::STANDARD.encode(&self.action),
                self.target
            )
        };
        format!("{}|{}|{object}|{outcome}", self.at, self.actor)
    }
}

/// The key of a message (the same as [`Entry::key`]), read from its XML.
fn message_key(xml: &str) -> Result<String> {
    let attr = |name: &str| -> Result<String> {
        let start = xml
            .find(&format!(" {name}=\""))
            .with_context(|| format!("{name} in {xml}"))?
            + name.len()
            + 3;
        let end = xml[start..].find('"').context("closing quote")? + start;
        Ok(xml[start..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&apos;", "'")
            .replace("&amp;", "&"))
    };
    let object = if xml.contains("<ParticipantObjectIdentification ") {
        format!("{}|{}", attr("value")?, attr("ParticipantObjectID")?)
    } else {
        String::new()
    };
    Ok(format!(
        "{}|{}|{object}|{}",
        attr("EventDateTime")?,
        attr("UserID")?,
        attr("EventOutcomeIndicator")?
    ))
}

/// Every audit entry, oldest first.
async fn entries(fleet: &Fleet) -> Result<Vec<Entry>> {
    let v = fleet.get("/api/v1/audit?limit=10000").await?;
    let mut out = v["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .map(Entry::of)
        .collect::<Result<Vec<_>>>()?;
    out.reverse();
    Ok(out)
}

async fn metric(fleet: &Fleet, name: &str) -> Result<u64> {
    let text = reqwest::get(format!("{}/metrics", fleet.url()))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{name} not in /metrics"))
}

/// Waits until every entry has arrived at least once; returns the raw records.
async fn all_arrive(fleet: &Fleet, rsyslog: &Rsyslog, want: &[Entry]) -> Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let raw = rsyslog.raw();
        let got: Vec<String> = raw
            .iter()
            .filter_map(|r| r.split_once(BOM).and_then(|(_, x)| message_key(x).ok()))
            .collect();
        if want.iter().all(|e| got.contains(&e.key())) {
            return Ok(raw);
        }
        if started.elapsed() > Duration::from_secs(90) {
            bail!(
                "not every audit entry reached rsyslog after 90 s: want {:?}\ngot {got:?}\n{}",
                want.iter().map(Entry::key).collect::<Vec<_>>(),
                fleet.peer.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The records' keys in order of first arrival, and how many arrived more than once.
fn first_arrivals(raw: &[String]) -> Result<(Vec<String>, usize)> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut order = Vec::new();
    for r in raw {
        let (_, xml) = r
            .split_once(BOM)
            .with_context(|| format!("no BOM in {r}"))?;
        let k = message_key(xml)?;
        let n = seen.entry(k.clone()).or_default();
        if *n == 0 {
            order.push(k);
        }
        *n += 1;
    }
    let duplicates = seen.values().map(|n| n - 1).sum();
    Ok((order, duplicates))
}

/// Every payload (BOM stripped) through `xmllint --relaxng` with the PS3.15 schema.
fn validate(dir: &Path, raw: &[String]) -> Result<()> {
    let xmllint = require_tool(XMLLINT);
    let schema = workspace_root().join("tests/atna/audit-message.rng");
    let xml_dir = dir.join("xml");
    std::fs::create_dir_all(&xml_dir)?;
    let mut files = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let (_, xml) = r
            .split_once(BOM)
            .with_context(|| format!("no BOM in {r}"))?;
        let f = xml_dir.join(format!("{i:03}.xml"));
        std::fs::write(&f, xml)?;
        files.push(f);
    }
    let out = Command::new(xmllint)
        .arg("--noout")
        .arg("--relaxng")
        .arg(&schema)
        .args(&files)
        .output()?;
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "xmllint refused a message:\n{report}");
    assert_eq!(
        report.matches(" validates").count(),
        files.len(),
        "{report}"
    );
    Ok(())
}

/// An audited action that must answer `status`.
async fn act(fleet: &Fleet, method: Method, path: &str, body: Value, status: u16) -> Result<()> {
    let (s, v) = fleet.send(method, path, Some(body)).await?;
    if s != status {
        bail!("{path}: {s} {v}, not {status}");
    }
    // Distinct milliseconds: each message's key is distinct.
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_reach_a_real_rsyslog_over_tls_valid_in_order_and_none_lost() -> Result<()> {
    require_tool(RSYSLOGD);
    require_tool(XMLLINT);
    let t = tempfile::Builder::new()
        .prefix("medgate-e2e-atna-")
        .tempdir()?;
    let dir = t.path();
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir)?;
    let pki = medgate_testkit::Pki::new(&pki_dir);
    let (client_cert, client_key) = pki.issue(
        "fleet-client",
        &["medgate-fleet.test"],
        "medgate-fleet.test",
    );
    let port = free_port();
    let mut rsyslog = Rsyslog::start(&dir.join("rsyslog"), port, &pki).await?;

    let fleet = Fleet::start_extra(
        &dir.join("fleet"),
        &format!(
            "[audit.syslog]\naddress = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\nca = \"{}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            pki.ca().display(),
            client_cert.display(),
            client_key.display()
        ),
    )
    .await?;
    let hostname: String = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .chars()
        .filter(char::is_ascii_graphic)
        .collect();
    let pid = fleet.peer.pid().to_string();

    // Audited actions through the API: a user, her login, a wrong password, a site, a claim.
    act(
        &fleet,
        Method::POST,
        "/api/v1/users",
        json!({"name": "alice", "role": "operator", "password": PASSWORD}),
        201,
    )
    .await?;
    act(
        &fleet,
        Method::POST,
        "/api/v1/auth/login",
        json!({"user": "alice", "password": PASSWORD}),
        200,
    )
    .await?;
    act(
        &fleet,
        Method::POST,
        "/api/v1/auth/login",
        json!({"user": "alice", "password": "not her password"}),
        401,
    )
    .await?;
    act(
        &fleet,
        Method::PUT,
        "/api/v1/sites/st-atna",
        json!({"name": "ATNA test site"}),
        200,
    )
    .await?;
    act(
        &fleet,
        Method::POST,
        "/api/v1/claims",
        json!({"site": "st-atna", "device": "ct-atna-1"}),
        201,
    )
    .await?;

    let first = entries(&fleet).await?;
    let actions: Vec<&str> = first.iter().map(|e| e.action.as_str()).collect();
    for want in ["user.create", "login", "site.", "claim."] {
        assert!(
            actions.iter().any(|a| a.starts_with(want)),
            "{want} audited: {actions:?}"
        );
    }
    assert!(
        first
            .iter()
            .any(|e| e.action == "login" && e.outcome == "failed"),
        "{first:?}"
    );
    assert!(
        first
            .iter()
            .any(|e| e.before.is_some() || e.after.is_some()),
        "some entry has before/after JSON, so the check below is not vacuous: {first:?}"
    );
    let raw = all_arrive(&fleet, &rsyslog, &first).await?;
    let (order, duplicates) = first_arrivals(&raw)?;
    assert_eq!(
        order,
        first.iter().map(Entry::key).collect::<Vec<_>>(),
        "each entry once, in order"
    );
    assert_eq!(duplicates, 0, "nothing sent twice while rsyslog was up");

    // The header as rsyslog parsed it (RFC 5424), record by record.
    let fields = rsyslog.fields();
    assert_eq!(fields.len(), raw.len());
    for (f, e) in fields.iter().zip(&first) {
        let pri = if e.outcome == "ok" { "85" } else { "84" };
        assert_eq!(
            f[..8],
            [
                pri,
                "1",
                e.at.as_str(),
                hostname.as_str(),
                "medgate-fleet",
                pid.as_str(),
                "IHE+RFC-3881",
                "-"
            ],
            "{f:?}"
        );
        assert!(f[8].starts_with(BOM), "{f:?}");
    }
    // And as received, byte for byte.
    for (r, e) in raw.iter().zip(&first) {
        let pri = if e.outcome == "ok" { 85 } else { 84 };
        let head = format!(
            "<{pri}>1 {} {hostname} medgate-fleet {pid} IHE+RFC-3881 - {BOM}<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>",
            e.at
        );
        assert!(r.starts_with(&head), "{r}\nnot {head}");
    }
    validate(dir, &raw)?;

    // rsyslog stops: the fleet notices and keeps what comes next.
    rsyslog.stop().await?;
    let started = Instant::now();
    while metric(&fleet, "medgate_fleet_atna_connected").await? != 0 {
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "still connected to a stopped rsyslog\n{}",
                fleet.peer.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    act(
        &fleet,
        Method::POST,
        "/api/v1/auth/login",
        json!({"user": "alice", "password": "still not her password"}),
        401,
    )
    .await?;
    act(
        &fleet,
        Method::PUT,
        "/api/v1/sites/st-atna",
        json!({"name": "ATNA test site, renamed"}),
        200,
    )
    .await?;
    act(
        &fleet,
        Method::POST,
        "/api/v1/claims",
        json!({"site": "st-atna", "device": "ct-atna-2"}),
        201,
    )
    .await?;
    let all = entries(&fleet).await?;
    let waiting = u64::try_from(all.len() - first.len())?;
    assert!(waiting >= 3, "{all:?}");
    let started = Instant::now();
    loop {
        let backlog = metric(&fleet, "medgate_fleet_atna_backlog").await?;
        let connected = metric(&fleet, "medgate_fleet_atna_connected").await?;
        if backlog == waiting && connected == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("backlog {backlog} (want {waiting}), connected {connected}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(rsyslog.raw().len(), raw.len(), "nothing arrived meanwhile");

    // Back on the same port: what waited arrives, nothing is lost.
    rsyslog.run().await?;
    let raw = all_arrive(&fleet, &rsyslog, &all).await?;
    let (order, duplicates) = first_arrivals(&raw)?;
    assert_eq!(
        order,
        all.iter().map(Entry::key).collect::<Vec<_>>(),
        "every entry at least once, in order of first arrival"
    );
    eprintln!(
        "atna: {} entries, {} records, {duplicates} duplicate(s) after the restart",
        all.len(),
        raw.len()
    );
    validate(dir, &raw)?;
    let started = Instant::now();
    while metric(&fleet, "medgate_fleet_atna_backlog").await? != 0
        || metric(&fleet, "medgate_fleet_atna_connected").await? != 1
    {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("backlog not drained\n{}", fleet.peer.log_tail(20));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metric(&fleet, "medgate_fleet_atna_sent_total").await? >= u64::try_from(all.len())?);
    assert_eq!(metric(&fleet, "medgate_fleet_atna_lease_held").await?, 1);

    // No before/after JSON, no password, in any record.
    let text = raw.join("\n");
    for e in &all {
        for j in [&e.before, &e.after].into_iter().flatten() {
            assert!(!text.contains(j.as_str()), "{j} sent");
            let escaped = medgate_fleet::atna::escape(j);
            assert!(!text.contains(&escaped), "{escaped} sent");
        }
    }
    assert!(!text.contains(PASSWORD) && !text.contains("not her password"));
    rsyslog.stop().await?;
    Ok(())
}
