//! alerts (issue 13 part 3): `[alerts]` of `medgate-fleet.toml` — thresholds, each with a "for"
//! duration, and the channels (`[alerts.email]`, `[alerts.webhook]`). Every key has a default:
//! without the section the rules run and the console shows alerts; nothing is sent until a
//! channel is configured.

use std::path::PathBuf;

use serde::Deserialize;

/// `[alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// Evaluate the rules (default true).
    pub enabled: bool,
    /// Seconds between evaluations.
    pub evaluate_secs: u64,
    /// `device_offline`: raised after the device has been offline this long.
    pub offline_for_secs: u64,
    /// `archive_unreachable`: a destination backing off (its last contact failed) this long.
    pub archive_unreachable_for_secs: u64,
    /// `oldest_queued`: the oldest object waiting for forwarding is older than this (warning).
    pub oldest_queued_warning_secs: u64,
    /// … older than this (critical).
    pub oldest_queued_critical_secs: u64,
    /// … and has been for this long.
    pub oldest_queued_for_secs: u64,
    /// `disk_use`: the data filesystem is this full, percent (warning).
    pub disk_warning_percent: u64,
    /// … this full (critical).
    pub disk_critical_percent: u64,
    /// … for this long.
    pub disk_for_secs: u64,
    /// `quarantine_growing`: this many objects went to quarantine …
    pub quarantine_growth_objects: u64,
    /// … within this window.
    pub quarantine_window_secs: u64,
    /// `certificate_expiring`: the device certificate ends within this many days (warning) …
    pub certificate_warning_days: u64,
    /// … within this many (critical).
    pub certificate_critical_days: u64,
    /// `update_failed`: the last install failed, rolled back or was refused, this long.
    pub update_failed_for_secs: u64,
    /// Delivery attempts per notification before it is given up (logged and counted).
    pub max_attempts: u32,
    /// E-mail by SMTP with STARTTLS.
    pub email: Option<EmailSection>,
    /// An HTTPS webhook (JSON POST).
    pub webhook: Option<WebhookSection>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            evaluate_secs: 5,
            offline_for_secs: 120,
            archive_unreachable_for_secs: 120,
            oldest_queued_warning_secs: 900,
            oldest_queued_critical_secs: 3600,
            oldest_queued_for_secs: 60,
            disk_warning_percent: 85,
            disk_critical_percent: 95,
            disk_for_secs: 60,
            quarantine_growth_objects: 10,
            quarantine_window_secs: 3600,
            certificate_warning_days: 30,
            certificate_critical_days: 7,
            update_failed_for_secs: 0,
            max_attempts: 12,
            email: None,
            webhook: None,
        }
    }
}

/// `[alerts.email]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSection {
    /// The mail server, `host:port` (587: submission with STARTTLS). STARTTLS is required: a
    /// server that does not offer it gets nothing.
    pub server: String,
    /// The name its certificate must carry; default: the host of `server`.
    pub server_name: Option<String>,
    /// PEM CA certificates to trust for the server; default: the system's.
    pub ca: Option<PathBuf>,
    /// The sender (`MAIL FROM` and `From:`).
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// AUTH PLAIN user (after STARTTLS only), with `password_file`.
    pub username: Option<String>,
    /// One line with the password; owner-only.
    pub password_file: Option<PathBuf>,
}

/// `[alerts.webhook]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Where the JSON is POSTed: https:// (plain http only to a loopback address).
    pub url: String,
    /// One line with a shared secret: the body is signed, `X-Medgate-Signature: sha256=<hex
    /// HMAC-SHA256>`. Default: unsigned.
    pub secret_file: Option<PathBuf>,
    /// PEM CA certificates to trust for the receiver, besides the system's.
    pub ca: Option<PathBuf>,
}

fn host_port_ok(a: &str) -> bool {
    a.rsplit_once(':')
        .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0))
}

/// An address `local@domain` without spaces, angle brackets or line breaks (it goes into SMTP
/// commands and headers).
pub fn mailbox_ok(a: &str) -> bool {
    a.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && !d.contains('@') && (d.contains('.') || d == "localhost")
    }) && !a
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
        && a.len() <= 254
}

