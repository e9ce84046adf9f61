//! IHE ATNA (issue 13 part 4): the audit log as DICOM PS3.15 A.5 audit messages in RFC 5424
//! syslog records, octet-counted per RFC 5425. Sans-IO: an [`AuditEntry`] in, bytes out; the
//! forwarder (TLS, cursor, backoff) is the shell's. Only the entry's typed fields are sent
//! (actor, source address, action, target, outcome, time): never its before/after JSON, which
//! is free text.

use crate::store::audit::{AuditEntry, Outcome};

/// A DICOM coded value (`csd-code`, `codeSystemName`, `originalText`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// The code.
    pub code: &'static str,
    /// Its coding scheme (`DCM`).
    pub scheme: &'static str,
    /// Its meaning.
    pub meaning: &'static str,
}

const fn dcm(code: &'static str, meaning: &'static str) -> Code {
    Code {
        code,
        scheme: "DCM",
        meaning,
    }
}

/// EventID 110114 User Authentication.
pub const USER_AUTHENTICATION: Code = dcm("110114", "User Authentication");
/// EventID 110113 Security Alert.
pub const SECURITY_ALERT: Code = dcm("110113", "Security Alert");
/// EventID 110100 Application Activity.
pub const APPLICATION_ACTIVITY: Code = dcm("110100", "Application Activity");
/// EventID 110101 Audit Log Used.
pub const AUDIT_LOG_USED: Code = dcm("110101", "Audit Log Used");
/// EventTypeCode 110122 Login.
pub const LOGIN: Code = dcm("110122", "Login");
/// EventTypeCode 110123 Logout.
pub const LOGOUT: Code = dcm("110123", "Logout");
/// EventTypeCode 110129 Security Configuration.
pub const SECURITY_CONFIGURATION: Code = dcm("110129", "Security Configuration");
/// EventTypeCode 110127 Emergency Override Started (a break-glass action).
pub const EMERGENCY_OVERRIDE: Code = dcm("110127", "Emergency Override Started");
/// EventTypeCode 110131 Software Configuration (ota: bundles, campaigns, installs).
pub const SOFTWARE_CONFIGURATION: Code = dcm("110131", "Software Configuration");
/// EventTypeCode 110128 Network Configuration (device and site configuration).
pub const NETWORK_CONFIGURATION: Code = dcm("110128", "Network Configuration");
/// EventTypeCode 110137 User security Attributes Changed.
pub const USER_ATTRIBUTES_CHANGED: Code = dcm("110137", "User security Attributes Changed");
/// EventTypeCode 110132 Use of a restricted function (a refused request).
pub const RESTRICTED_FUNCTION: Code = dcm("110132", "Use of a restricted function");
/// RoleIDCode 110153 Source Role ID (the user who did it).
pub const SOURCE_ROLE: Code = dcm("110153", "Source Role ID");

/// PS3.15 EventActionCode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// C: create.
    Create,
    /// R: read.
    Read,
    /// U: update.
    Update,
    /// D: delete.
    Delete,
    /// E: execute.
    Execute,
}

impl Action {
    fn letter(self) -> &'static str {
        match self {
            Action::Create => "C",
            Action::Read => "R",
            Action::Update => "U",
            Action::Delete => "D",
            Action::Execute => "E",
        }
    }
}

/// One ATNA event, from one audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// EventID.
    pub id: Code,
    /// EventActionCode.
    pub action: Action,
    /// EventTypeCode, if the EventID takes one.
    pub type_code: Option<Code>,
    /// EventOutcomeIndicator: 0 success, 4 minor failure (refused), 8 serious failure.
    pub outcome: u8,
    /// Unix ms.
    pub at_ms: i64,
    /// ActiveParticipant UserID (the fleet's user name or `cli`, `break-glass`).
    pub user: String,
    /// NetworkAccessPointID: the user's IP address.
    pub source: Option<String>,
    /// ParticipantObjectID: what was acted on (`device:ct-1`, `user:alice`, a route).
    pub object: Option<String>,
    /// The fleet's action word (ParticipantObjectDetail `medgate-action`).
    pub fleet_action: String,
}

