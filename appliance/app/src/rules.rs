//! Coercion and routing rules at ingest: the shell around `medgate-rules`.
//!
//! Rules are applied **before the object is committed to the spool**, on its temp file: when a
//! rule changes something, a rewritten copy (only the changed top-level elements differ) is
//! written next to it and that copy is what `Spool::commit_to` fsyncs, renames and indexes —
//! with the destinations the routing rules chose. The modality hears "success" only after that,
//! as without rules. Why at ingest and not at forward time: what the spool holds is exactly what
//! every destination receives, a restart or a re-index cannot apply different rules to an
//! object already acknowledged, and a coercion that cannot be done (deflated object, disk full
//! while copying) is decided while the modality still waits: a failed copy is an `A700` it
//! retries, a refused coercion stores the object unchanged and flags it. Nothing acknowledged
//! depends on a later step that could fail.
//!
//! Logs and the status API carry rule names, element tags, counts and the rules hash — never
//! element values (those are shown only by the local `rules dry-run`).

use crate::config::{Config, Problem};
use medgate_rules::{Context, Inspection, Routing, Rules, inspect, tag, write_coerced};
use medgate_spool::{ObjectLocation, ObjectRecord, Spool, SpoolError, TempObject};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The audit list of rule changes, one JSON object per line, under `appliance.data_dir`.
pub const AUDIT_FILE: &str = "rules-audit.jsonl";

/// `[rules]` problems, with their exact keys.
pub fn validate(cfg: &Config) -> Vec<Problem> {
    let names: Vec<String> = cfg.destinations.iter().map(|d| d.name.clone()).collect();
    medgate_rules::validate(&cfg.rules, &names)
        .into_iter()
        .map(|p| Problem {
            key: p.key,
            message: p.message,
        })
        .collect()
}

/// The rules in use and what they did, for `/api/status` (no element values).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RulesStatus {
    /// `sha256:<hex>` of the `[rules]` section.
    pub hash: String,
    /// The operator's label (`rules.version`).
    pub version: Option<String>,
    /// Coercion rules configured.
    pub coerce_rules: usize,
    /// Routes configured.
    pub routes: usize,
    /// Objects rewritten by coercion since start.
    pub objects_coerced: u64,
    /// Objects stored unchanged because they could not be coerced (deflated, malformed).
    pub coercion_refused: u64,
    /// Objects that went only to the default route since start.
    pub routed_default: u64,
}

/// One entry of the audit list: the rules changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// "start-up" or "reload".
    pub event: String,
    /// The new rules hash.
    pub hash: String,
    /// The new label.
    pub version: Option<String>,
    /// The hash before (None: first rules seen on this appliance).
    pub previous_hash: Option<String>,
    /// Coercion rules.
    pub coerce_rules: usize,
    /// Routes.
    pub routes: usize,
}

