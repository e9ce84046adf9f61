//! The embedded MQTT broker (rumqttd, in process): the zero-setup default.
//!
//! rumqttd 0.20 speaks MQTT 3.1.1, keeps nothing on disk and has no per-topic ACL: any client can
//! read any topic. It is for a laptop, a demo or a lab on loopback; production uses Mosquitto with
//! mutual TLS and per-device ACLs (`medgate-fleet broker-config`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The address is taken or not ours.
    #[error(
        "the embedded MQTT broker cannot listen on {listen}: {source}; set [broker] listen to a free port"
    )]
    Bind {
        /// `[broker] listen`.
        listen: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No thread for it.
    #[error("cannot start the embedded MQTT broker's thread: {0}")]
    Thread(#[source] std::io::Error),
    /// It did not take the port within 10 s.
    #[error(
        "the embedded MQTT broker did not start listening on {0} within 10 s; see its log lines above"
    )]
    NotListening(SocketAddr),
}

/// Starts the broker on its own thread (`Broker::start` blocks) and waits until it accepts
/// connections. The broker lives as long as the process.
pub fn start_embedded(listen: SocketAddr) -> Result<(), BrokerError> {
    // rumqttd logs a bind failure on its thread and goes on; find it here instead.
    drop(
        std::net::TcpListener::bind(listen)
            .map_err(|source| BrokerError::Bind { listen, source })?,
    );
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: medgate_contract::MAX_PAYLOAD_BYTES + 1024,
        max_inflight_count: 200,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "v4-embedded".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 20_010,
            max_outgoing_packet_count: 1024,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    // Ready when it answers an MQTT CONNECT. (Probing by binding the port ourselves, as this
    // once did, held the port for an instant every 20 ms: a broker binding in that instant failed
    // for good, and the fleet manager then gave up after 10 s.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers_connect(listen) {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(listen));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// MQTT 3.1.1 CONNECT: clean session, keep-alive 10 s, client id `medgate-broker-probe`.
const PROBE_CONNECT: &[u8] = &[
    0x10, 32, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 20, b'm', b'e', b'd', b'g', b'a',
    b't', b'e', b'-', b'b', b'r', b'o', b'k', b'e', b'r', b'-', b'p', b'r', b'o', b'b', b'e',
];
/// CONNACK, session not present, connection accepted.
const CONNACK_ACCEPTED: [u8; 4] = [0x20, 2, 0, 0];
/// DISCONNECT.
const DISCONNECT: [u8; 2] = [0xe0, 0];

/// Whether an MQTT broker on `addr` accepts a connection: CONNECT, CONNACK, DISCONNECT.
fn answers_connect(addr: SocketAddr) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(PROBE_CONNECT)?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack)?;
        // Best effort: the answer is in; a lost DISCONNECT only ends the session by timeout.
        let _ = s.write_all(&DISCONNECT);
        Ok(ack == CONNACK_ACCEPTED)
    };
    probe().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_well_formed_connect() {
        // Remaining length: everything after the two bytes of the fixed header.
        assert_eq!(usize::from(PROBE_CONNECT[1]), PROBE_CONNECT.len() - 2);
        // The client id's length prefix matches the id.
        assert_eq!(usize::from(PROBE_CONNECT[13]), PROBE_CONNECT.len() - 14);
        assert_eq!(&PROBE_CONNECT[14..], b"medgate-broker-probe");
    }

    #[test]
    fn nothing_listening_is_not_ready() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        assert!(!answers_connect(port));
    }

    #[test]
    fn the_embedded_broker_is_ready_when_start_returns_and_takes_a_second_start_as_a_bind_error() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        start_embedded(addr).expect("the broker starts");
        assert!(answers_connect(addr), "it answers an MQTT CONNECT");
        assert!(matches!(
            start_embedded(addr),
            Err(BrokerError::Bind { .. })
        ));
    }
}
