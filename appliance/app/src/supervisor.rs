//! The process supervisor the `run` command uses, with or without a fleet: it claims the data
//! directory, runs the appliance ([`crate::app`]) and carries out configuration changes and
//! restarts with an automatic rollback.
//!
//! The decisions are the pure state machine [`machine::Supervisor`] (unit-tested as a table);
//! [`run`] is the thin async driver that carries out its [`machine::Action`]s and feeds it the
//! [`machine::Event`]s they produce. A new configuration replaces the running appliance in this
//! process: wait for DICOM to go idle (bounded), stop the appliance, start it with the new
//! configuration and keep it only if it turns healthy within [`HEALTHY_WITHIN`]; otherwise the
//! previous configuration is started again and the requester is told why (a code).

use crate::app::AppError;
use crate::config::Config;
use crate::handle::{App, Hooks};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long a new configuration has to make the appliance healthy.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(20);
/// How long a configuration change or a restart waits for DICOM to go idle.
pub const IDLE_WITHIN: Duration = Duration::from_secs(120);

/// What the supervisor is asked to do (by the fleet's commands).
pub enum Request {
    /// Run `cfg` (the fleet's configuration `version`, merged over the local file); the reply
    /// is `Ok` once the appliance is healthy with it, else the code of why it was rolled back.
    Apply {
        /// The configuration to run.
        cfg: Box<Config>,
        /// The fleet's version of it.
        version: u64,
        /// The outcome.
        reply: oneshot::Sender<Result<(), &'static str>>,
    },
    /// Restart the appliance with the configuration it runs.
    Restart,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Apply { version, .. } => write!(f, "Apply({version})"),
            Request::Restart => f.write_str("Restart"),
        }
    }
}

/// A finishing step run once the appliance stopped (e.g. flushing the fleet reporter).
pub type Finish = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What a fleet link gives the supervisor once attached.
pub struct Attachment {
    /// Requests from the fleet.
    pub requests: mpsc::Receiver<Request>,
    /// The configuration last applied from the fleet that proved healthy (merged over the
    /// local file), with its version: started first, the local file if it does not come up.
    pub kept: Option<(Config, u64)>,
    /// Called with an appliance about to be stopped (its counters are carried over).
    pub on_retire: Box<dyn Fn(&App) + Send + Sync>,
    /// Called once a (re)started appliance is up: its inventory may have changed.
    pub on_inventory: Box<dyn Fn() + Send + Sync>,
    /// Run last, after the appliance stopped.
    pub finish: Finish,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("kept", &self.kept.as_ref().map(|(_, v)| v))
            .finish_non_exhaustive()
    }
}

/// Errors that stop the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The appliance could not start or failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// The reporter could not start.
    #[error(
        "fleet reporting: {0}; fix [fleet] or the enrollment file, or remove it to run without the fleet"
    )]
    Report(#[from] medgate_report::ReportError),
}

/// The pure decisions of the supervisor: which configuration runs, when to roll back and why.
pub mod machine {
    use crate::app::AppError;
    use crate::handle::ConfigSource;

    /// What the driver is told to do, in order.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Action<C> {
        /// Start an appliance with `cfg` (`reason`, when given, goes to the rules audit list).
        Start {
            /// The configuration.
            cfg: C,
            /// Where it comes from (the status and the fleet show it).
            source: ConfigSource,
            /// Why it starts now (`None`: leave the last reason).
            reason: Option<String>,
        },
        /// Wait (bounded) until the started appliance is healthy: [`Event::Healthy`] or
        /// [`Event::Unhealthy`].
        WaitHealthy,
        /// Wait (bounded) until DICOM is idle; produces no event unless shut down meanwhile.
        WaitIdle,
        /// Stop the running appliance: [`Event::Stopped`].
        Stop,
        /// Tell the fleet the inventory may have changed.
        RefreshInventory,
        /// Answer the pending [`Event::Apply`]: applied, or rolled back with this code.
        Reply(Result<(), &'static str>),
        /// Leave: the supervisor is done.
        Exit,
    }

