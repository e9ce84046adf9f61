//! The thin async shell around the sans-IO PDU framing: reads one PDU at a time into a reusable
//! buffer bounded by the negotiated limits, writes PDUs. Used by the listener and the SCU.

use medgate_dicom::pdata::{self, FrameLimits, PDU_HEADER_LEN, PduHeader, Pdv, pdu_type};
use medgate_dicom::pdu::Pdu;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Any byte stream we speak DICOM over: TCP or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed stream, so plain and TLS associations share one code path.
pub type BoxStream = Box<dyn Stream>;

/// Errors on a DICOM connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// A socket error.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not DICOM.
    #[error("protocol error: {0}")]
    Framing(#[from] pdata::FramingError),
    /// No PDU arrived in time.
    #[error("no PDU within {0} s")]
    Timeout(u64),
}

/// What one read returned.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// P-DATA-TF values, borrowed from the connection's buffer.
    PData(Vec<Pdv<'a>>),
    /// Any other PDU.
    Other(Pdu),
}

/// A connection that reads and writes whole PDUs.
pub struct PduConn {
    stream: BoxStream,
    buf: Vec<u8>,
    /// The first byte of the next PDU, read ahead by [`PduConn::wait_data`].
    lookahead: Option<u8>,
    /// Limits on incoming PDUs.
    pub limits: FrameLimits,
}

impl std::fmt::Debug for PduConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PduConn")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PduConn {
    /// Wraps a stream.
    pub fn new(stream: BoxStream, limits: FrameLimits) -> Self {
        PduConn {
            stream,
            buf: Vec::new(),
            lookahead: None,
            limits,
        }
    }

    /// Reads the next PDU, waiting at most `timeout_secs`.
    pub async fn read(&mut self, timeout_secs: u64) -> Result<Incoming<'_>, ConnError> {
        let mut h = [0u8; PDU_HEADER_LEN];
        let start = match self.lookahead.take() {
            Some(b) => {
                h[0] = b;
                1
            }
            None => 0,
        };
        let read_header = async {
            match self.stream.read_exact(&mut h[start..]).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ConnError::Closed),
                Err(e) => Err(ConnError::Io(e)),
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(timeout_secs), read_header)
            .await
            .map_err(|_| ConnError::Timeout(timeout_secs))??;
        let header = PduHeader::parse(&h, &self.limits)?;
        let len = header.length as usize;
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        // A peer that stops in the middle of a PDU is as dead as a silent one.
        tokio::time::timeout(
            std::time::Duration::from_secs(timeout_secs),
            self.stream.read_exact(&mut self.buf[..len]),
        )
        .await
        .map_err(|_| ConnError::Timeout(timeout_secs))?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ConnError::Closed
            } else {
                ConnError::Io(e)
            }
        })?;
        let body = &self.buf[..len];
        if header.pdu_type == pdu_type::P_DATA {
            Ok(Incoming::PData(pdata::parse_pdata(body)?))
        } else {
            Ok(Incoming::Other(pdata::decode_other(header, body)?))
        }
    }

    /// Waits, at most `timeout_secs`, until the peer sent something. Cancel-safe: a byte read
    /// is kept for the next [`PduConn::read`].
    pub async fn wait_data(&mut self, timeout_secs: u64) -> Result<(), ConnError> {
        if self.lookahead.is_some() {
            return Ok(());
        }
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(timeout_secs),
            self.stream.read(&mut b),
        )
        .await
        .map_err(|_| ConnError::Timeout(timeout_secs))??;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        self.lookahead = Some(b[0]);
        Ok(())
    }

    /// Sends a non-data PDU.
    pub async fn send(&mut self, pdu: &Pdu) -> Result<(), ConnError> {
        let bytes = pdata::encode_other(pdu)?;
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    /// Sends pre-framed bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Sends pre-framed bytes given in parts (one PDU's header, its data, the next header, …),
    /// with as few writes as the socket takes: no copy into one buffer first.
    pub async fn send_parts(&mut self, parts: &[&[u8]]) -> Result<(), ConnError> {
        let mut slices: Vec<std::io::IoSlice<'_>> =
            parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = self.stream.write_vectored(rest).await?;
            if n == 0 {
                return Err(ConnError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            std::io::IoSlice::advance_slices(&mut rest, n);
        }
        Ok(())
    }

    /// Sends an A-ABORT (service provider, given reason) and shuts the stream down.
    pub async fn abort(&mut self, reason: u8) {
        let bytes = [pdu_type::ABORT, 0, 0, 0, 0, 4, 0, 0, 2, reason];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let _ = self.stream.write_all(&bytes).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }

    /// Shuts the stream down.
    pub async fn close(&mut self) {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.stream.shutdown()).await;
    }
}

/// A-ABORT reasons (service provider).
pub use medgate_dicom::pdata::abort_reason;
