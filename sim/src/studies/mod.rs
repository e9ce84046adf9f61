//! Generators of realistic synthetic DICOM Part 10 files.
//!
//! A [`Study`] belongs to one [`Patient`] and one accession number and hands out series of
//! different modalities, all sharing the Study Instance UID:
//!
//! ```no_run
//! use medgate_sim::studies::{CtOptions, Patient, Study};
//! # fn main() -> Result<(), medgate_sim::studies::StudyError> {
//! let patient = Patient::synthetic(7);
//! let mut study = Study::new(patient, "ACC0000042", 7);
//! let files = study.ct_series("/tmp/ct".as_ref(), &CtOptions { slices: 5, ..CtOptions::default() })?;
//! assert_eq!(files.len(), 5);
//! # Ok(()) }
//! ```
//!
//! Everything is deterministic given the seed: the same seed writes byte-identical files.
//! UIDs live under the `2.25.<128-bit random integer>` root (PS3.5 B.2), drawn from the seeded
//! generator. Pixel data is synthetic but shaped like the real thing (a body phantom in
//! Hounsfield units for CT, a speckled fan for ultrasound, a chest-like projection for DX, a
//! PQRST rhythm on 12 leads for the ECG) and never compressible to nothing, so transfer and
//! storage measure real work.

mod big;
mod ct;
mod dx;
mod ecg;
mod mr;
mod rle;
mod us;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use fastrand::Rng;

pub use big::big_object;
pub use ct::CtOptions;
pub use dx::DxOptions;
pub use ecg::EcgOptions;
pub use rle::{RleOptions, rle_encode_frame};
pub use us::UsOptions;

/// Implementation Class UID written in the file meta group of every generated file.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.229519385367432154624097417208938447751";
/// Implementation Version Name written in the file meta group of every generated file.
pub const IMPLEMENTATION_VERSION_NAME: &str = "MEDGATE_SIM_01";

/// The identifying attributes of a patient. Tests use these to assert that patient data never
/// leaves the appliance except to the archive, so they are distinctive strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    /// Patient's Name (0010,0010), DICOM PN form `Family^Given`.
    pub name: String,
    /// Patient ID (0010,0020).
    pub id: String,
    /// Patient's Birth Date (0010,0030), `YYYYMMDD`.
    pub birth_date: String,
    /// Issuer of Patient ID (0010,0021): the hospital that assigned `id`.
    pub issuer: String,
}

impl Patient {
    /// A synthetic patient derived from `seed`, with a name, an ID, a birth date and an issuer
    /// that are easy to search for in logs and messages.
    pub fn synthetic(seed: u64) -> Self {
        const FAMILY: [&str; 8] = [
            "Lindqvist",
            "Okonkwo",
            "Marchetti",
            "Haugland",
            "Szabo",
            "Fernandes",
            "Nakamura",
            "Kowalczyk",
        ];
        const GIVEN: [&str; 8] = [
            "Ingrid", "Chidi", "Paola", "Sindre", "Reka", "Tiago", "Haruto", "Zofia",
        ];
        let mut rng = Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
        let family = FAMILY[rng.usize(..FAMILY.len())];
        let given = GIVEN[rng.usize(..GIVEN.len())];
        Patient {
            name: format!("{family}^{given}^Synth{}", rng.u32(100..1000)),
            id: format!("PID{:09}", rng.u32(..1_000_000_000)),
            birth_date: format!(
                "{:04}{:02}{:02}",
                rng.u32(1930..2020),
                rng.u32(1..=12),
                rng.u32(1..=28)
            ),
            issuer: format!("HOSP-{:02}-MRN", rng.u32(1..=12)),
        }
    }
}

/// One file written by a generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Where the Part 10 file was written.
    pub path: PathBuf,
    /// SOP Class UID (0008,0016), also the Media Storage SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID (0008,0018), also the Media Storage SOP Instance UID.
    pub sop_instance_uid: String,
    /// Transfer Syntax UID (0002,0010) the data set is encoded in.
    pub transfer_syntax_uid: String,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// Size of the file on disk.
    pub size_bytes: u64,
}

/// Why a generator could not write its files.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The output directory could not be created.
    #[error("cannot create directory {path}: {source} (check the path and its permissions)")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source} (check free space and permissions)")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// dicom-object refused to encode the object (a bug in the generator).
    #[error("cannot encode the DICOM object for {path}: {message}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// What dicom-object reported.
        message: String,
    },
    /// An option is out of its valid range.
    #[error("invalid generator option: {0}")]
    InvalidOption(String),
}

/// A study of one patient: hands out series of any modality under one Study Instance UID.
#[derive(Debug)]
pub struct Study {
    patient: Patient,
    accession: String,
    study_uid: String,
    study_id: String,
    study_date: String,
    study_time: String,
    patient_sex: &'static str,
    rng: Rng,
    next_series_number: u32,
}

/// A series being generated.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) number: u32,
    pub(crate) uid: String,
    pub(crate) frame_of_reference_uid: String,
}

