//! `medgate-appliance`: the command line of the appliance.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use medgate_appliance::config::Config;
use medgate_appliance::status::{RetryResult, StatusReport};
use std::path::PathBuf;

const EXAMPLE: &str = include_str!("../medgate-appliance.example.toml");

/// Medgate appliance: receives DICOM from the modalities in this room, keeps every object
/// durably on local disk and forwards it to the regional archive, retrying until the archive
/// confirms it.
///
/// Typical use:
///   medgate-appliance config example > /etc/medgate/appliance.toml   (then edit it)
///   medgate-appliance config check /etc/medgate/appliance.toml
///   medgate-appliance run --config /etc/medgate/appliance.toml
///   medgate-appliance status
///
/// Joining the fleet (once; the appliance image does it at first boot):
///   medgate-appliance enroll --provisioning /var/lib/medgate/provisioning.toml \
///       --identity-dir /var/lib/medgate/identity
///   then set `fleet_enrollment = "/var/lib/medgate/identity/fleet.toml"` under [appliance].
///
/// Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=medgate_appliance=debug) for more detail.
#[derive(Debug, Parser)]
#[command(name = "medgate-appliance", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance: DICOM listener, spool, forwarders and the local status endpoint.
    Run {
        /// The configuration file (see `config example`).
        #[arg(long, short, env = "MEDGATE_CONFIG")]
        config: PathBuf,
    },
    /// Check or print a configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show the running appliance's state: listener, spool, destinations.
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the calling AEs that knocked (accepted or not), with the SOP classes they offered
    /// (by name and UID) and the modalities they sent.
    Peers {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// End the backoff wait of one destination (or of all) now, after the archive came back,
    /// instead of waiting up to `forward.max_backoff_secs` for the next attempt.
    ///
    ///   medgate-appliance retry-now            every destination
    ///   medgate-appliance retry-now archive    only [[destination]] name = "archive"
    #[command(verbatim_doc_comment)]
    RetryNow {
        /// The destination's name (default: every destination).
        destination: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List or retry objects a destination refused permanently.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Quality checks at ingest ([qc]): list the flagged objects (SOP Instance UID, check, when).
    Qc {
        #[command(subcommand)]
        command: QcCommand,
    },
    /// Coercion and routing rules: try them on sample files, show the audit list of changes.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Install a signed update bundle from a file (a site without a path to the fleet).
    ///
    /// Verifies it completely against the trust store (<data_dir>/update/trust.json) before
    /// anything is written, installs it into the inactive slot ([update] backend: the
    /// directory slots of slots_dir, or the image's A/B partitions), then
    /// hands the switch to the running service, which switches when DICOM is idle (no
    /// association open, no study arriving) and keeps the new version only if it proves
    /// healthy. If the service is not running, it switches now: the next start runs the new
    /// version on probation. Exit codes: 0 installed, 1 refused or failed (nothing switched).
    ///
    ///   medgate-appliance update --config /etc/medgate/appliance.toml --file medgate-1.4.0.mgb
    #[command(verbatim_doc_comment)]
    Update {
        /// The configuration (its [update] section and data directory).
        #[arg(long, short, env = "MEDGATE_CONFIG")]
        config: PathBuf,
        /// The bundle (.mgb).
        #[arg(long)]
        file: PathBuf,
    },
    /// Join the fleet: create the device key, send a certificate request with the one-time claim
    /// token of the provisioning file, and write the [fleet] settings (`fleet.toml`), the device
    /// certificate and the fleet's CA into the identity directory. Does nothing if already
    /// enrolled. Exit codes: 0 enrolled (now or before), 1 refused or misconfigured (a person
    /// must act), 75 the fleet is unreachable (retry later).
    Enroll {
        /// The provisioning file: fleet_url, claim_token, optional broker and fleet_ca.
        #[arg(long)]
        provisioning: PathBuf,
        /// Where the key, the certificates and fleet.toml are kept (mode 0700).
        #[arg(long, default_value = "/var/lib/medgate/identity")]
        identity_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file; prints every problem with its key, exits 1 if any.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print a documented example configuration.
    Example,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Show, per file, which rule changes which element from what to what and where the object
    /// would be routed. Local only: values are shown on this console, nothing is sent anywhere.
    ///
    ///   medgate-appliance rules dry-run --config /etc/medgate/appliance.toml --calling-ae CT_A *.dcm
    #[command(verbatim_doc_comment)]
    DryRun {
        /// The configuration whose [rules] are tried (it is validated first).
        #[arg(long, short, env = "MEDGATE_CONFIG")]
        config: PathBuf,
        /// The sender to assume (default: the file's Source AE Title, if it has one).
        #[arg(long)]
        calling_ae: Option<String>,
        /// Also write the coerced files into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Part 10 files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the rule changes recorded at start-up and reload (rules hash, label, counts).
    Audit {
        /// The configuration (to find the data directory).
        #[arg(long, short, env = "MEDGATE_CONFIG")]
        config: PathBuf,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum QcCommand {
    /// List flagged objects, newest first: time, check, calling AE, modality, spool id, SOP
    /// Instance UID. Local only; counts per check come first.
    List {
        #[command(flatten)]
        endpoint: Endpoint,
        /// At most this many flags.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// List quarantined objects with the destination's reason, as a table.
    List {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue quarantined objects again (all, or one --id, for all or one --destination).
    Retry {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Only this spool id.
        #[arg(long)]
        id: Option<u64>,
        /// Only this destination.
        #[arg(long)]
        destination: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct Endpoint {
    /// The appliance's configuration (to find its status address).
    #[arg(long, short, env = "MEDGATE_CONFIG")]
    config: Option<PathBuf>,
    /// The status endpoint, if not taken from --config.
    #[arg(long, default_value = "http://127.0.0.1:8104")]
    url: String,
}

impl Endpoint {
    fn base(&self) -> anyhow::Result<String> {
        match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let cfg =
                    Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Ok(format!("http://{}", cfg.status.bind))
            }
            None => Ok(self.url.trim_end_matches('/').to_string()),
        }
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .context("cannot build an HTTP client")
}

async fn get_json<T: serde::de::DeserializeOwned>(base: &str, path: &str) -> anyhow::Result<T> {
    let url = format!("{base}{path}");
    let rsp = client()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the appliance at {url}; is `medgate-appliance run` running, and is [status].bind this address?"))?;
    if !rsp.status().is_success() {
        bail!(
            "{url} answered {}: {}",
            rsp.status(),
            rsp.text().await.unwrap_or_default()
        );
    }
    rsp.json()
        .await
        .with_context(|| format!("unexpected answer from {url}"))
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

fn human_secs(s: u64) -> String {
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// Prints rows under headers, each column as wide as its widest cell (the last one unpadded).
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// "CT Image Storage (1.2.840.10008.5.1.4.1.1.2)", or the UID alone when the standard has no
/// name for it (a private class).
fn sop_class_label(uid: &str) -> String {
    match medgate_dicom::uids::sop_class_name(uid) {
        Some(name) => format!("{name} ({uid})"),
        None => format!("{uid} (private or unknown)"),
    }
}

fn print_status(s: &StatusReport) {
    println!(
        "{} (medgate-appliance {}), up {} s",
        s.name, s.version, s.uptime_secs
    );
    match &s.health_problem {
        None => println!("health:      OK"),
        Some(p) => println!("health:      PROBLEM: {p}"),
    }
    println!(
        "listener:    AE {} on {}{}; {} association(s) open",
        s.ae_title,
        s.bind,
        s.tls_bind
            .as_deref()
            .map(|t| format!(", TLS on {t}"))
            .unwrap_or_default(),
        s.associations_active
    );
    println!(
        "received:    {} object(s), {} since start",
        s.objects_received,
        human_bytes(s.bytes_received)
    );
    match &s.spool {
        Some(sp) => {
            println!(
                "spool:       {} object(s), {} of its own{}",
                sp.objects,
                human_bytes(sp.bytes),
                match sp.cap_used_percent {
                    Some(pct) => format!(
                        " ({pct:.1}% of its cap spool.max_bytes = {})",
                        human_bytes(sp.max_bytes)
                    ),
                    None => String::new(),
                }
            );
            println!(
                "filesystem:  {:.1}% used by everything on it ({} used, {} available)",
                sp.filesystem_used_percent,
                human_bytes(sp.filesystem_used_bytes),
                human_bytes(sp.filesystem_free_bytes),
            );
            println!(
                "watermarks:  refuses new objects (A700) at {:.1}% of the {}, after evicting confirmed ones; evicts confirmed objects early above {:.1}%; keeps them {} h{}",
                sp.high_watermark_percent,
                if sp.max_bytes > 0 {
                    "fuller of filesystem and cap"
                } else {
                    "filesystem"
                },
                sp.low_watermark_percent,
                sp.retention_hours,
                if s.spool_used_percent >= sp.high_watermark_percent {
                    "; NOW REFUSING"
                } else {
                    ""
                }
            );
        }
        None => println!(
            "spool:       {} object(s), {}; {:.1}% used (refuses above {:.1}%), {} free",
            s.spool_objects,
            human_bytes(s.spool_bytes),
            s.spool_used_percent,
            s.high_watermark_percent,
            human_bytes(s.disk_free_bytes)
        ),
    }
    match s.config_source {
        medgate_appliance::handle::ConfigSource::LocalFile => {
            println!("config:      the local file")
        }
        medgate_appliance::handle::ConfigSource::Fleet { version } => println!(
            "config:      the fleet's version {version}, overriding the local file (which keeps [appliance], [status], [hardware], [fleet])"
        ),
    }
    match &s.fleet {
        None => println!("fleet:       not reporting"),
        Some(f) => println!(
            "fleet:       {}; {} message(s) waiting in the outbox{}",
            if f.connected {
                "connected"
            } else {
                "NOT CONNECTED (capture goes on; messages wait)"
            },
            f.outbox,
            if f.dropped > 0 {
                format!(", {} dropped (outbox full)", f.dropped)
            } else {
                String::new()
            }
        ),
    }
    if let Some(u) = &s.update {
        println!(
            "update:      running {}{}; {}",
            u.running.as_deref().unwrap_or("unknown"),
            if u.on_probation {
                " (on probation)"
            } else {
                ""
            },
            match (&u.version, &u.state) {
                (Some(v), Some(state)) => format!(
                    "{v} {state}{}{}",
                    u.code
                        .as_deref()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default(),
                    u.detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ),
                _ => "no install".to_string(),
            }
        );
    }
    for d in &s.destinations {
        println!(
            "destination: {} ({}) {}: {} waiting (oldest {} s), {} forwarded, {} quarantined",
            d.name,
            d.kind,
            if d.up {
                "up"
            } else {
                "DOWN, retrying (`medgate-appliance retry-now` once it is back)"
            },
            d.queue_depth,
            d.oldest_age_secs,
            d.forwarded,
            d.quarantined,
        );
        if let Some(e) = &d.last_error {
            println!(
                "             last error {} ago{}: {e}",
                human_secs(d.last_error_age_secs.unwrap_or(0)),
                if d.last_error_cleared {
                    ", sends succeeded since"
                } else {
                    ""
                }
            );
        }
    }
    let w = &s.workflow;
    if let Some(c) = w.get("commitment") {
        println!(
            "commitment:  {} request(s), {} pending, {} awaiting delivery, {} reported ({} with failures), {} delivery error(s)",
            c["requests"],
            c["pending"],
            c["awaiting_delivery"],
            c["reported_success"].as_u64().unwrap_or(0)
                + c["reported_failures"].as_u64().unwrap_or(0),
            c["reported_failures"],
            c["delivery_errors"]
        );
    }
    if let Some(wl) = w.get("worklist") {
        println!(
            "worklist:    RIS {} {}; {} queries ({} from cache), {} cached entries{}",
            wl["upstream"].as_str().unwrap_or("?"),
            match wl["upstream_up"].as_bool() {
                Some(true) => "up",
                Some(false) => "UNREACHABLE",
                None => "not asked yet",
            },
            wl["queries"],
            wl["cache_answers"],
            wl["cache_entries"],
            if wl["cache_stale"] == true {
                "; CACHE STALE"
            } else {
                ""
            }
        );
    }
    if let Some(q) = w.get("qc") {
        let flags = q["flags"].as_object().cloned().unwrap_or_default();
        let flagged: Vec<String> = flags
            .iter()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        println!(
            "qc:          {} checked, {} flagged ({}); `medgate-appliance qc list`",
            q["objects_checked"],
            q["objects_flagged"],
            if flagged.is_empty() {
                "none".to_string()
            } else {
                flagged.join(" ")
            }
        );
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        // Colour only for a person at a terminal: journald and log files get plain key=value.
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        // The recent lines, for the diagnostics bundle.
        .with(medgate_appliance::logbuf::Layer)
        .init();
}

/// Errors end the process with their message (and its causes) on stderr and exit code 1: no
/// Rust backtrace, whatever `RUST_BACKTRACE` says — the message is for an operator.
fn main() -> std::process::ExitCode {
    // Everything this process creates is owner-only (objects, index, identity, coerced files),
    // whatever the caller's umask: patient data must never be readable by other users.
    medgate_appliance::datadir::private_umask();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        few_malloc_arenas();
    } else {
        quiet_broken_pipe();
    }
    match run_cli(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medgate-appliance: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A listing piped into `head` ends quietly, as other command-line tools do, instead of a panic
/// on "Broken pipe". Not for `run`: the service must never die of a closed pipe.
#[allow(unsafe_code)]
fn quiet_broken_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called at the start of main, before any other thread exists; SIG_DFL installs no
    // handler code of ours, it only restores the default action Rust's runtime replaced.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// glibc gives threads arenas of their own (up to 8 per core) and keeps what they freed: the
/// blocking pool's threads each grew one, and the service's RSS rose by steps under load (soak:
/// 25 → 32 MB over 10 minutes, against 25 → 26 MB with two arenas). Two arenas are plenty for
/// its allocations, which are small and short-lived beside the objects' bytes (those go to the
/// spool, never whole into memory).
#[allow(unsafe_code)]
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: called at the start of main, before any other thread exists or allocates
        // much; mallopt only sets a limit of the allocator, read when an arena is created.
        let _ = unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2) };
    }
}

fn run_cli(cli: Cli) -> anyhow::Result<()> {
    medgate_appliance::app::install_crypto_provider();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load(&file) {
            Ok(cfg) => {
                use medgate_appliance::fleet::{self, Settings};
                let fleet = match fleet::settings(&cfg) {
                    Ok(Settings::Off) => "no fleet reporting".to_string(),
                    Ok(Settings::NotEnrolled(p)) => format!(
                        "fleet: not enrolled yet ({} missing; run `medgate-appliance enroll`)",
                        p.display()
                    ),
                    Ok(Settings::On(f)) => format!(
                        "reporting to {} as {}/{}{}",
                        f.broker,
                        f.site,
                        f.device,
                        if f.tls.is_some() {
                            " over TLS"
                        } else {
                            " WITHOUT TLS"
                        }
                    ),
                    Err(e) => {
                        eprintln!("fleet settings: {e}");
                        std::process::exit(1);
                    }
                };
                println!(
                    "{}: OK ({} listening as {} on {}, {} destination(s), {fleet})",
                    file.display(),
                    cfg.appliance.name,
                    cfg.listener.ae_title,
                    cfg.listener.bind,
                    cfg.destinations.len()
                );
                if cfg.rules != Default::default() {
                    println!(
                        "rules {} ({}): {} coercion rule(s), {} route(s); try them with `medgate-appliance rules dry-run`",
                        medgate_rules::rules_hash(&cfg.rules),
                        cfg.rules.version.as_deref().unwrap_or("no version label"),
                        cfg.rules.coerce.len(),
                        cfg.rules.route.len()
                    );
                }
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::Run { config } => {
            init_logging();
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let restart = medgate_appliance::update::Restart::default();
            let agent_restart = restart.clone();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let sd = shutdown.clone();
                tokio::spawn(async move {
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot watch SIGTERM");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {},
                        _ = term.recv() => {},
                    }
                    sd.cancel();
                });
                let agent_shutdown = shutdown.clone();
                medgate_appliance::supervisor::run(cfg, shutdown, |local, hooks| {
                    medgate_appliance::update::agent::spawn(
                        local,
                        hooks,
                        agent_shutdown,
                        agent_restart,
                    );
                    medgate_appliance::fleet::attach(local, Some(&config), hooks)
                })
                .await
            })?;
            drop(rt);
            if let Some((program, args)) = restart.take() {
                // A switch or a rollback: this process becomes the version now in force.
                use std::os::unix::process::CommandExt;
                tracing::info!(program = %program.display(), "starting the version in force");
                let e = std::process::Command::new(&program).args(&args).exec();
                bail!("cannot start {}: {e}", program.display());
            }
            Ok(())
        }
        Command::Update { config, file } => update_command(&config, &file),
        Command::Enroll {
            provisioning,
            identity_dir,
        } => {
            use medgate_appliance::fleet::enroll::{self, Enrolled, Provisioning};
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = rt.block_on(async {
                let p = Provisioning::load(&provisioning)?;
                enroll::enroll(&p, &identity_dir).await
            });
            match result {
                Ok(Enrolled::Now { site, device }) => {
                    println!(
                        "enrolled as device {device} of site {site}; settings in {}",
                        identity_dir.join(enroll::files::SETTINGS).display()
                    );
                    Ok(())
                }
                Ok(Enrolled::Already) => {
                    println!(
                        "already enrolled ({} exists); nothing done",
                        identity_dir.join(enroll::files::SETTINGS).display()
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("enrollment failed: {e}");
                    // EX_TEMPFAIL: systemd and scripts retry; anything else needs a person.
                    std::process::exit(if e.is_transient() { 75 } else { 1 });
                }
            }
        }
        Command::Status { endpoint, json } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let base = endpoint.base()?;
                let s: StatusReport = get_json(&base, "/api/status").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    print_status(&s);
                }
                if !s.healthy {
                    std::process::exit(2);
                }
                Ok(())
            })
        }
        Command::Peers { endpoint, json } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let peers: Vec<medgate_spool::PeerRecord> =
                    get_json(&endpoint.base()?, "/api/peers").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&peers)?);
                    return Ok(());
                }
                if peers.is_empty() {
                    println!("no modality has called this appliance yet");
                }
                for p in peers {
                    println!(
                        "{} from {}: {} accepted, {} rejected association(s){}; modalities sent: {}",
                        p.calling_ae,
                        p.address,
                        p.accepted,
                        p.rejected,
                        p.last_rejection
                            .map(|r| format!(" (last rejection: {r})"))
                            .unwrap_or_default(),
                        if p.modalities.is_empty() {
                            "none yet".to_string()
                        } else {
                            p.modalities.iter().cloned().collect::<Vec<_>>().join(", ")
                        },
                    );
                    for (accepted, title) in [(true, "accepted"), (false, "refused")] {
                        let classes: Vec<String> = p
                            .sop_classes
                            .iter()
                            .filter(|(_, a)| **a == accepted)
                            .map(|(c, _)| sop_class_label(c))
                            .collect();
                        if classes.is_empty() {
                            println!("  {title} SOP classes: -");
                        } else {
                            println!("  {title} SOP classes:");
                            for c in classes {
                                println!("    {c}");
                            }
                        }
                    }
                }
                Ok(())
            })
        }
        Command::RetryNow {
            destination,
            endpoint,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let base = endpoint.base()?;
                let url = format!("{base}/api/retry-now");
                let mut req = client()?.post(&url);
                if let Some(d) = &destination {
                    req = req.query(&[("destination", d)]);
                }
                let rsp = req.send().await.with_context(|| {
                    format!("cannot reach the appliance at {url}; is `medgate-appliance run` running?")
                })?;
                if !rsp.status().is_success() {
                    bail!("{}", rsp.text().await.unwrap_or_default().trim_end());
                }
                let r: medgate_appliance::status::RetryNowResult = rsp.json().await?;
                println!(
                    "backoff ended for {}: the next attempt starts now (see `medgate-appliance status`)",
                    r.destinations.join(", ")
                );
                Ok(())
            })
        }
        Command::Rules { command } => rules_command(command),
        Command::Qc {
            command:
                QcCommand::List {
                    endpoint,
                    limit,
                    json,
                },
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let v: serde_json::Value =
                    get_json(&endpoint.base()?, &format!("/api/qc?limit={limit}")).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
                let counts = v["counts"].as_object().cloned().unwrap_or_default();
                let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
                println!("flags kept: {}", summary.join(" "));
                let flags = v["flags"].as_array().cloned().unwrap_or_default();
                if flags.is_empty() {
                    println!("no flagged objects");
                }
                for f in flags {
                    let secs = f["received_at_ms"].as_u64().unwrap_or(0) / 1000;
                    println!(
                        "{secs} {} calling_ae={} modality={} id={} sop_instance_uid={}",
                        f["check"].as_str().unwrap_or("?"),
                        f["calling_ae"].as_str().unwrap_or(""),
                        f["modality"].as_str().unwrap_or("-"),
                        f["id"],
                        f["sop_instance_uid"].as_str().unwrap_or(""),
                    );
                }
                Ok(())
            })
        }
        Command::Quarantine { command } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                match command {
                    QuarantineCommand::List { endpoint, json } => {
                        let q: Vec<medgate_spool::QuarantineEntry> =
                            get_json(&endpoint.base()?, "/api/quarantine").await?;
                        if json {
                            println!("{}", serde_json::to_string_pretty(&q)?);
                            return Ok(());
                        }
                        if q.is_empty() {
                            println!("quarantine is empty");
                            return Ok(());
                        }
                        let rows: Vec<Vec<String>> = q
                            .iter()
                            .map(|e| {
                                vec![
                                    e.id.to_string(),
                                    e.destination.clone(),
                                    e.calling_ae.clone(),
                                    medgate_dicom::uids::sop_class_name(&e.sop_class_uid)
                                        .unwrap_or(&e.sop_class_uid)
                                        .to_string(),
                                    human_bytes(e.size),
                                    e.reason.clone(),
                                ]
                            })
                            .collect();
                        print_table(
                            &["ID", "DESTINATION", "FROM AE", "SOP CLASS", "SIZE", "REASON"],
                            &rows,
                        );
                        println!(
                            "{} object(s); `medgate-appliance quarantine retry [--id ID] [--destination NAME]` queues them again",
                            q.len()
                        );
                        Ok(())
                    }
                    QuarantineCommand::Retry {
                        endpoint,
                        id,
                        destination,
                    } => {
                        let base = endpoint.base()?;
                        let mut url = format!("{base}/api/quarantine/retry?");
                        if let Some(id) = id {
                            url.push_str(&format!("id={id}&"));
                        }
                        if let Some(d) = &destination {
                            url.push_str(&format!("destination={d}"));
                        }
                        let rsp = client()?
                            .post(&url)
                            .send()
                            .await
                            .with_context(|| format!("cannot reach {url}"))?;
                        if !rsp.status().is_success() {
                            bail!("{url} answered {}", rsp.status());
                        }
                        let r: RetryResult = rsp.json().await?;
                        println!("{} object(s) queued again", r.requeued);
                        Ok(())
                    }
                }
            })
        }
    }
}

