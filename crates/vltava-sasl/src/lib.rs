//! SASL's math, shared by the broker (which checks proofs) and by every client of ours (the
//! broker reaching its peers, the CLI): SCRAM-SHA-256 and SCRAM-SHA-512 as RFC 5802 and
//! RFC 7677 define them and Kafka uses them (no channel binding, 4096 to 16384 iterations).
//! Pure computation with `ring`, the crate rustls already brings; no sockets.

pub mod scram;

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
