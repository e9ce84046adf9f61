//! What happens to one received object, from its C-STORE-RQ to its C-STORE-RSP: [`begin`]
//! checks the request and opens a place in the spool (`Spool::begin`: the next record of a
//! segment, or a file of its own) starting with the Part 10 meta header (or decides to drain the
//! data and refuse), [`Object::write`] writes each data fragment there as it arrives (memory: the
//! fragment, borrowed from the PDU buffer, and the first 64 KiB kept for the scan), and [`finish`]
//! runs after the last fragment: verdict (`medgate_dicom::store`, pure) → rules → durable spool
//! commit → fan-out to the forwarders and the workflow services. The response it returns is sent
//! only after all of that.

use crate::listener::ListenerContext;
use medgate_dicom::command::{CommandSet, status};
use medgate_dicom::negotiate::AcceptedContext;
use medgate_dicom::part10::{self, FileMeta};
use medgate_dicom::store::{self, Refusal, StoreRequest};
use medgate_spool::{Admission, ObjectRecord, TempObject};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// How many bytes of each dataset are kept in memory for the header scan.
const SCAN_HEAD: usize = 64 * 1024;
/// Where a message's data set goes.
#[derive(Debug)]
enum Sink {
    File {
        temp: TempObject,
        dataset_len: u64,
        head: Vec<u8>,
    },
    /// Data are read and dropped; this response goes out after the last fragment.
    Drain(CommandSet),
}

/// An object whose data set is being received: on its way to the spool, or drained before a
/// refusal.
#[derive(Debug)]
pub struct Object {
    request: StoreRequest,
    /// Presentation context of the message (its response goes there).
    pub context_id: u8,
    transfer_syntax: String,
    started: Instant,
    sink: Sink,
}

/// Who sent an object (recorded with it).
#[derive(Debug)]
pub struct Origin<'a> {
    /// Calling AE title.
    pub calling_ae: &'a str,
    /// Called AE title.
    pub called_ae: &'a str,
}

/// The outcome of [`finish`]: the response, and the record if the object was committed.
#[derive(Debug)]
pub struct Finished {
    /// The C-STORE-RSP (or the refusal prepared when the data were drained).
    pub response: CommandSet,
    /// The committed record (its response is a success).
    pub stored: Option<ObjectRecord>,
    /// When its command arrived.
    pub started: Instant,
}

impl Object {
    /// Writes one data fragment (in place: no thread hand-off per fragment). A write error
    /// turns the object into a drain answered `A700`.
    pub fn write(&mut self, ctx: &ListenerContext, data: &[u8]) {
        let Sink::File {
            temp,
            dataset_len,
            head,
        } = &mut self.sink
        else {
            return;
        };
        if head.len() < SCAN_HEAD {
            let take = (SCAN_HEAD - head.len()).min(data.len());
            head.extend_from_slice(&data[..take]);
        }
        match std::io::Write::write_all(temp, data) {
            Ok(()) => {
                *dataset_len += data.len() as u64;
            }
            Err(e) => {
                let full = matches!(
                    e.raw_os_error(),
                    Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
                );
                tracing::error!(error = %e, disk_full = full, "writing to the spool failed");
                if !full {
                    ctx.spool_ok.store(false, Ordering::Relaxed);
                }
                let rsp = self.request.response(
                    status::OUT_OF_RESOURCES,
                    Some("spool write failed; retry later"),
                );
                if let Sink::File { temp, .. } = std::mem::replace(&mut self.sink, Sink::Drain(rsp))
                {
                    ctx.spool.discard(temp);
                }
            }
        }
    }

    /// The association ended before the last fragment: its bytes go.
    pub fn discard(self, ctx: &ListenerContext) {
        if let Sink::File { temp, .. } = self.sink {
            ctx.spool.discard(temp);
        }
    }
}

