//! Protobuf: `.proto` text compiled to descriptors with `protox`; compatibility on the wire
//! format's terms (field numbers, wire-compatible types, oneofs), as Confluent checks it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use base64::Engine;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use protox::prost_reflect::prost::Message;
use protox::prost_reflect::prost_types::{self, FileDescriptorProto};
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

/// A schema registered as a base64 descriptor (as confluent-kafka's serializers register
/// them), written out as `.proto` text: Confluent's registry answers with text, and clients
/// such as protobufjs parse nothing else. `None` when the text is already `.proto` source or
/// the descriptor uses what is not written out here (editions, groups, extensions).
pub fn descriptor_as_text(text: &str) -> Option<String> {
    let file = decode_descriptor(text)?;
    let mut out = String::new();
    match file.syntax() {
        "proto3" => out.push_str("syntax = \"proto3\";\n"),
        "" | "proto2" => out.push_str("syntax = \"proto2\";\n"),
        _ => return None,
    }
    if !file.extension.is_empty() {
        return None;
    }
    if !file.package().is_empty() {
        out.push_str(&format!("package {};\n", file.package()));
    }
    for (i, dependency) in file.dependency.iter().enumerate() {
        let public = file.public_dependency.contains(&(i as i32));
        let public = if public { "public " } else { "" };
        out.push_str(&format!("import {public}{};\n", quoted(dependency)));
    }
    if let Some(options) = &file.options {
        for (name, value) in [
            ("java_package", &options.java_package),
            ("java_outer_classname", &options.java_outer_classname),
            ("go_package", &options.go_package),
            ("csharp_namespace", &options.csharp_namespace),
        ] {
            if let Some(value) = value {
                out.push_str(&format!("option {name} = {};\n", quoted(value)));
            }
        }
        if let Some(multiple) = options.java_multiple_files {
            out.push_str(&format!("option java_multiple_files = {multiple};\n"));
        }
    }
    let proto3 = file.syntax() == "proto3";
    for message in &file.message_type {
        write_message(&mut out, message, proto3, 0)?;
    }
    for e in &file.enum_type {
        write_enum(&mut out, e, 0);
    }
    for service in &file.service {
        out.push_str(&format!("\nservice {} {{\n", service.name()));
        for m in &service.method {
            let stream = |s: bool| if s { "stream " } else { "" };
            out.push_str(&format!(
                "  rpc {} ({}{}) returns ({}{});\n",
                m.name(),
                stream(m.client_streaming()),
                m.input_type(),
                stream(m.server_streaming()),
                m.output_type()
            ));
        }
        out.push_str("}\n");
    }
    Some(out)
}

/// A string literal as `.proto` spells it: printable ASCII as is, the rest as octal bytes.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for b in text.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out.push('"');
    out
}

