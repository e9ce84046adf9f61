//! CT series: axial slices of 16-bit Hounsfield units, Explicit VR Little Endian.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};

use super::{
    GeneratedFile, Study, StudyError, create_dir, ds, put_bytes, put_grayscale_pixel_module,
    put_private_block, put_str, u16_le_bytes, write_part10,
};

/// Shape of a generated CT series.
#[derive(Debug, Clone, PartialEq)]
pub struct CtOptions {
    /// Number of slices (one file each).
    pub slices: u32,
    /// Rows of each slice.
    pub rows: u16,
    /// Columns of each slice.
    pub columns: u16,
    /// Slice thickness and spacing, in mm.
    pub slice_thickness_mm: f64,
}

impl Default for CtOptions {
    /// 100 slices of 512x512 (0.5 MB each), 1 mm apart.
    fn default() -> Self {
        CtOptions {
            slices: 100,
            rows: 512,
            columns: 512,
            slice_thickness_mm: 1.0,
        }
    }
}

/// Stored value of -1024 HU (air) with a rescale intercept of -1024.
const STORED_AIR: i32 = 0;
const INTERCEPT: i32 = -1024;
const PIXEL_SPACING_MM: f64 = 0.7;

impl Study {
    /// Writes a CT series (CT Image Storage, Explicit VR Little Endian) into `dir`, one file per
    /// slice named `ct-<series>-<instance>.dcm`, with consistent Study/Series/Frame of Reference
    /// UIDs, InstanceNumber 1..=N and ImagePositionPatient stepping down by the slice thickness.
    pub fn ct_series(
        &mut self,
        dir: &Path,
        opts: &CtOptions,
    ) -> Result<Vec<GeneratedFile>, StudyError> {
        if opts.slices == 0 || opts.rows < 16 || opts.columns < 16 {
            return Err(StudyError::InvalidOption(format!(
                "CT needs at least 1 slice of 16x16 pixels, got {} slices of {}x{}",
                opts.slices, opts.rows, opts.columns
            )));
        }
        create_dir(dir)?;
        let series = self.next_series();
        let mut files = Vec::with_capacity(opts.slices as usize);
        let origin_x = -(f64::from(opts.columns) * PIXEL_SPACING_MM) / 2.0;
        let origin_y = -(f64::from(opts.rows) * PIXEL_SPACING_MM) / 2.0;
        for index in 0..opts.slices {
            let instance_number = index + 1;
            let sop_instance_uid = self.new_uid();
            let z = -(f64::from(index) * opts.slice_thickness_mm);
            let mut obj = self.base_object(
                uids::CT_IMAGE_STORAGE,
                &sop_instance_uid,
                "CT",
                &series,
                "Synthetic CT chest",
                instance_number,
            );
            put_str(
                &mut obj,
                tags::IMAGE_TYPE,
                VR::CS,
                "ORIGINAL\\PRIMARY\\AXIAL",
            );
            put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
            put_str(
                &mut obj,
                tags::SLICE_THICKNESS,
                VR::DS,
                &ds(opts.slice_thickness_mm),
            );
            put_str(&mut obj, tags::KVP, VR::DS, "120");
            put_str(&mut obj, tags::CONVOLUTION_KERNEL, VR::SH, "STANDARD");
            put_str(&mut obj, tags::PATIENT_POSITION, VR::CS, "HFS");
            put_str(&mut obj, tags::ACQUISITION_NUMBER, VR::IS, "1");
            put_str(
                &mut obj,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &format!("{}\\{}\\{}", ds(origin_x), ds(origin_y), ds(z)),
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
            put_str(&mut obj, tags::SLICE_LOCATION, VR::DS, &ds(z));
            put_grayscale_pixel_module(&mut obj, opts.rows, opts.columns, 16, 16);
            put_str(
                &mut obj,
                tags::PIXEL_SPACING,
                VR::DS,
                &format!("{}\\{}", ds(PIXEL_SPACING_MM), ds(PIXEL_SPACING_MM)),
            );
            put_str(
                &mut obj,
                tags::RESCALE_INTERCEPT,
                VR::DS,
                &INTERCEPT.to_string(),
            );
            put_str(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
            put_str(&mut obj, tags::RESCALE_TYPE, VR::LO, "HU");
            put_str(&mut obj, tags::WINDOW_CENTER, VR::DS, "40");
            put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, "400");
            put_private_block(&mut obj, self.rng());
            let pixels = self.ct_slice_pixels(opts, index);
            put_bytes(&mut obj, tags::PIXEL_DATA, VR::OW, u16_le_bytes(&pixels));
            let path = dir.join(format!(
                "ct-{:03}-{:05}.dcm",
                series.number, instance_number
            ));
            files.push(write_part10(obj, uids::EXPLICIT_VR_LITTLE_ENDIAN, &path)?);
        }
        Ok(files)
    }

    /// A body phantom: an ellipse of soft tissue with a bone ring, two lungs and noise; its
    /// size varies along the series like a real chest.
    fn ct_slice_pixels(&mut self, opts: &CtOptions, index: u32) -> Vec<u16> {
        let rows = i32::from(opts.rows);
        let cols = i32::from(opts.columns);
        let phase = f64::from(index) / f64::from(opts.slices.max(2) - 1);
        let scale = 0.85 + 0.15 * (phase * std::f64::consts::PI).sin();
        let (cx, cy) = (f64::from(cols) / 2.0, f64::from(rows) / 2.0);
        let (ax, ay) = (
            f64::from(cols) * 0.42 * scale,
            f64::from(rows) * 0.32 * scale,
        );
        let rng = self.rng();
        let mut out = Vec::with_capacity((rows * cols) as usize);
        for y in 0..rows {
            for x in 0..cols {
                let dx = (f64::from(x) - cx) / ax;
                let dy = (f64::from(y) - cy) / ay;
                let r = dx * dx + dy * dy;
                let hu = if r > 1.0 {
                    -1000
                } else if r > 0.88 {
                    700 // ribs and spine ring
                } else if ((dx.abs() - 0.45).powi(2) / 0.09 + dy * dy / 0.5) < 1.0 {
                    -850 // lungs
                } else {
                    40
                };
                let noise = rng.i32(-12..=12);
                let stored = (hu - INTERCEPT + noise).clamp(STORED_AIR, 4095);
                out.push(stored as u16);
            }
        }
        out
    }
}