impl AlertsSection {
    /// Every problem, one line each, naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.evaluate_secs == 0 || self.evaluate_secs > 3600 {
            p.push("alerts.evaluate_secs: give 1 to 3600".into());
        }
        for (key, v) in [
            ("alerts.disk_warning_percent", self.disk_warning_percent),
            ("alerts.disk_critical_percent", self.disk_critical_percent),
        ] {
            if v == 0 || v > 100 {
                p.push(format!("{key}: give 1 to 100"));
            }
        }
        for (key, w, c) in [
            (
                "alerts.disk_critical_percent",
                self.disk_warning_percent,
                self.disk_critical_percent,
            ),
            (
                "alerts.oldest_queued_critical_secs",
                self.oldest_queued_warning_secs,
                self.oldest_queued_critical_secs,
            ),
        ] {
            if c < w {
                p.push(format!(
                    "{key}: below its warning threshold ({w}); give at least {w}"
                ));
            }
        }
        if self.certificate_critical_days > self.certificate_warning_days {
            p.push(format!(
                "alerts.certificate_critical_days: above alerts.certificate_warning_days ({}); give at most {}",
                self.certificate_warning_days, self.certificate_warning_days
            ));
        }
        if self.oldest_queued_warning_secs == 0 {
            p.push("alerts.oldest_queued_warning_secs: at least 1".into());
        }
        if self.quarantine_growth_objects == 0 || self.quarantine_window_secs == 0 {
            p.push(
                "alerts: quarantine_growth_objects and quarantine_window_secs must be positive"
                    .into(),
            );
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            p.push("alerts.max_attempts: give 1 to 100".into());
        }
        if let Some(e) = &self.email {
            if !host_port_ok(&e.server) {
                p.push(format!(
                    "alerts.email.server: {:?} is not host:port (e.g. \"smtp.hospital.example:587\")",
                    e.server
                ));
            }
            if !mailbox_ok(&e.from) {
                p.push(format!(
                    "alerts.email.from: {:?} is not an address like it@hospital.example",
                    e.from
                ));
            }
            if e.to.is_empty() {
                p.push("alerts.email.to: give at least one recipient".into());
            }
            for t in &e.to {
                if !mailbox_ok(t) {
                    p.push(format!(
                        "alerts.email.to: {t:?} is not an address like it@hospital.example"
                    ));
                }
            }
            if let Some(ca) = &e.ca
                && !ca.is_file()
            {
                p.push(format!("alerts.email.ca: {} does not exist", ca.display()));
            }
            match (&e.username, &e.password_file) {
                (Some(_), Some(f)) if !f.is_file() => {
                    p.push(format!(
                        "alerts.email.password_file: {} does not exist",
                        f.display()
                    ));
                }
                (Some(_), Some(_)) | (None, None) => {}
                _ => p.push(
                    "alerts.email: give both username and password_file (AUTH PLAIN), or neither"
                        .into(),
                ),
            }
        }
        if let Some(w) = &self.webhook {
            match url::Url::parse(&w.url) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u)
                    if u.scheme() == "http"
                        && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) => {}
                Ok(_) => p.push(format!(
                    "alerts.webhook.url: {:?} is not https:// (plain http only to a loopback address)",
                    w.url
                )),
                Err(e) => p.push(format!("alerts.webhook.url: {:?}: {e}", w.url)),
            }
            for (key, f) in [("secret_file", &w.secret_file), ("ca", &w.ca)] {
                if let Some(f) = f
                    && !f.is_file()
                {
                    p.push(format!(
                        "alerts.webhook.{key}: {} does not exist",
                        f.display()
                    ));
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_problem_names_its_key() {
        assert!(AlertsSection::default().validate().is_empty());
        let c: AlertsSection = toml::from_str(
            "evaluate_secs = 0\ndisk_warning_percent = 90\ndisk_critical_percent = 80",
        )
        .expect("parses");
        assert_eq!(
            c.validate(),
            vec![
                "alerts.evaluate_secs: give 1 to 3600".to_string(),
                "alerts.disk_critical_percent: below its warning threshold (90); give at least 90"
                    .to_string(),
            ]
        );
        let c: AlertsSection = toml::from_str(
            "[email]\nserver = \"smtp\"\nfrom = \"a b@x\"\nto = []\nusername = \"u\"\n\
             [webhook]\nurl = \"http://hooks.example/x\"",
        )
        .expect("parses");
        assert_eq!(
            c.validate(),
            vec![
                "alerts.email.server: \"smtp\" is not host:port (e.g. \"smtp.hospital.example:587\")".to_string(),
                "alerts.email.from: \"a b@x\" is not an address like it@hospital.example".to_string(),
                "alerts.email.to: give at least one recipient".to_string(),
                "alerts.email: give both username and password_file (AUTH PLAIN), or neither".to_string(),
                "alerts.webhook.url: \"http://hooks.example/x\" is not https:// (plain http only to a loopback address)".to_string(),
            ]
        );
        assert!(toml::from_str::<AlertsSection>("disk_warn = 3").is_err());
    }

    #[test]
    fn mailboxes_refuse_what_could_inject_smtp() {
        assert!(mailbox_ok("it@hospital.example"));
        assert!(mailbox_ok("root@localhost"));
        for bad in [
            "it",
            "@x.y",
            "a@b",
            "a@b.c\r\nRCPT TO:<x@y.z>",
            "<a@b.c>",
            "a@b@c.d",
        ] {
            assert!(!mailbox_ok(bad), "{bad:?}");
        }
    }
}
