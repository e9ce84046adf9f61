//! The payload of a `root_image` bundle (docs/ota.md, "Slots"): one stream that holds a new root
//! file system for the image's A/B partitions, its dm-verity hash tree, and the two signed UKIs
//! that boot it — one naming slot A's partitions (`medgate.slot=A`), one naming slot B's. The
//! root and its hash tree are the same bytes for either slot (the UKI's command line names the
//! partitions by PARTUUID and carries the root hash), so one bundle installs into whichever slot
//! is inactive and no signed byte is changed on the device (Secure Boot signatures stay whole).
//!
//! ```text
//! offset  bytes  what
//! 0       8      magic "MGROOTV1"
//! 8       8      root file system length R (big endian)
//! 16      8      verity hash tree length V
//! 24      8      UKI for slot A length UA
//! 32      8      UKI for slot B length UB
//! 40      R      root file system (ext4 image)
//! 40+R    V      verity hash tree (veritysetup format, superblock included)
//! …       UA     UKI A, then UB bytes of UKI B
//! ```
//!
//! `os-image/build --root-payload OUT` writes it. Pure: the header's parse and its checks.

/// The magic at the start of a root-image payload.
pub const MAGIC: &[u8; 8] = b"MGROOTV1";
/// The header's length.
pub const HEADER_LEN: usize = 40;
/// The largest UKI accepted (a kernel and an initrd: ~50 MB today).
pub const MAX_UKI: u64 = 256 << 20;

/// A slot of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Partitions `root-A`, `root-A-verity`.
    A,
    /// Partitions `root-B`, `root-B-verity`.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
    /// `A` or `B`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Slot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" => Ok(Self::A),
            "B" => Ok(Self::B),
            _ => Err(format!("{s:?} is not a slot; the slots are A and B")),
        }
    }
}

/// The parts' lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Root file system bytes.
    pub root: u64,
    /// Verity hash tree bytes.
    pub verity: u64,
    /// UKI for slot A bytes.
    pub uki_a: u64,
    /// UKI for slot B bytes.
    pub uki_b: u64,
}

/// A header that does not describe a root-image payload this device can install.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a root-image payload.
    #[error(
        "the payload does not start with {MAGIC:?}: it is not a root image made by os-image/build --root-payload"
    )]
    Magic,
    /// The parts do not add up to the payload.
    #[error(
        "the payload header's parts add up to {parts} bytes after the header, the payload has {payload}: the payload was not made by os-image/build --root-payload"
    )]
    Length {
        /// Sum of the parts.
        parts: u128,
        /// The payload's length after the header.
        payload: u64,
    },
    /// A part is empty or larger than where it goes.
    #[error(
        "the payload's {what} is {size} bytes, {limit} fit: build the root image for this device's partition layout"
    )]
    TooLarge {
        /// Which part.
        what: &'static str,
        /// Its length.
        size: u64,
        /// What fits.
        limit: u64,
    },
    /// A part is empty.
    #[error("the payload's {0} is empty: the root image is incomplete")]
    Empty(&'static str),
}

impl Header {
    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        for (i, v) in [self.root, self.verity, self.uki_a, self.uki_b]
            .into_iter()
            .enumerate()
        {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_be_bytes());
        }
        b
    }

    /// Parses the header of a payload whose length after the header is `rest`.
    pub fn parse(b: &[u8; HEADER_LEN], rest: u64) -> Result<Self, HeaderError> {
        if &b[..8] != MAGIC {
            return Err(HeaderError::Magic);
        }
        let mut v = [0u64; 4];
        for (i, x) in v.iter_mut().enumerate() {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[8 + 8 * i..16 + 8 * i]);
            *x = u64::from_be_bytes(n);
        }
        let h = Self {
            root: v[0],
            verity: v[1],
            uki_a: v[2],
            uki_b: v[3],
        };
        let parts: u128 = v.iter().map(|&x| u128::from(x)).sum();
        if parts != u128::from(rest) {
            return Err(HeaderError::Length {
                parts,
                payload: rest,
            });
        }
        for (what, size) in [
            ("root file system", h.root),
            ("verity hash tree", h.verity),
            ("UKI for slot A", h.uki_a),
            ("UKI for slot B", h.uki_b),
        ] {
            if size == 0 {
                return Err(HeaderError::Empty(what));
            }
        }
        for (what, size) in [("UKI for slot A", h.uki_a), ("UKI for slot B", h.uki_b)] {
            if size > MAX_UKI {
                return Err(HeaderError::TooLarge {
                    what,
                    size,
                    limit: MAX_UKI,
                });
            }
        }
        Ok(h)
    }

    /// Checks the root and hash tree fit the partitions (`root_limit`, `verity_limit` bytes).
    pub fn fits(&self, root_limit: u64, verity_limit: u64) -> Result<(), HeaderError> {
        if self.root > root_limit {
            return Err(HeaderError::TooLarge {
                what: "root file system",
                size: self.root,
                limit: root_limit,
            });
        }
        if self.verity > verity_limit {
            return Err(HeaderError::TooLarge {
                what: "verity hash tree",
                size: self.verity,
                limit: verity_limit,
            });
        }
        Ok(())
    }

    /// The UKI length for `slot`.
    pub fn uki(&self, slot: Slot) -> u64 {
        match slot {
            Slot::A => self.uki_a,
            Slot::B => self.uki_b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips_and_is_checked() {
        let h = Header {
            root: 4096,
            verity: 512,
            uki_a: 10,
            uki_b: 11,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..8], b"MGROOTV1");
        assert_eq!(Header::parse(&b, 4096 + 512 + 21), Ok(h));
        assert_eq!(
            Header::parse(&b, 4096),
            Err(HeaderError::Length {
                parts: 4096 + 512 + 21,
                payload: 4096
            })
        );
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Header::parse(&bad, 4629), Err(HeaderError::Magic));
        let empty = Header { uki_b: 0, ..h };
        assert_eq!(
            Header::parse(&empty.to_bytes(), 4618),
            Err(HeaderError::Empty("UKI for slot B"))
        );
        let huge = Header {
            root: u64::MAX,
            ..h
        };
        assert!(matches!(
            Header::parse(&huge.to_bytes(), 100),
            Err(HeaderError::Length { .. })
        ));
        assert!(h.fits(4096, 512).is_ok());
        assert_eq!(
            h.fits(4095, 512).expect_err("too big").to_string(),
            "the payload's root file system is 4096 bytes, 4095 fit: build the root image for this device's partition layout"
        );
        assert_eq!((h.uki(Slot::A), h.uki(Slot::B)), (10, 11));
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!("B".parse::<Slot>(), Ok(Slot::B));
        assert!("C".parse::<Slot>().is_err());
    }
}
