//! The fleet manager under test (the real `medgate-fleet serve` binary): zero-setup (embedded
//! MQTT broker, SQLite), or in its production shape behind a real Mosquitto configured by
//! `medgate-fleet broker-config` (mutual TLS, certificate name as user, per-device ACL); an MQTT
//! capture of every message (`mosquitto_sub -t '#'`).

use crate::{Mosquitto, Peer, free_port, http_client, require_tool, wait_listening, workspace_bin};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `mosquitto_sub`.
pub const MOSQUITTO_SUB: &str = "/usr/bin/mosquitto_sub";

/// A `medgate-fleet serve` process.
#[derive(Debug)]
pub struct Fleet {
    /// The process.
    pub peer: Peer,
    /// Its data directory.
    pub dir: PathBuf,
    /// HTTP port (API, live feed, metrics).
    pub http_port: u16,
    /// The embedded broker's port.
    pub mqtt_port: u16,
    /// The admin token.
    pub token: String,
    /// The CA of its HTTPS certificate (None: plain HTTP on loopback).
    pub ca: Option<PathBuf>,
    client: reqwest::Client,
}

impl Fleet {
    /// Starts the zero-setup fleet in `dir`.
    pub async fn start(dir: &Path) -> Result<Fleet> {
        let mqtt_port = free_port();
        let broker = format!("[broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{mqtt_port}\"\n");
        Fleet::start_with(dir, &broker, mqtt_port, None).await
    }

    /// alerts (issue 13 part 3): the zero-setup fleet with more configuration (`extra`: TOML
    /// tables after the others, e.g. `[alerts]`).
    pub async fn start_extra(dir: &Path, extra: &str) -> Result<Fleet> {
        let mqtt_port = free_port();
        let broker =
            format!("[broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{mqtt_port}\"\n{extra}");
        Fleet::start_with(dir, &broker, mqtt_port, None).await
    }

