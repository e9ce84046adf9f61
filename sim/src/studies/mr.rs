//! An object in Implicit VR Little Endian (the DICOM default transfer syntax, still sent by
//! older modalities): a 256x256 MR slice with a private block.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};

use super::{
    GeneratedFile, Study, StudyError, create_dir, put_bytes, put_grayscale_pixel_module,
    put_private_block, put_str, u16_le_bytes, write_part10,
};

const SIZE: u16 = 256;

impl Study {
    /// Writes one MR Image (256x256, 16 bits, 12 stored) in Implicit VR Little Endian into `dir`
    /// as `mr-<series>-00001.dcm`. It carries a private block (creator `MEDGATE SIM`, group
    /// 0009) whose VRs an implicit VR reader can only guess: it must travel unchanged.
    pub fn implicit_vr_mr(&mut self, dir: &Path) -> Result<GeneratedFile, StudyError> {
        create_dir(dir)?;
        let series = self.next_series();
        let sop_instance_uid = self.new_uid();
        let mut obj = self.base_object(
            uids::MR_IMAGE_STORAGE,
            &sop_instance_uid,
            "MR",
            &series,
            "Synthetic T2 axial (implicit VR)",
            1,
        );
        put_str(
            &mut obj,
            tags::IMAGE_TYPE,
            VR::CS,
            "ORIGINAL\\PRIMARY\\M\\NONE",
        );
        put_str(&mut obj, tags::SCANNING_SEQUENCE, VR::CS, "SE");
        put_str(&mut obj, tags::SEQUENCE_VARIANT, VR::CS, "NONE");
        put_str(&mut obj, tags::SCAN_OPTIONS, VR::CS, "");
        put_str(&mut obj, tags::MR_ACQUISITION_TYPE, VR::CS, "2D");
        put_str(&mut obj, tags::REPETITION_TIME, VR::DS, "4000");
        put_str(&mut obj, tags::ECHO_TIME, VR::DS, "100");
        put_str(&mut obj, tags::ECHO_TRAIN_LENGTH, VR::IS, "16");
        put_str(&mut obj, tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "1.5");
        put_str(&mut obj, tags::IMAGED_NUCLEUS, VR::SH, "1H");
        put_str(&mut obj, tags::SLICE_THICKNESS, VR::DS, "5");
        put_str(
            &mut obj,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            "-120\\-120\\0",
        );
        put_str(
            &mut obj,
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            "1\\0\\0\\0\\1\\0",
        );
        put_str(
            &mut obj,
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &series.frame_of_reference_uid,
        );
        put_str(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
        put_str(&mut obj, tags::PIXEL_SPACING, VR::DS, "0.9375\\0.9375");
        put_grayscale_pixel_module(&mut obj, SIZE, SIZE, 16, 12);
        put_private_block(&mut obj, self.rng());
        let rng = self.rng();
        let mut pixels = Vec::with_capacity(usize::from(SIZE) * usize::from(SIZE));
        let c = f64::from(SIZE) / 2.0;
        for y in 0..SIZE {
            for x in 0..SIZE {
                let r = ((f64::from(x) - c).powi(2) + (f64::from(y) - c).powi(2)).sqrt() / c;
                let base = if r < 0.8 {
                    900.0 + 600.0 * (1.0 - r)
                } else {
                    20.0
                };
                pixels.push((base as u16 + rng.u16(..40)).min(4095));
            }
        }
        put_bytes(&mut obj, tags::PIXEL_DATA, VR::OW, u16_le_bytes(&pixels));
        let path = dir.join(format!("mr-{:03}-00001.dcm", series.number));
        write_part10(obj, uids::IMPLICIT_VR_LITTLE_ENDIAN, &path)
    }
}
