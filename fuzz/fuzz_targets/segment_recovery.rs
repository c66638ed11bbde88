//! Whatever bytes a crash or a bad disk leaves in a segment and its indexes, opening the log
//! recovers a valid prefix: no panic, dense offsets, and the log takes new writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vltava_storage::{Log, LogConfig, OpenOptions};
use vltava_types::{LeaderEpoch, Offset};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    // First byte picks how much goes to the index files; the rest is the segment.
    let (split, rest) = data.split_first().map_or((0, data), |(s, r)| (*s as usize, r));
    let cut = split.min(rest.len());
    let (index, log) = rest.split_at(cut);
    std::fs::write(dir.path().join("00000000000000000000.log"), log).unwrap();
    std::fs::write(dir.path().join("00000000000000000000.index"), index).unwrap();
    std::fs::write(dir.path().join("00000000000000000000.timeindex"), index).unwrap();
    for clean in [false, true] {
        let opts = OpenOptions {
            clean_shutdown: clean,
            recovery_point: Offset::new(0),
            log_start_offset: Offset::new(0),
        };
        let Ok(log) = Log::open(dir.path(), LogConfig::default(), opts, 0) else { return };
        let end = log.offsets().log_end_offset;
        let mut offset = log.offsets().log_start_offset;
        while let Ok(r) = log.read(offset, Offset::new(i64::MAX), 1 << 16, true) {
            if r.records.is_empty() {
                break;
            }
            let mut last = offset;
            for b in vltava_record::Batches::new(&r.records) {
                let (h, _) = b.expect("recovered log holds valid batches");
                last = Offset::new(h.next_offset());
            }
            assert!(last > offset, "reads make progress");
            offset = last;
        }
        assert!(offset <= end);
    }
    let opts = OpenOptions {
        clean_shutdown: false,
        recovery_point: Offset::new(0),
        log_start_offset: Offset::new(0),
    };
    let log = Log::open(dir.path(), LogConfig::default(), opts, 0).unwrap();
    let batch = vltava_record::build_batch(0, &[(None, Some(b"v"), 1)]);
    log.append_as_leader(&batch, LeaderEpoch::new(0), 0, vltava_storage::accept_all).unwrap();
});
