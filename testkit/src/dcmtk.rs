//! DCMTK peers: `storescp` (a receiver), `storescu` (a modality), `echoscu`.
//!
//! Facts (DCMTK 3.6.7, checked here):
//! - `storescu` logs to stderr (`-v`: one `Sending file: PATH` then one
//!   `Received Store Response (STATUS)` per file; `STATUS` is `Success`, `Warning: …`,
//!   `Refused: …`, `Error: …`, `Failed: …` or `Unknown Status: 0x…`); the XMIT progress dots go
//!   to stdout. It halts at the first unsuccessful store unless `-nh` ([`Storescu::halt_on_failure`]).
//! - `storescu` re-encodes what it sends: a data set with undefined-length sequences or items
//!   arrives with explicit lengths, and Implicit VR files are sent as Explicit VR Little Endian
//!   unless only Implicit is proposed (`-xi`). Compressed files need their transfer syntax
//!   proposed (`-xr` for RLE, `-xs`, `-xy`, ...): otherwise it tries to decompress and fails.
//!   Compare a receiver's copy with the *wire form* (what storescp `+B` received from the same
//!   storescu), not with the source file, for such objects.
//! - `storescp +B` writes the received data set bytes unchanged after a new file meta group.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::peer::{ECHOSCU, Peer, STORESCP, STORESCU, new_log, require_tool};
use crate::ports::wait_listening;

/// How to start `storescp`.
#[derive(Debug, Clone)]
pub struct StorescpOptions {
    /// AE title it answers to (`-aet`).
    pub ae: String,
    /// Largest PDU it receives (`-pdu`, 4096..=131072).
    pub max_pdu: u32,
    /// Write data sets exactly as received (`+B`).
    pub bit_preserving: bool,
    /// Accept every transfer syntax DCMTK knows, compressed ones included (`+xa`).
    pub accept_all_transfer_syntaxes: bool,
    /// Accept unknown (private) SOP classes (`-pm`).
    pub promiscuous: bool,
    /// More arguments, e.g. `--sleep-during 5`, `--abort-after`, `--refuse`.
    pub extra_args: Vec<String>,
}

impl Default for StorescpOptions {
    fn default() -> Self {
        StorescpOptions {
            ae: "STORESCP".to_string(),
            max_pdu: 131_072,
            bit_preserving: true,
            accept_all_transfer_syntaxes: true,
            promiscuous: true,
            extra_args: Vec::new(),
        }
    }
}

/// A running DCMTK `storescp` writing what it receives into a directory (one file per
/// instance, named `<modality>.<SOP Instance UID>`), killed on drop.
#[derive(Debug)]
pub struct Storescp {
    peer: Peer,
    port: u16,
    ae: String,
    dir: PathBuf,
}

impl Storescp {
    /// `storescp +B +xa -pm -pdu 131072 -aet AE -od DIR PORT` on 127.0.0.1-reachable `port`.
    pub async fn start(dir: &Path, port: u16, ae: &str) -> Result<Storescp> {
        Storescp::start_with(
            dir,
            port,
            StorescpOptions {
                ae: ae.to_string(),
                ..StorescpOptions::default()
            },
        )
        .await
    }

