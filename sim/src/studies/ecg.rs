//! 12-lead ECG waveform, Explicit VR Little Endian.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

use super::{
    GeneratedFile, Study, StudyError, code_item, create_dir, ds, put_bytes, put_seq, put_str,
    put_ul, put_us, write_part10,
};

/// Shape of a generated 12-lead ECG.
#[derive(Debug, Clone, PartialEq)]
pub struct EcgOptions {
    /// Recording length in seconds.
    pub seconds: f64,
    /// Sampling frequency in Hz (200..=1000 for 12-lead ECG).
    pub sampling_hz: u32,
    /// Heart rate in beats per minute.
    pub heart_rate_bpm: f64,
}

impl Default for EcgOptions {
    /// 10 s at 500 Hz, 72 bpm (5,000 samples per lead, 120 kB of waveform data).
    fn default() -> Self {
        EcgOptions {
            seconds: 10.0,
            sampling_hz: 500,
            heart_rate_bpm: 72.0,
        }
    }
}

/// The 12 leads: SCPECG code (PS3.16 CID 3001), meaning, and the gain of the synthetic QRS on it.
const LEADS: [(&str, &str, f64); 12] = [
    ("5.6.3-9-1", "Lead I (Einthoven)", 0.6),
    ("5.6.3-9-2", "Lead II", 1.0),
    ("5.6.3-9-61", "Lead III", 0.4),
    ("5.6.3-9-62", "aVR, augmented voltage, right", -0.8),
    ("5.6.3-9-63", "aVL, augmented voltage, left", 0.1),
    ("5.6.3-9-64", "aVF, augmented voltage, foot", 0.7),
    ("5.6.3-9-3", "Lead V1", -0.5),
    ("5.6.3-9-4", "Lead V2", 0.2),
    ("5.6.3-9-5", "Lead V3", 0.6),
    ("5.6.3-9-6", "Lead V4", 1.2),
    ("5.6.3-9-7", "Lead V5", 1.1),
    ("5.6.3-9-8", "Lead V6", 0.9),
];

