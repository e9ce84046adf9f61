//! ed25519 keys (ring), their ids, signatures with domain separation, and the k-of-n count.
//!
//! Every signature is made over `context || 0x00 || body`, the context naming what is signed
//! (`medgate-root-v1`, `medgate-keys-v1`, `medgate-bundle-v1`, `medgate-countersign-v1`), so a
//! signature made for one kind of document is never valid for another.

use crate::types::{Digest, ParseError};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// What a signature is for (the domain separation prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A root document.
    Root,
    /// A keys document.
    Keys,
    /// A bundle's metadata, by a vendor signing key.
    Bundle,
    /// A bundle's metadata, by a region's key.
    Countersign,
}

impl Context {
    fn prefix(self) -> &'static [u8] {
        match self {
            Self::Root => b"medgate-root-v1",
            Self::Keys => b"medgate-keys-v1",
            Self::Bundle => b"medgate-bundle-v1",
            Self::Countersign => b"medgate-countersign-v1",
        }
    }
    /// The bytes signed for `body` in this context.
    pub fn message(self, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.prefix().len() + 1 + body.len());
        m.extend_from_slice(self.prefix());
        m.push(0);
        m.extend_from_slice(body);
        m
    }
}

/// A key's id: SHA-256 of its 32 public key bytes. Always computed from the key, never taken
/// from a document, so one key cannot pose as two.
pub type KeyId = Digest;

/// An ed25519 public key (32 bytes, lower-case hex in documents).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Its id.
    pub fn id(&self) -> KeyId {
        Digest::of(&self.0)
    }
    /// Whether `sig` is this key's signature of `body` in `context`.
    pub fn verifies(&self, context: Context, body: &[u8], sig: &Sig) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(&context.message(body), &sig.0)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id().short())
    }
}
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl FromStr for PublicKey {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut out = [0u8; 32];
        let lower = !s.bytes().any(|b| b.is_ascii_uppercase());
        match hex::decode_to_slice(s, &mut out) {
            Ok(()) if lower => Ok(Self(out)),
            _ => Err(ParseError {
                kind: "ed25519 public key",
                text: s.chars().take(80).collect(),
                expected: "32 bytes as lower-case hex",
            }),
        }
    }
}
impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signature (64 bytes, lower-case hex).
#[derive(Clone, PartialEq, Eq)]
pub struct Sig(Vec<u8>);

impl fmt::Debug for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sig(…)")
    }
}
impl Serialize for Sig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}
impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 64];
        let lower = !text.bytes().any(|b| b.is_ascii_uppercase());
        match hex::decode_to_slice(&text, &mut out) {
            Ok(()) if lower => Ok(Self(out.to_vec())),
            _ => Err(serde::de::Error::custom(
                "a signature must be 64 bytes as lower-case hex",
            )),
        }
    }
}

/// A private signing key (PKCS#8 v2 as ring makes it).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public().id().short())
    }
}

/// A key that could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system's random source failed.
    #[error("the system random source failed: cannot make a key or a serial on this machine")]
    Random,
    /// Not an ed25519 PKCS#8 document.
    #[error(
        "not an ed25519 private key (PKCS#8): use a .key file written by `medgate-bundle keygen`"
    )]
    NotAKey,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        Self::from_pkcs8(doc.as_ref())
    }
    /// A key from its PKCS#8 bytes.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError::NotAKey)?;
        Ok(Self {
            pair,
            pkcs8: pkcs8.to_vec(),
        })
    }
    /// The PKCS#8 bytes (secret: owner-only files only).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }
    /// Its public half.
    pub fn public(&self) -> PublicKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(out)
    }
    /// Sign `body` in `context`.
    pub fn sign(&self, context: Context, body: &[u8]) -> Sig {
        Sig(self.pair.sign(&context.message(body)).as_ref().to_vec())
    }
}

/// `n` random bytes from the system source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut out).map_err(|_| KeyError::Random)?;
    Ok(out)
}

/// How a set of signatures counted against a key set (each key counts once, however often it
/// signed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Keys of the set whose signature verified.
    pub valid: BTreeSet<KeyId>,
    /// Keys of the set whose signature did not verify.
    pub bad: BTreeSet<KeyId>,
    /// Key ids that are not in the set.
    pub unknown: BTreeSet<KeyId>,
}

