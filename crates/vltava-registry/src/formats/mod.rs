//! Parsing and compatibility for each schema format. Pure: a schema text and the texts of
//! its references go in, a parsed schema or a reason comes out.
//!
//! Compatibility is always asked as "can `reader` read what `writer` wrote"; the levels
//! (backward, forward, full) are directions of this one question, decided in `state`.

mod avro;
mod json;
mod protobuf;

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
    match schema_type {
        SchemaType::Avro => avro::parse(text, references).map(ParsedSchema::Avro),
        SchemaType::Json => json::parse(text, references).map(ParsedSchema::Json),
        SchemaType::Protobuf => protobuf::parse(text, references).map(ParsedSchema::Protobuf),
    }
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
