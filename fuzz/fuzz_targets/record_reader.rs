#![no_main]
//! Every record of a batch, as compaction and transaction markers read them: arbitrary bytes
//! under every codec must give records or an error, within the cap, never a panic; and what
//! reads must write back to a batch that reads the same.

use libfuzzer_sys::fuzz_target;
use vltava_record::{
    read_end_txn_marker, read_records, BatchAttributes, BatchBuilder, BatchHeader, HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER_LEN {
        return;
    }
    let mut batch = data.to_vec();
    // A consistent batch length and magic, so the header parses and the body is reached.
    let len = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    batch[16] = 2;
    let _ = read_end_txn_marker(&batch);
    let Ok(records) = read_records(&batch, 1 << 20) else {
        return;
    };
    let Ok(h) = BatchHeader::parse(&batch) else {
        return;
    };
    let Ok(records) = records.take(100_000).collect::<Result<Vec<_>, _>>() else {
        return;
    };
    if records.is_empty()
        || records
            .windows(2)
            .any(|w| w[0].offset_delta >= w[1].offset_delta)
        || records[0].offset_delta < 0
        || matches!(h.compression(), vltava_record::Compression::Unknown(_))
    {
        return;
    }
    let mut b = BatchBuilder::new(BatchAttributes {
        compression: h.compression(),
        ..BatchAttributes::default()
    });
    for r in &records {
        b.append_record(h.base_timestamp, r);
    }
    let again = b.finish();
    let reread: Vec<_> = read_records(&again, u64::MAX)
        .expect("a written batch opens")
        .collect::<Result<_, _>>()
        .expect("a written batch reads");
    // The rewrite's base timestamp is its first record's, so compare absolute timestamps.
    let h2 = BatchHeader::parse(&again).expect("a written batch parses");
    let absolute = |base: i64, rs: Vec<vltava_record::Record<'_>>| {
        rs.into_iter()
            .map(|mut r| {
                r.timestamp_delta = base.wrapping_add(r.timestamp_delta);
                r.into_owned()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        absolute(h2.base_timestamp, reread),
        absolute(h.base_timestamp, records)
    );
});
