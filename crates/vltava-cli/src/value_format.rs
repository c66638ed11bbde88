//! `--value-format avro|json|protobuf`: values are JSON text on the terminal and
//! Confluent-framed Avro, JSON Schema or Protobuf values in the topic, with schemas from a schema registry, as
//! `kafka-avro-console-producer` and `-consumer` do.

use std::collections::HashMap;
use std::time::Duration;

use clap::ValueEnum;
use vltava_registry::avro_codec::{self, AvroCodec, CodecError};
use vltava_registry::http_client;
use vltava_registry::json_codec::JsonCodec;
use vltava_registry::protobuf_codec::ProtobufCodec;

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ValueFormat {
    /// The bytes as they are
    #[default]
    String,
    /// Avro through a schema registry; JSON text on the terminal
    Avro,
    /// JSON Schema through a schema registry (values are checked against the schema)
    Json,
    /// Protobuf through a schema registry (the .proto text's first message; Protobuf's JSON
    /// mapping on the terminal)
    Protobuf,
}

/// Encodes JSON text the way `--*-format` asks.
pub enum Encoder {
    Avro(AvroCodec),
    Json(JsonCodec),
    Protobuf(ProtobufCodec),
}

impl Encoder {
    pub fn encode_json(&self, text: &[u8]) -> Result<Vec<u8>, CodecError> {
        match self {
            Encoder::Avro(c) => c.encode_json(text),
            Encoder::Json(c) => c.encode_json(text),
            Encoder::Protobuf(c) => c.encode_json(text),
        }
    }
}

const REGISTRY_TIMEOUT: Duration = Duration::from_secs(30);

fn registry_error(registry: &str) -> impl Fn(vltava_registry::RegistryError) -> Error + '_ {
    move |e| Error::Schema {
        reason: format!("{registry}: {e}"),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Schema {
            reason: e.to_string(),
        })
}

/// Registers `schema` under `subject` (`<topic>-value` or `<topic>-key`, the default
/// subject name strategy) and returns the encoder for its id.
pub fn encoder(
    registry: &str,
    subject: &str,
    format: ValueFormat,
    schema: &str,
) -> Result<Encoder, Error> {
    let schema_type = match format {
        ValueFormat::Json => "JSON",
        ValueFormat::Protobuf => "PROTOBUF",
        _ => "AVRO",
    };
    let id = runtime()?
        .block_on(http_client::register(
            registry,
            subject,
            schema_type,
            schema,
            REGISTRY_TIMEOUT,
        ))
        .map_err(registry_error(registry))?;
    let codec_error = |e: CodecError| Error::Schema {
        reason: e.to_string(),
    };
    match format {
        ValueFormat::Json => JsonCodec::parse(id, schema)
            .map(Encoder::Json)
            .map_err(codec_error),
        ValueFormat::Protobuf => ProtobufCodec::parse(id, schema)
            .map(Encoder::Protobuf)
            .map_err(codec_error),
        _ => AvroCodec::parse(id, schema)
            .map(Encoder::Avro)
            .map_err(codec_error),
    }
}

/// Decodes framed values, fetching each schema id from the registry once.
pub struct Decoder {
    registry: String,
    runtime: tokio::runtime::Runtime,
    /// By schema id.
    codecs: HashMap<i32, Reader>,
}

/// How one schema's values are read.
enum Reader {
    Avro(AvroCodec),
    Json,
    Protobuf(ProtobufCodec),
}

impl Decoder {
    pub fn new(registry: &str) -> Result<Decoder, Error> {
        Ok(Decoder {
            registry: registry.to_string(),
            runtime: runtime()?,
            codecs: HashMap::new(),
        })
    }

    /// The value as JSON text, or why it is not a framed Avro or JSON Schema value. The
    /// schema's type in the registry decides how the payload is read.
    pub fn decode(&mut self, value: &[u8]) -> Result<Vec<u8>, String> {
        let (id, payload) = avro_codec::unframe(value).map_err(|e| e.to_string())?;
        if !self.codecs.contains_key(&id) {
            let (schema_type, schema) = self
                .runtime
                .block_on(http_client::schema_by_id(
                    &self.registry,
                    id,
                    REGISTRY_TIMEOUT,
                ))
                .map_err(|e| format!("schema {id}: {e}"))?;
            let reader = match schema_type.as_str() {
                "AVRO" => Reader::Avro(AvroCodec::parse(id, &schema).map_err(|e| e.to_string())?),
                "JSON" => Reader::Json,
                "PROTOBUF" => {
                    Reader::Protobuf(ProtobufCodec::parse(id, &schema).map_err(|e| e.to_string())?)
                }
                other => return Err(format!("schema {id} is {other}, which is not decoded here")),
            };
            self.codecs.insert(id, reader);
        }
        let json = match &self.codecs[&id] {
            Reader::Avro(codec) => codec.decode_json(payload).map_err(|e| e.to_string())?,
            Reader::Json => serde_json::from_slice(payload)
                .map_err(|e| format!("not JSON after the frame: {e}"))?,
            Reader::Protobuf(codec) => codec.decode_json(payload).map_err(|e| e.to_string())?,
        };
        Ok(json.to_string().into_bytes())
    }
}
