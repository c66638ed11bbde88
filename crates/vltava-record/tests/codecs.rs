//! Every codec both ways: what `BatchBuilder` writes validates, passes the produce-path
//! check, and reads back as the same records through `read_records`, `BatchRecords::iter`
//! and `record_stream`.

use std::borrow::Cow;

use proptest::prelude::*;
use vltava_record::varint::{put_varint, put_varlong};
use vltava_record::{
    check_compressed, compute_crc, read_records, record_stream, validate, BatchAttributes,
    BatchBuilder, BatchHeader, BatchRecords, Compression, Header, Record, RecordError, RecordMeta,
    RecordProblem, HEADER_LEN,
};

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];
const LIMIT: u64 = 64 << 20;

/// A record to write: offset gap before it, absolute timestamp, fields.
#[derive(Debug, Clone)]
struct Spec {
    gap: i32,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    // Half repetitive, so compressing codecs meet both easy and incompressible input.
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..max),
        (any::<u8>(), 0..max).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0i32..3,
        -1i64..2_000_000_000_000,
        prop::option::of(bytes(32)),
        prop::option::of(bytes(300)),
        prop::collection::vec((bytes(12), prop::option::of(bytes(20))), 0..3),
    )
        .prop_map(|(gap, timestamp, key, value, headers)| Spec {
            gap,
            timestamp,
            key,
            value,
            headers,
        })
}

fn attributes() -> impl Strategy<Value = BatchAttributes> {
    (
        0i64..1 << 40,
        -1i32..100,
        -1i64..1 << 40,
        -1i16..100,
        -1i32..1 << 20,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0i64..2_000_000_000_000),
        0usize..CODECS.len(),
    )
        .prop_map(
            |(bo, ple, pid, epoch, seq, txn, control, lat, codec)| BatchAttributes {
                base_offset: bo,
                partition_leader_epoch: ple,
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: seq,
                transactional: txn,
                control,
                log_append_time_ms: lat,
                compression: CODECS[codec],
            },
        )
}

/// Writes `specs` and returns the batch with the records a reader should see.
fn write(attrs: BatchAttributes, specs: &[Spec]) -> (Vec<u8>, Vec<Record<'static>>) {
    let mut b = BatchBuilder::new(attrs);
    let mut want = Vec::new();
    let mut delta = -1;
    for s in specs {
        delta += 1 + s.gap;
        let headers: Vec<Header<'_>> = s
            .headers
            .iter()
            .map(|(k, v)| Header::new(k, v.as_deref()))
            .collect();
        b.append(
            delta,
            s.timestamp,
            s.key.as_deref(),
            s.value.as_deref(),
            &headers,
        );
        want.push(Record {
            offset_delta: delta,
            timestamp_delta: s.timestamp - specs[0].timestamp,
            key: s.key.clone().map(Cow::Owned),
            value: s.value.clone().map(Cow::Owned),
            headers: headers.into_iter().map(Header::into_owned).collect(),
        });
    }
    assert_eq!(b.len(), specs.len());
    (b.finish(), want)
}

fn check_round_trip(attrs: BatchAttributes, specs: &[Spec]) {
    let (batch, want) = write(attrs, specs);
    let last_delta = want.last().unwrap().offset_delta;

    let v = validate(&batch, usize::MAX).unwrap();
    assert_eq!(v.offset_count, i64::from(last_delta) + 1);
    check_compressed(&batch, LIMIT).unwrap();

    let h = BatchHeader::parse(&batch).unwrap();
    assert_eq!(h.total_len(), batch.len());
    assert_eq!(h.base_offset, attrs.base_offset);
    assert_eq!(h.partition_leader_epoch, attrs.partition_leader_epoch);
    assert_eq!(h.producer_id, attrs.producer_id);
    assert_eq!(h.producer_epoch, attrs.producer_epoch);
    assert_eq!(h.base_sequence, attrs.base_sequence);
    assert_eq!(h.compression(), attrs.compression);
    assert_eq!(h.is_transactional(), attrs.transactional);
    assert_eq!(h.is_control(), attrs.control);
    assert_eq!(h.is_log_append_time(), attrs.log_append_time_ms.is_some());
    assert_eq!(h.record_count as usize, specs.len());
    assert_eq!(h.last_offset_delta, last_delta);
    assert_eq!(h.base_timestamp, specs[0].timestamp);
    let max_ts = specs.iter().map(|s| s.timestamp).max().unwrap();
    assert_eq!(
        h.max_timestamp,
        attrs.log_append_time_ms.unwrap_or(max_ts.max(-1))
    );

    let got: Vec<_> = read_records(&batch, LIMIT)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, want);
    let section = BatchRecords::open(&batch, LIMIT).unwrap();
    let borrowed: Vec<_> = section.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(borrowed, want);
    let metas: Vec<_> = record_stream(&batch, LIMIT)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want_metas: Vec<_> = want
        .iter()
        .map(|r| RecordMeta {
            offset_delta: i64::from(r.offset_delta),
            timestamp_delta: r.timestamp_delta,
            key_is_null: r.key.is_none(),
        })
        .collect();
    assert_eq!(metas, want_metas);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_codec_round_trips(attrs in attributes(), specs in prop::collection::vec(spec(), 1..12)) {
        check_round_trip(attrs, &specs);
    }
}