/// The rules at run time, with their counters.
#[derive(Debug)]
pub struct RulesRuntime {
    rules: RwLock<Arc<Rules>>,
    data_dir: PathBuf,
    coerced: AtomicU64,
    refused: AtomicU64,
    routed_default: AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn compile(cfg: &Config) -> Result<Rules, String> {
    let names: Vec<String> = cfg.destinations.iter().map(|d| d.name.clone()).collect();
    Rules::new(cfg.rules.clone(), &names).map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

impl RulesRuntime {
    /// Compiles the configuration's rules (already validated by `Config::validate`).
    pub fn new(cfg: &Config) -> Result<RulesRuntime, String> {
        Ok(RulesRuntime {
            rules: RwLock::new(Arc::new(compile(cfg)?)),
            data_dir: cfg.appliance.data_dir.clone(),
            coerced: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            routed_default: AtomicU64::new(0),
        })
    }

    /// The rules in use.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the rules in the audit list if they differ from the last ones recorded
    /// (`event`: why they are in force: "start-up", "reload", "fleet configuration v7"…), and logs
    /// it. Returns the new entry, if any.
    pub fn audit(&self, event: &str) -> std::io::Result<Option<AuditEntry>> {
        let rules = self.rules();
        let previous = audit_list(&self.data_dir)?.pop();
        if previous.as_ref().is_some_and(|p| p.hash == rules.hash()) {
            tracing::info!(rules_hash = %rules.hash(), rules_version = ?rules.version(), coerce_rules = rules.coerce_count(), routes = rules.route_count(), "rules unchanged");
            return Ok(None);
        }
        let entry = AuditEntry {
            at_ms: now_ms(),
            event: event.to_string(),
            hash: rules.hash().to_string(),
            version: rules.version().map(str::to_string),
            previous_hash: previous.map(|p| p.hash),
            coerce_rules: rules.coerce_count(),
            routes: rules.route_count(),
        };
        let path = self.data_dir.join(AUDIT_FILE);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_all()?;
        if entry.previous_hash.is_some() {
            tracing::warn!(event, rules_hash = %entry.hash, rules_version = ?entry.version, previous_hash = ?entry.previous_hash, coerce_rules = entry.coerce_rules, routes = entry.routes, audit = %path.display(), "rules changed");
        } else {
            tracing::info!(event, rules_hash = %entry.hash, rules_version = ?entry.version, coerce_rules = entry.coerce_rules, routes = entry.routes, audit = %path.display(), "rules recorded for the first time");
        }
        Ok(Some(entry))
    }

    /// Replaces the rules (a configuration reload) and audits the change.
    pub fn reload(&self, cfg: &Config) -> Result<Option<AuditEntry>, String> {
        let new = compile(cfg)?;
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        self.audit("reload")
            .map_err(|e| format!("rules reloaded but the audit list could not be written: {e}"))
    }

    /// For `/api/status`.
    pub fn status(&self) -> RulesStatus {
        let r = self.rules();
        RulesStatus {
            hash: r.hash().to_string(),
            version: r.version().map(str::to_string),
            coerce_rules: r.coerce_count(),
            routes: r.route_count(),
            objects_coerced: self.coerced.load(Ordering::Relaxed),
            coercion_refused: self.refused.load(Ordering::Relaxed),
            routed_default: self.routed_default.load(Ordering::Relaxed),
        }
    }

    /// Prometheus text: objects coerced, refused, sent to the default route.
    pub fn render_metrics(&self) -> String {
        let mut o = String::new();
        for (name, help, v) in [
            (
                "medgate_rules_objects_coerced_total",
                "Objects rewritten by coercion rules before they were stored.",
                &self.coerced,
            ),
            (
                "medgate_rules_coercion_refused_total",
                "Objects stored unchanged because they could not be coerced (deflated, malformed).",
                &self.refused,
            ),
            (
                "medgate_rules_routed_default_total",
                "Objects no route matched, sent to rules.default_route.",
                &self.routed_default,
            ),
        ] {
            crate::metrics::write_metric(&mut o, name, "counter", help, v.load(Ordering::Relaxed));
        }
        o
    }

    /// Routes objects the spool re-indexes from their files at start-up (their coercion was
    /// applied before they were stored).
    pub fn router(self: &Arc<Self>) -> Option<medgate_spool::Router> {
        if !self.rules().has_routing() {
            return None;
        }
        let me = self.clone();
        Some(Arc::new(move |loc: &ObjectLocation, rec: &ObjectRecord| {
            let rules = me.rules();
            let f = loc.open().ok()?;
            let len = loc.len;
            let ctx = Context {
                calling_ae: &rec.calling_ae,
                called_ae: &rec.called_ae,
                sop_class: &rec.sop_class_uid,
            };
            match inspect(&rules, f, len, &ctx).ok()?.routing {
                Routing::All => None,
                Routing::To { destinations, .. } => Some(destinations),
            }
        }))
    }

    fn note(&self, id: u64, rec: &ObjectRecord, insp: &Inspection) {
        if let Some(why) = &insp.refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id, calling_ae = %rec.calling_ae, transfer_syntax = %insp.transfer_syntax, reason = %why, "coercion refused: object stored and forwarded unchanged");
        }
        for why in &insp.skipped {
            tracing::warn!(id, calling_ae = %rec.calling_ae, reason = %why, "coercion of an element skipped");
        }
        if let Routing::To { routes, .. } = &insp.routing {
            if routes.is_empty() {
                self.routed_default.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The ingest hook (blocking): applies the rules to a fully written temp file and commits the
/// object — rewritten if a rule changed it — for the destinations its routes chose. An error
/// means nothing was committed: the caller refuses the object (the modality retries) and
/// removes `temp`'s file.
pub fn commit(
    rt: &RulesRuntime,
    spool: &Spool,
    temp: TempObject,
    mut rec: ObjectRecord,
) -> Result<ObjectRecord, SpoolError> {
    let rules = rt.rules();
    if !rules.has_coercion() && !rules.has_routing() {
        return spool.commit(temp, rec);
    }
    let ctx = Context {
        calling_ae: &rec.calling_ae,
        called_ae: &rec.called_ae,
        sop_class: &rec.sop_class_uid,
    };
    let Some(loc) = temp.location() else {
        // Its bytes are gone (a write failed): the commit says so.
        return spool.commit(temp, rec);
    };
    let read_err = |e| io_err("read for the rules", loc.path(), e);
    let src = loc.open().map_err(read_err)?;
    let insp = match inspect(&rules, src, loc.len, &ctx) {
        Ok(i) => i,
        Err(medgate_rules::InspectError::Io(e)) => return Err(read_err(e)),
        Err(e) => {
            // We wrote the file meta ourselves; if it does not parse, keep the object as it is.
            rt.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id = temp.id, error = %e, "rules not applied: object stored and forwarded unchanged");
            return spool.commit(temp, rec);
        }
    };
    rt.note(temp.id, &rec, &insp);
    let destinations: Option<BTreeSet<String>> = match &insp.routing {
        Routing::All => None,
        Routing::To { destinations, .. } => Some(destinations.clone()),
    };
    if let Routing::To { routes, .. } = &insp.routing {
        tracing::debug!(id = temp.id, routes = ?routes, destinations = ?destinations, "object routed");
    }
    if !insp.rewrites() {
        return spool.commit_to(temp, rec, destinations.as_ref());
    }
    // The rewritten copy is an object of its own (same id); the bytes as received go.
    let mut coerced = spool.begin_copy(&temp)?;
    let written = loc
        .open()
        .and_then(|src| write_coerced(src, &mut coerced, &insp));
    if let Err(e) = written {
        return Err(io_err("write the coerced object", loc.path(), e));
    }
    spool.discard(temp);
    if let Some(c) = insp
        .changes
        .iter()
        .rev()
        .find(|c| c.tag == medgate_rules::engine::MODALITY)
    {
        rec.summary.modality = Some(c.new.clone());
    }
    let id = coerced.id;
    let rec = spool.commit_to(coerced, rec, destinations.as_ref())?;
    rt.coerced.fetch_add(1, Ordering::Relaxed);
    let rule_names: BTreeSet<&str> = insp.changes.iter().map(|c| c.rule.as_str()).collect();
    let elements: BTreeSet<String> = insp.edits.iter().map(|e| tag::describe(e.tag)).collect();
    tracing::info!(id, calling_ae = %rec.calling_ae, rules = ?rule_names, elements = ?elements, "object coerced");
    Ok(rec)
}

/// The audit list (oldest first). Empty when none was written yet.
pub fn audit_list(data_dir: &Path) -> std::io::Result<Vec<AuditEntry>> {
    let path = data_dir.join(AUDIT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The local dry run: what the rules of `cfg` do to each file (values shown: console only).
/// `calling_ae` stands for the sender (default: the file's Source AE Title). With `out_dir`,
/// the coerced copies are written there. Returns the report and whether every file was read.
pub fn dry_run(
    cfg: &Config,
    files: &[PathBuf],
    calling_ae: Option<&str>,
    out_dir: Option<&Path>,
) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let rules = match compile(cfg) {
        Ok(r) => r,
        Err(e) => return (format!("the rules are not valid: {e}\n"), false),
    };
    out.push_str(&format!(
        "rules {} ({}): {} coercion rule(s), {} route(s)\n",
        rules.hash(),
        rules.version().unwrap_or("no version label"),
        rules.coerce_count(),
        rules.route_count()
    ));
    let all: Vec<String> = cfg.destinations.iter().map(|d| d.name.clone()).collect();
    for path in files {
        let shown = path.display();
        let opened = File::open(path).and_then(|f| {
            let len = f.metadata()?.len();
            Ok((f, len))
        });
        let (f, len) = match opened {
            Ok(x) => x,
            Err(e) => {
                out.push_str(&format!("{shown}: cannot read: {e}\n"));
                ok = false;
                continue;
            }
        };
        let ctx = Context {
            calling_ae: calling_ae.unwrap_or(""),
            called_ae: &cfg.listener.ae_title,
            sop_class: "",
        };
        let insp = match inspect(&rules, f, len, &ctx) {
            Ok(i) => i,
            Err(e) => {
                out.push_str(&format!("{shown}: {e}\n"));
                ok = false;
                continue;
            }
        };
        out.push_str(&format!(
            "{shown}: calling AE {}, transfer syntax {}\n",
            calling_ae
                .or(insp.source_ae.as_deref())
                .unwrap_or("(unknown: use --calling-ae)"),
            insp.transfer_syntax
        ));
        if let Some(why) = &insp.refused {
            out.push_str(&format!("  not coerced: {why}\n"));
        }
        for c in &insp.changes {
            out.push_str(&format!("  {}\n", c.describe()));
        }
        for s in &insp.skipped {
            out.push_str(&format!("  skipped: {s}\n"));
        }
        if insp.changes.is_empty() && insp.refused.is_none() {
            out.push_str("  no change\n");
        }
        let to = insp.routing.select(&all);
        let to: Vec<&str> = all
            .iter()
            .filter(|d| to.contains(*d))
            .map(String::as_str)
            .collect();
        match &insp.routing {
            Routing::All => out.push_str(&format!(
                "  to: {} (no routing rules: every destination)\n",
                to.join(", ")
            )),
            Routing::To { routes, .. } if routes.is_empty() => {
                out.push_str(&format!("  to: {} (default_route)\n", to.join(", ")))
            }
            Routing::To { routes, .. } => out.push_str(&format!(
                "  to: {} (routes: {})\n",
                to.join(", "),
                routes.join(", ")
            )),
        }
        if let Some(dir) = out_dir {
            let name = path.file_name().unwrap_or_default();
            let target = dir.join(name);
            let written = File::open(path).and_then(|src| {
                let mut dst = File::create(&target)?;
                write_coerced(src, &mut dst, &insp)
            });
            match written {
                Ok(_) => out.push_str(&format!("  written to {}\n", target.display())),
                Err(e) => {
                    out.push_str(&format!("  cannot write {}: {e}\n", target.display()));
                    ok = false;
                }
            }
        }
    }
    (out, ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_dicom::part10::{FileMeta, encode_meta};
    use medgate_spool::SpoolConfig;

    const EXAMPLE: &str = include_str!("../medgate-appliance.example.toml");
    const DOCS: &str = include_str!("../../../docs/rules.md");

    fn config(data_dir: &Path, destinations: &[&str], rules: &str) -> Config {
        let mut text = format!(
            "[appliance]\nname = \"t\"\ndata_dir = \"{}\"\n\n[listener]\nae_title = \"MEDGATE\"\nbind = \"127.0.0.1:11112\"\n\n",
            data_dir.display()
        );
        for d in destinations {
            text.push_str(&format!(
                "[[destination]]\nname = \"{d}\"\nkind = \"dimse\"\naddress = \"127.0.0.1:104\"\ncalled_ae_title = \"ARCHIVE\"\n\n"
            ));
        }
        text.push_str(rules);
        Config::parse(&text).expect("parses")
    }

    #[test]
    fn documented_examples_are_valid() {
        let mut blocks = 0;
        for block in DOCS.split("```toml\n").skip(1) {
            let toml = block.split("```").next().unwrap_or_default();
            let cfg = config(
                Path::new("/var/lib/medgate"),
                &["regional-archive", "radiology-pacs", "us-archive"],
                toml,
            );
            assert_eq!(cfg.validate(), vec![], "docs/rules.md block:\n{toml}");
            assert!(RulesRuntime::new(&cfg).is_ok());
            blocks += 1;
        }
        assert_eq!(blocks, 4);
    }

    #[test]
    fn example_configuration_rules_are_valid() {
        let (head, rules) = EXAMPLE
            .split_once("## ---- [rules]")
            .expect("the example has a [rules] part");
        let uncommented: String = rules
            .lines()
            .skip(1)
            .map(|l| {
                let l = l.strip_prefix('#').unwrap_or(l);
                let l = l.strip_prefix(' ').unwrap_or(l);
                format!("{l}\n")
            })
            .collect();
        let web = "[[destination]]\nname = \"regional-archive-web\"\nkind = \"stow\"\nurl = \"https://archive.example/dicom-web\"\n\n";
        let text = format!("{head}{web}{uncommented}");
        let cfg = Config::parse(&text).expect("uncommented example parses");
        assert_eq!(cfg.validate(), vec![]);
        let r = RulesRuntime::new(&cfg).expect("compiles").rules();
        assert_eq!((r.coerce_count(), r.route_count()), (2, 1));
        assert_eq!(r.version(), Some("2026-11-28 hospital A"));
    }

    #[test]
    fn config_check_names_rule_keys() {
        let cfg = config(
            Path::new("/var/lib/medgate"),
            &["archive"],
            "[rules]\n[[rules.coerce]]\nname = \"x\"\nset = { SOPInstanceUID = \"1.2\" }\n[[rules.route]]\nname = \"r\"\nto = [\"pacs\"]\n",
        );
        let problems: Vec<(String, String)> = cfg
            .validate()
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "rules.coerce[0].set.SOPInstanceUID",
                "rules.route[0].to[0]",
                "rules.default_route"
            ],
            "{problems:?}"
        );
        assert!(problems[1].1.contains("known: archive"));
        // Unknown keys are errors too.
        let text = "[appliance]\nname = \"t\"\ndata_dir = \"/x\"\n[listener]\nae_title = \"M\"\nbind = \"127.0.0.1:1\"\n[rules]\ncoerse = []\n";
        let e = Config::parse(text).expect_err("unknown key");
        assert!(e.contains("coerse"), "{e}");
    }

    fn dataset(modality: &str, institution: &str) -> Vec<u8> {
        let mut d = Vec::new();
        let mut el = |g: u16, e: u16, vr: &[u8; 2], v: &str| {
            let mut v = v.as_bytes().to_vec();
            if v.len() % 2 == 1 {
                v.push(if vr == b"UI" { 0 } else { b' ' });
            }
            d.extend_from_slice(&g.to_le_bytes());
            d.extend_from_slice(&e.to_le_bytes());
            d.extend_from_slice(vr);
            d.extend_from_slice(&medgate_dicom::length::len16(v.len()).to_le_bytes());
            d.extend_from_slice(&v);
        };
        el(0x0008, 0x0016, b"UI", "1.2.840.10008.5.1.4.1.1.7");
        el(0x0008, 0x0018, b"UI", "1.2.3.4");
        el(0x0008, 0x0060, b"CS", modality);
        el(0x0008, 0x0080, b"LO", institution);
        el(0x0010, 0x0020, b"LO", "PID1");
        el(0x0028, 0x0010, b"US", "\u{0}\u{2}");
        d
    }

    fn receive(spool: &Spool, data: &[u8]) -> (TempObject, ObjectRecord) {
        let mut temp = spool.begin().expect("begin");
        let mut bytes = encode_meta(&FileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
            sop_instance_uid: "1.2.3.4".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            source_ae: Some("CT_A".into()),
        });
        bytes.extend_from_slice(data);
        temp.write_all(&bytes).expect("write");
        let rec = ObjectRecord::incoming(
            "1.2.840.10008.5.1.4.1.1.7",
            "1.2.3.4",
            "1.2.840.10008.1.2.1",
            "CT_A",
            "MEDGATE",
            Default::default(),
        );
        (temp, rec)
    }

    const RULES: &str = "[rules]\ndefault_route = [\"a\"]\n[[rules.coerce]]\nname = \"issuer\"\nwhen = { calling_ae = [\"CT_A\"] }\nset = { IssuerOfPatientID = \"HOSP-A\" }\nfill = { InstitutionName = \"Hospital A\" }\n[[rules.route]]\nname = \"ct\"\nwhen = { modality = [\"CT\"] }\nto = [\"b\"]\n";

    #[test]
    fn ingest_hook_commits_the_coerced_object_for_its_routes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), &["a", "b"], RULES);
        let rt = RulesRuntime::new(&cfg).expect("rules");
        let (spool, _) = Spool::open(SpoolConfig {
            data_dir: dir.path().to_path_buf(),
            destinations: vec!["a".into(), "b".into()],
            high_watermark_percent: 99.9,
            low_watermark_percent: 99.0,
            max_bytes: 0,
            retention: std::time::Duration::from_secs(3600),
            segment_bytes: medgate_spool::DEFAULT_SEGMENT_BYTES,
            warm_bytes: 0,
        })
        .expect("spool");

