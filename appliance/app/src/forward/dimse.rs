//! The C-STORE forwarder: one association per worker, reused across objects, re-negotiated when
//! an object needs a (SOP class, transfer syntax) pair the association lacks. The object's own
//! transfer syntax is proposed: bytes are forwarded exactly as received, never transcoded.

use super::queue::Outcome;
use crate::scu::{ScuAssociation, ScuError, ScuOptions};
use medgate_dicom::command::{StatusClass, status_class};
use medgate_dicom::uids;
use medgate_spool::{ObjectLocation, ObjectRecord};

/// Most (SOP class, transfer syntax) pairs proposed at once (one presentation context each).
const MAX_PAIRS: usize = 100;

/// A C-STORE sender.
#[derive(Debug)]
pub struct DimseSender {
    opts: ScuOptions,
    assoc: Option<ScuAssociation>,
    wanted: Vec<(String, String)>,
}

impl DimseSender {
    /// A sender that connects on first use.
    pub fn new(opts: ScuOptions) -> Self {
        DimseSender {
            opts,
            assoc: None,
            wanted: Vec::new(),
        }
    }

    /// Releases the association, if any.
    pub async fn release(&mut self) {
        if let Some(a) = self.assoc.take() {
            a.release().await;
        }
    }

    /// Sends one object.
    pub async fn send(&mut self, rec: &ObjectRecord, path: &ObjectLocation) -> Outcome {
        let pair = (rec.sop_class_uid.clone(), rec.transfer_syntax.clone());
        let has_context = self
            .assoc
            .as_ref()
            .is_some_and(|a| a.context_for(&pair.0, &pair.1).is_some());
        if !has_context {
            if !self.wanted.contains(&pair) {
                self.wanted.push(pair.clone());
                if self.wanted.len() > MAX_PAIRS {
                    self.wanted.remove(0);
                }
            }
            self.release().await;
            let proposals: Vec<(String, Vec<String>)> = self
                .wanted
                .iter()
                .map(|(class, ts)| (class.clone(), vec![ts.clone()]))
                .collect();
            match ScuAssociation::connect(&self.opts, &proposals).await {
                Ok(a) => self.assoc = Some(a),
                Err(e) => return Outcome::DestinationDown(e.to_string()),
            }
        }
        let Some(assoc) = self.assoc.as_mut() else {
            return Outcome::DestinationDown("no association".into());
        };
        if assoc.context_for(&pair.0, &pair.1).is_none() {
            self.wanted.retain(|p| *p != pair);
            let class = uids::sop_class_name(&pair.0).unwrap_or(&pair.0);
            return Outcome::Refused(format!(
                "the archive does not accept {class} in {} (presentation context rejected); objects are never transcoded",
                uids::transfer_syntax_name(&pair.1)
            ));
        }
        match assoc.store_object(path).await {
            Ok(rsp) => {
                let comment = rsp.comment.clone().unwrap_or_default();
                match status_class(rsp.status) {
                    StatusClass::Success => Outcome::Confirmed(None),
                    StatusClass::Warning => {
                        Outcome::Confirmed(Some(format!("status {:04X} {comment}", rsp.status)))
                    }
                    _ if rsp.status & 0xFF00 == 0xA700 || rsp.status == 0x0110 => {
                        Outcome::RetryObject(format!(
                            "archive answered {:04X} {comment}",
                            rsp.status
                        ))
                    }
                    _ => Outcome::Refused(format!(
                        "archive refused with status {:04X} {comment}",
                        rsp.status
                    )),
                }
            }
            Err(ScuError::File { path, reason }) => {
                Outcome::Refused(format!("spool file {path} unreadable: {reason}"))
            }
            Err(e) => {
                if let Some(a) = self.assoc.take() {
                    a.abort().await;
                }
                Outcome::DestinationDown(e.to_string())
            }
        }
    }
}
