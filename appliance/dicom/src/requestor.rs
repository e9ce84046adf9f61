//! The association requestor's decisions without IO, the same for every role that calls a peer
//! (the forwarder's SCU, the workflow services' message associations): what the answer to an
//! A-ASSOCIATE-RQ means, and what a PDU other than P-DATA means while a response is awaited.
//! Messages themselves are reassembled by [`crate::assemble::Assembler`].

use crate::negotiate::{self, AcceptedContext};
use crate::pdu::{AssociationAC, AssociationRJResult, AssociationRQ, Pdu};

/// What the peer answered to our A-ASSOCIATE-RQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Accepted: the contexts accepted (with their transfer syntax) and the peer's max PDU.
    Accepted {
        /// The A-ASSOCIATE-AC (for its user variables: role selection, ...).
        ac: AssociationAC,
        /// The accepted presentation contexts.
        contexts: Vec<AcceptedContext>,
        /// The peer's maximum PDU length (0: unlimited).
        peer_max_pdu: u32,
    },
    /// A-ASSOCIATE-RJ.
    Rejected {
        /// Permanent (do not retry as is) or transient.
        permanent: bool,
        /// The peer's reason.
        reason: String,
    },
    /// A-ABORT.
    Aborted,
    /// Anything else: a protocol error.
    Unexpected,
}

/// Reads the peer's answer to `rq`.
pub fn answer(rq: &AssociationRQ, pdu: Pdu) -> Answer {
    match pdu {
        Pdu::AssociationAC(ac) => {
            let (contexts, peer_max_pdu) = negotiate::accepted_by_peer(rq, &ac);
            Answer::Accepted {
                ac,
                contexts,
                peer_max_pdu,
            }
        }
        Pdu::AssociationRJ(rj) => Answer::Rejected {
            permanent: rj.result == AssociationRJResult::Permanent,
            reason: rj.source.to_string(),
        },
        Pdu::AbortRQ { .. } => Answer::Aborted,
        _ => Answer::Unexpected,
    }
}

/// A PDU other than P-DATA-TF while a message is awaited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interruption {
    /// A-RELEASE-RQ (an acceptor that is done: answer A-RELEASE-RP and close).
    ReleaseRequested,
    /// A-ABORT.
    Aborted,
    /// Anything else: a protocol error, named.
    Unexpected(String),
}

/// Classifies a PDU other than P-DATA-TF received while a message is awaited.
pub fn interruption(pdu: &Pdu) -> Interruption {
    match pdu {
        Pdu::ReleaseRQ => Interruption::ReleaseRequested,
        Pdu::AbortRQ { .. } => Interruption::Aborted,
        other => Interruption::Unexpected(format!("unexpected {}", other.short_description())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{
        AbortRQSource, AssociationRJ, AssociationRJServiceUserReason, AssociationRJSource,
    };
    use crate::uids;

    fn rq() -> AssociationRQ {
        negotiate::association_rq(
            "MEDGATE",
            "ARCHIVE",
            &[(
                1,
                uids::VERIFICATION.to_string(),
                vec![uids::IMPLICIT_VR_LE.to_string()],
            )],
            65_536,
        )
    }

    #[test]
    fn answers() {
        let rj = AssociationRJ {
            result: AssociationRJResult::Permanent,
            source: AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            ),
        };
        assert!(matches!(
            answer(&rq(), Pdu::AssociationRJ(rj)),
            Answer::Rejected {
                permanent: true,
                ..
            }
        ));
        assert_eq!(
            answer(
                &rq(),
                Pdu::AbortRQ {
                    source: AbortRQSource::ServiceUser
                }
            ),
            Answer::Aborted
        );
        assert_eq!(answer(&rq(), Pdu::ReleaseRQ), Answer::Unexpected);
    }

    #[test]
    fn interruptions() {
        assert_eq!(
            interruption(&Pdu::ReleaseRQ),
            Interruption::ReleaseRequested
        );
        assert_eq!(
            interruption(&Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser
            }),
            Interruption::Aborted
        );
        assert!(matches!(
            interruption(&Pdu::ReleaseRP),
            Interruption::Unexpected(_)
        ));
    }
}