/// The JSON name protoc derives from a field name; only other names are written out.
fn default_json_name(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn reserved_ranges(ranges: impl Iterator<Item = (i32, i32)>) -> Vec<String> {
    ranges
        .map(|(start, end)| match end {
            e if e == start => start.to_string(),
            536_870_911 | i32::MAX => format!("{start} to max"),
            e => format!("{start} to {e}"),
        })
        .collect()
}

fn write_reserved(out: &mut String, pad: &str, ranges: Vec<String>, names: &[String]) {
    if !ranges.is_empty() {
        out.push_str(&format!("{pad}  reserved {};\n", ranges.join(", ")));
    }
    if !names.is_empty() {
        let names: Vec<String> = names.iter().map(|n| quoted(n)).collect();
        out.push_str(&format!("{pad}  reserved {};\n", names.join(", ")));
    }
}

fn write_enum(out: &mut String, e: &prost_types::EnumDescriptorProto, depth: usize) {
    let pad = "  ".repeat(depth);
    out.push_str(&format!("\n{pad}enum {} {{\n", e.name()));
    if e.options.as_ref().and_then(|o| o.allow_alias) == Some(true) {
        out.push_str(&format!("{pad}  option allow_alias = true;\n"));
    }
    for v in &e.value {
        out.push_str(&format!("{pad}  {} = {};\n", v.name(), v.number()));
    }
    let ranges = reserved_ranges(e.reserved_range.iter().map(|r| (r.start(), r.end())));
    write_reserved(out, &pad, ranges, &e.reserved_name);
    out.push_str(&format!("{pad}}}\n"));
}

fn write_message(
    out: &mut String,
    message: &prost_types::DescriptorProto,
    proto3: bool,
    depth: usize,
) -> Option<()> {
    use prost_types::field_descriptor_proto::{Label, Type};
    if !message.extension.is_empty() {
        return None;
    }
    let pad = "  ".repeat(depth);
    out.push_str(&format!("\n{pad}message {} {{\n", message.name()));
    let map_entries: BTreeMap<&str, &prost_types::DescriptorProto> = message
        .nested_type
        .iter()
        .filter(|n| n.options.as_ref().and_then(|o| o.map_entry) == Some(true))
        .map(|n| (n.name(), n))
        .collect();
    let type_name = |f: &prost_types::FieldDescriptorProto| -> Option<String> {
        Some(match f.r#type() {
            Type::Message | Type::Enum => f.type_name().to_string(),
            Type::Group => return None,
            scalar => scalar
                .as_str_name()
                .trim_start_matches("TYPE_")
                .to_lowercase(),
        })
    };
    let field_line = |f: &prost_types::FieldDescriptorProto, in_oneof: bool| -> Option<String> {
        let entry = (f.r#type() == Type::Message && f.label() == Label::Repeated)
            .then(|| map_entries.get(f.type_name().rsplit('.').next()?))
            .flatten();
        let typed = match entry {
            Some(entry) => {
                let key = entry.field.iter().find(|k| k.number() == 1)?;
                let value = entry.field.iter().find(|v| v.number() == 2)?;
                format!("map<{}, {}>", type_name(key)?, type_name(value)?)
            }
            None => {
                let label = match f.label() {
                    _ if in_oneof => "",
                    Label::Repeated => "repeated ",
                    Label::Required => "required ",
                    Label::Optional if !proto3 || f.proto3_optional() => "optional ",
                    Label::Optional => "",
                };
                format!("{label}{}", type_name(f)?)
            }
        };
        let mut options = Vec::new();
        if let Some(default) = &f.default_value {
            let value = match f.r#type() {
                Type::String => quoted(default),
                // Descriptors keep bytes defaults already escaped.
                Type::Bytes => format!("\"{default}\""),
                _ => default.clone(),
            };
            options.push(format!("default = {value}"));
        }
        if let Some(packed) = f.options.as_ref().and_then(|o| o.packed) {
            options.push(format!("packed = {packed}"));
        }
        if f.json_name
            .as_deref()
            .is_some_and(|j| j != default_json_name(f.name()))
        {
            options.push(format!("json_name = {}", quoted(f.json_name())));
        }
        let options = if options.is_empty() {
            String::new()
        } else {
            format!(" [{}]", options.join(", "))
        };
        Some(format!("{typed} {} = {}{options};", f.name(), f.number()))
    };
    let real_oneof =
        |f: &prost_types::FieldDescriptorProto| f.oneof_index.filter(|_| !f.proto3_optional());
    let mut oneofs_written = BTreeSet::new();
    for f in &message.field {
        match real_oneof(f) {
            None => out.push_str(&format!("{pad}  {}\n", field_line(f, false)?)),
            Some(index) if oneofs_written.insert(index) => {
                let oneof = message.oneof_decl.get(usize::try_from(index).ok()?)?;
                out.push_str(&format!("{pad}  oneof {} {{\n", oneof.name()));
                for member in message
                    .field
                    .iter()
                    .filter(|m| real_oneof(m) == Some(index))
                {
                    out.push_str(&format!("{pad}    {}\n", field_line(member, true)?));
                }
                out.push_str(&format!("{pad}  }}\n"));
            }
            Some(_) => {}
        }
    }
    let ranges = reserved_ranges(
        message
            .reserved_range
            .iter()
            .map(|r| (r.start(), r.end() - 1)),
    );
    write_reserved(out, &pad, ranges, &message.reserved_name);
    let extensions = reserved_ranges(
        message
            .extension_range
            .iter()
            .map(|r| (r.start(), r.end() - 1)),
    );
    if !extensions.is_empty() {
        out.push_str(&format!("{pad}  extensions {};\n", extensions.join(", ")));
    }
    for nested in message
        .nested_type
        .iter()
        .filter(|n| !map_entries.contains_key(n.name()))
    {
        write_message(out, nested, proto3, depth + 1)?;
    }
    for e in &message.enum_type {
        write_enum(out, e, depth + 1);
    }
    out.push_str(&format!("{pad}}}\n"));
    Some(())
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

/// Messages declared in the registered file itself (not in its imports), nested ones too:
/// message indexes in records point at these.
fn own_messages(schema: &ProtoSchema) -> Vec<MessageDescriptor> {
    schema
        .pool
        .all_messages()
        .filter(|m| m.parent_file().name() == ROOT_FILE && !m.is_map_entry())
        .collect()
}

/// A type's name inside its package: types are matched on it, so that a type that moves to
/// another package (its file imported under a new name, say) is still the same type.
fn local_name<'a>(full_name: &'a str, package: &str) -> &'a str {
    if package.is_empty() {
        full_name
    } else {
        full_name
            .strip_prefix(package)
            .and_then(|n| n.strip_prefix('.'))
            .unwrap_or(full_name)
    }
}

