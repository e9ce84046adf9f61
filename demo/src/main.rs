//! `medgate-demo`: the whole way of an image on one machine. Simulated modalities (a CT scanner,
//! a DR room, an ultrasound cart, an ECG cart) send generated studies to two Medgate appliances,
//! which store them durably and forward them to the regional archive: Orthanc when it is
//! installed (C-STORE for one appliance, DICOMweb STOW-RS for the other), otherwise a built-in
//! archive sink (a Medgate receiver without destinations). The fleet manager runs too (embedded
//! MQTT broker, SQLite): the appliances enroll with claim tokens and report to it.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "counts of the demo's own generated studies and ports; no input from outside"
)]

use anyhow::{Context, bail};
use clap::Parser;
use medgate_appliance::config::Config;
use medgate_appliance::scu::{ScuAssociation, ScuOptions};
use medgate_appliance::status::StatusReport;
use medgate_sim::studies::{
    CtOptions, DxOptions, EcgOptions, GeneratedFile, Patient, Study, UsOptions,
};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const ORTHANC: &str = "/usr/sbin/Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";
const STORESCU: &str = "/usr/bin/storescu";
/// The first of the demo's eight fixed ports when --ports is not given.
const DEFAULT_PORT_BASE: u16 = 10400;

/// Runs the Medgate demo: simulated modalities → two appliances → the regional archive, and
/// the fleet manager that the appliances enroll with and report to.
///
/// Everything runs on this machine, on loopback, on eight ports from --ports BASE:
///   BASE+0  ct-room-1 DICOM (AE CT_ROOM_1)   BASE+1  ct-room-1 status and metrics (HTTP)
///   BASE+2  us-room-2 DICOM (AE US_ROOM_2)   BASE+3  us-room-2 status and metrics (HTTP)
///   BASE+4  archive DICOM                    BASE+5  archive HTTP (Orthanc, or the sink's status)
///   BASE+6  fleet manager HTTP API           BASE+7  fleet manager MQTT broker
/// Without --ports they are 10400-10407 if all are free, else free ports the kernel picks
/// (the demo says so); --ports 0 always lets the kernel pick.
///
/// With Orthanc installed (Debian: apt-get install orthanc orthanc-dicomweb) it plays the
/// regional archive; without it a built-in archive sink does. The demo sends four studies,
/// prints what happened and the commands and URLs to look at, then keeps running: objects you
/// send to its appliances yourself (e.g. with storescu) are reported as they are received and
/// forwarded ("live:" lines). Ctrl-C (or SIGTERM) stops the appliances, the archive and the
/// fleet manager and deletes the temp work directory, unless --keep (or --dir) keeps it.
/// With --once it does the same right after the summary (exit code 1 if not everything arrived).
#[derive(Debug, Parser)]
#[command(name = "medgate-demo", version, verbatim_doc_comment)]
struct Args {
    /// Work directory (spools, generated studies, archive storage, fleet database), kept on
    /// exit. Default: a new temp dir, deleted on exit unless --keep.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temp work directory on exit (its path is printed).
    #[arg(long)]
    keep: bool,
    /// First of the eight consecutive loopback ports listed above; 0: any free ports.
    /// Default: 10400 if 10400-10407 are all free.
    #[arg(long, value_name = "BASE")]
    ports: Option<u16>,
    /// CT slices in the CT series (0.5 MB each).
    #[arg(long, default_value_t = 60)]
    ct_slices: u32,
    /// Use the built-in archive sink even if Orthanc is installed.
    #[arg(long)]
    no_orthanc: bool,
    /// Exit when every study reached the archive (exit code 1 if not within --timeout-secs).
    #[arg(long)]
    once: bool,
    /// How long to wait for everything to reach the archive.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

/// What each of the eight ports is for, in --ports order.
const PORT_ROLES: [&str; 8] = [
    "ct-room-1 DICOM",
    "ct-room-1 status",
    "us-room-2 DICOM",
    "us-room-2 status",
    "archive DICOM",
    "archive HTTP",
    "fleet HTTP",
    "fleet MQTT",
];

/// The demo's loopback ports, in --ports order.
#[derive(Debug, Clone, Copy)]
struct Ports([u16; 8]);

impl Ports {
    fn from_base(base: u16) -> Self {
        let mut p = [0; 8];
        for (i, slot) in p.iter_mut().enumerate() {
            *slot = base + i as u16;
        }
        Ports(p)
    }

