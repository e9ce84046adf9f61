//! The association requestor (SCU): connects to a DICOM peer (plain or TLS), negotiates, and
//! sends C-ECHO and C-STORE: a data set up to 2 MiB from memory (read whole, sent by vectored
//! writes), a larger one streamed from its spool file in PDU-sized chunks.
//! Used by the DIMSE forwarder and by the simulated modalities of the demo.

use crate::conn::{BoxStream, ConnError, Incoming, PduConn};
use medgate_dicom::assemble::{Assembler, Piece};
use medgate_dicom::command::{self, CommandSet, field, tags};
use medgate_dicom::negotiate::{self, AcceptedContext};
use medgate_dicom::pdata::{
    FrameLimits, PDU_HEADER_LEN, PDV_HEADER_LEN, encode_command_pdus, pdata_header,
};
use medgate_dicom::pdu::{AssociationAC, AssociationRQ, Pdu};
use medgate_dicom::requestor::{self, Answer, Interruption};
use medgate_dicom::{part10, uids};
use medgate_spool::ObjectLocation;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Our max PDU length as a requestor.
pub const SCU_MAX_PDU: u32 = 262_144;
/// Largest P-DATA PDU we send, whatever the peer allows.
const SEND_PDU_CAP: u32 = 1 << 20;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ScuOptions {
    /// host:port.
    pub address: String,
    /// Our AE title.
    pub calling_ae: String,
    /// The peer's AE title.
    pub called_ae: String,
    /// Connect and response timeout.
    pub timeout: Duration,
    /// TLS client configuration and the name to verify.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

/// Errors of an SCU association.
#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    /// TCP connect failed or timed out.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        reason: String,
    },
    /// TLS handshake failed.
    #[error("DICOM TLS handshake with {address} failed: {reason}")]
    Tls {
        /// Where.
        address: String,
        /// Why.
        reason: String,
    },
    /// The peer rejected the association.
    #[error("association rejected by the peer ({}): {reason}", if *.permanent { "permanent" } else { "transient" })]
    Rejected {
        /// Permanent or transient.
        permanent: bool,
        /// The peer's reason.
        reason: String,
    },
    /// The peer aborted.
    #[error("association aborted by the peer")]
    Aborted,
    /// Something else went wrong on the connection.
    #[error("{0}")]
    Conn(#[from] ConnError),
    /// The peer answered nonsense.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No accepted presentation context for this object.
    #[error("the peer accepted no presentation context for {sop_class} in {transfer_syntax}")]
    NoContext {
        /// SOP class.
        sop_class: String,
        /// Transfer syntax.
        transfer_syntax: String,
    },
    /// The local file could not be read.
    #[error("cannot read {path}: {reason}")]
    File {
        /// Which file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The answer to a C-STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreResponse {
    /// DIMSE status.
    pub status: u16,
    /// Error Comment, if any.
    pub comment: Option<String>,
}

/// An established association as requestor.
#[derive(Debug)]
pub struct ScuAssociation {
    conn: PduConn,
    contexts: Vec<AcceptedContext>,
    peer_max_pdu: u32,
    next_message_id: u16,
    timeout_secs: u64,
    buf: Vec<u8>,
    /// Reused for objects read whole (no allocation, no page faults per object).
    whole: Vec<u8>,
}

impl ScuAssociation {
    /// Connects and negotiates one presentation context per (abstract syntax, transfer syntaxes).
    pub async fn connect(
        opts: &ScuOptions,
        proposals: &[(String, Vec<String>)],
    ) -> Result<Self, ScuError> {
        let timeout_secs = opts.timeout.as_secs().max(1);
        let tcp = tcp_connect(&opts.address, opts.timeout).await?;
        let stream: BoxStream = match &opts.tls {
            Some((cfg, name)) => {
                let server_name =
                    rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                        ScuError::Tls {
                            address: opts.address.clone(),
                            reason: format!("invalid server name {name:?}: {e}"),
                        }
                    })?;
                let connector = tokio_rustls::TlsConnector::from(cfg.clone());
                let tls = tokio::time::timeout(opts.timeout, connector.connect(server_name, tcp))
                    .await
                    .map_err(|_| ScuError::Tls {
                        address: opts.address.clone(),
                        reason: "handshake timed out".into(),
                    })?
                    .map_err(|e| ScuError::Tls {
                        address: opts.address.clone(),
                        reason: e.to_string(),
                    })?;
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        let limits = FrameLimits {
            max_pdata: SCU_MAX_PDU,
            max_associate: 256 * 1024,
        };
        let mut conn = PduConn::new(stream, limits);
        let contexts: Vec<(u8, String, Vec<String>)> = proposals
            .iter()
            .zip((1u8..=255).step_by(2))
            .map(|((a, ts), id)| (id, a.clone(), ts.clone()))
            .collect();
        let rq =
            negotiate::association_rq(&opts.calling_ae, &opts.called_ae, &contexts, SCU_MAX_PDU);
        let (_, contexts, peer_max_pdu) = request(&mut conn, &rq, timeout_secs).await?;
        Ok(ScuAssociation {
            conn,
            contexts,
            peer_max_pdu,
            next_message_id: 1,
            timeout_secs,
            buf: Vec::new(),
            whole: Vec::new(),
        })
    }

    /// The accepted contexts.
    pub fn contexts(&self) -> &[AcceptedContext] {
        &self.contexts
    }

    /// The context for this SOP class and transfer syntax, if accepted.
    pub fn context_for(&self, sop_class: &str, transfer_syntax: &str) -> Option<u8> {
        self.contexts
            .iter()
            .find(|c| c.abstract_syntax == sop_class && c.transfer_syntax == transfer_syntax)
            .map(|c| c.id)
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// Sends a C-ECHO and returns its status.
    pub async fn echo(&mut self) -> Result<u16, ScuError> {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.abstract_syntax == uids::VERIFICATION)
            .map(|c| c.id)
            .ok_or_else(|| ScuError::NoContext {
                sop_class: uids::VERIFICATION.into(),
                transfer_syntax: uids::IMPLICIT_VR_LE.into(),
            })?;
        let id = self.message_id();
        let bytes = encode_command_pdus(ctx, &command::echo_rq(id).encode(), self.peer_max_pdu);
        self.conn.send_raw(&bytes).await?;
        let rsp = self.read_response(field::C_ECHO_RSP, id).await?;
        Ok(rsp.status().unwrap_or(0xFFFF))
    }

    /// Sends a Part 10 file's data set by C-STORE, as it is (its own transfer syntax).
    pub async fn store_file(&mut self, path: &Path) -> Result<StoreResponse, ScuError> {
        let len = tokio::fs::metadata(path)
            .await
            .map_err(|e| ScuError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
            .len();
        self.store_object(&ObjectLocation {
            path: path.to_path_buf(),
            offset: 0,
            len,
        })
        .await
    }

    /// Sends one object (a range of a spool file) as a C-STORE; returns the archive's response.
    /// An object up to [`WHOLE_READ_MAX`] is read in one blocking call into a buffer kept for
    /// the next one, and sent from it (its PDU headers and its bytes in vectored writes); a
    /// larger one is streamed one PDU at a time.
    pub async fn store_object(&mut self, loc: &ObjectLocation) -> Result<StoreResponse, ScuError> {
        let file_err = |e: &dyn std::fmt::Display| file_error(loc, e);
        let size = loc.len;
        if size == 0 {
            return Err(file_err(&"empty object"));
        }
        if size > WHOLE_READ_MAX {
            return self.store_streamed(loc).await;
        }
        let n = usize::try_from(size).map_err(|e| file_err(&e))?;
        let mut whole = std::mem::take(&mut self.whole);
        if whole.len() < n {
            // Zeroed once, when the buffer grows; later objects overwrite it.
            whole.resize(n, 0);
        }
        let at = loc.clone();
        let (whole, read) = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let read = std::fs::File::open(&at.path)
                .and_then(|f| f.read_exact_at(&mut whole[..n], at.offset));
            (whole, read)
        })
        .await
        .map_err(|e| file_err(&e))?;
        let sent = match read {
            Ok(()) => match whole.get(..n) {
                Some(object) => self.store_from_memory(object, loc).await,
                None => Err(file_err(&"shorter than recorded")),
            },
            Err(e) => Err(file_err(&e)),
        };
        self.whole = whole;
        sent
    }

    /// The C-STORE-RQ for an object whose first bytes are `head`: its presentation context,
    /// where its data set starts, and the command's PDUs.
    fn store_request(
        &mut self,
        head: &[u8],
        loc: &ObjectLocation,
    ) -> Result<(u8, usize, u16, Vec<u8>), ScuError> {
        let file_err = |e: &dyn std::fmt::Display| file_error(loc, e);
        let (meta, offset) = part10::parse_meta(head).map_err(|e| file_err(&e))?;
        let ctx = self
            .context_for(&meta.sop_class_uid, &meta.transfer_syntax)
            .ok_or_else(|| ScuError::NoContext {
                sop_class: meta.sop_class_uid.clone(),
                transfer_syntax: meta.transfer_syntax.clone(),
            })?;
        let id = self.message_id();
        let rq = command::store_rq(id, &meta.sop_class_uid, &meta.sop_instance_uid);
        Ok((
            ctx,
            offset,
            id,
            encode_command_pdus(ctx, &rq.encode(), self.peer_max_pdu),
        ))
    }

    /// Bytes of data set per P-DATA PDU we send.
    fn data_chunk(&self) -> usize {
        let max_pdu = if self.peer_max_pdu == 0 {
            SEND_PDU_CAP
        } else {
            self.peer_max_pdu.min(SEND_PDU_CAP)
        };
        (max_pdu as usize - PDV_HEADER_LEN).max(1)
    }

    /// Sends an object held in memory: the command, then the data set, [`VECTORED_PDUS`] PDUs
    /// per vectored write.
    async fn store_from_memory(
        &mut self,
        object: &[u8],
        loc: &ObjectLocation,
    ) -> Result<StoreResponse, ScuError> {
        let head = object.get(..object.len().min(64 * 1024)).unwrap_or(object);
        let (ctx, offset, id, command) = self.store_request(head, loc)?;
        let data = object.get(offset..).unwrap_or_default();
        if data.is_empty() {
            return Err(file_error(loc, &"empty data set"));
        }
        let chunks: Vec<&[u8]> = data.chunks(self.data_chunk()).collect();
        let last = chunks.len() - 1;
        let headers: Vec<[u8; PDU_HEADER_LEN + PDV_HEADER_LEN]> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| pdata_header(ctx, false, i == last, c.len()))
            .collect();
        let mut first = true;
        for (hs, cs) in headers
            .chunks(VECTORED_PDUS)
            .zip(chunks.chunks(VECTORED_PDUS))
        {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * hs.len() + 1);
            if first {
                parts.push(&command);
                first = false;
            }
            for (h, c) in hs.iter().zip(cs) {
                parts.push(h);
                parts.push(c);
            }
            self.conn.send_parts(&parts).await?;
        }
        self.store_response(id).await
    }

    /// Sends an object larger than [`WHOLE_READ_MAX`], one PDU at a time from its file: memory
    /// is one PDU whatever its size.
    async fn store_streamed(&mut self, loc: &ObjectLocation) -> Result<StoreResponse, ScuError> {
        let file_err = |e: &dyn std::fmt::Display| file_error(loc, e);
        let mut file = tokio::fs::File::open(loc.path())
            .await
            .map_err(|e| file_err(&e))?;
        let mut head = vec![0u8; 64 * 1024];
        file.seek(std::io::SeekFrom::Start(loc.offset))
            .await
            .map_err(|e| file_err(&e))?;
        file.read_exact(&mut head).await.map_err(|e| file_err(&e))?;
        let (ctx, offset, id, command) = self.store_request(&head, loc)?;
        file.seek(std::io::SeekFrom::Start(loc.offset + offset as u64))
            .await
            .map_err(|e| file_err(&e))?;
        self.conn.send_raw(&command).await?;
        let chunk = self.data_chunk();
        let mut remaining = loc.len.saturating_sub(offset as u64);
        if remaining == 0 {
            return Err(file_err(&"empty data set"));
        }
        let header_len = PDU_HEADER_LEN + PDV_HEADER_LEN;
        self.buf.resize(header_len + chunk, 0);
        while remaining > 0 {
            let n = usize::try_from(remaining).unwrap_or(usize::MAX).min(chunk);
            let last = remaining == n as u64;
            file.read_exact(&mut self.buf[header_len..header_len + n])
                .await
                .map_err(|e| file_err(&e))?;
            self.buf[..header_len].copy_from_slice(&pdata_header(ctx, false, last, n));
            self.conn.send_raw(&self.buf[..header_len + n]).await?;
            remaining -= n as u64;
        }
        self.store_response(id).await
    }

    /// Reads the C-STORE-RSP to message `id`.
    async fn store_response(&mut self, id: u16) -> Result<StoreResponse, ScuError> {
        let rsp = self.read_response(field::C_STORE_RSP, id).await?;
        Ok(StoreResponse {
            status: rsp.status().unwrap_or(0xFFFF),
            comment: rsp.string(tags::ERROR_COMMENT).filter(|c| !c.is_empty()),
        })
    }

    async fn read_response(
        &mut self,
        expected: u16,
        message_id: u16,
    ) -> Result<CommandSet, ScuError> {
        let mut assembler = Assembler::new(self.contexts.iter().map(|c| c.id));
        loop {
            match self.conn.read(self.timeout_secs).await? {
                Incoming::PData(pdvs) => {
                    for pdv in pdvs {
                        let piece = assembler
                            .push(&pdv)
                            .map_err(|e| ScuError::Protocol(e.to_string()))?;
                        let rsp = match piece {
                            Piece::Partial => continue,
                            Piece::Data { .. } => {
                                return Err(ScuError::Protocol(
                                    "unexpected data set in a response".into(),
                                ));
                            }
                            Piece::Command { command, .. } => command,
                        };
                        if rsp.command_field() != expected
                            || rsp.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO) != Some(message_id)
                        {
                            return Err(ScuError::Protocol(format!(
                                "expected response 0x{expected:04X} to message {message_id}, got 0x{:04X}",
                                rsp.command_field()
                            )));
                        }
                        return Ok(rsp);
                    }
                }
                Incoming::Other(pdu) => return Err(interrupted(&pdu)),
            }
        }
    }

    /// Releases the association politely.
    pub async fn release(mut self) {
        release(&mut self.conn, self.timeout_secs).await;
    }

    /// Aborts the association.
    pub async fn abort(mut self) {
        self.conn.abort(0).await;
    }
}