impl Study {
    /// A new study for `patient` with accession number `accession`, deterministic in `seed`.
    pub fn new(patient: Patient, accession: impl Into<String>, seed: u64) -> Self {
        let mut rng = Rng::with_seed(seed);
        let study_uid = random_uid(&mut rng);
        let study_date = format!(
            "{:04}{:02}{:02}",
            rng.u32(2023..=2025),
            rng.u32(1..=12),
            rng.u32(1..=28)
        );
        let study_time = format!(
            "{:02}{:02}{:02}",
            rng.u32(7..19),
            rng.u32(0..60),
            rng.u32(0..60)
        );
        let study_id = format!("{}", rng.u32(1000..100_000));
        let patient_sex = ["F", "M", "O"][rng.usize(..3)];
        Study {
            patient,
            accession: accession.into(),
            study_uid,
            study_id,
            study_date,
            study_time,
            patient_sex,
            rng,
            next_series_number: 1,
        }
    }

    /// The patient of this study.
    pub fn patient(&self) -> &Patient {
        &self.patient
    }

    /// The accession number of this study.
    pub fn accession(&self) -> &str {
        &self.accession
    }

    /// The Study Instance UID shared by every file of this study.
    pub fn study_instance_uid(&self) -> &str {
        &self.study_uid
    }

    /// A fresh UID under `2.25.`, drawn from this study's seeded generator.
    pub fn new_uid(&mut self) -> String {
        random_uid(&mut self.rng)
    }

    /// One file of each kind, small enough for fast tests: a 3-slice CT series, a 4-frame
    /// 320x240 ultrasound, a 512x512 DX, a 12-lead ECG, an RLE Lossless image and an implicit VR
    /// Little Endian MR image.
    pub fn one_of_each(&mut self, dir: &Path) -> Result<Vec<GeneratedFile>, StudyError> {
        let mut files = self.ct_series(
            dir,
            &CtOptions {
                slices: 3,
                ..CtOptions::default()
            },
        )?;
        files.push(self.us_multiframe(
            dir,
            &UsOptions {
                frames: 4,
                rows: 240,
                columns: 320,
            },
        )?);
        files.push(self.dx_image(
            dir,
            &DxOptions {
                rows: 512,
                columns: 512,
                ..DxOptions::default()
            },
        )?);
        files.push(self.ecg(dir, &EcgOptions::default())?);
        files.push(self.rle_image(dir, &RleOptions::default())?);
        files.push(self.implicit_vr_mr(dir)?);
        Ok(files)
    }

    pub(crate) fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    pub(crate) fn next_series(&mut self) -> Series {
        let number = self.next_series_number;
        self.next_series_number += 1;
        Series {
            number,
            uid: self.new_uid(),
            frame_of_reference_uid: self.new_uid(),
        }
    }

    /// The patient, study, series, equipment and SOP common attributes every object carries.
    pub(crate) fn base_object(
        &self,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        modality: &str,
        series: &Series,
        series_description: &str,
        instance_number: u32,
    ) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        let date = self.study_date.as_str();
        let time = self.study_time.as_str();
        put_str(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
        put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, sop_class_uid);
        put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid);
        put_str(&mut obj, tags::STUDY_DATE, VR::DA, date);
        put_str(&mut obj, tags::SERIES_DATE, VR::DA, date);
        put_str(&mut obj, tags::CONTENT_DATE, VR::DA, date);
        put_str(&mut obj, tags::STUDY_TIME, VR::TM, time);
        put_str(&mut obj, tags::SERIES_TIME, VR::TM, time);
        put_str(&mut obj, tags::CONTENT_TIME, VR::TM, time);
        put_str(&mut obj, tags::ACCESSION_NUMBER, VR::SH, &self.accession);
        put_str(&mut obj, tags::MODALITY, VR::CS, modality);
        put_str(&mut obj, tags::MANUFACTURER, VR::LO, "Medgate Synthetic");
        put_str(
            &mut obj,
            tags::INSTITUTION_NAME,
            VR::LO,
            "Synthetic Regional Hospital",
        );
        put_str(&mut obj, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
        put_str(&mut obj, tags::STATION_NAME, VR::SH, "SIM-ROOM-1");
        put_str(&mut obj, tags::STUDY_DESCRIPTION, VR::LO, "Synthetic study");
        put_str(
            &mut obj,
            tags::SERIES_DESCRIPTION,
            VR::LO,
            series_description,
        );
        put_str(
            &mut obj,
            tags::MANUFACTURER_MODEL_NAME,
            VR::LO,
            "medgate-sim",
        );
        put_str(&mut obj, tags::PATIENT_NAME, VR::PN, &self.patient.name);
        put_str(&mut obj, tags::PATIENT_ID, VR::LO, &self.patient.id);
        put_str(
            &mut obj,
            tags::ISSUER_OF_PATIENT_ID,
            VR::LO,
            &self.patient.issuer,
        );
        put_str(
            &mut obj,
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            &self.patient.birth_date,
        );
        put_str(&mut obj, tags::PATIENT_SEX, VR::CS, self.patient_sex);
        put_str(&mut obj, tags::DEVICE_SERIAL_NUMBER, VR::LO, "SIM0001");
        put_str(&mut obj, tags::SOFTWARE_VERSIONS, VR::LO, "medgate-sim 0.1");
        put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid);
        put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series.uid);
        put_str(&mut obj, tags::STUDY_ID, VR::SH, &self.study_id);
        put_str(
            &mut obj,
            tags::SERIES_NUMBER,
            VR::IS,
            &series.number.to_string(),
        );
        put_str(
            &mut obj,
            tags::INSTANCE_NUMBER,
            VR::IS,
            &instance_number.to_string(),
        );
        obj
    }
}