/// The ATNA event of an audit entry (the table in docs/fleet.md, "ATNA").
pub fn event(e: &AuditEntry) -> Event {
    let a = e.action.as_str();
    let (id, action, type_code) = match a {
        "login" | "login.sso" | "setup" => (USER_AUTHENTICATION, Action::Execute, Some(LOGIN)),
        "logout" | "session.revoke" | "session.revoke_all" => {
            (USER_AUTHENTICATION, Action::Execute, Some(LOGOUT))
        }
        "audit.read" | "audit.export" => (AUDIT_LOG_USED, Action::Read, None),
        _ if a.starts_with("user.") || a.starts_with("token.") || a.starts_with("display.") => (
            SECURITY_ALERT,
            if a.ends_with(".create") {
                Action::Create
            } else if a.ends_with(".revoke") {
                Action::Delete
            } else {
                Action::Update
            },
            Some(USER_ATTRIBUTES_CHANGED),
        ),
        _ if a.starts_with("peer.") || a.starts_with("claim.") => {
            (SECURITY_ALERT, Action::Update, Some(SECURITY_CONFIGURATION))
        }
        _ if e.actor == "break-glass" => {
            (SECURITY_ALERT, Action::Execute, Some(EMERGENCY_OVERRIDE))
        }
        _ if e.outcome == Outcome::Denied => {
            (SECURITY_ALERT, Action::Execute, Some(RESTRICTED_FUNCTION))
        }
        // ota (issue 14): uploads, campaigns and each device's install.
        _ if a.starts_with("update.") => (
            SECURITY_ALERT,
            if a.ends_with("_create") || a.ends_with("_upload") {
                Action::Create
            } else {
                Action::Update
            },
            Some(SOFTWARE_CONFIGURATION),
        ),
        _ if a.starts_with("device.")
            || a.starts_with("config.")
            || a.starts_with("site.")
            || a.starts_with("command.") =>
        {
            (
                SECURITY_ALERT,
                if a.ends_with(".create") {
                    Action::Create
                } else {
                    Action::Update
                },
                Some(NETWORK_CONFIGURATION),
            )
        }
        _ => (APPLICATION_ACTIVITY, Action::Execute, None),
    };
    Event {
        id,
        action,
        type_code,
        outcome: match e.outcome {
            Outcome::Ok => 0,
            Outcome::Denied => 4,
            Outcome::Failed => 8,
        },
        at_ms: e.at_ms,
        user: e.actor.clone(),
        source: e.source.clone(),
        object: (!e.target.is_empty()).then(|| e.target.clone()),
        fleet_action: e.action.clone(),
    }
}

/// XML text and attribute escaping (also drops characters XML 1.0 forbids).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push_str(&format!("&#{};", u32::from(c))),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Unix ms as RFC 3339 UTC with milliseconds (`2026-12-02T11:40:47.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let t = crate::civil::Utc::of_ms(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.milli
    )
}

fn code_attrs(c: Code) -> String {
    format!(
        "csd-code=\"{}\" codeSystemName=\"{}\" originalText=\"{}\"",
        escape(c.code),
        escape(c.scheme),
        escape(c.meaning)
    )
}

/// The PS3.15 A.5.1 AuditMessage of an event; `source_id` is AuditSourceIdentification's
/// AuditSourceID (the fleet's host name).
pub fn xml(ev: &Event, source_id: &str) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>");
    x.push_str(&format!(
        "<EventIdentification EventActionCode=\"{}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\"><EventID {}/>",
        ev.action.letter(),
        rfc3339(ev.at_ms),
        ev.outcome,
        code_attrs(ev.id)
    ));
    if let Some(t) = ev.type_code {
        x.push_str(&format!("<EventTypeCode {}/>", code_attrs(t)));
    }
    x.push_str("</EventIdentification>");
    x.push_str(&format!(
        "<ActiveParticipant UserID=\"{}\" UserIsRequestor=\"true\"",
        escape(&ev.user)
    ));
    if let Some(s) = &ev.source {
        // 2: an IP address.
        x.push_str(&format!(
            " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"2\"",
            escape(s)
        ));
    }
    x.push_str(&format!(
        "><RoleIDCode {}/></ActiveParticipant>",
        code_attrs(SOURCE_ROLE)
    ));
    // 4: application server.
    x.push_str(&format!(
        "<AuditSourceIdentification AuditSourceID=\"{}\"><AuditSourceTypeCode csd-code=\"4\"/></AuditSourceIdentification>",
        escape(source_id)
    ));
    if let Some(o) = &ev.object {
        // Type 2 system object, role 13 security resource, ID type code "medgate target"; the
        // schema (A.5.1.1) wants a ParticipantObjectName or a ParticipantObjectQuery: the name
        // is the target again.
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"13\"><ParticipantObjectIDTypeCode csd-code=\"medgate-target\" codeSystemName=\"MEDGATE\" originalText=\"fleet audit target\"/><ParticipantObjectName>{}</ParticipantObjectName><ParticipantObjectDetail type=\"medgate-action\" value=\"{}\"/></ParticipantObjectIdentification>",
            escape(o),
            escape(o),
            escape(&b64(ev.fleet_action.as_bytes()))
        ));
    }
    x.push_str("</AuditMessage>");
    x
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A syslog header field: printable US-ASCII without spaces, at most `max`, `-` if empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

