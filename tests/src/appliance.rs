//! The appliance under test: the real `medgate-appliance` binary, started with its own
//! configuration, ports and spool; its status API and command line.

use crate::{Peer, Storescu, free_port, wait_listening, workspace_bin};
use anyhow::{Result, bail};
use medgate_sim::studies::{CtOptions, GeneratedFile, Patient, Study};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A `medgate-appliance run` process with its configuration, ports and spool.
#[derive(Debug)]
pub struct Appliance {
    pub peer: Option<Peer>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    pub status_port: u16,
    pub ae: String,
    pub starts: u32,
    /// The program started (default: the workspace's `medgate-appliance`).
    pub program: Option<PathBuf>,
}

impl Appliance {
    /// Writes a configuration (with `extra` TOML appended: destinations and overrides) and starts it.
    pub async fn start(dir: &Path, extra: &str) -> Result<Appliance> {
        Appliance::start_with(dir, "", extra).await
    }

    pub async fn start_with(dir: &Path, listener_extra: &str, extra: &str) -> Result<Appliance> {
        Appliance::start_configured(dir, "", listener_extra, extra).await
    }

    /// [`Appliance::start_with`], with `appliance_extra` appended to the `[appliance]` table.
    pub async fn start_configured(
        dir: &Path,
        appliance_extra: &str,
        listener_extra: &str,
        extra: &str,
    ) -> Result<Appliance> {
        Appliance::start_program(dir, None, appliance_extra, listener_extra, extra).await
    }

