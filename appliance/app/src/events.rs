//! Events for the fleet: what capture and forwarding tell the outside world, reduced to counts,
//! states, sizes, timings, AE titles and codes. Never a name, an ID, a date of birth, an
//! accession number or a UID of a patient's object: the contract's checked types could not
//! carry them anyway, and nothing here tries.
//!
//! Capture never waits on this: an event is handed to the sink (the reporter's durable outbox,
//! a local append) and the caller goes on. Without a fleet the sink is absent and every call is
//! a no-op.

use medgate_contract::{
    AeTitle, Crossing, EventBody, Flow, Modality, Peer, QuarantineReason, Refusal, SopClassUid,
    Token, Watermark,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// SOP classes listed per peer or per study in a message: bounded, so that every message stays
/// far below the contract's payload limit (an association may propose a hundred contexts).
pub const MAX_SOP_CLASSES: usize = 32;

/// Where events go (the reporter's outbox).
pub type Sink = Arc<dyn Fn(EventBody) + Send + Sync>;

/// Objects of one study confirmed by one destination, folded into one `study_forwarded` event
/// once the study has been quiet for a while.
#[derive(Debug)]
struct Tally {
    modality: Option<String>,
    objects: u64,
    bytes: u64,
    latency_ms: u64,
    attempts: u32,
    last: Instant,
}

/// The appliance's event source. Cheap to call from any task.
#[derive(Default)]
pub struct Events {
    sink: OnceLock<Sink>,
    /// (destination, study) → tally. The study UID stays in memory, here only.
    forwarded: Mutex<HashMap<(String, String), Tally>>,
    /// Peers (calling AE, address, accepted) already announced since the start.
    peers: Mutex<HashSet<(String, String, bool)>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("connected", &self.sink.get().is_some())
            .finish_non_exhaustive()
    }
}

fn ae(s: &str) -> Option<AeTitle> {
    AeTitle::new(s).ok()
}

fn modality(s: Option<&str>) -> Option<Modality> {
    s.and_then(|m| Modality::new(m.trim()).ok())
}

fn token(s: &str) -> Option<Token> {
    Token::new(s).ok()
}

impl Events {
    /// Events go to `sink` from now on (once; later calls are ignored).
    pub fn connect(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    /// Whether a sink is connected.
    pub fn enabled(&self) -> bool {
        self.sink.get().is_some()
    }

    fn emit(&self, body: EventBody) {
        if let Some(sink) = self.sink.get() {
            sink(body);
        }
    }

    /// An association stored objects: one `study_received` event for what it carried.
    #[allow(clippy::too_many_arguments)]
    pub fn study_received(
        &self,
        calling_ae: &str,
        called_ae: &str,
        modality_code: Option<&str>,
        sop_classes: &BTreeSet<String>,
        objects: u64,
        bytes: u64,
        duration: Duration,
    ) {
        if !self.enabled() || objects == 0 {
            return;
        }
        let (Some(calling), Some(called)) = (ae(calling_ae), ae(called_ae)) else {
            return;
        };
        self.emit(EventBody::StudyReceived {
            calling_ae: calling,
            called_ae: called,
            modality: modality(modality_code),
            sop_classes: sop_classes
                .iter()
                .filter_map(|c| SopClassUid::new(c.as_str()).ok())
                .collect(),
            received: Flow { objects, bytes },
            duration_ms: duration.as_millis() as u64,
        });
    }

    /// A destination confirmed an object; folded per study (see [`Events::flush_forwarded`]).
    pub fn object_forwarded(
        &self,
        destination: &str,
        study: Option<&str>,
        modality_code: Option<&str>,
        bytes: u64,
        latency: Duration,
        attempts: u32,
    ) {
        if !self.enabled() {
            return;
        }
        let key = (
            destination.to_string(),
            study.unwrap_or_default().to_string(),
        );
        let mut map = self.forwarded.lock().unwrap_or_else(|p| p.into_inner());
        let t = map.entry(key).or_insert_with(|| Tally {
            modality: modality_code.map(str::to_string),
            objects: 0,
            bytes: 0,
            latency_ms: 0,
            attempts: 0,
            last: Instant::now(),
        });
        t.objects += 1;
        t.bytes += bytes;
        t.latency_ms = t.latency_ms.max(latency.as_millis() as u64);
        t.attempts = t.attempts.max(attempts);
        t.last = Instant::now();
    }

    /// Emits `study_forwarded` for every (destination, study) quiet for `quiet` (all if zero).
    pub fn flush_forwarded(&self, quiet: Duration) {
        let done: Vec<((String, String), Tally)> = {
            let mut map = self.forwarded.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<(String, String)> = map
                .iter()
                .filter(|(_, t)| t.last.elapsed() >= quiet)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| map.remove(&k).map(|t| (k, t)))
                .collect()
        };
        for ((destination, _study), t) in done {
            let Some(destination) = token(&destination) else {
                continue;
            };
            self.emit(EventBody::StudyForwarded {
                destination,
                modality: modality(t.modality.as_deref()),
                forwarded: Flow {
                    objects: t.objects,
                    bytes: t.bytes,
                },
                latency_ms: t.latency_ms,
                attempts: t.attempts,
            });
        }
    }

