//! Configuration schema versions: which keys an appliance of a given version understands, so
//! the fleet can refuse a desired document an older appliance would refuse (or misread) after
//! an update of the fleet but not yet of the device.
//!
//! A key is a dotted path with `[]` for the elements of an array of tables
//! (`destination[].tls.ca`). Keys are only ever added: a version knows every key of the versions
//! before it. The values under `rules.coerce[].set`, `fill`, `map` and `when.tags` are element
//! keywords, not configuration keys, and are not listed.

/// The configuration schema version this crate (and the appliance built with it) understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Every fleet-owned key of schema version 1 (tables included).
const V1: &[&str] = &[
    "appliance",
    "appliance.name",
    "listener",
    "listener.ae_title",
    "listener.bind",
    "listener.tls_bind",
    "listener.max_associations",
    "listener.max_pdu_bytes",
    "listener.artim_timeout_secs",
    "listener.idle_timeout_secs",
    "listener.allowed_called_ae_titles",
    "listener.allowed_calling_ae_titles",
    "listener.allowed_networks",
    "listener.private_sop_classes",
    "listener.transfer_syntaxes",
    "listener.tls",
    "listener.tls.certificate",
    "listener.tls.private_key",
    "listener.tls.client_ca",
    "spool",
    "spool.high_watermark_percent",
    "spool.low_watermark_percent",
    "spool.max_bytes",
    "spool.retention_hours",
    "spool.segment_mib",
    "spool.warm_mib",
    "forward",
    "forward.initial_backoff_ms",
    "forward.max_backoff_secs",
    "destination",
    "destination[].name",
    "destination[].kind",
    "destination[].address",
    "destination[].called_ae_title",
    "destination[].calling_ae_title",
    "destination[].url",
    "destination[].parallel",
    "destination[].timeout_secs",
    "destination[].username",
    "destination[].password_file",
    "destination[].bearer_token_file",
    "destination[].tls",
    "destination[].tls.ca",
    "destination[].tls.certificate",
    "destination[].tls.private_key",
    "destination[].tls.server_name",
    "rules",
    "rules.version",
    "rules.coerce",
    "rules.coerce[].name",
    "rules.coerce[].when",
    "rules.coerce[].when.modality",
    "rules.coerce[].when.calling_ae",
    "rules.coerce[].when.called_ae",
    "rules.coerce[].when.sop_class",
    "rules.coerce[].when.tags",
    "rules.coerce[].set",
    "rules.coerce[].fill",
    "rules.coerce[].map",
    "rules.route",
    "rules.route[].name",
    "rules.route[].when",
    "rules.route[].when.modality",
    "rules.route[].when.calling_ae",
    "rules.route[].when.called_ae",
    "rules.route[].when.sop_class",
    "rules.route[].when.tags",
    "rules.route[].to",
    "rules.default_route",
    "commitment",
    "commitment.poll_interval_secs",
    "commitment.give_up_after_hours",
    "commitment.timeout_secs",
    "commitment.retry_secs",
    "commitment.requester",
    "commitment.requester[].ae_title",
    "commitment.requester[].address",
    "commitment.requester[].called_ae_title",
    "worklist",
    "worklist.upstream",
    "worklist.called_ae_title",
    "worklist.calling_ae_title",
    "worklist.timeout_secs",
    "worklist.cache_ttl_secs",
    "worklist.cache_max_age_hours",
    "worklist.max_entries",
    "qc",
    "qc.complete_after_secs",
    "qc.keep_days",
    "qc.station",
    "qc.station[].ae_title",
    "qc.station[].modalities",
];

/// Keys whose values are maps of element keywords (not walked).
const OPAQUE: &[&str] = &[
    "rules.coerce[].set",
    "rules.coerce[].fill",
    "rules.coerce[].map",
    "rules.coerce[].when.tags",
    "rules.route[].when.tags",
];

/// The keys known to schema `version`, or `None` for a version this crate does not know
/// (0, or one from before versions were reported — see [`keys_not_known`]).
/// Keys are added per version: `(since, key)`; today every key is from version 1.
pub fn known_keys(version: u32) -> Option<Vec<&'static str>> {
    if version == 0 {
        return None;
    }
    // A version newer than ours knows at least our keys (keys are only ever added).
    Some(V1.to_vec())
}

/// The keys of `doc` (a desired document without box-local keys) that an appliance of schema
/// `version` does not know, as paths with their indices (`destination[1].foo`); a version
/// unknown to the fleet is an `Err` saying so.
pub fn keys_not_known(
    doc: &serde_json::Map<String, serde_json::Value>,
    version: u32,
) -> Result<Vec<String>, String> {
    let known = known_keys(version).ok_or_else(|| {
        format!(
            "configuration schema version {version} is not one this fleet knows (1..={SCHEMA_VERSION})"
        )
    })?;
    let mut out = Vec::new();
    walk(doc, "", "", &known, &mut out);
    Ok(out)
}

fn walk(
    table: &serde_json::Map<String, serde_json::Value>,
    pattern: &str,
    path: &str,
    known: &[&str],
    out: &mut Vec<String>,
) {
    for (k, v) in table {
        let (pat, p) = if pattern.is_empty() {
            (k.clone(), k.clone())
        } else {
            (format!("{pattern}.{k}"), format!("{path}.{k}"))
        };
        if !known.contains(&pat.as_str()) {
            out.push(p);
            continue;
        }
        if OPAQUE.contains(&pat.as_str()) {
            continue;
        }
        match v {
            serde_json::Value::Object(t) => walk(t, &pat, &p, known, out),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let serde_json::Value::Object(t) = item {
                        walk(t, &format!("{pat}[]"), &format!("{p}[{i}]"), known, out);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn every_key_of_version_1_is_known_to_version_1_and_newer() {
        let d = doc(json!({
            "appliance": {"name": "x"},
            "listener": {"ae_title": "M", "bind": "0.0.0.0:104", "tls": {"certificate": "/c"}},
            "destination": [{"name": "a", "kind": "dimse", "tls": {"ca": "/ca"}}],
            "rules": {"coerce": [{"name": "n", "set": {"AnyKeyword": "v"}, "when": {"tags": {"X": "y"}}}]},
            "qc": {"station": [{"ae_title": "CT", "modalities": ["CT"]}]},
        }));
        assert_eq!(keys_not_known(&d, 1), Ok(vec![]));
        assert_eq!(keys_not_known(&d, SCHEMA_VERSION + 1), Ok(vec![]));
    }

    #[test]
    fn unknown_keys_are_named_with_their_index() {
        let d = doc(json!({
            "listener": {"ae_title": "M", "bind": "0.0.0.0:104", "new_knob": 1},
            "destination": [{"name": "a"}, {"name": "b", "compression": "zstd"}],
            "telepathy": {},
        }));
        assert_eq!(
            keys_not_known(&d, 1),
            Ok(vec![
                "destination[1].compression".to_string(),
                "listener.new_knob".to_string(),
                "telepathy".to_string(),
            ])
        );
        let e = keys_not_known(&d, 0).expect_err("unknown version");
        assert!(e.contains("schema version 0"), "{e}");
    }
}
