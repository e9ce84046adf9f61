//! Modality Worklist (PS3.4 Annex K): C-FIND matching of worklist entries against a modality's
//! query (PS3.4 C.2.2.2: universal, single value, wildcard, range, list of UID and sequence
//! matching) and building the response with exactly the keys the query asked for. Used by the
//! appliance to answer from its cache when the RIS is unreachable. Pure.

use crate::command::{CommandSet, DATA_SET_ABSENT, DATA_SET_PRESENT, field, tags};
use crate::dataset::Dataset;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags as dt;

/// Modality Worklist Information Model – FIND.
pub const SOP_CLASS: &str = "1.2.840.10008.5.1.4.31";

/// Priority MEDIUM.
const PRIORITY_MEDIUM: u16 = 0;

/// Top-level keys asked of the upstream RIS besides the modality's own, so the cache can answer
/// later queries asking for other return keys.
const WIDE_KEYS: &[(Tag, VR)] = &[
    (dt::ACCESSION_NUMBER, VR::SH),
    (dt::REFERRING_PHYSICIAN_NAME, VR::PN),
    (dt::PATIENT_NAME, VR::PN),
    (dt::PATIENT_ID, VR::LO),
    (dt::PATIENT_BIRTH_DATE, VR::DA),
    (dt::PATIENT_SEX, VR::CS),
    (dt::PATIENT_WEIGHT, VR::DS),
    (dt::MEDICAL_ALERTS, VR::LO),
    (dt::ALLERGIES, VR::LO),
    (dt::PREGNANCY_STATUS, VR::US),
    (dt::STUDY_INSTANCE_UID, VR::UI),
    (dt::REQUESTING_PHYSICIAN, VR::PN),
    (dt::REQUESTED_PROCEDURE_DESCRIPTION, VR::LO),
    (dt::ADMISSION_ID, VR::LO),
    (dt::CURRENT_PATIENT_LOCATION, VR::LO),
    (dt::REQUESTED_PROCEDURE_ID, VR::SH),
    (dt::REQUESTED_PROCEDURE_PRIORITY, VR::SH),
];

/// Keys of the Scheduled Procedure Step Sequence item asked of the upstream RIS.
const WIDE_SPS_KEYS: &[(Tag, VR)] = &[
    (dt::MODALITY, VR::CS),
    (dt::SCHEDULED_STATION_AE_TITLE, VR::AE),
    (dt::SCHEDULED_PROCEDURE_STEP_START_DATE, VR::DA),
    (dt::SCHEDULED_PROCEDURE_STEP_START_TIME, VR::TM),
    (dt::SCHEDULED_PERFORMING_PHYSICIAN_NAME, VR::PN),
    (dt::SCHEDULED_PROCEDURE_STEP_DESCRIPTION, VR::LO),
    (dt::SCHEDULED_PROCEDURE_STEP_ID, VR::SH),
    (dt::SCHEDULED_STATION_NAME, VR::SH),
    (dt::SCHEDULED_PROCEDURE_STEP_LOCATION, VR::SH),
    (dt::PRE_MEDICATION, VR::LO),
    (dt::REQUESTED_CONTRAST_AGENT, VR::LO),
];

fn is_control(tag: Tag) -> bool {
    tag.element() == 0x0000 || tag.group() == 0x0002 || tag == dt::SPECIFIC_CHARACTER_SET
}