    /// An object went to quarantine.
    pub fn object_quarantined(
        &self,
        reason: QuarantineReason,
        calling_ae: &str,
        sop_class: &str,
        destination: &str,
        bytes: u64,
    ) {
        self.emit(EventBody::ObjectQuarantined {
            reason,
            calling_ae: ae(calling_ae),
            sop_class: SopClassUid::new(sop_class).ok(),
            destination: token(destination),
            bytes,
        });
    }

    /// The spool's use crossed its high watermark.
    pub fn watermark_crossed(&self, above: bool, used_percent: f64) {
        self.emit(EventBody::DiskWatermarkCrossed {
            watermark: Watermark::High,
            crossing: if above {
                Crossing::Above
            } else {
                Crossing::Below
            },
            used_percent: used_percent.clamp(0.0, 100.0) as u8,
        });
    }

    /// A calling AE knocked: announced once per (AE, address, accepted) since the start, so the
    /// fleet's onboarding list follows without an event per association.
    #[allow(clippy::too_many_arguments)]
    pub fn peer_seen(
        &self,
        calling_ae: &str,
        called_ae: &str,
        ip: IpAddr,
        sop_classes: &[String],
        refusal: Option<Refusal>,
    ) {
        if !self.enabled() {
            return;
        }
        let accepted = refusal.is_none();
        let first = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((calling_ae.to_string(), ip.to_string(), accepted));
        if !first {
            return;
        }
        let (Some(calling), Some(called)) = (ae(calling_ae), ae(called_ae)) else {
            return;
        };
        self.emit(EventBody::PeerSeen(Peer {
            calling_ae: calling,
            called_ae: called,
            ip,
            // Each class once, although a modality offers it in several presentation contexts
            // (one per transfer syntax group).
            sop_classes: sop_classes
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<&str>>()
                .into_iter()
                .filter_map(|c| SopClassUid::new(c).ok())
                .take(MAX_SOP_CLASSES)
                .collect(),
            modalities: Vec::new(),
            accepted,
            refusal,
            associations: 1,
            last_seen_ms: medgate_contract::now_ms(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collecting() -> (Events, Arc<Mutex<Vec<EventBody>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let e = Events::default();
        let g = got.clone();
        e.connect(Arc::new(move |b| g.lock().expect("lock").push(b)));
        (e, got)
    }

    #[test]
    fn without_a_sink_nothing_is_kept() {
        let e = Events::default();
        e.object_forwarded("archive", Some("1.2.3"), Some("CT"), 10, Duration::ZERO, 1);
        assert!(e.forwarded.lock().expect("lock").is_empty());
    }

    #[test]
    fn forwarded_objects_fold_into_one_event_per_study_and_destination() {
        let (e, got) = collecting();
        for i in 0..3 {
            e.object_forwarded(
                "archive",
                Some("1.2.3"),
                Some("CT"),
                100,
                Duration::from_millis(10 * i),
                1 + i as u32,
            );
        }
        e.object_forwarded("archive", Some("1.2.4"), Some("US"), 7, Duration::ZERO, 1);
        e.flush_forwarded(Duration::from_secs(60));
        assert!(got.lock().expect("lock").is_empty(), "not quiet yet");
        e.flush_forwarded(Duration::ZERO);
        let got = got.lock().expect("lock");
        assert_eq!(got.len(), 2);
        let ct = got
            .iter()
            .find(|b| matches!(b, EventBody::StudyForwarded { forwarded, .. } if forwarded.objects == 3))
            .expect("the CT study");
        let EventBody::StudyForwarded {
            forwarded,
            latency_ms,
            attempts,
            modality,
            ..
        } = ct
        else {
            unreachable!()
        };
        assert_eq!(forwarded.bytes, 300);
        assert_eq!(*latency_ms, 20);
        assert_eq!(*attempts, 3);
        assert_eq!(modality.as_ref().map(|m| m.as_str()), Some("CT"));
    }

    #[test]
    fn a_peer_is_announced_once_per_state() {
        let (e, got) = collecting();
        let ip: IpAddr = "10.0.0.7".parse().expect("ip");
        // Offered in two presentation contexts: listed once.
        let classes = vec![
            "1.2.840.10008.5.1.4.1.1.2".to_string(),
            "1.2.840.10008.5.1.4.1.1.2".to_string(),
        ];
        e.peer_seen("CT1", "MEDGATE", ip, &classes, None);
        e.peer_seen("CT1", "MEDGATE", ip, &classes, None);
        e.peer_seen(
            "CT1",
            "MEDGATE",
            ip,
            &classes,
            Some(Refusal::CallingAeNotAllowed),
        );
        let got = got.lock().expect("lock");
        assert_eq!(got.len(), 2);
        let EventBody::PeerSeen(p) = &got[0] else {
            unreachable!()
        };
        assert_eq!(p.sop_classes.len(), 1);
    }

    #[test]
    fn values_that_are_not_codes_are_left_out() {
        let (e, got) = collecting();
        // A modality "code" that is free text, an SOP class that is a short number.
        let classes: BTreeSet<String> = ["12345".to_string()].into();
        e.study_received(
            "CT1",
            "MEDGATE",
            Some("Doe^John"),
            &classes,
            1,
            10,
            Duration::ZERO,
        );
        let got = got.lock().expect("lock");
        let EventBody::StudyReceived {
            modality,
            sop_classes,
            ..
        } = &got[0]
        else {
            unreachable!()
        };
        assert!(modality.is_none());
        assert!(sop_classes.is_empty());
    }
}
