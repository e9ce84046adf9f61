//! Clinical workflow services at the edge, each optional (off when its configuration section is
//! absent): the Storage Commitment Push Model SCP ([`commitment`]) and the Modality Worklist
//! proxy ([`worklist`]), quality checks at ingest ([`qc`], [`qc_service`]). [`session`] is their part of an incoming association, [`assoc`] the
//! message-level association they use to talk to other AEs.

pub mod assoc;
pub mod commitment;
pub mod config;
pub mod qc;
pub mod qc_service;
pub mod session;
pub mod worklist;

use std::sync::Arc;

/// The workflow services configured on this appliance.
#[derive(Debug, Default)]
pub struct Workflow {
    /// Storage commitment SCP.
    pub commitment: Option<Arc<commitment::Commitment>>,
    /// Modality Worklist proxy.
    pub worklist: Option<Arc<worklist::Worklist>>,
    /// Quality checks at ingest.
    pub qc: Option<Arc<qc_service::QcService>>,
}

impl Workflow {
    /// Opens the configured services' state in the workflow store (`store`, apart from the
    /// rebuildable spool index).
    pub fn start(
        cfg: &crate::config::Config,
        spool: &Arc<medgate_spool::Spool>,
        store: &medgate_spool::WorkflowStore,
    ) -> Result<Self, medgate_spool::SpoolError> {
        let commitment = match &cfg.commitment {
            Some(c) => Some(Arc::new(commitment::Commitment::open(
                c.clone(),
                spool.clone(),
                store,
            )?)),
            None => None,
        };
        let worklist = match &cfg.worklist {
            Some(w) => Some(Arc::new(worklist::Worklist::open(
                w.clone(),
                &cfg.listener.ae_title,
                store,
            )?)),
            None => None,
        };
        let qc = match &cfg.qc {
            Some(q) => Some(Arc::new(qc_service::QcService::open(
                q,
                spool.clone(),
                store,
            )?)),
            None => None,
        };
        Ok(Workflow {
            commitment,
            worklist,
            qc,
        })
    }

    /// Spawns the services' background tasks.
    pub fn spawn(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) {
        if let Some(c) = &self.commitment {
            tasks.spawn(c.clone().run(shutdown.clone()));
        }
        if let Some(q) = &self.qc {
            tasks.spawn(q.clone().run(shutdown.clone()));
        }
    }

    /// An object was durably stored (quality checks run in the background).
    pub fn on_stored(&self, rec: &medgate_spool::ObjectRecord) {
        if let Some(q) = &self.qc {
            q.on_stored(rec);
        }
    }

    /// The non-storage SOP classes the listener accepts for these services.
    pub fn sop_classes(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.commitment.is_some() {
            v.push(medgate_dicom::commitment::SOP_CLASS.to_string());
        }
        if self.worklist.is_some() {
            v.push(medgate_dicom::worklist::SOP_CLASS.to_string());
        }
        v
    }

    /// The `workflow` part of `/api/status` (counts only, no patient data).
    pub fn status(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(c) = &self.commitment {
            m.insert("commitment".into(), c.status());
        }
        if let Some(w) = &self.worklist {
            m.insert("worklist".into(), w.status());
        }
        if let Some(q) = &self.qc {
            m.insert("qc".into(), q.status());
        }
        serde_json::Value::Object(m)
    }

    /// Prometheus lines of the workflow services.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        if let Some(c) = &self.commitment {
            c.render_metrics(&mut out);
        }
        if let Some(w) = &self.worklist {
            w.render_metrics(&mut out);
        }
        if let Some(q) = &self.qc {
            q.render_metrics(&mut out);
        }
        out
    }
}
