//! The association acceptor after its A-ASSOCIATE-AC, as a state machine without IO: a PDV, a
//! PDU, a timeout or a framing error goes in, one [`Step`] comes out for the shell to carry out
//! (answer, abort, begin an object, write a fragment to it, finish it, hand a request to a
//! workflow service, release). It owns the DIMSE decisions of the C-ECHO and C-STORE SCP and the
//! message layer ([`Assembler`]); what an object becomes on disk and what a workflow service
//! answers are the shell's.

use crate::assemble::{AssembleError, Assembler, Piece};
use crate::command::{self, CommandSet, field, status};
use crate::negotiate::AcceptedContext;
use crate::pdata::{Pdv, abort_reason};
use crate::pdu::Pdu;
use crate::store::StoreRequest;

/// What the data fragments of the message in progress feed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Receiving {
    /// The object begun by [`Step::BeginObject`].
    Object,
    /// A workflow service's request ([`Step::Service`]).
    Service,
    /// Nothing: dropped, then this response is sent.
    Drain {
        /// Context of the request.
        context_id: u8,
        /// The refusal.
        response: CommandSet,
    },
}

/// What the shell does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Nothing yet (a command fragment, a drained data fragment).
    Nothing,
    /// Answer a C-ECHO-RQ with this response.
    Echo {
        /// Context of the request.
        context_id: u8,
        /// The C-ECHO-RSP.
        response: CommandSet,
    },
    /// Send this response at once.
    Respond {
        /// Context of the request.
        context_id: u8,
        /// The response.
        response: CommandSet,
    },
    /// The last fragment of a drained message: send this refusal.
    Drained {
        /// Context of the request.
        context_id: u8,
        /// The refusal.
        response: CommandSet,
    },
    /// A C-STORE-RQ acceptable on its context: open the object its data set goes to.
    BeginObject {
        /// The presentation context (abstract and transfer syntax).
        context: AcceptedContext,
        /// The request's fields.
        request: StoreRequest,
    },
    /// A data fragment of the object in progress.
    Write {
        /// The fragment, borrowed from the PDU.
        data: &'a [u8],
        /// The last one: finish the object and send its response.
        last: bool,
    },
    /// A request for a workflow service (N-ACTION, C-FIND, ...): ask the service, then tell the
    /// acceptor with [`Acceptor::answer`] or [`Acceptor::unsupported`] if it answers at once.
    Service {
        /// Context of the request.
        context: AcceptedContext,
        /// The request.
        command: CommandSet,
    },
    /// A data fragment of the workflow request in progress.
    ServiceData {
        /// The fragment, borrowed from the PDU.
        data: &'a [u8],
        /// The last one: the service answers.
        last: bool,
    },
    /// A C-CANCEL-RQ or an N-EVENT-REPORT-RSP: for the workflow services (never answered).
    ToSession {
        /// The command.
        command: CommandSet,
    },
    /// A response to nothing the acceptor sent: ignored (never answer a response).
    Ignored {
        /// Its command field.
        command_field: u16,
    },
    /// A-ABORT with this reason, then close.
    Abort {
        /// A-ABORT reason (service provider).
        reason: u8,
        /// Why (for the log).
        why: String,
    },
    /// A-RELEASE-RQ: answer A-RELEASE-RP and close.
    Release,
    /// The peer aborted: close.
    PeerAborted,
}

/// One accepted association's DIMSE state.
#[derive(Debug)]
pub struct Acceptor {
    assembler: Assembler,
    contexts: Vec<AcceptedContext>,
    receiving: Option<Receiving>,
}

fn abort<'a>(e: AssembleError) -> Step<'a> {
    Step::Abort {
        reason: e.abort_reason(),
        why: e.to_string(),
    }
}

impl Acceptor {
    /// The acceptor of an association with these accepted contexts.
    pub fn new(contexts: Vec<AcceptedContext>) -> Self {
        Acceptor {
            assembler: Assembler::new(contexts.iter().map(|c| c.id)),
            contexts,
            receiving: None,
        }
    }

