//! The fleet's update instructions on their way to the agent: the fleet link puts the latest
//! `update/desired` here, the agent's task takes it. Only the latest counts (a newer
//! instruction replaces one not taken yet), as with the retained topic itself.

use medgate_contract::DesiredUpdate;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::Notify;

/// The device's identity for the download: the fleet CA that signs the fleet's certificate,
/// and the device certificate and key the fleet authenticates the device by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// PEM file of the fleet's CA.
    pub ca: PathBuf,
    /// PEM certificate of this device.
    pub certificate: PathBuf,
    /// PEM private key of this device.
    pub private_key: PathBuf,
}

impl Identity {
    /// The files `medgate-appliance enroll` writes beside the settings file (`ca.crt`,
    /// `device.crt`, `device.key`).
    pub fn beside(settings: &Path) -> Option<Identity> {
        use crate::fleet::enroll::files;
        let dir = settings.parent()?;
        Some(Identity {
            ca: dir.join(files::CA),
            certificate: dir.join(files::CERT),
            private_key: dir.join(files::KEY),
        })
    }
}

/// One instruction and the identity to download with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// What the fleet wants.
    pub desired: DesiredUpdate,
    /// How to authenticate the download; none when the fleet link has no device certificate.
    pub identity: Option<Identity>,
}

/// The latest instruction not taken yet.
#[derive(Debug, Default)]
pub struct Inbox {
    latest: Mutex<Option<Offered>>,
    notify: Notify,
}

impl Inbox {
    /// Puts `offered` (replacing one not taken yet) and wakes the agent.
    pub fn put(&self, offered: Offered) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(offered);
        self.notify.notify_one();
    }

    /// Takes the latest instruction, if any.
    pub fn take(&self) -> Option<Offered> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Waits until something is put (at once if something was put since the last wait).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_contract::{Schema, Token, UpdateAction};

    fn cancel(campaign: &str) -> Offered {
        Offered {
            desired: DesiredUpdate {
                schema: Schema::default(),
                campaign: Token::new(campaign).expect("token"),
                issued_at_ms: 1,
                action: UpdateAction::Cancel,
            },
            identity: None,
        }
    }

    #[tokio::test]
    async fn only_the_latest_instruction_is_taken_and_a_put_wakes_the_waiter() {
        let inbox = Inbox::default();
        assert_eq!(inbox.take(), None);
        inbox.put(cancel("c-1"));
        inbox.put(cancel("c-2"));
        // The put before the wait left a permit: this returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), inbox.changed())
            .await
            .expect("woken");
        assert_eq!(inbox.take(), Some(cancel("c-2")));
        assert_eq!(inbox.take(), None);
    }
}