/// A C-STORE-RQ the acceptor found acceptable on `pc` (`medgate_dicom::acceptor`): the object
/// to receive, into a temp file or drained before a refusal (spool full, temp file not created).
pub fn begin(
    ctx: &ListenerContext,
    calling_ae: &str,
    pc: &AcceptedContext,
    request: StoreRequest,
) -> Object {
    let transfer_syntax = pc.transfer_syntax.clone();
    let object = |request: StoreRequest, sink: Sink| Object {
        request,
        context_id: pc.id,
        transfer_syntax: transfer_syntax.clone(),
        started: Instant::now(),
        sink,
    };
    let drain = |request: StoreRequest, refusal: Refusal| {
        let rsp = request.refusal(&refusal);
        object(request, Sink::Drain(rsp))
    };
    if let Admission::Full(pct) = ctx.spool.admission() {
        tracing::warn!(
            used_percent = pct,
            calling_ae,
            "spool above its high watermark: refusing with A700"
        );
        let refusal = Refusal {
            status: status::OUT_OF_RESOURCES,
            comment: format!("spool {pct:.1}% full; retry later"),
        };
        return drain(request, refusal);
    }
    let meta = part10::encode_meta(&FileMeta {
        sop_class_uid: request.sop_class.clone(),
        sop_instance_uid: request.sop_instance.clone(),
        transfer_syntax: transfer_syntax.clone(),
        source_ae: Some(calling_ae.to_string()),
    });
    let opened = ctx
        .spool
        .begin()
        .map_err(|e| e.to_string())
        .and_then(|mut temp| {
            std::io::Write::write_all(&mut temp, &meta)
                .map(|()| temp)
                .map_err(|e| format!("writing the file meta: {e}"))
        });
    match opened {
        Ok(temp) => object(
            request,
            Sink::File {
                temp,
                dataset_len: 0,
                head: Vec::new(),
            },
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot open a place in the spool");
            let refusal = Refusal {
                status: status::OUT_OF_RESOURCES,
                comment: "cannot create a spool file; retry later".into(),
            };
            drain(request, refusal)
        }
    }
}

/// The last fragment arrived: verdict, rules, durable commit, fan-out — and the response that
/// says so (a success only once `Spool::commit` returned).
pub async fn finish(ctx: &ListenerContext, origin: &Origin<'_>, object: Object) -> Finished {
    let Object {
        request,
        context_id: _,
        transfer_syntax,
        started,
        sink,
    } = object;
    let done = |response: CommandSet, stored: Option<ObjectRecord>| Finished {
        response,
        stored,
        started,
    };
    let (temp, dataset_len, head) = match sink {
        Sink::Drain(rsp) => {
            if let Some(code) = rsp.status() {
                ctx.metrics.store_failed(code);
            }
            return done(rsp, None);
        }
        Sink::File {
            temp,
            dataset_len,
            head,
        } => (temp, dataset_len, head),
    };

    // Is it a data set at all, and the one the command announced?
    let whole = dataset_len <= SCAN_HEAD as u64;
    let summary = match store::check_dataset(&request, &head, &transfer_syntax, whole) {
        Ok(s) => s,
        Err(refusal) => {
            ctx.spool.discard(temp);
            ctx.metrics.store_failed(refusal.status);
            tracing::warn!(calling_ae = %origin.calling_ae, reason = %refusal.comment, "refused a data set");
            return done(request.refusal(&refusal), None);
        }
    };

    // Durable: the record's header and fdatasync (or fsync, rename, directory fsync for a file
    // of its own), then the index — one blocking hop.
    let sync_started = Instant::now();
    let record = ObjectRecord::incoming(
        &request.sop_class,
        &request.sop_instance,
        &transfer_syntax,
        origin.calling_ae,
        origin.called_ae,
        summary,
    );
    let (spool, rules) = (ctx.spool.clone(), ctx.rules.clone());
    let committed =
        tokio::task::spawn_blocking(move || crate::rules::commit(&rules, &spool, temp, record))
            .await;
    let failed = || {
        ctx.metrics.store_failed(status::OUT_OF_RESOURCES);
        request.response(
            status::OUT_OF_RESOURCES,
            Some("could not store durably; retry later"),
        )
    };
    match committed {
        Ok(Ok(rec)) => {
            ctx.metrics.fsync_latency.observe(sync_started.elapsed());
            ctx.metrics.objects_received.fetch_add(1, Ordering::Relaxed);
            ctx.metrics
                .bytes_received
                .fetch_add(rec.size, Ordering::Relaxed);
            ctx.spool_ok.store(true, Ordering::Relaxed);
            ctx.workflow.on_stored(&rec);
            tracing::debug!(id = rec.id, size = rec.size, calling_ae = %origin.calling_ae, elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "object stored");
            ctx.forward.enqueue_routed(&rec);
            done(request.response(status::SUCCESS, None), Some(rec))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "committing to the spool failed; refusing the object");
            if !e.is_disk_full() {
                ctx.spool_ok.store(false, Ordering::Relaxed);
            }
            done(failed(), None)
        }
        Err(e) => {
            tracing::error!(error = %e, "spool commit task failed");
            done(failed(), None)
        }
    }
}
