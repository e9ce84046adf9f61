//! What must never leave the appliance except to the archive, and the check that a text (a
//! message, an e-mail, a bundle) holds none of it.

use medgate_sim::studies::{GeneratedFile, Patient};

/// Every value of the studies that identifies a patient or their objects: names (whole and each
/// part of three letters or more), IDs, birth dates, accession numbers, study, series and SOP
/// instance UIDs.
pub fn forbidden(
    patients: &[Patient],
    accessions: &[String],
    files: &[GeneratedFile],
) -> Vec<String> {
    let mut f = Vec::new();
    for p in patients {
        f.push(p.name.clone());
        f.extend(
            p.name
                .split('^')
                .filter(|s| s.len() >= 3)
                .map(str::to_string),
        );
        f.push(p.id.clone());
        f.push(p.birth_date.clone());
    }
    f.extend(accessions.iter().cloned());
    for file in files {
        f.push(file.sop_instance_uid.clone());
        f.push(file.study_instance_uid.clone());
        f.push(file.series_instance_uid.clone());
    }
    f
}

/// Panics, naming `what` and the value, if `text` holds any of `forbidden`.
pub fn assert_clean(what: &str, text: &str, forbidden: &[String]) {
    for f in forbidden {
        assert!(
            !text.contains(f.as_str()),
            "{what} contains patient data {f:?}:\n{text}"
        );
    }
}
