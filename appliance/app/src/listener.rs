//! The DICOM listener: accepts associations from modalities, answers C-ECHO, and receives
//! C-STORE by streaming data fragments straight into a spool temp file. "Success" is sent only
//! after the file is fsync'd, renamed, its directory fsync'd and the object indexed.
//!
//! One task per association. Memory per association is bounded by the max PDU length we
//! advertise (one receive buffer) plus the file writer's buffer, whatever the object's size.

use crate::config::Network;
use crate::conn::{BoxStream, ConnError, Incoming, PduConn, abort_reason};
use crate::forward::ForwardHub;
use crate::ingest;
use crate::metrics::Metrics;
use crate::workflow::session::{Session, Small};
use medgate_dicom::acceptor::{Acceptor, Step};
use medgate_dicom::command::{CommandSet, field};
use medgate_dicom::negotiate::{self, AcceptedContext, AcceptorPolicy, Decision, Knock};
use medgate_dicom::pdata::{FrameLimits, encode_command_pdus, encode_dataset_pdus};
use medgate_dicom::pdu::Pdu;
use medgate_spool::{ObjectRecord, Spool};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Everything an association task needs.
#[derive(Debug)]
pub struct ListenerContext {
    /// Negotiation policy.
    pub policy: AcceptorPolicy,
    /// Allowed source networks (empty: any).
    pub networks: Vec<Network>,
    /// The spool.
    pub spool: Arc<Spool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where new objects are announced.
    pub forward: Arc<ForwardHub>,
    /// Incoming PDU limits.
    pub limits: FrameLimits,
    /// ARTIM timeout (s).
    pub artim_secs: u64,
    /// Idle timeout (s).
    pub idle_secs: u64,
    /// Association slots.
    pub slots: Arc<Semaphore>,
    /// False after a spool write failed for another reason than a full disk, until one succeeds.
    pub spool_ok: AtomicBool,
    /// Coercion and routing rules, applied before an object is committed.
    pub rules: Arc<crate::rules::RulesRuntime>,
    /// Events for the fleet (no-op without one).
    pub events: Arc<crate::events::Events>,
    /// Workflow services (storage commitment, ...).
    pub workflow: Arc<crate::workflow::Workflow>,
}

/// Why the fleet is told a peer was refused (from the A-ASSOCIATE-RJ we sent).
fn refusal_of(rj: &medgate_dicom::pdu::AssociationRJ) -> medgate_contract::Refusal {
    use medgate_contract::Refusal;
    use medgate_dicom::pdu::{AssociationRJServiceUserReason as U, AssociationRJSource as S};
    match &rj.source {
        S::ServiceUser(U::CallingAETitleNotRecognized) => Refusal::CallingAeNotAllowed,
        S::ServiceUser(U::CalledAETitleNotRecognized) => Refusal::CalledAeNotRecognized,
        _ => Refusal::Other,
    }
}

/// Accepts connections until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ListenerContext>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let kind = if tls.is_some() { "dicom-tls" } else { "dicom" };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        let (sock, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(error = %e, listener = kind, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = handle_connection(sock, peer, ctx, tls) => {},
                () = shutdown.cancelled() => {},
            }
        });
    }
}

