//! A message-level association for the small DIMSE exchanges of the workflow services
//! (N-EVENT-REPORT to a storage commitment requester, C-FIND to the worklist upstream): whole
//! commands and small data sets in memory, every wait bounded. Both roles: [`MessageAssociation::connect`]
//! as requestor (with SCP/SCU role selection), [`MessageAssociation::accept`] as acceptor (used
//! by test peers and tools).

use crate::conn::{BoxStream, Incoming, PduConn};
use crate::scu::ScuError;
use medgate_dicom::assemble::{Assembler, Piece};
use medgate_dicom::command::CommandSet;
use medgate_dicom::dataset::MAX_SMALL_DATASET;
use medgate_dicom::negotiate::{self, AcceptedContext, AcceptorPolicy, Decision};
use medgate_dicom::pdata::{FrameLimits, encode_command_pdus, encode_dataset_pdus};
use medgate_dicom::pdu::{Pdu, RequestorRoles, UserVariableItem};
use medgate_dicom::requestor::{self, Interruption};
use std::time::Duration;

/// Our max PDU length on these associations.
const MAX_PDU: u32 = 65_536;

/// One DIMSE message: command and, if announced, its data set.
#[derive(Debug, Clone)]
pub struct Message {
    /// Presentation context it came on.
    pub context_id: u8,
    /// The command set.
    pub command: CommandSet,
    /// The data set bytes, if one followed.
    pub dataset: Option<Vec<u8>>,
}

/// An established association exchanging whole messages.
#[derive(Debug)]
pub struct MessageAssociation {
    conn: PduConn,
    /// Accepted presentation contexts.
    pub contexts: Vec<AcceptedContext>,
    /// SCP/SCU role selection items of the acceptor's answer (requestor side) or of the
    /// request (acceptor side).
    pub roles: Vec<(String, RequestorRoles)>,
    /// The calling AE title (acceptor side) or the called one (requestor side).
    pub peer_ae: String,
    peer_max_pdu: u32,
    timeout_secs: u64,
    next_message_id: u16,
}

fn roles_of(items: &[UserVariableItem]) -> Vec<(String, RequestorRoles)> {
    items
        .iter()
        .filter_map(|uv| match uv {
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles) => {
                Some((medgate_dicom::trim_uid(uid).to_string(), *roles))
            }
            _ => None,
        })
        .collect()
}

impl MessageAssociation {
    /// Connects to `address` and negotiates one context per proposal (implicit and explicit VR
    /// little endian), with the given role selection items.
    pub async fn connect(
        address: &str,
        calling_ae: &str,
        called_ae: &str,
        proposals: &[&str],
        roles: &[(&str, RequestorRoles)],
        timeout: Duration,
    ) -> Result<Self, ScuError> {
        let timeout_secs = timeout.as_secs().max(1);
        let stream: BoxStream = Box::new(crate::scu::tcp_connect(address, timeout).await?);
        let mut conn = PduConn::new(
            stream,
            FrameLimits {
                max_pdata: MAX_PDU,
                max_associate: 256 * 1024,
            },
        );
        let contexts: Vec<(u8, String, Vec<String>)> = proposals
            .iter()
            .zip((1u8..=255).step_by(2))
            .map(|(a, id)| {
                (
                    id,
                    a.to_string(),
                    vec![
                        medgate_dicom::uids::EXPLICIT_VR_LE.to_string(),
                        medgate_dicom::uids::IMPLICIT_VR_LE.to_string(),
                    ],
                )
            })
            .collect();
        let mut rq = negotiate::association_rq(calling_ae, called_ae, &contexts, MAX_PDU);
        for (uid, r) in roles {
            rq.user_variables
                .push(UserVariableItem::ScuScpRoleSelectionSubItem(
                    uid.to_string(),
                    *r,
                ));
        }
        let (ac, contexts, peer_max_pdu) =
            crate::scu::request(&mut conn, &rq, timeout_secs).await?;
        Ok(MessageAssociation {
            conn,
            contexts,
            roles: roles_of(&ac.user_variables),
            peer_ae: called_ae.to_string(),
            peer_max_pdu,
            timeout_secs,
            next_message_id: 1,
        })
    }

