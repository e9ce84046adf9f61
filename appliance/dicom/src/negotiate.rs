//! Association negotiation, both sides, as pure functions of the PDUs and a policy.
//!
//! The acceptor's [`decide`] returns the A-ASSOCIATE-AC or -RJ to send and a [`Knock`]: what the
//! calling AE offered and what we made of it, recorded for onboarding whether we accepted or not.

use crate::uids;
use crate::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, trim_uid};
use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, AssociationRQ, PresentationContextProposed, PresentationContextResult,
    PresentationContextResultReason, UserVariableItem,
};

/// The DICOM application context name.
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

/// What the acceptor accepts.
#[derive(Debug, Clone)]
pub struct AcceptorPolicy {
    /// Our AE title.
    pub ae_title: String,
    /// Called AE titles we answer to; empty: only `ae_title`.
    pub called_ae_titles: Vec<String>,
    /// Calling AE titles we accept; empty: any.
    pub calling_ae_titles: Vec<String>,
    /// Private storage SOP classes accepted besides the standard ones.
    pub private_sop_classes: Vec<String>,
    /// Transfer syntaxes accepted; empty: every standard one.
    pub transfer_syntaxes: Vec<String>,
    /// The max PDU length we advertise (and enforce).
    pub max_pdu: u32,
    /// Non-storage SOP classes served besides Verification (Storage Commitment, Modality
    /// Worklist), accepted in implicit or explicit VR little endian only.
    pub services: Vec<String>,
}

/// A presentation context both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedContext {
    /// Presentation context id.
    pub id: u8,
    /// Abstract syntax (SOP class).
    pub abstract_syntax: String,
    /// The one transfer syntax of this context.
    pub transfer_syntax: String,
}

/// One proposed presentation context and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offer {
    /// Abstract syntax (SOP class UID).
    pub abstract_syntax: String,
    /// Proposed transfer syntaxes.
    pub transfer_syntaxes: Vec<String>,
    /// The transfer syntax we accepted, if any.
    pub accepted: Option<String>,
}

/// What a calling AE asked for and what we answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knock {
    /// The calling AE title.
    pub calling_ae: String,
    /// The called AE title.
    pub called_ae: String,
    /// The presentation contexts offered.
    pub offers: Vec<Offer>,
    /// `None` if accepted, else why not.
    pub rejection: Option<String>,
}

/// The acceptor's answer.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Send this A-ASSOCIATE-AC; the association is up.
    Accept {
        /// The PDU to send.
        ac: AssociationAC,
        /// The accepted contexts.
        contexts: Vec<AcceptedContext>,
        /// The requestor's max PDU length (0 = unlimited).
        peer_max_pdu: u32,
    },
    /// Send this A-ASSOCIATE-RJ and close.
    Reject(AssociationRJ),
}

fn reject(
    result: AssociationRJResult,
    source: AssociationRJSource,
    why: String,
    knock: &mut Knock,
) -> Decision {
    knock.rejection = Some(why);
    Decision::Reject(AssociationRJ { result, source })
}