    /// Starts `storescp` with `opts`; returns once its port listens. The log goes to
    /// `<dir>/../storescp-<port>.log` (outside the output directory).
    pub async fn start_with(dir: &Path, port: u16, opts: StorescpOptions) -> Result<Storescp> {
        let exe = require_tool(STORESCP);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_dir = dir.parent().unwrap_or(dir);
        let log = new_log(log_dir, &format!("storescp-{port}"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("-v");
        if opts.bit_preserving {
            cmd.arg("+B");
        }
        if opts.accept_all_transfer_syntaxes {
            cmd.arg("+xa");
        }
        if opts.promiscuous {
            cmd.arg("-pm");
        }
        cmd.args(["-pdu", &opts.max_pdu.to_string()])
            .args(["-aet", &opts.ae])
            .arg("-od")
            .arg(dir)
            .args(&opts.extra_args)
            .arg(port.to_string());
        let mut peer = Peer::spawn("storescp", cmd, &log)?;
        wait_listening(port, Duration::from_secs(20), || peer.check_alive()).await?;
        Ok(Storescp {
            peer,
            port,
            ae: opts.ae,
            dir: dir.to_path_buf(),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its AE title.
    pub fn ae(&self) -> &str {
        &self.ae
    }

    /// Where it writes received files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process (signals, statistics, log).
    pub fn peer(&mut self) -> &mut Peer {
        &mut self.peer
    }

    /// The files received so far, sorted.
    pub fn received_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?
        {
            let path = entry.context("reading a directory entry")?.path();
            if path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// The received file of SOP Instance UID `uid` (storescp names files `<MOD>.<uid>`).
    pub fn file_for(&self, sop_instance_uid: &str) -> Option<PathBuf> {
        let suffix = format!(".{sop_instance_uid}");
        self.received_files().ok()?.into_iter().find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
    }

    /// Waits until at least `count` files were received, at most `timeout`.
    pub async fn wait_for_files(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<PathBuf>> {
        let started = Instant::now();
        loop {
            let files = self.received_files()?;
            if files.len() >= count {
                return Ok(files);
            }
            self.peer.check_alive()?;
            if started.elapsed() > timeout {
                bail!(
                    "storescp on port {} received {} of {count} files in {timeout:?}; log:\n{}",
                    self.port,
                    files.len(),
                    self.peer.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(&mut self) -> Result<()> {
        self.peer.stop(Duration::from_secs(5)).await.map(|_| ())
    }
}

/// The outcome of one C-STORE as `storescu` reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreStatus {
    /// `Received Store Response (Success)`.
    Success,
    /// A warning status (stored), e.g. `Warning: CoercionOfDataElements`.
    Warning(String),
    /// A failure status (`Refused: OutOfResources`, `Error: …`, `Failed: …`, unknown).
    Failure(String),
    /// No response: the request could not be sent or the association broke; the error lines.
    NotSent(String),
}

/// One file `storescu` tried to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The file, as `storescu` printed it.
    pub file: PathBuf,
    /// What happened.
    pub status: StoreStatus,
}

/// The result of one `storescu` run.
#[derive(Debug, Clone)]
pub struct StorescuReport {
    /// Exit code (`None` if killed by a signal or the timeout).
    pub exit_code: Option<i32>,
    /// One entry per file storescu started to send, in order.
    pub outcomes: Vec<StoreOutcome>,
    /// `E:` lines (association rejected, aborted, …).
    pub errors: Vec<String>,
    /// The log (stderr).
    pub log: String,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The command line, for messages.
    pub command: String,
}

impl StorescuReport {
    /// Files stored with status Success.
    pub fn successes(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status == StoreStatus::Success)
            .count()
    }

    /// Outcomes other than Success (warnings included).
    pub fn non_successes(&self) -> Vec<&StoreOutcome> {
        self.outcomes
            .iter()
            .filter(|o| o.status != StoreStatus::Success)
            .collect()
    }

    /// Exit code 0 and exactly `expected` files, all stored with Success; otherwise an error
    /// that shows the log.
    pub fn expect_all_success(&self, expected: usize) -> Result<()> {
        if self.exit_code == Some(0)
            && self.outcomes.len() == expected
            && self.successes() == expected
        {
            return Ok(());
        }
        bail!(
            "storescu: expected {expected} successful stores, got {} of {} (exit {:?}); \
             failures: {:?}; errors: {:?}\ncommand: {}\nlog tail:\n{}",
            self.successes(),
            self.outcomes.len(),
            self.exit_code,
            self.non_successes(),
            self.errors,
            self.command,
            tail(&self.log, 25)
        )
    }
}

/// A `storescu` invocation (DCMTK's C-STORE SCU, acting as a modality).
#[derive(Debug, Clone)]
pub struct Storescu {
    /// Host of the receiver.
    pub host: String,
    /// Port of the receiver.
    pub port: u16,
    /// Called AE title (`-aec`).
    pub called_ae: String,
    /// Calling AE title (`-aet`).
    pub calling_ae: String,
    /// Largest PDU storescu receives (`-pdu`); the receiver's limit bounds what it sends.
    pub max_pdu: Option<u32>,
    /// Cap of the PDUs storescu sends (`--max-send-pdu`).
    pub max_send_pdu: Option<u32>,
    /// Stop at the first unsuccessful store (DCMTK's default); `false` adds `-nh`.
    pub halt_on_failure: bool,
    /// More arguments before the inputs, e.g. `-xr` (propose RLE), `-xi`, `-R`, `--abort`,
    /// `--repeat 3`, `-to 5`.
    pub extra_args: Vec<String>,
    /// Kill storescu after this long.
    pub timeout: Duration,
}

impl Storescu {
    /// storescu to `127.0.0.1:port`, called AE `called_ae`, calling AE `STORESCU`, `-pdu 131072`,
    /// no halt on failure, 10 min timeout.
    pub fn new(port: u16, called_ae: &str) -> Storescu {
        Storescu {
            host: "127.0.0.1".to_string(),
            port,
            called_ae: called_ae.to_string(),
            calling_ae: "STORESCU".to_string(),
            max_pdu: Some(131_072),
            max_send_pdu: None,
            halt_on_failure: false,
            extra_args: Vec::new(),
            timeout: Duration::from_secs(600),
        }
    }

    /// Adds arguments (builder style).
    pub fn args<I, S>(mut self, args: I) -> Storescu
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the calling AE title (builder style).
    pub fn calling_ae(mut self, ae: &str) -> Storescu {
        self.calling_ae = ae.to_string();
        self
    }

    /// Sends `inputs` (files, or directories scanned recursively with `+sd +r`) in one
    /// association and reports per-file outcomes. An `Err` means storescu could not be run
    /// (or hit the timeout); a refused association or failed stores are in the report.
    pub async fn send<P: AsRef<Path>>(&self, inputs: &[P]) -> Result<StorescuReport> {
        self.send_telling_pid(inputs, None).await
    }

    /// [`Storescu::send`] for a test that holds a transfer mid-study: with `pid`, storescu is
    /// stopped (SIGSTOP) as soon as its first store was answered — its association open, the
    /// rest of the study not sent, however fast the receiver is — and its process id is sent
    /// through `pid`; the test resumes it with SIGCONT.
    pub async fn send_telling_pid<P: AsRef<Path>>(
        &self,
        inputs: &[P],
        pid: Option<tokio::sync::oneshot::Sender<u32>>,
    ) -> Result<StorescuReport> {
        let exe = require_tool(STORESCU);
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("-v")
            .args(["-aet", &self.calling_ae])
            .args(["-aec", &self.called_ae]);
        if let Some(pdu) = self.max_pdu {
            cmd.args(["-pdu", &pdu.to_string()]);
        }
        if let Some(pdu) = self.max_send_pdu {
            cmd.args(["--max-send-pdu", &pdu.to_string()]);
        }
        if !self.halt_on_failure {
            cmd.arg("-nh");
        }
        if inputs.iter().any(|p| p.as_ref().is_dir()) {
            cmd.args(["+sd", "+r"]);
        }
        cmd.args(&self.extra_args)
            .arg(&self.host)
            .arg(self.port.to_string());
        for input in inputs {
            cmd.arg(input.as_ref());
        }
        let command = format!("{:?}", cmd.as_std());
        cmd.env("TCP_NODELAY", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("spawning {command}"))?;
        let id = child.id();
        let stderr = child.stderr.take().context("storescu's stderr")?;
        let reading = tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let (mut log, mut hold) = (String::new(), pid);
            while let Ok(Some(line)) = lines.next_line().await {
                if hold.is_some() && line.contains("Received Store Response") {
                    if let (Some(tx), Some(id)) = (hold.take(), id) {
                        let pid = nix::unistd::Pid::from_raw(i32::try_from(id).unwrap_or(0));
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
                        let _ = tx.send(id);
                    }
                }
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        let status = tokio::time::timeout(self.timeout, child.wait())
            .await
            .with_context(|| format!("storescu ran longer than {:?}: {command}", self.timeout))?
            .with_context(|| format!("waiting for {command}"))?;
        let log = reading.await.context("reading storescu's log")?;
        let (outcomes, errors) = parse_storescu_log(&log);
        Ok(StorescuReport {
            exit_code: status.code(),
            outcomes,
            errors,
            log,
            elapsed: started.elapsed(),
            command,
        })
    }

    /// Runs one storescu per batch, all at once (parallel associations), and returns the
    /// reports in batch order.
    pub async fn send_parallel(&self, batches: &[Vec<PathBuf>]) -> Result<Vec<StorescuReport>> {
        let mut set = tokio::task::JoinSet::new();
        for (i, batch) in batches.iter().enumerate() {
            let me = self.clone();
            let batch = batch.clone();
            set.spawn(async move { (i, me.send(&batch).await) });
        }
        let mut reports: Vec<Option<StorescuReport>> = vec![None; batches.len()];
        while let Some(joined) = set.join_next().await {
            let (i, report) = joined.context("a storescu task panicked")?;
            reports[i] = Some(report?);
        }
        Ok(reports.into_iter().flatten().collect())
    }
}

/// Shorthand: `Storescu::new(port, called_ae).send(inputs)`.
pub async fn storescu<P: AsRef<Path>>(
    port: u16,
    called_ae: &str,
    inputs: &[P],
) -> Result<StorescuReport> {
    Storescu::new(port, called_ae).send(inputs).await
}

/// Parses storescu's `-v` log into per-file outcomes and error lines.
pub fn parse_storescu_log(log: &str) -> (Vec<StoreOutcome>, Vec<String>) {
    let mut outcomes: Vec<StoreOutcome> = Vec::new();
    let mut errors = Vec::new();
    // The file being sent and the error lines seen since it started.
    let mut current: Option<(PathBuf, Vec<String>)> = None;
    let finish_unanswered = |current: &mut Option<(PathBuf, Vec<String>)>,
                             outcomes: &mut Vec<StoreOutcome>| {
        if let Some((file, errs)) = current.take() {
            let why = if errs.is_empty() {
                "no C-STORE response".to_string()
            } else {
                errs.join("; ")
            };
            outcomes.push(StoreOutcome {
                file,
                status: StoreStatus::NotSent(why),
            });
        }
    };
    for line in log.lines() {
        let line = line.trim_end();
        if let Some(file) = line.strip_prefix("I: Sending file: ") {
            finish_unanswered(&mut current, &mut outcomes);
            current = Some((PathBuf::from(file), Vec::new()));
        } else if let Some(rest) = line.strip_prefix("I: Received Store Response") {
            let status_text = rest
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or(rest.trim())
                .to_string();
            let status = if status_text == "Success" {
                StoreStatus::Success
            } else if status_text.starts_with("Warning") {
                StoreStatus::Warning(status_text)
            } else {
                StoreStatus::Failure(status_text)
            };
            if let Some((file, _)) = current.take() {
                outcomes.push(StoreOutcome { file, status });
            }
        } else if let Some(err) = line.strip_prefix("E: ") {
            errors.push(err.to_string());
            if let Some((_, errs)) = current.as_mut() {
                errs.push(err.to_string());
            }
        }
    }
    finish_unanswered(&mut current, &mut outcomes);
    (outcomes, errors)
}

/// The result of one `echoscu` run.
#[derive(Debug, Clone)]
pub struct EchoReport {
    /// Exit code 0 and a successful C-ECHO response.
    pub success: bool,
    /// Exit code (`None` if killed).
    pub exit_code: Option<i32>,
    /// The log (stdout and stderr).
    pub log: String,
}

/// `echoscu -v -aet calling -aec called 127.0.0.1 port` (C-ECHO), 60 s timeout.
pub async fn echoscu(port: u16, called_ae: &str, calling_ae: &str) -> Result<EchoReport> {
    let exe = require_tool(ECHOSCU);
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("-v")
        .args(["-aet", calling_ae])
        .args(["-aec", called_ae])
        .args(["-to", "30"])
        .arg("127.0.0.1")
        .arg(port.to_string())
        .env("TCP_NODELAY", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("echoscu ran longer than 60 s")?
        .context("running echoscu")?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let success = output.status.success() && log.contains("Received Echo Response (Success)");
    Ok(EchoReport {
        success,
        exit_code: output.status.code(),
        log,
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storescu_log_is_parsed_into_outcomes() {
        let log = "I: checking input files ...\n\
I: Requesting Association\n\
I: Association Accepted (Max Send PDV: 16372)\n\
I: Sending file: /a/ct1.dcm\n\
I: Converting transfer syntax: Little Endian Explicit -> Little Endian Explicit\n\
I: Sending Store Request (MsgID 1, CT)\n\
I: Received Store Response (Success)\n\
I: Sending file: /a/rle.dcm\n\
W: DIMSE Warning: (STORESCU,ORTHANC): sendMessage: unable to convert dataset\n\
E: Store Failed, file: /a/rle.dcm:\n\
E: 0006:020e DIMSE Failed to send message\n\
I: Sending file: /a/ct2.dcm\n\
I: Received Store Response (Refused: OutOfResources)\n\
I: Sending file: /a/ct3.dcm\n\
I: Received Store Response (Warning: CoercionOfDataElements)\n\
I: Sending file: /a/ct4.dcm\n\
E: Store SCU Failed: 0006:0207 DIMSE No valid Presentation Context ID\n";
        let (outcomes, errors) = parse_storescu_log(log);
        let statuses: Vec<_> = outcomes.iter().map(|o| o.status.clone()).collect();
        assert_eq!(
            statuses,
            vec![
                StoreStatus::Success,
                StoreStatus::NotSent(
                    "Store Failed, file: /a/rle.dcm:; 0006:020e DIMSE Failed to send message"
                        .to_string()
                ),
                StoreStatus::Failure("Refused: OutOfResources".to_string()),
                StoreStatus::Warning("Warning: CoercionOfDataElements".to_string()),
                StoreStatus::NotSent(
                    "Store SCU Failed: 0006:0207 DIMSE No valid Presentation Context ID"
                        .to_string()
                ),
            ]
        );
        assert_eq!(outcomes[0].file, PathBuf::from("/a/ct1.dcm"));
        assert_eq!(errors.len(), 3);
    }
}
