//! An encapsulated (compressed) object: Secondary Capture in RLE Lossless (PS3.5 Annex G).
//!
//! The RLE codec is simple enough to write here exactly, so the object is a real, decodable
//! RLE image (DCMTK's `dcmdrle` decodes it), not just bytes in fragments.

use std::path::Path;

use dicom_core::VR;
use dicom_core::value::PixelFragmentSequence;
use dicom_dictionary_std::{tags, uids};

use super::{
    GeneratedFile, Study, StudyError, create_dir, put_grayscale_pixel_module, put_str, write_part10,
};

/// Shape of the generated RLE image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RleOptions {
    /// Rows of the image.
    pub rows: u16,
    /// Columns of the image.
    pub columns: u16,
}

impl Default for RleOptions {
    /// 512x512, 8 bits.
    fn default() -> Self {
        RleOptions {
            rows: 512,
            columns: 512,
        }
    }
}

impl Study {
    /// Writes one Secondary Capture image, 8-bit MONOCHROME2, in RLE Lossless
    /// (1.2.840.10008.1.2.5, encapsulated pixel data: an empty basic offset table and one
    /// fragment holding the RLE frame) into `dir` as `rle-<series>-00001.dcm`.
    pub fn rle_image(
        &mut self,
        dir: &Path,
        opts: &RleOptions,
    ) -> Result<GeneratedFile, StudyError> {
        if opts.rows < 8 || opts.columns < 8 {
            return Err(StudyError::InvalidOption(format!(
                "RLE image needs at least 8x8 pixels, got {}x{}",
                opts.columns, opts.rows
            )));
        }
        create_dir(dir)?;
        let series = self.next_series();
        let sop_instance_uid = self.new_uid();
        let mut obj = self.base_object(
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            &sop_instance_uid,
            "OT",
            &series,
            "Synthetic scanned document (RLE)",
            1,
        );
        put_str(&mut obj, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY");
        put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
        put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        put_grayscale_pixel_module(&mut obj, opts.rows, opts.columns, 8, 8);
        let pixels = self.document_pixels(opts);
        let frame = rle_encode_frame(&pixels, usize::from(opts.columns));
        obj.put(dicom_core::DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PixelFragmentSequence::new(Vec::<u32>::new(), vec![frame]),
        ));
        let path = dir.join(format!("rle-{:03}-00001.dcm", series.number));
        write_part10(obj, uids::RLE_LOSSLESS, &path)
    }

    /// A "scanned form": white page, black text-like bars, a grey header band and a little
    /// noise, compressible like real secondary captures.
    fn document_pixels(&mut self, opts: &RleOptions) -> Vec<u8> {
        let rng = self.rng();
        let mut out = Vec::with_capacity(usize::from(opts.rows) * usize::from(opts.columns));
        for y in 0..opts.rows {
            let text_line = (y / 6) % 3 == 0 && y > opts.rows / 8;
            for x in 0..opts.columns {
                let v = if y < opts.rows / 10 {
                    128
                } else if text_line && (x / 5) % 4 != 3 && x > 20 && x < opts.columns - 20 {
                    16
                } else if rng.u8(..) < 4 {
                    200
                } else {
                    240
                };
                out.push(v);
            }
        }
        out
    }
}

/// Encodes one 8-bit single-sample frame as an RLE Lossless frame (PS3.5 G.3): a 64-byte header
/// (one segment) followed by the PackBits-encoded segment, each row encoded separately, padded
/// to an even length.
pub fn rle_encode_frame(pixels: &[u8], columns: usize) -> Vec<u8> {
    let mut segment = Vec::with_capacity(pixels.len() / 2);
    for row in pixels.chunks(columns.max(1)) {
        packbits_row(row, &mut segment);
    }
    if segment.len() % 2 == 1 {
        segment.push(0x80); // no-op byte as padding
    }
    let mut frame = Vec::with_capacity(64 + segment.len());
    frame.extend_from_slice(&1_u32.to_le_bytes());
    frame.extend_from_slice(&64_u32.to_le_bytes());
    frame.extend_from_slice(&[0_u8; 56]);
    frame.extend_from_slice(&segment);
    frame
}

/// PackBits of one row: replicate runs (2..=128 equal bytes) and literal runs (1..=128 bytes).
fn packbits_row(row: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < row.len() {
        let run = run_length(&row[i..]);
        if run >= 2 {
            out.push((257 - run) as u8);
            out.push(row[i]);
            i += run;
            continue;
        }
        // Literal: extend until a run of 3 or more starts, or 128 bytes.
        let start = i;
        while i < row.len() && i - start < 128 {
            if run_length(&row[i..]) >= 3 {
                break;
            }
            i += 1;
        }
        out.push((i - start - 1) as u8);
        out.extend_from_slice(&row[start..i]);
    }
}

fn run_length(bytes: &[u8]) -> usize {
    let first = bytes[0];
    bytes.iter().take(128).take_while(|&&b| b == first).count()
}

#[cfg(test)]
pub(crate) fn rle_decode_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let segments = u32::from_le_bytes(frame.get(0..4)?.try_into().ok()?);
    if segments != 1 {
        return None;
    }
    let offset = u32::from_le_bytes(frame.get(4..8)?.try_into().ok()?) as usize;
    let data = frame.get(offset..)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let n = data[i] as i8;
        i += 1;
        if n >= 0 {
            let len = n as usize + 1;
            out.extend_from_slice(data.get(i..i + len)?);
            i += len;
        } else if n != -128 {
            let len = (1 - i32::from(n)) as usize;
            let b = *data.get(i)?;
            out.extend(std::iter::repeat_n(b, len));
            i += 1;
        }
    }
    Some(out)
}
