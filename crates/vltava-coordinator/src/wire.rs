//! The primitive types of Kafka's generated message code, as `__consumer_offsets` keys and
//! values use them: big-endian integers, UUIDs, int16-prefixed strings and int32-prefixed
//! bytes and arrays (non-flexible versions), and in flexible versions unsigned-varint
//! "compact" lengths plus tagged fields. The reader checks every length against the bytes
//! left before it allocates, because these bytes come from disk.

use uuid::Uuid;

use crate::records::RecordError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, need: usize) -> Result<&'a [u8], RecordError> {
        let have = self.buf.len() - self.pos;
        if need > have {
            return Err(RecordError::UnexpectedEof {
                offset: self.pos,
                need,
                have,
            });
        }
        let s = &self.buf[self.pos..self.pos + need];
        self.pos += need;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    pub(crate) fn i8(&mut self) -> Result<i8, RecordError> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    pub(crate) fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub(crate) fn uuid(&mut self) -> Result<Uuid, RecordError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    pub(crate) fn unsigned_varint(&mut self) -> Result<u32, RecordError> {
        let start = self.pos;
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.array::<1>()?[0];
            value |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::InvalidVarint { offset: start })
    }

    /// A length that must be -1 (null) or fit in the bytes left, each element taking at
    /// least `min_each` bytes; anything else is corrupt, and refusing it bounds allocation.
    fn checked_len(&mut self, raw: i64, min_each: usize) -> Result<Option<usize>, RecordError> {
        if raw == -1 {
            return Ok(None);
        }
        let left = self.buf.len() - self.pos;
        match usize::try_from(raw) {
            Ok(n) if n.saturating_mul(min_each) <= left => Ok(Some(n)),
            _ => Err(RecordError::InvalidLength {
                offset: self.pos,
                length: raw,
            }),
        }
    }

    fn utf8(&mut self, n: usize) -> Result<String, RecordError> {
        let offset = self.pos;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::InvalidUtf8 { offset })
    }

    fn required<T>(&self, v: Option<T>) -> Result<T, RecordError> {
        v.ok_or(RecordError::UnexpectedNull { offset: self.pos })
    }

    /// `string`/`nullable string` of a non-flexible version: int16 length, -1 for null.
    pub(crate) fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let raw = self.i16()?;
        match self.checked_len(raw.into(), 1)? {
            Some(n) => self.utf8(n).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn string(&mut self) -> Result<String, RecordError> {
        let s = self.nullable_string()?;
        self.required(s)
    }

    /// `bytes` of a non-flexible version: int32 length.
    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, RecordError> {
        let raw = self.i32()?;
        let n = self.checked_len(raw.into(), 1)?;
        let n = self.required(n)?;
        Ok(self.take(n)?.to_vec())
    }

    /// Element count of a non-flexible array: int32, never null here.
    pub(crate) fn array_len(&mut self, min_each: usize) -> Result<usize, RecordError> {
        let raw = self.i32()?;
        let n = self.checked_len(raw.into(), min_each)?;
        self.required(n)
    }

    /// Compact lengths store length + 1, so that 0 is null.
    fn compact_len(&mut self, min_each: usize) -> Result<Option<usize>, RecordError> {
        let raw = i64::from(self.unsigned_varint()?) - 1;
        self.checked_len(raw, min_each)
    }

    pub(crate) fn compact_nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        match self.compact_len(1)? {
            Some(n) => self.utf8(n).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn compact_string(&mut self) -> Result<String, RecordError> {
        let s = self.compact_nullable_string()?;
        self.required(s)
    }

    pub(crate) fn compact_bytes(&mut self) -> Result<Vec<u8>, RecordError> {
        let n = self.compact_len(1)?;
        let n = self.required(n)?;
        Ok(self.take(n)?.to_vec())
    }

    /// A nullable non-flexible array: int32 count, -1 for null.
    pub(crate) fn nullable_array_len(
        &mut self,
        min_each: usize,
    ) -> Result<Option<usize>, RecordError> {
        let raw = self.i32()?;
        self.checked_len(raw.into(), min_each)
    }

    /// A nullable compact array: count + 1, 0 for null.
    pub(crate) fn compact_nullable_array_len(
        &mut self,
        min_each: usize,
    ) -> Result<Option<usize>, RecordError> {
        self.compact_len(min_each)
    }

    /// `n` raw bytes, for a tagged field's body.
    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        self.take(n)
    }

    pub(crate) fn compact_array_len(&mut self, min_each: usize) -> Result<usize, RecordError> {
        let n = self.compact_len(min_each)?;
        self.required(n)
    }

    /// Skips a tagged-field section: this version uses no tags, and unknown ones are for
    /// newer writers to add without breaking older readers.
    pub(crate) fn skip_tagged_fields(&mut self) -> Result<(), RecordError> {
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            let _tag = self.unsigned_varint()?;
            let size = self.unsigned_varint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
    /// The first length that did not fit its length field. Names come from clients (a
    /// flexible request may carry a group id longer than an int16 string allows), so this
    /// is an error for the caller, not a panic.
    pub(crate) too_long: Option<usize>,
}

impl Writer {
    pub(crate) fn i8(&mut self, v: i8) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn uuid(&mut self, v: Uuid) {
        self.buf.extend_from_slice(v.as_bytes());
    }

    pub(crate) fn unsigned_varint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn fits<T: TryFrom<usize>>(&mut self, n: usize) -> Option<T> {
        let v = T::try_from(n).ok();
        if v.is_none() {
            self.too_long.get_or_insert(n);
        }
        v
    }

    fn len_i16(&mut self, n: usize) -> i16 {
        self.fits(n).unwrap_or(0)
    }

    fn len_i32(&mut self, n: usize) -> i32 {
        self.fits(n).unwrap_or(0)
    }

    fn len_compact(&mut self, n: usize) -> u32 {
        self.fits(n + 1).unwrap_or(0)
    }

    pub(crate) fn string(&mut self, s: &str) {
        let n = self.len_i16(s.len());
        self.i16(n);
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn nullable_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        let n = self.len_i32(b.len());
        self.i32(n);
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn array_len(&mut self, n: usize) {
        let n = self.len_i32(n);
        self.i32(n);
    }

    pub(crate) fn compact_string(&mut self, s: &str) {
        let n = self.len_compact(s.len());
        self.unsigned_varint(n);
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn compact_nullable_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.compact_string(s),
            None => self.unsigned_varint(0),
        }
    }

    pub(crate) fn compact_array_len(&mut self, n: usize) {
        let n = self.len_compact(n);
        self.unsigned_varint(n);
    }

    /// An empty tagged-field section.
    pub(crate) fn no_tagged_fields(&mut self) {
        self.unsigned_varint(0);
    }
}
