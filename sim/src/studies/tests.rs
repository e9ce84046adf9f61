use std::fs;
use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, open_file};

use super::rle::rle_decode_frame;
use super::*;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

fn text(obj: &DefaultDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .unwrap_or_else(|e| panic!("element {tag} missing: {e}"))
        .to_str()
        .expect("a string value")
        .trim_end_matches(['\0', ' '])
        .to_string()
}

fn int(obj: &DefaultDicomObject, tag: Tag) -> i64 {
    obj.element(tag)
        .unwrap_or_else(|e| panic!("element {tag} missing: {e}"))
        .to_int::<i64>()
        .expect("an integer value")
}

fn assert_uid(uid: &str) {
    assert!(uid.starts_with("2.25."), "{uid} is not under 2.25");
    assert!(uid.len() <= 64, "{uid} longer than 64 characters");
    assert!(
        uid[5..].bytes().all(|b| b.is_ascii_digit()) && !uid[5..].starts_with('0'),
        "{uid} is not a valid 2.25 UID"
    );
}

/// Parses `file` back and checks what every generated object must carry.
fn check_common(file: &GeneratedFile, study: &Study) -> DefaultDicomObject {
    let obj = open_file(&file.path).expect("generated file parses back with dicom-object");
    let meta = obj.meta();
    assert_eq!(
        meta.transfer_syntax().trim_end_matches('\0'),
        file.transfer_syntax_uid
    );
    assert_eq!(
        meta.media_storage_sop_class_uid().trim_end_matches('\0'),
        file.sop_class_uid
    );
    assert_eq!(
        meta.media_storage_sop_instance_uid().trim_end_matches('\0'),
        file.sop_instance_uid
    );
    assert_eq!(text(&obj, tags::SOP_CLASS_UID), file.sop_class_uid);
    assert_eq!(text(&obj, tags::SOP_INSTANCE_UID), file.sop_instance_uid);
    assert_eq!(
        text(&obj, tags::STUDY_INSTANCE_UID),
        study.study_instance_uid()
    );
    assert_eq!(
        text(&obj, tags::STUDY_INSTANCE_UID),
        file.study_instance_uid
    );
    assert_eq!(
        text(&obj, tags::SERIES_INSTANCE_UID),
        file.series_instance_uid
    );
    assert_uid(&file.sop_instance_uid);
    assert_uid(&file.series_instance_uid);
    assert_uid(&file.study_instance_uid);
    let patient = study.patient();
    assert_eq!(text(&obj, tags::PATIENT_NAME), patient.name);
    assert_eq!(text(&obj, tags::PATIENT_ID), patient.id);
    assert_eq!(text(&obj, tags::PATIENT_BIRTH_DATE), patient.birth_date);
    assert_eq!(text(&obj, tags::ISSUER_OF_PATIENT_ID), patient.issuer);
    assert_eq!(text(&obj, tags::ACCESSION_NUMBER), study.accession());
    assert_eq!(
        fs::metadata(&file.path).expect("stat").len(),
        file.size_bytes
    );
    obj
}

fn study(seed: u64) -> Study {
    Study::new(Patient::synthetic(seed), format!("ACC{seed:07}"), seed)
}