    /// Eight distinct free ports, picked by the kernel.
    fn free() -> anyhow::Result<Self> {
        // All eight listeners are held until every port is known, so that none repeats.
        let listeners = (0..8)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut p = [0; 8];
        for (slot, l) in p.iter_mut().zip(&listeners) {
            *slot = l.local_addr()?.port();
        }
        Ok(Ports(p))
    }

    /// The first of BASE..BASE+7 that cannot be bound on loopback now, with its role.
    fn busy(base: u16) -> Option<(u16, &'static str)> {
        Ports::from_base(base)
            .0
            .into_iter()
            .zip(PORT_ROLES)
            .find(|(p, _)| TcpListener::bind(("127.0.0.1", *p)).is_err())
    }

    /// The ports to use, and how they were chosen (printed).
    fn choose(requested: Option<u16>) -> anyhow::Result<(Self, String)> {
        match requested {
            Some(0) => Ok((Ports::free()?, "picked by the kernel (--ports 0)".into())),
            Some(base) => {
                if base > u16::MAX - 7 {
                    bail!("--ports {base}: the eight ports BASE..BASE+7 must be below 65536");
                }
                if let Some((p, role)) = Ports::busy(base) {
                    bail!(
                        "--ports {base}: port {p} ({role}) is in use; choose another BASE, or --ports 0 for any free ports"
                    );
                }
                Ok((
                    Ports::from_base(base),
                    format!("{base}-{} (--ports {base})", base + 7),
                ))
            }
            None => match Ports::busy(DEFAULT_PORT_BASE) {
                None => Ok((
                    Ports::from_base(DEFAULT_PORT_BASE),
                    format!(
                        "{DEFAULT_PORT_BASE}-{} (the default; --ports BASE chooses others)",
                        DEFAULT_PORT_BASE + 7
                    ),
                )),
                Some((p, role)) => {
                    let ports = Ports::free()?;
                    let list: Vec<String> = ports
                        .0
                        .iter()
                        .zip(PORT_ROLES)
                        .map(|(p, r)| format!("{r} {p}"))
                        .collect();
                    Ok((
                        ports,
                        format!(
                            "port {p} ({role}) of the default {DEFAULT_PORT_BASE}-{} is in use, so the kernel picked: {}; --ports BASE fixes them",
                            DEFAULT_PORT_BASE + 7,
                            list.join(", ")
                        ),
                    ))
                }
            },
        }
    }

    fn room(&self, i: usize) -> (u16, u16) {
        (self.0[2 * i], self.0[2 * i + 1])
    }
    fn archive_dicom(&self) -> u16 {
        self.0[4]
    }
    fn archive_http(&self) -> u16 {
        self.0[5]
    }
    fn fleet_http(&self) -> u16 {
        self.0[6]
    }
    fn fleet_mqtt(&self) -> u16 {
        self.0[7]
    }
}

/// The work directory: a temp dir (deleted on exit unless --keep) or the user's --dir (kept).
enum WorkDir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(t) => t.path(),
            WorkDir::Given(p) => p,
        }
    }
}

/// One modality room's appliance.
#[derive(Debug, Clone)]
struct Room {
    name: &'static str,
    ae: &'static str,
    port: u16,
    status_port: u16,
}

/// The archive the appliances forward to.
enum Archive {
    Orthanc {
        child: tokio::process::Child,
        dicom_port: u16,
        http_port: u16,
    },
    Sink {
        dicom_port: u16,
        status_port: u16,
    },
}

/// How to count the archive's instances (a copy the live report can keep).
#[derive(Debug, Clone, Copy)]
struct ArchiveProbe {
    orthanc: bool,
    http_port: u16,
}

