//! HTTP for tests: a loopback client and STOW-RS requests.

use std::time::Duration;

use anyhow::{Context, Result};

/// A reqwest client for loopback peers: no proxy (a proxy from the environment must never see
/// test traffic), 120 s timeout. Installs rustls' `ring` provider as the process default first
/// (reqwest is built without a provider; see DESIGN.md).
pub fn http_client() -> reqwest::Client {
    // Fails only if a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("build an HTTP client (ring provider installed)")
}

/// What an HTTP server answered.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body, as text (lossy UTF-8).
    pub body: String,
}

impl HttpReply {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| {
            format!(
                "HTTP {} body is not JSON: {}",
                self.status,
                truncate(&self.body, 500)
            )
        })
    }
}

/// The `Content-Type` of a STOW-RS request body built by [`multipart_related`].
pub fn multipart_content_type(boundary: &str) -> String {
    format!("multipart/related; type=\"application/dicom\"; boundary={boundary}")
}

/// A `multipart/related; type="application/dicom"` body: one part per Part 10 file.
pub fn multipart_related(boundary: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.len() + 128).sum());
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Type: application/dicom\r\n\r\n");
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// POSTs `parts` (Part 10 files) to `url` (e.g. `http://127.0.0.1:8042/dicom-web/studies`) as
/// STOW-RS, asking for `application/dicom+json`, and returns the answer whatever its status.
pub async fn stow_rs(client: &reqwest::Client, url: &str, parts: &[Vec<u8>]) -> Result<HttpReply> {
    let boundary = format!("medgate-e2e-{:016x}", fastrand::u64(..));
    let body = multipart_related(&boundary, parts);
    let response = client
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            multipart_content_type(&boundary),
        )
        .header(reqwest::header::ACCEPT, "application/dicom+json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    reply(response).await
}

/// Collects status, content type and body of a response.
pub async fn reply(response: reqwest::Response) -> Result<HttpReply> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = response
        .bytes()
        .await
        .context("reading the response body")?;
    Ok(HttpReply {
        status,
        content_type,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// `s`, cut to at most `max` bytes (on a character boundary) for an error message.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_body_frames_each_part() {
        let body = multipart_related("B", &[b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            "--B\r\nContent-Type: application/dicom\r\n\r\none\r\n\
             --B\r\nContent-Type: application/dicom\r\n\r\ntwo\r\n--B--\r\n"
        );
        assert_eq!(
            multipart_content_type("B"),
            "multipart/related; type=\"application/dicom\"; boundary=B"
        );
    }
}
