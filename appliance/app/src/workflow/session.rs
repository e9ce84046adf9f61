//! The workflow services' part of one incoming association: receives the small data sets of
//! their requests in memory (bounded), answers them, and pushes storage commitment reports on
//! the association while it is open. The listener calls it from its DIMSE dispatch.

use crate::conn::{ConnError, PduConn};
use crate::workflow::Workflow;
use crate::workflow::commitment::{Registration, Report, report_message};
use medgate_dicom::command::{CommandSet, field, status, tags};
use medgate_dicom::commitment as sc;
use medgate_dicom::dataset::MAX_SMALL_DATASET;
use medgate_dicom::negotiate::AcceptedContext;
use medgate_dicom::worklist as mwl;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A request whose data set is being received in memory.
#[derive(Debug)]
pub struct Small {
    /// Its presentation context.
    pub context_id: u8,
    transfer_syntax: String,
    command: CommandSet,
    data: Vec<u8>,
    /// Set once the data set went over [`MAX_SMALL_DATASET`]: the rest is dropped and this answers.
    refusal: Option<CommandSet>,
}

/// One outgoing message: context, command, data set.
pub type Outgoing = (u8, CommandSet, Option<Vec<u8>>);

/// Per-association state of the workflow services.
#[derive(Debug)]
pub struct Session {
    workflow: Arc<Workflow>,
    registration: Option<Registration>,
    commitment_ctx: Option<AcceptedContext>,
    next_message_id: u16,
    awaiting: HashMap<u16, String>,
    find: Option<FindJob>,
}

/// A worklist query being answered by a background task.
#[derive(Debug)]
struct FindJob {
    message_id: u16,
    cancel: CancellationToken,
    responses: mpsc::Receiver<Outgoing>,
}

/// What [`Session::wait`] found.
enum Due {
    Data(Result<(), ConnError>),
    Report(Report),
    Find(Option<Outgoing>),
}

impl Session {
    /// Starts the session of an association with these accepted contexts.
    pub fn new(workflow: Arc<Workflow>, calling_ae: &str, contexts: &[AcceptedContext]) -> Self {
        let commitment_ctx = contexts
            .iter()
            .find(|c| c.abstract_syntax == sc::SOP_CLASS)
            .cloned();
        let registration = match (&workflow.commitment, &commitment_ctx) {
            (Some(c), Some(_)) => Some(c.register(calling_ae)),
            _ => None,
        };
        Session {
            workflow,
            registration,
            commitment_ctx,
            next_message_id: 0x4000,
            awaiting: HashMap::new(),
            find: None,
        }
    }

