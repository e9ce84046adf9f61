//! `medgate-fleet-loadgen`: simulates N appliances on the real protocol (one MQTT connection each,
//! retained birth and state, last will, telemetry at a fixed rate, events) against a fleet's
//! broker, for a bounded time, on loopback. Read the fleet's `/metrics` for the
//! publish-to-database latency histogram; this tool reports what it sent.
//!
//! Plain MQTT (the embedded broker) or mutual TLS (Mosquitto written by `medgate-fleet
//! broker-config`): with `--tls-ca-dir`, every simulated device gets its own client certificate
//! from the fleet CA (CN = device id, as enrollment issues), so the broker's per-device ACL applies.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use medgate_contract::*;
use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};

/// Simulate appliances against a Medgate fleet (loopback only).
#[derive(Debug, Parser)]
#[command(name = "medgate-fleet-loadgen", version)]
struct Args {
    /// Broker host:port (the fleet's embedded broker or Mosquitto without TLS).
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Number of simulated appliances.
    #[arg(long, default_value_t = 100)]
    devices: u32,
    /// Messages per second per appliance (telemetry; every 10th is an event instead).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// How long to send, seconds (bounded: at most 3600).
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Site id of the simulated appliances.
    #[arg(long, default_value = "loadgen")]
    site: String,
    /// Spread the appliances over this many sites, `<site>-01` … (1: all at --site).
    #[arg(long, default_value_t = 1)]
    sites: u32,
    /// Number of the first appliance (`sim-<first>` …): several generators against one fleet.
    #[arg(long, default_value_t = 0)]
    first: u32,
    /// Connections opened per second while ramping up (the sending time starts after the ramp).
    #[arg(long, default_value_t = 500)]
    connect_rate: u32,
    /// Mutual TLS: the fleet's CA directory (`{data_dir}/ca`, with ca.crt and ca.key). Each device
    /// gets a client certificate from it; the broker's certificate must be one of this CA
    /// (`medgate-fleet broker-config`) naming the --broker host.
    #[arg(long)]
    tls_ca_dir: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.secs == 0
        || args.secs > 3600
        || args.rate <= 0.0
        || args.rate > 100.0
        || args.devices == 0
        || args.sites == 0
    {
        bail!("--secs 1..=3600, --rate (0, 100], --devices >= 1, --sites >= 1");
    }
    let (host, port) = args.broker.rsplit_once(':').context("--broker host:port")?;
    if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
        bail!("--broker must be a loopback address: this tool only loads servers on this machine");
    }
    let port: u16 = port.parse().context("--broker port")?;
    let site = SiteId::new(args.site.as_str())?;
    let ca = match &args.tls_ca_dir {
        Some(dir) => {
            if !dir.join("ca.key").exists() {
                bail!(
                    "--tls-ca-dir {}: no ca.key there (the fleet's {{data_dir}}/ca)",
                    dir.display()
                );
            }
            Some(Arc::new(
                medgate_fleet::ca::Ca::load_or_create(dir).context("--tls-ca-dir")?,
            ))
        }
        None => None,
    };
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let mut tasks = Vec::new();
    let connect_rate = args.connect_rate.max(1);
    let ramp_secs = f64::from(args.devices) / f64::from(connect_rate);
    // Every device sends for --secs once all are connected (sending starts as each connects).
    let deadline = Instant::now() + Duration::from_secs_f64(ramp_secs + args.secs as f64);
    let ramp_start = Instant::now();
    for i in 0..args.devices {
        let device = DeviceId::new(format!("sim-{:05}", u64::from(args.first) + u64::from(i)))?;
        let site = if args.sites > 1 {
            SiteId::new(format!("{}-{:02}", site.as_str(), i % args.sites + 1))?
        } else {
            site.clone()
        };
        let topics = DeviceTopics::new(site, device.clone());
        let (sent, acked, errors) = (sent.clone(), acked.clone(), errors.clone());
        let host = host.to_owned();
        let tls = match &ca {
            Some(ca) => Some(device_tls(ca, device.as_str())?),
            None => None,
        };
        tasks.push(tokio::spawn(async move {
            simulate(
                topics, host, port, tls, period, deadline, sent, acked, errors,
            )
            .await;
        }));
        // Pace the connections (absolute schedule: certificate issuing time is not added).
        let next = ramp_start + Duration::from_secs_f64(f64::from(i + 1) / f64::from(connect_rate));
        tokio::time::sleep_until(next.into()).await;
    }
    let started = Instant::now();
    let mut last = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let s = sent.load(Ordering::Relaxed);
        println!(
            "t={:>4}s sent={s} ({:.0}/s) acked={} errors={}",
            started.elapsed().as_secs(),
            (s - last) as f64 / 5.0,
            acked.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed)
        );
        last = s;
    }
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "done: devices={} sent={} acked(QoS1)={} errors={} secs={:.1}",
        args.devices,
        sent.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        ramp_start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A rustls client configuration for one simulated device: a fresh key and certificate from the
