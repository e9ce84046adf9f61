//! Digital X-Ray (for presentation): one large 16-bit projection, Explicit VR Little Endian.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};

use super::{
    GeneratedFile, Study, StudyError, create_dir, ds, put_bytes, put_grayscale_pixel_module,
    put_str, u16_le_bytes, write_part10,
};

/// Shape of a generated DX image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DxOptions {
    /// Rows of the image.
    pub rows: u16,
    /// Columns of the image.
    pub columns: u16,
    /// Bits Stored (of 16 allocated), 8..=16.
    pub bits_stored: u16,
}

impl Default for DxOptions {
    /// 2048x2048, 14 bits stored in 16 (8 MB).
    fn default() -> Self {
        DxOptions {
            rows: 2048,
            columns: 2048,
            bits_stored: 14,
        }
    }
}

impl Study {
    /// Writes one Digital X-Ray Image - For Presentation into `dir` as `dx-<series>-00001.dcm`:
    /// a chest-like projection (dark lungs, bright mediastinum and shoulders) with noise.
    pub fn dx_image(&mut self, dir: &Path, opts: &DxOptions) -> Result<GeneratedFile, StudyError> {
        if opts.rows < 16 || opts.columns < 16 || !(8..=16).contains(&opts.bits_stored) {
            return Err(StudyError::InvalidOption(format!(
                "DX needs at least 16x16 pixels and 8..=16 bits stored, got {}x{} with {} bits",
                opts.columns, opts.rows, opts.bits_stored
            )));
        }
        create_dir(dir)?;
        let series = self.next_series();
        let sop_instance_uid = self.new_uid();
        let mut obj = self.base_object(
            uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
            &sop_instance_uid,
            "DX",
            &series,
            "Synthetic chest PA",
            1,
        );
        put_str(&mut obj, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY");
        put_str(
            &mut obj,
            tags::PRESENTATION_INTENT_TYPE,
            VR::CS,
            "FOR PRESENTATION",
        );
        put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
        put_str(&mut obj, tags::VIEW_POSITION, VR::CS, "PA");
        put_str(&mut obj, tags::PATIENT_ORIENTATION, VR::CS, "L\\F");
        put_str(&mut obj, tags::KVP, VR::DS, "125");
        put_str(&mut obj, tags::DETECTOR_TYPE, VR::CS, "DIRECT");
        put_str(
            &mut obj,
            tags::IMAGER_PIXEL_SPACING,
            VR::DS,
            &format!("{}\\{}", ds(0.139), ds(0.139)),
        );
        put_str(
            &mut obj,
            tags::PIXEL_SPACING,
            VR::DS,
            &format!("{}\\{}", ds(0.139), ds(0.139)),
        );
        put_grayscale_pixel_module(&mut obj, opts.rows, opts.columns, 16, opts.bits_stored);
        put_str(&mut obj, tags::PIXEL_INTENSITY_RELATIONSHIP, VR::CS, "LOG");
        obj.put(dicom_core::DataElement::new(
            tags::PIXEL_INTENSITY_RELATIONSHIP_SIGN,
            VR::SS,
            dicom_core::PrimitiveValue::from(1_i16),
        ));
        put_str(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "0");
        put_str(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
        put_str(&mut obj, tags::RESCALE_TYPE, VR::LO, "US");
        let max = (1_u32 << opts.bits_stored) - 1;
        put_str(
            &mut obj,
            tags::WINDOW_CENTER,
            VR::DS,
            &(max / 2).to_string(),
        );
        put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, &max.to_string());
        put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        put_str(&mut obj, tags::EXPOSURE_INDEX, VR::DS, "400");
        let pixels = self.dx_pixels(opts, max);
        put_bytes(&mut obj, tags::PIXEL_DATA, VR::OW, u16_le_bytes(&pixels));
        let path = dir.join(format!("dx-{:03}-00001.dcm", series.number));
        write_part10(obj, uids::EXPLICIT_VR_LITTLE_ENDIAN, &path)
    }

    fn dx_pixels(&mut self, opts: &DxOptions, max: u32) -> Vec<u16> {
        let rows = f64::from(opts.rows);
        let cols = f64::from(opts.columns);
        let rng = self.rng();
        let mut out = Vec::with_capacity(usize::from(opts.rows) * usize::from(opts.columns));
        let max_f = f64::from(max);
        for y in 0..opts.rows {
            for x in 0..opts.columns {
                let u = f64::from(x) / cols - 0.5;
                let v = f64::from(y) / rows - 0.5;
                // Body outline, two lungs, mediastinum.
                let body = (u * u / 0.16 + v * v / 0.22) < 1.0;
                let lung_l = ((u + 0.17).powi(2) / 0.018 + (v + 0.02).powi(2) / 0.07) < 1.0;
                let lung_r = ((u - 0.17).powi(2) / 0.018 + (v + 0.02).powi(2) / 0.07) < 1.0;
                let level = if !body {
                    0.05
                } else if lung_l || lung_r {
                    0.3
                } else {
                    0.75
                };
                let noise = f64::from(rng.u16(..512)) / 512.0 * 0.04;
                out.push(((level + noise).min(1.0) * max_f) as u16);
            }
        }
        out
    }
}
