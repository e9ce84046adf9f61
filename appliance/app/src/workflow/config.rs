//! Configuration sections of the workflow services: `medgate-config`'s (the fleet validates them
//! with the same code), re-exported under their old path. Every section is optional: a service
//! is off when its section is absent.

pub use medgate_config::workflow::{
    CommitmentSection, QcSection, QcStation, RequesterSection, WorklistSection,
};

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const EXAMPLE: &str = include_str!("../../medgate-appliance.example.toml");

    /// The example with the commented-out sections of `## ---- [name]` blocks switched on.
    pub(crate) fn example_with(sections: &[&str]) -> String {
        let mut out = String::new();
        let mut on = false;
        for line in EXAMPLE.lines() {
            if let Some(rest) = line.strip_prefix("## ---- [") {
                on = sections.iter().any(|s| rest.starts_with(&format!("{s}]")));
            }
            match line.strip_prefix("# ") {
                Some(l) if on => out.push_str(l),
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn documented_commitment_section_is_valid() {
        let cfg = Config::parse(&example_with(&["commitment"])).expect("parses");
        assert_eq!(cfg.validate(), vec![]);
        let c = cfg.commitment.expect("section on");
        assert_eq!(c.requesters[0].ae_title, "CT_ROOM1");
        assert_eq!(c.poll_interval_secs, 2);
    }

    #[test]
    fn documented_worklist_section_is_valid() {
        let cfg = Config::parse(&example_with(&["worklist"])).expect("parses");
        assert_eq!(cfg.validate(), vec![]);
        let w = cfg.worklist.expect("section on");
        assert_eq!(w.called_ae_title, "RIS_MWL");
        assert_eq!(w.cache_ttl_secs, 3600);
    }

    #[test]
    fn worklist_problems_name_their_key() {
        let text = example_with(&["worklist"])
            .replace(
                "upstream = \"ris.hospital.local:104\"",
                "upstream = \"ris\"",
            )
            .replace("cache_max_age_hours = 72", "cache_max_age_hours = 0");
        let cfg = Config::parse(&text).expect("parses");
        let problems: Vec<String> = cfg.validate().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            vec![
                "worklist.upstream: \"ris\" must be host:port (e.g. \"pacs.example.org:104\")",
                "worklist.cache_max_age_hours: 0 must be between 1 and 720 (30 days)",
            ]
        );
        let missing = example_with(&["worklist"]).replace("called_ae_title = \"RIS_MWL\"", "");
        let e = Config::parse(&missing).expect_err("required key");
        assert!(e.contains("missing field `called_ae_title`"), "{e}");
    }

    #[test]
    fn documented_qc_section_is_valid() {
        let cfg = Config::parse(&example_with(&["qc"])).expect("parses");
        assert_eq!(cfg.validate(), vec![]);
        let q = cfg.qc.expect("section on");
        assert_eq!(q.stations[0].modalities, vec!["CT", "SR", "PR"]);
        assert_eq!(q.complete_after_secs, 900);
        // All three together, too.
        let all = Config::parse(&example_with(&["commitment", "worklist", "qc"])).expect("parses");
        assert_eq!(all.validate(), vec![]);
    }

    #[test]
    fn qc_problems_name_their_key() {
        let text = example_with(&["qc"])
            .replace(
                "modalities = [\"CT\", \"SR\", \"PR\"]",
                "modalities = [\"CT\", \"ct scan\"]",
            )
            .replace("keep_days = 30", "keep_days = 0");
        let cfg = Config::parse(&text).expect("parses");
        let problems: Vec<String> = cfg.validate().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            vec![
                "qc.keep_days: 0 must be between 1 and 3650",
                "qc.station[0].modalities[1]: \"ct scan\" is not a modality code (upper-case letters, digits, _; e.g. \"CT\")",
            ]
        );
    }

    #[test]
    fn commitment_problems_name_their_key() {
        let text = example_with(&["commitment"])
            .replace("poll_interval_secs = 2", "poll_interval_secs = 0")
            .replace("address = \"10.20.0.15:104\"", "address = \"10.20.0.15\"")
            .replace(
                "\nae_title = \"CT_ROOM1\"",
                "\nae_title = \"A_FAR_TOO_LONG_AE_TITLE\"",
            );
        let cfg = Config::parse(&text).expect("parses");
        let problems: Vec<String> = cfg.validate().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            vec![
                "commitment.poll_interval_secs: 0 must be between 1 and 3600".to_string(),
                problems[1].clone(),
                "commitment.requester[0].address: \"10.20.0.15\" must be host:port (e.g. \"pacs.example.org:104\")".to_string(),
            ]
        );
        assert!(
            problems[1].starts_with("commitment.requester[0].ae_title: "),
            "{problems:?}"
        );
    }
}
