//! PEM files into rustls types (ring as the one crypto provider), with errors that name the file
//! and the key of the configuration it came from: the HTTPS listener and the MQTT client both
//! read certificates and keys here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self as pki_pem, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{key}: cannot read {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not PEM, or holds nothing of the kind asked for.
    #[error("{key}: {}: {what}", path.display())]
    Pem {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refuses the combination (a key that does not match its certificate, …).
    #[error("{key}: {source}")]
    Rustls {
        /// The configuration key.
        key: &'static str,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file (at least one).
pub fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |what: String| TlsError::Pem {
        key,
        path: path.to_owned(),
        what,
    };
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&read(key, path)?)
        .collect::<Result<_, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = |what: String| TlsError::Pem {
        key,
        path: path.to_owned(),
        what,
    };
    PrivateKeyDer::from_pem_slice(&read(key, path)?).map_err(|e| match e {
        pki_pem::Error::NoItemsFound => pem("no PEM private key in it".into()),
        e => pem(e.to_string()),
    })
}

/// The one crypto provider of the fleet's own TLS.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Maps a rustls refusal to the key it concerns.
pub fn refused(key: &'static str) -> impl FnOnce(rustls::Error) -> TlsError {
    move |source| TlsError::Rustls { key, source }
}