/// The RFC 5424 record: facility 10 (authpriv), severity notice (5) for success and warning
/// (4) for a failure, APP-NAME `medgate-fleet`, MSGID `IHE+RFC-3881`, no structured data, a
/// UTF-8 BOM before the XML.
pub fn syslog(ev: &Event, hostname: &str, xml: &str) -> Vec<u8> {
    let severity = if ev.outcome == 0 { 5 } else { 4 };
    let pri = 10 * 8 + severity;
    let mut out = format!(
        "<{pri}>1 {} {} medgate-fleet {} IHE+RFC-3881 - ",
        rfc3339(ev.at_ms),
        header_field(hostname, 255),
        std::process::id()
    )
    .into_bytes();
    out.extend_from_slice(b"\xEF\xBB\xBF");
    out.extend_from_slice(xml.as_bytes());
    out
}

/// RFC 5425 octet counting: `MSG-LEN SP SYSLOG-MSG`.
pub fn frame(record: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", record.len()).into_bytes();
    out.extend_from_slice(record);
    out
}

/// An audit entry as the bytes to write to the TLS stream.
pub fn encode(e: &AuditEntry, hostname: &str) -> Vec<u8> {
    let ev = event(e);
    frame(&syslog(&ev, hostname, &xml(&ev, hostname)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, outcome: Outcome) -> AuditEntry {
        AuditEntry {
            id: "1".into(),
            at_ms: 1_796_211_647_123,
            actor: "alice".into(),
            source: Some("10.0.0.7".into()),
            action: action.into(),
            target: "user:alice".into(),
            outcome,
            before: Some("{\"secret\":\"do not send\"}".into()),
            after: Some("{\"x\":\"nor this\"}".into()),
        }
    }

    #[test]
    fn logins_logouts_and_changes_map_to_dcm_codes() {
        let ok = event(&entry("login", Outcome::Ok));
        assert_eq!(
            (ok.id, ok.type_code, ok.outcome),
            (USER_AUTHENTICATION, Some(LOGIN), 0)
        );
        let bad = event(&entry("login", Outcome::Failed));
        assert_eq!(bad.outcome, 8);
        assert_eq!(event(&entry("logout", Outcome::Ok)).type_code, Some(LOGOUT));
        let u = event(&entry("user.create", Outcome::Ok));
        assert_eq!((u.id, u.action), (SECURITY_ALERT, Action::Create));
        let d = event(&entry("device.patch", Outcome::Ok));
        assert_eq!(d.type_code, Some(NETWORK_CONFIGURATION));
        // ota (issue 14): software configuration, a device's install as much as a campaign.
        for (a, action) in [
            ("update.bundle_upload", Action::Create),
            ("update.campaign_create", Action::Create),
            ("update.campaign_approve", Action::Update),
            ("update.device_rolled_back", Action::Update),
            ("update.local_installed", Action::Update),
        ] {
            let u = event(&entry(a, Outcome::Ok));
            assert_eq!(
                (u.type_code, u.action),
                (Some(SOFTWARE_CONFIGURATION), action),
                "{a}"
            );
        }
        let denied = event(&entry("device.patch", Outcome::Denied));
        assert_eq!(
            (denied.type_code, denied.outcome),
            (Some(RESTRICTED_FUNCTION), 4)
        );
        assert_eq!(
            event(&entry("something.else", Outcome::Ok)).id,
            APPLICATION_ACTIVITY
        );
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339(1_796_211_647_123), "2026-12-02T11:40:47.123Z");
    }

    #[test]
    fn xml_escapes_and_never_carries_before_or_after() {
        let mut e = entry("user.update", Outcome::Ok);
        e.actor = "a\"<b>&'c\u{1}".into();
        let x = xml(&event(&e), "fleet-1");
        assert!(x.contains("UserID=\"a&quot;&lt;b&gt;&amp;&apos;c\""), "{x}");
        assert!(!x.contains("do not send") && !x.contains("nor this"));
        assert!(x.contains("<EventID csd-code=\"110113\""));
        assert!(x.contains("EventDateTime=\"2026-12-02T11:40:47.123Z\""));
        assert!(x.contains("NetworkAccessPointID=\"10.0.0.7\" NetworkAccessPointTypeCode=\"2\""));
        assert!(x.contains(
            "<ParticipantObjectName>user:alice</ParticipantObjectName><ParticipantObjectDetail"
        ));
        assert!(x.ends_with("</AuditMessage>"));
    }

    #[test]
    fn records_are_rfc5424_and_octet_counted() {
        let e = entry("login", Outcome::Failed);
        let framed = encode(&e, "fleet 1");
        let text = String::from_utf8(framed.clone()).unwrap_or_default();
        let (len, rest) = text.split_once(' ').unwrap_or_default();
        assert_eq!(len.parse::<usize>().ok(), Some(rest.len()));
        let head = format!(
            "<84>1 2026-12-02T11:40:47.123Z fleet1 medgate-fleet {} IHE+RFC-3881 - \u{FEFF}<?xml",
            std::process::id()
        );
        assert!(rest.starts_with(&head), "{rest}");
    }
}
