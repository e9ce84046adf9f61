//! `medgate-fleet broker-config`: a Mosquitto configuration with mutual TLS, the certificate's
//! common name as the username (`use_identity_as_username`) and ACL patterns so that a device can
//! only publish its own topics and read its own commands and desired configuration.

use medgate_contract::{Kind, TOPIC_ROOT};

/// The username (certificate common name) of the fleet manager on the broker.
pub const FLEET_USERNAME: &str = "medgate-fleet";

/// The ACL file. `%u` is the username, i.e. the device id from its certificate. The site level is
/// a wildcard: device ids are unique in the fleet, and the fleet refuses messages whose site is
/// not the device's registered site.
pub fn acl_file() -> String {
    let mut s = String::from(
        "# Medgate broker ACL, written by `medgate-fleet broker-config`.\n\
         # Devices: username = device id (certificate CN). Each may write only its own topics and\n\
         # read only its own commands and desired configuration.\n",
    );
    for kind in Kind::ALL {
        let access = if kind.from_device() { "write" } else { "read" };
        s.push_str(&format!(
            "pattern {access} {TOPIC_ROOT}/+/%u/{}\n",
            kind.suffix()
        ));
    }
    s.push_str(&format!(
        "\n# The fleet manager reads every device topic and writes commands and desired configuration.\n\
         user {FLEET_USERNAME}\ntopic readwrite {TOPIC_ROOT}/#\n"
    ));
    s
}

/// Paths used in the generated configuration.
#[derive(Debug, Clone)]
pub struct BrokerFiles {
    /// CA certificate (the fleet CA).
    pub ca: String,
    /// Broker certificate.
    pub certificate: String,
    /// Broker key.
    pub key: String,
    /// ACL file.
    pub acl: String,
    /// Persistence directory.
    pub persistence_dir: String,
    /// Certificate revocation list (the fleet rewrites it: `[broker] crl_file`).
    pub crl: String,
}

/// Mosquitto's `max_inflight_messages`: QoS 1/2 messages sent to one client and not yet
/// acknowledged. Mosquitto queues a client's further QoS 1/2 messages behind them, so for the
/// fleet's subscription this bounds the rate of events, births and states to
/// `MAX_INFLIGHT_MESSAGES / round trip` (100 gave seconds of delay at 5,000 devices).
pub const MAX_INFLIGHT_MESSAGES: u32 = 1000;
/// Mosquitto's `max_queued_messages`: QoS 1/2 messages queued per client beyond those in flight.
pub const MAX_QUEUED_MESSAGES: u32 = 100_000;

/// The mosquitto.conf text.
pub fn mosquitto_conf(bind: &str, port: u16, files: &BrokerFiles) -> String {
    format!(
        "# Medgate MQTT broker, written by `medgate-fleet broker-config`.\n\
         # Mutual TLS only: every client presents a certificate of the fleet CA; its CN is its username.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         persistence true\n\
         persistence_location {persistence}/\n\
         autosave_interval 30\n\
         # QoS 1/2 messages in flight per client. The fleet's one subscription carries every\n\
         # device's events, births and states (~1,000/s while 5,000 devices connect): with 100 in\n\
         # flight they queued here for seconds whenever the fleet's acknowledgements took > 0.1 s.\n\
         max_inflight_messages {inflight}\n\
         # QoS 1/2 messages queued per client beyond those (QoS 0 is not queued for an offline\n\
         # client): the fleet's backlog while it restarts, ~200 s of events of 5,000 devices.\n\
         max_queued_messages {queued}\n\
         message_size_limit {limit}\n\
         acl_file {acl}\n\
         \n\
         listener {port} {bind}\n\
         cafile {ca}\n\
         # Revoked device certificates, rewritten by the fleet; read at start: restart after a revocation.\n\
         crlfile {crl}\n\
         certfile {cert}\n\
         keyfile {key}\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         tls_version tlsv1.2\n",
        persistence = files.persistence_dir,
        inflight = MAX_INFLIGHT_MESSAGES,
        queued = MAX_QUEUED_MESSAGES,
        limit = medgate_contract::MAX_PAYLOAD_BYTES + 1024,
        acl = files.acl,
        ca = files.ca,
        crl = files.crl,
        cert = files.certificate,
        key = files.key,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BrokerFiles {
        BrokerFiles {
            ca: "/b/ca.crt".into(),
            certificate: "/b/broker.crt".into(),
            key: "/b/broker.key".into(),
            acl: "/b/acl".into(),
            persistence_dir: "/b/persistence".into(),
            crl: "/b/crl.pem".into(),
        }
    }

    #[test]
    fn conf_lets_the_fleet_subscription_keep_many_messages_in_flight() {
        let conf = mosquitto_conf("127.0.0.1", 8883, &files());
        let setting = |name: &str| -> u32 {
            let line = conf
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in\n{conf}"));
            line[name.len() + 1..].parse().expect("a number")
        };
        let inflight = setting("max_inflight_messages");
        assert!(
            inflight >= 1000,
            "max_inflight_messages {inflight} throttles the fleet's subscription"
        );
        assert!(setting("max_queued_messages") >= 10 * inflight);
        assert!(conf.contains("listener 8883 127.0.0.1\n"));
        assert!(conf.contains("require_certificate true\n"));
        assert!(conf.contains("use_identity_as_username true\n"));
        assert!(conf.contains("acl_file /b/acl\n"));
        assert!(conf.contains("crlfile /b/crl.pem\n"));
    }

    #[test]
    fn acl_gives_devices_only_their_own_topics() {
        let acl = acl_file();
        assert!(acl.contains("pattern write medgate/v1/+/%u/event\n"));
        assert!(acl.contains("pattern write medgate/v1/+/%u/file\n"));
        assert!(acl.contains("pattern read medgate/v1/+/%u/cmd\n"));
        assert!(acl.contains("pattern read medgate/v1/+/%u/config/desired\n"));
        assert!(
            !acl.contains("pattern readwrite"),
            "no device reads what it writes"
        );
        assert!(
            !acl.contains("pattern write medgate/v1/+/%u/cmd\n"),
            "devices cannot forge commands"
        );
    }
}
