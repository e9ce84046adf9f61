//! Synthetic DICOM for Medgate's tests, benchmarks and demo.
//!
//! [`studies`] writes realistic, deterministic DICOM Part 10 files (CT series, ultrasound
//! multi-frame, DX, 12-lead ECG, an RLE-compressed image, an implicit VR image and arbitrarily
//! large objects streamed to disk) for a synthetic patient whose identifying attributes are
//! known to the caller, so tests can assert that they never leak.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "synthetic pixel, waveform and RLE arithmetic truncates on purpose; no input from outside"
)]

pub mod studies;
