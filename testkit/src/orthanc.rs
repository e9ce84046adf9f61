//! Orthanc as the regional archive: DICOM C-STORE SCP, REST API and DICOMweb (STOW-RS).
//!
//! Facts (Orthanc 1.10.1 + DICOMweb plugin 1.7 from Debian 12, checked by tests/tests/harness.rs):
//! - Orthanc stores the data set bytes it received unchanged (its file differs from the sent
//!   one only in the file meta group), for C-STORE and STOW-RS alike.
//! - `SyncStorageArea` (fsync of every stored file) defaults to true.
//! - STOW-RS (`POST {dicomweb}/studies`, `multipart/related; type="application/dicom"`):
//!   success is 200 `application/dicom+json` with RetrieveURL (0008,1190), an empty
//!   FailedSOPSequence (0008,1198) and one ReferencedSOPSequence (0008,1199) item per instance
//!   (0008,1150 class, 0008,1155 instance, 0008,1190 URL); a duplicate is 200 and referenced
//!   again. An unparsable or truncated part makes the whole answer 400 with NO Content-Type
//!   header and a JSON body whose sequences omit that part, while the good parts of the same
//!   request ARE stored and referenced. An instance of another study posted to
//!   `/studies/{uid}` is 409 with a FailedSOPSequence item, FailureReason (0008,1197) = 272
//!   (0x0110). A non-multipart body is 415 with Orthanc's JSON error.
//! - Its HTTP server answers `Keep-Alive: timeout=1`: a pooled connection idle for more than
//!   1 s is closed by Orthanc (keep the client's pool idle timeout below that, or retry).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::http::{HttpReply, http_client, reply, stow_rs, truncate};
use crate::peer::{ORTHANC, ORTHANC_DICOMWEB_PLUGIN, Peer, require_tool};
use crate::ports::{free_port, wait_listening};

/// How to start Orthanc.
#[derive(Debug, Clone)]
pub struct OrthancOptions {
    /// Its AE title (`DicomAet`).
    pub aet: String,
    /// DICOM port; `None`: a free port.
    pub dicom_port: Option<u16>,
    /// HTTP port; `None`: a free port.
    pub http_port: Option<u16>,
    /// `MaximumPduLength` (4096..=131072; Orthanc's default is 16384).
    pub max_pdu: u32,
    /// `UnknownSopClassAccepted` (promiscuous C-STORE SCP).
    pub unknown_sop_class_accepted: bool,
    /// `SyncStorageArea`: fsync every stored file (Orthanc's default: true).
    pub sync_storage: bool,
    /// Keys merged last into the configuration (override anything above).
    pub extra: serde_json::Map<String, Value>,
    /// How long start-up may take.
    pub startup_timeout: Duration,
}

