//! A test PKI: a CA, server and client certificates as PEM files (rcgen).

use std::path::{Path, PathBuf};

/// A test CA with a server certificate for 127.0.0.1 and client certificates, written as PEM files.
#[allow(missing_debug_implementations)]
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
