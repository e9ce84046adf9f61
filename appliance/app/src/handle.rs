//! The running appliance's handle: what the status endpoint, the board, the diagnostics bundle,
//! the fleet link and the supervisor see of an appliance that serves (typed accessors over its
//! parts), and the [`Hooks`] through which the one who runs it shares its event sink and gets
//! the running [`App`]. The wiring that builds one from a configuration is [`crate::app`]; this
//! module depends on none of the modules that use it.

use crate::config::Config;
use crate::events::Events;
use crate::forward::ForwardHub;
use crate::listener::ListenerContext;
use crate::metrics::Metrics;
use crate::workflow::Workflow;
use medgate_report::ReporterStatus;
use medgate_spool::{ReconcileReport, Spool};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The last hardware reading of the box: its inventory and the alarms it raises.
#[derive(Debug, Clone)]
pub struct Hardware {
    /// The inventory.
    pub inventory: medgate_hardware::Inventory,
    /// Its alarms (empty: none).
    pub alarms: Vec<String>,
}

/// The parts an appliance is made of, as the wiring ([`crate::app::run_with`]) built them.
#[derive(Debug)]
pub struct AppParts {
    /// The configuration it runs with.
    pub cfg: Config,
    /// The spool.
    pub spool: Arc<Spool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The destinations.
    pub hub: Arc<ForwardHub>,
    /// The listener context (health flags, workflow services, rules).
    pub listener: Arc<ListenerContext>,
    /// What start-up reconciliation found.
    pub reconcile: ReconcileReport,
    /// Listeners configured.
    pub listeners_expected: usize,
    /// Events for the fleet.
    pub events: Arc<Events>,
    /// The fleet reporter's state (none without a fleet).
    pub fleet: Arc<Probe>,
    /// Where its configuration comes from.
    pub config_source: ConfigSource,
    /// What the update agent is doing (for the status and the metrics).
    pub update: Arc<crate::update::view::UpdateView>,
}

/// The running appliance, shared with the status endpoint, the board and the fleet link.
#[derive(Debug)]
pub struct App {
    parts: AppParts,
    started: Instant,
    listeners_up: AtomicUsize,
    hardware: Mutex<Option<Hardware>>,
}

impl App {
    /// An appliance of these parts, starting now, no listener serving yet.
    pub fn new(parts: AppParts) -> App {
        App {
            parts,
            started: Instant::now(),
            listeners_up: AtomicUsize::new(0),
            hardware: Mutex::new(None),
        }
    }

    /// The configuration it runs with.
    pub fn cfg(&self) -> &Config {
        &self.parts.cfg
    }

    /// The spool.
    pub fn spool(&self) -> &Arc<Spool> {
        &self.parts.spool
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.parts.metrics
    }

    /// Its destinations.
    pub fn hub(&self) -> &Arc<ForwardHub> {
        &self.parts.hub
    }

    /// The listener context.
    pub fn listener(&self) -> &Arc<ListenerContext> {
        &self.parts.listener
    }

    /// The workflow services.
    pub fn workflow(&self) -> &Arc<Workflow> {
        &self.parts.listener.workflow
    }