    /// If `cmd` is a request of a workflow service, what to do with it: receive its data set
    /// (`Ok`) or answer at once (`Err`). `None`: not ours.
    pub fn start(
        &self,
        context_id: u8,
        transfer_syntax: &str,
        cmd: &CommandSet,
    ) -> Option<Result<Small, CommandSet>> {
        let message_id = cmd.message_id().unwrap_or(0);
        match cmd.command_field() {
            field::N_ACTION_RQ if self.workflow.commitment.is_some() => {
                if let Err(r) = sc::check_action_command(cmd) {
                    if let Some(c) = &self.workflow.commitment {
                        c.counters.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(reason = %r, "storage commitment N-ACTION refused");
                    return Some(Err(sc::action_rsp(message_id, r.status, Some(&r.comment))));
                }
                Some(Ok(Small {
                    context_id,
                    transfer_syntax: transfer_syntax.to_string(),
                    command: cmd.clone(),
                    data: Vec::new(),
                    refusal: None,
                }))
            }
            field::C_FIND_RQ
                if self.workflow.worklist.is_some()
                    && cmd.string(tags::AFFECTED_SOP_CLASS_UID).as_deref()
                        == Some(mwl::SOP_CLASS) =>
            {
                let refuse = |why: &str| {
                    if let Some(w) = &self.workflow.worklist {
                        w.counters.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(mwl::find_rsp(
                        message_id,
                        status::OUT_OF_RESOURCES,
                        false,
                        Some(why),
                    )))
                };
                if self.find.is_some() {
                    return refuse("a worklist query is still being answered on this association");
                }
                if !cmd.has_dataset() {
                    return Some(Err(mwl::find_rsp(
                        message_id,
                        status::CANNOT_UNDERSTAND,
                        false,
                        Some("C-FIND-RQ without an identifier"),
                    )));
                }
                Some(Ok(Small {
                    context_id,
                    transfer_syntax: transfer_syntax.to_string(),
                    command: cmd.clone(),
                    data: Vec::new(),
                    refusal: None,
                }))
            }
            _ => None,
        }
    }

    /// Appends a data set fragment (dropped once over the cap).
    pub fn push(small: &mut Small, data: &[u8]) {
        if small.refusal.is_some() {
            return;
        }
        if small.data.len() + data.len() > MAX_SMALL_DATASET {
            small.data = Vec::new();
            let message_id = small.command.message_id().unwrap_or(0);
            let comment = format!("data set larger than {MAX_SMALL_DATASET} bytes");
            small.refusal = Some(match small.command.command_field() {
                field::N_ACTION_RQ => {
                    sc::action_rsp(message_id, status::OUT_OF_RESOURCES, Some(&comment))
                }
                field::C_FIND_RQ => {
                    mwl::find_rsp(message_id, status::OUT_OF_RESOURCES, false, Some(&comment))
                }
                _ => medgate_dicom::command::unsupported_rsp(&small.command),
            });
            return;
        }
        small.data.extend_from_slice(data);
    }

    /// The data set is complete: the answers to send (the shell of [`plan`]: it persists a
    /// commitment request or starts a worklist query, and counts refusals).
    pub async fn finish(
        &mut self,
        small: Small,
        calling_ae: &str,
        called_ae: &str,
    ) -> Vec<Outgoing> {
        let services = Services {
            commitment: self.workflow.commitment.is_some(),
            worklist: self.workflow.worklist.is_some(),
        };
        match plan(small, services) {
            Plan::Answer { answer, refused } => {
                match refused {
                    Some(Service::Commitment) => {
                        if let Some(c) = &self.workflow.commitment {
                            c.counters.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Service::Worklist) => {
                        if let Some(w) = &self.workflow.worklist {
                            w.counters.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {}
                }
                if let Some((service, reason)) = refused.zip(answer.1.string(tags::ERROR_COMMENT)) {
                    tracing::warn!(calling_ae, ?service, reason = %reason, "workflow request refused");
                }
                vec![answer]
            }
            Plan::Commit {
                context_id,
                message_id,
                request,
            } => {
                let Some(service) = self.workflow.commitment.clone() else {
                    return Vec::new();
                };
                let (calling, called) = (calling_ae.to_string(), called_ae.to_string());
                let saved =
                    tokio::task::spawn_blocking(move || service.accept(request, &calling, &called))
                        .await;
                let rsp = match saved {
                    Ok(Ok(())) => sc::action_rsp(message_id, status::SUCCESS, None),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot persist a storage commitment request");
                        sc::action_rsp(
                            message_id,
                            status::PROCESSING_FAILURE,
                            Some("cannot persist the request; retry later"),
                        )
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "storage commitment task failed");
                        sc::action_rsp(message_id, status::PROCESSING_FAILURE, None)
                    }
                };
                vec![(context_id, rsp, None)]
            }
            Plan::Find {
                context_id,
                message_id,
                transfer_syntax,
                query,
            } => {
                let Some(service) = self.workflow.worklist.clone() else {
                    return Vec::new();
                };
                let (tx, rx) = mpsc::channel(16);
                let cancel = CancellationToken::new();
                tokio::spawn(service.find(
                    query,
                    calling_ae.to_string(),
                    message_id,
                    (context_id, transfer_syntax),
                    cancel.clone(),
                    tx,
                ));
                self.find = Some(FindJob {
                    message_id,
                    cancel,
                    responses: rx,
                });
                Vec::new()
            }
        }
    }

    /// Waits until the peer sent something (`Ok(None)`) or a message of ours is due on this
    /// association (`Ok(Some)`): a storage commitment report, a worklist response. Returns at
    /// once when nothing of ours can come. A report is only started `between_operations` (no
    /// request of the peer in progress) and while no worklist query is being answered.
    pub async fn wait(
        &mut self,
        conn: &mut PduConn,
        idle_secs: u64,
        between_operations: bool,
    ) -> Result<Option<Outgoing>, ConnError> {
        let reports_ok = between_operations && self.find.is_none();
        if (self.registration.is_none() || !reports_ok) && self.find.is_none() {
            return Ok(None);
        }
        let reports = async {
            match self.registration.as_mut() {
                Some(r) if reports_ok => r.reports.recv().await,
                _ => std::future::pending().await,
            }
        };
        let finds = async {
            match self.find.as_mut() {
                Some(f) => f.responses.recv().await,
                None => std::future::pending().await,
            }
        };
        let due = tokio::select! {
            r = conn.wait_data(idle_secs) => Due::Data(r),
            Some(report) = reports => Due::Report(report),
            f = finds => Due::Find(f),
        };
        match due {
            Due::Data(r) => r.map(|()| None),
            Due::Report(report) => Ok(self.report(&report)),
            Due::Find(Some(out)) => {
                // The final response ends the job.
                let last = out.1.status().is_some_and(|s| s != status::PENDING);
                if last {
                    self.find = None;
                }
                Ok(Some(out))
            }
            Due::Find(None) => {
                self.find = None;
                Ok(None)
            }
        }
    }

    /// A C-CANCEL-RQ: stops the worklist query it names.
    pub fn cancel(&mut self, cmd: &CommandSet) {
        if let Some(f) = &self.find {
            if cmd.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO) == Some(f.message_id) {
                f.cancel.cancel();
            }
        }
    }

    /// The N-EVENT-REPORT-RQ of a report on this association.
    pub fn report(&mut self, report: &Report) -> Option<Outgoing> {
        let ctx = self.commitment_ctx.as_ref()?;
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        match report_message(id, report, &ctx.transfer_syntax) {
            Ok((cmd, data)) => {
                self.awaiting.insert(id, report.transaction_uid.clone());
                Some((ctx.id, cmd, Some(data)))
            }
            Err(e) => {
                if let Some(c) = &self.workflow.commitment {
                    c.not_delivered(&report.transaction_uid, &e.to_string());
                }
                None
            }
        }
    }

    /// A response from the peer (N-EVENT-REPORT-RSP); `false` if it answers nothing we sent.
    pub fn on_response(&mut self, cmd: &CommandSet) -> bool {
        if cmd.command_field() != field::N_EVENT_REPORT_RSP {
            return false;
        }
        let Some(id) = cmd.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO) else {
            return false;
        };
        let Some(txn) = self.awaiting.remove(&id) else {
            return false;
        };
        if let Some(c) = &self.workflow.commitment {
            match cmd.status() {
                Some(status::SUCCESS) => c.delivered(&txn),
                other => c.not_delivered(&txn, &format!("N-EVENT-REPORT-RSP status {other:04X?}")),
            }
        }
        true
    }
}

