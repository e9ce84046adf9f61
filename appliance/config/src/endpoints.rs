//! [`Endpoints`]: who the appliance is and whom it talks to, parsed out of a [`DesiredConfig`] —
//! AE titles, source networks and destination addresses as checked types. The appliance wires
//! its listener and senders from these, never from the text, so a value it uses is a value that
//! was checked; [`DesiredConfig::validate`] reports the same parsers' problems, each with its key.

use crate::Problem;
use crate::check::{AeTitle, HostPort, Network};
use crate::desired::DesiredConfig;
use crate::sections::DestinationKind;

/// The parsed addresses and names of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// `listener.ae_title`.
    pub listener_ae: AeTitle,
    /// `listener.allowed_called_ae_titles` (empty: any).
    pub allowed_called: Vec<AeTitle>,
    /// `listener.allowed_calling_ae_titles` (empty: any).
    pub allowed_calling: Vec<AeTitle>,
    /// `listener.allowed_networks` (empty: any).
    pub allowed_networks: Vec<Network>,
    /// One per `[[destination]]`, in order.
    pub destinations: Vec<Destination>,
}

/// Where one destination is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// DICOM C-STORE.
    Dimse {
        /// `address`.
        address: HostPort,
        /// `called_ae_title`.
        called_ae: AeTitle,
        /// `calling_ae_title`, else the listener's.
        calling_ae: AeTitle,
    },
    /// DICOMweb STOW-RS.
    Stow {
        /// `url`: the base URL, `http://` or `https://` with a host.
        url: String,
    },
}

/// Collects the problems of one parse while going on with the next.
struct Parse {
    problems: Vec<Problem>,
}

impl Parse {
    fn one<T>(&mut self, key: String, r: Result<T, String>) -> Option<T> {
        r.map_err(|message| self.problems.push(Problem { key, message }))
            .ok()
    }

    fn list<T>(
        &mut self,
        key: &str,
        items: &[String],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.one(format!("{key}[{i}]"), parse(s)))
            .collect()
    }

    fn required<T>(
        &mut self,
        key: String,
        value: Option<&str>,
        missing: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match value {
            None => self.one(key, Err(missing.to_string())),
            Some(v) => self.one(key, parse(v)),
        }
    }
}

impl DesiredConfig {
    /// Parses the addresses and names; on failure, every problem, each with its key.
    pub fn endpoints(&self) -> Result<Endpoints, Vec<Problem>> {
        let mut p = Parse {
            problems: Vec::new(),
        };
        let l = &self.listener;
        let listener_ae = p.one("listener.ae_title".into(), AeTitle::parse(&l.ae_title));
        let allowed_called = p.list(
            "listener.allowed_called_ae_titles",
            &l.allowed_called_ae_titles,
            AeTitle::parse,
        );
        let allowed_calling = p.list(
            "listener.allowed_calling_ae_titles",
            &l.allowed_calling_ae_titles,
            AeTitle::parse,
        );
        let allowed_networks = p.list(
            "listener.allowed_networks",
            &l.allowed_networks,
            Network::parse,
        );
        let mut destinations = Vec::new();
        for (i, d) in self.destinations.iter().enumerate() {
            let k = |f: &str| format!("destination[{i}].{f}");
            destinations.push(match d.kind {
                DestinationKind::Stow => p
                    .required(
                        k("url"),
                        d.url.as_deref(),
                        "is required for kind = \"stow\" (the DICOMweb base URL)",
                        parse_http_url,
                    )
                    .map(|url| Destination::Stow { url }),
                DestinationKind::Dimse => {
                    let address = p.required(
                        k("address"),
                        d.address.as_deref(),
                        "is required for kind = \"dimse\" (host:port)",
                        HostPort::parse,
                    );
                    let called_ae = p.required(
                        k("called_ae_title"),
                        d.called_ae_title.as_deref(),
                        "is required for kind = \"dimse\"",
                        AeTitle::parse,
                    );
                    let calling_ae = match d.calling_ae_title.as_deref() {
                        Some(ae) => p.one(k("calling_ae_title"), AeTitle::parse(ae)),
                        None => listener_ae.clone(),
                    };
                    match (address, called_ae, calling_ae) {
                        (Some(address), Some(called_ae), Some(calling_ae)) => {
                            Some(Destination::Dimse {
                                address,
                                called_ae,
                                calling_ae,
                            })
                        }
                        _ => None,
                    }
                }
            });
        }
        match (
            listener_ae,
            destinations.into_iter().collect::<Option<Vec<_>>>(),
        ) {
            (Some(listener_ae), Some(destinations)) if p.problems.is_empty() => Ok(Endpoints {
                listener_ae,
                allowed_called,
                allowed_calling,
                allowed_networks,
                destinations,
            }),
            _ => Err(p.problems),
        }
    }
}

/// A DICOMweb base URL: `http://` or `https://`, then a host.
fn parse_http_url(u: &str) -> Result<String, String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| format!("{u:?} must start with http:// or https://"))?;
    if rest.split(['/', ':', '?']).next().is_none_or(str::is_empty) {
        return Err(format!("{u:?} has no host after the scheme"));
    }
    Ok(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(listener: &str, destinations: &str) -> DesiredConfig {
        let text = format!("[listener]\nbind = \"0.0.0.0:11112\"\n{listener}\n{destinations}");
        toml::from_str(&text).expect("parses")
    }

    #[test]
    fn every_value_is_parsed_into_its_type() {
        let c = doc(
            "ae_title = \"MEDGATE\"\nallowed_calling_ae_titles = [\"CT1\"]\nallowed_networks = [\"10.20.0.0/16\"]",
            "[[destination]]\nname = \"a\"\nkind = \"dimse\"\naddress = \"pacs:104\"\ncalled_ae_title = \"PACS\"\n[[destination]]\nname = \"b\"\nkind = \"stow\"\nurl = \"https://x/dicom-web\"\n",
        );
        let e = c.endpoints().expect("valid");
        assert_eq!(e.listener_ae.as_str(), "MEDGATE");
        assert_eq!(e.allowed_calling[0].as_str(), "CT1");
        assert!(e.allowed_networks[0].contains("10.20.1.2".parse().expect("ip")));
        assert_eq!(
            e.destinations,
            vec![
                Destination::Dimse {
                    address: HostPort::parse("pacs:104").expect("hp"),
                    called_ae: AeTitle::parse("PACS").expect("ae"),
                    calling_ae: AeTitle::parse("MEDGATE").expect("ae"),
                },
                Destination::Stow {
                    url: "https://x/dicom-web".into()
                },
            ]
        );
    }

    #[test]
    fn every_bad_value_is_named_at_once() {
        let c = doc(
            "ae_title = \"A_FAR_TOO_LONG_TITLE\"\nallowed_networks = [\"10.0.0.0/8\", \"10.0.0.0/40\"]",
            "[[destination]]\nname = \"a\"\nkind = \"dimse\"\naddress = \"pacs\"\ncalling_ae_title = \"\"\n[[destination]]\nname = \"b\"\nkind = \"stow\"\nurl = \"https:///dicom-web\"\n",
        );
        let keys: Vec<String> = c
            .endpoints()
            .expect_err("invalid")
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            vec![
                "listener.ae_title",
                "listener.allowed_networks[1]",
                "destination[0].address",
                "destination[0].called_ae_title",
                "destination[0].calling_ae_title",
                "destination[1].url",
            ]
        );
    }
}
