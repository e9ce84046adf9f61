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
use medgate_spool::PeerRecord;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// SOP classes listed per peer or per study in a message: bounded, so that every message stays
/// far below the contract's payload limit (an association may propose a hundred contexts).
pub const MAX_SOP_CLASSES: usize = 32;

/// Modality codes kept and announced per peer (a modality sends one or two; the bound keeps a
/// message far below the payload limit whatever a peer sends).
pub const MAX_MODALITIES: usize = 16;

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
    /// Peers (calling AE, address) → what was last announced of them since the start.
    peers: Mutex<HashMap<(String, IpAddr), Peer>>,
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

/// Whether `s` is a modality code the contract carries (`CT`, `MR`, …; never free text).
pub fn is_modality_code(s: &str) -> bool {
    Modality::new(s).is_ok()
}

/// The code of a refusal as the spool keeps it (`calling_ae_not_allowed`, …).
pub fn refusal_code(r: Refusal) -> Option<String> {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

fn refusal_of_code(code: &str) -> Refusal {
    serde_json::from_value(serde_json::Value::String(code.to_owned())).unwrap_or(Refusal::Other)
}

/// Each class once (a modality offers it in several presentation contexts, one per transfer
/// syntax group), bounded.
fn sop_classes<'a>(classes: impl Iterator<Item = &'a str>) -> Vec<SopClassUid> {
    classes
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .filter_map(|c| SopClassUid::new(c).ok())
        .take(MAX_SOP_CLASSES)
        .collect()
}

/// A peer as the contract carries it, from its spool record: the SOP classes it ever offered,
/// the modalities of its stored objects, and its last association's outcome. `None` if its AE
/// titles or address are not valid values (nothing else would be carried).
pub fn peer_of_record(p: &PeerRecord) -> Option<Peer> {
    let called = p
        .last_called_ae
        .as_deref()
        .or_else(|| p.called_aes.iter().next().map(String::as_str))
        .unwrap_or("");
    // Records of older versions did not keep the last outcome: accepted if ever accepted.
    let accepted = p
        .last_accepted
        .unwrap_or(p.last_rejection.is_none() || p.accepted > 0);
    Some(Peer {
        calling_ae: ae(&p.calling_ae)?,
        called_ae: ae(called)?,
        ip: p.address.parse().ok()?,
        sop_classes: sop_classes(p.sop_classes.keys().map(String::as_str)),
        modalities: p
            .modalities
            .iter()
            .filter_map(|m| Modality::new(m.as_str()).ok())
            .take(MAX_MODALITIES)
            .collect(),
        accepted,
        refusal: if accepted {
            None
        } else {
            Some(
                p.last_refusal
                    .as_deref()
                    .map_or(Refusal::Other, refusal_of_code),
            )
        },
        associations: p.accepted + p.rejected,
        last_seen_ms: p.last_seen_ms,
    })
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
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
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
        t.latency_ms = t
            .latency_ms
            .max(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
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
            used_percent: percent_u8(used_percent),
        });
    }

    /// A calling AE knocked; `known` is its spool record after this knock (`None` if it could
    /// not be written). Announced when it is new since the start, or when its acceptance, its
    /// refusal reason or its modalities changed since the last announcement — so the fleet's
    /// onboarding list follows without an event per association.
    pub fn peer_seen(
        &self,
        calling_ae: &str,
        called_ae: &str,
        ip: IpAddr,
        offered: &[String],
        refusal: Option<Refusal>,
        known: Option<&PeerRecord>,
    ) {
        if !self.enabled() {
            return;
        }
        let (Some(calling), Some(called)) = (ae(calling_ae), ae(called_ae)) else {
            return;
        };
        let from_record = known.and_then(peer_of_record);
        let peer = Peer {
            calling_ae: calling,
            called_ae: called,
            ip,
            sop_classes: match &from_record {
                Some(p) => p.sop_classes.clone(),
                None => sop_classes(offered.iter().map(String::as_str)),
            },
            modalities: from_record
                .as_ref()
                .map(|p| p.modalities.clone())
                .unwrap_or_default(),
            accepted: refusal.is_none(),
            refusal,
            associations: from_record.as_ref().map_or(1, |p| p.associations),
            last_seen_ms: from_record
                .as_ref()
                .map_or_else(medgate_contract::now_ms, |p| p.last_seen_ms),
        };
        self.announce(peer, false);
    }

    /// A stored object brought a modality code new for this peer (`rec`: its spool record with
    /// the code added): the peer is announced again with the modalities known so far.
    pub fn peer_modalities(&self, rec: &PeerRecord) {
        if !self.enabled() {
            return;
        }
        if let Some(peer) = peer_of_record(rec) {
            self.announce(peer, true);
        }
    }

    /// Emits `peer` unless the same state was announced last (`modalities_only`: only when its
    /// modalities differ, the rest is kept from the last announcement).
    fn announce(&self, mut peer: Peer, modalities_only: bool) {
        let key = (peer.calling_ae.as_str().to_owned(), peer.ip);
        {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            match peers.get(&key) {
                Some(last) if modalities_only => {
                    if last.modalities == peer.modalities {
                        return;
                    }
                    peer = Peer {
                        modalities: peer.modalities,
                        associations: peer.associations.max(last.associations),
                        last_seen_ms: peer.last_seen_ms.max(last.last_seen_ms),
                        ..last.clone()
                    };
                }
                Some(last)
                    if last.accepted == peer.accepted
                        && last.refusal == peer.refusal
                        && last.modalities == peer.modalities =>
                {
                    return;
                }
                _ => {}
            }
            peers.insert(key, peer.clone());
        }
        self.emit(EventBody::PeerSeen(peer));
    }
}