/// Which workflow services this appliance runs.
#[derive(Debug, Clone, Copy)]
pub struct Services {
    /// Storage commitment SCP configured.
    pub commitment: bool,
    /// Modality Worklist proxy configured.
    pub worklist: bool,
}

/// A workflow service, for counting its refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Storage commitment.
    Commitment,
    /// Modality Worklist.
    Worklist,
}

/// What a complete workflow request asks for, decided from the request alone (no IO).
#[derive(Debug)]
pub enum Plan {
    /// Answer at once: a refusal (counted against `refused`) or an unsupported request.
    Answer {
        /// The response.
        answer: Outgoing,
        /// The service whose refusal this is.
        refused: Option<Service>,
    },
    /// Persist this storage commitment request, then answer its N-ACTION.
    Commit {
        /// Presentation context of the request.
        context_id: u8,
        /// Its message id.
        message_id: u16,
        /// The decoded request.
        request: sc::Request,
    },
    /// Answer this worklist query in the background (cache or upstream RIS).
    Find {
        /// Presentation context of the query.
        context_id: u8,
        /// Its message id.
        message_id: u16,
        /// The context's transfer syntax (the responses use it).
        transfer_syntax: String,
        /// The decoded identifier.
        query: medgate_dicom::dataset::Dataset,
    },
}