    /// What happened.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Event<C> {
        /// The started appliance turned healthy in time.
        Healthy,
        /// It did not (why).
        Unhealthy(String),
        /// The appliance stopped; `failure` is the code of its error if it failed.
        Stopped {
            /// See [`failure_code`].
            failure: Option<&'static str>,
        },
        /// The fleet asks to run `cfg`, its configuration `version`.
        Apply {
            /// The configuration.
            cfg: C,
            /// Its version.
            version: u64,
        },
        /// The fleet asks for a restart.
        Restart,
        /// The running appliance ended by itself.
        Exited,
        /// The process is asked to stop.
        Shutdown,
    }

    #[derive(Debug, Clone)]
    enum Next<C> {
        Apply { cfg: C, version: u64 },
        Restart,
    }

    #[derive(Debug, Clone)]
    enum Phase<C> {
        /// The first appliance started; waiting for it to be healthy.
        Booting { from_fleet: bool },
        /// The kept fleet configuration did not come up: stopping it.
        FallingBack,
        /// Serving; requests are taken.
        Running,
        /// Stopping the running appliance for `next`.
        Leaving(Next<C>),
        /// The new configuration started; waiting for it to be healthy.
        Trying { cfg: C, version: u64 },
        /// The new configuration did not come up: stopping it.
        Abandoning { version: u64 },
        /// The previous configuration started again; the reply carries `code`.
        RollingBack { code: &'static str },
        /// Restarted; waiting for it to be healthy.
        Restarting,
        /// Stopping for good.
        ShuttingDown,
        /// Gone.
        Done,
    }

    /// The state machine. `C` is the configuration (opaque here).
    #[derive(Debug, Clone)]
    pub struct Supervisor<C> {
        local: C,
        current: (C, ConfigSource),
        phase: Phase<C>,
    }

    /// The code the fleet is shown for a configuration that did not bring the appliance up.
    pub fn failure_code(e: &AppError) -> &'static str {
        match e {
            AppError::Bind { .. } => "listener_down",
            AppError::Tls { .. } => "tls_unusable",
            AppError::Destination { .. } => "destination_unusable",
            AppError::Spool { .. } => "spool_unusable",
            AppError::Config { .. } => "config_invalid",
            _ => "unhealthy",
        }
    }

    impl<C: Clone + std::fmt::Debug> Supervisor<C> {
        /// Starts with the configuration kept from the fleet if any (version given), else the
        /// local file. Returns the first actions.
        pub fn new(local: C, kept: Option<(C, u64)>) -> (Self, Vec<Action<C>>) {
            let from_fleet = kept.is_some();
            let current = match kept {
                Some((cfg, version)) => (cfg, ConfigSource::Fleet { version }),
                None => (local.clone(), ConfigSource::LocalFile),
            };
            let s = Supervisor {
                local,
                current,
                phase: Phase::Booting { from_fleet },
            };
            let first = vec![s.start(None), Action::WaitHealthy];
            (s, first)
        }

        /// The configuration in force (kept across rollbacks) and where it comes from.
        pub fn current(&self) -> &(C, ConfigSource) {
            &self.current
        }

        /// Whether it serves and takes requests.
        pub fn is_running(&self) -> bool {
            matches!(self.phase, Phase::Running)
        }

        /// Whether it is done.
        pub fn is_done(&self) -> bool {
            matches!(self.phase, Phase::Done)
        }

        fn start(&self, reason: Option<String>) -> Action<C> {
            Action::Start {
                cfg: self.current.0.clone(),
                source: self.current.1,
                reason,
            }
        }

        /// What to do on `event`.
        pub fn on(&mut self, event: Event<C>) -> Vec<Action<C>> {
            use Action as A;
            use Event as E;
            let phase = std::mem::replace(&mut self.phase, Phase::Done);
            let (phase, actions) = match (phase, event) {
                (Phase::Done, _) => (Phase::Done, vec![]),
                (Phase::ShuttingDown, E::Stopped { .. }) => (Phase::Done, vec![A::Exit]),
                (Phase::ShuttingDown, _) => (Phase::ShuttingDown, vec![]),
                (_, E::Shutdown) => (Phase::ShuttingDown, vec![A::Stop]),

                (Phase::Booting { from_fleet: true }, E::Unhealthy(why)) => {
                    tracing::error!(reason = %why, "the configuration kept from the fleet does not come up; running the local file");
                    (Phase::FallingBack, vec![A::Stop])
                }
                (Phase::FallingBack, E::Stopped { .. }) => {
                    self.current = (self.local.clone(), ConfigSource::LocalFile);
                    (
                        Phase::Booting { from_fleet: false },
                        vec![self.start(None), A::WaitHealthy],
                    )
                }
                (Phase::Booting { .. }, E::Healthy) => (Phase::Running, vec![A::RefreshInventory]),
                (Phase::Booting { from_fleet: false }, E::Unhealthy(why)) => {
                    tracing::warn!(reason = %why, "not healthy yet");
                    (Phase::Running, vec![A::RefreshInventory])
                }

                (Phase::Running, E::Apply { cfg, version }) => (
                    Phase::Leaving(Next::Apply { cfg, version }),
                    vec![A::WaitIdle, A::Stop],
                ),
                (Phase::Running, E::Restart) => {
                    (Phase::Leaving(Next::Restart), vec![A::WaitIdle, A::Stop])
                }
                (Phase::Running, E::Exited) => (Phase::Done, vec![A::Exit]),

                (Phase::Leaving(Next::Apply { cfg, version }), E::Stopped { .. }) => {
                    tracing::info!(version, "switching to the configuration from the fleet");
                    let start = A::Start {
                        cfg: cfg.clone(),
                        source: ConfigSource::Fleet { version },
                        reason: Some(format!("fleet configuration v{version}")),
                    };
                    (Phase::Trying { cfg, version }, vec![start, A::WaitHealthy])
                }
                (Phase::Trying { cfg, version }, E::Healthy) => {
                    tracing::info!(
                        version,
                        "configuration from the fleet applied: the appliance is healthy with it"
                    );
                    self.current = (cfg, ConfigSource::Fleet { version });
                    (Phase::Running, vec![A::RefreshInventory, A::Reply(Ok(()))])
                }
                (Phase::Trying { version, .. }, E::Unhealthy(why)) => {
                    tracing::error!(version, reason = %why, "the configuration from the fleet does not bring the appliance up: rolling back");
                    (Phase::Abandoning { version }, vec![A::Stop])
                }
                (Phase::Abandoning { version }, E::Stopped { failure }) => (
                    Phase::RollingBack {
                        code: failure.unwrap_or("unhealthy"),
                    },
                    vec![
                        self.start(Some(format!(
                            "rollback from fleet configuration v{version}"
                        ))),
                        A::WaitHealthy,
                    ],
                ),
                (Phase::RollingBack { code }, E::Healthy) => (
                    Phase::Running,
                    vec![A::RefreshInventory, A::Reply(Err(code))],
                ),
                (Phase::RollingBack { code }, E::Unhealthy(why)) => {
                    tracing::error!(reason = %why, "the previous configuration does not come back up either");
                    (
                        Phase::Running,
                        vec![A::RefreshInventory, A::Reply(Err(code))],
                    )
                }

                (Phase::Leaving(Next::Restart), E::Stopped { .. }) => {
                    tracing::info!("restarting the appliance (fleet command)");
                    (
                        Phase::Restarting,
                        vec![
                            self.start(Some("restart (fleet command)".into())),
                            A::WaitHealthy,
                        ],
                    )
                }
                (Phase::Restarting, E::Healthy) => (Phase::Running, vec![A::RefreshInventory]),
                (Phase::Restarting, E::Unhealthy(why)) => {
                    tracing::error!(reason = %why, "not healthy after the restart");
                    (Phase::Running, vec![A::RefreshInventory])
                }
                // Anything else does not happen in this phase (the driver takes requests only
                // while running): nothing to do.
                (phase, event) => {
                    tracing::debug!(?event, "supervisor: event ignored in this phase");
                    (phase, vec![])
                }
            };
            self.phase = phase;
            actions
        }
    }
}