/// Sends the A-ASSOCIATE-RQ and reads the answer: the A-ASSOCIATE-AC, the accepted contexts and
/// the peer's max PDU, or why not.
pub(crate) async fn request(
    conn: &mut PduConn,
    rq: &AssociationRQ,
    timeout_secs: u64,
) -> Result<(AssociationAC, Vec<AcceptedContext>, u32), ScuError> {
    conn.send(&Pdu::AssociationRQ(rq.clone())).await?;
    let unexpected = || ScuError::Protocol("unexpected answer to A-ASSOCIATE-RQ".into());
    let pdu = match conn.read(timeout_secs).await? {
        Incoming::Other(pdu) => pdu,
        Incoming::PData(_) => return Err(unexpected()),
    };
    match requestor::answer(rq, pdu) {
        Answer::Accepted {
            ac,
            contexts,
            peer_max_pdu,
        } => Ok((ac, contexts, peer_max_pdu)),
        Answer::Rejected { permanent, reason } => Err(ScuError::Rejected { permanent, reason }),
        Answer::Aborted => Err(ScuError::Aborted),
        Answer::Unexpected => Err(unexpected()),
    }
}

/// The error of a PDU other than P-DATA-TF while a response is awaited.
pub(crate) fn interrupted(pdu: &Pdu) -> ScuError {
    match requestor::interruption(pdu) {
        Interruption::Aborted => ScuError::Aborted,
        Interruption::ReleaseRequested => {
            ScuError::Protocol(format!("unexpected {}", pdu.short_description()))
        }
        Interruption::Unexpected(why) => ScuError::Protocol(why),
    }
}

