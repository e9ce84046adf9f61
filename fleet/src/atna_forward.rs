//! atna (issue 13 part 4), the shell: reads the audit log after the cursor kept in the
//! database, writes each entry as an ATNA syslog record over TLS (RFC 5425), advances the cursor
//! after each successful write, reconnects with backoff. At least once: a record written just
//! before a crash is sent again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::AuditSyslog;
use crate::pem::{self, TlsError};
use crate::store::Store;

/// The cursor's name in `atna_cursor`.
pub const CURSOR: &str = "syslog";

/// `medgate_fleet_atna_*`.
#[derive(Debug, Default)]
pub struct AtnaMetrics {
    /// Records written.
    pub sent: AtomicU64,
    /// Entries read but not yet written at the last look.
    pub backlog: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
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

/// Forwards forever. `hostname` is the records' HOSTNAME and AuditSourceID.
pub async fn run(
    store: Store,
    settings: AuditSyslog,
    tls: Arc<rustls::ClientConfig>,
    hostname: String,
    metrics: Arc<AtnaMetrics>,
) {
    let host = settings
        .address
        .rsplit_once(':')
        .map_or(settings.address.as_str(), |(h, _)| h)
        .to_owned();
    let name = settings.server_name.clone().unwrap_or(host);
    let mut backoff = Duration::from_millis(250);
    loop {
        match session(&store, &settings.address, &name, &tls, &hostname, &metrics).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, address = %settings.address, "ATNA audit repository unreachable; entries are kept and sent when it is back")
            }
        }
        metrics.connected.store(0, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn session(
    store: &Store,
    address: &str,
    server_name: &str,
    tls: &Arc<rustls::ClientConfig>,
    hostname: &str,
    metrics: &AtnaMetrics,
) -> std::io::Result<()> {
    let tcp = TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| std::io::Error::other(format!("audit.syslog.server_name: {e}")))?;
    let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await?;
    metrics.connected.store(1, Ordering::Relaxed);
    tracing::info!(address, "connected to the ATNA audit repository");
    let mut cursor = store
        .atna_cursor(CURSOR)
        .await
        .map_err(std::io::Error::other)?;
    loop {
        let batch = store
            .audit_after(&cursor, 100)
            .await
            .map_err(std::io::Error::other)?;
        metrics
            .backlog
            .store(u64::try_from(batch.len()).unwrap_or(0), Ordering::Relaxed);
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        for e in batch {
            stream.write_all(&crate::atna::encode(&e, hostname)).await?;
            stream.flush().await?;
            store
                .advance_atna_cursor(CURSOR, &e.id, e.at_ms)
                .await
                .map_err(std::io::Error::other)?;
            metrics.sent.fetch_add(1, Ordering::Relaxed);
            metrics.backlog.fetch_sub(1, Ordering::Relaxed);
            cursor = e.id;
        }
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
}
