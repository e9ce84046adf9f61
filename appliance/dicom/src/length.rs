//! Value length fields: the one place a value's byte count becomes its 16- or 32-bit length.
//!
//! Every value we encode is bounded before it gets here — command fields and meta header values
//! are UIDs (≤ 64 bytes) and AE titles (≤ 16), rule values are checked against their VR's maximum
//! length by `medgate_config::tag::check_value`, PDV items are at most one PDU. A longer value
//! is a bug: it saturates (and trips a debug assertion) instead of wrapping into a length that
//! would make a peer read the wrong bytes as the next element.

/// The 32-bit length field of a value of `n` bytes (never 0xFFFFFFFF, which means "undefined").
pub fn len32(n: usize) -> u32 {
    debug_assert!(n < 0xFFFF_FFFF, "value of {n} bytes has no 32-bit length");
    u32::try_from(n).unwrap_or(u32::MAX).min(0xFFFF_FFFE)
}

/// The 16-bit length field of a short-VR value of `n` bytes.
pub fn len16(n: usize) -> u16 {
    debug_assert!(n <= 0xFFFF, "value of {n} bytes has no 16-bit length");
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_exact_when_they_fit() {
        assert_eq!(len32(0), 0);
        assert_eq!(len32(131_072), 131_072);
        assert_eq!(len16(64), 64);
        assert_eq!(len16(0xFFFF), 0xFFFF);
    }
}