#[test]
fn ct_series_has_consistent_uids_positions_and_half_megabyte_slices() {
    let dir = tempdir();
    let mut study = study(11);
    let files = study
        .ct_series(
            dir.path(),
            &CtOptions {
                slices: 4,
                slice_thickness_mm: 1.25,
                ..CtOptions::default()
            },
        )
        .expect("generate CT");
    assert_eq!(files.len(), 4);
    let series_uid = &files[0].series_instance_uid;
    let mut sop_uids = std::collections::HashSet::new();
    for (i, file) in files.iter().enumerate() {
        let obj = check_common(file, &study);
        assert_eq!(file.sop_class_uid, uids::CT_IMAGE_STORAGE);
        assert_eq!(file.transfer_syntax_uid, uids::EXPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!(&file.series_instance_uid, series_uid);
        assert!(
            sop_uids.insert(file.sop_instance_uid.clone()),
            "duplicate SOP UID"
        );
        assert_eq!(text(&obj, tags::MODALITY), "CT");
        assert_eq!(int(&obj, tags::INSTANCE_NUMBER), i as i64 + 1);
        assert_eq!(int(&obj, tags::ROWS), 512);
        assert_eq!(int(&obj, tags::COLUMNS), 512);
        assert_eq!(int(&obj, tags::BITS_ALLOCATED), 16);
        let pos = obj
            .element(tags::IMAGE_POSITION_PATIENT)
            .expect("IPP")
            .to_multi_float64()
            .expect("IPP numbers");
        assert_eq!(pos.len(), 3);
        assert!(
            (pos[2] - (-1.25 * i as f64)).abs() < 1e-6,
            "z of slice {i}: {pos:?}"
        );
        assert_eq!(
            obj.element(tags::PIXEL_DATA)
                .expect("pixel data")
                .to_bytes()
                .expect("bytes")
                .len(),
            512 * 512 * 2
        );
        assert!(
            (524_288..540_000).contains(&file.size_bytes),
            "CT slice is {} bytes",
            file.size_bytes
        );
        // The private block travels with the object.
        assert_eq!(text(&obj, Tag(0x0009, 0x0010)), "MEDGATE SIM");
    }
}

#[test]
fn us_multiframe_is_rgb_with_the_requested_frames() {
    let dir = tempdir();
    let mut study = study(12);
    let opts = UsOptions {
        frames: 3,
        rows: 48,
        columns: 64,
    };
    let file = study.us_multiframe(dir.path(), &opts).expect("generate US");
    let obj = check_common(&file, &study);
    assert_eq!(
        file.sop_class_uid,
        uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE
    );
    assert_eq!(text(&obj, tags::MODALITY), "US");
    assert_eq!(text(&obj, tags::PHOTOMETRIC_INTERPRETATION), "RGB");
    assert_eq!(int(&obj, tags::SAMPLES_PER_PIXEL), 3);
    assert_eq!(int(&obj, tags::NUMBER_OF_FRAMES), 3);
    assert_eq!(
        obj.element(tags::PIXEL_DATA)
            .expect("pixel data")
            .to_bytes()
            .expect("bytes")
            .len(),
        3 * 48 * 64 * 3
    );
}

#[test]
fn dx_default_is_a_2048_square_of_about_8_mb() {
    let dir = tempdir();
    let mut study = study(13);
    let file = study
        .dx_image(dir.path(), &DxOptions::default())
        .expect("generate DX");
    let obj = check_common(&file, &study);
    assert_eq!(
        file.sop_class_uid,
        uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION
    );
    assert_eq!(
        text(&obj, tags::PRESENTATION_INTENT_TYPE),
        "FOR PRESENTATION"
    );
    assert_eq!(int(&obj, tags::ROWS), 2048);
    assert_eq!(int(&obj, tags::BITS_STORED), 14);
    assert!(
        (8_388_608..8_400_000).contains(&file.size_bytes),
        "{}",
        file.size_bytes
    );
    let pixels = obj
        .element(tags::PIXEL_DATA)
        .expect("pixel data")
        .to_bytes()
        .expect("bytes");
    let max = pixels
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .max()
        .expect("pixels");
    assert!(max < 1 << 14, "a pixel exceeds Bits Stored: {max}");
}

#[test]
fn ecg_has_one_multiplex_group_of_12_channels() {
    let dir = tempdir();
    let mut study = study(14);
    let file = study
        .ecg(dir.path(), &EcgOptions::default())
        .expect("generate ECG");
    let obj = check_common(&file, &study);
    assert_eq!(file.sop_class_uid, uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE);
    assert_eq!(text(&obj, tags::MODALITY), "ECG");
    let groups = obj
        .element(tags::WAVEFORM_SEQUENCE)
        .expect("waveform sequence")
        .items()
        .expect("items");
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    assert_eq!(
        group
            .element(tags::NUMBER_OF_WAVEFORM_CHANNELS)
            .expect("channels")
            .to_int::<u16>()
            .expect("int"),
        12
    );
    assert_eq!(
        group
            .element(tags::NUMBER_OF_WAVEFORM_SAMPLES)
            .expect("samples")
            .to_int::<u32>()
            .expect("int"),
        5000
    );
    let channels = group
        .element(tags::CHANNEL_DEFINITION_SEQUENCE)
        .expect("channel definitions")
        .items()
        .expect("items");
    assert_eq!(channels.len(), 12);
    let first_source = channels[0]
        .element(tags::CHANNEL_SOURCE_SEQUENCE)
        .expect("source")
        .items()
        .expect("items");
    assert_eq!(
        first_source[0]
            .element(tags::CODE_VALUE)
            .expect("code")
            .to_str()
            .expect("str")
            .trim(),
        "5.6.3-9-1"
    );
    let data = group
        .element(tags::WAVEFORM_DATA)
        .expect("data")
        .to_bytes()
        .expect("bytes");
    assert_eq!(data.len(), 12 * 5000 * 2);
    // Lead II carries R peaks of about 1.2 mV.
    let lead2_max = data
        .chunks_exact(24)
        .map(|s| i16::from_le_bytes([s[2], s[3]]))
        .max()
        .expect("samples");
    assert!(
        (1000..1400).contains(&lead2_max),
        "lead II peak {lead2_max} µV"
    );
}

#[test]
fn rle_image_is_encapsulated_and_decodes_to_the_image() {
    let dir = tempdir();
    let mut study = study(15);
    let file = study
        .rle_image(dir.path(), &RleOptions::default())
        .expect("generate RLE");
    let obj = check_common(&file, &study);
    assert_eq!(file.transfer_syntax_uid, uids::RLE_LOSSLESS);
    assert_eq!(file.sop_class_uid, uids::SECONDARY_CAPTURE_IMAGE_STORAGE);
    let pixel = obj.element(tags::PIXEL_DATA).expect("pixel data");
    let fragments = pixel.value().fragments().expect("encapsulated pixel data");
    assert_eq!(fragments.len(), 1);
    assert_eq!(fragments[0].len() % 2, 0);
    let decoded = rle_decode_frame(&fragments[0]).expect("valid RLE frame");
    assert_eq!(decoded.len(), 512 * 512);
    assert!(
        fragments[0].len() < decoded.len() / 2,
        "RLE should compress a document"
    );
}

#[test]
fn rle_encoder_round_trips_runs_literals_and_edges() {
    let mut rng = Rng::with_seed(3);
    let mut cases: Vec<(Vec<u8>, usize)> = vec![
        (vec![7; 300], 300),
        (vec![1, 2], 2),
        (vec![5], 1),
        ((0..=255).collect(), 256),
        ([vec![9; 129], vec![1, 2, 3], vec![4; 2]].concat(), 134),
    ];
    for _ in 0..50 {
        let cols = rng.usize(1..200);
        let rows = rng.usize(1..10);
        let data = (0..cols * rows)
            .map(|_| if rng.bool() { 0 } else { rng.u8(..4) })
            .collect();
        cases.push((data, cols));
    }
    for (data, cols) in cases {
        let frame = rle_encode_frame(&data, cols);
        assert_eq!(frame.len() % 2, 0);
        assert_eq!(
            rle_decode_frame(&frame).expect("decodes"),
            data,
            "columns {cols}"
        );
    }
}

#[test]
fn implicit_vr_object_parses_back_with_its_private_block() {
    let dir = tempdir();
    let mut study = study(16);
    let file = study.implicit_vr_mr(dir.path()).expect("generate MR");
    let obj = check_common(&file, &study);
    assert_eq!(file.transfer_syntax_uid, uids::IMPLICIT_VR_LITTLE_ENDIAN);
    assert_eq!(file.sop_class_uid, uids::MR_IMAGE_STORAGE);
    assert_eq!(int(&obj, tags::ROWS), 256);
    assert!(
        obj.element(Tag(0x0009, 0x1002)).is_ok(),
        "private element kept"
    );
    // Implicit VR: no "OW"/"UI" VR codes follow the tags in the data set.
    let bytes = fs::read(&file.path).expect("read");
    let pixel_tag = [0xE0, 0x7F, 0x10, 0x00];
    let at = bytes
        .windows(4)
        .rposition(|w| w == pixel_tag)
        .expect("pixel data tag");
    assert_ne!(&bytes[at + 4..at + 6], b"OW");
}

#[test]
fn big_object_streams_a_consistent_multiframe() {
    let dir = tempdir();
    let path = dir.path().join("big/big.dcm");
    let size = 5 * 1024 * 1024 + 123;
    let file = big_object(&path, size).expect("generate big object");
    assert!(file.size_bytes >= size);
    assert!(file.size_bytes < size + 512 * 1024 + 4096);
    let obj = open_file(&path).expect("big object parses back");
    let frames = int(&obj, tags::NUMBER_OF_FRAMES) as usize;
    assert_eq!(frames, 11);
    let pixels = obj
        .element(tags::PIXEL_DATA)
        .expect("pixel data")
        .to_bytes()
        .expect("bytes");
    assert_eq!(pixels.len(), frames * 512 * 512 * 2);
    assert_eq!(text(&obj, tags::PATIENT_ID), Patient::synthetic(1).id);
    assert_eq!(
        file.sop_class_uid,
        uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE
    );
}

#[test]
fn big_object_refuses_more_than_a_native_element_holds() {
    let dir = tempdir();
    let err = big_object(&dir.path().join("x.dcm"), 5 << 30).expect_err("5 GiB must fail");
    assert!(err.to_string().contains("at most"), "{err}");
    assert!(!dir.path().join("x.dcm").exists());
}

#[test]
fn same_seed_writes_identical_files_and_another_seed_does_not() {
    let write = |seed: u64, dir: &Path| -> Vec<GeneratedFile> {
        study(seed).one_of_each(dir).expect("generate")
    };
    let (a, b, c) = (tempdir(), tempdir(), tempdir());
    let fa = write(21, a.path());
    let fb = write(21, b.path());
    let fc = write(22, c.path());
    assert_eq!(fa.len(), 8);
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(x.sop_instance_uid, y.sop_instance_uid);
        assert_eq!(
            fs::read(&x.path).expect("read"),
            fs::read(&y.path).expect("read"),
            "{} differs between runs",
            x.path.display()
        );
    }
    for (x, z) in fa.iter().zip(&fc) {
        assert_ne!(x.sop_instance_uid, z.sop_instance_uid);
    }
    assert_ne!(Patient::synthetic(21), Patient::synthetic(22));
}

#[test]
fn one_of_each_covers_every_kind() {
    let dir = tempdir();
    let mut study = study(31);
    let files = study.one_of_each(dir.path()).expect("generate");
    let classes: Vec<&str> = files.iter().map(|f| f.sop_class_uid.as_str()).collect();
    for class in [
        uids::CT_IMAGE_STORAGE,
        uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
        uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
        uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE,
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
        uids::MR_IMAGE_STORAGE,
    ] {
        assert!(classes.contains(&class), "{class} missing");
    }
    for file in &files {
        check_common(file, &study);
    }
}

#[test]
fn invalid_options_are_refused_with_a_clear_message() {
    let dir = tempdir();
    let mut study = study(41);
    let err = study
        .ct_series(
            dir.path(),
            &CtOptions {
                slices: 0,
                ..CtOptions::default()
            },
        )
        .expect_err("0 slices");
    assert!(err.to_string().contains("at least 1 slice"), "{err}");
    let err = study
        .ecg(
            dir.path(),
            &EcgOptions {
                sampling_hz: 50,
                ..EcgOptions::default()
            },
        )
        .expect_err("50 Hz");
    assert!(err.to_string().contains("200..=1000 Hz"), "{err}");
}