/// A UID `2.25.<n>` with `n` a random 128-bit integer (PS3.5 B.2), at most 44 characters.
pub fn random_uid(rng: &mut Rng) -> String {
    format!("2.25.{}", rng.u128(1..))
}

/// Writes `obj` as a Part 10 file in transfer syntax `ts` and describes it.
pub(crate) fn write_part10(
    obj: InMemDicomObject,
    ts: &str,
    path: &Path,
) -> Result<GeneratedFile, StudyError> {
    let describe = GeneratedFile {
        path: path.to_path_buf(),
        sop_class_uid: string_of(&obj, tags::SOP_CLASS_UID),
        sop_instance_uid: string_of(&obj, tags::SOP_INSTANCE_UID),
        transfer_syntax_uid: ts.to_string(),
        study_instance_uid: string_of(&obj, tags::STUDY_INSTANCE_UID),
        series_instance_uid: string_of(&obj, tags::SERIES_INSTANCE_UID),
        size_bytes: 0,
    };
    let file_obj = obj
        .with_meta(meta_builder(ts))
        .map_err(|e| StudyError::Encode {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    file_obj
        .write_to_file(path)
        .map_err(|e| StudyError::Encode {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let size_bytes = fs::metadata(path)
        .map_err(|source| StudyError::Write {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    Ok(GeneratedFile {
        size_bytes,
        ..describe
    })
}

pub(crate) fn meta_builder(ts: &str) -> FileMetaTableBuilder {
    FileMetaTableBuilder::new()
        .transfer_syntax(ts)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), StudyError> {
    fs::create_dir_all(dir).map_err(|source| StudyError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

fn string_of(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

pub(crate) fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

pub(crate) fn put_us(obj: &mut InMemDicomObject, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

pub(crate) fn put_ul(obj: &mut InMemDicomObject, tag: Tag, value: u32) {
    obj.put(DataElement::new(tag, VR::UL, PrimitiveValue::from(value)));
}

pub(crate) fn put_bytes(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: Vec<u8>) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

pub(crate) fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A code sequence item (Code Value, Coding Scheme Designator, optional Version, Code Meaning).
pub(crate) fn code_item(
    value: &str,
    scheme: &str,
    version: Option<&str>,
    meaning: &str,
) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put_str(&mut item, tags::CODE_VALUE, VR::SH, value);
    put_str(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    if let Some(version) = version {
        put_str(&mut item, tags::CODING_SCHEME_VERSION, VR::SH, version);
    }
    put_str(&mut item, tags::CODE_MEANING, VR::LO, meaning);
    item
}

/// The image pixel module for a single-sample (grayscale) image.
pub(crate) fn put_grayscale_pixel_module(
    obj: &mut InMemDicomObject,
    rows: u16,
    columns: u16,
    bits_allocated: u16,
    bits_stored: u16,
) {
    put_us(obj, tags::SAMPLES_PER_PIXEL, 1);
    put_str(obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_us(obj, tags::ROWS, rows);
    put_us(obj, tags::COLUMNS, columns);
    put_us(obj, tags::BITS_ALLOCATED, bits_allocated);
    put_us(obj, tags::BITS_STORED, bits_stored);
    put_us(obj, tags::HIGH_BIT, bits_stored - 1);
    put_us(obj, tags::PIXEL_REPRESENTATION, 0);
}

/// A private block (creator `MEDGATE SIM` in group 0009), as modalities send: the
/// appliance must keep private elements byte for byte.
pub(crate) fn put_private_block(obj: &mut InMemDicomObject, rng: &mut Rng) {
    put_str(obj, Tag(0x0009, 0x0010), VR::LO, "MEDGATE SIM");
    put_str(obj, Tag(0x0009, 0x1001), VR::LO, "synthetic private value");
    let blob: Vec<u8> = (0..64).map(|_| rng.u8(..)).collect();
    put_bytes(obj, Tag(0x0009, 0x1002), VR::OB, blob);
}

/// A decimal string (DS) of at most 16 characters.
pub(crate) fn ds(value: f64) -> String {
    // `+ 0.0` turns -0.0 into 0.0, so that no "-0" is written.
    let s = format!("{:.4}", value + 0.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    let s = if s.is_empty() || s == "-" { "0" } else { s };
    s.chars().take(16).collect()
}

/// Little-endian bytes of 16-bit samples.
pub(crate) fn u16_le_bytes(samples: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