async fn handle_connection(
    sock: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerContext>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let stream: BoxStream = match tls {
        Some(acceptor) => {
            let hs = tokio::time::timeout(
                std::time::Duration::from_secs(ctx.artim_secs),
                acceptor.accept(sock),
            )
            .await;
            match hs {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer, error = %e, "DICOM TLS handshake failed");
                    ctx.metrics
                        .associations_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %peer, "DICOM TLS handshake timed out (ARTIM)");
                    return;
                }
            }
        }
        None => Box::new(sock),
    };
    let mut conn = PduConn::new(stream, ctx.limits);

    // ARTIM: the A-ASSOCIATE-RQ must come in time.
    let rq = match conn.read(ctx.artim_secs).await {
        Ok(Incoming::Other(Pdu::AssociationRQ(rq))) => rq,
        Ok(_) => {
            tracing::warn!(peer = %peer, "first PDU is not an A-ASSOCIATE-RQ; aborting");
            conn.abort(abort_reason::UNEXPECTED_PDU).await;
            return;
        }
        Err(e) => {
            tracing::info!(peer = %peer, error = %e, "connection ended before an association was requested");
            if matches!(e, ConnError::Framing(_)) {
                conn.abort(abort_reason::UNRECOGNIZED_PDU).await;
            }
            return;
        }
    };

    let address = peer.ip().to_string();
    let record = |knock: &Knock, refusal: Option<medgate_contract::Refusal>| {
        let code = refusal.and_then(crate::events::refusal_code);
        let known = match ctx.spool.record_knock(knock, &address, code.as_deref()) {
            Ok(rec) => Some(rec),
            Err(e) => {
                tracing::warn!(error = %e, "could not record the calling AE");
                None
            }
        };
        let classes: Vec<String> = knock
            .offers
            .iter()
            .map(|o| o.abstract_syntax.clone())
            .collect();
        ctx.events.peer_seen(
            &knock.calling_ae,
            &knock.called_ae,
            peer.ip(),
            &classes,
            refusal,
            known.as_ref(),
        );
    };
    let (decision, mut knock) = negotiate::decide(&ctx.policy, &rq);

    if !ctx.networks.is_empty() && !ctx.networks.iter().any(|n| n.contains(peer.ip())) {
        knock.offers.iter_mut().for_each(|o| o.accepted = None);
        knock.rejection = Some(format!(
            "source address {address} is not in listener.allowed_networks"
        ));
        record(&knock, Some(medgate_contract::Refusal::NetworkNotAllowed));
        tracing::warn!(peer = %peer, calling_ae = %knock.calling_ae, "association rejected: source address not allowed");
        ctx.metrics
            .associations_rejected
            .fetch_add(1, Ordering::Relaxed);
        let _ = conn
            .send(&Pdu::AssociationRJ(negotiate::reject_address()))
            .await;
        conn.close().await;
        return;
    }

    let (ac, contexts, peer_max_pdu) = match decision {
        Decision::Accept {
            ac,
            contexts,
            peer_max_pdu,
        } => (ac, contexts, peer_max_pdu),
        Decision::Reject(rj) => {
            let refusal = if knock.offers.iter().all(|o| o.accepted.is_none())
                && knock.rejection.as_deref() == Some("no presentation context acceptable")
            {
                medgate_contract::Refusal::NoAcceptableContext
            } else {
                refusal_of(&rj)
            };
            record(&knock, Some(refusal));
            tracing::warn!(peer = %peer, calling_ae = %knock.calling_ae, called_ae = %knock.called_ae, reason = knock.rejection.as_deref().unwrap_or(""), "association rejected");
            ctx.metrics
                .associations_rejected
                .fetch_add(1, Ordering::Relaxed);
            let _ = conn.send(&Pdu::AssociationRJ(rj)).await;
            conn.close().await;
            return;
        }
    };

    let Ok(_slot) = ctx.slots.clone().try_acquire_owned() else {
        knock.offers.iter_mut().for_each(|o| o.accepted = None);
        knock.rejection = Some("too many associations (listener.max_associations)".into());
        record(&knock, Some(medgate_contract::Refusal::LimitExceeded));
        tracing::warn!(peer = %peer, calling_ae = %knock.calling_ae, "association rejected: association limit reached");
        ctx.metrics
            .associations_rejected
            .fetch_add(1, Ordering::Relaxed);
        let _ = conn
            .send(&Pdu::AssociationRJ(negotiate::reject_busy()))
            .await;
        conn.close().await;
        return;
    };
    record(&knock, None);
    if conn.send(&Pdu::AssociationAC(ac)).await.is_err() {
        return;
    }
    ctx.metrics
        .associations_accepted
        .fetch_add(1, Ordering::Relaxed);
    ctx.metrics
        .associations_active
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(peer = %peer, calling_ae = %knock.calling_ae, contexts = contexts.len(), "association accepted");

    let session = Session::new(ctx.workflow.clone(), &knock.calling_ae, &contexts);
    let mut assoc = Association {
        ctx: &ctx,
        calling_ae: knock.calling_ae.clone(),
        called_ae: knock.called_ae.clone(),
        address: address.clone(),
        modalities: Default::default(),
        peer_max_pdu,
        acceptor: Acceptor::new(contexts),
        receiving: None,
        stored: 0,
        carried: Carried::default(),
        session,
        small: None,
    };
    let outcome = assoc.run(&mut conn).await;
    let c = &assoc.carried;
    ctx.events.study_received(
        &assoc.calling_ae,
        &assoc.called_ae,
        c.modality.as_deref(),
        &c.sop_classes,
        assoc.stored,
        c.bytes,
        c.first.map(|t| t.elapsed()).unwrap_or_default(),
    );
    if assoc.stored > 0 {
        ctx.metrics
            .study_stored(&assoc.calling_ae, c.modality.as_deref());
    }
    if let Some(r) = assoc.receiving.take() {
        r.discard(&ctx);
    }
    ctx.metrics
        .associations_active
        .fetch_sub(1, Ordering::Relaxed);
    match outcome {
        End::Released => {
            tracing::info!(peer = %peer, calling_ae = %knock.calling_ae, stored = assoc.stored, "association released")
        }
        End::Aborted(why) => {
            ctx.metrics
                .associations_aborted
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %peer, calling_ae = %knock.calling_ae, stored = assoc.stored, reason = %why, "association aborted; any object in progress was discarded (never acknowledged)");
        }
    }
}