    /// [`Appliance::start_configured`], running `program` (e.g. a slot's
    /// `current/medgate-appliance`) instead of the workspace's binary.
    pub async fn start_program(
        dir: &Path,
        program: Option<PathBuf>,
        appliance_extra: &str,
        listener_extra: &str,
        extra: &str,
    ) -> Result<Appliance> {
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let status_port = free_port();
        let ae = "MEDGATE".to_string();
        let config = dir.join("appliance.toml");
        let text = format!(
            "[appliance]\nname = \"e2e\"\ndata_dir = \"{data}\"\n{appliance_extra}\n[listener]\nae_title = \"{ae}\"\nbind = \"127.0.0.1:{port}\"\nartim_timeout_secs = 5\nidle_timeout_secs = 20\n{listener_extra}\n[status]\nbind = \"127.0.0.1:{status_port}\"\n\n{forward}{spool}{extra}\n",
            data = dir.join("data").display(),
            // Fast retries, unless the test sets its own.
            forward = if extra.contains("[forward]") {
                ""
            } else {
                "[forward]\ninitial_backoff_ms = 200\nmax_backoff_secs = 2\n\n"
            },
            // Tests must not depend on how full the machine's disk is: only the spool's own cap
            // counts. Dozens of appliances run in one CI: each keeps only 32 MiB warm.
            spool = if extra.contains("[spool]") {
                ""
            } else {
                "[spool]\nhigh_watermark_percent = 99.9\nlow_watermark_percent = 99.5\nwarm_mib = 32\n\n"
            },
        );
        std::fs::write(&config, text)?;
        // The file must pass the appliance's own check first.
        let check = Command::new(workspace_bin("medgate-appliance")?)
            .args(["config", "check"])
            .arg(&config)
            .output()?;
        if !check.status.success() {
            bail!(
                "config check failed: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let mut a = Appliance {
            peer: None,
            dir: dir.to_path_buf(),
            config,
            port,
            status_port,
            ae,
            starts: 0,
            program,
        };
        a.restart().await?;
        Ok(a)
    }

    pub async fn restart(&mut self) -> Result<()> {
        self.starts += 1;
        // Started the way a person starts it by hand: under the usual umask 022 (the appliance
        // must keep its files owner-only itself); `exec` keeps the pid the appliance's.
        let program = match &self.program {
            Some(p) => p.clone(),
            None => workspace_bin("medgate-appliance")?,
        };
        let command = || {
            let mut cmd = Command::new("/bin/sh");
            cmd.args(["-c", "umask 022 && exec \"$0\" \"$@\""])
                .arg(&program)
                .arg("run")
                .arg("--config")
                .arg(&self.config);
            cmd.env("RUST_LOG", "info");
            cmd
        };
        let log = self.dir.join(format!("appliance-{}.log", self.starts));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut peer = Peer::spawn("medgate-appliance", command(), &log)?;
            let status_port = self.status_port;
            let up = async {
                wait_listening(status_port, Duration::from_secs(30), || peer.check_alive()).await?;
                wait_listening(self.port, Duration::from_secs(30), || peer.check_alive()).await
            }
            .await;
            match up {
                Ok(()) => {
                    self.peer = Some(peer);
                    return Ok(());
                }
                // A slot's program copied moments ago can still be open for writing in a child
                // another test thread forked meanwhile (until that child execs): exec then
                // fails with ETXTBSY. A test-harness race, not the appliance's: start again.
                Err(_)
                    if attempt < 5
                        && std::fs::read_to_string(&log)
                            .is_ok_and(|l| l.contains("Text file busy")) =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut p) = self.peer.take() {
            p.kill()?;
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.peer.as_ref().map(Peer::pid).unwrap_or(0)
    }

    pub fn log_tail(&self) -> String {
        self.peer
            .as_ref()
            .map(|p| p.log_tail(40))
            .unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Result<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.status_port);
        Ok(crate::http_client()
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn status(&self) -> Result<serde_json::Value> {
        self.get("/api/status").await
    }

    /// Waits until every destination's queue is empty.
    pub async fn wait_drained(&self, timeout: Duration) -> Result<serde_json::Value> {
        let started = Instant::now();
        loop {
            let s = self.status().await?;
            let waiting: u64 = s["destinations"]
                .as_array()
                .map(|ds| {
                    ds.iter()
                        .map(|d| d["queue_depth"].as_u64().unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0);
            if waiting == 0 {
                return Ok(s);
            }
            if started.elapsed() > timeout {
                bail!(
                    "destinations not drained after {timeout:?}: {s}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// storescu proposing RLE Lossless besides the uncompressed syntaxes (`-xr`).
    pub fn storescu(&self) -> Storescu {
        Storescu::new(self.port, &self.ae).args(["-xr"])
    }

    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(workspace_bin("medgate-appliance")?)
            .args(args)
            .arg("--url")
            .arg(format!("http://127.0.0.1:{}", self.status_port))
            .output()?)
    }

    /// The last lines of the running process's log.
    pub fn log(&self) -> String {
        self.log_tail()
    }

    /// `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.status_port);
        Ok(crate::http_client().get(&url).send().await?.text().await?)
    }

    /// Waits until `check` holds on `/api/status`.
    pub async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let started = Instant::now();
        loop {
            let s = self.status().await?;
            if check(&s) {
                return Ok(s);
            }
            if started.elapsed() > timeout {
                bail!("{what}: not after {timeout:?}: {s}\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The spool's files by SOP Instance UID.
    pub fn spool_files(&self) -> Result<HashMap<String, PathBuf>> {
        spool_files(&self.dir.join("data"))
    }
}

/// The objects the spool under an appliance's `data_dir` holds, by SOP Instance UID, each
/// copied byte for byte out of the spool (a record of a segment, or a file of its own) into
/// `<data_dir>/../spool-copies/` so that it can be compared as a file.
pub fn spool_files(data_dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let copies = data_dir.parent().unwrap_or(data_dir).join("spool-copies");
    std::fs::create_dir_all(&copies)?;
    let mut out = HashMap::new();
    for (id, loc) in medgate_spool::offline::objects(data_dir)? {
        let mut bytes = Vec::new();
        loc.open()?.read_to_end(&mut bytes)?;
        let (meta, _) = medgate_dicom::part10::parse_meta(&bytes)?;
        let path = copies.join(format!("{id:016x}.dcm"));
        std::fs::write(&path, &bytes)?;
        out.insert(meta.sop_instance_uid, path);
    }
    Ok(out)
}

/// The files that hold spooled objects under an appliance's `data_dir` (segments and files of
/// their own).
pub fn spool_holders(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = medgate_spool::offline::objects(data_dir)?
        .into_iter()
        .map(|(_, loc)| loc.path)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// A `[[destination]]` table: C-STORE to `ae` on 127.0.0.1:`port`.
pub fn dimse_destination(name: &str, port: u16, ae: &str) -> String {
    format!(
        "[[destination]]\nname = \"{name}\"\nkind = \"dimse\"\naddress = \"127.0.0.1:{port}\"\ncalled_ae_title = \"{ae}\"\nparallel = 2\ntimeout_secs = 10\n\n"
    )
}

/// A CT series of `slices` slices for the synthetic patient `seed`.
pub fn ct_files(dir: &Path, seed: u64, slices: u32) -> Result<Vec<GeneratedFile>> {
    let mut study = Study::new(Patient::synthetic(seed), format!("ACC{seed:05}"), seed);
    Ok(study.ct_series(
        dir,
        &CtOptions {
            slices,
            ..CtOptions::default()
        },
    )?)
}

/// The files' paths.
pub fn paths(files: &[GeneratedFile]) -> Vec<PathBuf> {
    files.iter().map(|f| f.path.clone()).collect()
}

/// A temporary directory named for the test.
pub fn tempdir(name: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("medgate-e2e-{name}-"))
        .tempdir()?)
}