fn update_command(config: &std::path::Path, file: &std::path::Path) -> anyhow::Result<()> {
    use medgate_appliance::update::local::{LocalOutcome, update_file};
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read the bundle {}", file.display()))?
        .len();
    let mut shown = 0;
    let mut progress = |done: u64| {
        let tenth = done.saturating_mul(10).checked_div(size).unwrap_or(10);
        if tenth > shown {
            shown = tenth;
            eprint!("\rverifying {}%", tenth * 10);
        }
    };
    let outcome = update_file(&cfg, config, file, &mut progress);
    if shown > 0 {
        eprintln!();
    }
    match outcome {
        Ok(LocalOutcome::HandedOver { version }) => {
            println!(
                "verified and installed {version} into the inactive slot; the running service switches when DICOM is idle and keeps it only if healthy: follow it with `medgate-appliance status`"
            );
            Ok(())
        }
        Ok(LocalOutcome::Switched { version, previous }) => {
            println!(
                "verified and installed {version}; the service is not running, so it was switched now: start the service (on the image: reboot), it proves health or rolls back to {} by itself",
                previous.map_or_else(|| "the previous version".to_string(), |v| v.to_string())
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("update: {e}");
            std::process::exit(1);
        }
    }
}

fn rules_command(command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::DryRun {
            config,
            calling_ae,
            out,
            files,
        } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(dir) = &out {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let (report, ok) = medgate_appliance::rules::dry_run(
                &cfg,
                &files,
                calling_ae.as_deref(),
                out.as_deref(),
            );
            print!("{report}");
            if !ok {
                bail!("some files could not be read (see above)");
            }
            Ok(())
        }
        RulesCommand::Audit { config, json } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let cfg =
                Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            let list = medgate_appliance::rules::audit_list(&cfg.appliance.data_dir).with_context(
                || {
                    format!(
                        "cannot read the rules audit list in {}",
                        cfg.appliance.data_dir.display()
                    )
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            if list.is_empty() {
                println!(
                    "no rule changes recorded yet (the appliance records them when it starts)"
                );
            }
            for e in list {
                println!(
                    "{} {} {} ({}) coerce_rules={} routes={} previous={}",
                    e.at_ms,
                    e.event,
                    e.hash,
                    e.version.as_deref().unwrap_or("no label"),
                    e.coerce_rules,
                    e.routes,
                    e.previous_hash.as_deref().unwrap_or("none")
                );
            }
            Ok(())
        }
    }
}
