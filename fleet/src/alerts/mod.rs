//! alerts (issue 13 part 3): rules with thresholds raised and cleared with history,
//! acknowledged and silenced in the console, delivered by e-mail (SMTP with STARTTLS) and
//! webhook with retries. No patient data in any alert: the rules read registry and telemetry
//! figures only (see [`rules`]).
//!
//! - [`config`]: `[alerts]`, validated key by key.
//! - [`rules`]: sans-IO rules and state machine (pending → firing → resolved).
//! - [`smtp`]: sans-IO SMTP client and its tokio shell.
//! - this module: the messages (sans-IO) and the two tasks — the evaluator (every
//!   `evaluate_secs`: read, step the machine, write transitions and their notifications) and
//!   the delivery (the outbox in the database, retried with backoff, kept across restarts).

pub mod config;
pub mod rules;
pub mod smtp;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::civil::Utc;
use crate::model::{Alert, AlertKind};
use crate::store::Store;
use crate::store::alerts::{Channel, Due, Event};
use config::AlertsSection;
use rules::{Facts, Machine, QuarantineHistory, Transition};

/// Delivery outcomes counted in `medgate_fleet_notifications_total{channel,outcome}`.
pub const OUTCOMES: [&str; 4] = ["sent", "retry", "failed", "skipped"];

/// The counters of notifications.
#[derive(Debug, Default)]
pub struct AlertMetrics {
    counts: [[AtomicU64; 4]; 2],
}

impl AlertMetrics {
    fn count(&self, channel: Channel, outcome: &str) {
        let c = match channel {
            Channel::Email => 0,
            Channel::Webhook => 1,
        };
        if let Some(o) = OUTCOMES.iter().position(|x| *x == outcome) {
            self.counts[c][o].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text: the notification counters and the firing alerts given.
    pub fn render(&self, firing: &[(AlertKind, crate::model::Severity, i64)]) -> String {
        let mut s = String::new();
        let name = "medgate_fleet_notifications_total";
        let _ = writeln!(
            s,
            "# HELP {name} Alert notifications by channel and outcome (sent, retry: failed and will be tried again, failed: given up, skipped: silenced)\n# TYPE {name} counter"
        );
        for (ci, ch) in ["email", "webhook"].iter().enumerate() {
            for (oi, o) in OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "{name}{{channel=\"{ch}\",outcome=\"{o}\"}} {}",
                    self.counts[ci][oi].load(Ordering::Relaxed)
                );
            }
        }
        let name = "medgate_fleet_alerts_firing";
        let _ = writeln!(
            s,
            "# HELP {name} Alerts firing now by kind and severity\n# TYPE {name} gauge"
        );
        for kind in AlertKind::ALL {
            for sev in crate::model::Severity::ALL {
                let n = firing
                    .iter()
                    .find(|(k, v, _)| k == kind && v == sev)
                    .map_or(0, |(_, _, n)| *n);
                let _ = writeln!(s, "{name}{{kind=\"{kind}\",severity=\"{sev}\"}} {n}");
            }
        }
        s
    }
}

/// A time as RFC 5322 wants it (`Wed, 02 Dec 2026 18:00:00 +0000`).
pub fn rfc5322(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = Utc::of_ms(ms);
    let weekday = usize::try_from(ms.div_euclid(86_400_000).rem_euclid(7)).unwrap_or(0);
    let month = usize::try_from(t.month - 1).unwrap_or(0);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[weekday], t.day, MONTHS[month], t.year, t.hour, t.minute, t.second
    )
}

fn utc(ms: i64) -> String {
    let t = Utc::of_ms(ms);
    format!(
        "{}-{:02}-{:02} {:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute
    )
}

/// One line, without control characters (words go into a header).
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The e-mail of an alert's event: (subject, body).
pub fn email_text(a: &Alert, event: Event, console: Option<&str>) -> (String, String) {
    let (tag, what) = match event {
        Event::Raised => (a.severity.as_str().to_uppercase(), "raised"),
        Event::Cleared => ("CLEARED".to_string(), "cleared"),
    };
    let subject = header_safe(&format!(
        "[Medgate {tag}] {} {}: {}",
        a.device,
        a.kind.as_str().replace('_', " "),
        a.words
    ));
    let mut body = format!(
        "Alert {what}: {}\n\nDevice:   {}\nSite:     {}\nRule:     {}\nSeverity: {}\nRaised:   {}\n",
        a.words,
        a.device,
        a.site,
        a.kind,
        a.severity,
        utc(a.raised_ms)
    );
    if let Some(c) = a.cleared_ms {
        let _ = writeln!(
            body,
            "Cleared:  {} (after {})",
            utc(c),
            rules::age(u64::try_from((c - a.raised_ms).max(0) / 1000).unwrap_or(0))
        );
    }
    if let Some(url) = console {
        let _ = writeln!(
            body,
            "\nAcknowledge or silence it: {}/alerts?device={}",
            url.trim_end_matches('/'),
            a.device
        );
    }
    body.push_str(
        "\nThis message carries device figures only (counts, ages, AE titles); no patient data leaves the appliance.\n",
    );
    (subject, body)
}

