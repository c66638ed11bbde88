//! Kafka's zigzag varints, the one codec for them in the workspace.
//!
//! Records (v2) frame every length, delta and count as a zigzag varint: `varint` for 32-bit
//! fields (at most 5 bytes) and `varlong` for 64-bit ones (at most 10 bytes), as Kafka's
//! `ByteUtils.readVarint`/`readVarlong` read them. Like Kafka, bits past the width of the
//! type in the last allowed byte are dropped rather than refused; a continuation bit on the
//! last allowed byte is an error, so no input makes a decoder loop or read past its bound.

use thiserror::Error;

/// Longest encoding of a 32-bit varint.
pub const MAX_VARINT_LEN: usize = 5;
/// Longest encoding of a 64-bit varlong.
pub const MAX_VARLONG_LEN: usize = 10;

/// What can be wrong with the bytes of one varint.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    #[error("varint truncated after {read} bytes")]
    Truncated { read: usize },
    #[error("varint longer than {max_len} bytes")]
    Overlong { max_len: usize },
}

/// Maps a signed value to an unsigned one so small magnitudes encode in few bytes.
pub fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn zigzag_decode(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// The 32-bit zigzag decode of the low 32 bits of `z`, as Kafka's `readVarint` keeps them.
pub(crate) fn zigzag_decode_32(z: u64) -> i32 {
    let z = z as u32;
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

fn put_unsigned(out: &mut Vec<u8>, mut z: u64) {
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn unsigned_len(z: u64) -> usize {
    // One byte per started group of seven bits, at least one.
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a 32-bit zigzag varint.
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    // Zigzag in 32 bits, as Kafka does: the same bytes as the 64-bit form for every i32.
    put_unsigned(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

/// Appends a 64-bit zigzag varlong.
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, zigzag_encode(v));
}

/// Encoded size of `v` as a varint, for sizing a record before writing it.
pub fn varint_len(v: i32) -> usize {
    unsigned_len(u64::from(((v << 1) ^ (v >> 31)) as u32))
}

pub fn varlong_len(v: i64) -> usize {
    unsigned_len(zigzag_encode(v))
}

/// Decodes the unsigned groups of at most `max_len` bytes drawn from `next`, which returns
/// `Ok(None)` at the end of input. The caller's own errors (a stream's I/O) pass through.
pub(crate) fn decode_unsigned<E: From<VarintError>>(
    max_len: usize,
    mut next: impl FnMut() -> Result<Option<u8>, E>,
) -> Result<(u64, usize), E> {
    let mut z: u64 = 0;
    for i in 0..max_len {
        let byte = next()?.ok_or(VarintError::Truncated { read: i })?;
        // The shift stays below 64: `max_len` is at most 10 and 9 * 7 = 63.
        z |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((z, i + 1));
        }
    }
    Err(VarintError::Overlong { max_len }.into())
}

fn from_slice(buf: &[u8], max_len: usize) -> Result<(u64, usize), VarintError> {
    let mut it = buf.iter().copied();
    decode_unsigned::<VarintError>(max_len, || Ok(it.next()))
}

/// Reads a varint from the start of `buf`: the value and how many bytes it took.
pub fn read_varint(buf: &[u8]) -> Result<(i32, usize), VarintError> {
    let (z, n) = from_slice(buf, MAX_VARINT_LEN)?;
    Ok((zigzag_decode_32(z), n))
}

/// Reads a varlong from the start of `buf`: the value and how many bytes it took.
pub fn read_varlong(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    let (z, n) = from_slice(buf, MAX_VARLONG_LEN)?;
    Ok((zigzag_decode(z), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn varint_bytes(v: i32) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        b
    }

    fn varlong_bytes(v: i64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varlong(&mut b, v);
        b
    }

    #[test]
    fn known_encodings() {
        // Values from Kafka's ByteUtilsTest.
        assert_eq!(varint_bytes(0), [0x00]);
        assert_eq!(varint_bytes(-1), [0x01]);
        assert_eq!(varint_bytes(1), [0x02]);
        assert_eq!(varint_bytes(63), [0x7e]);
        assert_eq!(varint_bytes(-64), [0x7f]);
        assert_eq!(varint_bytes(64), [0x80, 0x01]);
        assert_eq!(varint_bytes(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varint_bytes(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varlong_bytes(i64::MIN).len(), MAX_VARLONG_LEN);
        assert_eq!(varlong_bytes(300), [0xd8, 0x04]);
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(read_varint(&[]), Err(VarintError::Truncated { read: 0 }));
        assert_eq!(
            read_varint(&[0x80, 0x80]),
            Err(VarintError::Truncated { read: 2 })
        );
        assert_eq!(
            read_varint(&[0x80; 6]),
            Err(VarintError::Overlong { max_len: 5 })
        );
        assert_eq!(
            read_varlong(&[0xff; 11]),
            Err(VarintError::Overlong { max_len: 10 })
        );
        // A sixth byte is never read for a varint, even if it would end the number.
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(VarintError::Overlong { max_len: 5 })
        );
    }

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<i32>(), tail in prop::collection::vec(any::<u8>(), 0..4)) {
            let mut b = varint_bytes(v);
            prop_assert_eq!(b.len(), varint_len(v));
            // The 32-bit encoding is the 64-bit one for the same value, as Kafka relies on.
            prop_assert_eq!(&b, &varlong_bytes(i64::from(v)));
            let n = b.len();
            b.extend_from_slice(&tail);
            prop_assert_eq!(read_varint(&b), Ok((v, n)));
        }

        #[test]
        fn varlong_round_trips(v in any::<i64>(), tail in prop::collection::vec(any::<u8>(), 0..4)) {
            let mut b = varlong_bytes(v);
            prop_assert_eq!(b.len(), varlong_len(v));
            prop_assert_eq!(zigzag_decode(zigzag_encode(v)), v);
            let n = b.len();
            b.extend_from_slice(&tail);
            prop_assert_eq!(read_varlong(&b), Ok((v, n)));
        }

        #[test]
        fn every_proper_prefix_is_truncated(v in any::<i64>()) {
            let b = varlong_bytes(v);
            for cut in 0..b.len() {
                prop_assert_eq!(read_varlong(&b[..cut]), Err(VarintError::Truncated { read: cut }));
            }
        }

        #[test]
        fn overlong_is_refused(extra in 1usize..8, v in any::<i64>()) {
            // Padding with continuation groups past the limit must fail, not wrap or loop.
            let mut b = vec![0x80u8; MAX_VARLONG_LEN + extra - 1];
            b.extend_from_slice(&varlong_bytes(v));
            prop_assert_eq!(read_varlong(&b), Err(VarintError::Overlong { max_len: MAX_VARLONG_LEN }));
            let mut b = vec![0x80u8; MAX_VARINT_LEN];
            b.push(0);
            prop_assert_eq!(read_varint(&b), Err(VarintError::Overlong { max_len: MAX_VARINT_LEN }));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..16)) {
            if let Ok((_, n)) = read_varint(&b) {
                prop_assert!((1..=MAX_VARINT_LEN).contains(&n));
            }
            if let Ok((_, n)) = read_varlong(&b) {
                prop_assert!((1..=MAX_VARLONG_LEN).contains(&n));
            }
        }
    }
}
