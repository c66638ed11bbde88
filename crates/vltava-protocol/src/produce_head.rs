//! The head of a Produce frame, read before its records: where the records of a request
//! that names one topic and one partition sit in the frame, so a connection can move them
//! from the socket to a log without reading them into memory, and decode everything else
//! with the ordinary decoder from a copy of the frame whose records field is empty.
//!
//! Only the shape the zero-copy path takes is recognised (one topic, one partition, records
//! present); every other frame, and any byte this parser does not expect, is [`Head::Other`]
//! and goes the ordinary way, where the decoder has the last word on what is malformed.

use bytes::{BufMut, Bytes, BytesMut};

/// What the first bytes of a frame body say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The bytes end before the records field: more are needed to say.
    Incomplete,
    /// Not a Produce of one partition's records, or not a shape this parser knows.
    Other,
    Produce(ProduceHead),
}

/// Where one partition's records sit in a Produce frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceHead {
    pub api_version: i16,
    pub correlation_id: i32,
    /// Where the records' length field starts.
    pub length_at: usize,
    /// Where the records' bytes start (just after their length field).
    pub records_at: usize,
    pub records_len: usize,
    /// Bytes after the records: the tagged fields that close a flexible version's partition,
    /// topic and request (none before v9).
    pub tail_len: usize,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// `Err(true)`: the bytes ran out; `Err(false)`: a shape this parser does not take.
type Step<T> = Result<T, bool>;

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Step<&[u8]> {
        let end = self.pos.checked_add(n).ok_or(false)?;
        let s = self.buf.get(self.pos..end).ok_or(true)?;
        self.pos = end;
        Ok(s)
    }

    fn i16(&mut self) -> Step<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Step<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned varint of at most 5 bytes, as Kafka's lengths and tags are.
    fn uvarint(&mut self) -> Step<u32> {
        let mut value = 0u32;
        for i in 0..5 {
            let b = self.take(1)?[0];
            if i == 4 && b > 0x0f {
                return Err(false);
            }
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(false)
    }

    /// A nullable string with an i16 length.
    fn string(&mut self) -> Step<()> {
        let len = self.i16()?;
        if len < -1 {
            return Err(false);
        }
        if len > 0 {
            self.take(len as usize)?;
        }
        Ok(())
    }

    /// A nullable compact string (length + 1, 0 for null).
    fn compact_string(&mut self) -> Step<()> {
        let n = self.uvarint()?;
        if n > 1 {
            self.take(n as usize - 1)?;
        }
        Ok(())
    }

    fn tagged_fields(&mut self) -> Step<()> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.take(size as usize)?;
        }
        Ok(())
    }
}

const PRODUCE: i16 = 0;
const FIRST_FLEXIBLE: i16 = 9;
const FIRST_WITH_TOPIC_ID: i16 = 13;

/// Reads the head of a frame body of `body_len` bytes from its first bytes, `prefix`.
pub fn parse(prefix: &[u8], body_len: usize) -> Head {
    let prefix = &prefix[..prefix.len().min(body_len)];
    match parse_inner(prefix, body_len) {
        Ok(Some(head)) => Head::Produce(head),
        Ok(None) | Err(false) => Head::Other,
        Err(true) => Head::Incomplete,
    }
}

fn parse_inner(buf: &[u8], body_len: usize) -> Step<Option<ProduceHead>> {
    let mut c = Cursor { buf, pos: 0 };
    let api_key = c.i16()?;
    let version = c.i16()?;
    let correlation_id = c.i32()?;
    if api_key != PRODUCE || !(3..=FIRST_WITH_TOPIC_ID).contains(&version) {
        return Ok(None);
    }
    let flexible = version >= FIRST_FLEXIBLE;
    // Request header v1 and v2 both carry the client id with an i16 length.
    c.string()?;
    if flexible {
        c.tagged_fields()?;
    }
    // transactional_id, acks, timeout_ms
    if flexible {
        c.compact_string()?;
    } else {
        c.string()?;
    }
    c.take(6)?;
    let one = |c: &mut Cursor| -> Step<bool> {
        Ok(if flexible {
            c.uvarint()? == 2
        } else {
            c.i32()? == 1
        })
    };
    if !one(&mut c)? {
        return Ok(None);
    }
    if version >= FIRST_WITH_TOPIC_ID {
        c.take(16)?;
    } else if flexible {
        c.compact_string()?;
    } else {
        c.string()?;
    }
    if !one(&mut c)? {
        return Ok(None);
    }
    c.take(4)?; // partition index
    let length_at = c.pos;
    let records_len = if flexible {
        match c.uvarint()? {
            0 => return Ok(None),
            n => n as usize - 1,
        }
    } else {
        match c.i32()? {
            n if n < 0 => return Ok(None),
            n => n as usize,
        }
    };
    let records_at = c.pos;
    let Some(tail_len) = body_len
        .checked_sub(records_at)
        .and_then(|rest| rest.checked_sub(records_len))
    else {
        return Ok(None);
    };
    // Before v9 nothing follows the records; a flexible version ends with three sets of
    // tagged fields, at least one byte each.
    if (!flexible && tail_len != 0) || (flexible && tail_len < 3) {
        return Ok(None);
    }
    Ok(Some(ProduceHead {
        api_version: version,
        correlation_id,
        length_at,
        records_at,
        records_len,
        tail_len,
    }))
}