impl Tally {
    /// Count `sigs` (key id as the signature names it, signature) over `body` in `context`.
    pub fn count<'a>(
        keys: &[PublicKey],
        context: Context,
        body: &[u8],
        sigs: impl IntoIterator<Item = (&'a KeyId, &'a Sig)>,
    ) -> Self {
        let mut tally = Self::default();
        for (id, sig) in sigs {
            match keys.iter().find(|k| k.id() == *id) {
                None => {
                    tally.unknown.insert(*id);
                }
                Some(key) if key.verifies(context, body, sig) => {
                    tally.valid.insert(*id);
                }
                Some(_) => {
                    tally.bad.insert(*id);
                }
            }
        }
        tally.bad.retain(|id| !tally.valid.contains(id));
        tally
    }
    /// Distinct keys whose signature verified.
    pub fn valid_count(&self) -> usize {
        self.valid.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_do_not_cross_contexts() -> Result<(), KeyError> {
        let key = SigningKey::generate()?;
        let sig = key.sign(Context::Keys, b"body");
        assert!(key.public().verifies(Context::Keys, b"body", &sig));
        assert!(!key.public().verifies(Context::Root, b"body", &sig));
        assert!(!key.public().verifies(Context::Keys, b"body!", &sig));
        Ok(())
    }

    #[test]
    fn one_key_counts_once() -> Result<(), KeyError> {
        let (a, b) = (SigningKey::generate()?, SigningKey::generate()?);
        let keys = [a.public(), b.public()];
        let sig = a.sign(Context::Bundle, b"m");
        let id = a.public().id();
        let tally = Tally::count(
            &keys,
            Context::Bundle,
            b"m",
            [(&id, &sig), (&id, &sig), (&id, &sig)],
        );
        assert_eq!(tally.valid_count(), 1);
        Ok(())
    }
}

/// The kind tag of a public key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublicKind {
    /// The only value.
    #[serde(rename = "medgate-public-key")]
    Public,
}

/// The kind tag of a private key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivateKind {
    /// The only value.
    #[serde(rename = "medgate-private-key")]
    Private,
}

/// A `.pub` file written by `keygen`: what is handed to the root ceremony or the hospital.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyFile {
    /// Always `medgate-public-key`.
    #[serde(rename = "type")]
    pub kind: PublicKind,
    /// The holder's label (shown, not trusted).
    pub name: String,
    /// The key id (checked against the key when read).
    pub key_id: KeyId,
    /// The key.
    pub ed25519: PublicKey,
}

/// A `.key` file written by `keygen` (owner-only; on an offline machine or a token for root keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateKeyFile {
    /// Always `medgate-private-key`.
    #[serde(rename = "type")]
    pub kind: PrivateKind,
    /// The holder's label.
    pub name: String,
    /// The key id of its public half.
    pub key_id: KeyId,
    /// PKCS#8, hex.
    pub pkcs8: String,
}

impl PublicKeyFile {
    /// The file for `key`.
    pub fn new(name: &str, key: PublicKey) -> Self {
        Self {
            kind: PublicKind::Public,
            name: name.to_owned(),
            key_id: key.id(),
            ed25519: key,
        }
    }
    /// Read one, checking that its id is its key's.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyFileError> {
        let f: Self =
            serde_json::from_slice(bytes).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
        if f.key_id != f.ed25519.id() {
            return Err(KeyFileError::IdMismatch);
        }
        Ok(f)
    }
}

impl PrivateKeyFile {
    /// The file for `key`.
    pub fn new(name: &str, key: &SigningKey) -> Self {
        Self {
            kind: PrivateKind::Private,
            name: name.to_owned(),
            key_id: key.public().id(),
            pkcs8: hex::encode(key.pkcs8()),
        }
    }
    /// Read one into a signing key, checking that its id is its key's.
    pub fn parse(bytes: &[u8]) -> Result<(String, SigningKey), KeyFileError> {
        let f: Self =
            serde_json::from_slice(bytes).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
        let pkcs8 = hex::decode(&f.pkcs8).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
        let key = SigningKey::from_pkcs8(&pkcs8).map_err(KeyFileError::Key)?;
        if key.public().id() != f.key_id {
            return Err(KeyFileError::IdMismatch);
        }
        Ok((f.name, key))
    }
}

/// A key file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Not a key file.
    #[error("not a key file written by `medgate-bundle keygen` ({0})")]
    Malformed(String),
    /// Its id is not its key's.
    #[error(
        "the key file's key_id is not the id of its key: the file was edited; use the original"
    )]
    IdMismatch,
    /// The private key does not load.
    #[error("{0}")]
    Key(KeyError),
}
