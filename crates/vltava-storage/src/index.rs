//! Sparse offset and time indexes in Kafka's file formats.
//!
//! `.index`: 8-byte entries `(relative offset u32, file position u32)`.
//! `.timeindex`: 12-byte entries `(max timestamp so far i64, relative offset u32)`.
//! Both are kept in memory (they are small: one entry per `index.interval.bytes`) and written
//! to their files before the log is fsynced and when its segment is sealed; the files are only
//! trusted after a check on load.

/// One offset-index entry: the batch starting at or before `offset` is at byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time-index entry: all records before `relative_offset` have timestamps `<= timestamp`
/// is *not* implied; it records the max timestamp seen when the batch at `relative_offset` was
/// appended, as Kafka does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

pub const OFFSET_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    pub entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    /// Parses index bytes; `None` if they are not a valid index for a segment of `segment_len`
    /// bytes (wrong length, positions or offsets not increasing, a position past the end).
    pub fn parse(bytes: &[u8], segment_len: u64) -> Option<Self> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_LEN) {
            return None;
        }
        let mut entries = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_LEN);
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
            let e = OffsetEntry {
                relative_offset: u32::from_be_bytes(chunk[0..4].try_into().ok()?),
                position: u32::from_be_bytes(chunk[4..8].try_into().ok()?),
            };
            if let Some(prev) = entries.last() {
                let prev: &OffsetEntry = prev;
                if e.relative_offset <= prev.relative_offset || e.position <= prev.position {
                    return None;
                }
            }
            if u64::from(e.position) >= segment_len {
                return None;
            }
            entries.push(e);
        }
        Some(Self { entries })
    }

    pub fn encode_entry(e: OffsetEntry) -> [u8; OFFSET_ENTRY_LEN] {
        let mut out = [0u8; OFFSET_ENTRY_LEN];
        out[0..4].copy_from_slice(&e.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&e.position.to_be_bytes());
        out
    }

    /// `entries` in the file's layout, back to back.
    pub fn encode(entries: &[OffsetEntry]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|e| Self::encode_entry(*e))
            .collect()
    }

    /// Position of the last indexed batch that starts at or before `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].position
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    pub entries: Vec<TimeEntry>,
}

impl TimeIndex {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_LEN) {
            return None;
        }
        let mut entries: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_LEN);
        for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
            let e = TimeEntry {
                timestamp: i64::from_be_bytes(chunk[0..8].try_into().ok()?),
                relative_offset: u32::from_be_bytes(chunk[8..12].try_into().ok()?),
            };
            if let Some(prev) = entries.last() {
                if e.timestamp < prev.timestamp || e.relative_offset < prev.relative_offset {
                    return None;
                }
            }
            entries.push(e);
        }
        Some(Self { entries })
    }

    pub fn encode_entry(e: TimeEntry) -> [u8; TIME_ENTRY_LEN] {
        let mut out = [0u8; TIME_ENTRY_LEN];
        out[0..8].copy_from_slice(&e.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&e.relative_offset.to_be_bytes());
        out
    }

    /// `entries` in the file's layout, back to back.
    pub fn encode(entries: &[TimeEntry]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|e| Self::encode_entry(*e))
            .collect()
    }

    /// Relative offset from which to scan for the first record with timestamp `>= ts`: the
    /// entry before the first whose max timestamp reaches `ts`.
    pub fn lookup(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].relative_offset
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn offset_index_round_trips(steps in prop::collection::vec((1u32..1000, 1u32..5000), 0..50)) {
            let mut idx = OffsetIndex::default();
            let mut bytes = Vec::new();
            let (mut off, mut pos) = (0u32, 0u32);
            for (d_off, d_pos) in steps {
                off += d_off; pos += d_pos;
                let e = OffsetEntry { relative_offset: off, position: pos };
                idx.entries.push(e);
                bytes.extend_from_slice(&OffsetIndex::encode_entry(e));
            }
            let parsed = OffsetIndex::parse(&bytes, u64::from(pos) + 1).unwrap();
            prop_assert_eq!(&parsed, &idx);
            for e in &idx.entries {
                prop_assert_eq!(parsed.lookup(e.relative_offset), e.position);
                prop_assert!(parsed.lookup(e.relative_offset + 1) >= e.position);
            }
            // A segment shorter than the last position invalidates the index.
            if !idx.entries.is_empty() {
                prop_assert!(OffsetIndex::parse(&bytes, u64::from(pos)).is_none());
            }
        }

        #[test]
        fn time_index_round_trips(steps in prop::collection::vec((0i64..1000, 0u32..50), 0..50)) {
            let mut idx = TimeIndex::default();
            let mut bytes = Vec::new();
            let (mut ts, mut off) = (0i64, 0u32);
            for (d_ts, d_off) in steps {
                ts += d_ts; off += d_off;
                let e = TimeEntry { timestamp: ts, relative_offset: off };
                idx.entries.push(e);
                bytes.extend_from_slice(&TimeIndex::encode_entry(e));
            }
            prop_assert_eq!(TimeIndex::parse(&bytes).unwrap(), idx);
        }

        #[test]
        fn garbage_index_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..100), len in 0u64..10_000) {
            let _ = OffsetIndex::parse(&bytes, len);
            let _ = TimeIndex::parse(&bytes);
        }
    }
}
