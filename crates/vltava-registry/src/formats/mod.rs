//! Parsing and compatibility for each schema format. Pure: a schema text and the texts of
//! its references go in, a parsed schema or a reason comes out.
//!
//! Compatibility is always asked as "can `reader` read what `writer` wrote"; the levels
//! (backward, forward, full) are directions of this one question, decided in `state`.

mod avro;
mod json;
pub mod protobuf;

use crate::records::SchemaType;

/// A referenced schema, already looked up, under the name the referring schema uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedReference {
    pub name: String,
    pub schema_type: SchemaType,
    pub schema: String,
}

/// A schema that parsed, with its references resolved.
#[derive(Debug)]
pub enum ParsedSchema {
    Avro(avro::AvroSchema),
    Json(json::JsonSchema),
    Protobuf(protobuf::ProtoSchema),
}

/// Parses `text` as `schema_type`. `references` lists every schema reachable through
/// references, dependencies before the schemas that use them.
pub fn parse(
    schema_type: SchemaType,
    text: &str,
    references: &[ResolvedReference],
) -> Result<ParsedSchema, String> {
    // The parsers are other crates' code fed text from anyone: a panic in one is an invalid
    // schema, not a lost request (protox-parse 0.9 asserts, in debug builds, that an
    // integer literal can only fail by overflow; an octal one holding an 8 or a 9 fails
    // otherwise).
    std::panic::catch_unwind(|| match schema_type {
        SchemaType::Avro => avro::parse(text, references).map(ParsedSchema::Avro),
        SchemaType::Json => json::parse(text, references).map(ParsedSchema::Json),
        SchemaType::Protobuf => protobuf::parse(text, references).map(ParsedSchema::Protobuf),
    })
    .unwrap_or_else(|_| Err("the schema could not be parsed".to_string()))
}

impl ParsedSchema {
    /// Why `self`, as reader, cannot read data written with `writer`; empty when it can.
    pub fn read_problems(&self, writer: &ParsedSchema) -> Vec<String> {
        match (self, writer) {
            (ParsedSchema::Avro(r), ParsedSchema::Avro(w)) => avro::read_problems(r, w),
            (ParsedSchema::Json(r), ParsedSchema::Json(w)) => json::read_problems(r, w),
            (ParsedSchema::Protobuf(r), ParsedSchema::Protobuf(w)) => protobuf::read_problems(r, w),
            _ => vec!["schema type changed".to_string()],
        }
    }

    /// The schema in Confluent's `format=serialized` rendering, where the format has one
    /// (Protobuf: a base64 `FileDescriptorProto`).
    pub fn serialized(&self) -> Option<String> {
        match self {
            ParsedSchema::Protobuf(s) => Some(protobuf::serialized(s)),
            _ => None,
        }
    }

    /// The text stored for `normalize=true`: one spelling per meaning, so that schemas that
    /// differ only in layout or key order register as one.
    pub fn normalized(&self) -> String {
        match self {
            ParsedSchema::Avro(s) => avro::normalized(s),
            ParsedSchema::Json(s) => json::normalized(s),
            ParsedSchema::Protobuf(s) => protobuf::normalized(s),
        }
    }
}

/// What two registrations of one schema share: the text with insignificant layout removed.
/// Registering a schema whose identity matches an existing one returns the existing id.
/// Needs no parse, so replay can index every stored schema cheaply.
pub fn identity(schema_type: SchemaType, text: &str) -> String {
    match schema_type {
        SchemaType::Avro | SchemaType::Json => {
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v) => v.to_string(),
                Err(_) => text.trim().to_string(),
            }
        }
        SchemaType::Protobuf => text.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Found by the `schema_parse` fuzz target: protox-parse panics on this literal in debug
    /// builds; the registry answers an invalid schema.
    #[test]
    fn a_parser_panic_is_an_invalid_schema() {
        let text = "syntax = \"proto3\"; message M { int32 a = 0189; }";
        assert!(parse(SchemaType::Protobuf, text, &[]).is_err());
    }

    /// Pieces of each format's syntax, so random schemas get past the first character.
    fn schemaish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("\"type\"".to_string()),
            Just("\"record\"".to_string()),
            Just("\"name\"".to_string()),
            Just("\"fields\"".to_string()),
            Just("\"enum\"".to_string()),
            Just("\"symbols\"".to_string()),
            Just("\"object\"".to_string()),
            Just("\"properties\"".to_string()),
            Just("\"$ref\"".to_string()),
            Just("\"#/definitions/x\"".to_string()),
            Just("\"default\"".to_string()),
            Just("syntax = \"proto3\";".to_string()),
            Just("message M {".to_string()),
            Just("oneof o {".to_string()),
            Just("string a = 1;".to_string()),
            Just("M m = 2;".to_string()),
            Just("import \"x.proto\";".to_string()),
            "[a-zA-Z0-9 \"=;{}\\[\\]]{0,8}".prop_map(|s| s),
        ];
        proptest::collection::vec(token, 0..24).prop_map(|t| t.join(""))
    }

    proptest! {
        /// Whatever a client sends, parsing and comparing answer with a verdict, never a panic.
        #[test]
        fn parsing_and_comparing_never_panic(a in schemaish(), b in schemaish()) {
            for t in [SchemaType::Avro, SchemaType::Json, SchemaType::Protobuf] {
                let pa = parse(t, &a, &[]);
                let pb = parse(t, &b, &[]);
                if let (Ok(pa), Ok(pb)) = (&pa, &pb) {
                    let _ = pa.read_problems(pb);
                    let _ = pa.normalized();
                    let _ = pa.serialized();
                }
                let _ = identity(t, &a);
            }
        }
    }
}
