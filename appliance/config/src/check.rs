//! The checked values of a configuration, each parsed in one place: AE titles, UIDs, transfer
//! syntaxes, listening addresses, `host:port` and IP networks. Every function says what is wrong
//! in a message meant for the person editing the file.

use std::net::{IpAddr, SocketAddr};

/// Checks an AE title: 1 to 16 characters of printable ASCII without backslash, not only spaces.
/// The one AE title check of the appliance (`medgate_dicom::validate_ae_title` is this function).
pub fn validate_ae_title(ae: &str) -> Result<(), String> {
    let trimmed = ae.trim();
    if trimmed.is_empty() {
        return Err("an AE title must not be empty or only spaces".into());
    }
    if ae.len() > 16 {
        return Err(format!("AE title {ae:?} is longer than 16 characters"));
    }
    if ae
        .chars()
        .any(|c| !c.is_ascii() || c.is_ascii_control() || c == '\\')
    {
        return Err(format!(
            "AE title {ae:?} may only hold printable ASCII characters without backslash"
        ));
    }
    Ok(())
}

/// A checked AE title: made only by [`AeTitle::parse`] (see [`validate_ae_title`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AeTitle(String);

impl AeTitle {
    /// Parses an AE title, with a message that says what is wrong.
    pub fn parse(ae: &str) -> Result<AeTitle, String> {
        validate_ae_title(ae).map(|()| AeTitle(ae.to_string()))
    }

    /// The title as written (without padding).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AeTitle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a UID: 1 to 64 characters, digits and dots, no empty component, no leading zero in a
/// component. The one UID check (`medgate_dicom::validate_uid` is this function).
pub fn validate_uid(uid: &str) -> Result<(), String> {
    if uid.is_empty() || uid.len() > 64 {
        return Err(format!("UID {uid:?} must have 1 to 64 characters"));
    }
    for part in uid.split('.') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("UID {uid:?} must be dot-separated numbers"));
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(format!("UID {uid:?} has a component with a leading zero"));
        }
    }
    Ok(())
}

/// The transfer syntaxes of the standard (PS3.6 Annex A) the appliance accepts by default; the
/// same list as `medgate_dicom::uids::TRANSFER_SYNTAXES` (the appliance's tests check they agree).
pub const STANDARD_TRANSFER_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.1.98",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.4.110",
    "1.2.840.10008.1.2.4.111",
    "1.2.840.10008.1.2.4.112",
    "1.2.840.10008.1.2.8.1",
    "1.2.840.10008.1.2.4.100",
    "1.2.840.10008.1.2.4.100.1",
    "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.101.1",
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.102.1",
    "1.2.840.10008.1.2.4.103",
    "1.2.840.10008.1.2.4.103.1",
    "1.2.840.10008.1.2.4.104",
    "1.2.840.10008.1.2.4.104.1",
    "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.105.1",
    "1.2.840.10008.1.2.4.106",
    "1.2.840.10008.1.2.4.106.1",
    "1.2.840.10008.1.2.4.107",
    "1.2.840.10008.1.2.4.108",
];

/// Whether `uid` is one of [`STANDARD_TRANSFER_SYNTAXES`].
pub fn is_standard_transfer_syntax(uid: &str) -> bool {
    STANDARD_TRANSFER_SYNTAXES.contains(&uid)
}

/// Parses an address to listen on: an IP address and a port, with a message that says what is
/// wrong (a host name, a port above 65535, no port).
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} has no port: write an IP address and a port, e.g. \"0.0.0.0:11112\""
        ));
    };
    let port_problem = port_problem(port);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_err() {
        return Err(format!(
            "{host:?} is not an IP address: a listening address must be one of this box's addresses (or 0.0.0.0 / [::] for all), not a host name{}",
            port_problem
                .map(|p| format!("; and {p}"))
                .unwrap_or_default()
        ));
    }
    Err(port_problem.unwrap_or_else(|| format!("{s:?} is not an IP address and port")))
}

/// What is wrong with a port number, if anything (0 included: see the callers).
fn port_problem(port: &str) -> Option<String> {
    match port.parse::<u64>() {
        Err(_) => Some(format!("the port {port:?} is not a number")),
        Ok(p) if p > 65_535 => Some(format!("the port {p} is above 65535")),
        Ok(_) => None,
    }
}

/// Whether two listening addresses would take the same port on some address.
pub fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// An address to call: a host name or IP address and a port other than 0 (`"pacs:104"`,
/// `"[::1]:11112"`). The one `host:port` parser of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host name or IP address (without brackets).
    pub host: String,
    /// The port, never 0.
    pub port: u16,
}

impl HostPort {
    /// Parses "host:port" (also "[v6]:port"), with a message that says what is wrong.
    pub fn parse(s: &str) -> Result<HostPort, String> {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!(
                "{s:?} must be host:port (e.g. \"pacs.example.org:104\")"
            ));
        };
        if let Some(p) = port_problem(port) {
            return Err(format!("{s:?}: {p}"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: the port {port:?} is not a number"))?;
        if port == 0 {
            return Err(format!("{s:?}: port 0 cannot be called"));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?} has no host before the port"));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A CIDR network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses "10.0.0.0/8", "fd00::/8" or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Network, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (expected e.g. \"10.20.0.0/16\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a prefix length outside 0..={max}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = Network::parse("10.20.0.0/16").expect("net");
        assert!(n.contains("10.20.3.4".parse().expect("ip")));
        assert!(!n.contains("10.21.3.4".parse().expect("ip")));
        assert!(n.contains("::ffff:10.20.0.1".parse().expect("ip")));
        assert!(
            Network::parse("127.0.0.1")
                .expect("host")
                .contains("127.0.0.1".parse().expect("ip"))
        );
        assert!(
            Network::parse("0.0.0.0/0")
                .expect("any")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        assert!(
            Network::parse("fd00::/8")
                .expect("v6")
                .contains("fd12::1".parse().expect("ip"))
        );
        assert!(Network::parse("nonsense").is_err());
    }

    #[test]
    fn host_port() {
        let hp = HostPort::parse("[::1]:11112").expect("v6");
        assert_eq!((hp.host.as_str(), hp.port), ("::1", 11112));
        assert_eq!(hp.to_string(), "[::1]:11112");
        assert!(HostPort::parse("pacs:0").is_err());
        let e = HostPort::parse("pacs:70000").expect_err("port");
        assert!(e.contains("the port 70000 is above 65535"), "{e}");
    }

    #[test]
    fn ae_titles_and_uids() {
        assert!(validate_ae_title("MEDGATE").is_ok());
        assert!(validate_ae_title("   ").is_err());
        assert!(validate_ae_title("A\\B").is_err());
        assert!(validate_uid("1.2.840.10008.1.2").is_ok());
        assert!(validate_uid("1.02").is_err());
        assert!(is_standard_transfer_syntax("1.2.840.10008.1.2.1"));
        assert!(!is_standard_transfer_syntax("1.2.3.4"));
    }
}
