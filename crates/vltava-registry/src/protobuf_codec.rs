//! Protobuf values as Confluent's serializers frame them: magic byte 0, the schema id as 4
//! big-endian bytes, the message indexes (which message of the file: a zigzag varint count,
//! then each index as a zigzag varint; the first message, `[0]`, is written as a single 0),
//! then the message's bytes. To and from JSON text in Protobuf's JSON mapping, for
//! `vltava produce|consume --value-format protobuf`.

use protox::prost_reflect::prost::Message;
use protox::prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::avro_codec::{CodecError, MAGIC_BYTE};
use crate::formats::protobuf::{self, ProtoSchema};

pub struct ProtobufCodec {
    id: i32,
    schema: ProtoSchema,
}

fn schema_error(reason: impl ToString) -> CodecError {
    CodecError::Schema {
        reason: reason.to_string(),
    }
}

/// A zigzag varint at the start of `bytes`: its value and the rest.
fn zigzag(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let v = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

impl ProtobufCodec {
    /// Schema `id`'s `.proto` text (without references to other subjects).
    pub fn parse(id: i32, schema: &str) -> Result<ProtobufCodec, CodecError> {
        let schema = protobuf::parse(schema, &[]).map_err(schema_error)?;
        protobuf::message_at(&schema, &[0])
            .ok_or_else(|| schema_error("the .proto text declares no message"))?;
        Ok(ProtobufCodec { id, schema })
    }

    /// JSON text to a framed record of the file's first message, as Confluent's console
    /// producer writes by default.
    pub fn encode_json(&self, text: &[u8]) -> Result<Vec<u8>, CodecError> {
        let descriptor = protobuf::message_at(&self.schema, &[0]).expect("checked in parse");
        let mut de = serde_json::Deserializer::from_slice(text);
        let message = DynamicMessage::deserialize(descriptor, &mut de)
            .and_then(|m| de.end().map(|()| m))
            .map_err(|e| CodecError::Mismatch {
                reason: e.to_string(),
            })?;
        let mut out = vec![MAGIC_BYTE];
        out.extend(self.id.to_be_bytes());
        out.push(0);
        message.encode(&mut out).expect("a Vec grows as needed");
        Ok(out)
    }

    /// A framed record's payload (after magic byte and id) as JSON.
    pub fn decode_json(&self, payload: &[u8]) -> Result<serde_json::Value, CodecError> {
        let bad = |reason: String| CodecError::Datum { reason };
        let (count, mut rest) = zigzag(payload).ok_or_else(|| bad("no message indexes".into()))?;
        let mut indexes = Vec::new();
        if count == 0 {
            indexes.push(0);
        }
        for _ in 0..count.clamp(0, 64) {
            let (i, r) = zigzag(rest).ok_or_else(|| bad("truncated message indexes".into()))?;
            indexes.push(usize::try_from(i).map_err(|_| bad(format!("message index {i}")))?);
            rest = r;
        }
        let descriptor: MessageDescriptor = protobuf::message_at(&self.schema, &indexes)
            .ok_or_else(|| bad(format!("no message at indexes {indexes:?}")))?;
        let message = DynamicMessage::decode(descriptor, rest).map_err(|e| bad(e.to_string()))?;
        let options = SerializeOptions::new().skip_default_fields(true);
        message
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"syntax = "proto3";
        message Order { string id = 1; int32 qty = 2; message Line { string sku = 1; } repeated Line lines = 3; }
        message Other { bool flag = 1; }"#;

    #[test]
    fn json_round_trips_through_confluents_framing() {
        let codec = ProtobufCodec::parse(7, ORDER).unwrap();
        let framed = codec
            .encode_json(br#"{"id":"o-1","qty":3,"lines":[{"sku":"a"}]}"#)
            .unwrap();
        // Magic byte, id 7, message indexes [0] as one zero byte, then field 1 ("o-1").
        assert_eq!(&framed[..7], &[0, 0, 0, 0, 7, 0, 0x0a]);
        let (id, payload) = crate::avro_codec::unframe(&framed).unwrap();
        assert_eq!(id, 7);
        assert_eq!(
            codec.decode_json(payload).unwrap(),
            serde_json::json!({"id": "o-1", "qty": 3, "lines": [{"sku": "a"}]})
        );
        // Indexes [1] name the second message; [0, 0] the nested one.
        assert_eq!(
            codec.decode_json(&[2, 2, 0x08, 1]).unwrap(),
            serde_json::json!({"flag": true})
        );
        assert_eq!(
            codec.decode_json(&[4, 0, 0, 0x0a, 1, b'z']).unwrap(),
            serde_json::json!({"sku": "z"})
        );
        assert!(codec.encode_json(br#"{"nope":1}"#).is_err());
        assert!(codec.encode_json(br#"{"qty":"x"}"#).is_err());
        assert!(codec.decode_json(&[2, 20]).is_err());
        assert!(codec.decode_json(&[]).is_err());
        assert!(ProtobufCodec::parse(1, "syntax = \"proto3\";").is_err());
    }
}
