//! atna (issue 13 part 4), the shell: forwards the audit log to the hospital's audit repository
//! as ATNA syslog records over TLS (RFC 5425).
//!
//! One replica at a time: each pass takes or renews the lease row of `atna_lease` (10 s, renewed
//! every 2 s); a replica without it neither connects nor sends, and takes over once the
//! holder's lease runs out. The holder reads the entries after the cursor of `atna_cursor`,
//! oldest first, but only those older than [`SETTLE_MS`]: ids are stamped before the INSERT
//! commits, so a younger entry could still be followed by an older id committing late (another
//! request, another replica); waiting out the window lets those land before the cursor passes
//! them. It writes each record, advances the cursor after each write, and reconnects with
//! backoff. At least once: a record written just before a crash or a lost lease is sent again.
//! It also watches the connection while idle, so a repository that closed it (a restart) is
//! noticed before the next record is written into the void.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::AuditSyslog;
use crate::pem::{self, TlsError};
use crate::store::audit::audit_id_floor;
use crate::store::{Store, now_db};

/// The cursor's (and the lease's) name.
pub const CURSOR: &str = "syslog";
/// Only entries made at least this long ago are sent (ms): longer than any audit INSERT takes
/// from stamping its id to its commit, plus the clock difference between replicas.
pub const SETTLE_MS: i64 = 5_000;
/// How long a lease lasts (ms).
pub const LEASE_MS: i64 = 10_000;
/// How often the holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How long a replica without the lease waits before asking again.
const LEASE_RETRY: Duration = Duration::from_secs(2);
/// Entries per read.
const BATCH: i64 = 100;
/// Connecting, the TLS handshake, and each write: longer means the repository is stuck.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `medgate_fleet_atna_*`.
#[derive(Debug, Default)]
pub struct AtnaMetrics {
    /// Records written.
    pub sent: AtomicU64,
    /// Entries after the cursor (settled or not) at the holder's last count.
    pub backlog: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
    /// 1 while this replica holds the lease.
    pub lease_held: AtomicU64,
}

