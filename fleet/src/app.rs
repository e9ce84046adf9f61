//! The fleet's shared state: the operations ([`Ops`]), the counters and the admin token.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::ops::Ops;

/// Shared state.
#[derive(Debug)]
pub struct App {
    /// Every domain operation, with the store and the publisher.
    pub ops: Ops,
    /// Counters.
    pub metrics: Metrics,
    /// SHA-256 (hex) of the admin bearer token.
    pub admin_token_sha256: String,
}

impl App {
    /// A new state.
    pub fn new(ops: Ops, admin_token_sha256: String) -> App {
        App {
            ops,
            metrics: Metrics::default(),
            admin_token_sha256,
        }
    }

    /// Background upkeep every 5 s: offline detection from missed heartbeats; every minute,
    /// telemetry downsampling and retention.
    pub fn spawn_upkeep(self: &Arc<Self>) {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                n += 1;
                app.ops.upkeep(n % 12 == 0).await;
            }
        });
    }
}