/// A percentage as a whole number 0..=100.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a float in 0..=100 (or bytes ≤ the disk); `as` saturates and maps NaN to 0"
)]
fn percent_u8(p: f64) -> u8 {
    p.clamp(0.0, 100.0) as u8
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
                1 + u32::try_from(i).expect("a small loop"),
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
        e.peer_seen("CT1", "MEDGATE", ip, &classes, None, None);
        e.peer_seen("CT1", "MEDGATE", ip, &classes, None, None);
        let refused = Some(Refusal::CallingAeNotAllowed);
        e.peer_seen("CT1", "MEDGATE", ip, &classes, refused, None);
        e.peer_seen("CT1", "MEDGATE", ip, &classes, refused, None);
        // Another reason is another state; so is being accepted again.
        let wrong_called = Some(Refusal::CalledAeNotRecognized);
        e.peer_seen("CT1", "OTHER", ip, &classes, wrong_called, None);
        e.peer_seen("CT1", "MEDGATE", ip, &classes, None, None);
        let got = got.lock().expect("lock");
        let peers: Vec<&Peer> = got
            .iter()
            .filter_map(|b| match b {
                EventBody::PeerSeen(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(peers.len(), 4, "{peers:?}");
        assert_eq!(peers[0].sop_classes.len(), 1);
        assert_eq!(
            peers
                .iter()
                .map(|p| (p.accepted, p.refusal))
                .collect::<Vec<_>>(),
            [
                (true, None),
                (false, refused),
                (false, wrong_called),
                (true, None)
            ]
        );
        // The refusal reaches the wire as its code.
        let json = serde_json::to_value(EventBody::PeerSeen(peers[1].clone())).expect("json");
        assert_eq!(json["refusal"], "calling_ae_not_allowed", "{json}");
    }

    fn record(modalities: &[&str]) -> PeerRecord {
        PeerRecord {
            calling_ae: "CT1".into(),
            address: "10.0.0.7".into(),
            called_aes: ["MEDGATE".to_string()].into(),
            last_seen_ms: 5,
            accepted: 2,
            sop_classes: [("1.2.840.10008.5.1.4.1.1.2".to_string(), true)].into(),
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
            last_called_ae: Some("MEDGATE".into()),
            last_accepted: Some(true),
            ..PeerRecord::default()
        }
    }

    #[test]
    fn a_new_modality_announces_the_peer_again_with_the_modalities_so_far() {
        let (e, got) = collecting();
        let ip: IpAddr = "10.0.0.7".parse().expect("ip");
        let classes = vec!["1.2.840.10008.5.1.4.1.1.2".to_string()];
        e.peer_seen("CT1", "MEDGATE", ip, &classes, None, Some(&record(&[])));
        e.peer_modalities(&record(&["CT"]));
        e.peer_modalities(&record(&["CT"]));
        e.peer_modalities(&record(&["CT", "SR"]));
        // A later knock with the same state is not news.
        e.peer_seen(
            "CT1",
            "MEDGATE",
            ip,
            &classes,
            None,
            Some(&record(&["CT", "SR"])),
        );
        let got = got.lock().expect("lock");
        let modalities: Vec<Vec<&str>> = got
            .iter()
            .filter_map(|b| match b {
                EventBody::PeerSeen(p) => {
                    assert!(p.accepted && p.refusal.is_none());
                    Some(p.modalities.iter().map(|m| m.as_str()).collect())
                }
                _ => None,
            })
            .collect();
        assert_eq!(modalities, [vec![], vec!["CT"], vec!["CT", "SR"]]);
    }

    #[test]
    fn a_record_becomes_a_peer_with_its_last_outcome() {
        let mut r = record(&["CT", "not a code"]);
        let p = peer_of_record(&r).expect("peer");
        assert_eq!(p.modalities.len(), 1, "free text is not carried");
        assert!(p.accepted && p.refusal.is_none());
        assert_eq!(p.associations, 2);
        r.last_accepted = Some(false);
        r.last_refusal = refusal_code(Refusal::NetworkNotAllowed);
        r.rejected = 1;
        let p = peer_of_record(&r).expect("peer");
        assert_eq!(
            (p.accepted, p.refusal),
            (false, Some(Refusal::NetworkNotAllowed))
        );
        assert_eq!(p.associations, 3);
        // A reason this version does not know, or none recorded: still refused, reason other.
        r.last_refusal = Some("newer_reason".into());
        assert_eq!(
            peer_of_record(&r).and_then(|p| p.refusal),
            Some(Refusal::Other)
        );
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