/// The TLS client configuration of `[audit.syslog]`.
pub fn client_config(s: &AuditSyslog) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem::certificates("audit.syslog.ca", &s.ca)? {
        roots.add(c).map_err(pem::refused("audit.syslog.ca"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(pem::refused("audit.syslog"))?
        .with_root_certificates(roots);
    Ok(match (&s.certificate, &s.private_key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(
                pem::certificates("audit.syslog.certificate", c)?,
                pem::private_key("audit.syslog.private_key", k)?,
            )
            .map_err(pem::refused("audit.syslog.private_key"))?,
        _ => builder.with_no_client_auth(),
    })
}

/// This process's name as a lease holder: host, pid and start time (unique among the replicas).
pub fn holder_name(hostname: &str) -> String {
    format!("{hostname}:{}:{}", std::process::id(), now_db())
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// Connecting, the handshake, a write, or the repository's close.
    #[error("{0}")]
    Repository(#[from] std::io::Error),
    /// Reading the log, the cursor or the lease.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// Why a session ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Another replica holds the lease now.
    LeaseLost,
}

/// The shared parts of a forwarder.
struct Forwarder {
    store: Store,
    address: String,
    server_name: String,
    tls: Arc<rustls::ClientConfig>,
    hostname: String,
    holder: String,
    metrics: Arc<AtnaMetrics>,
}

/// Forwards forever. `hostname` is the records' HOSTNAME and AuditSourceID; `holder` this
/// replica's name in the lease ([`holder_name`]).
pub async fn run(
    store: Store,
    settings: AuditSyslog,
    tls: Arc<rustls::ClientConfig>,
    hostname: String,
    holder: String,
    metrics: Arc<AtnaMetrics>,
) {
    let host = settings
        .address
        .rsplit_once(':')
        .map_or(settings.address.as_str(), |(h, _)| h)
        .to_owned();
    let f = Forwarder {
        store,
        server_name: settings.server_name.clone().unwrap_or(host),
        address: settings.address,
        tls,
        hostname,
        holder,
        metrics,
    };
    let mut backoff = MIN_BACKOFF;
    let mut waiting = false;
    loop {
        let asked = Instant::now();
        match f.renew().await {
            Ok(true) => {
                if waiting {
                    tracing::info!(holder = %f.holder, "took the ATNA forwarding lease");
                    waiting = false;
                }
            }
            Ok(false) => {
                if !waiting {
                    tracing::info!(holder = %f.holder, "another replica forwards the audit log; waiting for its lease to run out");
                    waiting = true;
                }
                f.metrics.lease_held.store(0, Ordering::Relaxed);
                f.metrics.backlog.store(0, Ordering::Relaxed);
                tokio::time::sleep(LEASE_RETRY).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ATNA lease not readable; retrying");
                tokio::time::sleep(LEASE_RETRY).await;
                continue;
            }
        }
        f.metrics.lease_held.store(1, Ordering::Relaxed);
        f.count_backlog().await;
        let mut connected = false;
        match f.session(asked, &mut connected).await {
            Ok(Ended::LeaseLost) => {
                tracing::info!(holder = %f.holder, "lost the ATNA forwarding lease to another replica");
            }
            Err(SessionError::Repository(e)) => {
                tracing::warn!(error = %e, address = %f.address, "ATNA audit repository unreachable; entries are kept and sent when it is back")
            }
            Err(SessionError::Store(e)) => {
                tracing::warn!(error = %e, "ATNA forwarding paused: the database did not answer; retrying")
            }
        }
        f.metrics.connected.store(0, Ordering::Relaxed);
        f.metrics.lease_held.store(0, Ordering::Relaxed);
        if connected {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What a read of the connection means: a syslog receiver never writes, so end of stream or an
/// error is its close (an error to the caller), and bytes are ignored.
fn closed(read: std::io::Result<usize>) -> std::io::Result<()> {
    match read {
        Ok(0) => Err(std::io::Error::other(
            "the audit repository closed the connection",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Forwarder {
    /// Takes or renews the lease; true if held.
    async fn renew(&self) -> Result<bool, crate::store::StoreError> {
        let now = now_db();
        self.store
            .take_atna_lease(CURSOR, &self.holder, now, now.saturating_add(LEASE_MS))
            .await
    }

    async fn count_backlog(&self) {
        let n = match self.store.atna_cursor(CURSOR).await {
            Ok(c) => self.store.audit_count_after(&c).await,
            Err(e) => Err(e),
        };
        match n {
            Ok(n) => self
                .metrics
                .backlog
                .store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "ATNA backlog not countable"),
        }
    }

    /// One connection: sends while it holds the lease, last renewed when `renewed` was (the
    /// connection can take a while). `connected` is set once the TLS handshake is done.
    async fn session(
        &self,
        mut renewed: Instant,
        connected: &mut bool,
    ) -> Result<Ended, SessionError> {
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())
            .map_err(|e| std::io::Error::other(format!("audit.syslog.server_name: {e}")))?;
        let mut stream = tokio::time::timeout(
            IO_TIMEOUT,
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
        *connected = true;
        self.metrics.connected.store(1, Ordering::Relaxed);
        tracing::info!(address = %self.address, "connected to the ATNA audit repository");
        let mut scratch = [0u8; 256];
        loop {
            let cursor = self.store.atna_cursor(CURSOR).await?;
            let backlog = self.store.audit_count_after(&cursor).await?;
            self.metrics
                .backlog
                .store(u64::try_from(backlog).unwrap_or(0), Ordering::Relaxed);
            let settled = audit_id_floor(now_db().saturating_sub(SETTLE_MS));
            let batch = self.store.audit_after(&cursor, &settled, BATCH).await?;
            if batch.is_empty() {
                // Idle: a syslog receiver never writes, so anything readable is its close.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    r = stream.read(&mut scratch) => closed(r)?,
                }
            }
            for e in batch {
                if !self.keep(&mut renewed).await? {
                    return Ok(Ended::LeaseLost);
                }
                // A close that has already arrived is seen here, before the record is lost in
                // a connection the repository no longer reads (one poll, no wait).
                if let Ok(r) = tokio::time::timeout(Duration::ZERO, stream.read(&mut scratch)).await
                {
                    closed(r)?;
                }
                let bytes = crate::atna::encode(&e, &self.hostname);
                tokio::time::timeout(IO_TIMEOUT, async {
                    stream.write_all(&bytes).await?;
                    stream.flush().await
                })
                .await
                .map_err(|_| std::io::Error::other("write to the audit repository timed out"))??;
                self.store
                    .advance_atna_cursor(CURSOR, &e.id, now_db())
                    .await?;
                self.metrics.sent.fetch_add(1, Ordering::Relaxed);
                let _ =
                    self.metrics
                        .backlog
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                            Some(b.saturating_sub(1))
                        });
            }
            if !self.keep(&mut renewed).await? {
                return Ok(Ended::LeaseLost);
            }
        }
    }

    /// Renews the lease if [`RENEW_EVERY`] has passed since `renewed` (then moved to the time
    /// of asking); false once another replica has it.
    async fn keep(&self, renewed: &mut Instant) -> Result<bool, SessionError> {
        if renewed.elapsed() < RENEW_EVERY {
            return Ok(true);
        }
        let asked = Instant::now();
        let held = self.renew().await?;
        if held {
            *renewed = asked;
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::{AuditEntry, Outcome};
    use tokio::io::AsyncReadExt;

    /// Reads one RFC 5425 frame.
    async fn frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
        let mut len = Vec::new();
        loop {
            let b = r.read_u8().await.expect("read");
            if b == b' ' {
                break;
            }
            len.push(b);
        }
        let n: usize = String::from_utf8(len)
            .expect("ascii")
            .parse()
            .expect("length");
        let mut msg = vec![0; n];
        r.read_exact(&mut msg).await.expect("message");
        msg
    }

    #[tokio::test]
    async fn entries_go_over_tls_in_order_and_the_cursor_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        for (id, action) in [("01", "login"), ("02", "device.patch")] {
            let e = AuditEntry {
                id: id.into(),
                at_ms: 1_000,
                actor: "alice".into(),
                source: Some("127.0.0.1".into()),
                action: action.into(),
                target: "device:ct-1".into(),
                outcome: Outcome::Ok,
                before: None,
                after: None,
            };
            store.append_audit(&e).await.expect("append");
        }
        // A real TLS server with a certificate for localhost.
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write");
        let server = rustls::ServerConfig::builder_with_provider(pem::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
            )
            .expect("server config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let settings = AuditSyslog {
            enabled: true,
            address: listener.local_addr().expect("addr").to_string(),
            server_name: Some("localhost".into()),
            ca,
            certificate: None,
            private_key: None,
        };
        let tls = Arc::new(client_config(&settings).expect("client config"));
        let all = crate::metrics::Metrics::default();
        let metrics = all.atna.clone();
        let task = tokio::spawn(run(
            store.clone(),
            settings,
            tls,
            "fleet-1".into(),
            holder_name("fleet-1"),
            metrics.clone(),
        ));
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut s = tokio_rustls::TlsAcceptor::from(Arc::new(server))
            .accept(tcp)
            .await
            .expect("handshake");
        let first = String::from_utf8(frame(&mut s).await).expect("utf-8");
        let second = String::from_utf8(frame(&mut s).await).expect("utf-8");
        assert!(first.contains("csd-code=\"110114\""), "{first}");
        assert!(
            second.contains("ParticipantObjectID=\"device:ct-1\""),
            "{second}"
        );
        for _ in 0..50 {
            if store.atna_cursor(CURSOR).await.expect("cursor") == "02" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store.atna_cursor(CURSOR).await.expect("cursor"), "02");
        assert_eq!(metrics.sent.load(Ordering::Relaxed), 2);
        let text = all.render(&[]);
        assert!(text.contains("medgate_fleet_atna_sent_total 2\n"), "{text}");
        assert!(text.contains("medgate_fleet_atna_connected 1\n"), "{text}");
        task.abort();
    }

    /// A real TLS server for `localhost`: its configuration and the CA file to trust.
    fn tls_server(dir: &std::path::Path) -> (rustls::ServerConfig, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write");
        let server = rustls::ServerConfig::builder_with_provider(pem::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
            )
            .expect("server config");
        (server, ca)
    }

    fn entry_at(micros: u64, target: &str) -> AuditEntry {
        AuditEntry {
            id: crate::store::audit::audit_id(micros, "00000000"),
            at_ms: i64::try_from(micros / 1000).expect("time"),
            actor: "alice".into(),
            source: None,
            action: "device.patch".into(),
            target: target.into(),
            outcome: Outcome::Ok,
            before: None,
            after: None,
        }
    }

    #[tokio::test]
    async fn two_replicas_send_once_and_a_late_commit_is_not_passed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let (server, ca) = tls_server(dir.path());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let settings = AuditSyslog {
            enabled: true,
            address: listener.local_addr().expect("addr").to_string(),
            server_name: Some("localhost".into()),
            ca,
            certificate: None,
            private_key: None,
        };
        // Every connection's frames go to one channel, tagged with the connection's number.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
        let server = tokio::spawn(async move {
            let mut n = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                n += 1;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    loop {
                        let msg = frame(&mut s).await;
                        if tx
                            .send((n, String::from_utf8(msg).expect("utf-8")))
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let tls = Arc::new(client_config(&settings).expect("client config"));
        let replicas: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|holder| {
                let metrics = Arc::new(AtnaMetrics::default());
                let task = tokio::spawn(run(
                    store.clone(),
                    settings.clone(),
                    tls.clone(),
                    "fleet-1".into(),
                    holder.into(),
                    metrics.clone(),
                ));
                (task, metrics)
            })
            .collect();
        // Entry "late" is stamped 2 s ago but commits after entry "early", stamped 1 s ago
        // (a slow request): neither is settled yet, so both go out, in id order.
        let now_us = u64::try_from(now_db()).expect("time") * 1000;
        store
            .append_audit(&entry_at(now_us - 1_000_000, "device:early"))
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        store
            .append_audit(&entry_at(now_us - 2_000_000, "device:late"))
            .await
            .expect("append");
        async fn recv(
            rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, String)>,
        ) -> (usize, String) {
            tokio::time::timeout(Duration::from_secs(15), rx.recv())
                .await
                .expect("a record in time")
                .expect("the server runs")
        }
        let (c1, first) = recv(&mut rx).await;
        let (c2, second) = recv(&mut rx).await;
        assert!(
            first.contains("ParticipantObjectID=\"device:late\""),
            "{first}"
        );
        assert!(
            second.contains("ParticipantObjectID=\"device:early\""),
            "{second}"
        );
        assert_eq!(c1, c2, "one connection");
        // Nothing else: the other replica neither connected nor sent.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(rx.try_recv().is_err(), "sent twice");
        let held: u64 = replicas
            .iter()
            .map(|(_, m)| m.lease_held.load(Ordering::Relaxed))
            .sum();
        assert_eq!(held, 1, "one replica holds the lease");
        let connected: u64 = replicas
            .iter()
            .map(|(_, m)| m.connected.load(Ordering::Relaxed))
            .sum();
        assert_eq!(connected, 1, "one replica is connected");
        for (task, _) in replicas {
            task.abort();
        }
        server.abort();
    }
}
