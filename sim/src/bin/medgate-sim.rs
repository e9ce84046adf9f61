//! `medgate-sim`: writes synthetic DICOM studies to a directory (for benchmarks and manual tests).
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "the part index of the generator's own files"
)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use medgate_sim::studies::{
    CtOptions, DxOptions, EcgOptions, GeneratedFile, Patient, RleOptions, Study, UsOptions,
};

/// Synthetic DICOM for Medgate: realistic Part 10 files of a synthetic patient.
///
/// Example: 500 CT slices of 0.5 MB split into 4 directories for 4 parallel senders:
///
///   medgate-sim generate --ct 500 --split 4 --out /tmp/ct500
///
/// Everything is deterministic in --seed; the patient's name, ID, birth date, issuer and the
/// accession number are printed so that tests can search for leaks.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a study (one patient, one accession number) into a directory.
    Generate(Generate),
}

#[derive(Debug, clap::Args)]
struct Generate {
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Seed of every UID, name and pixel: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Accession number (default: derived from the seed).
    #[arg(long)]
    accession: Option<String>,
    /// CT slices (512x512, 16-bit, ~0.5 MB each), one series.
    #[arg(long, default_value_t = 0)]
    ct: u32,
    /// Ultrasound multi-frame objects (640x480 RGB).
    #[arg(long, default_value_t = 0)]
    us: u32,
    /// Frames per ultrasound object.
    #[arg(long, default_value_t = 30)]
    us_frames: u32,
    /// DX images (2048x2048, 16-bit, ~8 MB each).
    #[arg(long, default_value_t = 0)]
    dx: u32,
    /// 12-lead ECGs (10 s at 500 Hz).
    #[arg(long, default_value_t = 0)]
    ecg: u32,
    /// RLE Lossless Secondary Capture images (encapsulated pixel data).
    #[arg(long, default_value_t = 0)]
    rle: u32,
    /// MR images in Implicit VR Little Endian.
    #[arg(long, default_value_t = 0)]
    implicit: u32,
    /// One large multi-frame object of about this many bytes (streamed, < 4 GiB).
    #[arg(long)]
    big: Option<u64>,
    /// Spread the files round-robin over N sub-directories part-1..part-N (for N parallel
    /// senders; send all with `storescu +sd +r OUT`).
    #[arg(long, default_value_t = 1)]
    split: u32,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => generate(args),
    }
}

fn generate(args: Generate) -> Result<()> {
    if args.split == 0 {
        bail!("--split must be at least 1");
    }
    let started = Instant::now();
    let patient = Patient::synthetic(args.seed);
    let accession = args
        .accession
        .clone()
        .unwrap_or_else(|| format!("ACC{:010}", args.seed));
    let mut study = Study::new(patient.clone(), accession.clone(), args.seed);
    let staging = args.out.join(".staging");
    let mut files: Vec<GeneratedFile> = Vec::new();
    if args.ct > 0 {
        let opts = CtOptions {
            slices: args.ct,
            ..CtOptions::default()
        };
        files.extend(
            study
                .ct_series(&staging, &opts)
                .context("generating the CT series")?,
        );
    }
    for _ in 0..args.us {
        let opts = UsOptions {
            frames: args.us_frames,
            ..UsOptions::default()
        };
        files.push(
            study
                .us_multiframe(&staging, &opts)
                .context("generating ultrasound")?,
        );
    }
    for _ in 0..args.dx {
        files.push(
            study
                .dx_image(&staging, &DxOptions::default())
                .context("generating DX")?,
        );
    }
    for _ in 0..args.ecg {
        files.push(
            study
                .ecg(&staging, &EcgOptions::default())
                .context("generating ECG")?,
        );
    }
    for _ in 0..args.rle {
        files.push(
            study
                .rle_image(&staging, &RleOptions::default())
                .context("generating RLE image")?,
        );
    }
    for _ in 0..args.implicit {
        files.push(
            study
                .implicit_vr_mr(&staging)
                .context("generating implicit VR MR")?,
        );
    }
    if let Some(size) = args.big {
        files.push(
            study
                .big_object(&staging.join("big-00001.dcm"), size)
                .context("generating the big object")?,
        );
    }
    if files.is_empty() {
        bail!(
            "nothing to generate: pass --ct N, --us N, --dx N, --ecg N, --rle N, --implicit N or --big BYTES"
        );
    }
    let mut total = 0_u64;
    for (i, file) in files.iter().enumerate() {
        let dir = if args.split > 1 {
            args.out.join(format!("part-{}", i as u32 % args.split + 1))
        } else {
            args.out.clone()
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = file.path.file_name().context("generated file has a name")?;
        let target = dir.join(name);
        std::fs::rename(&file.path, &target)
            .with_context(|| format!("moving {} to {}", file.path.display(), target.display()))?;
        total += file.size_bytes;
    }
    std::fs::remove_dir(&staging).with_context(|| format!("removing {}", staging.display()))?;
    println!(
        "wrote {} files, {:.1} MB, to {} in {:.1} s",
        files.len(),
        total as f64 / 1e6,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "patient name={} id={} birth_date={} issuer={} accession={} study_uid={}",
        patient.name,
        patient.id,
        patient.birth_date,
        patient.issuer,
        accession,
        study.study_instance_uid()
    );
    Ok(())
}