/// fleet CA (CN = device id), trusting that CA for the broker.
fn device_tls(
    ca: &medgate_fleet::ca::Ca,
    device: &str,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let (issued, key_pem) = ca.issue_with_key(device, &[], 1)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(c?)?;
    }
    let chain: Result<Vec<_>, _> =
        CertificateDer::pem_slice_iter(issued.certificate_pem.as_bytes()).collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("issued key unreadable")?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain?, key)?;
    Ok(Arc::new(config))
}

#[allow(clippy::too_many_arguments)]
async fn simulate(
    topics: DeviceTopics,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    period: Duration,
    deadline: Instant,
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) {
    let boot_id = fastrand::u64(..);
    let mut opts = MqttOptions::new(topics.device.as_str(), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some(tls) = tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    let will = State {
        schema: Schema::default(),
        sent_at_ms: now_ms(),
        state: DeviceState::Offline,
        boot_id,
    };
    opts.set_last_will(LastWill::new(
        topics.topic(Kind::State),
        encode(&will).unwrap_or_default(),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let poll_acked = acked.clone();
    let poll_errors = errors.clone();
    let (connected_tx, mut connected) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    let _ = connected_tx.send(true);
                }
                Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                    poll_acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => {
                    // Disconnecting at the end is not an error.
                    if Instant::now() < deadline {
                        poll_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    let inventory = Inventory {
        serial: Token::new(format!("SIM-{}", topics.device))
            .unwrap_or_else(|_| Token::new("SIM").expect("valid token")),
        hardware_profile: Token::new("simulated").expect("valid token"),
        os_version: Token::new("0").expect("valid token"),
        appliance_version: Token::new(env!("CARGO_PKG_VERSION")).expect("valid token"),
        ae_title: None,
        nics: vec![],
        disk: Disk::default(),
        peers: vec![],
        config_schema: None,
    };
    let interval_secs = u32::try_from(period.as_secs().max(1)).unwrap_or(u32::MAX);
    let birth = Birth {
        schema: Schema::default(),
        sent_at_ms: now_ms(),
        boot_id,
        inventory,
        config_version: 0,
        telemetry_interval_secs: interval_secs,
    };
    let online = State {
        schema: Schema::default(),
        sent_at_ms: now_ms(),
        state: DeviceState::Online,
        boot_id,
    };
    // Like an appliance: birth, state and samples once connected (a sample's send time is taken
    // when it is published, not while the connection is being set up).
    if tokio::time::timeout_at(deadline.into(), connected.wait_for(|c| *c))
        .await
        .is_err()
    {
        errors.fetch_add(1, Ordering::Relaxed);
    }
    let _ = client
        .publish(
            topics.topic(Kind::Birth),
            QoS::AtLeastOnce,
            true,
            encode(&birth).unwrap_or_default(),
        )
        .await;
    let _ = client
        .publish(
            topics.topic(Kind::State),
            QoS::AtLeastOnce,
            true,
            encode(&online).unwrap_or_default(),
        )
        .await;
    let stream = fastrand::u64(1..);
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Spread the devices over the period.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(
        0..=u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
    )))
    .await;
    while Instant::now() < deadline {
        tick.tick().await;
        seq += 1;
        let r = if seq % 10 == 0 {
            let e = Event {
                schema: Schema::default(),
                id: EventId::new(stream, seq),
                at_ms: now_ms(),
                event: EventBody::StudyForwarded {
                    destination: Token::new("archive").expect("valid token"),
                    modality: Modality::new("CT").ok(),
                    forwarded: Flow {
                        objects: 500,
                        bytes: 265_000_000,
                    },
                    latency_ms: 900,
                    attempts: 1,
                },
            };
            client.try_publish(
                topics.topic(Kind::Event),
                QoS::AtLeastOnce,
                false,
                encode(&e).unwrap_or_default(),
            )
        } else {
            let mut snapshot = TelemetrySnapshot::default();
            snapshot.received.objects = seq * 10;
            let t = Telemetry {
                schema: Schema::default(),
                sent_at_ms: now_ms(),
                boot_id,
                seq,
                snapshot,
            };
            client.try_publish(
                topics.topic(Kind::Telemetry),
                QoS::AtMostOnce,
                false,
                encode(&t).unwrap_or_default(),
            )
        };
        match r {
            Ok(()) => sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
        };
    }
    let offline = State {
        schema: Schema::default(),
        sent_at_ms: now_ms(),
        state: DeviceState::Offline,
        boot_id,
    };
    let _ = client
        .publish(
            topics.topic(Kind::State),
            QoS::AtLeastOnce,
            true,
            encode(&offline).unwrap_or_default(),
        )
        .await;
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    poller.abort();
}