        let (temp, rec) = receive(&spool, &dataset("CT", ""));
        let rec = commit(&rt, &spool, temp, rec).expect("commit");
        assert_eq!(rec.pending, ["b".to_string()].into());
        let mut stored = Vec::new();
        spool
            .locate(&rec)
            .open()
            .and_then(|mut r| std::io::Read::read_to_end(&mut r, &mut stored))
            .expect("stored");
        assert_eq!(stored.len() as u64, rec.size);
        let (_, off) = medgate_dicom::part10::parse_meta(&stored).expect("meta");
        let mut expected = dataset("CT", "Hospital A");
        // IssuerOfPatientID inserted after PatientID.
        let at = expected.len() - 10;
        let mut issuer = vec![0x10, 0x00, 0x21, 0x00, b'L', b'O', 6, 0];
        issuer.extend_from_slice(b"HOSP-A");
        expected.splice(at..at, issuer);
        assert_eq!(&stored[off..], &expected[..]);

        // Not a CT, institution already there: only the issuer, default route.
        let (temp, rec) = receive(&spool, &dataset("US", "Other"));
        let rec = commit(&rt, &spool, temp, rec).expect("commit");
        assert_eq!(rec.pending, ["a".to_string()].into());
        let s = rt.status();
        assert_eq!(
            (s.objects_coerced, s.routed_default, s.coercion_refused),
            (2, 1, 0)
        );
        assert!(
            std::fs::read_dir(dir.path().join("spool/tmp"))
                .expect("tmp")
                .next()
                .is_none()
        );
    }

    #[test]
    fn rule_changes_are_audited_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), &["a", "b"], RULES);
        let rt = RulesRuntime::new(&cfg).expect("rules");
        let first = rt.audit("start-up").expect("audit").expect("first rules");
        assert_eq!(first.previous_hash, None);
        assert_eq!(rt.audit("start-up").expect("audit"), None);
        let changed = config(dir.path(), &["a", "b"], &RULES.replace("HOSP-A", "HOSP-B"));
        let again = rt.reload(&changed).expect("reload").expect("changed");
        assert_eq!(again.previous_hash.as_deref(), Some(first.hash.as_str()));
        assert_ne!(again.hash, first.hash);
        let list = audit_list(dir.path()).expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].event, "reload");
    }
}