/// The full mail (headers and body).
pub fn email_message(
    from: &str,
    to: &[String],
    a: &Alert,
    event: Event,
    console: Option<&str>,
    now_ms: i64,
    host: &str,
) -> String {
    let (subject, body) = email_text(a, event, console);
    format!(
        "From: Medgate fleet <{from}>\nTo: {}\nSubject: {subject}\nDate: {}\nMessage-ID: <{}.{}@{host}>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\nX-Medgate-Alert: {}\n\n{body}",
        to.join(", "),
        rfc5322(now_ms),
        a.id,
        event.as_str(),
        a.id
    )
}

/// The webhook's JSON body.
pub fn webhook_body(a: &Alert, event: Event) -> String {
    serde_json::json!({"event": event.as_str(), "alert": a}).to_string()
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// The wait before attempt `attempt` + 1: 10 s doubling, at most 30 min, ±20 %.
pub fn backoff_ms(attempt: i64) -> i64 {
    let base = 10_000_i64
        .saturating_mul(1 << attempt.clamp(0, 20))
        .min(1_800_000);
    base + i64::try_from(fastrand::u64(0..=u64::try_from(base / 5).unwrap_or(0))).unwrap_or(0)
        - base / 10
}

/// The channels ready to deliver (configured and with their secrets read).
#[derive(Debug, Clone)]
pub struct Channels {
    email: Option<(smtp::Server, config::EmailSection)>,
    webhook: Option<(reqwest::Client, String, Option<Vec<u8>>)>,
    console: Option<String>,
    host: String,
}

fn read_secret(key: &str, f: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(f)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|e| format!("{key}: {}: {e}", f.display()))
}

fn roots(
    key: &'static str,
    ca: Option<&std::path::Path>,
    system: bool,
) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    if system || ca.is_none() {
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
    }
    if let Some(f) = ca {
        for c in crate::pem::certificates(key, f).map_err(|e| e.to_string())? {
            roots
                .add(c)
                .map_err(|e| format!("{key}: {}: {e}", f.display()))?;
        }
    }
    Ok(roots)
}