enum End {
    Released,
    Aborted(String),
}

/// Carries out a step that ends the association (release, abort); `None` for any other.
async fn ending(conn: &mut PduConn, step: Step<'_>) -> Option<End> {
    match step {
        Step::Release => {
            let _ = conn.send(&Pdu::ReleaseRP).await;
            conn.close().await;
            Some(End::Released)
        }
        Step::PeerAborted => {
            conn.close().await;
            Some(End::Aborted("A-ABORT from the peer".into()))
        }
        Step::Abort { reason, why } => {
            conn.abort(reason).await;
            Some(End::Aborted(why))
        }
        _ => None,
    }
}

/// What the PDV loop decided, done after the PDU buffer is released.
enum Action {
    Send(Vec<u8>),
    Abort(u8, String),
}

struct Association<'a> {
    ctx: &'a ListenerContext,
    calling_ae: String,
    called_ae: String,
    /// The peer's source address (its key in the spool's peers, with the calling AE).
    address: String,
    /// Modality codes of the objects stored on this association (each recorded with the peer once).
    modalities: std::collections::BTreeSet<String>,
    peer_max_pdu: u32,
    /// The DIMSE state machine: what each PDU and PDV means; this task carries out its steps.
    acceptor: Acceptor,
    /// The object whose data set is being received.
    receiving: Option<ingest::Object>,
    stored: u64,
    carried: Carried,
    /// Workflow services on this association.
    session: Session,
    /// A workflow request's data set being received in memory.
    small: Option<Small>,
}

/// What an association stored, for its `study_received` event (codes and sizes only).
#[derive(Default)]
struct Carried {
    bytes: u64,
    sop_classes: std::collections::BTreeSet<String>,
    modality: Option<String>,
    first: Option<Instant>,
}

