//! The consumer protocol's member assignment (`ConsumerProtocolAssignment`, versions 0-3):
//! the bytes DescribeGroups returns per member of a group with protocol type `consumer`.
//!
//! `version: int16, [topic: string, [partition: int32]], user_data: nullable bytes`; every
//! version so far has this prefix, and anything after it is ignored.

/// Partitions assigned to one member, per topic, in the order the leader wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    pub topics: Vec<(String, Vec<i32>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed consumer assignment: {field} needs {need} bytes at offset {offset}, {have} left"
)]
pub struct AssignmentError {
    pub field: &'static str,
    pub offset: usize,
    pub need: usize,
    pub have: usize,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], AssignmentError> {
        let have = self.buf.len() - self.pos;
        if n > have {
            return Err(AssignmentError {
                field,
                offset: self.pos,
                need: n,
                have,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, AssignmentError> {
        Ok(i16::from_be_bytes(self.take(2, field)?.try_into().unwrap()))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, AssignmentError> {
        Ok(i32::from_be_bytes(self.take(4, field)?.try_into().unwrap()))
    }

    /// An array length; negative (null) reads as empty. The count is checked against the
    /// bytes left before anything is allocated.
    fn count(&mut self, field: &'static str, min_item: usize) -> Result<usize, AssignmentError> {
        let n = self.i32(field)?;
        let n = usize::try_from(n).unwrap_or(0);
        let have = self.buf.len() - self.pos;
        if n.saturating_mul(min_item) > have {
            return Err(AssignmentError {
                field,
                offset: self.pos,
                need: n.saturating_mul(min_item),
                have,
            });
        }
        Ok(n)
    }
}

/// Decodes an assignment; empty input (a member that has no assignment yet) is empty.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment, AssignmentError> {
    if bytes.is_empty() {
        return Ok(Assignment::default());
    }
    let mut r = Reader { buf: bytes, pos: 0 };
    let _version = r.i16("version")?;
    let topic_count = r.count("topics", 6)?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let len = r.i16("topic name length")?;
        let name = r.take(usize::try_from(len).unwrap_or(0), "topic name")?;
        let name = String::from_utf8_lossy(name).into_owned();
        let n = r.count("partitions", 4)?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            partitions.push(r.i32("partition")?);
        }
        topics.push((name, partitions));
    }
    Ok(Assignment { topics })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(version: i16, topics: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        match user_data {
            Some(u) => {
                b.extend((u.len() as i32).to_be_bytes());
                b.extend(u);
            }
            None => b.extend((-1i32).to_be_bytes()),
        }
        b
    }

    #[test]
    fn round_trip() {
        let bytes = encode(3, &[("orders", &[0, 2]), ("audit", &[1])], Some(b"ud"));
        assert_eq!(
            decode_assignment(&bytes).unwrap(),
            Assignment {
                topics: vec![("orders".into(), vec![0, 2]), ("audit".into(), vec![1])]
            }
        );
        let bytes = encode(0, &[], None);
        assert_eq!(decode_assignment(&bytes).unwrap(), Assignment::default());
        assert_eq!(decode_assignment(&[]).unwrap(), Assignment::default());
    }

    #[test]
    fn truncated_and_huge_counts_are_errors() {
        let bytes = encode(1, &[("orders", &[0, 2])], None);
        for cut in 1..bytes.len() - 4 {
            assert!(decode_assignment(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend(i32::MAX.to_be_bytes());
        let e = decode_assignment(&huge).unwrap_err();
        assert_eq!(e.field, "topics");
    }
}