/// Decides on an A-ASSOCIATE-RQ.
pub fn decide(policy: &AcceptorPolicy, rq: &AssociationRQ) -> (Decision, Knock) {
    let calling = rq.calling_ae_title.trim().to_string();
    let called = rq.called_ae_title.trim().to_string();
    let mut knock = Knock {
        calling_ae: calling.clone(),
        called_ae: called.clone(),
        offers: rq
            .presentation_contexts
            .iter()
            .map(|pc| Offer {
                abstract_syntax: trim_uid(&pc.abstract_syntax).to_string(),
                transfer_syntaxes: pc
                    .transfer_syntaxes
                    .iter()
                    .map(|t| trim_uid(t).to_string())
                    .collect(),
                accepted: None,
            })
            .collect(),
        rejection: None,
    };

    if rq.protocol_version & 1 == 0 {
        let d = reject(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
            ),
            format!("protocol version {} not supported", rq.protocol_version),
            &mut knock,
        );
        return (d, knock);
    }
    if trim_uid(&rq.application_context_name) != APPLICATION_CONTEXT {
        let d = reject(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::ApplicationContextNameNotSupported,
            ),
            format!(
                "application context {:?} not supported",
                rq.application_context_name
            ),
            &mut knock,
        );
        return (d, knock);
    }
    let called_ok = if policy.called_ae_titles.is_empty() {
        called == policy.ae_title.trim()
    } else {
        policy.called_ae_titles.iter().any(|t| t.trim() == called)
    };
    if !called_ok {
        let d = reject(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            ),
            format!("called AE title {called:?} is not ours"),
            &mut knock,
        );
        return (d, knock);
    }
    if !policy.calling_ae_titles.is_empty()
        && !policy.calling_ae_titles.iter().any(|t| t.trim() == calling)
    {
        let d = reject(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            ),
            format!("calling AE title {calling:?} is not on the allow-list"),
            &mut knock,
        );
        return (d, knock);
    }

    let mut results = Vec::with_capacity(rq.presentation_contexts.len());
    let mut contexts = Vec::new();
    for (pc, offer) in rq.presentation_contexts.iter().zip(knock.offers.iter_mut()) {
        let (reason, ts) = negotiate_context(policy, pc, offer);
        if reason == PresentationContextResultReason::Acceptance {
            contexts.push(AcceptedContext {
                id: pc.id,
                abstract_syntax: offer.abstract_syntax.clone(),
                transfer_syntax: ts.clone(),
            });
            offer.accepted = Some(ts.clone());
        }
        results.push(PresentationContextResult {
            id: pc.id,
            reason,
            transfer_syntax: ts,
        });
    }

    let mut peer_max_pdu = 16_384;
    for uv in &rq.user_variables {
        if let UserVariableItem::MaxLength(len) = uv {
            peer_max_pdu = *len;
        }
    }
    let ac = AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT.to_string(),
        presentation_contexts: results,
        user_variables: vec![
            UserVariableItem::MaxLength(policy.max_pdu),
            UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
            UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_string()),
        ],
    };
    if contexts.is_empty() {
        knock.rejection = Some("no presentation context acceptable".to_string());
    }
    (
        Decision::Accept {
            ac,
            contexts,
            peer_max_pdu,
        },
        knock,
    )
}

fn negotiate_context(
    policy: &AcceptorPolicy,
    pc: &PresentationContextProposed,
    offer: &Offer,
) -> (PresentationContextResultReason, String) {
    let abstract_syntax = offer.abstract_syntax.as_str();
    let service = abstract_syntax == uids::VERIFICATION
        || policy.services.iter().any(|c| c == abstract_syntax);
    let supported = service
        || uids::is_standard_storage_sop_class(abstract_syntax)
        || policy
            .private_sop_classes
            .iter()
            .any(|c| c == abstract_syntax);
    if !supported {
        return (
            PresentationContextResultReason::AbstractSyntaxNotSupported,
            uids::IMPLICIT_VR_LE.to_string(),
        );
    }
    let ts_ok = |ts: &str| {
        if service {
            ts == uids::IMPLICIT_VR_LE || ts == uids::EXPLICIT_VR_LE
        } else if policy.transfer_syntaxes.is_empty() {
            uids::is_standard_transfer_syntax(ts)
        } else {
            policy.transfer_syntaxes.iter().any(|t| t == ts)
        }
    };
    // The modality's order of preference wins: it knows what it holds.
    match pc
        .transfer_syntaxes
        .iter()
        .map(|t| trim_uid(t))
        .find(|t| ts_ok(t))
    {
        Some(ts) => (PresentationContextResultReason::Acceptance, ts.to_string()),
        None => (
            PresentationContextResultReason::TransferSyntaxesNotSupported,
            uids::IMPLICIT_VR_LE.to_string(),
        ),
    }
}

/// The A-ASSOCIATE-RJ for "too many associations right now" (transient: the modality retries).
pub fn reject_busy() -> AssociationRJ {
    AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    }
}

/// The A-ASSOCIATE-RJ for a source address that is not allowed.
pub fn reject_address() -> AssociationRJ {
    AssociationRJ {
        result: AssociationRJResult::Permanent,
        source: AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven),
    }
}