impl Association<'_> {
    /// A stored object's modality code: kept with the peer the first time the peer sends it,
    /// and then announced to the fleet with the modalities known so far. Codes only: a value
    /// that is not a modality code is not recorded.
    fn peer_modality(&mut self, modality: Option<&str>) {
        let Some(code) = modality
            .map(str::trim)
            .filter(|c| crate::events::is_modality_code(c))
        else {
            return;
        };
        if self.modalities.contains(code) || self.modalities.len() >= crate::events::MAX_MODALITIES
        {
            return;
        }
        self.modalities.insert(code.to_string());
        match self.ctx.spool.record_peer_modality(
            &self.calling_ae,
            &self.address,
            code,
            crate::events::MAX_MODALITIES,
        ) {
            Ok(Some(rec)) => self.ctx.events.peer_modalities(&rec),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not record the modality of the calling AE"),
        }
    }

    /// An object was committed on this association: its share of the `study_received` event
    /// and of the peer's modalities.
    fn carry(&mut self, rec: &ObjectRecord, started: Instant) {
        self.stored += 1;
        self.carried.bytes += rec.size;
        self.carried.first.get_or_insert(started);
        if self.carried.sop_classes.len() < crate::events::MAX_SOP_CLASSES {
            self.carried.sop_classes.insert(rec.sop_class_uid.clone());
        }
        if self.carried.modality.is_none() {
            self.carried.modality = rec.summary.modality.clone();
        }
        self.peer_modality(rec.summary.modality.as_deref());
    }

    async fn run(&mut self, conn: &mut PduConn) -> End {
        loop {
            let mut actions = Vec::new();
            // A storage commitment report or a worklist response may be due while the peer
            // is silent.
            let between_operations = self.acceptor.between_operations();
            match self
                .session
                .wait(conn, self.ctx.idle_secs, between_operations)
                .await
            {
                Ok(None) => {}
                Ok(Some((ctx_id, cmd, data))) => {
                    let bytes = self.message(ctx_id, &cmd, data.as_deref());
                    if let Err(e) = conn.send_raw(&bytes).await {
                        return End::Aborted(e.to_string());
                    }
                    continue;
                }
                Err(ConnError::Timeout(s)) => {
                    if let Some(end) = ending(conn, self.acceptor.on_idle(s)).await {
                        return end;
                    }
                    continue;
                }
                Err(e) => return End::Aborted(e.to_string()),
            }
            let step = match conn.read(self.ctx.idle_secs).await {
                Ok(Incoming::PData(pdvs)) => {
                    for pdv in pdvs {
                        let step = self.acceptor.on_pdv(&pdv);
                        if !self.carry_out(step, &mut actions).await {
                            break;
                        }
                    }
                    None
                }
                Ok(Incoming::Other(pdu)) => Some(self.acceptor.on_pdu(&pdu)),
                Err(ConnError::Timeout(s)) => Some(self.acceptor.on_idle(s)),
                Err(ConnError::Framing(e)) => Some(self.acceptor.on_framing_error(&e)),
                Err(e) => return End::Aborted(e.to_string()),
            };
            if let Some(step) = step {
                if let Some(end) = ending(conn, step).await {
                    return end;
                }
            }
            for action in actions {
                match action {
                    Action::Send(bytes) => {
                        if let Err(e) = conn.send_raw(&bytes).await {
                            return End::Aborted(e.to_string());
                        }
                    }
                    Action::Abort(reason, why) => {
                        conn.abort(reason).await;
                        return End::Aborted(why);
                    }
                }
            }
        }
    }

    fn response(&self, context_id: u8, cmd: &CommandSet) -> Action {
        Action::Send(self.message(context_id, cmd, None))
    }

    fn message(&self, context_id: u8, cmd: &CommandSet, data: Option<&[u8]>) -> Vec<u8> {
        let mut bytes = encode_command_pdus(context_id, &cmd.encode(), self.peer_max_pdu);
        if let Some(d) = data {
            bytes.extend_from_slice(&encode_dataset_pdus(context_id, d, self.peer_max_pdu));
        }
        bytes
    }

    /// Carries out one step of the acceptor (file writes at once, sends after the PDU buffer
    /// is released); `false` once the association is to be aborted.
    async fn carry_out(&mut self, step: Step<'_>, actions: &mut Vec<Action>) -> bool {
        match step {
            Step::Nothing | Step::Release | Step::PeerAborted => {}
            Step::Echo {
                context_id,
                response,
            } => {
                self.ctx.metrics.echoes.fetch_add(1, Ordering::Relaxed);
                actions.push(self.response(context_id, &response));
            }
            Step::Respond {
                context_id,
                response,
            } => actions.push(self.response(context_id, &response)),
            Step::Drained {
                context_id,
                response,
            } => {
                if let Some(code) = response.status() {
                    self.ctx.metrics.store_failed(code);
                }
                actions.push(self.response(context_id, &response));
            }
            Step::BeginObject { context, request } => {
                self.receiving = Some(ingest::begin(self.ctx, &self.calling_ae, &context, request));
            }
            Step::Write { data, last } => {
                if let Some(r) = self.receiving.as_mut() {
                    r.write(self.ctx, data);
                }
                if last {
                    if let Some(r) = self.receiving.take() {
                        let context_id = r.context_id;
                        let origin = ingest::Origin {
                            calling_ae: &self.calling_ae,
                            called_ae: &self.called_ae,
                        };
                        let finished = ingest::finish(self.ctx, &origin, r).await;
                        if let Some(rec) = &finished.stored {
                            self.carry(rec, finished.started);
                        }
                        actions.push(self.response(context_id, &finished.response));
                    }
                }
            }
            Step::Service { context, command } => {
                self.workflow_request(&context, &command, actions);
            }
            Step::ServiceData { data, last } => {
                if let Some(small) = self.small.as_mut() {
                    Session::push(small, data);
                }
                if last {
                    if let Some(small) = self.small.take() {
                        let (calling, called) = (self.calling_ae.clone(), self.called_ae.clone());
                        for (ctx_id, cmd, data) in
                            self.session.finish(small, &calling, &called).await
                        {
                            actions.push(Action::Send(self.message(ctx_id, &cmd, data.as_deref())));
                        }
                    }
                }
            }
            Step::ToSession { command } => {
                let f = command.command_field();
                if f == field::C_CANCEL_RQ {
                    self.session.cancel(&command);
                } else if !self.session.on_response(&command) {
                    tracing::info!(command_field = format!("0x{f:04X}"), calling_ae = %self.calling_ae, "unexpected DIMSE response ignored");
                }
            }
            Step::Ignored { command_field: f } => {
                tracing::info!(command_field = format!("0x{f:04X}"), calling_ae = %self.calling_ae, "unexpected DIMSE response ignored");
            }
            Step::Abort { reason, why } => {
                actions.push(Action::Abort(reason, why));
                return false;
            }
        }
        true
    }

    /// Hands a request to the workflow services; refused if none serves it.
    fn workflow_request(
        &mut self,
        context: &AcceptedContext,
        cmd: &CommandSet,
        actions: &mut Vec<Action>,
    ) {
        let now = match self
            .session
            .start(context.id, &context.transfer_syntax, cmd)
        {
            None => {
                tracing::info!(command_field = format!("0x{:04X}", cmd.command_field()), calling_ae = %self.calling_ae, "unsupported DIMSE command refused");
                self.acceptor.unsupported(context.id, cmd)
            }
            Some(Ok(small)) => {
                self.small = Some(small);
                None
            }
            Some(Err(rsp)) => self.acceptor.answer(context.id, cmd, rsp),
        };
        if let Some(rsp) = now {
            actions.push(self.response(context.id, &rsp));
        }
    }
}