impl ArchiveProbe {
    async fn instance_count(self, http: &reqwest::Client) -> anyhow::Result<u64> {
        if self.orthanc {
            let v: serde_json::Value = http
                .get(format!("http://127.0.0.1:{}/statistics", self.http_port))
                .send()
                .await?
                .json()
                .await?;
            Ok(v["CountInstances"].as_u64().unwrap_or(0))
        } else {
            Ok(status(http, self.http_port).await?.objects_received)
        }
    }
}

impl Archive {
    fn describe(&self) -> String {
        match self {
            Archive::Orthanc {
                dicom_port,
                http_port,
                ..
            } => format!(
                "Orthanc: DICOM ORTHANC@127.0.0.1:{dicom_port}, web http://127.0.0.1:{http_port}/app/explorer.html, DICOMweb http://127.0.0.1:{http_port}/dicom-web"
            ),
            Archive::Sink {
                dicom_port,
                status_port,
            } => format!(
                "built-in archive sink: DICOM ARCHIVE@127.0.0.1:{dicom_port}, status http://127.0.0.1:{status_port}/api/status"
            ),
        }
    }

    /// What stops on exit.
    fn short(&self) -> String {
        match self {
            Archive::Orthanc { child, .. } => match child.id() {
                Some(pid) => format!("the archive (Orthanc, pid {pid})"),
                None => "the archive (Orthanc)".into(),
            },
            Archive::Sink { .. } => "the archive (built-in sink)".into(),
        }
    }

    fn probe(&self) -> ArchiveProbe {
        match self {
            Archive::Orthanc { http_port, .. } => ArchiveProbe {
                orthanc: true,
                http_port: *http_port,
            },
            Archive::Sink { status_port, .. } => ArchiveProbe {
                orthanc: false,
                http_port: *status_port,
            },
        }
    }
}

