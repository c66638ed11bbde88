//! `vltava produce`: lines from stdin or a file become records, like
//! `kafka-console-producer` and `kcat -P`.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::Message;

use crate::client::{self, ClientArgs, Compression, LogContext, Output, Settings};
use crate::output::print_json;
use crate::value_format::{self, ValueFormat};
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  echo hello | vltava produce greetings
  printf 'k1:v1\\nk2:v2\\n' | vltava produce orders --key-separator :
  vltava produce orders --file orders.txt --header source=import --acks all --compression zstd
  vltava produce orders --partition 2 --idempotent < lines.txt
  vltava produce orders --transactional-id importer-1 --file orders.txt
  echo '{\"name\": \"ann\", \"visits\": 3}' | vltava produce users --value-format avro --value-schema-file user.avsc

Each line is one record (its trailing newline is not part of the value). With
--key-separator a line is split at the first separator into key and value; a line without
the separator is sent with no key. With --transactional-id the whole input is one
transaction: committed at the end, aborted if a record fails or on Ctrl-C, so read_committed
consumers see all of it or none. With --value-format avro each value is JSON text, encoded
with the schema, which is registered under the subject <topic>-value in the schema registry
(Confluent's framing: magic byte 0, the schema id, the Avro datum). The exit code is 1 if
any record was not delivered.")]
pub struct ProduceArgs {
    /// Topic to write to
    pub topic: String,
    /// Read lines from this file instead of stdin
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Split each line into key and value at the first occurrence of this string
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header added to every record, repeatable
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = client::parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Send every record to this partition (default: by key hash, or spread when keyless)
    #[arg(long)]
    pub partition: Option<i32>,
    /// Acknowledgements to wait for: 0, 1 or all [default: all]
    #[arg(long, value_parser = client::parse_acks, allow_hyphen_values = true)]
    pub acks: Option<String>,
    /// Compression codec
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
    /// Enable the idempotent producer (no duplicates on retry; implies acks=all)
    #[arg(long)]
    pub idempotent: bool,
    /// Send the whole input as one transaction with this transactional.id (implies
    /// --idempotent)
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
    /// How values are written to the topic
    #[arg(long, value_enum, default_value_t = ValueFormat::String)]
    pub value_format: ValueFormat,
    /// The values' Avro schema (with --value-format avro)
    #[arg(long, value_name = "SCHEMA", conflicts_with = "value_schema_file")]
    pub value_schema: Option<String>,
    /// A file holding the values' Avro schema (with --value-format avro)
    #[arg(long, value_name = "FILE")]
    pub value_schema_file: Option<PathBuf>,
    /// How keys are written to the topic (needs --key-separator)
    #[arg(long, value_enum, default_value_t = ValueFormat::String)]
    pub key_format: ValueFormat,
    /// The keys' Avro schema (with --key-format avro)
    #[arg(long, value_name = "SCHEMA", conflicts_with = "key_schema_file")]
    pub key_schema: Option<String>,
    /// A file holding the keys' Avro schema (with --key-format avro)
    #[arg(long, value_name = "FILE")]
    pub key_schema_file: Option<PathBuf>,
    /// Schema registry for --value-format / --key-format avro
    #[arg(
        long,
        env = "VLTAVA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081",
        value_name = "URL"
    )]
    pub schema_registry: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Counts deliveries and reports each failure (the first few in full).
struct DeliveryCounter {
    log: LogContext,
    delivered: AtomicU64,
    failed: AtomicU64,
}

const SHOWN_FAILURES: u64 = 10;

impl ClientContext for DeliveryCounter {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.log.log(level, fac, msg)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason)
    }
}

impl ProducerContext for DeliveryCounter {
    /// The input line number of the record.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, line: usize) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, m)) => {
                let n = self.failed.fetch_add(1, Ordering::Relaxed);
                if n < SHOWN_FAILURES {
                    eprintln!(
                        "error: record from line {line} (topic {}, partition {}) not delivered: {}",
                        m.topic(),
                        m.partition(),
                        delivery_error(e)
                    );
                } else if n == SHOWN_FAILURES {
                    eprintln!("error: more records not delivered; the count follows at the end");
                }
            }
        }
    }
}