fn values(e: &DataElement<Dataset>) -> Vec<String> {
    match e.value() {
        Value::Primitive(p) => p
            .to_multi_str()
            .iter()
            .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// `*` any run, `?` one character.
fn wildcard(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

fn value_matches(vr: VR, query: &str, candidate: &str) -> bool {
    match vr {
        VR::DA | VR::TM | VR::DT => match query.split_once('-') {
            Some((lo, hi)) => {
                !candidate.is_empty()
                    && (lo.is_empty() || candidate >= lo)
                    && (hi.is_empty() || candidate <= hi || candidate.starts_with(hi))
            }
            None => candidate == query,
        },
        VR::UI => candidate == query,
        _ => {
            let fold = vr == VR::PN;
            let norm = |s: &str| -> Vec<char> {
                if fold {
                    s.to_uppercase().chars().collect()
                } else {
                    s.chars().collect()
                }
            };
            if query.contains(['*', '?']) {
                wildcard(&norm(query), &norm(candidate))
            } else {
                norm(query) == norm(candidate)
            }
        }
    }
}

fn is_universal(e: &DataElement<Dataset>) -> bool {
    match e.value() {
        Value::Sequence(s) => s.items().iter().all(|i| i.iter().all(is_universal)),
        _ => values(e).iter().all(|v| v.is_empty() || v == "*"),
    }
}

/// Whether `candidate` matches every matching key of `query`.
pub fn matches(query: &Dataset, candidate: &Dataset) -> bool {
    query.iter().all(|q| {
        let tag = q.header().tag;
        if is_control(tag) || is_universal(q) {
            return true;
        }
        let Some(c) = candidate.element_opt(tag).ok().flatten() else {
            return false;
        };
        match q.value() {
            Value::Sequence(s) => {
                let Some(item) = s.items().first() else {
                    return true;
                };
                c.items().unwrap_or(&[]).iter().any(|ci| matches(item, ci))
            }
            _ => {
                let qv = values(q);
                let cv = values(c);
                qv.iter()
                    .filter(|v| !v.is_empty())
                    .any(|qv| cv.iter().any(|cv| value_matches(q.vr(), qv, cv)))
            }
        }
    })
}

fn empty_element(tag: Tag, vr: VR) -> DataElement<Dataset> {
    if vr == VR::SQ {
        DataElement::new(tag, VR::SQ, DataSetSequence::from(Vec::<Dataset>::new()))
    } else {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    }
}

/// The query's return keys (and only those) filled from `candidate`, without checking that it
/// matches (for answers the RIS already matched).
pub fn project(query: &Dataset, candidate: &Dataset) -> Dataset {
    let mut out = Dataset::new_empty();
    if let Some(cs) = candidate
        .element_opt(dt::SPECIFIC_CHARACTER_SET)
        .ok()
        .flatten()
    {
        out.put(cs.clone());
    }
    for q in query.iter() {
        let tag = q.header().tag;
        if is_control(tag) {
            continue;
        }
        let c = candidate.element_opt(tag).ok().flatten();
        match (q.value(), c) {
            (Value::Sequence(s), Some(c)) => {
                let items: Vec<Dataset> = match s.items().first() {
                    // A sequence asked with an empty item or none: its items as they are.
                    None => c.items().unwrap_or(&[]).to_vec(),
                    Some(qi) => c
                        .items()
                        .unwrap_or(&[])
                        .iter()
                        .filter(|ci| matches(qi, ci))
                        .map(|ci| {
                            if qi.iter().next().is_none() {
                                ci.clone()
                            } else {
                                project(qi, ci)
                            }
                        })
                        .collect(),
                };
                out.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
            }
            (_, Some(c)) if c.vr() != VR::SQ => {
                out.put(c.clone());
            }
            _ => {
                out.put(empty_element(tag, q.vr()));
            }
        }
    }
    out
}

/// The response to `query` from a worklist entry: `None` if it does not match, else the
/// query's keys (and only those) with the entry's values.
pub fn respond(query: &Dataset, candidate: &Dataset) -> Option<Dataset> {
    matches(query, candidate).then(|| project(query, candidate))
}

/// The query sent upstream: the modality's matching keys, and every usual return key.
pub fn widen(query: &Dataset) -> Dataset {
    let mut out = query.clone();
    for (tag, vr) in WIDE_KEYS {
        if out.element_opt(*tag).ok().flatten().is_none() {
            out.put(empty_element(*tag, *vr));
        }
    }
    let mut item = query
        .element_opt(dt::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .and_then(|i| i.first().cloned())
        .unwrap_or_else(Dataset::new_empty);
    for (tag, vr) in WIDE_SPS_KEYS {
        if item.element_opt(*tag).ok().flatten().is_none() {
            item.put(empty_element(*tag, *vr));
        }
    }
    out.put(DataElement::new(
        dt::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![item]),
    ));
    out
}

fn first_string(ds: &Dataset, tag: Tag) -> String {
    crate::dataset::string(ds, tag).unwrap_or_default()
}

/// A stable identity of a worklist entry (one scheduled procedure step) for a cache.
pub fn entry_key(ds: &Dataset) -> String {
    let sps = crate::dataset::items(ds, dt::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
        .first()
        .map(|i| first_string(i, dt::SCHEDULED_PROCEDURE_STEP_ID))
        .unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{}",
        first_string(ds, dt::STUDY_INSTANCE_UID),
        first_string(ds, dt::ACCESSION_NUMBER),
        first_string(ds, dt::REQUESTED_PROCEDURE_ID),
        sps,
        first_string(ds, dt::PATIENT_ID)
    )
}

/// A C-FIND-RQ (the SCU side, to the RIS).
pub fn find_rq(message_id: u16) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, SOP_CLASS)
        .set_u16(tags::COMMAND_FIELD, field::C_FIND_RQ)
        .set_u16(tags::MESSAGE_ID, message_id)
        .set_u16(tags::PRIORITY, PRIORITY_MEDIUM)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
    c
}

/// A C-FIND-RSP; pending ones carry an identifier.
pub fn find_rsp(
    message_id: u16,
    status_code: u16,
    has_identifier: bool,
    comment: Option<&str>,
) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, SOP_CLASS)
        .set_u16(tags::COMMAND_FIELD, field::C_FIND_RSP)
        .set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id)
        .set_u16(
            tags::COMMAND_DATA_SET_TYPE,
            if has_identifier {
                DATA_SET_PRESENT
            } else {
                DATA_SET_ABSENT
            },
        )
        .set_u16(tags::STATUS, status_code);
    if let Some(comment) = comment {
        c.set_text(tags::ERROR_COMMENT, comment);
    }
    c
}

