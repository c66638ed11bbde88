//! Batches written by another implementation (kafka-python 3.0.12 and its codec libraries,
//! see `fixtures/kafka_python.py`): the reader must decode framing it did not write, such as
//! xerial snappy from python-snappy and lz4 frames with linked blocks, and a batch read that
//! way must survive a rewrite in its own codec.

use std::borrow::Cow;

use vltava_record::{
    check_compressed, read_records, validate, BatchAttributes, BatchBuilder, BatchHeader,
    Compression, Header, Record,
};

const FIXTURES: [(&str, &[u8], Compression); 5] = [
    (
        "none",
        include_bytes!("fixtures/kafka_python_none.bin"),
        Compression::None,
    ),
    (
        "gzip",
        include_bytes!("fixtures/kafka_python_gzip.bin"),
        Compression::Gzip,
    ),
    (
        "snappy",
        include_bytes!("fixtures/kafka_python_snappy.bin"),
        Compression::Snappy,
    ),
    (
        "lz4",
        include_bytes!("fixtures/kafka_python_lz4.bin"),
        Compression::Lz4,
    ),
    (
        "zstd",
        include_bytes!("fixtures/kafka_python_zstd.bin"),
        Compression::Zstd,
    ),
];

fn expected() -> Vec<Record<'static>> {
    let owned = |b: &[u8]| Some(Cow::Owned(b.to_vec()));
    vec![
        Record {
            offset_delta: 0,
            timestamp_delta: 0,
            key: owned(b"key-0"),
            value: owned(&b"value-".repeat(50)),
            headers: vec![],
        },
        Record {
            offset_delta: 1,
            timestamp_delta: 5,
            key: None,
            value: owned(&b"value-".repeat(40)),
            headers: vec![
                Header::new(b"h1", Some(b"v1")).into_owned(),
                Header::new(b"h2", None).into_owned(),
            ],
        },
        Record {
            offset_delta: 2,
            timestamp_delta: -1,
            key: owned(b"key-2"),
            value: None,
            headers: vec![],
        },
    ]
}

#[test]
fn batches_from_kafka_python_read_and_rewrite() {
    for (name, batch, codec) in FIXTURES {
        validate(batch, usize::MAX).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_compressed(batch, 1 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
        let h = BatchHeader::parse(batch).unwrap();
        assert_eq!(h.compression(), codec, "{name}");
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (1000, 3, 42)
        );
        let records: Vec<_> = read_records(batch, 1 << 20)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(records, expected(), "{name}");

        // Rewritten as compaction would: same attributes, same codec, same records.
        let mut b = BatchBuilder::new(BatchAttributes {
            base_offset: h.base_offset,
            partition_leader_epoch: h.partition_leader_epoch,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            transactional: h.is_transactional(),
            control: h.is_control(),
            log_append_time_ms: h.is_log_append_time().then_some(h.max_timestamp),
            compression: h.compression(),
        });
        for r in &records {
            b.append_record(h.base_timestamp, r);
        }
        let rewritten = b.finish();
        validate(&rewritten, usize::MAX).unwrap();
        let h2 = BatchHeader::parse(&rewritten).unwrap();
        assert_eq!(
            (h2.base_timestamp, h2.max_timestamp, h2.last_offset_delta),
            (h.base_timestamp, h.max_timestamp, h.last_offset_delta),
            "{name}"
        );
        let again: Vec<_> = read_records(&rewritten, 1 << 20)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(again, records, "{name}");
    }
}
