//! An MQTT collector: everything published on a filter, as a separate client (the fleet, or a
//! listener in a test) sees it.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (topic, payload, retain) of each message received.
pub type Received = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// Everything published on a filter, as seen by a separate MQTT client.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Collector {
    pub messages: Received,
    pub client: AsyncClient,
}

impl Collector {
    pub async fn start(
        port: u16,
        id: &str,
        filter: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Collector {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        // A persistent session, like the fleet's: messages published while it is away are kept.
        opts.set_clean_session(false);
        if let Some(tls) = tls {
            opts.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        let c = client.clone();
        let filter = filter.to_owned();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let c = c.clone();
                        let f = filter.clone();
                        tokio::spawn(async move { c.subscribe(f, QoS::AtLeastOnce).await });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        m.lock().expect("lock").push((
                            p.topic.clone(),
                            p.payload.to_vec(),
                            p.retain,
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Collector { messages, client }
    }

    pub fn on(&self, suffix: &str) -> Vec<Vec<u8>> {
        self.messages
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _, _)| t.ends_with(suffix))
            .map(|(_, p, _)| p.clone())
            .collect()
    }

    /// Waits until `pred` holds (polling), panics after `secs`.
    pub async fn wait(&self, secs: u64, what: &str, pred: impl Fn(&Collector) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !pred(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
