//! `--value-format avro`: values are JSON text on the terminal and Confluent-framed Avro in
//! the topic, with schemas from a schema registry, as `kafka-avro-console-producer` and
//! `-consumer` do.

use std::collections::HashMap;
use std::time::Duration;

use clap::ValueEnum;
use vltava_registry::avro_codec::{self, AvroCodec};
use vltava_registry::http_client;

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ValueFormat {
    /// The bytes as they are
    #[default]
    String,
    /// Avro through a schema registry; JSON text on the terminal
    Avro,
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
pub fn encoder(registry: &str, subject: &str, schema: &str) -> Result<AvroCodec, Error> {
    let id = runtime()?
        .block_on(http_client::register_avro(
            registry,
            subject,
            schema,
            REGISTRY_TIMEOUT,
        ))
        .map_err(registry_error(registry))?;
    AvroCodec::parse(id, schema).map_err(|e| Error::Schema {
        reason: e.to_string(),
    })
}

/// Decodes framed values, fetching each schema id from the registry once.
pub struct Decoder {
    registry: String,
    runtime: tokio::runtime::Runtime,
    codecs: HashMap<i32, AvroCodec>,
}

impl Decoder {
    pub fn new(registry: &str) -> Result<Decoder, Error> {
        Ok(Decoder {
            registry: registry.to_string(),
            runtime: runtime()?,
            codecs: HashMap::new(),
        })
    }

    /// The value as JSON text, or why it is not a framed Avro value.
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
            if schema_type != "AVRO" {
                return Err(format!("schema {id} is {schema_type}, not Avro"));
            }
            let codec = AvroCodec::parse(id, &schema).map_err(|e| e.to_string())?;
            self.codecs.insert(id, codec);
        }
        let json = self.codecs[&id]
            .decode_json(payload)
            .map_err(|e| e.to_string())?;
        Ok(json.to_string().into_bytes())
    }
}
