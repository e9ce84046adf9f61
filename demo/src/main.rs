//! `medgate-demo`: the whole way of an image on one machine. Simulated modalities (a CT scanner,
//! a DR room, an ultrasound cart, an ECG cart) send generated studies to two Medgate appliances,
//! which store them durably and forward them to the regional archive: Orthanc when it is
//! installed (C-STORE for one appliance, DICOMweb STOW-RS for the other), otherwise a built-in
//! archive sink (a Medgate receiver without destinations). The fleet manager runs too (embedded
//! MQTT broker, SQLite): the appliances enroll with claim tokens and report to it.

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
use tokio_util::sync::CancellationToken;

const ORTHANC: &str = "/usr/sbin/Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// Runs the Medgate demo: simulated modalities → two appliances → the regional archive, and
/// the fleet manager that the appliances enroll with and report to.
///
/// Everything runs on this machine, on loopback ports chosen at start. With Orthanc installed
/// (Debian: apt-get install orthanc orthanc-dicomweb) it plays the regional archive; without it
/// a built-in archive sink does. The demo prints what happened and the URLs to look at, then
/// keeps running until Ctrl-C (or exits at once with --once).
#[derive(Debug, Parser)]
#[command(name = "medgate-demo", version, verbatim_doc_comment)]
struct Args {
    /// Work directory (spools, generated studies, archive storage). Default: a new temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
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

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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

    async fn instance_count(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        match self {
            Archive::Orthanc { http_port, .. } => {
                let v: serde_json::Value = http
                    .get(format!("http://127.0.0.1:{http_port}/statistics"))
                    .send()
                    .await?
                    .json()
                    .await?;
                Ok(v["CountInstances"].as_u64().unwrap_or(0))
            }
            Archive::Sink { status_port, .. } => {
                Ok(status(http, *status_port).await?.objects_received)
            }
        }
    }
}

async fn start_orthanc(dir: &Path) -> anyhow::Result<Archive> {
    let dicom_port = free_port()?;
    let http_port = free_port()?;
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
async fn start_fleet(dir: &Path) -> anyhow::Result<(medgate_fleet::Running, String)> {
    let mut config = medgate_fleet::config::FleetConfig {
        data_dir: dir.join("fleet"),
        ..Default::default()
    };
    config.http.bind = format!("127.0.0.1:{}", free_port()?).parse()?;
    config.broker.listen = format!("127.0.0.1:{}", free_port()?).parse()?;
    let running = medgate_fleet::serve(config)
        .await
        .map_err(|e| anyhow::anyhow!("fleet manager: {e}"))?;
    let token = std::fs::read_to_string(&running.admin_token_file)?
        .trim()
        .to_string();
    Ok((running, token))
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
    let _keep;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            let t = tempfile::Builder::new().prefix("medgate-demo-").tempdir()?;
            let p = t.path().to_path_buf();
            _keep = t;
            p
        }
    };
    println!("Medgate demo in {}", dir.display());
    let shutdown = CancellationToken::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // 1. The regional archive.
    let use_orthanc =
        !args.no_orthanc && Path::new(ORTHANC).exists() && Path::new(DICOMWEB_PLUGIN).exists();
    let mut archive = if use_orthanc {
        start_orthanc(&dir).await?
    } else {
        let dicom_port = free_port()?;
        let status_port = free_port()?;
        let cfg = appliance_config(
            "archive-sink",
            "ARCHIVE",
            &dir.join("archive"),
            dicom_port,
            status_port,
            "",
        )?;
        tokio::spawn(medgate_appliance::app::run(cfg, shutdown.clone()));
        wait_healthy(&http, status_port).await?;
        Archive::Sink {
            dicom_port,
            status_port,
        }
    };
    println!("archive:   {}", archive.describe());

    // 2. The fleet manager (hospital IT's view of every appliance).
    let (fleet, fleet_token) = start_fleet(&dir).await?;
    let fleet_url = format!("http://{}", fleet.http);
    println!(
        "fleet:     {fleet_url}/api/v1/devices (Authorization: Bearer $(cat {})), live feed {fleet_url}/api/v1/live, MQTT {}:{}",
        fleet.admin_token_file.display(),
        fleet.broker.0,
        fleet.broker.1
    );

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
    let mut appliances = Vec::new();
    for (name, ae, dest) in rooms {
        let port = free_port()?;
        let status_port = free_port()?;
        enroll(&http, &fleet_url, &fleet_token, name, &dir.join(name)).await?;
        let cfg = appliance_config(name, ae, &dir.join(name), port, status_port, &dest)?;
        let sd = shutdown.clone();
        tokio::spawn(async move { medgate_appliance::fleet::run(cfg, None, sd).await });
        wait_healthy(&http, status_port).await?;
        println!(
            "appliance: {name}: DICOM {ae}@127.0.0.1:{port}, status http://127.0.0.1:{status_port}/api/status, metrics http://127.0.0.1:{status_port}/metrics"
        );
        appliances.push((name, ae, port, status_port));
    }

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
        modality("CT_SCANNER", a1.1, a1.2, &ct_files),
        modality("DR_ROOM", a1.1, a1.2, &dx_files),
        modality("US_CART", a2.1, a2.2, &us_files),
        modality("ECG_CART", a2.1, a2.2, &ecg_files),
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
    while Instant::now() < deadline {
        in_archive = archive.instance_count(&http).await.unwrap_or(0);
        if in_archive as usize >= acknowledged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "archive:   {in_archive} of {acknowledged} instances arrived in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (name, _, _, status_port) in &appliances {
        let s = status(&http, *status_port).await?;
        for d in &s.destinations {
            println!(
                "appliance: {name}: received {}, {} → {} forwarded, {} waiting, {} quarantined",
                s.objects_received, d.name, d.forwarded, d.queue_depth, d.quarantined
            );
        }
    }
    // 7. What the fleet saw (counts and states only: no patient data leaves an appliance).
    let mut fleet_counts = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        fleet_counts = 0;
        for (name, ..) in &appliances {
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
    for (name, ..) in &appliances {
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
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Archive::Orthanc { child, .. } = &mut archive {
            let _ = child.kill().await;
        }
        if !complete {
            std::process::exit(1);
        }
        return Ok(());
    }
    println!(
        "\nThe demo keeps running: try `medgate-appliance status --url http://127.0.0.1:{}`, the fleet at {fleet_url}/api/v1/devices, or send your own files with /usr/bin/storescu -aec CT_ROOM_1 127.0.0.1 {} FILE. Ctrl-C stops it.",
        a1.3, a1.2
    );
    tokio::signal::ctrl_c().await?;
    shutdown.cancel();
    if let Archive::Orthanc { child, .. } = &mut archive {
        let _ = child.kill().await;
    }
    Ok(())
}