/// A C-CANCEL-RQ for `message_id` (the SCU side).
pub fn cancel_rq(message_id: u16) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_u16(tags::COMMAND_FIELD, field::C_CANCEL_RQ)
        .set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(tag: Tag, vr: VR, v: &str) -> DataElement<Dataset> {
        if v.is_empty() {
            empty_element(tag, vr)
        } else {
            DataElement::new(tag, vr, PrimitiveValue::from(v))
        }
    }

    fn sps(modality: &str, station: &[&str], date: &str) -> Dataset {
        let mut i = Dataset::new_empty();
        i.put(el(dt::MODALITY, VR::CS, modality));
        let station: Vec<String> = station.iter().map(|s| s.to_string()).collect();
        i.put(DataElement::new(
            dt::SCHEDULED_STATION_AE_TITLE,
            VR::AE,
            PrimitiveValue::Strs(station.into()),
        ));
        i.put(el(dt::SCHEDULED_PROCEDURE_STEP_START_DATE, VR::DA, date));
        i.put(el(dt::SCHEDULED_PROCEDURE_STEP_ID, VR::SH, "SPS1"));
        i
    }

    fn entry(name: &str, id: &str, item: Dataset) -> Dataset {
        let mut d = Dataset::new_empty();
        d.put(el(dt::PATIENT_NAME, VR::PN, name));
        d.put(el(dt::PATIENT_ID, VR::LO, id));
        d.put(el(dt::ACCESSION_NUMBER, VR::SH, "A1"));
        d.put(el(dt::STUDY_INSTANCE_UID, VR::UI, "1.2.3"));
        d.put(DataElement::new(
            dt::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
        d
    }

    fn query(name: &str, item: Dataset) -> Dataset {
        let mut q = Dataset::new_empty();
        q.put(el(dt::PATIENT_NAME, VR::PN, name));
        q.put(el(dt::PATIENT_ID, VR::LO, ""));
        q.put(DataElement::new(
            dt::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
        q
    }

    fn q_sps(modality: &str, station: &str, date: &str) -> Dataset {
        let mut i = Dataset::new_empty();
        i.put(el(dt::MODALITY, VR::CS, modality));
        i.put(el(dt::SCHEDULED_STATION_AE_TITLE, VR::AE, station));
        i.put(el(dt::SCHEDULED_PROCEDURE_STEP_START_DATE, VR::DA, date));
        i
    }

    #[test]
    fn wildcards() {
        let w = |p: &str, t: &str| {
            wildcard(
                &p.chars().collect::<Vec<_>>(),
                &t.chars().collect::<Vec<_>>(),
            )
        };
        assert!(w("VIV*", "VIVALDI^ANTONIO"));
        assert!(w("*ANTONIO", "VIVALDI^ANTONIO"));
        assert!(w("V?VALDI*", "VIVALDI^ANTONIO"));
        assert!(w("*", ""));
        assert!(!w("BACH*", "VIVALDI"));
        assert!(!w("V?", "VIV"));
    }

    #[test]
    fn matching_keys_of_k6() {
        let e = entry(
            "VIVALDI^ANTONIO",
            "AV35674",
            sps("MR", &["AA32", "AA33"], "19951015"),
        );
        // Universal: everything empty.
        assert!(matches(&query("", q_sps("", "", "")), &e));
        // Station AE against a multi-valued attribute.
        assert!(matches(&query("", q_sps("", "AA33", "")), &e));
        assert!(!matches(&query("", q_sps("", "AA34", "")), &e));
        // Modality.
        assert!(matches(&query("", q_sps("MR", "", "")), &e));
        assert!(!matches(&query("", q_sps("CT", "", "")), &e));
        // Date ranges, open and closed.
        assert!(matches(&query("", q_sps("", "", "19951001-19951031")), &e));
        assert!(matches(&query("", q_sps("", "", "19951015-")), &e));
        assert!(matches(&query("", q_sps("", "", "-19951015")), &e));
        assert!(!matches(&query("", q_sps("", "", "19951016-")), &e));
        assert!(matches(&query("", q_sps("", "", "19951015")), &e));
        // Person name wildcard, case-insensitive.
        assert!(matches(&query("viv*", q_sps("", "", "")), &e));
        assert!(!matches(&query("BACH*", q_sps("", "", "")), &e));
    }

    #[test]
    fn response_has_exactly_the_requested_keys() {
        let e = entry(
            "VIVALDI^ANTONIO",
            "AV35674",
            sps("MR", &["AA32"], "19951015"),
        );
        let q = query("VIV*", q_sps("MR", "", ""));
        let r = respond(&q, &e).expect("matches");
        let tags: Vec<Tag> = r.tags().collect();
        assert_eq!(
            tags,
            vec![
                dt::PATIENT_NAME,
                dt::PATIENT_ID,
                dt::SCHEDULED_PROCEDURE_STEP_SEQUENCE
            ]
        );
        assert_eq!(
            crate::dataset::string(&r, dt::PATIENT_ID).as_deref(),
            Some("AV35674")
        );
        let item = &crate::dataset::items(&r, dt::SCHEDULED_PROCEDURE_STEP_SEQUENCE)[0];
        let item_tags: Vec<Tag> = item.tags().collect();
        assert_eq!(
            item_tags,
            vec![
                dt::MODALITY,
                dt::SCHEDULED_STATION_AE_TITLE,
                dt::SCHEDULED_PROCEDURE_STEP_START_DATE
            ]
        );
        // Accession number was not asked for: not returned.
        assert!(r.element_opt(dt::ACCESSION_NUMBER).ok().flatten().is_none());
    }

    #[test]
    fn widened_query_keeps_the_matching_values() {
        let q = query("VIV*", q_sps("MR", "", ""));
        let w = widen(&q);
        assert_eq!(
            crate::dataset::string(&w, dt::PATIENT_NAME).as_deref(),
            Some("VIV*")
        );
        assert!(w.element_opt(dt::ACCESSION_NUMBER).ok().flatten().is_some());
        let item = &crate::dataset::items(&w, dt::SCHEDULED_PROCEDURE_STEP_SEQUENCE)[0];
        assert_eq!(
            crate::dataset::string(item, dt::MODALITY).as_deref(),
            Some("MR")
        );
        assert!(
            item.element_opt(dt::SCHEDULED_PROCEDURE_STEP_ID)
                .ok()
                .flatten()
                .is_some()
        );
        // The same entries match the widened query.
        let e = entry(
            "VIVALDI^ANTONIO",
            "AV35674",
            sps("MR", &["AA32"], "19951015"),
        );
        assert!(matches(&w, &e));
        assert_eq!(entry_key(&e), "1.2.3|A1||SPS1|AV35674");
    }
}