async fn start_orthanc(dir: &Path, ports: &Ports) -> anyhow::Result<Archive> {
    let dicom_port = ports.archive_dicom();
    let http_port = ports.archive_http();
    let storage = dir.join("orthanc");
    std::fs::create_dir_all(&storage)?;
    let config = serde_json::json!({
        "Name": "MEDGATE-DEMO-ARCHIVE",
        "StorageDirectory": storage.join("storage"),
        "IndexDirectory": storage.join("index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "StorageCompression": false,
        "DicomCheckCalledAet": false,
        "TcpNoDelay": true,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
    });
    let cfg_path = storage.join("orthanc.json");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&config)?)?;
    let log = std::fs::File::create(storage.join("orthanc.log"))?;
    let child = tokio::process::Command::new(ORTHANC)
        .arg(&cfg_path)
        .env("TCP_NODELAY", "1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start Orthanc")?;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http
            .get(format!("http://127.0.0.1:{http_port}/system"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(Archive::Orthanc {
                child,
                dicom_port,
                http_port,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "Orthanc did not answer within 30 s; see {}",
        storage.join("orthanc.log").display()
    )
}

fn appliance_config(
    name: &str,
    ae: &str,
    data_dir: &Path,
    port: u16,
    status_port: u16,
    destination: &str,
) -> anyhow::Result<Config> {
    let text = format!(
        r#"
[appliance]
name = "{name}"
data_dir = "{dir}"
fleet_enrollment = "{dir}/identity/fleet.toml"
[listener]
ae_title = "{ae}"
bind = "127.0.0.1:{port}"
[spool]
retention_hours = 1
[forward]
initial_backoff_ms = 500
max_backoff_secs = 10
{destination}
[status]
bind = "127.0.0.1:{status_port}"
"#,
        dir = data_dir.display()
    );
    Config::parse(&text).map_err(|e| anyhow::anyhow!("demo configuration: {e}"))
}

/// The fleet manager, zero-setup (embedded broker, SQLite), in this process.
async fn start_fleet(
    dir: &Path,
    ports: &Ports,
) -> anyhow::Result<(medgate_fleet::Running, String)> {
    let mut config = medgate_fleet::config::FleetConfig {
        data_dir: dir.join("fleet"),
        ..Default::default()
    };
    config.http.bind = format!("127.0.0.1:{}", ports.fleet_http()).parse()?;
    config.broker.listen = format!("127.0.0.1:{}", ports.fleet_mqtt()).parse()?;
    let running = medgate_fleet::serve(config)
        .await
        .map_err(|e| anyhow::anyhow!("fleet manager: {e}"))?;
    let token = std::fs::read_to_string(&running.admin_token_file)?
        .trim()
        .to_string();
    Ok((running, token))
}

/// A display link for the demo's wall (made by the fleet's break-glass principal, audited like
/// any other) and the year before today of generated studies for the two rooms. Returns the
/// wall's path.
async fn wall_and_history(fleet: &medgate_fleet::Running) -> anyhow::Result<String> {
    use medgate_fleet::analytics::history::{History, SeedDevice};
    use medgate_fleet::civil::Day;
    let ops = &fleet.app.ops;
    let actor = medgate_fleet::ops::Actor::new(medgate_fleet::auth::Principal::break_glass(), None);
    let link = ops
        .create_display(&actor, "Demo IT office wall", None, None)
        .await
        .map_err(|e| anyhow::anyhow!("display link: {e}"))?;
    let rooms = [("ct-room-1", "CT"), ("us-room-2", "US")];
    let mut devices = Vec::new();
    for (device, modality) in rooms {
        devices.push(SeedDevice {
            site: "demo-hospital".into(),
            device: device.into(),
            modality: medgate_contract::Modality::new(modality)?,
        });
    }
    // About 40 studies a day per room, busier on weekdays.
    let history = History::new(devices, 2 * 40 * 365, 2026)?;
    let today = Day::of_ms(medgate_fleet::store::now_db());
    ops.store
        .seed_history(&history, today.plus(-365), today.start_ms() - 1)
        .await
        .map_err(|e| anyhow::anyhow!("analytics history: {e}"))?;
    Ok(format!("/wall/{}", link.secret))
}

/// Claims a device in the fleet and enrolls the appliance with the token, as a technician would.
async fn enroll(
    http: &reqwest::Client,
    fleet: &str,
    token: &str,
    device: &str,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let claim: serde_json::Value = http
        .post(format!("{fleet}/api/v1/claims"))
        .bearer_auth(token)
        .json(&serde_json::json!({"site": "demo-hospital", "device": device}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let provisioning = medgate_appliance::fleet::enroll::Provisioning {
        fleet_url: fleet.to_string(),
        claim_token: claim["token"].as_str().unwrap_or_default().to_string(),
        broker: None,
        fleet_ca: None,
        telemetry_interval_secs: Some(2),
    };
    medgate_appliance::fleet::enroll::enroll(&provisioning, &data_dir.join("identity"))
        .await
        .with_context(|| format!("enrolling {device}"))?;
    Ok(())
}

/// GET `/api/v1{path}` of the fleet with the admin token.
async fn fleet_get(
    http: &reqwest::Client,
    fleet: &str,
    token: &str,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    Ok(http
        .get(format!("{fleet}/api/v1{path}"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn status(http: &reqwest::Client, port: u16) -> anyhow::Result<StatusReport> {
    Ok(http
        .get(format!("http://127.0.0.1:{port}/api/status"))
        .send()
        .await?
        .json()
        .await?)
}

async fn wait_healthy(http: &reqwest::Client, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("an appliance did not become healthy on port {port}")
}

/// A simulated modality: one association, every file sent with C-STORE.
async fn modality(
    calling_ae: &str,
    called_ae: &str,
    port: u16,
    files: &[GeneratedFile],
) -> anyhow::Result<(usize, usize)> {
    let mut proposals: Vec<(String, Vec<String>)> = Vec::new();
    for f in files {
        let p = (f.sop_class_uid.clone(), vec![f.transfer_syntax_uid.clone()]);
        if !proposals.contains(&p) {
            proposals.push(p);
        }
    }
    let opts = ScuOptions {
        address: format!("127.0.0.1:{port}"),
        calling_ae: calling_ae.into(),
        called_ae: called_ae.into(),
        timeout: Duration::from_secs(30),
        tls: None,
    };
    let mut assoc = ScuAssociation::connect(&opts, &proposals).await?;
    let (mut ok, mut failed) = (0, 0);
    for f in files {
        match assoc.store_file(&f.path).await {
            Ok(rsp) if rsp.status == 0 => ok += 1,
            Ok(rsp) => {
                failed += 1;
                eprintln!(
                    "  {calling_ae}: {} refused with {:04X}",
                    f.sop_instance_uid, rsp.status
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("  {calling_ae}: {e}");
            }
        }
    }
    assoc.release().await;
    Ok((ok, failed))
}

/// How to run another binary of this workspace: its path if it was built next to this one
/// (`cargo build` builds them all), else `cargo run` (from the source tree).
fn command_for(bin: &str) -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(bin)))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("cargo run -q --bin {bin} --"))
}

/// Received, and per destination (forwarded, waiting, quarantined): what a live line reports.
type Counts = (u64, Vec<(u64, u64, u64)>);

fn counts(s: &StatusReport) -> Counts {
    (
        s.objects_received,
        s.destinations
            .iter()
            .map(|d| (d.forwarded, d.queue_depth, d.quarantined))
            .collect(),
    )
}

/// One "live:" line: an appliance's counts, and the change of its received count.
fn live_line(room: &Room, s: &StatusReport, received_before: u64) -> String {
    let delta = s.objects_received as i64 - received_before as i64;
    let mut line = format!("{}: {} received", room.name, s.objects_received);
    if delta != 0 {
        line.push_str(&format!(" ({delta:+})"));
    }
    for d in &s.destinations {
        line.push_str(&format!(
            "; {}: {} forwarded, {} waiting, {} quarantined",
            d.name, d.forwarded, d.queue_depth, d.quarantined
        ));
        if d.queue_depth > 0 {
            if let Some(e) = &d.last_error {
                line.push_str(&format!(" (last error: {e})"));
            }
        }
    }
    line
}

/// Reports, once a second, every change of the appliances' counts and of the archive's: what
/// a user sends from their own tools shows up here.
async fn watch(
    http: reqwest::Client,
    rooms: Vec<Room>,
    mut seen: Vec<Option<Counts>>,
    archive: ArchiveProbe,
    mut in_archive: u64,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (room, seen) in rooms.iter().zip(seen.iter_mut()) {
            let Ok(s) = status(&http, room.status_port).await else {
                continue;
            };
            let now = counts(&s);
            if let Some(before) = seen.as_ref() {
                if *before != now {
                    println!("live:      {}", live_line(room, &s, before.0));
                }
            }
            *seen = Some(now);
        }
        if let Ok(n) = archive.instance_count(&http).await {
            if n != in_archive {
                println!(
                    "live:      archive: {n} instances ({:+})",
                    n as i64 - in_archive as i64
                );
                in_archive = n;
            }
        }
    }
}

/// Waits for Ctrl-C or SIGTERM; says which.
async fn interrupted() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r?;
            Ok("Ctrl-C")
        }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

/// Stops what the demo started and deletes (or keeps) its work directory, saying what it does.
async fn stop(
    shutdown: &CancellationToken,
    services: Vec<(&'static str, JoinHandle<()>)>,
    archive: &mut Archive,
    fleet_url: &str,
    work: WorkDir,
    keep: bool,
) {
    let names: Vec<&str> = services
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "archive-sink")
        .collect();
    println!(
        "stopping:  appliances {}, {}, the fleet manager ({fleet_url} and its MQTT broker)",
        names.join(" and "),
        archive.short()
    );
    shutdown.cancel();
    for (name, handle) in services {
        if tokio::time::timeout(Duration::from_secs(20), handle)
            .await
            .is_err()
        {
            println!("stopping:  {name} did not stop within 20 s; exiting anyway");
        }
    }
    if let Archive::Orthanc { child, .. } = archive {
        let _ = child.kill().await;
    }
    match work {
        WorkDir::Given(p) => println!(
            "kept:      {} (given with --dir: spools, studies, archive storage, fleet database)",
            p.display()
        ),
        WorkDir::Temp(t) if keep => {
            let p = t.keep();
            println!(
                "kept:      {} (--keep): spools ct-room-1/ us-room-2/, studies/, archive storage, fleet database fleet/",
                p.display()
            );
        }
        WorkDir::Temp(t) => {
            let p = t.path().to_path_buf();
            match t.close() {
                Ok(()) => println!(
                    "deleted:   {} (spools, generated studies, archive storage, fleet database; --keep keeps them)",
                    p.display()
                ),
                Err(e) => println!("could not delete {}: {e}", p.display()),
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    medgate_appliance::app::install_crypto_provider();
    let (ports, ports_note) = Ports::choose(args.ports)?;
    let work = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            WorkDir::Given(d.clone())
        }
        None => WorkDir::Temp(tempfile::Builder::new().prefix("medgate-demo-").tempdir()?),
    };
    let dir = work.path().to_path_buf();
    println!("Medgate demo in {}", dir.display());
    println!("ports:     {ports_note}");
    let shutdown = CancellationToken::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut services: Vec<(&'static str, JoinHandle<()>)> = Vec::new();

    // 1. The regional archive.
    let use_orthanc =
        !args.no_orthanc && Path::new(ORTHANC).exists() && Path::new(DICOMWEB_PLUGIN).exists();
    let mut archive = if use_orthanc {
        start_orthanc(&dir, &ports).await?
    } else {
        let dicom_port = ports.archive_dicom();
        let status_port = ports.archive_http();
        let cfg = appliance_config(
            "archive-sink",
            "ARCHIVE",
            &dir.join("archive"),
            dicom_port,
            status_port,
            "",
        )?;
        let sd = shutdown.clone();
        services.push((
            "archive-sink",
            tokio::spawn(async move {
                if let Err(e) = medgate_appliance::app::run(cfg, sd).await {
                    eprintln!("archive sink: {e}");
                }
            }),
        ));
        wait_healthy(&http, status_port).await?;
        Archive::Sink {
            dicom_port,
            status_port,
        }
    };
    println!("archive:   {}", archive.describe());

    // 2. The fleet manager (hospital IT's view of every appliance).
    let (fleet, fleet_token) = start_fleet(&dir, &ports).await?;
    let fleet_url = format!("http://{}", fleet.http);
    println!(
        "fleet:     {fleet_url}/api/v1/devices (Authorization: Bearer $(cat {})), live feed {fleet_url}/api/v1/live, MQTT {}:{}",
        fleet.admin_token_file.display(),
        fleet.broker.0,
        fleet.broker.1
    );
    match &fleet.setup_token {
        Some(t) => {
            println!("console:   {fleet_url}/   first admin (once): {fleet_url}/setup?token={t}")
        }
        None => println!("console:   {fleet_url}/"),
    }

    // 3. Two appliances, one per modality room, enrolled with the fleet.
    let (ct_dest, us_dest) = match &archive {
        Archive::Orthanc {
            dicom_port,
            http_port,
            ..
        } => (
            format!(
                "[[destination]]\nname = \"regional-archive\"\nkind = \"dimse\"\naddress = \"127.0.0.1:{dicom_port}\"\ncalled_ae_title = \"ORTHANC\"\nparallel = 2\n"
            ),
            format!(
                "[[destination]]\nname = \"regional-archive-web\"\nkind = \"stow\"\nurl = \"http://127.0.0.1:{http_port}/dicom-web\"\nparallel = 2\n"
            ),
        ),
        Archive::Sink { dicom_port, .. } => {
            let d = format!(
                "[[destination]]\nname = \"regional-archive\"\nkind = \"dimse\"\naddress = \"127.0.0.1:{dicom_port}\"\ncalled_ae_title = \"ARCHIVE\"\nparallel = 2\n"
            );
            (d.clone(), d)
        }
    };
    let rooms = [
        ("ct-room-1", "CT_ROOM_1", ct_dest),
        ("us-room-2", "US_ROOM_2", us_dest),
    ];
    let mut appliances: Vec<Room> = Vec::new();
    for (i, (name, ae, dest)) in rooms.into_iter().enumerate() {
        let (port, status_port) = ports.room(i);
        enroll(&http, &fleet_url, &fleet_token, name, &dir.join(name)).await?;
        let cfg = appliance_config(name, ae, &dir.join(name), port, status_port, &dest)?;
        let sd = shutdown.clone();
        services.push((
            name,
            tokio::spawn(async move {
                let attach =
                    |local: &_, hooks: &_| medgate_appliance::fleet::attach(local, None, hooks);
                if let Err(e) = medgate_appliance::supervisor::run(cfg, sd, attach).await {
                    eprintln!("{name}: {e}");
                }
            }),
        ));
        wait_healthy(&http, status_port).await?;
        println!(
            "appliance: {name}: DICOM {ae}@127.0.0.1:{port}, status http://127.0.0.1:{status_port}/api/status, metrics http://127.0.0.1:{status_port}/metrics"
        );
        appliances.push(Room {
            name,
            ae,
            port,
            status_port,
        });
    }
    // The wall for the IT office's screen (a display link: read-only, no login), and a year of
    // generated history for the two rooms in the analytics rollups, so the trends are not empty
    // (today's figures are only what the modalities below really send).
    let wall = wall_and_history(&fleet).await?;
    println!("wall:      {fleet_url}{wall}   (the live wall: a display link, no login)");
    println!(
        "analytics: {fleet_url}/analytics   (a year of generated history for ct-room-1 and us-room-2, after the first-run setup)"
    );

    // 4. Studies, generated for synthetic patients.
    let studies_dir = dir.join("studies");
    let mut ct = Study::new(Patient::synthetic(1), "ACC0001", 1);
    let ct_files = ct.ct_series(
        &studies_dir.join("ct"),
        &CtOptions {
            slices: args.ct_slices,
            ..CtOptions::default()
        },
    )?;
    let mut dx = Study::new(Patient::synthetic(2), "ACC0002", 2);
    let dx_files = vec![dx.dx_image(&studies_dir.join("dx"), &DxOptions::default())?];
    let mut us = Study::new(Patient::synthetic(3), "ACC0003", 3);
    let us_files = vec![us.us_multiframe(&studies_dir.join("us"), &UsOptions::default())?];
    let mut ecg = Study::new(Patient::synthetic(4), "ACC0004", 4);
    let ecg_files = vec![ecg.ecg(&studies_dir.join("ecg"), &EcgOptions::default())?];
    let total = ct_files.len() + dx_files.len() + us_files.len() + ecg_files.len();
    let bytes: u64 = [&ct_files, &dx_files, &us_files, &ecg_files]
        .iter()
        .flat_map(|v| v.iter())
        .map(|f| f.size_bytes)
        .sum();
    println!(
        "studies:   CT series ({} slices), DX image, US multi-frame, 12-lead ECG: {total} objects, {:.1} MB",
        ct_files.len(),
        bytes as f64 / 1e6
    );

    // 5. The modalities send, in parallel, as in a real morning.
    let (a1, a2) = (&appliances[0], &appliances[1]);
    let started = Instant::now();
    let sends = tokio::join!(
        modality("CT_SCANNER", a1.ae, a1.port, &ct_files),
        modality("DR_ROOM", a1.ae, a1.port, &dx_files),
        modality("US_CART", a2.ae, a2.port, &us_files),
        modality("ECG_CART", a2.ae, a2.port, &ecg_files),
    );
    let mut acknowledged = 0;
    for (who, r) in [
        ("CT_SCANNER", sends.0),
        ("DR_ROOM", sends.1),
        ("US_CART", sends.2),
        ("ECG_CART", sends.3),
    ] {
        let (ok, failed) = r.with_context(|| format!("{who} could not send"))?;
        println!("modality:  {who}: {ok} acknowledged, {failed} refused");
        acknowledged += ok;
    }
    println!(
        "ingest:    {acknowledged} objects acknowledged (durable on the appliances) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 6. Wait for the archive to have everything.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut in_archive = 0;
    let probe = archive.probe();
    while Instant::now() < deadline {
        in_archive = probe.instance_count(&http).await.unwrap_or(0);
        if in_archive as usize >= acknowledged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "archive:   {in_archive} of {acknowledged} instances arrived in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut seen = Vec::new();
    for room in &appliances {
        let s = status(&http, room.status_port).await?;
        for d in &s.destinations {
            println!(
                "appliance: {}: received {}, {} → {} forwarded, {} waiting, {} quarantined",
                room.name, s.objects_received, d.name, d.forwarded, d.queue_depth, d.quarantined
            );
        }
        seen.push(Some(counts(&s)));
    }
    // 7. What the fleet saw (counts and states only: no patient data leaves an appliance).
    let mut fleet_counts = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        fleet_counts = 0;
        for Room { name, .. } in &appliances {
            let t = fleet_get(
                &http,
                &fleet_url,
                &fleet_token,
                &format!("/devices/{name}/telemetry"),
            )
            .await?;
            fleet_counts += t["samples"]
                .as_array()
                .and_then(|s| s.last())
                .and_then(|s| s["data"]["received"]["objects"].as_u64())
                .unwrap_or(0) as usize;
        }
        if fleet_counts >= acknowledged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for Room { name, .. } in &appliances {
        let d = fleet_get(&http, &fleet_url, &fleet_token, &format!("/devices/{name}")).await?;
        println!(
            "fleet:     {name}: {} ({}), {} events, AE {}",
            d["connection"].as_str().unwrap_or("?"),
            d["status"].as_str().unwrap_or("?"),
            d["events_received"],
            d["inventory"]["ae_title"].as_str().unwrap_or("?"),
        );
    }
    println!("fleet:     {fleet_counts} of {acknowledged} received objects reported to the fleet");
    let complete = in_archive as usize >= acknowledged
        && acknowledged == total
        && fleet_counts == acknowledged;
    println!(
        "{}",
        if complete {
            "RESULT: every image reached the archive, and the fleet saw every appliance report it"
        } else {
            "RESULT: NOT every image reached the archive (or the fleet did not see it)"
        }
    );

    if args.once {
        stop(
            &shutdown,
            services,
            &mut archive,
            &fleet_url,
            work,
            args.keep,
        )
        .await;
        if !complete {
            std::process::exit(1);
        }
        return Ok(());
    }

    // 8. Keep running: what to try, and a live line whenever the counts change.
    let appliance_cmd = command_for("medgate-appliance");
    let sim_cmd = command_for("medgate-sim");
    let storescu = if Path::new(STORESCU).exists() {
        STORESCU
    } else {
        "storescu (apt-get install dcmtk)"
    };
    let (ct, us) = (&appliances[0], &appliances[1]);
    let my_study = dir.join("my-study");
    println!();
    println!("The demo keeps running. Try:");
    println!(
        "  {appliance_cmd} status --url http://127.0.0.1:{}     (us-room-2: --url http://127.0.0.1:{})",
        ct.status_port, us.status_port
    );
    println!(
        "  {appliance_cmd} peers --url http://127.0.0.1:{}      (who called, with the SOP classes offered)",
        ct.status_port
    );
    println!(
        "  {appliance_cmd} quarantine list --url http://127.0.0.1:{}",
        ct.status_port
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $(cat {})\" {fleet_url}/api/v1/devices",
        fleet.admin_token_file.display()
    );
    println!("  {}", archive.describe());
    println!(
        "Send your own study (5 CT slices of a new synthetic patient) to {}:",
        ct.name
    );
    println!(
        "  {sim_cmd} generate --ct 5 --seed 7 --out {}",
        my_study.display()
    );
    println!(
        "  TCP_NODELAY=1 {storescu} -aet MY_SCU -aec {} +sd +r 127.0.0.1 {} {}",
        ct.ae,
        ct.port,
        my_study.display()
    );
    println!(
        "  (us-room-2: -aec {} 127.0.0.1 {}). What the appliances receive and forward is reported below as \"live:\" lines.",
        us.ae, us.port
    );
    println!(
        "Ctrl-C stops the appliances, the archive and the fleet manager and {}.",
        match (&work, args.keep) {
            (WorkDir::Given(_), _) | (WorkDir::Temp(_), true) => format!("keeps {}", dir.display()),
            (WorkDir::Temp(_), false) => format!("deletes {} (--keep keeps it)", dir.display()),
        }
    );
    tokio::spawn(watch(
        http.clone(),
        appliances.clone(),
        seen,
        probe,
        in_archive,
        shutdown.clone(),
    ));
    let why = interrupted().await?;
    println!("\n{why}: stopping the demo");
    stop(
        &shutdown,
        services,
        &mut archive,
        &fleet_url,
        work,
        args.keep,
    )
    .await;
    Ok(())
}