/// How a field's value is shaped: fields only read each other's values within one shape.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Scalar,
    Message,
    Map,
}

fn shape(field: &FieldDescriptor) -> Shape {
    if field.is_map() {
        Shape::Map
    } else if matches!(field.kind(), Kind::Message(_)) {
        Shape::Message
    } else {
        Shape::Scalar
    }
}

/// Scalar types that share a wire encoding and so read each other's values. An enum is a
/// varint like `int32`: its numbers carry over whatever the enum's names become.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum WireGroup {
    Varint,
    ZigZag,
    Fixed32,
    Fixed64,
    Float,
    Double,
    LengthDelimited,
}

fn wire_group(kind: &Kind) -> Option<WireGroup> {
    Some(match kind {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => {
            WireGroup::Varint
        }
        Kind::Sint32 | Kind::Sint64 => WireGroup::ZigZag,
        Kind::Fixed32 | Kind::Sfixed32 => WireGroup::Fixed32,
        Kind::Fixed64 | Kind::Sfixed64 => WireGroup::Fixed64,
        Kind::Float => WireGroup::Float,
        Kind::Double => WireGroup::Double,
        Kind::String | Kind::Bytes => WireGroup::LengthDelimited,
        Kind::Message(_) => return None,
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

/// Why `reader` cannot read what `writer` wrote, by Confluent's Protobuf rules: what the
/// wire format cannot carry over (field types and labels, oneofs gaining members that were
/// set independently), plus what Confluent refuses on top (a changed package, a message
/// gone from the file, a `required` field added or dropped, a oneof member dropped).
pub fn read_problems(reader: &ProtoSchema, writer: &ProtoSchema) -> Vec<String> {
    let mut cx = Compare {
        problems: Vec::new(),
        compared: HashSet::new(),
    };
    let (Some(reader_file), Some(writer_file)) = (
        reader.pool.get_file_by_name(ROOT_FILE),
        writer.pool.get_file_by_name(ROOT_FILE),
    ) else {
        return vec!["schema has no file".to_string()];
    };
    if reader_file.package_name() != writer_file.package_name() {
        cx.problems.push(format!(
            "package changed from {:?} to {:?}",
            writer_file.package_name(),
            reader_file.package_name()
        ));
    }
    let reader_messages: BTreeMap<String, MessageDescriptor> = own_messages(reader)
        .into_iter()
        .map(|m| {
            (
                local_name(m.full_name(), reader_file.package_name()).to_string(),
                m,
            )
        })
        .collect();
    for wm in own_messages(writer) {
        let local = local_name(wm.full_name(), writer_file.package_name());
        match reader_messages.get(local) {
            Some(rm) => cx.message(rm, &wm),
            None => cx.problems.push(format!("message {local} removed")),
        }
    }
    cx.problems
}

struct Compare {
    problems: Vec<String>,
    /// Message pairs already compared (reader, writer): recursive types end here.
    compared: HashSet<(String, String)>,
}

impl Compare {
    fn message(&mut self, rm: &MessageDescriptor, wm: &MessageDescriptor) {
        if !self
            .compared
            .insert((rm.full_name().to_string(), wm.full_name().to_string()))
        {
            return;
        }
        let name = wm.full_name();
        // Oneofs: a reader's oneof holds one value, so its members that the writer already had
        // must come from one place in the writer (one top-level field, or one oneof).
        for oneof in rm.oneofs().filter(|o| !o.is_synthetic()) {
            let mut origins = BTreeSet::new();
            let mut moved_in = Vec::new();
            for rf in oneof.fields() {
                if let Some(wf) = wm.get_field(rf.number()) {
                    match real_oneof(&wf) {
                        Some(w_oneof) => origins.insert(format!("oneof {w_oneof}")),
                        None => {
                            moved_in.push(rf.number());
                            origins.insert(format!("field {}", rf.number()))
                        }
                    };
                }
            }
            if origins.len() > 1 {
                let origins: Vec<_> = origins.into_iter().collect();
                self.problems.push(format!(
                    "{name}: oneof {} gathers what the writer could set together ({})",
                    oneof.name(),
                    origins.join(", ")
                ));
            }
        }
        // A writer's oneof dropped whole is a removal like any other; one that lost only some
        // members loses the records that had those members set.
        let reader_oneofs: BTreeSet<String> = rm
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|o| o.name().to_string())
            .collect();
        let dropped_whole: BTreeSet<String> = wm
            .oneofs()
            .filter(|o| !o.is_synthetic() && !reader_oneofs.contains(o.name()))
            .filter(|o| o.fields().all(|f| rm.get_field(f.number()).is_none()))
            .map(|o| o.name().to_string())
            .collect();
        for wf in wm.fields() {
            let at = format!("{name}.{} (field {})", wf.name(), wf.number());
            match rm.get_field(wf.number()) {
                Some(rf) => self.field(&rf, &wf, &at),
                None => match real_oneof(&wf) {
                    Some(o) if !dropped_whole.contains(&o) => {
                        self.problems.push(format!("{at}: removed from oneof {o}"))
                    }
                    Some(_) => {}
                    None if wf.cardinality() == Cardinality::Required => {
                        self.problems.push(format!("{at}: required field removed"))
                    }
                    None => {}
                },
            }
        }
        for rf in rm.fields() {
            if wm.get_field(rf.number()).is_none() && rf.cardinality() == Cardinality::Required {
                self.problems.push(format!(
                    "{}.{} (field {}): required field added",
                    rm.full_name(),
                    rf.name(),
                    rf.number()
                ));
            }
        }
    }

    fn field(&mut self, rf: &FieldDescriptor, wf: &FieldDescriptor, at: &str) {
        let (rs, ws) = (shape(rf), shape(wf));
        if rs != ws {
            return self
                .problems
                .push(format!("{at}: changed from a {ws:?} to a {rs:?} field"));
        }
        match rs {
            Shape::Scalar => {
                self.kinds(&rf.kind(), &wf.kind(), at);
                // Repeated numbers are packed, which a singular reader cannot parse, and a
                // `required` number is refused when absent. Strings, bytes and messages read
                // across labels: a singular reader keeps the last element.
                let numeric =
                    wire_group(&wf.kind()).is_some_and(|g| g != WireGroup::LengthDelimited);
                if numeric && rf.cardinality() != wf.cardinality() {
                    self.problems.push(format!(
                        "{at}: label changed from {:?} to {:?}",
                        wf.cardinality(),
                        rf.cardinality()
                    ));
                }
            }
            Shape::Message => self.kinds(&rf.kind(), &wf.kind(), at),
            Shape::Map => {
                let (Kind::Message(re), Kind::Message(we)) = (rf.kind(), wf.kind()) else {
                    return;
                };
                for number in [1, 2] {
                    if let (Some(r), Some(w)) = (re.get_field(number), we.get_field(number)) {
                        self.kinds(&r.kind(), &w.kind(), at);
                    }
                }
            }
        }
    }

    /// Two field types: scalars by wire group, messages by name within their package and
    /// then by content.
    fn kinds(&mut self, rk: &Kind, wk: &Kind, at: &str) {
        match (rk, wk) {
            (Kind::Message(r), Kind::Message(w)) => {
                let r_local = local_name(r.full_name(), r.package_name());
                let w_local = local_name(w.full_name(), w.package_name());
                if r_local != w_local {
                    return self
                        .problems
                        .push(format!("{at}: type changed from {w_local} to {r_local}"));
                }
                self.message(r, w);
            }
            _ if wire_group(rk).is_some() && wire_group(rk) == wire_group(wk) => {}
            _ => self.problems.push(format!(
                "{at}: type changed from {} to {}",
                kind_name(wk),
                kind_name(rk)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schema from a message body in package `shop`, or from a whole file when the text
    /// starts with `syntax`.
    fn proto(text: &str) -> ProtoSchema {
        if text.starts_with("syntax") {
            return parse(text, &[]).unwrap();
        }
        parse(&format!("syntax = \"proto3\";\npackage shop;\n{text}"), &[]).unwrap()
    }

    /// Each case: what it shows, the reader, the writer, and whether the reader can read
    /// what the writer wrote (a backward check with the reader as the new schema).
    fn check(cases: &[(&str, &str, &str, bool)]) {
        for (what, reader, writer, ok) in cases {
            let problems = read_problems(&proto(reader), &proto(writer));
            assert_eq!(problems.is_empty(), *ok, "{what}: {problems:?}");
        }
    }

    const ORDER: &str = "message Order { string id = 1; int32 qty = 2; }";

    #[test]
    fn fields_and_wire_types() {
        check(&[
            (
                "a new field is skipped by old data",
                "message Order { string id = 1; int32 qty = 2; string note = 3; }",
                ORDER,
                true,
            ),
            (
                "a dropped field is skipped as unknown",
                "message Order { string id = 1; }",
                ORDER,
                true,
            ),
            (
                "a renamed field keeps its number and so its data",
                "message Order { string ident = 1; int32 qty = 2; }",
                ORDER,
                true,
            ),
            (
                "a renumbered field is one dropped and one added",
                "message Order { string id = 1; int32 qty = 3; }",
                ORDER,
                true,
            ),
            (
                "int32 and int64 are both varints",
                "message Order { string id = 1; int64 qty = 2; }",
                ORDER,
                true,
            ),
            (
                "bool is a varint too",
                "message Order { string id = 1; bool qty = 2; }",
                ORDER,
                true,
            ),
            (
                "string and bytes are both length-delimited",
                "message Order { bytes id = 1; int32 qty = 2; }",
                ORDER,
                true,
            ),
            (
                "a varint read as a string is a length",
                "message Order { string id = 1; string qty = 2; }",
                ORDER,
                false,
            ),
            (
                "zigzag varints decode differently",
                "message Order { string id = 1; sint32 qty = 2; }",
                ORDER,
                false,
            ),
            (
                "fixed32 and sfixed32 share four bytes",
                "message M { sfixed32 a = 1; }",
                "message M { fixed32 a = 1; }",
                true,
            ),
            (
                "float and double differ in width",
                "message M { double a = 1; }",
                "message M { float a = 1; }",
                false,
            ),
            (
                "a scalar cannot become a message",
                "message Qty { int32 n = 1; } message Order { string id = 1; Qty qty = 2; }",
                ORDER,
                false,
            ),
            (
                "a map is not a repeated message",
                "message E { string key = 1; int32 value = 2; } message M { repeated E m = 1; }",
                "message M { map<string, int32> m = 1; }",
                false,
            ),
            (
                "map values follow the scalar rules",
                "message M { map<string, int64> m = 1; }",
                "message M { map<string, int32> m = 1; }",
                true,
            ),
            (
                "a map value that changes wire type",
                "message M { map<string, string> m = 1; }",
                "message M { map<string, int32> m = 1; }",
                false,
            ),
        ]);
    }

    #[test]
    fn labels() {
        check(&[
            (
                "repeated numbers are packed, which a singular reader cannot parse",
                "message Order { string id = 1; repeated int32 qty = 2; }",
                ORDER,
                false,
            ),
            (
                "the same for enums",
                "enum S { A = 0; } message M { S s = 1; }",
                "enum S { A = 0; } message M { repeated S s = 1; }",
                false,
            ),
            (
                "a singular string reader keeps the last of a repeated one",
                "message M { string a = 1; }",
                "message M { repeated string a = 1; }",
                true,
            ),
            (
                "and repeated bytes read a singular value",
                "message M { repeated bytes a = 1; }",
                "message M { bytes a = 1; }",
                true,
            ),
            (
                "message fields read across labels",
                "message P { int32 x = 1; } message M { repeated P p = 1; }",
                "message P { int32 x = 1; } message M { optional P p = 1; }",
                true,
            ),
            (
                "proto3 optional adds presence, not a wire change",
                "message M { optional int32 a = 1; }",
                "message M { int32 a = 1; }",
                true,
            ),
            (
                "a number that becomes required",
                "syntax = \"proto2\"; message M { required int32 a = 1; }",
                "syntax = \"proto2\"; message M { optional int32 a = 1; }",
                false,
            ),
            (
                "a string that becomes required (Confluent lets strings change label)",
                "syntax = \"proto2\"; message M { required string a = 1; }",
                "syntax = \"proto2\"; message M { optional string a = 1; }",
                true,
            ),
        ]);
    }

    #[test]
    fn proto2_required_fields() {
        let writer =
            "syntax = \"proto2\"; message M { optional string a = 1; required string b = 2; }";
        check(&[
            ("old data never has the new required field", "syntax = \"proto2\"; message M { optional string a = 1; required string b = 2; required int32 c = 3; }", writer, false),
            ("a new optional field is fine", "syntax = \"proto2\"; message M { optional string a = 1; required string b = 2; optional int32 c = 3; }", writer, true),
            ("dropping a required field is refused too, as Confluent does", "syntax = \"proto2\"; message M { optional string a = 1; }", writer, false),
            ("dropping an optional one is not", "syntax = \"proto2\"; message M { required string b = 2; }", writer, true),
        ]);
    }

    #[test]
    fn enums() {
        let writer =
            "enum Status { NEW = 0; PAID = 1; SENT = 2; } message Order { Status status = 1; }";
        check(&[
            ("a value added", "enum Status { NEW = 0; PAID = 1; SENT = 2; LOST = 3; } message Order { Status status = 1; }", writer, true),
            ("a value removed reads as an unknown number", "enum Status { NEW = 0; PAID = 1; } message Order { Status status = 1; }", writer, true),
            ("a value renamed keeps its number", "enum Status { NEW = 0; PAID = 1; SHIPPED = 2; } message Order { Status status = 1; }", writer, true),
            ("an enum read as int32", "message Order { int32 status = 1; }", writer, true),
            ("an int32 read as an enum", writer, "message Order { int32 status = 1; }", true),
            ("another enum type reads the same numbers", "enum State { OPEN = 0; } message Order { State status = 1; }", writer, true),
            ("an enum read as a string", "message Order { string status = 1; }", writer, false),
            ("an unused enum dropped", ORDER, "enum Unused { X = 0; } message Order { string id = 1; int32 qty = 2; }", true),
        ]);
    }

    #[test]
    fn reserved_numbers_and_names() {
        // `reserved` guards the next edit of one file (protox refuses a field on a reserved
        // number); between two versions it changes nothing on the wire.
        check(&[
            (
                "a field dropped and its number reserved",
                "message Order { reserved 2; reserved \"qty\"; string id = 1; }",
                ORDER,
                true,
            ),
            (
                "a reservation lifted and the number reused with the old type",
                ORDER,
                "message Order { reserved 2; string id = 1; }",
                true,
            ),
            (
                "a reserved range",
                "message Order { reserved 2 to 10; string id = 1; }",
                ORDER,
                true,
            ),
        ]);
        assert!(parse(
            "syntax = \"proto3\"; message M { reserved 2; int32 a = 2; }",
            &[]
        )
        .is_err());
    }

    #[test]
    fn messages_and_packages() {
        let two = "message Order { string id = 1; } message Refund { string order = 1; }";
        check(&[
            ("a message added", "message Order { string id = 1; } message Refund { string order = 1; } message Note { string text = 1; }", two, true),
            ("messages reordered: indexes in records refer to the writer's schema", "message Refund { string order = 1; } message Order { string id = 1; }", two, true),
            ("a message removed: records may name it", "message Order { string id = 1; }", two, false),
            ("a nested message removed", "message Order { string id = 1; }", "message Order { string id = 1; message Line { int32 n = 1; } }", false),
            ("a nested message changed", "message Order { message Line { string n = 1; } }", "message Order { message Line { int32 n = 1; } }", false),
            ("a package change", "syntax = \"proto3\"; package store; message Order { string id = 1; int32 qty = 2; }", ORDER, false),
            ("a field's message type renamed", "message Item { int32 n = 1; } message Order { Item line = 1; }", "message Line { int32 n = 1; } message Order { Line line = 1; }", false),
            ("a field's message type changed inside", "message Line { string n = 1; } message Order { Line line = 1; }", "message Line { int32 n = 1; } message Order { Line line = 1; }", false),
            ("a type named relatively or fully is one type", "message Order { .shop.Order.Line line = 1; message Line { int32 n = 1; } }", "message Order { Line line = 1; message Line { int32 n = 1; } }", true),
            ("a recursive message", "message Node { string name = 1; repeated Node children = 2; string note = 3; }", "message Node { string name = 1; repeated Node children = 2; }", true),
            ("a recursive message whose field changes", "message Node { bytes name = 1; repeated Node children = 2; int64 size = 3; }", "message Node { string name = 1; repeated Node children = 2; string size = 3; }", false),
        ]);
    }

    #[test]
    fn oneofs() {
        check(&[
            (
                "one field moved into a new oneof",
                "message Order { oneof k { string id = 1; } int32 qty = 2; }",
                ORDER,
                true,
            ),
            (
                "two independent fields moved into one oneof",
                "message Order { oneof k { string id = 1; int32 qty = 2; } }",
                ORDER,
                false,
            ),
            (
                "a field moved into a oneof that already had members",
                "message M { oneof k { string a = 1; string b = 2; } }",
                "message M { string a = 1; oneof k { string b = 2; } }",
                false,
            ),
            (
                "a member moved from one oneof to another",
                "message M { oneof x { int32 a = 1; } oneof y { int32 c = 3; int32 b = 2; } }",
                "message M { oneof x { int32 a = 1; int32 b = 2; } oneof y { int32 c = 3; } }",
                false,
            ),
            (
                "two oneofs merged into one",
                "message M { oneof z { int32 a = 1; int32 b = 2; } }",
                "message M { oneof x { int32 a = 1; } oneof y { int32 b = 2; } }",
                false,
            ),
            (
                "a member split off into its own oneof",
                "message M { oneof x { int32 b = 2; } oneof y { int32 a = 1; } }",
                "message M { oneof x { int32 a = 1; int32 b = 2; } }",
                true,
            ),
            (
                "a oneof renamed with the same members",
                "message M { oneof y { int32 a = 1; string b = 2; } }",
                "message M { oneof x { int32 a = 1; string b = 2; } }",
                true,
            ),
            (
                "a oneof renamed while a member changes type",
                "message M { oneof y { int32 a = 1; int32 b = 2; } }",
                "message M { oneof x { int32 a = 1; string b = 2; } }",
                false,
            ),
            (
                "a member added",
                "message M { oneof x { int32 a = 1; int32 b = 2; int32 c = 3; } }",
                "message M { oneof x { int32 a = 1; int32 b = 2; } }",
                true,
            ),
            (
                "a member removed: records that set it lose their value",
                "message M { oneof x { int32 a = 1; } }",
                "message M { oneof x { int32 a = 1; int32 b = 2; } }",
                false,
            ),
            (
                "a member removed while the oneof is renamed",
                "message M { oneof y { int32 a = 1; } }",
                "message M { oneof x { int32 a = 1; int32 b = 2; } }",
                false,
            ),
            (
                "a whole oneof removed",
                "message M { string s = 3; }",
                "message M { string s = 3; oneof x { int32 a = 1; int32 b = 2; } }",
                true,
            ),
            (
                "members moved out to the top level",
                "message M { int32 a = 1; int32 b = 2; }",
                "message M { oneof x { int32 a = 1; int32 b = 2; } }",
                true,
            ),
            (
                "a member moved out whose type changes",
                "message M { int32 a = 1; string b = 2; }",
                "message M { oneof x { int32 a = 1; int32 b = 2; } }",
                false,
            ),
        ]);
    }

    #[test]
    fn imported_types_are_compared_by_content() {
        let reference = |name: &str, package: &str, body: &str| ResolvedReference {
            name: name.into(),
            schema_type: crate::records::SchemaType::Protobuf,
            schema: format!("syntax = \"proto3\"; package {package}; {body}"),
        };
        let using = |file: &str, package: &str| {
            format!("syntax = \"proto3\"; package shop; import \"{file}\"; message Order {{ .{package}.Money price = 1; }}")
        };
        let money_v1 = reference(
            "money.proto",
            "common",
            "message Money { int64 cents = 1; }",
        );
        let writer = parse(&using("money.proto", "common"), &[money_v1]).unwrap();
        let readable = |text: &str, refs: &[ResolvedReference]| {
            read_problems(&parse(text, refs).unwrap(), &writer).is_empty()
        };
        // The same type under another package name is still the same type.
        let moved = reference(
            "money2.proto",
            "finance",
            "message Money { int64 cents = 1; }",
        );
        assert!(readable(&using("money2.proto", "finance"), &[moved]));
        let changed = reference(
            "money.proto",
            "common",
            "message Money { string cents = 1; }",
        );
        assert!(!readable(&using("money.proto", "common"), &[changed]));
        let grown = reference(
            "money.proto",
            "common",
            "message Money { int64 cents = 1; string currency = 2; }",
        );
        assert!(readable(&using("money.proto", "common"), &[grown]));
        // A message of the writer's own file that the reader only imports: records that name
        // it by message index find nothing there.
        let own = proto("message Order { Money price = 1; } message Money { int64 cents = 1; }");
        let importing = parse(
            "syntax = \"proto3\"; package shop; import \"money.proto\"; message Order { Money price = 1; }",
            &[reference("money.proto", "shop", "message Money { int64 cents = 1; }")],
        )
        .unwrap();
        assert!(!read_problems(&importing, &own).is_empty());
        assert!(read_problems(&own, &importing).is_empty());
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

    /// The file's descriptor without what text cannot carry (where each part was written).
    fn descriptor_of(schema: &ProtoSchema) -> FileDescriptorProto {
        let mut d = schema
            .pool
            .get_file_by_name(ROOT_FILE)
            .unwrap()
            .file_descriptor_proto()
            .clone();
        d.source_code_info = None;
        d
    }

    #[test]
    fn base64_descriptors_are_answered_as_proto_text() {
        let sources = [
            r#"syntax = "proto3";
package shop.v1;
import "google/protobuf/timestamp.proto";
option java_package = "com.example.shop";
option go_package = "example.com/shop";
message Order {
  string id = 1;
  repeated int64 lines = 2 [packed = false];
  map<string, Line> by_sku = 3;
  optional string note = 4;
  oneof payment { string card = 5; bytes voucher = 6; }
  google.protobuf.Timestamp at = 7;
  Status status = 8;
  string odd_name = 9 [json_name = "odd"];
  reserved 10, 12 to 15, 100 to max;
  reserved "old", "older";
  message Line { int32 qty = 1; double price = 2; }
  enum Status { option allow_alias = true; NEW = 0; FRESH = 0; PAID = 1; reserved 5 to 9; reserved "GONE"; }
}
enum Top { TOP_UNKNOWN = 0; }
service Orders { rpc Place (Order) returns (Order); rpc Watch (stream Order) returns (stream Order); }
"#,
            r#"syntax = "proto2";
package legacy;
message Item {
  required string sku = 1;
  optional int32 qty = 2 [default = 1];
  optional string label = 3 [default = "a \"b\"\n"];
  repeated sint64 marks = 4 [packed = true];
  extensions 100 to 199;
}
"#,
        ];
        for source in sources {
            let parsed = parse(source, &[]).unwrap();
            assert!(descriptor_as_text(source).is_none(), "already text");
            let text = descriptor_as_text(&serialized(&parsed)).unwrap();
            let again = parse(&text, &[]).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(descriptor_of(&again), descriptor_of(&parsed), "{text}");
        }
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