/// Decides what a complete request asks for: a too-large data set or one that does not decode
/// is refused with its status; a request of a service that is not configured is unsupported.
pub fn plan(small: Small, services: Services) -> Plan {
    let ctx = small.context_id;
    let message_id = small.command.message_id().unwrap_or(0);
    let field = small.command.command_field();
    let service = match field {
        field::N_ACTION_RQ => Some(Service::Commitment),
        field::C_FIND_RQ => Some(Service::Worklist),
        _ => None,
    };
    if let Some(r) = small.refusal {
        return Plan::Answer {
            answer: (ctx, r, None),
            refused: service,
        };
    }
    let unsupported = |small: &Small| Plan::Answer {
        answer: (
            ctx,
            medgate_dicom::command::unsupported_rsp(&small.command),
            None,
        ),
        refused: None,
    };
    match service {
        Some(Service::Commitment) if services.commitment => {
            match sc::decode_request(&small.data, &small.transfer_syntax) {
                Ok(request) => Plan::Commit {
                    context_id: ctx,
                    message_id,
                    request,
                },
                Err(r) => Plan::Answer {
                    answer: (
                        ctx,
                        sc::action_rsp(message_id, r.status, Some(&r.comment)),
                        None,
                    ),
                    refused: Some(Service::Commitment),
                },
            }
        }
        Some(Service::Worklist) if services.worklist => {
            match medgate_dicom::dataset::decode(&small.data, &small.transfer_syntax) {
                Ok(query) => Plan::Find {
                    context_id: ctx,
                    message_id,
                    transfer_syntax: small.transfer_syntax,
                    query,
                },
                Err(e) => Plan::Answer {
                    answer: (
                        ctx,
                        mwl::find_rsp(
                            message_id,
                            status::CANNOT_UNDERSTAND,
                            false,
                            Some(&e.to_string()),
                        ),
                        None,
                    ),
                    refused: Some(Service::Worklist),
                },
            }
        }
        _ => unsupported(&small),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(f) = &self.find {
            f.cancel.cancel();
        }
        // Reports sent here and not answered go out again another way.
        if let Some(c) = &self.workflow.commitment {
            for txn in self.awaiting.values() {
                c.not_delivered(txn, "association ended before the N-EVENT-REPORT-RSP");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_dicom::command;
    use medgate_dicom::uids::EXPLICIT_VR_LE;

    const BOTH: Services = Services {
        commitment: true,
        worklist: true,
    };

    fn small(command: CommandSet, data: &[u8]) -> Small {
        let mut s = Small {
            context_id: 3,
            transfer_syntax: EXPLICIT_VR_LE.to_string(),
            command,
            data: Vec::new(),
            refusal: None,
        };
        Session::push(&mut s, data);
        s
    }

    fn commitment_request() -> Vec<u8> {
        let rq = sc::Request {
            transaction_uid: "1.2.3.4".into(),
            references: vec![sc::Reference {
                sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance: "1.2.3.4.5".into(),
            }],
        };
        medgate_dicom::dataset::encode(&sc::request_dataset(&rq), EXPLICIT_VR_LE).expect("encodes")
    }

    fn answer(p: Plan) -> (CommandSet, Option<Service>) {
        match p {
            Plan::Answer { answer, refused } => {
                assert_eq!(answer.0, 3, "answered on the request's context");
                (answer.1, refused)
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_commitment_request_is_persisted_before_it_is_answered() {
        match plan(small(sc::action_rq(7), &commitment_request()), BOTH) {
            Plan::Commit {
                context_id,
                message_id,
                request,
            } => {
                assert_eq!((context_id, message_id), (3, 7));
                assert_eq!(request.transaction_uid, "1.2.3.4");
                assert_eq!(request.references.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_commitment_data_set_that_does_not_decode_is_refused_and_counted() {
        let (rsp, refused) = answer(plan(small(sc::action_rq(8), b"\x08\x00garbage"), BOTH));
        assert_eq!(refused, Some(Service::Commitment));
        assert_eq!(rsp.command_field(), field::N_ACTION_RSP);
        assert_ne!(rsp.status(), Some(status::SUCCESS));
        assert_eq!(rsp.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO), Some(8));
    }

    #[test]
    fn a_data_set_over_the_cap_is_dropped_and_refused_out_of_resources() {
        let mut s = small(sc::action_rq(9), &[0u8; 1024]);
        Session::push(&mut s, &vec![0u8; MAX_SMALL_DATASET]);
        assert!(s.data.is_empty(), "the data are dropped, not kept");
        Session::push(&mut s, &[0u8; 16]);
        let (rsp, refused) = answer(plan(s, BOTH));
        assert_eq!(refused, Some(Service::Commitment));
        assert_eq!(rsp.status(), Some(status::OUT_OF_RESOURCES));
        let (rsp, refused) = answer(plan(
            {
                let mut f = small(mwl::find_rq(10), &[]);
                Session::push(&mut f, &vec![0u8; MAX_SMALL_DATASET + 1]);
                f
            },
            BOTH,
        ));
        assert_eq!(refused, Some(Service::Worklist));
        assert_eq!(rsp.command_field(), field::C_FIND_RSP);
        assert_eq!(rsp.status(), Some(status::OUT_OF_RESOURCES));
    }

    #[test]
    fn a_worklist_query_runs_in_the_background_or_is_refused_as_not_understood() {
        let query = medgate_dicom::dataset::encode(
            &sc::request_dataset(&sc::Request {
                transaction_uid: "1.2".into(),
                references: vec![],
            }),
            EXPLICIT_VR_LE,
        )
        .expect("encodes");
        match plan(small(mwl::find_rq(11), &query), BOTH) {
            Plan::Find {
                context_id,
                message_id,
                transfer_syntax,
                ..
            } => assert_eq!(
                (context_id, message_id, transfer_syntax.as_str()),
                (3, 11, EXPLICIT_VR_LE)
            ),
            other => panic!("{other:?}"),
        }
        let (rsp, refused) = answer(plan(
            small(mwl::find_rq(12), b"\x10\x00\x10\x00PN\xff\x00ab"),
            BOTH,
        ));
        assert_eq!(refused, Some(Service::Worklist));
        assert_eq!(rsp.status(), Some(status::CANNOT_UNDERSTAND));
    }

    #[test]
    fn a_request_of_a_service_not_configured_is_unsupported_not_counted() {
        let none = Services {
            commitment: false,
            worklist: false,
        };
        let (rsp, refused) = answer(plan(small(sc::action_rq(13), &commitment_request()), none));
        assert_eq!(refused, None);
        assert_eq!(rsp.command_field(), field::N_ACTION_RSP);
        assert_ne!(rsp.status(), Some(status::SUCCESS));
        let (rsp, refused) = answer(plan(small(command::echo_rq(14), &[]), BOTH));
        assert_eq!(refused, None);
        assert_ne!(rsp.status(), Some(status::SUCCESS));
    }
}
