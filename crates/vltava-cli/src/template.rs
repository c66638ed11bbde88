//! `vltava consume --format`: output templates in kcat's spirit.
//!
//! `%t` topic, `%p` partition, `%o` offset, `%k` key, `%s` value, `%K` key length, `%S` value
//! length (-1 when null), `%T` timestamp in ms (-1 when absent), `%h` headers as
//! `k=v,k2=v2`, `%%` a percent sign; `\n`, `\t`, `\r`, `\\` escapes. A template that does not
//! end with a newline gets one, so `--format '%k %s'` prints one record per line.

/// One record as the template sees it.
#[derive(Debug, Clone, Default)]
pub struct RecordView<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    KeyLen,
    ValueLen,
    Timestamp,
    Headers,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let piece = match chars.next() {
                        Some('t') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('k') => Piece::Key,
                        Some('s') => Piece::Value,
                        Some('K') => Piece::KeyLen,
                        Some('S') => Piece::ValueLen,
                        Some('T') => Piece::Timestamp,
                        Some('h') => Piece::Headers,
                        Some('%') => {
                            lit.push(b'%');
                            continue;
                        }
                        Some(other) => {
                            return Err(format!(
                            "unknown format token %{other} (known: %t %p %o %k %s %K %S %T %h %%)"
                        ))
                        }
                        None => return Err("format ends with a lone %".into()),
                    };
                    if !lit.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                    }
                    pieces.push(piece);
                }
                '\\' => match chars.next() {
                    Some('n') => lit.push(b'\n'),
                    Some('t') => lit.push(b'\t'),
                    Some('r') => lit.push(b'\r'),
                    Some('\\') => lit.push(b'\\'),
                    Some(other) => {
                        lit.push(b'\\');
                        let mut buf = [0u8; 4];
                        lit.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                    None => lit.push(b'\\'),
                },
                other => {
                    let mut buf = [0u8; 4];
                    lit.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        match pieces.last_mut() {
            Some(Piece::Literal(l)) if l.ends_with(b"\n") => {}
            Some(Piece::Literal(l)) => l.push(b'\n'),
            _ => pieces.push(Piece::Literal(b"\n".to_vec())),
        }
        Ok(Template { pieces })
    }

    /// Appends the rendering of `r` to `out`. Keys and values are written as raw bytes.
    pub fn render(&self, r: &RecordView<'_>, out: &mut Vec<u8>) {
        use std::io::Write;
        for p in &self.pieces {
            match p {
                Piece::Literal(l) => out.extend_from_slice(l),
                Piece::Topic => out.extend_from_slice(r.topic.as_bytes()),
                Piece::Partition => write!(out, "{}", r.partition).unwrap(),
                Piece::Offset => write!(out, "{}", r.offset).unwrap(),
                Piece::Key => out.extend_from_slice(r.key.unwrap_or_default()),
                Piece::Value => out.extend_from_slice(r.value.unwrap_or_default()),
                Piece::KeyLen => write!(out, "{}", r.key.map_or(-1, |k| k.len() as i64)).unwrap(),
                Piece::ValueLen => {
                    write!(out, "{}", r.value.map_or(-1, |v| v.len() as i64)).unwrap()
                }
                Piece::Timestamp => write!(out, "{}", r.timestamp_ms.unwrap_or(-1)).unwrap(),
                Piece::Headers => {
                    for (i, (k, v)) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(k.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(v.unwrap_or_default());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(fmt: &str, r: &RecordView<'_>) -> String {
        let t = Template::parse(fmt).unwrap();
        let mut out = Vec::new();
        t.render(r, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn record() -> RecordView<'static> {
        RecordView {
            topic: "orders",
            partition: 3,
            offset: 42,
            key: Some(b"k1"),
            value: Some(b"hello"),
            timestamp_ms: Some(1_700_000_000_000),
            headers: vec![("trace", Some(b"abc")), ("empty", None)],
        }
    }

    #[test]
    fn every_token() {
        assert_eq!(
            render("%t/%p@%o %k=%s (%K,%S) %T [%h] 100%%\\n", &record()),
            "orders/3@42 k1=hello (2,5) 1700000000000 [trace=abc,empty=] 100%\n"
        );
    }

    #[test]
    fn default_is_value_per_line() {
        assert_eq!(render("%s", &record()), "hello\n");
        assert_eq!(render("%s\\n", &record()), "hello\n", "no doubled newline");
        assert_eq!(render("%k\\t%s\n", &record()), "k1\thello\n");
    }

    #[test]
    fn nulls() {
        let r = RecordView {
            topic: "t",
            ..Default::default()
        };
        assert_eq!(render("[%k][%s] %K %S %T [%h]", &r), "[][] -1 -1 -1 []\n");
    }

    #[test]
    fn errors() {
        assert!(Template::parse("%x").unwrap_err().contains("%x"));
        assert!(Template::parse("abc %").is_err());
    }

    #[test]
    fn unknown_escape_is_kept() {
        assert_eq!(render("a\\qb", &record()), "a\\qb\n");
    }
}