    /// Accepts an association on `stream` by `policy`; the requestor's role selection items for
    /// the SOP classes in `grant_roles` are answered as proposed (granted), the others ignored.
    pub async fn accept(
        stream: BoxStream,
        policy: &AcceptorPolicy,
        grant_roles: &[&str],
        timeout: Duration,
    ) -> Result<Self, ScuError> {
        let timeout_secs = timeout.as_secs().max(1);
        let mut conn = PduConn::new(
            stream,
            FrameLimits {
                max_pdata: policy.max_pdu,
                max_associate: 256 * 1024,
            },
        );
        let rq = match conn.read(timeout_secs).await? {
            Incoming::Other(Pdu::AssociationRQ(rq)) => rq,
            _ => {
                return Err(ScuError::Protocol(
                    "first PDU is not an A-ASSOCIATE-RQ".into(),
                ));
            }
        };
        let roles = roles_of(&rq.user_variables);
        match negotiate::decide(policy, &rq) {
            (
                Decision::Accept {
                    mut ac,
                    contexts,
                    peer_max_pdu,
                },
                knock,
            ) if !contexts.is_empty() => {
                for (uid, r) in &roles {
                    if grant_roles.contains(&uid.as_str()) {
                        ac.user_variables
                            .push(UserVariableItem::ScuScpRoleSelectionSubItem(
                                uid.clone(),
                                *r,
                            ));
                    }
                }
                conn.send(&Pdu::AssociationAC(ac)).await?;
                Ok(MessageAssociation {
                    conn,
                    contexts,
                    roles,
                    peer_ae: knock.calling_ae,
                    peer_max_pdu,
                    timeout_secs,
                    next_message_id: 1,
                })
            }
            (Decision::Reject(rj), knock) => {
                let _ = conn.send(&Pdu::AssociationRJ(rj)).await;
                conn.close().await;
                Err(ScuError::Protocol(format!(
                    "association rejected: {}",
                    knock.rejection.unwrap_or_default()
                )))
            }
            _ => {
                conn.abort(0).await;
                Err(ScuError::Protocol(
                    "no presentation context acceptable".into(),
                ))
            }
        }
    }

    /// The accepted context for an abstract syntax.
    pub fn context_for(&self, abstract_syntax: &str) -> Option<&AcceptedContext> {
        self.contexts
            .iter()
            .find(|c| c.abstract_syntax == abstract_syntax)
    }

    /// A fresh message id.
    pub fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// Sends a command and its data set, if any.
    pub async fn send(
        &mut self,
        context_id: u8,
        cmd: &CommandSet,
        dataset: Option<&[u8]>,
    ) -> Result<(), ScuError> {
        let mut bytes = encode_command_pdus(context_id, &cmd.encode(), self.peer_max_pdu);
        if let Some(ds) = dataset {
            bytes.extend_from_slice(&encode_dataset_pdus(context_id, ds, self.peer_max_pdu));
        }
        self.conn.send_raw(&bytes).await?;
        Ok(())
    }

    /// Receives the next whole message; `None` if the peer released the association (answered).
    pub async fn receive(&mut self) -> Result<Option<Message>, ScuError> {
        let mut assembler = Assembler::new(self.contexts.iter().map(|c| c.id))
            .with_data_limit(MAX_SMALL_DATASET as u64);
        let mut command: Option<CommandSet> = None;
        let mut data = Vec::new();
        loop {
            match self.conn.read(self.timeout_secs).await? {
                Incoming::PData(pdvs) => {
                    for pdv in pdvs {
                        let piece = assembler
                            .push(&pdv)
                            .map_err(|e| ScuError::Protocol(e.to_string()))?;
                        match piece {
                            Piece::Partial => {}
                            Piece::Command {
                                context_id,
                                command: c,
                            } => {
                                if !c.has_dataset() {
                                    return Ok(Some(Message {
                                        context_id,
                                        command: c,
                                        dataset: None,
                                    }));
                                }
                                command = Some(c);
                            }
                            Piece::Data {
                                context_id,
                                data: fragment,
                                is_last,
                            } => {
                                data.extend_from_slice(fragment);
                                if is_last {
                                    let c = command.take().ok_or_else(|| {
                                        ScuError::Protocol("data set without a command".into())
                                    })?;
                                    return Ok(Some(Message {
                                        context_id,
                                        command: c,
                                        dataset: Some(std::mem::take(&mut data)),
                                    }));
                                }
                            }
                        }
                    }
                }
                Incoming::Other(pdu) => {
                    if requestor::interruption(&pdu) != Interruption::ReleaseRequested {
                        return Err(crate::scu::interrupted(&pdu));
                    }
                    let _ = self.conn.send(&Pdu::ReleaseRP).await;
                    self.conn.close().await;
                    return Ok(None);
                }
            }
        }
    }

    /// Releases the association politely.
    pub async fn release(mut self) {
        crate::scu::release(&mut self.conn, self.timeout_secs).await;
    }

    /// Aborts the association.
    pub async fn abort(mut self) {
        self.conn.abort(0).await;
    }
}