/// Opens the TCP connection of an association (TCP_NODELAY set), within `timeout`.
pub(crate) async fn tcp_connect(
    address: &str,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, ScuError> {
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| ScuError::Connect {
            address: address.to_string(),
            reason: format!("no answer within {} s", timeout.as_secs().max(1)),
        })?
        .map_err(|e| ScuError::Connect {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// A-RELEASE-RQ, waits (at most 10 s) for the answer, closes.
pub(crate) async fn release(conn: &mut PduConn, timeout_secs: u64) {
    if conn.send(&Pdu::ReleaseRQ).await.is_ok() {
        let _ = conn.read(timeout_secs.min(10)).await;
    }
    conn.close().await;
}

/// Objects up to this size are read whole before they are sent (one blocking call instead of
/// one per PDU), by C-STORE here and by STOW-RS (`forward::stow`); memory: this much per
/// sending worker.
pub(crate) const WHOLE_READ_MAX: u64 = 2 << 20;

/// The object at `loc` could not be read or is not a Part 10 object.
fn file_error(loc: &ObjectLocation, e: &dyn std::fmt::Display) -> ScuError {
    ScuError::File {
        path: loc.display().to_string(),
        reason: e.to_string(),
    }
}

/// PDUs (header and data, two slices each) per vectored write of an object sent from memory.
const VECTORED_PDUS: usize = 64;
