//! The embedded MQTT broker (rumqttd, in process): the zero-setup default.
//!
//! rumqttd 0.20 speaks MQTT 3.1.1, keeps nothing on disk and has no per-topic ACL: any client can
//! read any topic. It is for a laptop, a demo or a lab on loopback; production uses Mosquitto with
//! mutual TLS and per-device ACLs (`medgate-fleet broker-config`).

use std::collections::HashMap;
use std::net::SocketAddr;
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
    // Ready when the port is taken (probing with a connection would log an error in rumqttd).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(listen).is_ok() {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(listen));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
