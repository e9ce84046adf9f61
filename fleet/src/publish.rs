//! What the fleet sends to devices: commands, desired configurations and updates (retained)
//! and event receipts. [`Publisher`] is given to [`crate::ops::Ops`] at construction: the MQTT client
//! (which queues while the broker is away; rumqttc sends once connected), or, in tests, a memory
//! that keeps what was sent.

use std::sync::{Arc, Mutex};

use medgate_contract::{
    Command, DesiredConfig, DesiredUpdate, DeviceTopics, EventReceipt, Kind, encode,
};
use rumqttc::{AsyncClient, QoS};

/// A message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message does not encode (a contract limit).
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The MQTT client refused it (its queue is full or it stopped).
    #[error("MQTT client: {0}")]
    Client(#[from] rumqttc::ClientError),
}

/// A message as sent: topic, retained, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The topic.
    pub topic: String,
    /// Whether retained.
    pub retain: bool,
    /// The encoded message.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Inner {
    Mqtt(AsyncClient),
    Memory(Arc<Mutex<Vec<Sent>>>),
}

/// Sends the fleet's messages to devices.
#[derive(Debug, Clone)]
pub struct Publisher(Inner);

impl Publisher {
    /// Through the fleet's MQTT client.
    pub fn mqtt(client: AsyncClient) -> Publisher {
        Publisher(Inner::Mqtt(client))
    }

    /// Into memory (tests): returns the publisher and what it has sent.
    pub fn memory() -> (Publisher, Arc<Mutex<Vec<Sent>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        (Publisher(Inner::Memory(sent.clone())), sent)
    }

    async fn send(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        match &self.0 {
            Inner::Mqtt(c) => Ok(c.publish(topic, QoS::AtLeastOnce, retain, payload).await?),
            Inner::Memory(m) => {
                m.lock().unwrap_or_else(|p| p.into_inner()).push(Sent {
                    topic,
                    retain,
                    payload,
                });
                Ok(())
            }
        }
    }

    /// A command (QoS 1, not retained).
    pub async fn command(&self, topics: &DeviceTopics, cmd: &Command) -> Result<(), PublishError> {
        let payload = encode(cmd)?;
        self.send(topics.topic(Kind::Cmd), false, payload).await
    }

    /// A desired configuration (QoS 1, retained).
    pub async fn desired(
        &self,
        topics: &DeviceTopics,
        d: &DesiredConfig,
    ) -> Result<(), PublishError> {
        let payload = encode(d)?;
        self.send(topics.topic(Kind::ConfigDesired), true, payload)
            .await
    }

    /// ota (issue 14 part 2): the update a device is to install, or its cancellation (QoS 1,
    /// retained: a device that reconnects finds its instruction again).
    pub async fn update(
        &self,
        topics: &DeviceTopics,
        u: &DesiredUpdate,
    ) -> Result<(), PublishError> {
        let payload = encode(u)?;
        self.send(topics.topic(Kind::UpdateDesired), true, payload)
            .await
    }

    /// An event receipt (QoS 1), never waiting: an error when the client's queue is full.
    pub fn receipt(&self, topics: &DeviceTopics, r: &EventReceipt) -> Result<(), PublishError> {
        let payload = encode(r)?;
        let topic = topics.topic(Kind::EventReceipt);
        match &self.0 {
            Inner::Mqtt(c) => Ok(c.try_publish(topic, QoS::AtLeastOnce, false, payload)?),
            Inner::Memory(m) => {
                m.lock().unwrap_or_else(|p| p.into_inner()).push(Sent {
                    topic,
                    retain: false,
                    payload,
                });
                Ok(())
            }
        }
    }
}