impl Channels {
    /// From the configuration (files read now). `console` is the fleet's public URL for links.
    pub fn new(s: &AlertsSection, console: Option<String>) -> Result<Channels, String> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            })
            .unwrap_or_else(|| "medgate-fleet".into());
        let email = match &s.email {
            None => None,
            Some(e) => {
                let tls = rustls::ClientConfig::builder_with_provider(crate::pem::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots("alerts.email.ca", e.ca.as_deref(), false)?)
                    .with_no_client_auth();
                let auth = match (&e.username, &e.password_file) {
                    (Some(u), Some(f)) => {
                        Some((u.clone(), read_secret("alerts.email.password_file", f)?))
                    }
                    _ => None,
                };
                let name = e.server_name.clone().unwrap_or_else(|| {
                    e.server
                        .rsplit_once(':')
                        .map_or(e.server.as_str(), |(h, _)| h)
                        .to_owned()
                });
                Some((
                    smtp::Server {
                        address: e.server.clone(),
                        server_name: name,
                        tls: Arc::new(tls),
                        auth,
                        helo: host.clone(),
                    },
                    e.clone(),
                ))
            }
        };
        let webhook = match &s.webhook {
            None => None,
            Some(w) => {
                let tls = rustls::ClientConfig::builder_with_provider(crate::pem::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots("alerts.webhook.ca", w.ca.as_deref(), true)?)
                    .with_no_client_auth();
                let client = reqwest::Client::builder()
                    .use_preconfigured_tls(tls)
                    .timeout(Duration::from_secs(15))
                    .connect_timeout(Duration::from_secs(5))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("alerts.webhook: HTTP client: {e}"))?;
                let secret = w
                    .secret_file
                    .as_deref()
                    .map(|f| read_secret("alerts.webhook.secret_file", f).map(String::into_bytes))
                    .transpose()?;
                Some((client, w.url.clone(), secret))
            }
        };
        Ok(Channels {
            email,
            webhook,
            console,
            host,
        })
    }

    /// The channels configured.
    pub fn list(&self) -> Vec<Channel> {
        let mut v = Vec::new();
        if self.email.is_some() {
            v.push(Channel::Email);
        }
        if self.webhook.is_some() {
            v.push(Channel::Webhook);
        }
        v
    }

    /// One attempt. `Err((permanent, why))`.
    async fn deliver(&self, d: &Due, now_ms: i64) -> Result<(), (bool, String)> {
        match d.channel {
            Channel::Email => {
                let Some((server, e)) = &self.email else {
                    return Err((true, "alerts.email is no longer configured".into()));
                };
                let msg = email_message(
                    &e.from,
                    &e.to,
                    &d.alert,
                    d.event,
                    self.console.as_deref(),
                    now_ms,
                    &self.host,
                );
                smtp::send(server, &e.from, &e.to, &msg)
                    .await
                    .map_err(|e| (e.permanent(), e.to_string()))
            }
            Channel::Webhook => {
                let Some((client, url, secret)) = &self.webhook else {
                    return Err((true, "alerts.webhook is no longer configured".into()));
                };
                let body = webhook_body(&d.alert, d.event);
                let mut req = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("X-Medgate-Event", d.event.as_str());
                if let Some(s) = secret {
                    req = req.header("X-Medgate-Signature", signature(s, body.as_bytes()));
                }
                let r = req
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| (false, format!("webhook: {e}")))?;
                let st = r.status();
                if st.is_success() {
                    Ok(())
                } else {
                    let permanent = st.is_client_error()
                        && st != reqwest::StatusCode::REQUEST_TIMEOUT
                        && st != reqwest::StatusCode::TOO_MANY_REQUESTS;
                    Err((permanent, format!("webhook answered {st}")))
                }
            }
        }
    }
}

