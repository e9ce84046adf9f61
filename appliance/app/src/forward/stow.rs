//! The DICOMweb STOW-RS forwarder (PS3.18 10.5): one POST per object to `{url}/studies`, the
//! Part 10 object as the single part of a multipart/related body: read whole in one blocking
//! call up to [`WHOLE_READ_MAX`], streamed from its file beyond (never held in memory whole).

use super::queue::Outcome;
use crate::scu::WHOLE_READ_MAX;
use bytes::Bytes;
use futures_util::StreamExt;
use medgate_spool::{ObjectLocation, ObjectRecord};
use std::time::Duration;

/// A STOW-RS sender.
#[derive(Debug, Clone)]
pub struct StowSender {
    client: reqwest::Client,
    url: String,
    auth: Auth,
}

/// How to authenticate.
#[derive(Clone, Default)]
pub enum Auth {
    /// Nothing.
    #[default]
    None,
    /// HTTP basic.
    Basic(String, String),
    /// Bearer token.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "None",
            Auth::Basic(..) => "Basic(..)",
            Auth::Bearer(_) => "Bearer(..)",
        })
    }
}

impl StowSender {
    /// A sender for `url` (the DICOMweb base URL).
    pub fn new(
        url: &str,
        timeout: Duration,
        tls: std::sync::Arc<rustls::ClientConfig>,
        auth: Auth,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .tcp_nodelay(true)
            // Below the keep-alive of common archives (Orthanc closes idle connections after 1 s).
            .pool_idle_timeout(Duration::from_millis(800))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(StowSender {
            client,
            url: url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// Sends one object. A request that fails before any answer on a reused connection (the
    /// archive closed it while idle) is tried once more on a fresh one.
    pub async fn send(&self, rec: &ObjectRecord, path: &ObjectLocation) -> Outcome {
        let mut last = None;
        for _ in 0..2 {
            match self.post(rec, path).await {
                Ok((code, text)) => return classify(code, &text, &rec.sop_instance_uid),
                Err(SendError::File(reason)) => return Outcome::Refused(reason),
                Err(SendError::Http(e)) => last = Some(e),
            }
        }
        Outcome::DestinationDown(format!("STOW-RS {}", last.unwrap_or_default()))
    }

    async fn post(
        &self,
        rec: &ObjectRecord,
        path: &ObjectLocation,
    ) -> Result<(u16, String), SendError> {
        let unreadable = |e: std::io::Error| {
            SendError::File(format!("spool file {} unreadable: {e}", path.display()))
        };
        let boundary = format!("medgate-{:016x}-{:08x}", rec.id, fastrand::u32(..));
        let head = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n");
        let tail = format!("\r\n--{boundary}--\r\n");
        let body = if path.len <= WHOLE_READ_MAX {
            // One blocking read, one buffer, a body of known length.
            let at = path.clone();
            let whole = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                use std::io::{Read, Seek};
                let n = usize::try_from(at.len).map_err(std::io::Error::other)?;
                let mut body = Vec::with_capacity(head.len() + n + tail.len());
                body.extend_from_slice(head.as_bytes());
                let mut file = std::fs::File::open(&at.path)?;
                file.seek(std::io::SeekFrom::Start(at.offset))?;
                // Into the reserved capacity as it is, without zeroing it first.
                if file.take(at.len).read_to_end(&mut body)? != n {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                body.extend_from_slice(tail.as_bytes());
                Ok(body)
            })
            .await
            .map_err(|e| SendError::File(format!("reading {}: {e}", path.display())))?
            .map_err(unreadable)?;
            reqwest::Body::from(whole)
        } else {
            let mut file = tokio::fs::File::open(path.path())
                .await
                .map_err(unreadable)?;
            tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(path.offset))
                .await
                .map_err(unreadable)?;
            let file = tokio::io::AsyncReadExt::take(file, path.len);
            let (head, tail) = (Bytes::from(head), Bytes::from(tail));
            reqwest::Body::wrap_stream(
                futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) })
                    .chain(tokio_util::io::ReaderStream::with_capacity(
                        file,
                        256 * 1024,
                    ))
                    .chain(futures_util::stream::once(async move { Ok(tail) })),
            )
        };
        let mut req = self
            .client
            .post(format!("{}/studies", self.url))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header(reqwest::header::ACCEPT, "application/dicom+json")
            .body(body);
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
        };
        let rsp = req
            .send()
            .await
            .map_err(|e| SendError::Http(describe(&e)))?;
        let code = rsp.status().as_u16();
        Ok((code, rsp.text().await.unwrap_or_default()))
    }
}

/// What went wrong with a request, down to its root cause ("connection refused", "certificate
/// not valid for name …", "timed out"), instead of reqwest's bare "error sending request".
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() {
        "sending the object failed"
    } else if e.is_request() {
        "the request failed"
    } else {
        "failed"
    };
    let mut causes: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        // Layers often repeat the message of the one below them.
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.retain(|c| !text.contains(c.as_str()));
            causes.push(text);
        }
        source = cause.source();
    }
    let url = e.url().map(|u| format!(" to {u}")).unwrap_or_default();
    if causes.is_empty() {
        format!("{what}{url}: {e}")
    } else {
        format!("{what}{url}: {}", causes.join(": "))
    }
}

enum SendError {
    File(String),
    Http(String),
}

