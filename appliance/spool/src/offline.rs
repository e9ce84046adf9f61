//! Reading a spool's objects without opening it: no index, no lock, nothing written. For tools
//! and tests that look at what a running appliance holds (`medgate-e2e` compares the bytes kept
//! with those the archive received).

use crate::segment_format::{BLOCK, BLOCK_LEN, SegmentHeader};
use crate::segments::SegFile;
use crate::temp::ObjectLocation;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Every object the spool under `data_dir` holds now, by spool id: the files of their own and
/// the live records of the segments whose bytes match their checksum.
pub fn objects(data_dir: &Path) -> std::io::Result<Vec<(u64, ObjectLocation)>> {
    let spool = data_dir.join("spool");
    let mut out = Vec::new();
    let objects = spool.join("objects");
    if objects.is_dir() {
        let files = crate::store::object_files(&objects).map_err(std::io::Error::other)?;
        for (id, (path, len)) in files {
            out.push((
                id,
                ObjectLocation {
                    path,
                    offset: 0,
                    len,
                },
            ));
        }
    }
    if let Ok(segments) = std::fs::read_dir(spool.join("segments")) {
        for entry in segments {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "seg") {
                continue;
            }
            let file = File::open(&path)?;
            let mut head = vec![0u8; BLOCK_LEN];
            if file.read_exact_at(&mut head, 0).is_err() {
                continue;
            }
            let Some(header) = SegmentHeader::decode(&head) else {
                continue;
            };
            let seg = SegFile {
                header,
                file,
                path: path.clone(),
                written: Default::default(),
            };
            for f in seg.walk(BLOCK, &|_| true) {
                if f.intact {
                    out.push((
                        f.header.id,
                        ObjectLocation {
                            path: path.clone(),
                            offset: f.offset + BLOCK,
                            len: f.header.len,
                        },
                    ));
                }
            }
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}
