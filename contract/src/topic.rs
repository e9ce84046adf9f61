//! The MQTT topic layout: `medgate/v1/{site}/{device}/{kind}`.
//!
//! `v1` is the topic version: it changes only if the layout changes. Message schemas have their own
//! version (the `schema` field of every payload).

use std::fmt;

use crate::values::{DeviceId, SiteId};

/// First levels of every Medgate topic.
pub const TOPIC_ROOT: &str = "medgate/v1";

/// The last level(s) of a device topic: what kind of message travels on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Appliance → fleet, retained, QoS 1: inventory at every connect ([`crate::Birth`]).
    Birth,
    /// Appliance → fleet, retained, QoS 1: online/offline; the last will is "offline" ([`crate::State`]).
    State,
    /// Appliance → fleet, QoS 0, every N seconds ([`crate::Telemetry`]).
    Telemetry,
    /// Appliance → fleet, QoS 1, from the durable outbox, at least once ([`crate::Event`]).
    Event,
    /// Fleet → appliance, QoS 1: the events the fleet has stored ([`crate::EventReceipt`]); the
    /// appliance keeps an event in its outbox until its receipt arrives.
    EventReceipt,
    /// Fleet → appliance, QoS 1 ([`crate::Command`]).
    Cmd,
    /// Appliance → fleet, QoS 1, from the outbox ([`crate::CommandAck`]).
    CmdAck,
    /// Fleet → appliance, retained, QoS 1 ([`crate::DesiredConfig`]).
    ConfigDesired,
    /// Appliance → fleet, retained, QoS 1, from the outbox ([`crate::ReportedConfig`]).
    ConfigReported,
    /// Appliance → fleet, QoS 1, from the outbox: one chunk of a produced file, e.g. a
    /// diagnostics bundle ([`crate::FileChunk`]).
    File,
    /// Fleet → appliance, retained, QoS 1: the update this device is to install, or its
    /// cancellation ([`crate::DesiredUpdate`]).
    UpdateDesired,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 11] = [
        Kind::Birth,
        Kind::State,
        Kind::Telemetry,
        Kind::Event,
        Kind::EventReceipt,
        Kind::Cmd,
        Kind::CmdAck,
        Kind::ConfigDesired,
        Kind::ConfigReported,
        Kind::File,
        Kind::UpdateDesired,
    ];

    /// The topic suffix for this kind.
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Birth => "birth",
            Kind::State => "state",
            Kind::Telemetry => "telemetry",
            Kind::Event => "event",
            Kind::EventReceipt => "event-receipt",
            Kind::Cmd => "cmd",
            Kind::CmdAck => "cmd-ack",
            Kind::ConfigDesired => "config/desired",
            Kind::ConfigReported => "config/reported",
            Kind::File => "file",
            Kind::UpdateDesired => "update/desired",
        }
    }

    /// True for the kinds the appliance publishes (and the fleet only reads).
    pub fn from_device(self) -> bool {
        !matches!(
            self,
            Kind::Cmd | Kind::ConfigDesired | Kind::EventReceipt | Kind::UpdateDesired
        )
    }

    fn from_suffix(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.suffix() == s)
    }

    /// The filter the fleet subscribes to for this kind, for every device of every site.
    pub fn fleet_filter(self) -> String {
        format!("{TOPIC_ROOT}/+/+/{}", self.suffix())
    }
}

/// Why a topic is not a Medgate device topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// It does not start with `medgate/v1/`.
    #[error("topic {0:?} is not under {TOPIC_ROOT}/")]
    NotOurs(String),
    /// The site or device level is not a valid id.
    #[error("topic {topic:?}: {reason}")]
    BadId {
        /// The topic.
        topic: String,
        /// Which level and why.
        reason: String,
    },
    /// The suffix is not one of [`Kind`]'s.
    #[error(
        "topic {0:?}: unknown message kind (expected birth, state, telemetry, event, event-receipt, cmd, cmd-ack, config/desired, config/reported, file or update/desired)"
    )]
    UnknownKind(String),
}

/// A device's place in the topic tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceTopics {
    /// The site (hospital).
    pub site: SiteId,
    /// The device.
    pub device: DeviceId,
}

impl DeviceTopics {
    /// Topics of `device` at `site`.
    pub fn new(site: SiteId, device: DeviceId) -> Self {
        Self { site, device }
    }

    /// The full topic of `kind` for this device.
    pub fn topic(&self, kind: Kind) -> String {
        format!(
            "{TOPIC_ROOT}/{}/{}/{}",
            self.site,
            self.device,
            kind.suffix()
        )
    }

    /// Parses a full topic into the device and the kind.
    pub fn parse(topic: &str) -> Result<(DeviceTopics, Kind), TopicError> {
        let rest = topic
            .strip_prefix(TOPIC_ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::NotOurs(topic.to_owned()))?;
        let mut levels = rest.splitn(3, '/');
        let (Some(site), Some(device), Some(suffix)) =
            (levels.next(), levels.next(), levels.next())
        else {
            return Err(TopicError::UnknownKind(topic.to_owned()));
        };
        let bad = |e: crate::ValueError| TopicError::BadId {
            topic: topic.to_owned(),
            reason: e.to_string(),
        };
        let site = SiteId::new(site).map_err(bad)?;
        let device = DeviceId::new(device).map_err(bad)?;
        let kind =
            Kind::from_suffix(suffix).ok_or_else(|| TopicError::UnknownKind(topic.to_owned()))?;
        Ok((DeviceTopics { site, device }, kind))
    }
}

impl fmt::Display for DeviceTopics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOPIC_ROOT}/{}/{}", self.site, self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DeviceTopics {
        DeviceTopics::new(
            SiteId::new("st-olav").expect("id"),
            DeviceId::new("ct-1").expect("id"),
        )
    }

    #[test]
    fn round_trip_every_kind() {
        for kind in Kind::ALL {
            let t = dev().topic(kind);
            let (d, k) = DeviceTopics::parse(&t).expect("parses");
            assert_eq!((d, k), (dev(), kind), "{t}");
        }
        assert_eq!(
            dev().topic(Kind::ConfigDesired),
            "medgate/v1/st-olav/ct-1/config/desired"
        );
    }

    #[test]
    fn rejects_foreign_and_malformed_topics() {
        assert!(matches!(
            DeviceTopics::parse("other/v1/a/b/birth"),
            Err(TopicError::NotOurs(_))
        ));
        assert!(matches!(
            DeviceTopics::parse("medgate/v2/a/b/birth"),
            Err(TopicError::NotOurs(_))
        ));
        assert!(matches!(
            DeviceTopics::parse("medgate/v1/a/b"),
            Err(TopicError::UnknownKind(_))
        ));
        assert!(matches!(
            DeviceTopics::parse("medgate/v1/a/b/config/other"),
            Err(TopicError::UnknownKind(_))
        ));
        assert!(matches!(
            DeviceTopics::parse("medgate/v1/A/b/birth"),
            Err(TopicError::BadId { .. })
        ));
        assert!(matches!(
            DeviceTopics::parse("medgate/v1/a/+/birth"),
            Err(TopicError::BadId { .. })
        ));
    }

    #[test]
    fn fleet_filters() {
        assert_eq!(Kind::Event.fleet_filter(), "medgate/v1/+/+/event");
        assert!(Kind::Birth.from_device());
        assert!(!Kind::Cmd.from_device());
    }
}
