//! Ultrasound multi-frame: RGB cine loop, Explicit VR Little Endian.

use std::path::Path;

use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};

use super::{
    GeneratedFile, Study, StudyError, create_dir, put_bytes, put_str, put_us, write_part10,
};

/// Shape of a generated ultrasound cine loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsOptions {
    /// Number of frames (30 frames per second).
    pub frames: u32,
    /// Rows of each frame.
    pub rows: u16,
    /// Columns of each frame.
    pub columns: u16,
}

impl Default for UsOptions {
    /// 30 frames of 640x480 RGB (27.6 MB).
    fn default() -> Self {
        UsOptions {
            frames: 30,
            rows: 480,
            columns: 640,
        }
    }
}

impl Study {
    /// Writes one Ultrasound Multi-frame Image (RGB, 8 bits per sample, interleaved) into `dir`
    /// as `us-<series>-00001.dcm`: a speckled sector with a colour Doppler box that moves from
    /// frame to frame.
    pub fn us_multiframe(
        &mut self,
        dir: &Path,
        opts: &UsOptions,
    ) -> Result<GeneratedFile, StudyError> {
        if opts.frames == 0 || opts.rows < 16 || opts.columns < 16 {
            return Err(StudyError::InvalidOption(format!(
                "ultrasound needs at least 1 frame of 16x16 pixels, got {} frames of {}x{}",
                opts.frames, opts.rows, opts.columns
            )));
        }
        let frame_len = usize::from(opts.rows) * usize::from(opts.columns) * 3;
        if (frame_len as u64) * u64::from(opts.frames) > 0xFFFF_FFF0 {
            return Err(StudyError::InvalidOption(format!(
                "{} frames of {}x{} RGB exceed the 4 GiB a native Pixel Data element can hold",
                opts.frames, opts.columns, opts.rows
            )));
        }
        create_dir(dir)?;
        let series = self.next_series();
        let sop_instance_uid = self.new_uid();
        let mut obj = self.base_object(
            uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
            &sop_instance_uid,
            "US",
            &series,
            "Synthetic abdominal ultrasound",
            1,
        );
        put_str(
            &mut obj,
            tags::IMAGE_TYPE,
            VR::CS,
            "ORIGINAL\\PRIMARY\\ABDOMINAL\\0001",
        );
        put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "ABDOMEN");
        put_us(&mut obj, tags::SAMPLES_PER_PIXEL, 3);
        put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
        put_us(&mut obj, tags::PLANAR_CONFIGURATION, 0);
        put_str(
            &mut obj,
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            &opts.frames.to_string(),
        );
        obj.put(dicom_core::DataElement::new(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::from(Tag(0x0018, 0x1063)),
        ));
        put_str(&mut obj, tags::FRAME_TIME, VR::DS, "33.3333");
        put_str(&mut obj, tags::CINE_RATE, VR::IS, "30");
        put_us(&mut obj, tags::ROWS, opts.rows);
        put_us(&mut obj, tags::COLUMNS, opts.columns);
        put_us(&mut obj, tags::BITS_ALLOCATED, 8);
        put_us(&mut obj, tags::BITS_STORED, 8);
        put_us(&mut obj, tags::HIGH_BIT, 7);
        put_us(&mut obj, tags::PIXEL_REPRESENTATION, 0);
        put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        let mut pixels = Vec::with_capacity(frame_len * opts.frames as usize);
        for frame in 0..opts.frames {
            self.us_frame(opts, frame, &mut pixels);
        }
        put_bytes(&mut obj, tags::PIXEL_DATA, VR::OB, pixels);
        let path = dir.join(format!("us-{:03}-00001.dcm", series.number));
        write_part10(obj, uids::EXPLICIT_VR_LITTLE_ENDIAN, &path)
    }

    fn us_frame(&mut self, opts: &UsOptions, frame: u32, out: &mut Vec<u8>) {
        let rows = f64::from(opts.rows);
        let cols = f64::from(opts.columns);
        let apex_x = cols / 2.0;
        let depth = rows * 0.95;
        let half_angle = 0.6_f64; // radians
        let shift = f64::from(frame % 60) / 60.0;
        let (box_x0, box_x1) = (cols * (0.35 + 0.1 * shift), cols * (0.5 + 0.1 * shift));
        let (box_y0, box_y1) = (rows * 0.3, rows * 0.5);
        let rng = self.rng();
        for y in 0..opts.rows {
            for x in 0..opts.columns {
                let fx = f64::from(x);
                let fy = f64::from(y);
                let r = ((fx - apex_x).powi(2) + fy * fy).sqrt();
                let angle = (fx - apex_x).atan2(fy.max(1e-3));
                if r > depth || angle.abs() > half_angle {
                    out.extend_from_slice(&[0, 0, 0]);
                    continue;
                }
                // Speckle with depth attenuation and a dark "vessel" band.
                let attenuation = 1.0 - 0.6 * (r / depth);
                let vessel = ((r - rows * 0.45).abs() < rows * 0.04) as u8 as f64;
                let speckle = f64::from(rng.u8(..)) * attenuation * (1.0 - 0.8 * vessel);
                let g = speckle as u8;
                if vessel > 0.0 && fx > box_x0 && fx < box_x1 && fy > box_y0 && fy < box_y1 {
                    // Colour Doppler: red towards, blue away, alternating with the frame.
                    if frame % 2 == 0 {
                        out.extend_from_slice(&[200, g / 4, g / 4]);
                    } else {
                        out.extend_from_slice(&[g / 4, g / 4, 200]);
                    }
                } else {
                    out.extend_from_slice(&[g, g, g]);
                }
            }
        }
    }
}
