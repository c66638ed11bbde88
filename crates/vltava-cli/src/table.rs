//! Aligned text columns in the style of `kafka-topics` and `rpk`: a header in capitals, two
//! spaces between columns, no borders, so `awk '{print $1}'` still works.

/// A table of strings; every row should have as many cells as the header.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the header and rows; the last column is not padded, so no line has trailing
    /// spaces.
    pub fn render(&self) -> String {
        let cols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if i + 1 < line.len() {
                    let pad = widths[i] - cell.chars().count();
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A row's ERROR column: Kafka's error name, then its message.
pub fn error_cell(error: &Option<String>, message: &Option<String>) -> String {
    match (error, message) {
        (Some(e), Some(m)) => format!("{e}: {m}"),
        (Some(e), None) => e.clone(),
        _ => String::new(),
    }
}

/// Joins ids as Kafka's tools print replica lists: `1,2,3`.
pub fn id_list(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_without_trailing_spaces() {
        let mut t = Table::new(&["TOPIC", "PARTITIONS", "NOTE"]);
        t.row(["orders", "12", ""]).row(["a", "1", "x"]);
        assert_eq!(
            t.render(),
            "TOPIC   PARTITIONS  NOTE\n\
             orders  12\n\
             a       1           x\n"
        );
    }

    #[test]
    fn counts_characters_not_bytes() {
        let mut t = Table::new(&["K", "V"]);
        t.row(["čaj", "1"]).row(["ab", "2"]);
        assert_eq!(t.render(), "K    V\nčaj  1\nab   2\n");
    }

    #[test]
    fn empty_table_is_just_the_header() {
        let t = Table::new(&["NAME", "STATE"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "NAME  STATE\n");
    }

    #[test]
    fn ids() {
        assert_eq!(id_list(&[1, 2, 3]), "1,2,3");
        assert_eq!(id_list(&[]), "");
    }
}
