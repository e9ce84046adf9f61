//! Mosquitto, the production broker: one launcher for every suite.

use crate::peer::{MOSQUITTO, Peer, require_tool};
use crate::ports::wait_listening_blocking;
use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A Mosquitto process (killed on drop), with its configuration and log.
#[derive(Debug)]
pub struct Mosquitto {
    peer: Option<Peer>,
    conf: PathBuf,
    log: PathBuf,
    /// The port it listens on.
    pub port: u16,
}

impl Mosquitto {
    /// Starts a broker on 127.0.0.1:`port` with persistence in `dir` and `extra` configuration
    /// lines (e.g. TLS for the listener), and waits until it listens.
    pub fn start(dir: &Path, port: u16, extra: &str) -> Result<Mosquitto> {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\npersistence true\npersistence_location {}/\nlog_dest stderr\nlog_type error\nlog_type warning\nuser root\nlistener {port} 127.0.0.1\n{extra}\n",
                dir.display()
            ),
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        Mosquitto::start_with_conf(&conf, port, &dir.join(format!("mosquitto-{port}.log")))
    }

    /// Starts a broker with a complete configuration written by someone else (e.g.
    /// `medgate-fleet broker-config`), listening on `port`, its output in `log`.
    pub fn start_with_conf(conf: &Path, port: u16, log: &Path) -> Result<Mosquitto> {
        let mut m = Mosquitto {
            peer: None,
            conf: conf.to_owned(),
            log: log.to_owned(),
            port,
        };
        m.restart()?;
        Ok(m)
    }

    /// (Re)starts it with the same configuration and waits until it listens.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let mut cmd = Command::new(require_tool(MOSQUITTO));
        cmd.arg("-c").arg(&self.conf);
        let mut peer = Peer::spawn("mosquitto", cmd, &self.log)?;
        wait_listening_blocking(self.port, Duration::from_secs(10), || peer.check_alive())?;
        self.peer = Some(peer);
        Ok(())
    }

    /// Stops it as a service manager does: SIGTERM (it saves its persistent sessions), then
    /// SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Some(mut peer) = self.peer.take() {
            if peer.signal(Signal::SIGTERM).is_ok() {
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(peer.try_exit_status(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            // Drop kills what is left and reaps it.
        }
    }

    /// Kills it (SIGKILL: a crash, losing what it had not saved).
    pub fn kill(&mut self) {
        if let Some(mut peer) = self.peer.take() {
            let _ = peer.kill();
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