    /// The accepted contexts.
    pub fn contexts(&self) -> &[AcceptedContext] {
        &self.contexts
    }

    /// True while no message is in progress (a workflow service may push its own then).
    pub fn between_operations(&self) -> bool {
        self.receiving.is_none()
    }

    /// Takes one PDV.
    pub fn on_pdv<'a>(&mut self, pdv: &Pdv<'a>) -> Step<'a> {
        let piece = match self.assembler.push(pdv) {
            Ok(p) => p,
            Err(e) => return abort(e),
        };
        match piece {
            Piece::Data { data, is_last, .. } => self.on_data(data, is_last),
            // A command while the data set of a message is awaited (one that announced none).
            Piece::Partial | Piece::Command { .. } if self.receiving.is_some() => {
                abort(AssembleError::CommandDuringData)
            }
            Piece::Partial => Step::Nothing,
            Piece::Command {
                context_id,
                command,
            } => self.on_command(context_id, command),
        }
    }

    fn on_data<'a>(&mut self, data: &'a [u8], last: bool) -> Step<'a> {
        let step = match &self.receiving {
            None => return abort(AssembleError::DataWithoutCommand),
            Some(Receiving::Object) => Step::Write { data, last },
            Some(Receiving::Service) => Step::ServiceData { data, last },
            Some(Receiving::Drain { .. }) if !last => Step::Nothing,
            Some(Receiving::Drain {
                context_id,
                response,
            }) => Step::Drained {
                context_id: *context_id,
                response: response.clone(),
            },
        };
        if last {
            self.receiving = None;
        }
        step
    }

    fn on_command<'a>(&mut self, context_id: u8, cmd: CommandSet) -> Step<'a> {
        let message_id = cmd.message_id().unwrap_or(0);
        let Some(context) = self.contexts.iter().find(|c| c.id == context_id).cloned() else {
            // The assembler refuses PDVs on other contexts.
            return abort(AssembleError::UnknownContext(context_id));
        };
        match cmd.command_field() {
            field::C_ECHO_RQ => Step::Echo {
                context_id,
                response: command::echo_rsp(message_id, status::SUCCESS),
            },
            field::C_STORE_RQ => {
                if !cmd.has_dataset() {
                    return Step::Respond {
                        context_id,
                        response: command::store_rsp(
                            message_id,
                            "",
                            "",
                            status::CANNOT_UNDERSTAND,
                            Some("C-STORE-RQ without a data set"),
                        ),
                    };
                }
                let request = StoreRequest::of(&cmd);
                match request.check(&context.abstract_syntax) {
                    Ok(()) => {
                        self.receiving = Some(Receiving::Object);
                        Step::BeginObject { context, request }
                    }
                    Err(refusal) => {
                        self.receiving = Some(Receiving::Drain {
                            context_id,
                            response: request.refusal(&refusal),
                        });
                        Step::Nothing
                    }
                }
            }
            field::C_CANCEL_RQ | field::N_EVENT_REPORT_RSP => Step::ToSession { command: cmd },
            f if f & 0x8000 != 0 => Step::Ignored { command_field: f },
            _ => {
                self.receiving = Some(Receiving::Service);
                Step::Service {
                    context,
                    command: cmd,
                }
            }
        }
    }

    /// The workflow service answered the request of the last [`Step::Service`] at once with
    /// `response`: to send now on its context (`Some`) or, if a data set follows, after that was
    /// drained ([`Step::Drained`]).
    pub fn answer(
        &mut self,
        context_id: u8,
        request: &CommandSet,
        response: CommandSet,
    ) -> Option<CommandSet> {
        if request.has_dataset() {
            self.receiving = Some(Receiving::Drain {
                context_id,
                response,
            });
            None
        } else {
            self.receiving = None;
            Some(response)
        }
    }

    /// No workflow service serves the request of the last [`Step::Service`]: refused like
    /// [`Acceptor::answer`] with a generic failure response.
    pub fn unsupported(&mut self, context_id: u8, request: &CommandSet) -> Option<CommandSet> {
        self.answer(context_id, request, command::unsupported_rsp(request))
    }

    /// Takes a PDU other than P-DATA-TF.
    pub fn on_pdu(&mut self, pdu: &Pdu) -> Step<'static> {
        match pdu {
            Pdu::ReleaseRQ => Step::Release,
            Pdu::AbortRQ { .. } => Step::PeerAborted,
            other => Step::Abort {
                reason: abort_reason::UNEXPECTED_PDU,
                why: format!("unexpected PDU {}", other.short_description()),
            },
        }
    }

    /// No PDU for `secs` seconds.
    pub fn on_idle(&mut self, secs: u64) -> Step<'static> {
        Step::Abort {
            reason: abort_reason::NOT_SPECIFIED,
            why: format!("idle for {secs} s"),
        }
    }

    /// The peer's bytes are not well-formed PDUs.
    pub fn on_framing_error(&mut self, error: &crate::pdata::FramingError) -> Step<'static> {
        Step::Abort {
            reason: abort_reason::INVALID_PARAMETER,
            why: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::tags;
    use crate::{commitment as sc, uids, worklist as mwl};

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
    const UID: &str = "1.2.826.0.1.3680043.99.2";

    fn ctx(id: u8, abstract_syntax: &str) -> AcceptedContext {
        AcceptedContext {
            id,
            abstract_syntax: abstract_syntax.into(),
            transfer_syntax: uids::EXPLICIT_VR_LE.into(),
        }
    }

    /// Echo on 1, CT on 3, MR on 5, storage commitment on 7, worklist on 9.
    fn acceptor() -> Acceptor {
        Acceptor::new(vec![
            ctx(1, uids::VERIFICATION),
            ctx(3, CT),
            ctx(5, MR),
            ctx(7, sc::SOP_CLASS),
            ctx(9, mwl::SOP_CLASS),
        ])
    }

    fn command_pdv(context_id: u8, bytes: &[u8]) -> Pdv<'_> {
        Pdv {
            context_id,
            is_command: true,
            is_last: true,
            data: bytes,
        }
    }

    fn data_pdv(context_id: u8, is_last: bool, data: &[u8]) -> Pdv<'_> {
        Pdv {
            context_id,
            is_command: false,
            is_last,
            data,
        }
    }

    fn status_of(step: &Step<'_>) -> Option<u16> {
        match step {
            Step::Respond { response, .. }
            | Step::Drained { response, .. }
            | Step::Echo { response, .. } => response.status(),
            _ => None,
        }
    }

    fn aborted(step: &Step<'_>, expected_reason: u8) -> bool {
        matches!(step, Step::Abort { reason, .. } if *reason == expected_reason)
    }

    #[test]
    fn echo_is_answered_success() {
        let mut a = acceptor();
        let rq = command::echo_rq(4).encode();
        let step = a.on_pdv(&command_pdv(1, &rq));
        match &step {
            Step::Echo {
                context_id: 1,
                response,
            } => {
                assert_eq!(response.command_field(), field::C_ECHO_RSP);
                assert_eq!(response.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO), Some(4));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(status_of(&step), Some(status::SUCCESS));
        assert!(a.between_operations());
    }

    #[test]
    fn store_begins_writes_and_finishes_then_goes_on() {
        let mut a = acceptor();
        let rq = command::store_rq(5, CT, UID).encode();
        let (x, y) = rq.split_at(20);
        let first = Pdv {
            is_last: false,
            ..command_pdv(3, x)
        };
        assert_eq!(a.on_pdv(&first), Step::Nothing);
        match a.on_pdv(&command_pdv(3, y)) {
            Step::BeginObject { context, request } => {
                assert_eq!(context.id, 3);
                assert_eq!(request.sop_instance, UID);
                assert_eq!(request.message_id, 5);
            }
            other => panic!("{other:?}"),
        }
        assert!(!a.between_operations());
        assert_eq!(
            a.on_pdv(&data_pdv(3, false, b"ab")),
            Step::Write {
                data: b"ab",
                last: false
            }
        );
        assert_eq!(
            a.on_pdv(&data_pdv(3, true, b"cd")),
            Step::Write {
                data: b"cd",
                last: true
            }
        );
        assert!(a.between_operations());
        // A second object on the same association.
        let rq = command::store_rq(6, MR, "1.2.3").encode();
        assert!(matches!(
            a.on_pdv(&command_pdv(5, &rq)),
            Step::BeginObject { .. }
        ));
    }

    #[test]
    fn store_refusals_drain_then_answer() {
        // (request, context, expected status) — each drained, answered after the last fragment.
        let cases = [
            (command::store_rq(1, CT, ""), 3, status::CANNOT_UNDERSTAND),
            (
                command::store_rq(1, CT, "1.02.3"),
                3,
                status::CANNOT_UNDERSTAND,
            ),
            (command::store_rq(1, "", UID), 3, status::CANNOT_UNDERSTAND),
            (command::store_rq(1, MR, UID), 3, status::DATASET_MISMATCH),
        ];
        for (rq, context_id, expected) in cases {
            let mut a = acceptor();
            let bytes = rq.encode();
            assert_eq!(a.on_pdv(&command_pdv(context_id, &bytes)), Step::Nothing);
            assert_eq!(a.on_pdv(&data_pdv(context_id, false, b"xx")), Step::Nothing);
            let step = a.on_pdv(&data_pdv(context_id, true, b"yy"));
            assert!(
                matches!(step, Step::Drained { context_id: 3, .. }),
                "{step:?}"
            );
            assert_eq!(status_of(&step), Some(expected));
            assert!(a.between_operations());
        }
        // Without a data set: answered at once.
        let mut a = acceptor();
        let mut rq = command::store_rq(2, CT, UID);
        rq.set_u16(tags::COMMAND_DATA_SET_TYPE, command::DATA_SET_ABSENT);
        let bytes = rq.encode();
        let step = a.on_pdv(&command_pdv(3, &bytes));
        assert!(matches!(step, Step::Respond { context_id: 3, .. }));
        assert_eq!(status_of(&step), Some(status::CANNOT_UNDERSTAND));
    }

    #[test]
    fn workflow_requests_go_to_the_service() {
        let mut a = acceptor();
        let rq = sc::action_rq(8).encode();
        match a.on_pdv(&command_pdv(7, &rq)) {
            Step::Service { context, command } => {
                assert_eq!(context.abstract_syntax, sc::SOP_CLASS);
                assert_eq!(command.message_id(), Some(8));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            a.on_pdv(&data_pdv(7, true, b"ds")),
            Step::ServiceData {
                data: b"ds",
                last: true
            }
        );
        assert!(a.between_operations());

        // The service refuses at once: the data set is drained, then the refusal goes out.
        let action = sc::action_rq(9);
        assert!(matches!(
            a.on_pdv(&command_pdv(7, &action.encode())),
            Step::Service { .. }
        ));
        let refusal = sc::action_rsp(9, status::OUT_OF_RESOURCES, Some("busy"));
        assert_eq!(a.answer(7, &action, refusal), None);
        let step = a.on_pdv(&data_pdv(7, true, b"ds"));
        assert_eq!(status_of(&step), Some(status::OUT_OF_RESOURCES));

        // No service for it, no data set: a generic failure at once.
        let mut get = CommandSet::new();
        get.set_u16(tags::COMMAND_FIELD, 0x0010)
            .set_u16(tags::MESSAGE_ID, 3)
            .set_u16(tags::COMMAND_DATA_SET_TYPE, command::DATA_SET_ABSENT);
        assert!(matches!(
            a.on_pdv(&command_pdv(9, &get.encode())),
            Step::Service { .. }
        ));
        match a.unsupported(9, &get) {
            Some(response) => assert_eq!(response.command_field(), 0x8010),
            None => panic!("answered at once"),
        }
        assert!(a.between_operations());
    }

    #[test]
    fn cancel_and_responses_are_never_answered() {
        let mut a = acceptor();
        let mut cancel = CommandSet::new();
        cancel
            .set_u16(tags::COMMAND_FIELD, field::C_CANCEL_RQ)
            .set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, 3)
            .set_u16(tags::COMMAND_DATA_SET_TYPE, command::DATA_SET_ABSENT);
        assert!(matches!(
            a.on_pdv(&command_pdv(9, &cancel.encode())),
            Step::ToSession { .. }
        ));
        let report_rsp = sc::event_report_rsp(0x4000, 1, status::SUCCESS).encode();
        assert!(matches!(
            a.on_pdv(&command_pdv(7, &report_rsp)),
            Step::ToSession { .. }
        ));
        let stray = command::echo_rsp(1, status::SUCCESS).encode();
        assert_eq!(
            a.on_pdv(&command_pdv(1, &stray)),
            Step::Ignored {
                command_field: field::C_ECHO_RSP
            }
        );
        assert!(a.between_operations());
    }

    #[test]
    fn protocol_violations_abort() {
        let rq = command::store_rq(1, CT, UID).encode();
        // A rejected or never proposed context (bad-input test, case 4).
        let mut a = acceptor();
        assert!(aborted(
            &a.on_pdv(&command_pdv(11, &rq)),
            abort_reason::INVALID_PARAMETER
        ));
        // Data with no command.
        let mut a = acceptor();
        assert!(aborted(
            &a.on_pdv(&data_pdv(3, true, b"x")),
            abort_reason::UNEXPECTED_PDU
        ));
        // A command in the middle of a data set.
        let mut a = acceptor();
        a.on_pdv(&command_pdv(3, &rq));
        assert!(aborted(
            &a.on_pdv(&command_pdv(3, &rq)),
            abort_reason::UNEXPECTED_PDU
        ));
        // A data fragment on another context than its command's.
        let mut a = acceptor();
        a.on_pdv(&command_pdv(3, &rq));
        assert!(aborted(
            &a.on_pdv(&data_pdv(5, true, b"x")),
            abort_reason::INVALID_PARAMETER
        ));
        // An undecodable command.
        let mut a = acceptor();
        assert!(aborted(
            &a.on_pdv(&command_pdv(1, &[1, 0, 0, 0, 9, 0, 0, 0])),
            abort_reason::INVALID_PARAMETER
        ));
        // Data after a C-CANCEL that announced a data set: nothing expects it.
        let mut a = acceptor();
        let mut cancel = CommandSet::new();
        cancel
            .set_u16(tags::COMMAND_FIELD, field::C_CANCEL_RQ)
            .set_u16(tags::COMMAND_DATA_SET_TYPE, command::DATA_SET_PRESENT);
        a.on_pdv(&command_pdv(9, &cancel.encode()));
        assert!(aborted(
            &a.on_pdv(&data_pdv(9, true, b"x")),
            abort_reason::UNEXPECTED_PDU
        ));
    }

    #[test]
    fn other_pdus_timeouts_and_framing() {
        let mut a = acceptor();
        assert_eq!(a.on_pdu(&Pdu::ReleaseRQ), Step::Release);
        assert_eq!(
            a.on_pdu(&Pdu::AbortRQ {
                source: crate::pdu::AbortRQSource::ServiceUser
            }),
            Step::PeerAborted
        );
        assert!(aborted(
            &a.on_pdu(&Pdu::ReleaseRP),
            abort_reason::UNEXPECTED_PDU
        ));
        assert!(aborted(&a.on_idle(30), abort_reason::NOT_SPECIFIED));
        assert!(aborted(
            &a.on_framing_error(&crate::pdata::FramingError::EmptyPData),
            abort_reason::INVALID_PARAMETER
        ));
        // Released in the middle of an object: the shell discards it.
        let rq = command::store_rq(1, CT, UID).encode();
        a.on_pdv(&command_pdv(3, &rq));
        assert_eq!(a.on_pdu(&Pdu::ReleaseRQ), Step::Release);
    }
}