    /// Starts the production shape: `broker-config` writes Mosquitto's configuration (mutual TLS
    /// with the fleet's CA, per-device ACL), Mosquitto starts with it, then the fleet connects
    /// to it over TLS and serves its API over HTTPS (`https://localhost:port`, a certificate of
    /// the fleet's CA). Devices enrolled with this fleet connect with their own certificate.
    pub async fn start_with_mosquitto(dir: &Path) -> Result<(Fleet, Mosquitto)> {
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let data = dir.join("data");
        let minimal = dir.join("broker-config.toml");
        std::fs::write(&minimal, format!("data_dir = \"{}\"\n", data.display()))?;
        let out = dir.join("broker");
        let status = Command::new(workspace_bin("medgate-fleet")?)
            .args(["broker-config", "--config"])
            .arg(&minimal)
            .arg("--out")
            .arg(&out)
            .args(["--hostname", "localhost", "--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .status()?;
        if !status.success() {
            bail!("medgate-fleet broker-config failed");
        }
        let conf = out.join("mosquitto.conf");
        let text = std::fs::read_to_string(&conf)?;
        // Tests run as root: keep mosquitto from switching users (it could not read the tempdir).
        std::fs::write(
            &conf,
            format!("{text}user root\nlog_dest stderr\nlog_type error\nlog_type warning\n"),
        )?;
        let mosquitto = Mosquitto::start_with_conf(&conf, port, &dir.join("mosquitto.log"))?;
        let broker = format!(
            "[http.tls]\ncertificate = \"{out}/broker.crt\"\nprivate_key = \"{out}/broker.key\"\n[broker]\nmode = \"external\"\naddress = \"localhost:{port}\"\n[broker.tls]\nca = \"{out}/ca.crt\"\ncertificate = \"{out}/fleet.crt\"\nprivate_key = \"{out}/fleet.key\"\n",
            out = out.display()
        );
        let fleet = Fleet::start_with(dir, &broker, port, Some(out.join("ca.crt"))).await?;
        Ok((fleet, mosquitto))
    }

    /// `broker`: the `[broker]` (and `[http.tls]`) tables; `ca`: the CA of the HTTPS
    /// certificate (None: plain HTTP, and the embedded broker listens on `mqtt_port`).
    async fn start_with(
        dir: &Path,
        broker: &str,
        mqtt_port: u16,
        ca: Option<PathBuf>,
    ) -> Result<Fleet> {
        let embedded = ca.is_none();
        std::fs::create_dir_all(dir)?;
        let http_port = free_port();
        let config = dir.join("fleet.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[http]\nbind = \"127.0.0.1:{http_port}\"\n[devices]\nmissed_heartbeats = 5\n{broker}",
                dir.join("data").display()
            ),
        )?;
        let peer = Fleet::serve(dir, "fleet.log", http_port, embedded.then_some(mqtt_port)).await?;
        let token = std::fs::read_to_string(dir.join("data/admin-token"))
            .context("the fleet's admin token")?
            .trim()
            .to_string();
        let client = match &ca {
            None => http_client(),
            Some(ca) => reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        Ok(Fleet {
            peer,
            dir: dir.to_path_buf(),
            http_port,
            mqtt_port,
            token,
            ca,
            client,
        })
    }

    /// Runs `medgate-fleet serve` with `dir/fleet.toml`; returns once it listens on its HTTP port
    /// (and on the embedded broker's port, if given).
    async fn serve(dir: &Path, log: &str, http_port: u16, mqtt_port: Option<u16>) -> Result<Peer> {
        let mut cmd = Command::new(workspace_bin("medgate-fleet")?);
        cmd.arg("serve").arg("--config").arg(dir.join("fleet.toml"));
        cmd.env("RUST_LOG", "info");
        let mut peer = Peer::spawn("medgate-fleet", cmd, &dir.join(log))?;
        wait_listening(http_port, Duration::from_secs(30), || peer.check_alive()).await?;
        if let Some(port) = mqtt_port {
            wait_listening(port, Duration::from_secs(30), || peer.check_alive()).await?;
        }
        Ok(peer)
    }

    /// kill -9 (a crash: with the embedded broker, the broker goes down with it), then the same
    /// fleet starts again on the same ports and data; its log goes to `fleet-{n}.log`.
    pub async fn crash_and_restart(&mut self, n: u32) -> Result<()> {
        self.peer.kill()?;
        let embedded = self.ca.is_none();
        self.peer = Fleet::serve(
            &self.dir,
            &format!("fleet-{n}.log"),
            self.http_port,
            embedded.then_some(self.mqtt_port),
        )
        .await?;
        Ok(())
    }

    /// kill -9, and nothing else (the wall's test watches the fleet gone, then calls
    /// [`Fleet::start_again`]).
    pub fn kill(&mut self) -> Result<()> {
        self.peer.kill()?;
        Ok(())
    }

    /// Starts the killed fleet again on the same ports and data; its log goes to
    /// `fleet-{n}.log`.
    pub async fn start_again(&mut self, n: u32) -> Result<()> {
        let embedded = self.ca.is_none();
        self.peer = Fleet::serve(
            &self.dir,
            &format!("fleet-{n}.log"),
            self.http_port,
            embedded.then_some(self.mqtt_port),
        )
        .await?;
        Ok(())
    }

    /// `http://127.0.0.1:{port}`, or `https://localhost:{port}`.
    pub fn url(&self) -> String {
        match self.ca {
            None => format!("http://127.0.0.1:{}", self.http_port),
            Some(_) => format!("https://localhost:{}", self.http_port),
        }
    }

    /// A request with the admin token; returns the status and the JSON body (Null if none).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut rq = self
            .client
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let rsp = rq.send().await?;
        let status = rsp.status().as_u16();
        let text = rsp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A POST of raw bytes (an update bundle) with the admin token; the status and JSON body.
    pub async fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<(u16, Value)> {
        let rsp = self
            .client
            .post(format!("{}{path}", self.url()))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await?;
        let status = rsp.status().as_u16();
        let text = rsp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Writes a provisioning file for this fleet (its URL, its HTTPS CA if any, telemetry every
    /// second) with the claim token `token`.
    pub fn write_provisioning(&self, path: &Path, token: &str) -> Result<()> {
        let ca = self
            .ca
            .as_ref()
            .map(|ca| format!("fleet_ca = \"{}\"\n", ca.display()))
            .unwrap_or_default();
        std::fs::write(
            path,
            format!(
                "fleet_url = \"{}\"\nclaim_token = \"{token}\"\ntelemetry_interval_secs = 1\n{ca}",
                self.url()
            ),
        )?;
        Ok(())
    }

    /// Enrolls a device with the real `medgate-appliance enroll` (a claim token for `device` of
    /// `site`); returns the settings file for `fleet_enrollment`.
    pub async fn enroll(&self, dir: &Path, site: &str, device: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let provisioning = dir.join("provisioning.toml");
        self.write_provisioning(&provisioning, &self.claim(site, device).await?)?;
        let identity = dir.join("identity");
        let out = enroll_cli(&provisioning, &identity)?;
        if !out.status.success() {
            bail!(
                "enroll {device}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(identity.join("fleet.toml"))
    }

    /// GET of a download with the admin token: status, `Content-Disposition`, the bytes.
    pub async fn download(&self, path: &str) -> Result<(u16, String, Vec<u8>)> {
        let rsp = self
            .client
            .get(format!("{}{path}", self.url()))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = rsp.status().as_u16();
        let disposition = rsp
            .headers()
            .get(reqwest::header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((status, disposition, rsp.bytes().await?.to_vec()))
    }

    /// GET, expecting 200.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let (s, v) = self.send(reqwest::Method::GET, path, None).await?;
        if s != 200 {
            bail!("GET {path}: {s} {v}");
        }
        Ok(v)
    }

    /// Polls `path` until `ok` holds.
    pub async fn wait(
        &self,
        what: &str,
        path: &str,
        timeout: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let started = Instant::now();
        loop {
            let v = self.get(path).await?;
            if ok(&v) {
                return Ok(v);
            }
            if started.elapsed() > timeout {
                bail!(
                    "{what}: not after {timeout:?}; last {path}: {v}\n{}",
                    self.peer.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A one-time claim token for `device` of `site`.
    pub async fn claim(&self, site: &str, device: &str) -> Result<String> {
        let (s, v) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/claims",
                Some(serde_json::json!({"site": site, "device": device})),
            )
            .await?;
        if s != 201 {
            bail!("claim: {s} {v}");
        }
        Ok(v["token"].as_str().context("token")?.to_string())
    }
}

/// `medgate-appliance enroll --provisioning P --identity-dir D`, as the image's first boot runs it.
pub fn enroll_cli(provisioning: &Path, identity: &Path) -> Result<std::process::Output> {
    Ok(Command::new(workspace_bin("medgate-appliance")?)
        .arg("enroll")
        .arg("--provisioning")
        .arg(provisioning)
        .arg("--identity-dir")
        .arg(identity)
        .output()?)
}

/// Every MQTT message on the broker, as `mosquitto_sub -v -t '#'` prints them (topic, space,
/// payload; one per line).
#[derive(Debug)]
pub struct MqttCapture {
    peer: Peer,
}

impl MqttCapture {
    /// Subscribes to everything on `127.0.0.1:port`.
    pub async fn start(port: u16, dir: &Path) -> Result<MqttCapture> {
        std::fs::create_dir_all(dir)?;
        let mut cmd = Command::new(require_tool(MOSQUITTO_SUB));
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "#", "-v", "-q", "1", "-i", "e2e-capture"]);
        let peer = Peer::spawn("mosquitto_sub", cmd, &dir.join("mqtt-capture.log"))?;
        // Let the subscription settle before anything is published.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(MqttCapture { peer })
    }

    /// What was captured so far.
    pub fn text(&self) -> String {
        self.peer.log()
    }
}
