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
}

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
         max_inflight_messages 100\n\
         max_queued_messages 100000\n\
         message_size_limit {limit}\n\
         acl_file {acl}\n\
         \n\
         listener {port} {bind}\n\
         cafile {ca}\n\
         certfile {cert}\n\
         keyfile {key}\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         tls_version tlsv1.2\n",
        persistence = files.persistence_dir,
        limit = medgate_contract::MAX_PAYLOAD_BYTES + 1024,
        acl = files.acl,
        ca = files.ca,
        cert = files.certificate,
        key = files.key,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_gives_devices_only_their_own_topics() {
        let acl = acl_file();
        assert!(acl.contains("pattern write medgate/v1/+/%u/event\n"));
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
