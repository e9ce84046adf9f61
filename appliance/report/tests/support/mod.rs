//! Test peers: a real Mosquitto on a free loopback port, an MQTT collector, test certificates.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A mosquitto process, killed on drop.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
}

impl Mosquitto {
    /// Starts `/usr/sbin/mosquitto` with a listener on 127.0.0.1:`port` and `extra` config lines.
    pub fn start(dir: &Path, port: u16, extra: &str) -> Mosquitto {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("per_listener_settings false\npersistence true\npersistence_location {}/\nlog_dest stderr\nlog_type error\nlog_type warning\nuser root\nlistener {port} 127.0.0.1\n{extra}\n", dir.display()),
        )
        .expect("write mosquitto.conf");
        let mut m = Mosquitto {
            child: None,
            port,
            conf,
        };
        m.restart();
        m
    }

    /// Starts mosquitto with a complete configuration file written by someone else (e.g.
    /// `medgate-fleet broker-config`), listening on `port`.
    pub fn start_with_conf(conf: &Path, port: u16) -> Mosquitto {
        let mut m = Mosquitto {
            child: None,
            port,
            conf: conf.to_owned(),
        };
        m.restart();
        m
    }

    /// Stops it like a service manager does (SIGTERM: it saves its persistent sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("/bin/kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start /usr/sbin/mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (topic, payload, retain) of each message received.
pub type Received = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// Everything published on a filter, as seen by a separate MQTT client.
#[derive(Clone)]
pub struct Collector {
    pub messages: Received,
    pub client: AsyncClient,
}

impl Collector {
    pub async fn start(
        port: u16,
        id: &str,
        filter: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Collector {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        // A persistent session, like the fleet's: messages published while it is away are kept.
        opts.set_clean_session(false);
        if let Some(tls) = tls {
            opts.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        let c = client.clone();
        let filter = filter.to_owned();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let c = c.clone();
                        let f = filter.clone();
                        tokio::spawn(async move { c.subscribe(f, QoS::AtLeastOnce).await });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        m.lock().expect("lock").push((
                            p.topic.clone(),
                            p.payload.to_vec(),
                            p.retain,
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Collector { messages, client }
    }

    pub fn on(&self, suffix: &str) -> Vec<Vec<u8>> {
        self.messages
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _, _)| t.ends_with(suffix))
            .map(|(_, p, _)| p.clone())
            .collect()
    }

    /// Waits until `pred` holds (polling), panics after `secs`.
    pub async fn wait(&self, secs: u64, what: &str, pred: impl Fn(&Collector) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !pred(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A test CA with a server certificate for 127.0.0.1 and client certificates, written as PEM files.
pub struct Pki {
    pub dir: PathBuf,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "medgate test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write");
        let pki = Pki {
            dir: dir.to_owned(),
            ca,
        };
        pki.issue("server", &["127.0.0.1", "localhost"], "broker");
        pki
    }

    /// Writes `{name}.crt` and `{name}.key`, with common name `cn`.
    pub fn issue(&self, name: &str, sans: &[&str], cn: &str) -> (PathBuf, PathBuf) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(sans).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Mosquitto listener lines for mutual TLS with the identity as username.
    pub fn mosquitto_tls(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\n",
            self.ca().display(),
            self.dir.join("server.crt").display(),
            self.dir.join("server.key").display()
        )
    }
}
