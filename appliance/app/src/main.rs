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
    /// List the calling AEs that knocked (accepted or not), with the SOP classes they offered.
    Peers {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List or retry objects a destination refused permanently.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
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
enum QuarantineCommand {
    /// List quarantined objects with the destination's reason.
    List {
        #[command(flatten)]
        endpoint: Endpoint,
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
    println!(
        "spool:       {} object(s), {}; {:.1}% used (refuses above {:.1}%), {} free",
        s.spool_objects,
        human_bytes(s.spool_bytes),
        s.spool_used_percent,
        s.high_watermark_percent,
        human_bytes(s.disk_free_bytes)
    );
    for d in &s.destinations {
        println!(
            "destination: {} ({}) {}: {} waiting (oldest {} s), {} forwarded, {} quarantined{}",
            d.name,
            d.kind,
            if d.up { "up" } else { "BACKING OFF" },
            d.queue_depth,
            d.oldest_age_secs,
            d.forwarded,
            d.quarantined,
            d.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
                println!(
                    "{}: OK ({} listening as {} on {}, {} destination(s))",
                    file.display(),
                    cfg.appliance.name,
                    cfg.listener.ae_title,
                    cfg.listener.bind,
                    cfg.destinations.len()
                );
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
                medgate_appliance::app::run(cfg, shutdown).await
            })?;
            Ok(())
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
        Command::Peers { endpoint } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let peers: Vec<medgate_spool::PeerRecord> = get_json(&endpoint.base()?, "/api/peers").await?;
                if peers.is_empty() {
                    println!("no modality has called this appliance yet");
                }
                for p in peers {
                    let accepted: Vec<&str> = p.sop_classes.iter().filter(|(_, a)| **a).map(|(c, _)| c.as_str()).collect();
                    let refused: Vec<&str> = p.sop_classes.iter().filter(|(_, a)| !**a).map(|(c, _)| c.as_str()).collect();
                    println!(
                        "{} from {}: {} accepted, {} rejected association(s){}\n  accepted SOP classes: {}\n  refused SOP classes:  {}",
                        p.calling_ae,
                        p.address,
                        p.accepted,
                        p.rejected,
                        p.last_rejection.map(|r| format!(" (last rejection: {r})")).unwrap_or_default(),
                        if accepted.is_empty() { "-".into() } else { accepted.join(", ") },
                        if refused.is_empty() { "-".into() } else { refused.join(", ") },
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
                    QuarantineCommand::List { endpoint } => {
                        let q: Vec<serde_json::Value> =
                            get_json(&endpoint.base()?, "/api/quarantine").await?;
                        if q.is_empty() {
                            println!("quarantine is empty");
                        }
                        for e in q {
                            println!("{e}");
                        }
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