/// Sections larger than one snappy (32 KiB) or lz4 (64 KiB) block, and than the stream
/// reader's 8 KiB buffer.
#[test]
fn large_sections_span_many_blocks() {
    let mut noise = Vec::with_capacity(300_000);
    let mut x: u32 = 0x9e37_79b9;
    while noise.len() < 300_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let specs = vec![
        Spec {
            gap: 0,
            timestamp: 5,
            key: Some(b"noise".to_vec()),
            value: Some(noise),
            headers: vec![],
        },
        Spec {
            gap: 0,
            timestamp: 6,
            key: None,
            value: Some(vec![b'z'; 200_000]),
            headers: vec![(b"h".to_vec(), Some(vec![1; 70_000]))],
        },
    ];
    for codec in CODECS {
        check_round_trip(
            BatchAttributes {
                compression: codec,
                ..BatchAttributes::default()
            },
            &specs,
        );
    }
}

#[test]
fn compressed_batches_are_smaller_and_keep_the_cap() {
    let value = vec![b'x'; 100_000];
    for codec in &CODECS[1..] {
        let mut b = BatchBuilder::new(BatchAttributes {
            compression: *codec,
            ..BatchAttributes::default()
        });
        b.push(1, None, Some(&value), &[]);
        let batch = b.finish();
        assert!(batch.len() < 10_000, "{codec:?}: {} bytes", batch.len());
        let err = read_records(&batch, 50_000).unwrap_err();
        assert!(
            matches!(err, RecordError::DecompressionBomb { limit: 50_000, .. }),
            "{codec:?}: {err}"
        );
        read_records(&batch, 200_000).unwrap();
    }
}

/// An uncompressed batch around a hand-made records section (the CRC is fixed up, though the
/// reader does not check it).
fn batch_with_section(count: i32, section: &[u8]) -> Vec<u8> {
    let mut b = BatchBuilder::new(BatchAttributes::default());
    b.push(0, None, None, &[]);
    let mut batch = b.finish()[..HEADER_LEN].to_vec();
    batch.extend_from_slice(section);
    let len = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    batch[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// One record from raw fields: `fields` after the length and attributes.
fn raw_record(fields: &[u8], declared_extra: i32) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, 1 + fields.len() as i32 + declared_extra);
    out.push(0);
    out.extend_from_slice(fields);
    out
}

fn first_error(batch: &[u8]) -> RecordError {
    read_records(batch, LIMIT)
        .and_then(|r| r.collect::<Result<Vec<_>, _>>())
        .unwrap_err()
}

#[test]
fn malformed_records_are_named() {
    // ts delta 0, offset delta 0, null key, null value, then `headers`.
    let fields = |headers: &[u8]| {
        let mut f = Vec::new();
        put_varlong(&mut f, 0);
        put_varint(&mut f, 0);
        put_varint(&mut f, -1);
        put_varint(&mut f, -1);
        f.extend_from_slice(headers);
        f
    };
    let no_headers = fields(&[0]);
    let good = raw_record(&no_headers, 0);
    assert_eq!(
        read_records(&batch_with_section(1, &good), LIMIT)
            .unwrap()
            .count(),
        1
    );

    let mut two = good.clone();
    two.extend_from_slice(&good);
    assert_eq!(
        first_error(&batch_with_section(1, &two)),
        RecordError::TrailingBytes { declared: 1 }
    );
    assert!(matches!(
        first_error(&batch_with_section(3, &two)),
        RecordError::Varint { offset, .. } if offset == two.len()
    ));
    assert!(matches!(
        first_error(&batch_with_section(1, &raw_record(&no_headers, 1))),
        RecordError::MalformedRecord {
            index: 0,
            problem: RecordProblem::SizeMismatch { .. }
        } | RecordError::Truncated { .. }
    ));
    let mut padded = raw_record(&no_headers, 1);
    padded.push(0);
    assert_eq!(
        first_error(&batch_with_section(1, &padded)),
        RecordError::MalformedRecord {
            index: 0,
            problem: RecordProblem::SizeMismatch {
                declared: no_headers.len() + 2,
                used: no_headers.len() + 1
            }
        }
    );
    let mut null_key = Vec::new();
    put_varint(&mut null_key, 1);
    put_varint(&mut null_key, -1);
    put_varint(&mut null_key, -1);
    assert_eq!(
        first_error(&batch_with_section(1, &raw_record(&fields(&null_key), 0))),
        RecordError::MalformedRecord {
            index: 0,
            problem: RecordProblem::NullHeaderKey
        }
    );
    let mut negative = Vec::new();
    put_varint(&mut negative, -2);
    assert_eq!(
        first_error(&batch_with_section(1, &raw_record(&fields(&negative), 0))),
        RecordError::MalformedRecord {
            index: 0,
            problem: RecordProblem::NegativeHeaderCount { count: -2 }
        }
    );
    let mut huge_key = Vec::new();
    put_varlong(&mut huge_key, 0);
    put_varint(&mut huge_key, 0);
    put_varint(&mut huge_key, i32::MAX);
    assert!(matches!(
        first_error(&batch_with_section(1, &raw_record(&huge_key, 0))),
        RecordError::MalformedRecord {
            problem: RecordProblem::FieldOverrun { .. },
            ..
        }
    ));
    let mut negative_len = Vec::new();
    put_varint(&mut negative_len, -5);
    assert_eq!(
        first_error(&batch_with_section(1, &negative_len)),
        RecordError::MalformedRecord {
            index: 0,
            problem: RecordProblem::NegativeLength { length: -5 }
        }
    );
}

proptest! {
    #[test]
    fn arbitrary_sections_never_panic(
        section in prop::collection::vec(any::<u8>(), 0..200),
        count in -2i32..6,
        codec in 0usize..CODECS.len(),
    ) {
        let mut batch = batch_with_section(count, &section);
        batch[22] = match CODECS[codec] {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            _ => 4,
        };
        if let Ok(records) = read_records(&batch, 1 << 16) {
            for r in records.take(10) {
                let _ = r;
            }
        }
    }
}