fn delivery_error(e: &KafkaError) -> String {
    match e {
        KafkaError::MessageProduction(code) => code.to_string(),
        other => other.to_string(),
    }
}

/// The encoder `--{what}-format` asks for: none for strings; for Avro, the schema from the
/// flag or file, registered under `subject`.
fn encoder_for(
    what: &str,
    format: ValueFormat,
    schema: &Option<String>,
    schema_file: &Option<PathBuf>,
    registry: &str,
    subject: &str,
) -> Result<Option<value_format::Encoder>, Error> {
    let text = match (schema, schema_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(p)) => Some(std::fs::read_to_string(p).map_err(|source| Error::Read {
            path: p.display().to_string(),
            source,
        })?),
        (None, None) => None,
    };
    match (format, text) {
        (ValueFormat::String, None) => Ok(None),
        (ValueFormat::String, Some(_)) => Err(Error::usage(format!(
            "--{what}-schema needs --{what}-format avro or json"
        ))),
        (_, None) => Err(Error::usage(format!(
            "--{what}-format needs --{what}-schema or --{what}-schema-file"
        ))),
        (format, Some(text)) => value_format::encoder(registry, subject, format, &text).map(Some),
    }
}

/// Splits a line into key and value at the first `sep`; no separator means no key.
pub fn split_key<'a>(line: &'a [u8], sep: Option<&[u8]>) -> (Option<&'a [u8]>, &'a [u8]) {
    match sep {
        Some(sep) if !sep.is_empty() => match line.windows(sep.len()).position(|w| w == sep) {
            Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
            None => (None, line),
        },
        _ => (None, line),
    }
}

/// Reads lines on another thread so that the main loop can serve delivery reports and
/// notice Ctrl-C while input is slow (an interactive terminal).
fn spawn_reader(input: Box<dyn Read + Send>) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::sync_channel(4096);
    std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 16, input);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