/// Turns a STOW-RS answer into an outcome for one instance.
pub fn classify(code: u16, body: &str, sop_instance: &str) -> Outcome {
    let snippet: String = body.chars().take(200).collect();
    let failure = failed_reason(body, sop_instance);
    // Some archives answer 400 for a request of which some parts were stored (Orthanc does):
    // an instance in the ReferencedSOPSequence and not in the FailedSOPSequence is stored.
    if failure.is_none() && code < 500 && referenced(body, sop_instance) {
        return Outcome::Confirmed(
            (code != 200).then(|| format!("HTTP {code}, instance listed as stored")),
        );
    }
    match code {
        200 | 202 => match failure {
            Some(reason) if reason & 0xFF00 == 0xA700 => {
                Outcome::RetryObject(format!("archive answered failure reason {reason:04X}"))
            }
            Some(reason) => Outcome::Refused(format!(
                "archive refused the instance (failure reason {reason:04X})"
            )),
            None if code == 202 => {
                Outcome::Confirmed(Some("HTTP 202: stored with warnings".into()))
            }
            None => Outcome::Confirmed(None),
        },
        409 => match failure {
            Some(reason) if reason & 0xFF00 == 0xA700 => {
                Outcome::RetryObject(format!("archive answered failure reason {reason:04X}"))
            }
            Some(reason) => Outcome::Refused(format!(
                "archive refused the instance (HTTP 409, failure reason {reason:04X})"
            )),
            None => Outcome::Refused(format!(
                "archive refused the instance (HTTP 409): {snippet}"
            )),
        },
        400 | 413 | 415 | 422 => Outcome::Refused(format!(
            "archive refused the instance (HTTP {code}): {snippet}"
        )),
        401 | 403 => Outcome::DestinationDown(format!(
            "archive refused our credentials (HTTP {code}); check username/password_file or bearer_token_file"
        )),
        404 | 405 => Outcome::DestinationDown(format!(
            "no STOW-RS service at this URL (HTTP {code}); check the destination url"
        )),
        _ => Outcome::DestinationDown(format!("archive answered HTTP {code}: {snippet}")),
    }
}

/// Whether `sop_instance` is in the ReferencedSOPSequence (0008,1199).
fn referenced(body: &str, sop_instance: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let obj = match &v {
        serde_json::Value::Array(a) => match a.first() {
            Some(o) => o,
            None => return false,
        },
        o => o,
    };
    obj.get("00081199")
        .and_then(|s| s.get("Value"))
        .and_then(|v| v.as_array())
        .is_some_and(|items| {
            items.iter().any(|item| {
                item.get("00081155")
                    .and_then(|e| e.get("Value"))
                    .and_then(|v| v.get(0))
                    .and_then(|v| v.as_str())
                    == Some(sop_instance)
            })
        })
}

/// The FailureReason (0008,1197) of `sop_instance` in a FailedSOPSequence (0008,1198), if any.
fn failed_reason(body: &str, sop_instance: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let obj = match &v {
        serde_json::Value::Array(a) => a.first()?,
        o => o,
    };
    let items = obj.get("00081198")?.get("Value")?.as_array()?;
    for item in items {
        let uid = item
            .get("00081155")
            .and_then(|e| e.get("Value"))
            .and_then(|v| v.get(0))
            .and_then(|v| v.as_str());
        if uid.is_none_or(|u| u == sop_instance) {
            let reason = item
                .get("00081197")
                .and_then(|e| e.get("Value"))
                .and_then(|v| v.get(0))
                .and_then(|v| v.as_u64())
                .unwrap_or(0x0110);
            // A reason beyond 16 bits is not a DICOM status: a processing failure.
            return Some(u16::try_from(reason).unwrap_or(0x0110));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_request_names_its_cause() {
        crate::app::install_crypto_provider();
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let e = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/dicom-web/studies"))
            .send()
            .await
            .expect_err("nothing listens");
        let text = describe(&e);
        assert!(
            text.starts_with("cannot connect to http://127.0.0.1:"),
            "{text}"
        );
        assert!(text.to_lowercase().contains("connection refused"), "{text}");
        assert!(!text.contains("error sending request"), "{text}");
    }

    #[test]
    fn success_and_failures() {
        let ok = r#"{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3"]}}]}}"#;
        assert_eq!(classify(200, ok, "1.2.3"), Outcome::Confirmed(None));
        let failed = r#"{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3"]},"00081197":{"vr":"US","Value":[49152]}}]}}"#;
        assert!(
            matches!(classify(200, failed, "1.2.3"), Outcome::Refused(r) if r.contains("C000"))
        );
        assert_eq!(classify(200, failed, "9.9.9"), Outcome::Confirmed(None));
        let busy = r#"{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3"]},"00081197":{"vr":"US","Value":[42752]}}]}}"#;
        assert!(matches!(
            classify(409, busy, "1.2.3"),
            Outcome::RetryObject(_)
        ));
        assert!(matches!(
            classify(503, "", "1.2.3"),
            Outcome::DestinationDown(_)
        ));
        assert!(
            matches!(classify(401, "", "1.2.3"), Outcome::DestinationDown(r) if r.contains("credentials"))
        );
        assert!(matches!(
            classify(415, "nope", "1.2.3"),
            Outcome::Refused(_)
        ));
    }
}
