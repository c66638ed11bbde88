//! Avro: parsing with `apache-avro`, compatibility through Avro's schema resolution rules.

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;

use super::ResolvedReference;

/// An Avro schema with every named type from its references inlined, so resolution can be
/// checked without a name table.
#[derive(Debug)]
pub struct AvroSchema {
    schema: Schema,
}

pub fn parse(text: &str, references: &[ResolvedReference]) -> Result<AvroSchema, String> {
    let schema = if references.is_empty() {
        Schema::parse_str(text).map_err(|e| e.to_string())?
    } else {
        let texts: Vec<&str> = references.iter().map(|r| r.schema.as_str()).collect();
        let (mut schema, schemata) =
            Schema::parse_str_with_list(text, texts).map_err(|e| e.to_string())?;
        schema.denormalize(&schemata).map_err(|e| e.to_string())?;
        schema
    };
    // Denormalizing inlined every named type the references define; a bare name left over
    // is one nothing defines.
    if let Schema::Ref { name } = &schema {
        return Err(format!("unresolved named type {}", name.fullname(None)));
    }
    Ok(AvroSchema { schema })
}

pub fn read_problems(reader: &AvroSchema, writer: &AvroSchema) -> Vec<String> {
    match SchemaCompatibility::can_read(&writer.schema, &reader.schema) {
        Ok(Compatibility::Full) => Vec::new(),
        Ok(Compatibility::Partial) => vec![
            "the reader cannot read every value the writer can write (missing enum symbols or union branches)"
                .to_string(),
        ],
        Err(e) => vec![e.to_string()],
    }
}

pub fn normalized(schema: &AvroSchema) -> String {
    serde_json::to_string(&schema.schema).unwrap_or_else(|_| schema.schema.canonical_form())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> AvroSchema {
        parse(text, &[]).unwrap()
    }

    fn record(fields: &str) -> AvroSchema {
        avro(&format!(
            r#"{{"type":"record","name":"User","fields":[{fields}]}}"#
        ))
    }

    /// Documented pairs: (reader, writer, can read).
    #[test]
    fn resolution_rules() {
        let name = r#"{"name":"name","type":"string"}"#;
        let age_default = r#"{"name":"age","type":"int","default":0}"#;
        let age = r#"{"name":"age","type":"int"}"#;
        let age_long = r#"{"name":"age","type":"long"}"#;
        let cases = [
            // A reader field with a default may be missing from the writer.
            (record(&format!("{name},{age_default}")), record(name), true),
            // Without a default it may not.
            (record(&format!("{name},{age}")), record(name), false),
            // A reader may ignore fields the writer wrote.
            (record(name), record(&format!("{name},{age}")), true),
            // int promotes to long, not the reverse.
            (record(age_long), record(age), true),
            (record(age), record(age_long), false),
            (avro(r#""string""#), avro(r#""int""#), false),
            (avro(r#"["null","string"]"#), avro(r#""string""#), true),
        ];
        for (i, (reader, writer, ok)) in cases.iter().enumerate() {
            assert_eq!(read_problems(reader, writer).is_empty(), *ok, "case {i}");
        }
    }

    #[test]
    fn enum_missing_symbol_is_incompatible_unless_reader_has_a_default() {
        let ab = avro(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#);
        let abc = avro(r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#);
        let ab_default = avro(r#"{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}"#);
        assert!(!read_problems(&ab, &abc).is_empty());
        assert!(read_problems(&abc, &ab).is_empty());
        assert!(read_problems(&ab_default, &abc).is_empty());
    }

    #[test]
    fn references_resolve_named_types() {
        let address = ResolvedReference {
            name: "Address".into(),
            schema_type: crate::records::SchemaType::Avro,
            schema:
                r#"{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}"#
                    .into(),
        };
        let user = r#"{"type":"record","name":"User","fields":[{"name":"home","type":"Address"}]}"#;
        assert!(parse(user, &[]).is_err());
        assert!(parse(user, &[address]).is_ok());
    }

    #[test]
    fn invalid_schemas_are_refused() {
        for text in ["", "{", r#"{"type":"record"}"#, r#""nosuchtype""#, "[1]"] {
            assert!(parse(text, &[]).is_err(), "{text}");
        }
    }
}
