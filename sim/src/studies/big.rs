//! Arbitrarily large objects (whole-slide, endoscopy video sizes) streamed to disk.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};

use super::{
    GeneratedFile, Patient, Study, StudyError, create_dir, meta_builder,
    put_grayscale_pixel_module, put_str,
};

const FRAME_ROWS: u16 = 512;
const FRAME_COLUMNS: u16 = 512;
const FRAME_BYTES: u64 = FRAME_ROWS as u64 * FRAME_COLUMNS as u64 * 2;
/// A native Pixel Data element has a 32-bit length; 0xFFFFFFFF means "undefined".
const MAX_PIXEL_BYTES: u64 = 0xFFFF_FFFE;

/// Writes a Multi-frame Grayscale Word Secondary Capture object of about `size_bytes` to `path`
/// for a fixed synthetic patient (`Patient::synthetic(1)`, accession `ACCBIG0001`, seed 1).
/// See [`Study::big_object`].
pub fn big_object(path: &Path, size_bytes: u64) -> Result<GeneratedFile, StudyError> {
    Study::new(Patient::synthetic(1), "ACCBIG0001", 1).big_object(path, size_bytes)
}

impl Study {
    /// Writes a Multi-frame Grayscale Word Secondary Capture object (Explicit VR Little Endian,
    /// 512x512x16-bit frames) to `path` without holding it in memory: the header is encoded by
    /// dicom-object, then the Pixel Data element header and the frames are streamed. The file is
    /// at least `size_bytes` long and at most one frame (512 KiB) plus the header longer; the
    /// largest possible object is just under 4 GiB (the 32-bit length of native Pixel Data).
    pub fn big_object(
        &mut self,
        path: &Path,
        size_bytes: u64,
    ) -> Result<GeneratedFile, StudyError> {
        let frames = size_bytes.div_ceil(FRAME_BYTES).max(1);
        if frames * FRAME_BYTES > MAX_PIXEL_BYTES {
            return Err(StudyError::InvalidOption(format!(
                "a native object holds at most {MAX_PIXEL_BYTES} bytes of pixel data; \
                 {size_bytes} bytes were asked for"
            )));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir(parent)?;
        }
        let series = self.next_series();
        let sop_instance_uid = self.new_uid();
        let mut obj = self.base_object(
            uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
            &sop_instance_uid,
            "OT",
            &series,
            "Synthetic large object",
            1,
        );
        put_str(&mut obj, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY");
        put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
        put_str(
            &mut obj,
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            &frames.to_string(),
        );
        obj.put(dicom_core::DataElement::new(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::from(Tag(0x0018, 0x1063)),
        ));
        put_str(&mut obj, tags::FRAME_TIME, VR::DS, "40");
        put_grayscale_pixel_module(&mut obj, FRAME_ROWS, FRAME_COLUMNS, 16, 12);
        put_str(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "0");
        put_str(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
        put_str(&mut obj, tags::RESCALE_TYPE, VR::LO, "US");
        put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");

        let ts = uids::EXPLICIT_VR_LITTLE_ENDIAN;
        let describe = GeneratedFile {
            path: path.to_path_buf(),
            sop_class_uid: uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE
                .to_string(),
            sop_instance_uid,
            transfer_syntax_uid: ts.to_string(),
            study_instance_uid: self.study_instance_uid().to_string(),
            series_instance_uid: series.uid.clone(),
            size_bytes: 0,
        };
        let encode_err = |e: String| StudyError::Encode {
            path: path.to_path_buf(),
            message: e,
        };
        let io_err = |source| StudyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let file_obj = obj
            .with_meta(meta_builder(ts))
            .map_err(|e| encode_err(e.to_string()))?;
        let file = File::create(path).map_err(io_err)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        file_obj
            .write_all(&mut out)
            .map_err(|e| encode_err(e.to_string()))?;

        // Pixel Data (7FE0,0010) OW, explicit VR LE: tag, VR, 2 reserved bytes, 32-bit length.
        let pixel_len = (frames * FRAME_BYTES) as u32;
        let mut header = Vec::with_capacity(12);
        header.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00]);
        header.extend_from_slice(b"OW\0\0");
        header.extend_from_slice(&pixel_len.to_le_bytes());
        out.write_all(&header).map_err(io_err)?;

        let mut frame = Vec::with_capacity(FRAME_BYTES as usize);
        for y in 0..u32::from(FRAME_ROWS) {
            for x in 0..u32::from(FRAME_COLUMNS) {
                let v = ((x + y) * 4) % 4096;
                frame.extend_from_slice(&(v as u16).to_le_bytes());
            }
        }
        for index in 0..frames {
            // Stamp the frame number so that no two frames are identical.
            // Two 12-bit pixels, so that values stay within Bits Stored.
            let low = (index & 0xFFF) as u16;
            let high = ((index >> 12) & 0xFFF) as u16;
            frame[..2].copy_from_slice(&low.to_le_bytes());
            frame[2..4].copy_from_slice(&high.to_le_bytes());
            out.write_all(&frame).map_err(io_err)?;
        }
        out.flush().map_err(io_err)?;
        drop(out);
        let size_bytes = fs::metadata(path).map_err(io_err)?.len();
        Ok(GeneratedFile {
            size_bytes,
            ..describe
        })
    }
}