impl Default for OrthancOptions {
    fn default() -> Self {
        OrthancOptions {
            aet: "ORTHANC".to_string(),
            dicom_port: None,
            http_port: None,
            max_pdu: 131_072,
            unknown_sop_class_accepted: true,
            sync_storage: true,
            extra: serde_json::Map::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// A running Orthanc with its own storage and index in a temporary directory (removed on
/// drop), killed on drop. Stop and restart keep ports, storage and index.
#[derive(Debug)]
pub struct Orthanc {
    // Fields drop in order: the process first, its directory last.
    peer: Option<Peer>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    aet: String,
    dicom_port: u16,
    http_port: u16,
    startup_timeout: Duration,
    client: reqwest::Client,
    starts: u32,
}

impl Orthanc {
    /// Writes the configuration (storage and index dirs of its own, `DicomAet`, `DicomPort`,
    /// `HttpPort`, `RemoteAccessAllowed` false, `AuthenticationEnabled` false, DICOMweb plugin
    /// with root `/dicom-web/`, `StorageCompression` false) and starts Orthanc with
    /// `TCP_NODELAY=1`; returns once `GET /system` answers and the DICOM port listens.
    pub async fn start(opts: OrthancOptions) -> Result<Orthanc> {
        require_tool(ORTHANC);
        let plugin = require_tool(ORTHANC_DICOMWEB_PLUGIN);
        let dir = tempfile::Builder::new()
            .prefix("medgate-orthanc-")
            .tempdir()
            .context("creating Orthanc's temporary directory")?;
        let dicom_port = opts.dicom_port.unwrap_or_else(free_port);
        let http_port = opts.http_port.unwrap_or_else(free_port);
        let mut config = json!({
            "Name": format!("medgate-e2e-{}", opts.aet),
            "StorageDirectory": dir.path().join("storage"),
            "IndexDirectory": dir.path().join("index"),
            "StorageCompression": false,
            "SyncStorageArea": opts.sync_storage,
            "DicomAet": opts.aet,
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": false,
            "DicomAlwaysAllowEcho": true,
            "DicomAlwaysAllowStore": true,
            "UnknownSopClassAccepted": opts.unknown_sop_class_accepted,
            "MaximumPduLength": opts.max_pdu,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "HttpDescribeErrors": true,
            "TcpNoDelay": true,
            "SaveJobs": false,
            "StableAge": 5,
            "Plugins": [plugin],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
        });
        if let Some(map) = config.as_object_mut() {
            for (k, v) in opts.extra {
                map.insert(k, v);
            }
        }
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).context("encoding Orthanc's configuration")?,
        )
        .with_context(|| format!("writing {}", config_path.display()))?;
        let mut orthanc = Orthanc {
            dir,
            config_path,
            aet: opts.aet,
            dicom_port,
            http_port,
            startup_timeout: opts.startup_timeout,
            peer: None,
            client: http_client(),
            starts: 0,
        };
        orthanc.launch().await?;
        Ok(orthanc)
    }

    async fn launch(&mut self) -> Result<()> {
        self.starts += 1;
        let log = self.dir.path().join(format!("orthanc-{}.log", self.starts));
        let mut cmd = std::process::Command::new(ORTHANC);
        cmd.arg(&self.config_path);
        let mut peer = Peer::spawn("Orthanc", cmd, &log)?;
        let started = Instant::now();
        let url = format!("{}/system", self.url());
        loop {
            peer.check_alive()?;
            if let Ok(resp) = self.client.get(&url).send().await {
                if resp.status().is_success() {
                    break;
                }
            }
            if started.elapsed() > self.startup_timeout {
                bail!(
                    "Orthanc did not answer GET {url} within {:?}; log:\n{}",
                    self.startup_timeout,
                    peer.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.startup_timeout.saturating_sub(started.elapsed());
        wait_listening(self.dicom_port, left, || peer.check_alive()).await?;
        self.peer = Some(peer);
        Ok(())
    }

    /// Its AE title.
    pub fn aet(&self) -> &str {
        &self.aet
    }

    /// Its DICOM port on 127.0.0.1.
    pub fn dicom_port(&self) -> u16 {
        self.dicom_port
    }

    /// Its HTTP port on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// `http://127.0.0.1:<http_port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The DICOMweb root, `http://127.0.0.1:<http_port>/dicom-web` (STOW-RS: `{this}/studies`).
    pub fn dicomweb_url(&self) -> String {
        format!("{}/dicom-web", self.url())
    }

    /// Its storage directory (the stored files, named by Orthanc's UUIDs).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The running process (signals such as SIGSTOP/SIGCONT, statistics, log); `None` when
    /// stopped.
    pub fn peer(&mut self) -> Option<&mut Peer> {
        self.peer.as_mut()
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.peer.is_some()
    }

    /// Stops it (SIGTERM, then SIGKILL after 30 s): the archive is down. Ports, storage and
    /// index are kept for [`Orthanc::restart`].
    pub async fn stop(&mut self) -> Result<()> {
        let mut peer = self
            .peer
            .take()
            .ok_or_else(|| anyhow!("Orthanc is not running"))?;
        peer.stop(Duration::from_secs(30)).await?;
        Ok(())
    }

    /// Kills it with SIGKILL (a crash). Storage and index are kept.
    pub fn kill(&mut self) -> Result<()> {
        let mut peer = self
            .peer
            .take()
            .ok_or_else(|| anyhow!("Orthanc is not running"))?;
        peer.kill()?;
        Ok(())
    }

    /// Starts it again on the same ports with the same storage and index.
    pub async fn restart(&mut self) -> Result<()> {
        if self.peer.is_some() {
            self.stop().await?;
        }
        self.launch().await
    }

    /// `GET path` (e.g. `/statistics`) as JSON; an error for a non-2xx answer.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.url());
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let r = reply(resp).await?;
        if !(200..300).contains(&r.status) {
            bail!("GET {url}: HTTP {}: {}", r.status, truncate(&r.body, 500));
        }
        r.json()
    }

    /// `POST path` with a JSON body, answer as JSON; an error for a non-2xx answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.url());
        let resp = self
            .client
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let r = reply(resp).await?;
        if !(200..300).contains(&r.status) {
            bail!("POST {url}: HTTP {}: {}", r.status, truncate(&r.body, 500));
        }
        r.json()
    }

    /// The Orthanc IDs of every stored instance (`GET /instances`).
    pub async fn instances(&self) -> Result<Vec<String>> {
        let v = self.get_json("/instances").await?;
        serde_json::from_value(v).context("GET /instances is not a list of IDs")
    }

    /// How many instances are stored (`GET /statistics`, `CountInstances`).
    pub async fn count_instances(&self) -> Result<usize> {
        let v = self.get_json("/statistics").await?;
        v.get("CountInstances")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| anyhow!("GET /statistics has no CountInstances: {v}"))
    }

    /// The stored Part 10 file of instance `id` (`GET /instances/{id}/file`).
    pub async fn instance_file(&self, id: &str) -> Result<Vec<u8>> {
        let url = format!("{}/instances/{id}/file", self.url());
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !resp.status().is_success() {
            bail!("GET {url}: HTTP {}", resp.status());
        }
        Ok(resp
            .bytes()
            .await
            .context("reading the instance file")?
            .to_vec())
    }

    /// Writes the stored file of instance `id` to `path` (to compare it with
    /// [`crate::dataset_equal`] or [`crate::dataset_bytes_identical`]).
    pub async fn save_instance_file(&self, id: &str, path: &Path) -> Result<()> {
        let bytes = self.instance_file(id).await?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// The Orthanc ID of the instance with SOP Instance UID `uid` (`POST /tools/find`).
    pub async fn find_instance(&self, sop_instance_uid: &str) -> Result<Option<String>> {
        let v = self
            .post_json(
                "/tools/find",
                &json!({"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}}),
            )
            .await?;
        let ids: Vec<String> =
            serde_json::from_value(v).context("POST /tools/find is not a list of IDs")?;
        Ok(ids.into_iter().next())
    }

    /// The main tags of instance `id` by name (`GET /instances/{id}/simplified-tags`).
    pub async fn instance_tags(&self, id: &str) -> Result<Value> {
        self.get_json(&format!("/instances/{id}/simplified-tags"))
            .await
    }

    /// Waits until at least `count` instances are stored, at most `timeout`; returns the count.
    pub async fn wait_for_instances(&self, count: usize, timeout: Duration) -> Result<usize> {
        let started = Instant::now();
        loop {
            let n = self.count_instances().await?;
            if n >= count {
                return Ok(n);
            }
            if started.elapsed() > timeout {
                bail!("Orthanc holds {n} of {count} instances after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// STOW-RS: POSTs the Part 10 files in `parts` to `{dicomweb}/studies` in one
    /// `multipart/related; type="application/dicom"` request and returns the answer.
    pub async fn stow(&self, parts: &[Vec<u8>]) -> Result<HttpReply> {
        stow_rs(
            &self.client,
            &format!("{}/studies", self.dicomweb_url()),
            parts,
        )
        .await
    }

    /// The HTTP client used for Orthanc (no proxy, ring provider installed).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}
