//! The devices' HTTPS listener (issue 14): where appliances download update bundles,
//! authenticated by their device certificate (mutual TLS), resumed with HTTP Range.
//!
//! Separate from the console and API listener on purpose: it requires a client certificate
//! issued by the fleet's CA on every connection, serves nothing but bundle bytes, and knows no
//! user, session or role. Its server certificate is issued by the same CA at start (the CA
//! the devices already trust for the broker), for `[devices] download_hostnames`.
//!
//! A request is served only if the certificate's subject (the device id) names an approved
//! device whose recorded certificate serial is this certificate's (a superseded or revoked
//! certificate is refused even before the broker's revocation list is reloaded), and a campaign
//! offered that device that bundle.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use medgate_contract::{DeviceId, Sha256Hex};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::app::App;
use crate::ca::Ca;
use crate::model::DeviceStatus;
use crate::pem::{self, TlsError};
use crate::store::ota::CHUNK;

/// The path of a bundle on this listener (the offers name `{download_url}{BUNDLES}/{sha256}`).
pub const BUNDLES: &str = "/device/v1/bundles";

/// The TLS configuration: a server certificate from the fleet CA for `hostnames`, client
/// certificates required and verified against the same CA.
pub fn server_config(ca: &Ca, hostnames: &[String]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let refused = |what: String| TlsError::Pem {
        key: "devices.download_hostnames",
        path: "(the fleet CA)".into(),
        what,
    };
    let (issued, key_pem) = ca
        .issue_with_key("medgate-fleet-devices", hostnames, 825)
        .map_err(|e| refused(e.to_string()))?;
    let chain = vec![
        CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes())
            .map_err(|e| refused(e.to_string()))?,
    ];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| refused(e.to_string()))?;
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
        .map_err(|e| refused(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca_der)
        .map_err(pem::refused("devices.download"))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        pem::provider(),
    )
    .build()
    .map_err(|e| refused(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(pem::refused("devices.download"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(pem::refused("devices.download"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Who is on the other end: the TCP peer and its verified client certificate's subject and
/// serial.
#[derive(Debug, Clone)]
pub struct DevicePeer {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// The certificate's common name and serial (hex, no leading zeros), if it has both.
    pub subject: Option<(String, String)>,
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, crate::https::TlsListener>,
    > for DevicePeer
{
    fn connect_info(s: axum::serve::IncomingStream<'_, crate::https::TlsListener>) -> DevicePeer {
        let subject = s
            .io()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| subject(der.as_ref()));
        DevicePeer {
            addr: *s.remote_addr(),
            subject,
        }
    }
}

/// The common name and serial of a DER certificate.
fn subject(der: &[u8]) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    let hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some((cn, serial_key(&hex)))
}

/// A serial in hex as compared: lower case, without leading zeros (DER drops a leading zero
/// byte; the registry's record, written by the CA, may keep it).
fn serial_key(hex: &str) -> String {
    let trimmed = hex.trim_start_matches('0').to_ascii_lowercase();
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed
    }
}

/// What a Range header asks of a file of `size` bytes (RFC 9110 §14; one range only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// No Range header: the whole file, 200.
    Whole,
    /// Bytes `start..end` (end exclusive), 206.
    Part {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// Nothing of it can be served: 416.
    Unsatisfiable,
}

/// Parses a Range header value for a file of `size` bytes. Only `bytes=a-`, `bytes=a-b` and
/// `bytes=-n` are honoured; anything else (several ranges, other units) is served whole, as
/// RFC 9110 allows.
pub fn ranged(value: Option<&str>, size: u64) -> Ranged {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ranged::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(last)) if last >= start => (start, last.saturating_add(1).min(size)),
        (Ok(start), Err(_)) if b.is_empty() => (start, size),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (size.saturating_sub(n), size),
        _ => return Ranged::Whole,
    };
    if start >= size {
        Ranged::Unsatisfiable
    } else {
        Ranged::Part { start, end }
    }
}

/// The router of the devices' listener.
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route(&format!("{BUNDLES}/{{sha256}}"), get(bundle))
        .with_state(app)
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

async fn bundle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<DevicePeer>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Response {
    let store = &app.ops.store;
    let Some((cn, serial)) = peer.subject else {
        return refuse(StatusCode::FORBIDDEN, "no device certificate subject");
    };
    let (Ok(device), Ok(sha)) = (DeviceId::new(&cn), Sha256Hex::new(&sha256)) else {
        return refuse(StatusCode::NOT_FOUND, "no such bundle for this device");
    };
    let allowed = async {
        let Some(d) = store.device(device.as_str()).await? else {
            return Ok::<_, crate::store::StoreError>(false);
        };
        let identity = store.device_identity(device.as_str()).await?;
        let current = identity
            .and_then(|i| i.cert_serial)
            .is_some_and(|s| serial_key(&s) == serial);
        Ok(d.status == DeviceStatus::Approved
            && current
            && store.device_may_download(&device, &sha).await?)
    };
    match allowed.await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(device = %device, peer = %peer.addr, bundle = %sha, "bundle download refused: not approved, not its current certificate, or not offered this bundle");
            return refuse(
                StatusCode::FORBIDDEN,
                "this device is not offered this bundle (or its certificate is not its current one)",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "bundle download: database error");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable; retry",
            );
        }
    }
    let size = match store.bundle_size(&sha).await {
        Ok(Some(s)) => s,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, "no such bundle"),
        Err(e) => {
            tracing::error!(error = %e, "bundle download: database error");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable; retry",
            );
        }
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match ranged(range, size) {
        Ranged::Whole => (StatusCode::OK, 0, size),
        Ranged::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        Ranged::Unsatisfiable => {
            let mut r = refuse(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range beyond the bundle's end",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    tracing::info!(device = %device, bundle = %sha, start, end, size, "bundle download");
    app.metrics.bundle_downloads.inc();
    let store = store.clone();
    let body = futures_util::stream::unfold(start, move |at| {
        let (store, sha) = (store.clone(), sha.clone());
        async move {
            if at >= end {
                return None;
            }
            // Up to the end of the stored chunk `at` is in: each step reads one chunk.
            let len = (CHUNK - at % CHUNK).min(end - at);
            match store.bundle_range(&sha, at, len).await {
                Ok(bytes) if bytes.len() as u64 == len => {
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(bytes)), at + len))
                }
                Ok(_) => Some((
                    Err(std::io::Error::other("the bundle's chunks are incomplete")),
                    end,
                )),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), end)),
            }
        }
    });
    let mut r = Response::new(Body::from_stream(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resume_from_an_offset_and_refuse_past_the_end() {
        assert_eq!(ranged(None, 10), Ranged::Whole);
        assert_eq!(
            ranged(Some("bytes=4-"), 10),
            Ranged::Part { start: 4, end: 10 }
        );
        assert_eq!(
            ranged(Some("bytes=0-0"), 10),
            Ranged::Part { start: 0, end: 1 }
        );
        assert_eq!(
            ranged(Some("bytes=2-99"), 10),
            Ranged::Part { start: 2, end: 10 }
        );
        assert_eq!(
            ranged(Some("bytes=-3"), 10),
            Ranged::Part { start: 7, end: 10 }
        );
        assert_eq!(ranged(Some("bytes=10-"), 10), Ranged::Unsatisfiable);
        assert_eq!(ranged(Some("bytes=5-2"), 10), Ranged::Whole);
        assert_eq!(ranged(Some("bytes=1-2,4-5"), 10), Ranged::Whole);
        assert_eq!(ranged(Some("items=1-2"), 10), Ranged::Whole);
        assert_eq!(ranged(Some("bytes=x-"), 10), Ranged::Whole);
    }

    #[test]
    fn a_device_certificate_names_its_device_and_serial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path()).expect("ca");
        let (issued, _key) = ca.issue_with_key("ct-room-1", &[], 30).expect("issue");
        let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).expect("der");
        let (cn, serial) = subject(der.as_ref()).expect("subject");
        assert_eq!(cn, "ct-room-1");
        assert_eq!(serial, serial_key(&issued.serial));
        assert_eq!(serial_key("00001F"), "1f");
        assert_eq!(serial_key("00"), "0");
    }
}
