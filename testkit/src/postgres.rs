//! PostgreSQL, started for a test with initdb and pg_ctl in a temporary directory.

use crate::ports::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server in a temporary directory, run as the `postgres` user (it refuses root).
#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    data: PathBuf,
}

impl Postgres {
    pub fn start(dir: &Path) -> Postgres {
        let root = dir.join("pg");
        std::fs::create_dir_all(&root).expect("mkdir");
        // postgres must reach its directory: open the path for traversal, own the data dir.
        let mut p = root.clone();
        while p.pop() {
            if p.starts_with("/tmp") && p != Path::new("/tmp") {
                let _ = Command::new("chmod").arg("a+x").arg(&p).status();
            }
        }
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&root)
            .status()
            .expect("chown");
        assert!(status.success());
        let data = root.join("data");
        let ok = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "medgate",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("initdb (apt-get install postgresql)");
        assert!(ok.success(), "initdb failed");
        let port = free_port();
        let ok = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -h 127.0.0.1 -k {} -c fsync=off",
                root.display()
            ))
            .arg("-l")
            .arg(root.join("log"))
            .args(["-w", "start"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl");
        assert!(
            ok.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(root.join("log")).unwrap_or_default()
        );
        Postgres { port, data }
    }

    pub fn url(&self) -> String {
        format!("postgres://medgate@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}
