//! The bundle download: HTTPS from the fleet, authenticated by the device certificate, resumed
//! with HTTP Range from the bytes already on disk. It only moves bytes; the agent decides when
//! to start, retries with its own delays, and acts only on a complete file that it verifies in
//! whole (signatures, threshold, expiry, compatibility, payload hash) before it writes a slot.

use super::inbox::Identity;
use futures_util::StreamExt;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the download tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Bytes on disk so far.
    Have(u64),
    /// It stopped before the end (the agent retries from `have`).
    Stopped {
        /// Bytes on disk.
        have: u64,
        /// Why, in words (no patient data: addresses, statuses, byte counts).
        error: String,
    },
    /// Every byte of the offer is on disk (fsync'd).
    Complete(u64),
}

/// The HTTPS client for downloads: the fleet's CA as the only root, the device certificate as
/// the client identity.
pub fn client(identity: &Identity) -> Result<reqwest::Client, String> {
    let tls = crate::tls::client_config(
        &identity.ca,
        Some((&identity.certificate, &identity.private_key)),
    )
    .map_err(|e| format!("the device certificate cannot be used for the download: {e}"))?;
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the download client: {e}"))
}

/// The file a download of `sha256` goes to under the update directory.
pub fn path(update_dir: &Path, sha256: &str) -> PathBuf {
    update_dir.join("download").join(format!("{sha256}.mgb"))
}

/// Bytes of `file` on disk (0 if absent).
pub fn have(file: &Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

/// How a response answers a request from byte `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The bytes from `from` on (206 with a matching Content-Range, or 200 for `from` = 0).
    From(u64),
    /// The whole file again (200 to a Range request): start over at 0.
    Whole,
    /// Nothing left to send (416 with the file complete).
    Done,
}

fn answer(
    status: u16,
    content_range: Option<&str>,
    from: u64,
    size: u64,
) -> Result<Answer, String> {
    match status {
        200 if from == 0 => Ok(Answer::From(0)),
        200 => Ok(Answer::Whole),
        206 => {
            let start = content_range
                .and_then(|r| r.strip_prefix("bytes "))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok());
            match start {
                Some(s) if s == from => Ok(Answer::From(from)),
                _ => Err(format!(
                    "the fleet answered a range that does not start at byte {from} ({})",
                    content_range.unwrap_or("no Content-Range")
                )),
            }
        }
        416 if from == size => Ok(Answer::Done),
        403 => Err("the fleet refused the download (403): this device is not offered this bundle, or its certificate is not accepted".into()),
        404 => Err("the fleet does not have this bundle (404)".into()),
        s => Err(format!("the fleet answered HTTP {s}")),
    }
}

/// Downloads `url` into `file` from byte `from` up to `size` bytes, telling `progress`.
/// Always ends with `Stopped` or `Complete`.
pub async fn fetch(
    client: reqwest::Client,
    url: String,
    file: PathBuf,
    from: u64,
    size: u64,
    progress: mpsc::Sender<Progress>,
) {
    let end = match fetch_inner(&client, &url, &file, from, size, &progress).await {
        Ok(have) => Progress::Complete(have),
        Err((have, error)) => Progress::Stopped { have, error },
    };
    let _ = progress.send(end).await;
}

async fn fetch_inner(
    client: &reqwest::Client,
    url: &str,
    file: &Path,
    from: u64,
    size: u64,
    progress: &mpsc::Sender<Progress>,
) -> Result<u64, (u64, String)> {
    let io = |have: u64, what: &str, e: std::io::Error| {
        (have, format!("cannot {what} {}: {e}", file.display()))
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(from, "create the directory of", e))?;
    }
    // Never trust more than is on disk.
    let from = from.min(have(file));
    let mut req = client.get(url);
    if from > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
    }
    let rsp = req
        .send()
        .await
        .map_err(|e| (from, format!("cannot reach {url}: {e}")))?;
    let range = rsp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let start = match answer(rsp.status().as_u16(), range.as_deref(), from, size) {
        Ok(Answer::Done) => return Ok(from),
        Ok(Answer::From(s)) => s,
        Ok(Answer::Whole) => 0,
        Err(e) => return Err((from, e)),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(file)
        .map_err(|e| io(from, "open", e))?;
    f.set_len(start).map_err(|e| io(start, "truncate", e))?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| io(start, "seek in", e))?;
    let mut have = start;
    let mut told = Instant::now();
    let mut stream = rsp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| (have, format!("the download broke off at byte {have}: {e}")))?;
        if have + chunk.len() as u64 > size {
            return Err((
                have,
                format!("the fleet sent more than the {size} bytes offered"),
            ));
        }
        f.write_all(&chunk).map_err(|e| io(have, "write", e))?;
        have += chunk.len() as u64;
        if told.elapsed() >= Duration::from_millis(500) {
            told = Instant::now();
            let _ = progress.try_send(Progress::Have(have));
        }
    }
    f.sync_all().map_err(|e| io(have, "fsync", e))?;
    if have < size {
        return Err((
            have,
            format!("the connection closed at byte {have} of {size}"),
        ));
    }
    Ok(have)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_answer_must_start_where_the_file_ends() {
        assert_eq!(answer(200, None, 0, 10), Ok(Answer::From(0)));
        assert_eq!(
            answer(206, Some("bytes 4-9/10"), 4, 10),
            Ok(Answer::From(4))
        );
        assert_eq!(answer(200, None, 4, 10), Ok(Answer::Whole));
        assert_eq!(answer(416, None, 10, 10), Ok(Answer::Done));
        assert!(answer(206, Some("bytes 0-9/10"), 4, 10).is_err());
        assert!(answer(206, None, 4, 10).is_err());
        assert!(answer(416, None, 4, 10).is_err());
        let refused = answer(403, None, 0, 10).expect_err("refused");
        assert!(refused.contains("not offered"), "{refused}");
    }
}
