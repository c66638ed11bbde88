//! Protobuf: `.proto` text compiled to descriptors with `protox`; compatibility on the wire
//! format's terms (field numbers, wire-compatible types, oneofs), as Confluent checks it.

use std::collections::BTreeMap;

use base64::Engine;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use protox::prost_reflect::prost::Message;
use protox::prost_reflect::prost_types::FileDescriptorProto;
use protox::prost_reflect::{
    Cardinality, DescriptorPool, FieldDescriptor, Kind, MessageDescriptor,
};

use super::ResolvedReference;

/// The name the registered schema's own file gets among its imports.
const ROOT_FILE: &str = "__root__.proto";

#[derive(Debug)]
pub struct ProtoSchema {
    pool: DescriptorPool,
    text: String,
}

struct ReferenceResolver {
    files: BTreeMap<String, String>,
}

/// A schema text as a `FileDescriptorProto`, if it is one in base64: Confluent's serializers
/// register Protobuf schemas that way rather than as `.proto` source.
fn decode_descriptor(text: &str) -> Option<FileDescriptorProto> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    FileDescriptorProto::decode(bytes.as_slice()).ok()
}

impl FileResolver for ReferenceResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.files.get(name) {
            Some(text) => match decode_descriptor(text) {
                Some(mut descriptor) => {
                    descriptor.name = Some(name.to_string());
                    Ok(File::from_file_descriptor_proto(descriptor))
                }
                None => File::from_source(name, text),
            },
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

pub fn parse(text: &str, references: &[ResolvedReference]) -> Result<ProtoSchema, String> {
    // protox-parse 0.9's lexer has a `debug_assert` that a malformed number such as `008`
    // trips (release builds report the error instead); a client's text must not take the
    // request down with it in any build.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compile(text, references)))
        .unwrap_or_else(|_| Err("the .proto text could not be parsed".to_string()))
}

fn compile(text: &str, references: &[ResolvedReference]) -> Result<ProtoSchema, String> {
    let mut files: BTreeMap<String, String> = references
        .iter()
        .map(|r| (r.name.clone(), r.schema.clone()))
        .collect();
    files.insert(ROOT_FILE.to_string(), text.to_string());
    let mut resolver = ChainFileResolver::new();
    resolver.add(ReferenceResolver { files });
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file(ROOT_FILE).map_err(|e| e.to_string())?;
    Ok(ProtoSchema {
        pool: compiler.descriptor_pool(),
        text: text.to_string(),
    })
}

/// The schema as a base64 `FileDescriptorProto` (Confluent's `format=serialized`).
pub fn serialized(schema: &ProtoSchema) -> String {
    if decode_descriptor(&schema.text).is_some() {
        return schema.text.trim().to_string();
    }
    let bytes = schema
        .pool
        .get_file_by_name(ROOT_FILE)
        .map(|f| f.file_descriptor_proto().encode_to_vec())
        .unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn normalized(schema: &ProtoSchema) -> String {
    schema
        .text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The message Confluent's message indexes name: the top-level message at the first index
/// of the registered file, then nested messages by the following ones.
pub fn message_at(schema: &ProtoSchema, indexes: &[usize]) -> Option<MessageDescriptor> {
    let file = schema.pool.get_file_by_name(ROOT_FILE)?;
    let (first, rest) = indexes.split_first()?;
    let mut message = file.messages().nth(*first)?;
    for i in rest {
        let child = message.child_messages().nth(*i)?;
        message = child;
    }
    Some(message)
}

/// Messages declared in the registered file itself (not in its imports).
fn own_messages(schema: &ProtoSchema) -> Vec<MessageDescriptor> {
    schema
        .pool
        .all_messages()
        .filter(|m| m.parent_file().name() == ROOT_FILE && !m.is_map_entry())
        .collect()
}

/// Scalar types that share a wire encoding and so read each other's values.
fn wire_group(kind: &Kind) -> Option<u8> {
    Some(match kind {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool => 0,
        Kind::Sint32 | Kind::Sint64 => 1,
        Kind::Fixed32 | Kind::Sfixed32 => 2,
        Kind::Fixed64 | Kind::Sfixed64 => 3,
        Kind::String | Kind::Bytes => 4,
        _ => return None,
    })
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn real_oneof(field: &FieldDescriptor) -> Option<String> {
    field
        .containing_oneof()
        .filter(|o| !o.is_synthetic())
        .map(|o| o.name().to_string())
}

pub fn read_problems(reader: &ProtoSchema, writer: &ProtoSchema) -> Vec<String> {
    let mut problems = Vec::new();
    for wm in own_messages(writer) {
        let Some(rm) = reader.pool.get_message_by_name(wm.full_name()) else {
            problems.push(format!("message {} removed", wm.full_name()));
            continue;
        };
        for wf in wm.fields() {
            let Some(rf) = rm.get_field(wf.number()) else {
                continue;
            };
            let at = format!("{}.{} (field {})", wm.full_name(), rf.name(), wf.number());
            let (rk, wk) = (rf.kind(), wf.kind());
            let same = kind_name(&rk) == kind_name(&wk)
                || matches!((wire_group(&rk), wire_group(&wk)), (Some(a), Some(b)) if a == b);
            if !same {
                problems.push(format!(
                    "{at}: type changed from {} to {}",
                    kind_name(&wk),
                    kind_name(&rk)
                ));
            }
            let repeated = |f: &FieldDescriptor| f.cardinality() == Cardinality::Repeated;
            if repeated(&rf) != repeated(&wf) {
                problems.push(format!("{at}: changed between singular and repeated"));
            }
            if rf.cardinality() == Cardinality::Required
                && wf.cardinality() != Cardinality::Required
            {
                problems.push(format!("{at}: became required"));
            }
        }
        for oneof in rm.oneofs().filter(|o| !o.is_synthetic()) {
            // Fields the writer had outside any oneof that the reader gathers into one: a
            // writer may set several of them, which a oneof cannot hold.
            let moved: Vec<u32> = oneof
                .fields()
                .filter(|rf| {
                    wm.get_field(rf.number())
                        .is_some_and(|wf| real_oneof(&wf).is_none())
                })
                .map(|f| f.number())
                .collect();
            let had_before = oneof
                .fields()
                .filter(|rf| {
                    wm.get_field(rf.number())
                        .is_some_and(|wf| real_oneof(&wf).is_some())
                })
                .count();
            if !moved.is_empty() && (moved.len() > 1 || had_before > 0) {
                problems.push(format!(
                    "{}: fields {moved:?} moved into oneof {}",
                    wm.full_name(),
                    oneof.name()
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(body: &str) -> ProtoSchema {
        parse(&format!("syntax = \"proto3\";\npackage shop;\n{body}"), &[]).unwrap()
    }

    fn can_read(reader: &str, writer: &str) -> bool {
        read_problems(&proto(reader), &proto(writer)).is_empty()
    }

    #[test]
    fn wire_rules() {
        let base = "message Order { string id = 1; int32 qty = 2; }";
        let cases = [
            // Adding and removing fields is fine: unknown numbers are skipped, missing ones default.
            (
                "message Order { string id = 1; int32 qty = 2; string note = 3; }",
                base,
                true,
            ),
            ("message Order { string id = 1; }", base, true),
            // int32 and int64 share the varint encoding.
            (
                "message Order { string id = 1; int64 qty = 2; }",
                base,
                true,
            ),
            (
                "message Order { string id = 1; string qty = 2; }",
                base,
                false,
            ),
            ("message Order { bytes id = 1; int32 qty = 2; }", base, true),
            (
                "message Order { string id = 1; repeated int32 qty = 2; }",
                base,
                false,
            ),
            ("message Other { string id = 1; }", base, false),
            // One field moved into a new oneof is fine; two are not.
            (
                "message Order { oneof k { string id = 1; } int32 qty = 2; }",
                base,
                true,
            ),
            (
                "message Order { oneof k { string id = 1; int32 qty = 2; } }",
                base,
                false,
            ),
            // A renamed field keeps its number and so its data.
            (
                "message Order { string ident = 1; int32 qty = 2; }",
                base,
                true,
            ),
        ];
        for (i, (reader, writer, ok)) in cases.iter().enumerate() {
            assert_eq!(can_read(reader, writer), *ok, "case {i}: {reader}");
        }
    }

    #[test]
    fn imports_come_from_references_and_well_known_types() {
        let money = ResolvedReference {
            name: "money.proto".into(),
            schema_type: crate::records::SchemaType::Protobuf,
            schema: "syntax = \"proto3\"; package shop; message Money { int64 cents = 1; }".into(),
        };
        let text = "syntax = \"proto3\"; package shop; import \"money.proto\"; import \"google/protobuf/timestamp.proto\";\nmessage Order { Money price = 1; google.protobuf.Timestamp at = 2; }";
        assert!(parse(text, &[]).is_err());
        assert!(parse(text, &[money]).is_ok());
    }

    #[test]
    fn base64_descriptors_parse_like_their_source() {
        let source = proto("message Order { string id = 1; int32 qty = 2; }");
        let encoded = serialized(&source);
        let decoded = parse(&encoded, &[]).unwrap();
        assert!(decoded.pool.get_message_by_name("shop.Order").is_some());
        assert!(read_problems(&decoded, &source).is_empty());
        let breaking = proto("message Order { string id = 1; string qty = 2; }");
        assert!(!read_problems(&breaking, &decoded).is_empty());
        assert_eq!(serialized(&decoded), encoded);
    }

    #[test]
    fn invalid_schemas_are_refused() {
        for text in [
            "008",
            "message {",
            "syntax = \"proto9\";",
            "message A { string a = 0; }",
        ] {
            assert!(parse(text, &[]).is_err(), "{text}");
        }
    }
}
