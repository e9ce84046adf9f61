//! The fleet's certificate authority (rcgen, ECDSA P-256): device certificates from enrollment
//! CSRs, the broker's server certificate and the fleet's own client certificate.
//!
//! The CA key lives in `{data_dir}/ca/ca.key` (mode 0600), the certificate in `ca.crt`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

/// CA failures.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the CA files.
    #[error("CA file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A certificate and its serial.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM certificate.
    pub certificate_pem: String,
    /// Serial, hexadecimal.
    pub serial: String,
}

/// The CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    dir: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_private(path: &Path, data: &str) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn serial() -> (SerialNumber, String) {
    let mut bytes = [0u8; 16];
    for b in &mut bytes {
        *b = fastrand::u8(..);
    }
    bytes[0] &= 0x7f; // positive
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    (SerialNumber::from_slice(&bytes), hex)
}

/// The bytes of a serial written by [`serial`] (hex); None if it is not hex.
fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn validity(params: &mut CertificateParams, days: u64) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(300)).into();
    params.not_after = (now + std::time::Duration::from_secs(days * 86_400)).into();
}

impl Ca {
    /// Loads the CA from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.crt"));
        if key_path.exists() && cert_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
            return Ok(Ca {
                issuer,
                cert_pem,
                dir: dir.to_owned(),
            });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "Medgate fleet CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Medgate");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(serial().0);
        validity(&mut params, 3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        tracing::info!(dir = %dir.display(), "created the fleet CA");
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            dir: dir.to_owned(),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Path of the CA certificate file.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Signs a device's CSR. Only the CSR's public key is used: the subject is set to
    /// `CN = device` (the broker username with `use_identity_as_username`), client auth only.
    pub fn sign_device_csr(
        &self,
        csr_pem: &str,
        device: &str,
        days: u64,
    ) -> Result<Issued, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, device);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (sn, hex) = serial();
        params.serial_number = Some(sn);
        validity(&mut params, days);
        csr.params = params;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(Issued {
            certificate_pem: cert.pem(),
            serial: hex,
        })
    }

    /// A certificate revocation list (PEM) naming the given certificates (serials in hex, as
    /// issued; when revoked, Unix ms), signed by the CA. `number` must grow with every list.
    /// Valid for ten years: Mosquitto reads its `crlfile` only at start, and an expired list would
    /// make it refuse every device.
    pub fn crl_pem(&self, revoked: &[(String, u64)], number: u64) -> Result<String, CaError> {
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let now = SystemTime::now();
        let revoked_certs = revoked
            .iter()
            .filter_map(|(hex, at_ms)| {
                let bytes = hex_bytes(hex)?;
                Some(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: (UNIX_EPOCH + Duration::from_millis(*at_ms)).into(),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: (now - Duration::from_secs(300)).into(),
            next_update: (now + Duration::from_secs(3650 * 86_400)).into(),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// A new key and certificate: `client` (CN, client auth) or server (SANs, server auth).
    pub fn issue_with_key(
        &self,
        cn: &str,
        server_names: &[String],
        days: u64,
    ) -> Result<(Issued, String), CaError> {
        let mut params = CertificateParams::new(server_names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = if server_names.is_empty() {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        };
        let (sn, hex) = serial();
        params.serial_number = Some(sn);
        validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            Issued {
                certificate_pem: cert.pem(),
                serial: hex,
            },
            key.serialize_pem(),
        ))
    }
}

/// Writes a PEM private key with mode 0600.
pub fn write_key(path: &Path, pem: &str) -> Result<(), CaError> {
    write_private(path, pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_reloads_and_signs_a_csr_with_the_device_as_subject() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path()).expect("create");
        let pem = ca.cert_pem().to_owned();
        let ca = Ca::load_or_create(dir.path()).expect("reload");
        assert_eq!(ca.cert_pem(), pem, "same CA after reload");

        let device_key = KeyPair::generate().expect("key");
        let mut req = CertificateParams::default();
        req.distinguished_name
            .push(DnType::CommonName, "someone-else");
        let csr = req
            .serialize_request(&device_key)
            .expect("csr")
            .pem()
            .expect("pem");
        let issued = ca.sign_device_csr(&csr, "ct-room-1", 30).expect("sign");
        assert!(
            issued
                .certificate_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(issued.serial.len(), 32);
        assert!(ca.sign_device_csr("not a csr", "x", 30).is_err());
    }

    /// OpenSSL (what Mosquitto verifies with) refuses a certificate on the list, and accepts it
    /// with an empty list.
    #[test]
    fn the_revocation_list_revokes_in_openssl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(&dir.path().join("ca")).expect("create");
        let (issued, _key) = ca.issue_with_key("ct-room-1", &[], 30).expect("issue");
        let cert = dir.path().join("dev.crt");
        std::fs::write(&cert, &issued.certificate_pem).expect("write");
        let verify = |revoked: &[(String, u64)], n: u64| {
            let crl = dir.path().join(format!("crl-{n}.pem"));
            std::fs::write(&crl, ca.crl_pem(revoked, n).expect("crl")).expect("write");
            let out = std::process::Command::new("/usr/bin/openssl")
                .args(["verify", "-crl_check", "-CAfile"])
                .arg(ca.cert_path())
                .arg("-CRLfile")
                .arg(&crl)
                .arg(&cert)
                .output()
                .expect("/usr/bin/openssl (apt-get install openssl)");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (ok, text) = verify(&[], 1);
        assert!(ok, "{text}");
        let (ok, text) = verify(&[(issued.serial.clone(), 1_795_000_000_000)], 2);
        assert!(!ok && text.contains("revoked"), "{text}");
        assert!(hex_bytes("0g").is_none() && hex_bytes("abc").is_none());
    }
}