/// Builds an A-ASSOCIATE-RQ for the requestor side.
pub fn association_rq(
    calling_ae: &str,
    called_ae: &str,
    contexts: &[(u8, String, Vec<String>)],
    max_pdu: u32,
) -> AssociationRQ {
    AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling_ae.to_string(),
        called_ae_title: called_ae.to_string(),
        application_context_name: APPLICATION_CONTEXT.to_string(),
        presentation_contexts: contexts
            .iter()
            .map(|(id, abs, ts)| PresentationContextProposed {
                id: *id,
                abstract_syntax: abs.clone(),
                transfer_syntaxes: ts.clone(),
            })
            .collect(),
        user_variables: vec![
            UserVariableItem::MaxLength(max_pdu),
            UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
            UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_string()),
        ],
    }
}

/// From our proposal and the acceptor's answer: the accepted contexts and the acceptor's max PDU.
pub fn accepted_by_peer(rq: &AssociationRQ, ac: &AssociationAC) -> (Vec<AcceptedContext>, u32) {
    let contexts = ac
        .presentation_contexts
        .iter()
        .filter(|r| r.reason == PresentationContextResultReason::Acceptance)
        .filter_map(|r| {
            let proposed = rq.presentation_contexts.iter().find(|p| p.id == r.id)?;
            let ts = trim_uid(&r.transfer_syntax).to_string();
            // An acceptor must pick one of the proposed syntaxes; ignore a context where it did not.
            proposed
                .transfer_syntaxes
                .contains(&ts)
                .then(|| AcceptedContext {
                    id: r.id,
                    abstract_syntax: proposed.abstract_syntax.clone(),
                    transfer_syntax: ts,
                })
        })
        .collect();
    let mut max = 16_384;
    for uv in &ac.user_variables {
        if let UserVariableItem::MaxLength(len) = uv {
            max = *len;
        }
    }
    (contexts, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AcceptorPolicy {
        AcceptorPolicy {
            ae_title: "MEDGATE".into(),
            called_ae_titles: vec![],
            calling_ae_titles: vec![],
            private_sop_classes: vec!["1.2.3.4.5".into()],
            transfer_syntaxes: vec![],
            max_pdu: 65536,
            services: vec![uids::STORAGE_COMMITMENT_PUSH.into()],
        }
    }

    fn rq(calling: &str, called: &str, pcs: &[(u8, &str, &[&str])]) -> AssociationRQ {
        association_rq(
            calling,
            called,
            &pcs.iter()
                .map(|(id, a, ts)| {
                    (
                        *id,
                        a.to_string(),
                        ts.iter().map(|t| t.to_string()).collect(),
                    )
                })
                .collect::<Vec<_>>(),
            32768,
        )
    }

    #[test]
    fn services_only_when_configured_and_only_uncompressed() {
        const MWL: &str = "1.2.840.10008.5.1.4.31";
        let r = rq(
            "CT1",
            "MEDGATE",
            &[
                (1, uids::STORAGE_COMMITMENT_PUSH, &[uids::IMPLICIT_VR_LE]),
                (3, MWL, &[uids::EXPLICIT_VR_LE]),
                (5, uids::STORAGE_COMMITMENT_PUSH, &["1.2.840.10008.1.2.5"]),
            ],
        );
        let (d, _) = decide(&policy(), &r);
        let Decision::Accept { contexts, .. } = d else {
            panic!("accepted");
        };
        // Commitment is configured (implicit VR accepted, RLE not); the worklist is not.
        let ids: Vec<u8> = contexts.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1]);
        let mut p = policy();
        p.services.push(MWL.into());
        let (d, _) = decide(&p, &r);
        let Decision::Accept { contexts, .. } = d else {
            panic!("accepted");
        };
        let ids: Vec<u8> = contexts.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1, 3]);
    }

    #[test]
    fn accepts_storage_and_verification() {
        let r = rq(
            "CT1",
            "MEDGATE",
            &[
                (1, uids::VERIFICATION, &[uids::IMPLICIT_VR_LE]),
                (
                    3,
                    "1.2.840.10008.5.1.4.1.1.2",
                    &["1.2.840.10008.1.2.4.90", uids::EXPLICIT_VR_LE],
                ),
                (
                    5,
                    "1.2.840.10008.5.1.4.1.1.77.1.1.1",
                    &["1.2.840.10008.1.2.4.102"],
                ),
                (7, "1.2.3.4.5", &[uids::EXPLICIT_VR_LE]),
                (9, "1.9.9.9", &[uids::EXPLICIT_VR_LE]),
                (11, "1.2.840.10008.5.1.4.1.1.2", &["1.2.9.9"]),
            ],
        );
        let (d, knock) = decide(&policy(), &r);
        let Decision::Accept {
            contexts,
            peer_max_pdu,
            ac,
        } = d
        else {
            panic!("rejected")
        };
        assert_eq!(peer_max_pdu, 32768);
        assert_eq!(contexts.len(), 4);
        assert_eq!(contexts[1].transfer_syntax, "1.2.840.10008.1.2.4.90");
        assert_eq!(contexts[2].transfer_syntax, "1.2.840.10008.1.2.4.102");
        assert_eq!(
            ac.presentation_contexts[4].reason,
            PresentationContextResultReason::AbstractSyntaxNotSupported
        );
        assert_eq!(
            ac.presentation_contexts[5].reason,
            PresentationContextResultReason::TransferSyntaxesNotSupported
        );
        assert!(knock.rejection.is_none());
        assert_eq!(knock.offers[4].accepted, None);
        assert_eq!(knock.calling_ae, "CT1");
    }

    #[test]
    fn rejects_wrong_called_and_calling() {
        let (d, knock) = decide(
            &policy(),
            &rq(
                "CT1",
                "OTHER",
                &[(1, uids::VERIFICATION, &[uids::IMPLICIT_VR_LE])],
            ),
        );
        assert!(matches!(
            d,
            Decision::Reject(AssociationRJ {
                source: AssociationRJSource::ServiceUser(
                    AssociationRJServiceUserReason::CalledAETitleNotRecognized
                ),
                ..
            })
        ));
        assert!(knock.rejection.is_some());
        let mut p = policy();
        p.calling_ae_titles = vec!["CT1".into()];
        let (d, _) = decide(
            &p,
            &rq(
                "US2",
                "MEDGATE",
                &[(1, uids::VERIFICATION, &[uids::IMPLICIT_VR_LE])],
            ),
        );
        assert!(matches!(
            d,
            Decision::Reject(AssociationRJ {
                source: AssociationRJSource::ServiceUser(
                    AssociationRJServiceUserReason::CallingAETitleNotRecognized
                ),
                ..
            })
        ));
        let (d, _) = decide(
            &p,
            &rq(
                "CT1",
                "MEDGATE",
                &[(1, uids::VERIFICATION, &[uids::IMPLICIT_VR_LE])],
            ),
        );
        assert!(matches!(d, Decision::Accept { .. }));
    }

    #[test]
    fn no_acceptable_context_is_recorded() {
        let (d, knock) = decide(
            &policy(),
            &rq("X", "MEDGATE", &[(1, "1.9.9", &[uids::IMPLICIT_VR_LE])]),
        );
        assert!(matches!(d, Decision::Accept { ref contexts, .. } if contexts.is_empty()));
        assert_eq!(
            knock.rejection.as_deref(),
            Some("no presentation context acceptable")
        );
    }

    #[test]
    fn requestor_side() {
        let r = rq(
            "MEDGATE",
            "ARCHIVE",
            &[(1, "1.2.840.10008.5.1.4.1.1.2", &[uids::EXPLICIT_VR_LE])],
        );
        let mut p = policy();
        p.ae_title = "ARCHIVE".into();
        let (Decision::Accept { ac, .. }, _) = decide(&p, &r) else {
            panic!()
        };
        let (ctx, max) = accepted_by_peer(&r, &ac);
        assert_eq!(max, 65536);
        assert_eq!(ctx.len(), 1);
    }
}
