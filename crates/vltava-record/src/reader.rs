//! Reading every field of every record of a batch, whatever its codec.
//!
//! For the places that must rewrite or interpret records (compaction, transaction markers,
//! the coordinator's replay), not for produce or fetch: a compressed batch is decompressed
//! whole, within a cap on decompressed bytes, so a hostile batch costs at most the cap in
//! memory. Uncompressed records borrow from the batch; records of a compressed batch borrow
//! from the decompressed section ([`BatchRecords::iter`]) or are handed out owned
//! ([`Records`]), so callers never look at the codec. The record layout is checked as Kafka's
//! `DefaultRecord.readFrom` checks it: each record's fields fill exactly its declared size,
//! and the batch holds exactly its declared number of records. The CRC is the caller's
//! business ([`crate::validate`]): stored batches were checked when they were appended.

use std::borrow::Cow;

use thiserror::Error;

use crate::varint::{self, VarintError};
use crate::{compression, BatchHeader, Compression, RecordError, HEADER_LEN};

/// One record header. Kafka's header key is a string; it is kept as the bytes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: Cow<'a, [u8]>,
    pub value: Option<Cow<'a, [u8]>>,
}

impl<'a> Header<'a> {
    pub fn new(key: &'a [u8], value: Option<&'a [u8]>) -> Self {
        Self {
            key: Cow::Borrowed(key),
            value: value.map(Cow::Borrowed),
        }
    }

    pub fn into_owned(self) -> Header<'static> {
        Header {
            key: Cow::Owned(self.key.into_owned()),
            value: self.value.map(|v| Cow::Owned(v.into_owned())),
        }
    }
}

/// One record of a batch. Deltas are relative to the batch's `baseOffset` and
/// `baseTimestamp`; the per-record attributes byte is unused by Kafka and not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<Cow<'a, [u8]>>,
    pub value: Option<Cow<'a, [u8]>>,
    pub headers: Vec<Header<'a>>,
}

impl Record<'_> {
    pub fn into_owned(self) -> Record<'static> {
        Record {
            offset_delta: self.offset_delta,
            timestamp_delta: self.timestamp_delta,
            key: self.key.map(|k| Cow::Owned(k.into_owned())),
            value: self.value.map(|v| Cow::Owned(v.into_owned())),
            headers: self.headers.into_iter().map(Header::into_owned).collect(),
        }
    }
}

/// What is wrong inside one record.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordProblem {
    #[error("negative record length {length}")]
    NegativeLength { length: i32 },
    #[error("a field at byte {offset} needs {need} bytes past the record's end")]
    FieldOverrun { offset: usize, need: usize },
    #[error("negative header count {count}")]
    NegativeHeaderCount { count: i32 },
    #[error("a header has a null key")]
    NullHeaderKey,
    #[error("record declares {declared} bytes but its fields take {used}")]
    SizeMismatch { declared: usize, used: usize },
}

/// The records section of one batch, decompressed if need be.
#[derive(Debug)]
pub struct BatchRecords<'a> {
    header: BatchHeader,
    body: Cow<'a, [u8]>,
}

impl<'a> BatchRecords<'a> {
    /// Opens the batch at the start of `batch`, decompressing its records section; fails once
    /// more than `limit` decompressed bytes would be needed. Uncompressed batches are
    /// borrowed and not limited: they cannot expand.
    pub fn open(batch: &'a [u8], limit: u64) -> Result<Self, RecordError> {
        let header = BatchHeader::parse(batch)?;
        let end = header.total_len();
        if batch.len() < end {
            return Err(RecordError::Truncated {
                offset: 0,
                need: end,
                have: batch.len(),
            });
        }
        if header.record_count < 0 {
            return Err(RecordError::InvalidRecordCount {
                count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        let section = &batch[HEADER_LEN..end];
        let body = match header.compression() {
            Compression::None => Cow::Borrowed(section),
            codec => Cow::Owned(compression::decompress(section, codec, limit)?),
        };
        Ok(Self { header, body })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The records, borrowed from the batch or from the decompressed section.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter::new(&self.body, self.header.record_count)
    }
}

impl<'a> IntoIterator for BatchRecords<'a> {
    type Item = Result<Record<'a>, RecordError>;
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        Records {
            state: Cursor::new(self.header.record_count),
            header: self.header,
            body: self.body,
        }
    }
}

/// Reads every record of the batch at the start of `batch`, whatever its codec: borrowed
/// when the batch is uncompressed, owned when it had to be decompressed.
pub fn read_records(batch: &[u8], limit: u64) -> Result<Records<'_>, RecordError> {
    Ok(BatchRecords::open(batch, limit)?.into_iter())
}

/// Records of a batch that owns or borrows its records section; see [`read_records`].
#[derive(Debug)]
pub struct Records<'a> {
    header: BatchHeader,
    body: Cow<'a, [u8]>,
    state: Cursor,
}

impl Records<'_> {
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.body {
            Cow::Borrowed(body) => self.state.step(body),
            Cow::Owned(ref body) => self.state.step(body).map(|r| r.map(Record::into_owned)),
        }
    }
}

