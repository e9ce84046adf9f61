//! `medgate-bundle`: the vendor's tool for Medgate update bundles and their keys (docs/ota.md).

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use medgate_bundle::format::{BundleSignature, MetaKind, Role, hash_stream, write_bundle};
use medgate_bundle::keys::{PrivateKeyFile, PublicKey, PublicKeyFile, SigningKey, random_bytes};
use medgate_bundle::trust::{Document, KeySet, KeysKind, RegionPolicy, RootKind};
use medgate_bundle::types::{Hasher, Serial};
use medgate_bundle::{
    BundleMeta, Device, KeysDoc, Name, PayloadKind, RootDoc, Signed, Timestamp, TrustStore,
    Unverified, Version,
};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Medgate update bundles: keys, trust documents, signing and verification.
///
/// Ceremonies (docs/ota.md):
///   keys        medgate-bundle keygen --name root-1 --dir /media/offline
///   root        medgate-bundle root --key r1.pub --key r2.pub --key r3.pub --threshold 2 \
///                   --version 1 --expires 2028-01-01 --sign-with r1.key --sign-with r2.key --out root.json
///   delegate    medgate-bundle delegate --root root.json --key v1.pub --key v2.pub --threshold 2 \
///                   --version 1 --expires 2027-06-01 --sign-with r1.key --sign-with r3.key --out keys.json
///   rotate      medgate-bundle root --previous root.json ... --version 2 --sign-with OLD.key... --sign-with NEW.key...
///   more sigs   medgate-bundle add-signature root.json --sign-with r3.key
///   bundle      medgate-bundle sign --payload medgate-appliance --kind appliance-binaries \
///                   --product medgate-appliance --version 1.4.0 --hardware qemu-vm --expires-days 60 \
///                   --sign-with v1.key --sign-with v2.key --out medgate-1.4.0.mgb
///   countersign medgate-bundle countersign medgate-1.4.0.mgb --role region --sign-with north.key --out ...
///   check       medgate-bundle inspect medgate-1.4.0.mgb
///               medgate-bundle verify medgate-1.4.0.mgb --trust trust.json --hardware qemu-vm --installed 1.3.0
#[derive(Debug, Parser)]
#[command(name = "medgate-bundle", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make an ed25519 key pair: NAME.key (owner-only, secret) and NAME.pub in DIR.
    Keygen {
        /// The holder's label, also the file names.
        #[arg(long)]
        name: Name,
        /// Where to write them (never overwrites).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Write a root document (the first, or a rotation with --previous), signed by the keys given.
    Root {
        /// A root public key (.pub), once per key.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// How many root keys must sign a keys document or the next root.
        #[arg(long)]
        threshold: u32,
        /// 1 for the first root; the previous root's version + 1 for a rotation.
        #[arg(long)]
        version: u64,
        /// Expiry (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC).
        #[arg(long)]
        expires: Timestamp,
        /// The root in force (a rotation must be signed by a threshold of its keys too).
        #[arg(long)]
        previous: Option<PathBuf>,
        /// A private key (.key) to sign with, once per key.
        #[arg(long = "sign-with")]
        sign_with: Vec<PathBuf>,
        /// The root document to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Delegate bundle signing to vendor keys: write a keys document signed by root keys.
    Delegate {
        /// The root in force (checks that the signatures given reach its threshold).
        #[arg(long)]
        root: PathBuf,
        /// A vendor public key (.pub), once per key.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// How many vendor keys must sign a bundle (k of n).
        #[arg(long)]
        threshold: u32,
        /// Higher than every keys document before.
        #[arg(long)]
        version: u64,
        /// Expiry (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC): devices refuse bundles after it.
        #[arg(long)]
        expires: Timestamp,
        /// A root private key (.key) to sign with, once per key.
        #[arg(long = "sign-with")]
        sign_with: Vec<PathBuf>,
        /// The keys document to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add signatures to a root or keys document (key holders sign one after the other).
    AddSignature {
        /// The document (rewritten in place).
        file: PathBuf,
        /// A private key (.key), once per key.
        #[arg(long = "sign-with", required = true)]
        sign_with: Vec<PathBuf>,
    },
    /// Make a bundle from a payload, signed by vendor keys.
    Sign {
        /// The payload file.
        #[arg(long)]
        payload: PathBuf,
        /// What the payload is.
        #[arg(long)]
        kind: Kind,
        /// The product.
        #[arg(long, default_value = "medgate-appliance")]
        product: Name,
        /// The version it installs (semver).
        #[arg(long)]
        version: Version,
        /// A hardware profile it runs on, once per profile.
        #[arg(long = "hardware", required = true)]
        hardware: Vec<Name>,
        /// Devices must run at least this version to install it.
        #[arg(long)]
        min_installed: Option<Version>,
        /// Once installed, nothing below this version installs.
        #[arg(long)]
        floor: Option<Version>,
        /// Sanction installing this over newer versions (the operator must still ask for it).
        #[arg(long)]
        downgrade: bool,
        /// Expiry (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC).
        #[arg(long, conflicts_with = "expires_days")]
        expires: Option<Timestamp>,
        /// Expiry in days from now.
        #[arg(long)]
        expires_days: Option<u64>,
        /// A vendor private key (.key), once per key.
        #[arg(long = "sign-with", required = true)]
        sign_with: Vec<PathBuf>,
        /// The bundle to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add signatures to a bundle: more vendor keys (k of n), or a region's countersignature.
    Countersign {
        /// The bundle.
        bundle: PathBuf,
        /// As whom.
        #[arg(long, value_enum)]
        role: SignRole,
        /// A private key (.key), once per key.
        #[arg(long = "sign-with", required = true)]
        sign_with: Vec<PathBuf>,
        /// The bundle to write (may be the same path).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show what a bundle or trust document says — without verifying it.
    Inspect {
        /// A bundle, root or keys document, or trust store.
        file: PathBuf,
    },
    /// Verify a bundle completely (signatures, thresholds, expiry, compatibility, payload hash)
    /// as a device with this trust store would, writing nothing.
    Verify {
        /// The bundle.
        bundle: PathBuf,
        /// The device's trust store (`trust init`).
        #[arg(long)]
        trust: PathBuf,
        /// The device's product.
        #[arg(long, default_value = "medgate-appliance")]
        product: Name,
        /// The device's hardware profile.
        #[arg(long)]
        hardware: Name,
        /// The version the device runs.
        #[arg(long)]
        installed: Version,
        /// What the device's slots take.
        #[arg(long, default_value = "appliance-binaries")]
        kind: Kind,
        /// The operator asks for a sanctioned downgrade.
        #[arg(long)]
        allow_downgrade: bool,
        /// The largest payload the device's slot holds, in bytes.
        #[arg(long, default_value_t = 8 << 30)]
        max_payload: u64,
        /// Verify as of this time instead of now (UTC).
        #[arg(long)]
        now: Option<Timestamp>,
    },
    /// A device's trust store: create one, or apply a new root or keys document to it.
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TrustCommand {
    /// Create a trust store from the root shipped in the image and the keys document it delegated.
    Init {
        /// The root document.
        #[arg(long)]
        root: PathBuf,
        /// The keys document.
        #[arg(long)]
        keys: PathBuf,
        /// The region whose countersignature every bundle needs (set by the hospital).
        #[arg(long, requires = "region_keys")]
        region: Option<Name>,
        /// A region public key (.pub), once per key.
        #[arg(long = "region-key")]
        region_keys: Vec<PathBuf>,
        /// How many region keys must countersign.
        #[arg(long, default_value_t = 1)]
        region_threshold: u32,
        /// The trust store to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Apply a newer root (rotation) or keys document; a rollback is refused.
    Update {
        /// The trust store (rewritten in place).
        #[arg(long)]
        trust: PathBuf,
        /// A new root document.
        #[arg(long)]
        root: Option<PathBuf>,
        /// A new keys document.
        #[arg(long)]
        keys: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    ApplianceBinaries,
    RootImage,
}

impl From<Kind> for PayloadKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::ApplianceBinaries => Self::ApplianceBinaries,
            Kind::RootImage => Self::RootImage,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SignRole {
    Vendor,
    Region,
}

/// A progress line on stderr for long payloads (a terminal only; elsewhere one closing line).
struct Progress {
    what: &'static str,
    total: u64,
    tty: bool,
    last: Option<Instant>,
    start: Instant,
}

fn mib(bytes: u64) -> String {
    let tenths = bytes.saturating_mul(10) / (1 << 20);
    format!("{}.{} MiB", tenths / 10, tenths % 10)
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Self {
        Self {
            what,
            total,
            tty: std::io::stderr().is_terminal(),
            last: None,
            start: Instant::now(),
        }
    }
    fn update(&mut self, done: u64) {
        if !self.tty || self.last.is_some_and(|t| t.elapsed().as_millis() < 200) {
            return;
        }
        self.last = Some(Instant::now());
        let pct = done
            .saturating_mul(100)
            .checked_div(self.total)
            .unwrap_or(100);
        eprint!(
            "\r{}: {} of {} ({pct}%)   ",
            self.what,
            mib(done),
            mib(self.total)
        );
    }
    fn done(self) {
        let secs = self.start.elapsed().as_secs_f64();
        if self.tty {
            eprint!("\r");
        }
        eprintln!(
            "{}: {} in {secs:.1} s            ",
            self.what,
            mib(self.total)
        );
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Write `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn public_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|p| {
            PublicKeyFile::parse(&read(p)?)
                .map(|f| f.ed25519)
                .with_context(|| format!("{} is not a public key file", p.display()))
        })
        .collect()
}

fn signing_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<SigningKey>> {
    paths
        .iter()
        .map(|p| {
            PrivateKeyFile::parse(&read(p)?)
                .map(|(_, k)| k)
                .with_context(|| format!("{} is not a private key file", p.display()))
        })
        .collect()
}

fn load_doc<T: Document>(path: &Path) -> anyhow::Result<Signed<T>> {
    Signed::from_json(&read(path)?).with_context(|| format!("reading {}", path.display()))
}

fn report_tally<T: Document>(doc: &Signed<T>, set: &KeySet, against: &str) {
    let have = doc.tally(set).valid_count();
    let state = if have >= usize::try_from(set.threshold).unwrap_or(usize::MAX) {
        "threshold reached"
    } else {
        "threshold NOT reached yet: add signatures with `add-signature`"
    };
    eprintln!(
        "signed by {have} of {} {against} keys, threshold {}: {state}",
        set.keys.len(),
        set.threshold
    );
}

fn keygen(name: &Name, dir: &Path) -> anyhow::Result<()> {
    let key = SigningKey::generate()?;
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .with_context(|| {
            format!(
                "cannot create {} (it must not exist yet)",
                private.display()
            )
        })?;
    f.write_all(
        serde_json::to_string_pretty(&PrivateKeyFile::new(name.as_str(), &key))?.as_bytes(),
    )?;
    f.sync_all()?;
    let pubfile = PublicKeyFile::new(name.as_str(), key.public());
    write_atomic(&public, serde_json::to_string_pretty(&pubfile)?.as_bytes())?;
    println!("key id {}", pubfile.key_id);
    println!(
        "secret: {} (owner-only; keep it offline)",
        private.display()
    );
    println!("public: {}", public.display());
    Ok(())
}

fn sign_bundle(cmd: Command) -> anyhow::Result<()> {
    let Command::Sign {
        payload,
        kind,
        product,
        version,
        hardware,
        min_installed,
        floor,
        downgrade,
        expires,
        expires_days,
        sign_with,
        out,
    } = cmd
    else {
        bail!("not a sign command");
    };
    let keys = signing_keys(&sign_with)?;
    let now = Timestamp::now();
    let expires = match (expires, expires_days) {
        (Some(t), _) => t,
        (None, Some(days)) => now.plus_secs(days.saturating_mul(86_400)),
        (None, None) => bail!("say when the bundle expires: --expires DATE or --expires-days N"),
    };
    let size = fs::metadata(&payload)
        .with_context(|| format!("cannot read {}", payload.display()))?
        .len();
    let mut progress = Progress::new("hashing payload", size);
    let mut input = BufReader::new(File::open(&payload)?);
    let (sha256, hashed) = hash_stream(&mut input, &mut |n| progress.update(n))?;
    progress.done();
    if hashed != size {
        bail!("{} changed while it was read; try again", payload.display());
    }
    let meta = BundleMeta {
        kind: MetaKind::Bundle,
        product,
        version,
        hardware,
        min_installed,
        floor,
        downgrade,
        payload: kind.into(),
        size,
        sha256,
        created: now,
        expires,
        serial: Serial(random_bytes()?),
    };
    let sigs: Vec<BundleSignature> = keys
        .iter()
        .map(|k| BundleSignature::make(&meta, k, Role::Vendor))
        .collect();
    write_with_payload(&out, &meta, &sigs, &payload, 0)?;
    println!(
        "wrote {} ({} {}, sha256 {}, serial {})",
        out.display(),
        meta.product,
        meta.version,
        meta.sha256,
        meta.serial
    );
    println!(
        "{} vendor signature(s); expires {}",
        sigs.len(),
        meta.expires
    );
    Ok(())
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Write a bundle whose payload comes from `source` at `offset` (a file or another bundle),
/// and check the written payload's hash.
fn write_with_payload(
    out: &Path,
    meta: &BundleMeta,
    sigs: &[BundleSignature],
    source: &Path,
    offset: u64,
) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut input = BufReader::new(File::open(source)?);
    input.seek(SeekFrom::Start(offset))?;
    let tmp = tmp_path(out);
    let mut w = BufWriter::new(
        File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let mut progress = Progress::new("writing bundle", meta.size);
    let mut payload = Hashing {
        inner: input.take(meta.size),
        hasher: Hasher::default(),
    };
    write_bundle(&mut w, meta, sigs, &mut payload, &mut |n| {
        progress.update(n)
    })?;
    progress.done();
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    if payload.hasher.finish() != meta.sha256 {
        drop(f);
        fs::remove_file(&tmp)?;
        bail!(
            "the payload read from {} is not the one hashed or signed (changed meanwhile, or the \
             bundle's payload was altered): nothing written",
            source.display()
        );
    }
    fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

fn countersign(
    bundle: &Path,
    role: SignRole,
    sign_with: &[PathBuf],
    out: &Path,
) -> anyhow::Result<()> {
    let keys = signing_keys(sign_with)?;
    let opened = Unverified::open(BufReader::new(File::open(bundle)?), u64::MAX)?;
    let meta = opened.claimed().clone();
    let header = opened.header();
    let role = match role {
        SignRole::Vendor => Role::Vendor,
        SignRole::Region => Role::Region,
    };
    let mut sigs = opened.signatures().to_vec();
    for k in &keys {
        let id = k.public().id();
        sigs.retain(|s| !(s.key_id == id && s.role == role));
        sigs.push(BundleSignature::make(&meta, k, role));
    }
    drop(opened);
    let offset = 28 + u64::from(header.meta_len) + u64::from(header.sigs_len);
    let target = if out == bundle {
        tmp_path(&tmp_path(out))
    } else {
        out.to_path_buf()
    };
    write_with_payload(&target, &meta, &sigs, bundle, offset)?;
    if target != out {
        fs::rename(&target, out)?;
    }
    println!("wrote {} with {} signature(s)", out.display(), sigs.len());
    Ok(())
}

fn inspect(file: &Path) -> anyhow::Result<()> {
    let mut head = [0u8; 8];
    {
        use std::io::Read;
        let mut f = File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        let n = f.read(&mut head)?;
        if n < 8 {
            head = [0; 8];
        }
    }
    if &head == medgate_bundle::format::MAGIC {
        let opened = Unverified::open(BufReader::new(File::open(file)?), u64::MAX)?;
        let m = opened.claimed();
        println!("bundle (NOT VERIFIED: `verify` checks it against a trust store)");
        println!("  product        {}", m.product);
        println!("  version        {}", m.version);
        let hw: Vec<&str> = m.hardware.iter().map(Name::as_str).collect();
        println!("  hardware       {}", hw.join(", "));
        let opt = |v: &Option<Version>| v.as_ref().map_or("-".to_owned(), ToString::to_string);
        println!("  min installed  {}", opt(&m.min_installed));
        println!("  floor          {}", opt(&m.floor));
        println!(
            "  downgrade      {}",
            if m.downgrade { "sanctioned" } else { "no" }
        );
        println!(
            "  payload        {}, {} bytes ({})",
            m.payload,
            m.size,
            mib(m.size)
        );
        println!("  sha256         {}", m.sha256);
        println!("  created        {}", m.created);
        println!("  expires        {}", m.expires);
        println!("  serial         {}", m.serial);
        for s in opened.signatures() {
            let role = match s.role {
                Role::Vendor => "vendor",
                Role::Region => "region",
            };
            println!("  signature      {role} key {}", s.key_id);
        }
        return Ok(());
    }
    let bytes = read(file)?;
    if let Ok(doc) = Signed::<RootDoc>::from_json(&bytes) {
        println!(
            "root document version {} (expires {}), NOT VERIFIED",
            doc.signed.version, doc.signed.expires
        );
        for k in &doc.signed.root.keys {
            println!("  root key  {}", k.id());
        }
        println!("  threshold {}", doc.signed.root.threshold);
        report_tally(&doc, &doc.signed.root, "of its own");
    } else if let Ok(doc) = Signed::<KeysDoc>::from_json(&bytes) {
        println!(
            "keys document version {} (expires {}), NOT VERIFIED",
            doc.signed.version, doc.signed.expires
        );
        for k in &doc.signed.signing.keys {
            println!("  vendor key {}", k.id());
        }
        println!("  threshold  {}", doc.signed.signing.threshold);
        for s in &doc.signatures {
            println!("  signed by  {}", s.key_id);
        }
    } else if let Ok(store) = TrustStore::from_json(&bytes) {
        println!(
            "trust store: root version {}, keys version {}",
            store.root().version,
            store.keys().version
        );
        println!(
            "  floor   {}",
            store.floor().map_or("-".to_owned(), ToString::to_string)
        );
        match store.region() {
            Some(r) => println!(
                "  region  {} (threshold {} of {})",
                r.region,
                r.keys.threshold,
                r.keys.keys.len()
            ),
            None => println!("  region  none required"),
        }
    } else if let Ok(k) = PublicKeyFile::parse(&bytes) {
        println!("public key {} ({})", k.key_id, k.name);
    } else {
        bail!(
            "{} is neither a bundle, a root or keys document, a trust store nor a public key",
            file.display()
        );
    }
    Ok(())
}

fn verify(
    bundle: &Path,
    trust: &Path,
    device: Device,
    now: Option<Timestamp>,
) -> anyhow::Result<()> {
    let store = TrustStore::from_json(&read(trust)?)
        .with_context(|| format!("reading {}", trust.display()))?;
    let now = now.unwrap_or_else(Timestamp::now);
    let input = BufReader::new(
        File::open(bundle).with_context(|| format!("cannot read {}", bundle.display()))?,
    );
    let refused = |e: medgate_bundle::BundleError| anyhow::anyhow!("refused ({}): {e}", e.code());
    let verified = Unverified::open(input, device.max_payload)
        .and_then(|u| u.verify(&store, &device, now))
        .map_err(refused)?;
    let mut progress = Progress::new("checking payload", verified.metadata().size);
    let meta = verified
        .payload()
        .check_all(&mut |n| progress.update(n))
        .map_err(refused)?;
    progress.done();
    println!(
        "verified: {} {} for {} (sha256 {})",
        meta.product, meta.version, device.hardware, meta.sha256
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen { name, dir } => keygen(&name, &dir),
        Command::Root {
            keys,
            threshold,
            version,
            expires,
            previous,
            sign_with,
            out,
        } => {
            let doc = RootDoc {
                kind: RootKind::Root,
                version,
                expires,
                root: KeySet {
                    keys: public_keys(&keys)?,
                    threshold,
                },
            };
            let mut signed = Signed::new(doc);
            for k in signing_keys(&sign_with)? {
                signed.sign(&k);
            }
            report_tally(&signed, &signed.signed.root, "of its own");
            if let Some(prev) = previous {
                let prev: Signed<RootDoc> = load_doc(&prev)?;
                if version != prev.signed.version.saturating_add(1) {
                    bail!(
                        "a rotation's version must be {} (the previous root's + 1)",
                        prev.signed.version.saturating_add(1)
                    );
                }
                report_tally(&signed, &prev.signed.root, "previous root");
            }
            write_atomic(&out, signed.to_json().as_bytes())?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Delegate {
            root,
            keys,
            threshold,
            version,
            expires,
            sign_with,
            out,
        } => {
            let root: Signed<RootDoc> = load_doc(&root)?;
            let doc = KeysDoc {
                kind: KeysKind::Keys,
                version,
                expires,
                signing: KeySet {
                    keys: public_keys(&keys)?,
                    threshold,
                },
            };
            let mut signed = Signed::new(doc);
            for k in signing_keys(&sign_with)? {
                signed.sign(&k);
            }
            report_tally(&signed, &root.signed.root, "root");
            write_atomic(&out, signed.to_json().as_bytes())?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::AddSignature { file, sign_with } => {
            let bytes = read(&file)?;
            let keys = signing_keys(&sign_with)?;
            let json = if let Ok(mut doc) = Signed::<RootDoc>::from_json(&bytes) {
                keys.iter().for_each(|k| doc.sign(k));
                report_tally(&doc, &doc.signed.root, "of its own");
                doc.to_json()
            } else {
                let mut doc: Signed<KeysDoc> = Signed::from_json(&bytes).with_context(|| {
                    format!("{} is neither a root nor a keys document", file.display())
                })?;
                keys.iter().for_each(|k| doc.sign(k));
                eprintln!(
                    "{} signature(s) on keys document version {}",
                    doc.signatures.len(),
                    doc.signed.version
                );
                doc.to_json()
            };
            write_atomic(&file, json.as_bytes())
        }
        cmd @ Command::Sign { .. } => sign_bundle(cmd),
        Command::Countersign {
            bundle,
            role,
            sign_with,
            out,
        } => countersign(&bundle, role, &sign_with, &out),
        Command::Inspect { file } => inspect(&file),
        Command::Verify {
            bundle,
            trust,
            product,
            hardware,
            installed,
            kind,
            allow_downgrade,
            max_payload,
            now,
        } => {
            let device = Device {
                product,
                hardware,
                installed,
                accepts: kind.into(),
                max_payload,
                allow_downgrade,
            };
            verify(&bundle, &trust, device, now)
        }
        Command::Trust {
            command:
                TrustCommand::Init {
                    root,
                    keys,
                    region,
                    region_keys,
                    region_threshold,
                    out,
                },
        } => {
            let region = match region {
                Some(region) => Some(RegionPolicy {
                    region,
                    keys: KeySet {
                        keys: public_keys(&region_keys)?,
                        threshold: region_threshold,
                    },
                }),
                None => None,
            };
            let store =
                TrustStore::new(load_doc(&root)?, load_doc(&keys)?, region, Timestamp::now())?;
            write_atomic(&out, store.to_json().as_bytes())?;
            println!(
                "wrote {} (root version {}, keys version {})",
                out.display(),
                store.root().version,
                store.keys().version
            );
            Ok(())
        }
        Command::Trust {
            command: TrustCommand::Update { trust, root, keys },
        } => {
            let mut store = TrustStore::from_json(&read(&trust)?)?;
            let now = Timestamp::now();
            if let Some(root) = root {
                store.update_root(load_doc(&root)?, now)?;
            }
            if let Some(keys) = keys {
                store.update_keys(load_doc(&keys)?, now)?;
            }
            write_atomic(&trust, store.to_json().as_bytes())?;
            println!(
                "trust store: root version {}, keys version {}",
                store.root().version,
                store.keys().version
            );
            Ok(())
        }
    }
}