/// What the fuzz target and the property test check of any body: a head found in it agrees
/// with the decoder. When the body without its records decodes, the whole body decodes to
/// the same request with the records the head located. Panics otherwise.
#[doc(hidden)]
pub fn check_agrees_with_decoder(body: &[u8]) {
    let Head::Produce(h) = parse(body, body.len()) else {
        return;
    };
    let records = &body[h.records_at..h.records_at + h.records_len];
    let tail = &body[h.records_at + h.records_len..];
    let Ok(stripped) = crate::decode_request(h.without_records(body, tail)) else {
        return;
    };
    let full = crate::decode_request(Bytes::copy_from_slice(body))
        .expect("the body decodes when it does without its records");
    let (
        crate::Decoded::Request(sh, crate::Request::Produce(mut sp)),
        crate::Decoded::Request(fh, crate::Request::Produce(fp)),
    ) = (stripped, full)
    else {
        panic!("a produce head in a body that is not a produce request");
    };
    assert_eq!(sh, fh);
    assert_eq!(
        fp.topic_data[0].partition_data[0].records.as_deref(),
        Some(records)
    );
    sp.topic_data[0].partition_data[0].records = fp.topic_data[0].partition_data[0].records.clone();
    assert_eq!(sp, fp);
}

impl ProduceHead {
    /// The frame body with the records field empty: `head` is the body up to the records'
    /// length field (at least), `tail` the bytes after the records.
    pub fn without_records(&self, head: &[u8], tail: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(self.length_at + 4 + tail.len());
        b.put_slice(&head[..self.length_at]);
        if self.api_version >= FIRST_FLEXIBLE {
            b.put_u8(1);
        } else {
            b.put_i32(0);
        }
        b.put_slice(tail);
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use crate::messages::{ProduceRequest, TopicName};
    use crate::{decode_request, encode_request, ApiKey, Decoded, Request, StrBytes};

    fn request(topics: usize, partitions: usize, records: Option<&[u8]>) -> ProduceRequest {
        let mut r = ProduceRequest::default();
        r.transactional_id = Some(StrBytes::from_static_str("txn-1").into());
        r.acks = -1;
        r.timeout_ms = 30_000;
        for t in 0..topics {
            let mut td = TopicProduceData::default();
            td.name = TopicName(StrBytes::from_string(format!("topic-{t}")));
            for p in 0..partitions {
                let mut pd = PartitionProduceData::default();
                pd.index = p as i32;
                pd.records = records.map(Bytes::copy_from_slice);
                td.partition_data.push(pd);
            }
            r.topic_data.push(td);
        }
        r
    }

    fn body(version: i16, r: &ProduceRequest) -> Bytes {
        encode_request(ApiKey::Produce, version, 42, Some("client-a"), r)
            .unwrap()
            .slice(crate::FRAME_PREFIX..)
    }

    fn produce(d: Decoded) -> ProduceRequest {
        match d {
            Decoded::Request(_, Request::Produce(p)) => p,
            other => panic!("not a produce: {other:?}"),
        }
    }

    /// At every version, the head finds exactly the records the decoder finds, and the body
    /// without them decodes to the same request with an empty records field.
    #[test]
    fn finds_the_records_the_decoder_finds_at_every_version() {
        let records: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        for version in 3..=13i16 {
            let b = body(version, &request(1, 1, Some(&records)));
            let Head::Produce(h) = parse(&b, b.len()) else {
                panic!("v{version}: not found");
            };
            assert_eq!(h.api_version, version);
            assert_eq!(h.correlation_id, 42);
            assert_eq!(&b[h.records_at..h.records_at + h.records_len], &records[..]);
            assert_eq!(h.records_at + h.records_len + h.tail_len, b.len());
            // The head alone (no records yet) is enough to find them.
            assert_eq!(parse(&b[..h.records_at], b.len()), Head::Produce(h));
            let tail = &b[h.records_at + h.records_len..];
            let stripped = produce(decode_request(h.without_records(&b, tail)).unwrap());
            let mut full = produce(decode_request(b.clone()).unwrap());
            full.topic_data[0].partition_data[0].records = Some(Bytes::new());
            assert_eq!(stripped, full, "v{version}");
        }
    }

    #[test]
    fn other_shapes_go_the_ordinary_way() {
        for version in [3i16, 8, 9, 12, 13] {
            for r in [
                request(2, 1, Some(b"abc")),
                request(1, 2, Some(b"abc")),
                request(1, 1, None),
                request(0, 0, None),
            ] {
                let b = body(version, &r);
                assert_eq!(parse(&b, b.len()), Head::Other, "v{version}");
            }
        }
        let fetch = encode_request(
            ApiKey::Fetch,
            12,
            1,
            None,
            &crate::messages::FetchRequest::default(),
        )
        .unwrap();
        assert_eq!(parse(&fetch[4..], fetch.len() - 4), Head::Other);
    }

    proptest::proptest! {
        /// Damaged heads: whatever the parser finds, the decoder agrees with.
        #[test]
        fn damaged_heads_never_disagree_with_the_decoder(
            version in 3i16..=13,
            flips in proptest::collection::vec((0usize..80, proptest::prelude::any::<u8>()), 0..4),
            cut in 0usize..8,
        ) {
            let mut b = body(version, &request(1, 1, Some(&[5u8; 40]))).to_vec();
            for (at, v) in flips {
                if at < b.len() {
                    b[at] = v;
                }
            }
            b.truncate(b.len() - cut.min(b.len()));
            check_agrees_with_decoder(&b);
        }
    }

    #[test]
    fn a_short_prefix_is_incomplete_and_a_short_frame_is_other() {
        let b = body(9, &request(1, 1, Some(&[1u8; 100])));
        let Head::Produce(h) = parse(&b, b.len()) else {
            panic!()
        };
        for cut in 0..h.records_at {
            assert_eq!(parse(&b[..cut], b.len()), Head::Incomplete, "cut at {cut}");
        }
        // A frame too short for the records it announces is the decoder's to refuse.
        assert_eq!(parse(&b[..h.records_at], h.records_at + 50), Head::Other);
    }
}
