//! `medgate-fleet`: the Medgate fleet manager.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use medgate_fleet::brokerconf::{self, BrokerFiles, FLEET_USERNAME};
use medgate_fleet::config::{BrokerMode, FleetConfig};

/// The Medgate fleet manager: knows every appliance of the region, its health and its
/// configuration, over MQTT.
///
/// With no configuration at all, `medgate-fleet serve` runs an embedded MQTT broker on
/// 127.0.0.1:1883 and SQLite in ./medgate-fleet-data, and prints the URLs it serves. For
/// production, point it at Mosquitto (see `broker-config`) and PostgreSQL in a TOML file
/// (`config example` prints a documented one) and check it with `config check`.
#[derive(Debug, Parser)]
#[command(name = "medgate-fleet", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the fleet manager (broker if embedded, database, MQTT ingestion, REST API, live feed).
    Serve {
        /// Configuration file; without it every default applies (zero setup).
        #[arg(long, short, env = "MEDGATE_FLEET_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Configuration file commands.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Users, for scripts and first installs (the console and the API do the rest).
    Admin {
        #[command(subcommand)]
        command: AdminCmd,
    },
    /// Write a Mosquitto configuration for production: mutual TLS with certificates of the fleet
    /// CA, the certificate CN as username, per-device ACLs (a device reads and writes only its own
    /// topics). Also writes the broker's server certificate and the fleet's client certificate.
    BrokerConfig {
        /// Fleet configuration (for data_dir, where the CA is).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output directory (mosquitto.conf, acl, certificates).
        #[arg(long)]
        out: PathBuf,
        /// Host names and IP addresses of the broker, for its certificate (repeat the flag).
        #[arg(long = "hostname", required = true)]
        hostnames: Vec<String>,
        /// Listener address.
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        /// Listener port.
        #[arg(long, default_value_t = 8883)]
        port: u16,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCmd {
    /// Create a user in the fleet's database. The password is read from stdin with
    /// `--password-stdin` (one line); otherwise one is generated and printed, once.
    Create {
        /// Fleet configuration (for the database).
        #[arg(long, short, env = "MEDGATE_FLEET_CONFIG")]
        config: Option<PathBuf>,
        /// The user name (a-z, 0-9, '.', '_', '-').
        #[arg(long)]
        user: String,
        /// admin, operator, viewer, auditor or vendor.
        #[arg(long)]
        role: String,
        /// Limit the user to a site (repeat the flag); without it, every site.
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file and print the settings in effect; otherwise print every
    /// problem with its key and exit with status 1.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print a documented example configuration (every key, its meaning and its default).
    Example,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medgate-fleet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=warn,sqlx=warn".into()),
        )
        // Colour only for a person at a terminal: journald and log files get plain key=value.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Cmd::Serve { config } => serve(config).await,
        Cmd::Admin {
            command:
                AdminCmd::Create {
                    config,
                    user,
                    role,
                    sites,
                    password_stdin,
                },
        } => admin_create(config, &user, &role, sites, password_stdin).await,
        Cmd::Config {
            command: ConfigCmd::Check { file },
        } => match check(&file) {
            Ok(report) => {
                print!("{report}");
                Ok(())
            }
            Err(problems) => {
                eprint!("{problems}");
                std::process::exit(1);
            }
        },
        Cmd::Config {
            command: ConfigCmd::Example,
        } => {
            print!("{}", medgate_fleet::config::EXAMPLE);
            Ok(())
        }
        Cmd::BrokerConfig {
            config,
            out,
            hostnames,
            bind,
            port,
        } => broker_config(config, out, hostnames, bind, port),
    }
}

/// `config check`: the settings in effect, or every problem (one line each, with its key).
fn check(file: &std::path::Path) -> Result<String, String> {
    use std::fmt::Write;
    let c = FleetConfig::load(Some(file)).map_err(|e| {
        let problems = e.problems();
        let mut out = format!("{}: invalid\n", file.display());
        for p in &problems {
            let _ = writeln!(out, "  {p}");
        }
        let _ = writeln!(
            out,
            "fix {} and check again (`medgate-fleet config example` documents every key)",
            if problems.len() == 1 { "it" } else { "them" }
        );
        out
    })?;
    let mut out = format!("{}: valid\n", file.display());
    let _ = writeln!(
        out,
        "  database: {}",
        medgate_fleet::redact(&c.database_url())
    );
    let _ = match c.broker.mode {
        BrokerMode::Embedded => writeln!(
            out,
            "  broker: embedded on {} (no TLS, no ACL: loopback/lab only)",
            c.broker.listen
        ),
        BrokerMode::External => writeln!(
            out,
            "  broker: {}{}",
            c.broker.address.as_deref().unwrap_or("?"),
            if c.broker.tls.is_some() {
                " (TLS)"
            } else {
                " (no TLS: give [broker.tls] in production)"
            }
        ),
    };
    let _ = writeln!(
        out,
        "  http: {}{}",
        c.http.bind,
        if c.http.tls.is_some() { " (HTTPS)" } else { "" }
    );
    // alerts (issue 13 part 3): where notifications go.
    let a = &c.alerts;
    let mut channels = Vec::new();
    if let Some(e) = &a.email {
        channels.push(format!(
            "e-mail via {} (STARTTLS) to {}",
            e.server,
            e.to.join(", ")
        ));
    }
    if let Some(w) = &a.webhook {
        channels.push(format!(
            "webhook {}{}",
            w.url,
            if w.secret_file.is_some() {
                " (signed)"
            } else {
                ""
            }
        ));
    }
    let _ = writeln!(
        out,
        "  alerts: {}",
        if !a.enabled {
            "off".to_string()
        } else if channels.is_empty() {
            "on, console only (no [alerts.email] or [alerts.webhook])".to_string()
        } else {
            format!("on, {}", channels.join("; "))
        }
    );
    Ok(out)
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let c = FleetConfig::load(config.as_deref()).context("configuration invalid")?;
    let running = medgate_fleet::serve(c.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    let base = format!(
        "{}://{}",
        if running.https { "https" } else { "http" },
        running.http
    );
    println!("medgate-fleet {} running", env!("CARGO_PKG_VERSION"));
    println!(
        "  REST API     {base}/api/v1   (Authorization: Bearer $(cat {}))",
        running.admin_token_file.display()
    );
    println!("  OpenAPI      {base}/api/v1/openapi.json");
    println!("  live feed    {base}/api/v1/live   (server-sent events)");
    println!("  metrics      {base}/metrics");
    println!("  enrollment   {base}/api/v1/enroll");
    let (h, p) = &running.broker;
    match c.broker.mode {
        BrokerMode::Embedded => {
            println!("  MQTT         mqtt://{h}:{p}   (embedded broker: no TLS, no per-device ACL)")
        }
        BrokerMode::External => println!("  MQTT         {h}:{p}   (external broker)"),
    }
    println!(
        "  database     {} ({})",
        medgate_fleet::redact(&c.database_url()),
        running.app.ops.store.backend
    );
    if let Some(hint) = running.setup_hint() {
        println!("  first run    {hint}");
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping");
    Ok(())
}

/// `admin create`: a user straight into the database, audited as `cli`.
async fn admin_create(
    config: Option<PathBuf>,
    user: &str,
    role: &str,
    sites: Vec<String>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    use medgate_fleet::auth::Role;
    let c = FleetConfig::load(config.as_deref())
        .map_err(anyhow::Error::msg)
        .context("configuration invalid")?;
    let role: Role = role.parse().map_err(|_| {
        anyhow::anyhow!("--role {role:?}: give admin, operator, viewer, auditor or vendor")
    })?;
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        Some(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        None
    };
    let url = c.database_url();
    let store = medgate_fleet::store::Store::connect(&url, Some(1))
        .await
        .with_context(|| format!("database {}", medgate_fleet::redact(&url)))?;
    let ca = medgate_fleet::ca::Ca::load_or_create(&c.data_dir.join("ca"))?;
    let ops =
        medgate_fleet::ops::Ops::new(store, c, ca, medgate_fleet::publish::Publisher::memory().0);
    let sites = (!sites.is_empty()).then_some(sites);
    let created = ops
        .create_user(
            &medgate_fleet::ops::Actor::cli(),
            user,
            role,
            sites,
            password,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    println!(
        "user {} created with role {}",
        created.user.name, created.user.role
    );
    if let Some(p) = created.generated_password {
        println!("password (shown only now): {p}");
    }
    Ok(())
}

fn broker_config(
    config: Option<PathBuf>,
    out: PathBuf,
    hostnames: Vec<String>,
    bind: String,
    port: u16,
) -> anyhow::Result<()> {
    let c = FleetConfig::load(config.as_deref()).context("configuration invalid")?;
    if hostnames.iter().any(|h| h.trim().is_empty()) {
        bail!("--hostname must not be empty");
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let ca = medgate_fleet::ca::Ca::load_or_create(&c.data_dir.join("ca"))?;
    let (server, server_key) = ca.issue_with_key("medgate-broker", &hostnames, 825)?;
    let (fleet, fleet_key) = ca.issue_with_key(FLEET_USERNAME, &[], 825)?;
    let abs = |name: &str| -> anyhow::Result<String> {
        let p = out.join(name);
        Ok(std::path::absolute(&p)
            .with_context(|| p.display().to_string())?
            .display()
            .to_string())
    };
    std::fs::write(out.join("ca.crt"), ca.cert_pem())?;
    std::fs::write(out.join("broker.crt"), &server.certificate_pem)?;
    medgate_fleet::ca::write_key(&out.join("broker.key"), &server_key)?;
    std::fs::write(out.join("fleet.crt"), &fleet.certificate_pem)?;
    medgate_fleet::ca::write_key(&out.join("fleet.key"), &fleet_key)?;
    std::fs::write(out.join("acl"), brokerconf::acl_file())?;
    // The revocation list: where the fleet will rewrite it (`[broker] crl_file`), else beside
    // the rest. Mosquitto needs one at start; it begins empty.
    let crl = match &c.broker.crl_file {
        Some(p) => std::path::absolute(p).with_context(|| p.display().to_string())?,
        None => std::path::absolute(out.join("crl.pem")).context("crl.pem")?,
    };
    if let Some(dir) = crl.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Never replaced: it may already name revoked devices.
    if !crl.exists() {
        std::fs::write(&crl, ca.crl_pem(&[], 1)?)
            .with_context(|| format!("writing {}", crl.display()))?;
    }
    let files = BrokerFiles {
        ca: abs("ca.crt")?,
        certificate: abs("broker.crt")?,
        key: abs("broker.key")?,
        acl: abs("acl")?,
        persistence_dir: abs("persistence")?,
        crl: crl.display().to_string(),
    };
    std::fs::create_dir_all(out.join("persistence"))?;
    std::fs::write(
        out.join("mosquitto.conf"),
        brokerconf::mosquitto_conf(&bind, port, &files),
    )?;
    println!(
        "wrote {}/mosquitto.conf, acl, ca.crt, broker.crt/.key, fleet.crt/.key, and {}",
        out.display(),
        crl.display()
    );
    println!("run:   mosquitto -c {}", abs("mosquitto.conf")?);
    println!(
        "fleet: [broker] mode = \"external\", address = \"{}:{port}\",",
        hostnames[0]
    );
    println!(
        "       crl_file = \"{}\"   (the fleet must be able to write it, the broker to read it; kept if it exists)",
        crl.display()
    );
    println!(
        "       [broker.tls] ca = \"{}\", certificate = \"{}\", private_key = \"{}\"",
        files.ca,
        abs("fleet.crt")?,
        abs("fleet.key")?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_check_passes_on_the_example() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The example's TLS paths are examples: files that exist stand in for them.
        let mut text = medgate_fleet::config::EXAMPLE.to_string();
        for name in ["ca.crt", "fleet.crt", "fleet.key"] {
            let f = dir.path().join(name);
            std::fs::write(&f, "PEM").expect("write");
            text = text.replace(
                &format!("\"/etc/medgate/broker/{name}\""),
                &format!("{:?}", f.display().to_string()),
            );
        }
        let file = dir.path().join("fleet.toml");
        std::fs::write(&file, text).expect("write");
        let report = check(&file).expect("valid");
        assert!(report.contains(": valid"), "{report}");
        assert!(
            report.contains("broker: mqtt.region.example:8883 (TLS)"),
            "{report}"
        );
        assert!(
            report.contains("  alerts: on, console only (no [alerts.email] or [alerts.webhook])"),
            "{report}"
        );
    }

    /// alerts (issue 13 part 3): `config check` reports the channels, or each problem by key.
    #[test]
    fn config_check_covers_alerts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleet.toml");
        std::fs::write(
            &file,
            "[alerts]\ndisk_warning_percent = 101\n[alerts.email]\nserver = \"smtp.x:587\"\nfrom = \"it@x.example\"\nto = [\"nope\"]\n",
        )
        .expect("write");
        let problems = check(&file).expect_err("invalid");
        assert!(
            problems.contains("  alerts.disk_warning_percent: give 1 to 100\n"),
            "{problems}"
        );
        assert!(
            problems.contains(
                "  alerts.email.to: \"nope\" is not an address like it@hospital.example\n"
            ),
            "{problems}"
        );
        std::fs::write(
            &file,
            "[alerts.email]\nserver = \"smtp.x:587\"\nfrom = \"it@x.example\"\nto = [\"pacs-it@x.example\"]\n[alerts.webhook]\nurl = \"https://hooks.x.example/m\"\n",
        )
        .expect("write");
        let report = check(&file).expect("valid");
        assert!(
            report.contains("  alerts: on, e-mail via smtp.x:587 (STARTTLS) to pacs-it@x.example; webhook https://hooks.x.example/m\n"),
            "{report}"
        );
    }

    #[test]
    fn config_check_lists_every_problem_with_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleet.toml");
        std::fs::write(
            &file,
            "[http]\nbind = \"0.0.0.0:8800\"\n[broker]\nmode = \"external\"\n",
        )
        .expect("write");
        let problems = check(&file).expect_err("invalid");
        assert!(problems.contains("  http.bind: "), "{problems}");
        assert!(problems.contains("  broker.address: "), "{problems}");
        assert!(problems.contains("fix them and check again"), "{problems}");
    }

    #[test]
    fn the_cli_parses_config_example() {
        let cli = Cli::try_parse_from(["medgate-fleet", "config", "example"]).expect("parses");
        assert!(matches!(
            cli.command,
            Cmd::Config {
                command: ConfigCmd::Example
            }
        ));
    }
}