/// The evaluator: every `evaluate_secs`, the rules over every device, the machine's
/// transitions written (idempotently: see [`crate::store::alerts`]); `changed` is called after
/// an evaluation that raised, escalated or cleared an alert (the wall's "fleet changed").
pub async fn evaluate(
    store: Store,
    settings: AlertsSection,
    channels: Vec<Channel>,
    changed: impl Fn() + Send + 'static,
) {
    let mut machine = Machine::default();
    let mut quarantine = QuarantineHistory::default();
    let mut tick = tokio::time::interval(Duration::from_secs(settings.evaluate_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match evaluate_once(&store, &settings, &channels, &mut machine, &mut quarantine).await {
            Ok(0) => {}
            Ok(_) => changed(),
            Err(e) => {
                tracing::warn!(error = %e, "alert evaluation failed; trying again at the next interval");
            }
        }
    }
}

/// One evaluation (the evaluator's step; tests call it directly): how many alerts it raised,
/// escalated or cleared.
pub async fn evaluate_once(
    store: &Store,
    t: &AlertsSection,
    channels: &[Channel],
    machine: &mut Machine,
    quarantine: &mut QuarantineHistory,
) -> Result<usize, crate::store::StoreError> {
    let now = crate::store::now_db();
    let devices = store.devices(None).await?;
    // Telemetry older than a few intervals is not "latest" (the device will be offline soon).
    let latest = store.latest_telemetry_all(now - 3_600_000).await?;
    let certs = store.certificate_ends().await?;
    let window = i64::try_from(t.quarantine_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut evaluations = Vec::with_capacity(devices.len());
    for d in &devices {
        let sample = latest.get(&d.id);
        let growth =
            sample.map(|s| quarantine.observe(&d.id, s.ts_ms, s.data.quarantine_objects, window));
        evaluations.push(rules::evaluate(
            &Facts {
                device: d,
                latest: sample,
                cert_expires_ms: certs.get(&d.id).copied(),
                quarantine_growth: growth,
            },
            t,
            now,
        ));
    }
    let keep: HashSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    quarantine.retain(&keep);
    let firing = store.alerts_firing().await?;
    let mut written = 0;
    for tr in machine.step(now, &evaluations, &firing, |k| rules::hold_ms(t, k)) {
        match tr {
            Transition::Raise(c) => {
                if let Some(id) = store.raise_alert(&c, now, channels).await? {
                    written += 1;
                    tracing::warn!(alert = %id, device = %c.device, kind = %c.kind, severity = %c.severity, "alert raised: {}", c.words);
                }
            }
            Transition::Escalate { id, condition } => {
                store.escalate_alert(&id, &condition).await?;
                written += 1;
            }
            Transition::Clear { id } => {
                if store.clear_alert(&id, now, channels).await? {
                    written += 1;
                    tracing::info!(alert = %id, "alert cleared");
                }
            }
        }
    }
    Ok(written)
}

/// The delivery: the due notifications of the outbox, each claimed, attempted, and recorded
/// (sent, retried with backoff, given up after `max_attempts`, or skipped when silenced).
pub async fn deliver(
    store: Store,
    channels: Channels,
    max_attempts: u32,
    metrics: Arc<AlertMetrics>,
) {
    loop {
        let worked = match deliver_once(&store, &channels, max_attempts, &metrics).await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e, "alert delivery: database unavailable; trying again");
                false
            }
        };
        if !worked {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// One pass over the due notifications; how many were attempted.
pub async fn deliver_once(
    store: &Store,
    channels: &Channels,
    max_attempts: u32,
    metrics: &AlertMetrics,
) -> Result<usize, crate::store::StoreError> {
    let now = crate::store::now_db();
    let due = store.notifications_due(now, 20).await?;
    let mut n = 0;
    for d in due {
        // A lease longer than an attempt can take (SMTP steps time out after 30 s).
        if !store.claim_notification(&d, now + 300_000).await? {
            continue;
        }
        n += 1;
        let now = crate::store::now_db();
        if d.alert.silenced_until_ms.is_some_and(|u| u > now) {
            store
                .notification_outcome(&d, "skipped", d.attempt, now, Some("silenced"), now)
                .await?;
            metrics.count(d.channel, "skipped");
            continue;
        }
        let attempt = d.attempt + 1;
        match channels.deliver(&d, now).await {
            Ok(()) => {
                store
                    .notification_outcome(&d, "sent", attempt, now, None, now)
                    .await?;
                metrics.count(d.channel, "sent");
                tracing::info!(alert = %d.alert.id, channel = d.channel.as_str(), event = d.event.as_str(), "alert notification sent");
            }
            Err((permanent, why)) => {
                let give_up = permanent || attempt >= i64::from(max_attempts);
                let (status, next) = if give_up {
                    ("failed", now)
                } else {
                    ("pending", now + backoff_ms(attempt - 1))
                };
                store
                    .notification_outcome(&d, status, attempt, next, Some(&why), now)
                    .await?;
                metrics.count(d.channel, if give_up { "failed" } else { "retry" });
                tracing::warn!(alert = %d.alert.id, channel = d.channel.as_str(), attempt, error = %why,
                    "{}", if give_up { "alert notification given up" } else { "alert notification failed; trying again" });
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertState, Severity};

    fn alert() -> Alert {
        Alert {
            id: "0001796210343123-0000abcd".into(),
            device: "ct-1".into(),
            site: "st-marien".into(),
            kind: AlertKind::ArchiveUnreachable,
            severity: Severity::Critical,
            state: AlertState::Resolved,
            raised_ms: 1_796_210_343_123,
            cleared_ms: Some(1_796_210_343_123 + 754_000),
            acked_by: None,
            acked_ms: None,
            silenced_until_ms: None,
            words: "ct-1 (AE MEDGATE_CT1): archive unreachable: destination pacs with 3 objects waiting, oldest 2 min".into(),
        }
    }

    #[test]
    fn mails_say_what_where_and_when() {
        let (subject, body) = email_text(&alert(), Event::Cleared, Some("https://fleet.example/"));
        assert_eq!(
            subject,
            "[Medgate CLEARED] ct-1 archive unreachable: ct-1 (AE MEDGATE_CT1): archive unreachable: destination pacs with 3 objects waiting, oldest 2 min"
        );
        assert!(body.contains("Raised:   2026-12-02 11:19 UTC\n"), "{body}");
        assert!(
            body.contains("Cleared:  2026-12-02 11:31 UTC (after 12 min)\n"),
            "{body}"
        );
        assert!(
            body.contains("https://fleet.example/alerts?device=ct-1"),
            "{body}"
        );
        let m = email_message(
            "m@x.example",
            &["it@x.example".into()],
            &alert(),
            Event::Raised,
            None,
            1_796_210_343_123,
            "fleet",
        );
        assert!(
            m.contains("\nDate: Wed, 02 Dec 2026 11:19:03 +0000\n"),
            "{m}"
        );
        assert!(
            m.contains("\nSubject: [Medgate CRITICAL] ct-1 archive unreachable: "),
            "{m}"
        );
    }

    #[test]
    fn words_cannot_add_headers() {
        let mut a = alert();
        a.words = "x\r\nBcc: evil@x.example".into();
        let (subject, _) = email_text(&a, Event::Raised, None);
        assert!(
            !subject.contains('\n') && !subject.contains('\r'),
            "{subject}"
        );
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        for (attempt, lo, hi) in [
            (0, 9_000, 12_000),
            (1, 18_000, 24_000),
            (20, 1_620_000, 2_160_000),
        ] {
            let b = backoff_ms(attempt);
            assert!((lo..=hi).contains(&b), "{attempt}: {b}");
        }
    }

    /// A webhook receiver answering the given statuses in turn (then 200).
    async fn receiver(statuses: Vec<u16>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut statuses = statuses.into_iter();
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let st = statuses.next().unwrap_or(200);
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {st} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn failures_are_retried_later_refusals_given_up_silenced_skipped() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let port = receiver(vec![503, 400]).await;
        let settings = AlertsSection {
            webhook: Some(config::WebhookSection {
                url: format!("http://127.0.0.1:{port}/hook"),
                secret_file: None,
                ca: None,
            }),
            ..AlertsSection::default()
        };
        let channels = Channels::new(&settings, None).expect("channels");
        let metrics = AlertMetrics::default();
        let cond = |device: &str| rules::Condition {
            device: device.into(),
            site: "s".into(),
            kind: AlertKind::DiskUse,
            severity: Severity::Warning,
            words: "disk 90 % full".into(),
        };
        let now = crate::store::now_db();
        let a = store
            .raise_alert(&cond("a"), now, &channels.list())
            .await
            .expect("raise")
            .expect("new");
        // 503: tried again later.
        assert_eq!(
            deliver_once(&store, &channels, 3, &metrics)
                .await
                .expect("deliver"),
            1
        );
        let n = store.alert_notifications(&a).await.expect("rows");
        assert_eq!(n.len(), 1);
        let (_, channel, status, attempts, error) = &n[0];
        assert_eq!(
            (channel.as_str(), status.as_str(), *attempts),
            ("webhook", "pending", 1)
        );
        assert!(
            error.as_deref().is_some_and(|e| e.contains("503")),
            "{error:?}"
        );
        assert!(
            store
                .notifications_due(now + 5_000, 10)
                .await
                .expect("due")
                .is_empty()
        );
        assert_eq!(
            store
                .notifications_due(now + 60_000, 10)
                .await
                .expect("due")
                .len(),
            1
        );
        // 400: given up at once.
        let b = store
            .raise_alert(&cond("b"), now, &channels.list())
            .await
            .expect("raise")
            .expect("new");
        deliver_once(&store, &channels, 3, &metrics)
            .await
            .expect("deliver");
        let n = store.alert_notifications(&b).await.expect("rows");
        assert_eq!(n[0].2, "failed", "{n:?}");
        // Silenced: skipped, nothing sent.
        let c = store
            .raise_alert(&cond("c"), now, &channels.list())
            .await
            .expect("raise")
            .expect("new");
        store
            .silence_alert(&c, now + 3_600_000)
            .await
            .expect("silence");
        deliver_once(&store, &channels, 3, &metrics)
            .await
            .expect("deliver");
        let n = store.alert_notifications(&c).await.expect("rows");
        assert_eq!(n[0].2, "skipped", "{n:?}");
        let text = metrics.render(&[]);
        for line in [
            "{channel=\"webhook\",outcome=\"retry\"} 1\n",
            "{channel=\"webhook\",outcome=\"failed\"} 1\n",
            "{channel=\"webhook\",outcome=\"skipped\"} 1\n",
            "{channel=\"webhook\",outcome=\"sent\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn metrics_name_every_kind_and_channel() {
        let m = AlertMetrics::default();
        m.count(Channel::Email, "sent");
        let text = m.render(&[(AlertKind::DiskUse, Severity::Warning, 2)]);
        assert!(
            text.contains(
                "medgate_fleet_notifications_total{channel=\"email\",outcome=\"sent\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "medgate_fleet_alerts_firing{kind=\"disk_use\",severity=\"warning\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "medgate_fleet_alerts_firing{kind=\"device_offline\",severity=\"critical\"} 0\n"
            ),
            "{text}"
        );
    }
}
