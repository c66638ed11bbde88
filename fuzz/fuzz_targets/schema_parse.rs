//! Schema texts arrive in the registry's REST bodies from anyone who can reach it: whatever
//! the text, parsing, the compatibility check between two schemas and the `.proto` text
//! rendering of a base64 descriptor must answer (a reason at worst), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vltava_registry::formats::{parse, protobuf};
use vltava_registry::records::SchemaType;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let schema_type = match kind % 3 {
        0 => SchemaType::Avro,
        1 => SchemaType::Json,
        _ => SchemaType::Protobuf,
    };
    let text = String::from_utf8_lossy(rest);
    // Two schemas: the text split at its first NUL, as writer and reader.
    let (writer, reader) = text.split_once('\0').unwrap_or((&text, &text));
    if schema_type == SchemaType::Protobuf {
        let _ = protobuf::descriptor_as_text(writer);
    }
    let (Ok(w), Ok(r)) = (parse(schema_type, writer, &[]), parse(schema_type, reader, &[])) else {
        return;
    };
    let _ = r.read_problems(&w);
    let _ = w.read_problems(&r);
    let _ = w.serialized();
});