/// One running appliance.
struct Instance {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), AppError>>,
}

impl Instance {
    fn start(cfg: Config, hooks: &Hooks, parent: &CancellationToken) -> Instance {
        let cancel = parent.child_token();
        let task = tokio::spawn(crate::app::run_with(cfg, cancel.clone(), hooks.clone()));
        Instance { cancel, task }
    }

    /// Healthy within `limit`, or why not.
    async fn healthy(&mut self, hooks: &Hooks, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if self.task.is_finished() {
                return Err("the appliance stopped while starting".into());
            }
            if let Some(app) = hooks.app() {
                if app.health().is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(hooks
                    .app()
                    .and_then(|a| a.health().err())
                    .unwrap_or_else(|| "not serving".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it and waits; returns its error if it failed.
    async fn stop(
        self,
        hooks: &Hooks,
        on_retire: &(dyn Fn(&App) + Send + Sync),
    ) -> Option<AppError> {
        if let Some(app) = hooks.app() {
            on_retire(&app);
        }
        self.cancel.cancel();
        match self.task.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(AppError::Internal(e.to_string())),
        }
    }
}

/// Waits (at most 15 s) for the first hardware inventory when a hardware profile is configured,
/// so that the birth message carries it.
async fn inventory_ready(hooks: &Hooks) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(app) = hooks.app() {
        let ready = app.cfg().hardware.profile.is_none() || app.has_hardware();
        if ready || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until no association is open, so a change never cuts a study in flight.
async fn idle(hooks: &Hooks) {
    let deadline = Instant::now() + IDLE_WITHIN;
    while let Some(app) = hooks.app() {
        let active = app.metrics().associations_active.load(Ordering::Relaxed);
        if active == 0 {
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                active,
                "DICOM still busy after {} s; going on",
                IDLE_WITHIN.as_secs()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the appliance with `local` until `shutdown`. Claims the data directory first
/// ([`crate::datadir::DataDir::claim`]): a second instance on the same directory is refused
/// before anything under it is touched. Then `attach` may connect a fleet link (reporting and
/// commands; `None`: no fleet): its requests change the configuration or restart the appliance.
pub async fn run(
    local: Config,
    shutdown: CancellationToken,
    attach: impl FnOnce(&Config, &Hooks) -> Result<Option<Attachment>, RunError>,
) -> Result<(), RunError> {
    crate::app::install_crypto_provider();
    let _claim =
        crate::datadir::DataDir::claim(&local.appliance.data_dir).map_err(AppError::from)?;
    let hooks = Hooks::default();
    let Attachment {
        mut requests,
        kept,
        on_retire,
        on_inventory,
        finish,
    } = match attach(&local, &hooks)? {
        Some(a) => a,
        None => Attachment {
            requests: mpsc::channel(1).1,
            kept: None,
            on_retire: Box::new(|_| {}),
            on_inventory: Box::new(|| {}),
            finish: Box::new(|| Box::pin(async {})),
        },
    };
    let (mut machine, first) = machine::Supervisor::new(local, kept);
    let mut instance: Option<Instance> = None;
    let mut reply: Option<oneshot::Sender<Result<(), &'static str>>> = None;
    let mut last_error: Option<AppError> = None;
    let mut todo: std::collections::VecDeque<_> = first.into();
    use machine::{Action, Event};
    loop {
        let event = match todo.pop_front() {
            Some(Action::Start {
                cfg,
                source,
                reason,
            }) => {
                if let Some(why) = reason {
                    hooks.set_reason(why);
                }
                hooks.set_config_source(source);
                instance = Some(Instance::start(cfg, &hooks, &shutdown));
                None
            }
            Some(Action::WaitHealthy) => {
                let Some(i) = instance.as_mut() else {
                    continue;
                };
                tokio::select! {
                    r = i.healthy(&hooks, HEALTHY_WITHIN) => Some(match r {
                        Ok(()) => Event::Healthy,
                        Err(why) => Event::Unhealthy(why),
                    }),
                    () = shutdown.cancelled() => Some(Event::Shutdown),
                }
            }
            Some(Action::WaitIdle) => {
                tokio::select! {
                    () = idle(&hooks) => None,
                    () = shutdown.cancelled() => Some(Event::Shutdown),
                }
            }
            Some(Action::Stop) => {
                let failed = match instance.take() {
                    Some(i) => i.stop(&hooks, &*on_retire).await,
                    None => None,
                };
                let failure = failed.as_ref().map(machine::failure_code);
                if let Some(e) = &failed {
                    tracing::warn!(error = %e, "the appliance stopped with an error");
                }
                last_error = failed;
                Some(Event::Stopped { failure })
            }
            Some(Action::RefreshInventory) => {
                inventory_ready(&hooks).await;
                on_inventory();
                None
            }
            Some(Action::Reply(r)) => {
                if let Some(tx) = reply.take() {
                    let _ = tx.send(r);
                }
                None
            }
            Some(Action::Exit) => break,
            None if machine.is_done() => break,
            None => {
                // Idle and serving: wait for a request, the end of the appliance or shutdown.
                let Some(i) = instance.as_mut() else {
                    break;
                };
                tokio::select! {
                    () = shutdown.cancelled() => Some(Event::Shutdown),
                    finished = &mut i.task => {
                        instance = None;
                        last_error = match finished {
                            Ok(r) => r.err(),
                            Err(e) => Some(AppError::Internal(e.to_string())),
                        };
                        Some(Event::Exited)
                    }
                    Some(req) = requests.recv(), if machine.is_running() => Some(match req {
                        Request::Apply { cfg, version, reply: tx } => {
                            reply = Some(tx);
                            Event::Apply { cfg: *cfg, version }
                        }
                        Request::Restart => Event::Restart,
                    }),
                }
            }
        };
        if let Some(event) = event {
            // The machine's answer replaces what was left of the last answer.
            todo = machine.on(event).into();
        }
    }
    drop(reply);
    finish().await;
    match last_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::machine::{Action as A, Event as E, Supervisor, failure_code};
    use crate::app::AppError;
    use crate::handle::ConfigSource;

    const LOCAL: ConfigSource = ConfigSource::LocalFile;
    const fn fleet(version: u64) -> ConfigSource {
        ConfigSource::Fleet { version }
    }
    fn start(cfg: &'static str, source: ConfigSource, reason: Option<&str>) -> A<&'static str> {
        A::Start {
            cfg,
            source,
            reason: reason.map(str::to_string),
        }
    }
    fn stopped(failure: Option<&'static str>) -> E<&'static str> {
        E::Stopped { failure }
    }
    fn apply(cfg: &'static str, version: u64) -> E<&'static str> {
        E::Apply { cfg, version }
    }
    fn unhealthy() -> E<&'static str> {
        E::Unhealthy("0 of 1 listeners serving".into())
    }

    /// Feeds `steps` (event, the actions expected) to a supervisor started from the local file
    /// "local" (or the kept "kept" v7), checking each answer.
    fn table(
        kept: bool,
        first: Vec<A<&'static str>>,
        steps: Vec<(E<&'static str>, Vec<A<&'static str>>)>,
    ) -> Supervisor<&'static str> {
        let (mut s, actions) = Supervisor::new("local", kept.then_some(("kept", 7)));
        assert_eq!(actions, first, "first actions");
        for (i, (event, expected)) in steps.into_iter().enumerate() {
            let shown = format!("{event:?}");
            assert_eq!(s.on(event), expected, "step {i}: {shown}");
        }
        s
    }

    #[test]
    fn boot_from_the_local_file_healthy_or_not_serves() {
        for first_health in [E::Healthy, unhealthy()] {
            let s = table(
                false,
                vec![start("local", LOCAL, None), A::WaitHealthy],
                vec![(first_health, vec![A::RefreshInventory])],
            );
            assert!(s.is_running());
            assert_eq!(s.current(), &("local", LOCAL));
        }
    }

    #[test]
    fn a_kept_fleet_configuration_that_does_not_come_up_falls_back_to_the_local_file() {
        let s = table(
            true,
            vec![start("kept", fleet(7), None), A::WaitHealthy],
            vec![
                (unhealthy(), vec![A::Stop]),
                (
                    stopped(Some("listener_down")),
                    vec![start("local", LOCAL, None), A::WaitHealthy],
                ),
                (E::Healthy, vec![A::RefreshInventory]),
            ],
        );
        assert!(s.is_running());
        assert_eq!(s.current(), &("local", LOCAL));
        // Healthy at once: it stays.
        let s = table(
            true,
            vec![start("kept", fleet(7), None), A::WaitHealthy],
            vec![(E::Healthy, vec![A::RefreshInventory])],
        );
        assert_eq!(s.current(), &("kept", fleet(7)));
    }

    #[test]
    fn a_new_configuration_that_turns_healthy_is_kept_and_answered_applied() {
        let s = table(
            false,
            vec![start("local", LOCAL, None), A::WaitHealthy],
            vec![
                (E::Healthy, vec![A::RefreshInventory]),
                (apply("v3", 3), vec![A::WaitIdle, A::Stop]),
                (
                    stopped(None),
                    vec![
                        start("v3", fleet(3), Some("fleet configuration v3")),
                        A::WaitHealthy,
                    ],
                ),
                (E::Healthy, vec![A::RefreshInventory, A::Reply(Ok(()))]),
                // A restart then runs the configuration in force, the fleet's.
                (E::Restart, vec![A::WaitIdle, A::Stop]),
                (
                    stopped(None),
                    vec![
                        start("v3", fleet(3), Some("restart (fleet command)")),
                        A::WaitHealthy,
                    ],
                ),
                (unhealthy(), vec![A::RefreshInventory]),
            ],
        );
        assert!(s.is_running());
        assert_eq!(s.current(), &("v3", fleet(3)));
    }

    #[test]
    fn an_unhealthy_new_configuration_is_rolled_back_with_the_code_of_its_failure() {
        // (how the new appliance ended, the code the fleet is told)
        for (failure, code) in [
            (Some("listener_down"), "listener_down"),
            (Some("tls_unusable"), "tls_unusable"),
            (None, "unhealthy"),
        ] {
            for previous_health in [E::Healthy, unhealthy()] {
                let s = table(
                    true,
                    vec![start("kept", fleet(7), None), A::WaitHealthy],
                    vec![
                        (E::Healthy, vec![A::RefreshInventory]),
                        (apply("v8", 8), vec![A::WaitIdle, A::Stop]),
                        (
                            stopped(None),
                            vec![
                                start("v8", fleet(8), Some("fleet configuration v8")),
                                A::WaitHealthy,
                            ],
                        ),
                        (unhealthy(), vec![A::Stop]),
                        (
                            stopped(failure),
                            vec![
                                start(
                                    "kept",
                                    fleet(7),
                                    Some("rollback from fleet configuration v8"),
                                ),
                                A::WaitHealthy,
                            ],
                        ),
                        (
                            previous_health,
                            vec![A::RefreshInventory, A::Reply(Err(code))],
                        ),
                    ],
                );
                assert!(s.is_running());
                assert_eq!(
                    s.current(),
                    &("kept", fleet(7)),
                    "the previous one is in force"
                );
            }
        }
    }

    #[test]
    fn shutdown_in_any_wait_stops_and_exits_without_answering() {
        let boot = vec![start("local", LOCAL, None), A::WaitHealthy];
        let to_apply = vec![
            (E::Healthy, vec![A::RefreshInventory]),
            (apply("v2", 2), vec![A::WaitIdle, A::Stop]),
        ];
        let mut trying = to_apply.clone();
        trying.push((
            stopped(None),
            vec![
                start("v2", fleet(2), Some("fleet configuration v2")),
                A::WaitHealthy,
            ],
        ));
        let mut rolling = trying.clone();
        rolling.extend([
            (unhealthy(), vec![A::Stop]),
            (
                stopped(Some("listener_down")),
                vec![
                    start("local", LOCAL, Some("rollback from fleet configuration v2")),
                    A::WaitHealthy,
                ],
            ),
        ]);
        // While booting, running, waiting for idle, trying the new one, rolling back.
        for prefix in [vec![], to_apply[..1].to_vec(), to_apply, trying, rolling] {
            let mut steps = prefix;
            steps.push((E::Shutdown, vec![A::Stop]));
            // Nothing but the end of the appliance matters now.
            steps.push((E::Healthy, vec![]));
            steps.push((apply("v9", 9), vec![]));
            steps.push((stopped(Some("unhealthy")), vec![A::Exit]));
            steps.push((E::Shutdown, vec![]));
            let s = table(false, boot.clone(), steps);
            assert!(s.is_done());
        }
    }

    #[test]
    fn an_appliance_that_ends_by_itself_ends_the_supervisor() {
        let s = table(
            false,
            vec![start("local", LOCAL, None), A::WaitHealthy],
            vec![
                (E::Healthy, vec![A::RefreshInventory]),
                (E::Exited, vec![A::Exit]),
            ],
        );
        assert!(s.is_done());
    }

    #[test]
    fn requests_are_taken_only_while_running() {
        // During a change, another request is not for the machine (the driver does not take
        // it); if one came, it changes nothing.
        let s = table(
            false,
            vec![start("local", LOCAL, None), A::WaitHealthy],
            vec![
                (apply("v2", 2), vec![]),
                (E::Restart, vec![]),
                (E::Healthy, vec![A::RefreshInventory]),
            ],
        );
        assert_eq!(s.current(), &("local", LOCAL));
    }

    #[test]
    fn failure_codes_name_what_did_not_come_up() {
        let bind = AppError::Bind {
            addr: "127.0.0.1:104".parse().expect("addr"),
            what: "DICOM",
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(failure_code(&bind), "listener_down");
        let dest = AppError::Destination {
            name: "a".into(),
            reason: "b".into(),
        };
        assert_eq!(failure_code(&dest), "destination_unusable");
        assert_eq!(failure_code(&AppError::Internal("x".into())), "unhealthy");
        let config = AppError::Config {
            problems: vec![medgate_config::Problem {
                key: "listener.ae_title".into(),
                message: "too long".into(),
            }],
        };
        assert_eq!(failure_code(&config), "config_invalid");
        assert!(
            config.to_string().contains("listener.ae_title: too long"),
            "{config}"
        );
    }
}
