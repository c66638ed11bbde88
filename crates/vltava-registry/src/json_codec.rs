//! JSON Schema values as Confluent's JSON serializers frame them: magic byte 0, the schema id
//! as 4 big-endian bytes, then the JSON text, checked against the schema before it is sent.

use crate::avro_codec::{CodecError, MAGIC_BYTE};

pub struct JsonCodec {
    id: i32,
    validator: jsonschema::Validator,
}

impl JsonCodec {
    pub fn parse(id: i32, schema: &str) -> Result<JsonCodec, CodecError> {
        let schema: serde_json::Value =
            serde_json::from_str(schema).map_err(|e| CodecError::Schema {
                reason: e.to_string(),
            })?;
        let validator = jsonschema::validator_for(&schema).map_err(|e| CodecError::Schema {
            reason: e.to_string(),
        })?;
        Ok(JsonCodec { id, validator })
    }

    /// JSON text to a framed record, if the schema accepts it.
    pub fn encode_json(&self, text: &[u8]) -> Result<Vec<u8>, CodecError> {
        let json: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| CodecError::NotJson {
                reason: e.to_string(),
            })?;
        if let Some(e) = self.validator.iter_errors(&json).next() {
            return Err(CodecError::Mismatch {
                reason: e.to_string(),
            });
        }
        let mut out = vec![MAGIC_BYTE];
        out.extend(self.id.to_be_bytes());
        out.extend(json.to_string().into_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_are_framed_and_invalid_ones_refused() {
        let codec = JsonCodec::parse(
            9,
            r#"{"type":"object","properties":{"sku":{"type":"string"}},"required":["sku"]}"#,
        )
        .unwrap();
        let framed = codec.encode_json(br#"{ "sku": "a-1" }"#).unwrap();
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 9]);
        assert_eq!(&framed[5..], br#"{"sku":"a-1"}"#);
        assert!(matches!(
            codec.encode_json(br#"{"qty":1}"#),
            Err(CodecError::Mismatch { .. })
        ));
        assert!(matches!(
            codec.encode_json(b"{"),
            Err(CodecError::NotJson { .. })
        ));
        assert!(JsonCodec::parse(1, r#"{"type":5}"#).is_err());
    }
}