pub fn run(a: ProduceArgs) -> Result<(), Error> {
    let mut settings = Settings::new(&a.client, &[])?;
    // A CLI user should hear about an unreachable partition within a minute, not five.
    settings.set_default("message.timeout.ms", "60000");
    if let Some(acks) = &a.acks {
        settings.set("acks", acks.as_str());
    }
    if let Some(c) = a.compression {
        settings.set("compression.type", c.as_str());
    }
    if a.idempotent || a.transactional_id.is_some() {
        if a.acks.as_deref().is_some_and(|x| x != "all") {
            return Err(Error::usage(
                "--idempotent and --transactional-id require --acks all",
            ));
        }
        settings.set("enable.idempotence", "true");
    }
    if let Some(id) = &a.transactional_id {
        settings.set("transactional.id", id.as_str());
    }
    let key_encoder = encoder_for(
        "key",
        a.key_format,
        &a.key_schema,
        &a.key_schema_file,
        &a.schema_registry,
        &format!("{}-key", a.topic),
    )?;
    if key_encoder.is_some() && a.key_separator.is_none() {
        return Err(Error::usage("--key-format avro needs --key-separator"));
    }
    let encoder = encoder_for(
        "value",
        a.value_format,
        &a.value_schema,
        &a.value_schema_file,
        &a.schema_registry,
        &format!("{}-value", a.topic),
    )?;
    let (input, input_name): (Box<dyn Read + Send>, String) = match &a.file {
        Some(p) => (
            Box::new(std::fs::File::open(p).map_err(|source| Error::Read {
                path: p.display().to_string(),
                source,
            })?),
            p.display().to_string(),
        ),
        None => (Box::new(std::io::stdin()), "stdin".to_string()),
    };
    let context = DeliveryCounter {
        log: settings.log_context(),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let producer: BaseProducer<DeliveryCounter> = settings.create(context)?;
    let txn_timeout = Duration::from_secs(60);
    let txn_error = |what: &str, source: KafkaError| Error::Kafka {
        context: format!("cannot {what} the transaction"),
        source,
    };
    if a.transactional_id.is_some() {
        producer
            .init_transactions(txn_timeout)
            .map_err(|e| txn_error("initialise", e))?;
        producer
            .begin_transaction()
            .map_err(|e| txn_error("begin", e))?;
    }
    // Producers may auto-create the topic here, as Kafka's console producer does.
    let info = client::topic_metadata(producer.client(), &settings, &a.topic)?;
    if let Some(p) = a.partition {
        if !info.partitions.iter().any(|x| x.id == p) {
            return Err(Error::Refused {
                resource: format!("topic '{}'", a.topic),
                reason: format!("has no partition {p} (it has {})", info.partitions.len()),
            });
        }
    }
    let mut headers = OwnedHeaders::new();
    for (k, v) in &a.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let sep = a.key_separator.as_deref().map(str::as_bytes);
    let stop = client::stop_flag();
    let lines = spawn_reader(input);
    let mut sent = 0u64;
    let mut line_no = 0usize;
    let mut send_failed = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let line = match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                return Err(Error::Read {
                    path: input_name,
                    source: e,
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                producer.poll(Duration::ZERO);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        line_no += 1;
        let (key, value) = split_key(&line, sep);
        let encoded_key;
        let key = match (&key_encoder, key) {
            (Some(codec), Some(k)) => {
                encoded_key = codec.encode_json(k).map_err(|e| Error::Schema {
                    reason: format!("line {line_no}, key: {e}"),
                })?;
                Some(&encoded_key[..])
            }
            (_, k) => k,
        };
        let encoded;
        let value = match &encoder {
            None => value,
            Some(codec) => {
                encoded = codec.encode_json(value).map_err(|e| Error::Schema {
                    reason: format!("line {line_no}: {e}"),
                })?;
                &encoded[..]
            }
        };
        let mut record = BaseRecord::with_opaque_to(&a.topic, line_no).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = a.partition {
            record = record.partition(p);
        }
        if !a.headers.is_empty() {
            record = record.headers(headers.clone());
        }
        let mut nap = client::Nap::default();
        loop {
            match producer.send(record) {
                Ok(()) => {
                    sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    nap.wait(&producer);
                }
                Err((e, _)) => {
                    send_failed += 1;
                    eprintln!(
                        "error: record from line {line_no} not sent: {}",
                        delivery_error(&e)
                    );
                    break;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    // Deliver what is queued: records resolve by message.timeout.ms at the latest.
    // A transaction stopped by Ctrl-C is aborted below, which discards what is queued.
    let transactional = a.transactional_id.is_some();
    client::drain(&producer, &|| transactional && stop.load(Ordering::Relaxed));
    if a.transactional_id.is_some() {
        let failures = producer.context().failed.load(Ordering::Relaxed) + send_failed;
        if failures > 0 || stop.load(Ordering::Relaxed) {
            producer
                .abort_transaction(txn_timeout)
                .map_err(|e| txn_error("abort", e))?;
            return Err(Error::Refused {
                resource: format!("transaction of {sent} records"),
                reason: "aborted: no record of it is visible to read_committed consumers".into(),
            });
        } else {
            producer
                .commit_transaction(txn_timeout)
                .map_err(|e| txn_error("commit", e))?;
        }
    }
    if let Some((code, reason)) = producer.client().fatal_error() {
        eprintln!("error: the producer hit a fatal error: {reason} ({code})");
    }
    let ctx = producer.context();
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    let failed = ctx.failed.load(Ordering::Relaxed) + send_failed;
    let total = sent + send_failed;
    if settings.output == Output::Json {
        print_json(&serde_json::json!({
            "topic": a.topic, "records": total, "delivered": delivered, "failed": failed
        }))?;
    } else if std::io::stderr().is_terminal() {
        eprintln!("Produced {delivered} records to {}.", a.topic);
    }
    if failed > 0 {
        return Err(Error::Delivery { failed, total });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_split() {
        assert_eq!(
            split_key(b"k:v:w", Some(b":")),
            (Some(&b"k"[..]), &b"v:w"[..])
        );
        assert_eq!(split_key(b"novalue", Some(b":")), (None, &b"novalue"[..]));
        assert_eq!(split_key(b":v", Some(b":")), (Some(&b""[..]), &b"v"[..]));
        assert_eq!(
            split_key(b"a=>b", Some(b"=>")),
            (Some(&b"a"[..]), &b"b"[..])
        );
        assert_eq!(split_key(b"k:v", None), (None, &b"k:v"[..]));
    }
}