/// Records parsed from a records section (already decompressed), borrowed from it. Yields
/// exactly `count` records, then an error if bytes are left; the first error ends it.
#[derive(Debug, Clone)]
pub struct RecordIter<'b> {
    body: &'b [u8],
    state: Cursor,
}

impl<'b> RecordIter<'b> {
    pub fn new(body: &'b [u8], count: i32) -> Self {
        Self {
            body,
            state: Cursor::new(count),
        }
    }
}

impl<'b> Iterator for RecordIter<'b> {
    type Item = Result<Record<'b>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.state.step(self.body)
    }
}

/// Where a walk over a records section stands; shared by the borrowing and owning iterators.
#[derive(Debug, Clone)]
struct Cursor {
    pos: usize,
    index: i32,
    count: i32,
    done: bool,
}

impl Cursor {
    fn new(count: i32) -> Self {
        Self {
            pos: 0,
            index: 0,
            count: count.max(0),
            done: false,
        }
    }

    fn step<'b>(&mut self, body: &'b [u8]) -> Option<Result<Record<'b>, RecordError>> {
        if self.done {
            return None;
        }
        if self.index >= self.count {
            self.done = true;
            return (self.pos < body.len()).then_some(Err(RecordError::TrailingBytes {
                declared: self.count,
            }));
        }
        let r = parse_record(body, &mut self.pos, self.index);
        self.index += 1;
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

/// Reads the fields of one record, bounded by the record's own length.
struct Fields<'b> {
    rec: &'b [u8],
    pos: usize,
    index: i32,
}

impl<'b> Fields<'b> {
    fn malformed(&self, problem: RecordProblem) -> RecordError {
        RecordError::MalformedRecord {
            index: self.index,
            problem,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], RecordError> {
        let out = self
            .pos
            .checked_add(n)
            .and_then(|end| self.rec.get(self.pos..end))
            .ok_or_else(|| {
                self.malformed(RecordProblem::FieldOverrun {
                    offset: self.pos,
                    need: n,
                })
            })?;
        self.pos += n;
        Ok(out)
    }

    fn varint(&mut self) -> Result<i32, RecordError> {
        let (v, n) = varint::read_varint(&self.rec[self.pos..]).map_err(|e| self.varint_err(e))?;
        self.pos += n;
        Ok(v)
    }

    fn varlong(&mut self) -> Result<i64, RecordError> {
        let (v, n) = varint::read_varlong(&self.rec[self.pos..]).map_err(|e| self.varint_err(e))?;
        self.pos += n;
        Ok(v)
    }

    fn varint_err(&self, source: VarintError) -> RecordError {
        RecordError::Varint {
            offset: self.pos,
            source,
        }
    }

    /// A length-prefixed byte string; any negative length is null, as Kafka reads it.
    fn bytes(&mut self) -> Result<Option<&'b [u8]>, RecordError> {
        let len = self.varint()?;
        match usize::try_from(len) {
            Ok(n) => self.take(n).map(Some),
            Err(_) => Ok(None),
        }
    }
}

fn parse_record<'b>(
    body: &'b [u8],
    pos: &mut usize,
    index: i32,
) -> Result<Record<'b>, RecordError> {
    let start = *pos;
    let (length, n) =
        varint::read_varint(&body[start..]).map_err(|source| RecordError::Varint {
            offset: start,
            source,
        })?;
    let declared = usize::try_from(length).map_err(|_| RecordError::MalformedRecord {
        index,
        problem: RecordProblem::NegativeLength { length },
    })?;
    let rec_start = start + n;
    let rec_end = rec_start
        .checked_add(declared)
        .filter(|end| *end <= body.len())
        .ok_or(RecordError::Truncated {
            offset: rec_start,
            need: declared,
            have: body.len() - rec_start,
        })?;
    let mut f = Fields {
        rec: &body[..rec_end],
        pos: rec_start,
        index,
    };
    f.take(1)?; // attributes: unused
    let timestamp_delta = f.varlong()?;
    let offset_delta = f.varint()?;
    let key = f.bytes()?.map(Cow::Borrowed);
    let value = f.bytes()?.map(Cow::Borrowed);
    let count = f.varint()?;
    if count < 0 {
        return Err(f.malformed(RecordProblem::NegativeHeaderCount { count }));
    }
    // No capacity from `count`: it is untrusted, and every header takes at least two bytes
    // of the record, so the loop is bounded by the record's length.
    let mut headers = Vec::new();
    for _ in 0..count {
        let key = f
            .bytes()?
            .ok_or_else(|| f.malformed(RecordProblem::NullHeaderKey))?;
        let value = f.bytes()?;
        headers.push(Header::new(key, value));
    }
    if f.pos != rec_end {
        return Err(f.malformed(RecordProblem::SizeMismatch {
            declared,
            used: f.pos - rec_start,
        }));
    }
    *pos = rec_end;
    Ok(Record {
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers,
    })
}