    /// What start-up reconciliation found.
    pub fn reconcile(&self) -> &ReconcileReport {
        &self.parts.reconcile
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Events for the fleet.
    pub fn events(&self) -> &Arc<Events> {
        &self.parts.events
    }

    /// The fleet reporter's state, if reporting runs.
    pub fn fleet_status(&self) -> Option<ReporterStatus> {
        self.parts.fleet.status()
    }

    /// Where its configuration comes from.
    pub fn config_source(&self) -> ConfigSource {
        self.parts.config_source
    }

    /// What the update agent is doing.
    pub fn update(&self) -> &Arc<crate::update::view::UpdateView> {
        &self.parts.update
    }

    /// One more listener serves.
    pub fn listener_serving(&self) {
        self.listeners_up.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether every configured listener serves.
    pub fn listeners_ok(&self) -> bool {
        self.listeners_up.load(Ordering::Relaxed) >= self.parts.listeners_expected
    }

    /// The last hardware reading (none without a hardware profile, or before the first).
    pub fn hardware(&self) -> Option<Hardware> {
        self.hardware
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether a hardware reading is there.
    pub fn has_hardware(&self) -> bool {
        self.hardware
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Whether the last hardware reading raised an alarm.
    pub fn hardware_alarmed(&self) -> bool {
        self.hardware
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|h| !h.alarms.is_empty())
    }

    /// Records a new hardware reading.
    pub fn set_hardware(&self, hardware: Hardware) {
        *self.hardware.lock().unwrap_or_else(|p| p.into_inner()) = Some(hardware);
    }

    /// Healthy: every listener serves and the spool accepts writes. Returns the reason if not.
    pub fn health(&self) -> Result<(), String> {
        let up = self.listeners_up.load(Ordering::Relaxed);
        if up < self.parts.listeners_expected {
            return Err(format!(
                "{up} of {} listeners serving",
                self.parts.listeners_expected
            ));
        }
        if !self.parts.listener.spool_ok.load(Ordering::Relaxed) {
            return Err("the last spool write failed".into());
        }
        Ok(())
    }

    /// Takes objects out of quarantine (all, one id, all or one destination) and queues them
    /// again. Returns how many (object, destination) pairs were queued.
    pub async fn retry_quarantine(
        &self,
        id: Option<u64>,
        destination: Option<String>,
    ) -> Result<usize, String> {
        let spool = self.parts.spool.clone();
        let pairs = tokio::task::spawn_blocking(move || {
            spool.release_quarantine(id, destination.as_deref())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        for (id, d) in &pairs {
            self.parts.hub.requeue(*id, d);
        }
        Ok(pairs.len())
    }

    /// Gives up on quarantined objects received more than `older_than` ago (all if `None`); see
    /// [`Spool::purge_quarantine`]. Returns (objects, bytes) deleted.
    pub async fn purge_quarantine(
        &self,
        older_than: Option<Duration>,
    ) -> Result<(u64, u64), String> {
        let cutoff = older_than.map(|d| {
            medgate_contract::now_ms()
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        });
        let spool = self.parts.spool.clone();
        let (done, left) = tokio::task::spawn_blocking(move || {
            let done = spool.purge_quarantine(cutoff)?;
            Ok::<_, medgate_spool::SpoolError>((done, spool.quarantined()?))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        for d in &self.parts.hub.destinations {
            d.set_quarantined(left.iter().filter(|e| e.destination == d.name).count() as u64);
        }
        Ok(done)
    }
}

/// What the appliance shares with the one who runs it (the fleet link): its event sink, and
/// the running [`App`] while it serves.
#[derive(Debug, Default, Clone)]
pub struct Hooks {
    /// Events for the fleet; a no-op until a sink is connected.
    pub events: Arc<Events>,
    /// The fleet reporter's state, for the local status.
    pub fleet: Arc<Probe>,
    /// Why the configuration starting now is in force (for the rules audit list):
    /// "start-up" unless the supervisor says otherwise.
    pub reason: Arc<Mutex<Option<String>>>,
    /// The running appliance: set once it serves, cleared when it stops.
    pub current: Arc<Mutex<Option<Arc<App>>>>,
    /// Where the configuration starting next comes from (the supervisor sets it).
    pub config_source: Arc<Mutex<ConfigSource>>,
    /// What the update agent is doing (it outlives every appliance it watches).
    pub update: Arc<crate::update::view::UpdateView>,
    /// The fleet's latest update instruction, for the update agent.
    pub update_inbox: Arc<crate::update::inbox::Inbox>,
}

/// Where the running configuration comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum ConfigSource {
    /// The local file, as written.
    #[default]
    LocalFile,
    /// The fleet's desired configuration of this version, merged over the local file (which
    /// keeps the box-local tables: appliance, status, hardware, fleet).
    Fleet {
        /// The fleet's version of it.
        version: u64,
    },
}

impl Hooks {
    /// The running appliance, if any.
    pub fn app(&self) -> Option<Arc<App>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records where the configuration of the next start comes from.
    pub fn set_config_source(&self, source: ConfigSource) {
        *self.config_source.lock().unwrap_or_else(|p| p.into_inner()) = source;
    }

    pub(crate) fn config_source(&self) -> ConfigSource {
        *self.config_source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why the next start happens (see [`Hooks::reason`]).
    pub fn set_reason(&self, why: impl Into<String>) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.into());
    }

    pub(crate) fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "start-up".into())
    }

    pub(crate) fn set(&self, app: Option<Arc<App>>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = app;
    }
}

/// The reporter's state as the local status shows it (set once reporting runs).
#[derive(Default)]
pub struct Probe {
    status: std::sync::OnceLock<Box<dyn Fn() -> Option<ReporterStatus> + Send + Sync>>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("reporting", &self.status.get().is_some())
            .finish()
    }
}

impl Probe {
    /// The reporter's state, if reporting runs.
    pub fn status(&self) -> Option<ReporterStatus> {
        self.status.get().and_then(|f| f())
    }

    /// Connects the reporter's state (once; later calls change nothing).
    pub fn connect(&self, status: Box<dyn Fn() -> Option<ReporterStatus> + Send + Sync>) {
        let _ = self.status.set(status);
    }
}