impl Study {
    /// Writes one 12-Lead ECG Waveform object into `dir` as `ecg-<series>-00001.dcm`: one
    /// multiplex group (WaveformSequence item) of 12 channels, signed 16-bit samples in µV,
    /// interleaved, with a PQRST rhythm.
    pub fn ecg(&mut self, dir: &Path, opts: &EcgOptions) -> Result<GeneratedFile, StudyError> {
        let samples = (opts.seconds * f64::from(opts.sampling_hz)).round();
        if !(200..=1000).contains(&opts.sampling_hz)
            || !(1.0..=16384.0).contains(&samples)
            || !(20.0..=250.0).contains(&opts.heart_rate_bpm)
        {
            return Err(StudyError::InvalidOption(format!(
                "12-lead ECG needs 200..=1000 Hz, 1..=16384 samples per lead and 20..=250 bpm, \
                 got {} Hz, {samples} samples, {} bpm",
                opts.sampling_hz, opts.heart_rate_bpm
            )));
        }
        let samples = samples as u32;
        create_dir(dir)?;
        let series = self.next_series();
        let sop_instance_uid = self.new_uid();
        let mut obj = self.base_object(
            uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE,
            &sop_instance_uid,
            "ECG",
            &series,
            "Synthetic resting ECG",
            1,
        );
        let date = obj
            .get(tags::CONTENT_DATE)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.to_string())
            .unwrap_or_default();
        let time = obj
            .get(tags::CONTENT_TIME)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.to_string())
            .unwrap_or_default();
        put_str(
            &mut obj,
            tags::ACQUISITION_DATE_TIME,
            VR::DT,
            &format!("{date}{time}"),
        );
        put_seq(&mut obj, tags::ACQUISITION_CONTEXT_SEQUENCE, Vec::new());

        let mut group = InMemDicomObject::new_empty();
        put_str(&mut group, tags::MULTIPLEX_GROUP_TIME_OFFSET, VR::DS, "0");
        put_str(&mut group, tags::WAVEFORM_ORIGINALITY, VR::CS, "ORIGINAL");
        put_us(
            &mut group,
            tags::NUMBER_OF_WAVEFORM_CHANNELS,
            LEADS.len() as u16,
        );
        put_ul(&mut group, tags::NUMBER_OF_WAVEFORM_SAMPLES, samples);
        put_str(
            &mut group,
            tags::SAMPLING_FREQUENCY,
            VR::DS,
            &opts.sampling_hz.to_string(),
        );
        put_str(&mut group, tags::MULTIPLEX_GROUP_LABEL, VR::SH, "RHYTHM");
        let channels = LEADS
            .iter()
            .enumerate()
            .map(|(i, (code, meaning, _))| channel_definition(i as u16 + 1, code, meaning))
            .collect();
        put_seq(&mut group, tags::CHANNEL_DEFINITION_SEQUENCE, channels);
        put_us(&mut group, tags::WAVEFORM_BITS_ALLOCATED, 16);
        put_str(
            &mut group,
            tags::WAVEFORM_SAMPLE_INTERPRETATION,
            VR::CS,
            "SS",
        );
        put_bytes(
            &mut group,
            tags::WAVEFORM_DATA,
            VR::OW,
            self.ecg_samples(opts, samples),
        );
        put_seq(&mut obj, tags::WAVEFORM_SEQUENCE, vec![group]);

        let path = dir.join(format!("ecg-{:03}-00001.dcm", series.number));
        write_part10(obj, uids::EXPLICIT_VR_LITTLE_ENDIAN, &path)
    }

    /// Interleaved samples (sample 0 of leads 1..12, sample 1 of leads 1..12, ...), LE i16.
    fn ecg_samples(&mut self, opts: &EcgOptions, samples: u32) -> Vec<u8> {
        let rr = 60.0 / opts.heart_rate_bpm;
        let rng = self.rng();
        let mut out = Vec::with_capacity(samples as usize * LEADS.len() * 2);
        for n in 0..samples {
            let t = f64::from(n) / f64::from(opts.sampling_hz);
            let phase = (t % rr) / rr * 0.833; // template timed for 72 bpm
            let wave = pqrst_microvolts(phase);
            for (_, _, gain) in LEADS {
                let noise = f64::from(rng.i16(-8..=8));
                let v = (wave * gain + noise).clamp(-32768.0, 32767.0) as i16;
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }
}

fn channel_definition(number: u16, code: &str, meaning: &str) -> InMemDicomObject {
    let mut ch = InMemDicomObject::new_empty();
    ch.put(DataElement::new(
        tags::WAVEFORM_CHANNEL_NUMBER,
        VR::IS,
        PrimitiveValue::from(number.to_string()),
    ));
    put_str(&mut ch, tags::CHANNEL_LABEL, VR::SH, &format!("{number}"));
    put_seq(
        &mut ch,
        tags::CHANNEL_SOURCE_SEQUENCE,
        vec![code_item(code, "SCPECG", Some("1.3"), meaning)],
    );
    put_str(&mut ch, tags::CHANNEL_SENSITIVITY, VR::DS, &ds(1.0));
    put_seq(
        &mut ch,
        tags::CHANNEL_SENSITIVITY_UNITS_SEQUENCE,
        vec![code_item("uV", "UCUM", Some("1.4"), "microvolt")],
    );
    put_str(
        &mut ch,
        tags::CHANNEL_SENSITIVITY_CORRECTION_FACTOR,
        VR::DS,
        "1",
    );
    put_str(&mut ch, tags::CHANNEL_BASELINE, VR::DS, "0");
    put_str(&mut ch, tags::CHANNEL_TIME_SKEW, VR::DS, "0");
    put_us(&mut ch, tags::WAVEFORM_BITS_STORED, 16);
    put_str(&mut ch, tags::FILTER_LOW_FREQUENCY, VR::DS, "0.05");
    put_str(&mut ch, tags::FILTER_HIGH_FREQUENCY, VR::DS, "150");
    put_str(&mut ch, tags::NOTCH_FILTER_FREQUENCY, VR::DS, "50");
    ch
}

/// Lead II of one beat as a sum of Gaussians, `t` in seconds from the start of the beat.
fn pqrst_microvolts(t: f64) -> f64 {
    const WAVES: [(f64, f64, f64); 5] = [
        // (centre s, width s, amplitude µV)
        (0.16, 0.025, 150.0),   // P
        (0.285, 0.010, -120.0), // Q
        (0.30, 0.012, 1200.0),  // R
        (0.315, 0.012, -250.0), // S
        (0.52, 0.045, 320.0),   // T
    ];
    WAVES
        .iter()
        .map(|(c, w, a)| a * (-((t - c) / w).powi(2) / 2.0).exp())
        .sum()
}
