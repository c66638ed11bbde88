//! `vltava consume`: print records, like `kafka-console-consumer` and `kcat -C`.
//!
//! Without `--group` the consumer assigns partitions itself (no group coordinator needed)
//! and commits nothing; with `--group` it joins the group, and commits what it printed when
//! it stops (Ctrl-C, `--max-messages`, `--timeout`, `--exit-at-end`).

use std::collections::HashSet;
use std::io::{BufWriter, IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::client::{self, ClientArgs, LogContext, Output, Settings};
use crate::template::{RecordView, Template};
use crate::value_format::{Decoder, ValueFormat};
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava consume orders --from-beginning
  vltava consume orders --from-beginning --exit-at-end --format '%k %s %p %o %T %h'
  vltava consume orders --partition 0 --offset 100 --max-messages 10
  vltava consume orders --partition 0 --offset -5        (the last five records)
  vltava consume orders --group billing --from-beginning
  vltava consume orders --from-beginning --timeout 5s -o json | jq .value

Format tokens: %t topic, %p partition, %o offset, %k key, %s value, %K key length,
%S value length, %T timestamp (ms), %h headers (k=v,...), %% percent; \\n \\t escapes.")]
pub struct ConsumeArgs {
    /// Topic to read
    pub topic: String,
    /// Start at the earliest offset (default: only new records)
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start offset: earliest, latest, N (absolute) or -N (N before the end)
    #[arg(long, allow_hyphen_values = true, value_parser = parse_start_offset)]
    pub offset: Option<StartOffset>,
    /// Only these partitions (repeatable or comma-separated; default: all)
    #[arg(long, value_delimiter = ',', conflicts_with = "group")]
    pub partition: Vec<i32>,
    /// Consume as a member of this consumer group, committing offsets
    #[arg(long, conflicts_with = "offset")]
    pub group: Option<String>,
    /// Stop after this many records
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no record arrives for this long (ms, or 500ms, 5s, 1m); with --group, counted
    /// from the first assignment (or from 30 s after start if none comes)
    #[arg(long, value_parser = client::parse_duration)]
    pub timeout: Option<Duration>,
    /// Stop once every partition has been read to its end
    #[arg(short = 'e', long)]
    pub exit_at_end: bool,
    /// read_committed skips aborted transactional records [default: read_committed]
    #[arg(long, value_enum)]
    pub isolation_level: Option<IsolationLevel>,
    /// Output template (see below) [default: '%s\n', the value]
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// How values are read: as they are, or Confluent-framed Avro shown as JSON text
    #[arg(long, value_enum, default_value_t = ValueFormat::String)]
    pub value_format: ValueFormat,
    /// How keys are read, like --value-format
    #[arg(long, value_enum, default_value_t = ValueFormat::String)]
    pub key_format: ValueFormat,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum IsolationLevel {
    ReadCommitted,
    ReadUncommitted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Earliest,
    Latest,
    At(i64),
    /// This many records before the end.
    Tail(i64),
}

pub fn parse_start_offset(s: &str) -> Result<StartOffset, String> {
    match s {
        "earliest" | "beginning" => Ok(StartOffset::Earliest),
        "latest" | "end" => Ok(StartOffset::Latest),
        _ => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(StartOffset::At(n)),
            Ok(n) if n > i64::MIN => Ok(StartOffset::Tail(-n)),
            _ => Err(format!(
                "invalid offset '{s}': expected earliest, latest, N or -N"
            )),
        },
    }
}

impl StartOffset {
    fn to_offset(self) -> Offset {
        match self {
            StartOffset::Earliest => Offset::Beginning,
            StartOffset::Latest => Offset::End,
            StartOffset::At(n) => Offset::Offset(n),
            StartOffset::Tail(n) => Offset::OffsetTail(n),
        }
    }
}

#[derive(Serialize)]
struct RecordJson<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
}

fn text(b: Option<&[u8]>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
}

fn render(
    m: &BorrowedMessage<'_>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    template: Option<&Template>,
    out: &mut Vec<u8>,
) {
    let headers: Vec<(&str, Option<&[u8]>)> = m
        .headers()
        .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    match template {
        Some(t) => t.render(
            &RecordView {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                key,
                value,
                timestamp_ms: m.timestamp().to_millis(),
                headers,
            },
            out,
        ),
        None => {
            let j = RecordJson {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
                key: text(key),
                value: text(value),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), text(v)))
                    .collect(),
            };
            serde_json::to_writer(&mut *out, &j).expect("serialisable");
            out.push(b'\n');
        }
    }
}

pub fn run(a: ConsumeArgs) -> Result<(), Error> {
    let template = match (&a.format, a.client.output) {
        (Some(_), Output::Json) => {
            return Err(Error::usage("--format and -o json cannot be used together"))
        }
        (Some(f), Output::Table) => Some(Template::parse(f).map_err(Error::Usage)?),
        (None, Output::Table) => Some(Template::parse("%s\\n").expect("default template")),
        (None, Output::Json) => None,
    };
    let mut decoder = match (a.value_format, a.key_format) {
        (ValueFormat::String, ValueFormat::String) => None,
        _ => Some(Decoder::new(&a.schema_registry)?),
    };
    let mut settings = Settings::new(&a.client, &[])?;
    if let Some(level) = a.isolation_level {
        let v = match level {
            IsolationLevel::ReadCommitted => "read_committed",
            IsolationLevel::ReadUncommitted => "read_uncommitted",
        };
        settings.set("isolation.level", v);
    }
    settings.set(
        "enable.partition.eof",
        if a.exit_at_end { "true" } else { "false" },
    );
    settings.set_default("allow.auto.create.topics", "false");
    match &a.group {
        Some(g) => {
            settings.set("group.id", g.as_str());
            settings.set_default("enable.auto.commit", "true");
            settings.set(
                "auto.offset.reset",
                if a.from_beginning {
                    "earliest"
                } else {
                    "latest"
                },
            );
        }
        None => {
            // librdkafka's assign() needs a group id; this one never joins or commits.
            settings.set_default("group.id", format!("vltava-consume-{}", std::process::id()));
            settings.set("enable.auto.commit", "false");
            settings.set("enable.auto.offset.store", "false");
        }
    }
    let consumer: BaseConsumer<LogContext> = settings.create(settings.log_context())?;
    let info = client::topic_metadata(consumer.client(), &settings, &a.topic)?;
    let partition_count = if a.group.is_some() {
        consumer
            .subscribe(&[&a.topic])
            .map_err(Error::kafka(format!("cannot subscribe to '{}'", a.topic)))?;
        None
    } else {
        let wanted: Vec<i32> = if a.partition.is_empty() {
            info.partitions.iter().map(|p| p.id).collect()
        } else {
            for p in &a.partition {
                if !info.partitions.iter().any(|x| x.id == *p) {
                    return Err(Error::Refused {
                        resource: format!("topic '{}'", a.topic),
                        reason: format!("has no partition {p} (it has {})", info.partitions.len()),
                    });
                }
            }
            a.partition.clone()
        };
        let start = match (a.offset, a.from_beginning) {
            (Some(o), _) => o,
            (None, true) => StartOffset::Earliest,
            (None, false) => StartOffset::Latest,
        };
        let mut tpl = TopicPartitionList::new();
        for p in &wanted {
            tpl.add_partition_offset(&a.topic, *p, start.to_offset())
                .map_err(Error::kafka("cannot build assignment"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(Error::kafka(format!("cannot assign '{}'", a.topic)))?;
        Some(wanted.len())
    };

    let stop = client::stop_flag();
    let stdout = std::io::stdout();
    let interactive = stdout.is_terminal();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut buf = Vec::with_capacity(4096);
    let mut count = 0u64;
    let mut last_record = Instant::now();
    let mut assigned = a.group.is_none();
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut warned: HashSet<String> = HashSet::new();
    let result = loop {
        if stop.load(Ordering::Relaxed) || a.max_messages.is_some_and(|m| count >= m) {
            break Ok(());
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                if let Err(e) = out.flush() {
                    break Err(Error::from(e));
                }
                // In a group, the wait for records starts once partitions are assigned: the
                // join itself may take longer than the timeout.
                if !assigned {
                    assigned = consumer.assignment().is_ok_and(|t| t.count() > 0)
                        || last_record.elapsed() >= JOIN_ALLOWANCE;
                    if assigned {
                        last_record = Instant::now();
                    }
                }
                if assigned && a.timeout.is_some_and(|t| last_record.elapsed() >= t) {
                    break Ok(());
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                let expected = match partition_count {
                    Some(n) => n,
                    None => consumer.assignment().map(|t| t.count()).unwrap_or(0),
                };
                if a.exit_at_end && expected > 0 && at_end.len() >= expected {
                    break Ok(());
                }
            }
            Some(Err(e)) => {
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                    break Err(Error::UnknownTopic {
                        topic: a.topic.clone(),
                    });
                }
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    break Err(Error::Refused {
                        resource: "consumer".into(),
                        reason: format!("{reason} ({code:?})"),
                    });
                }
                if e.rdkafka_error_code().is_some_and(permanent) {
                    break Err(Error::kafka("the group refused this consumer")(e));
                }
                let msg = e.to_string();
                if warned.insert(msg.clone()) {
                    eprintln!("warning: {msg}");
                }
            }
            Some(Ok(m)) => {
                last_record = Instant::now();
                at_end.remove(&m.partition());
                buf.clear();
                let mut decode = |bytes: Option<&[u8]>, what: &str| match (&mut decoder, bytes) {
                    (Some(d), Some(b)) => match d.decode(b) {
                        Ok(json) => Some(json),
                        Err(e) => {
                            eprintln!(
                                "warning: partition {} offset {} {what}: {e}",
                                m.partition(),
                                m.offset()
                            );
                            None
                        }
                    },
                    _ => None,
                };
                let decoded_value = match a.value_format {
                    ValueFormat::String => None,
                    _ => decode(m.payload(), "value"),
                };
                let decoded_key = match a.key_format {
                    ValueFormat::String => None,
                    _ => decode(m.key(), "key"),
                };
                render(
                    &m,
                    decoded_key.as_deref().or(m.key()),
                    decoded_value.as_deref().or(m.payload()),
                    template.as_ref(),
                    &mut buf,
                );
                count += 1;
                let written =
                    out.write_all(&buf)
                        .and_then(|()| if interactive { out.flush() } else { Ok(()) });
                if let Err(e) = written {
                    break Err(Error::from(e));
                }
            }
        }
    };
    let flushed = out.flush();
    drop(out);
    if a.group.is_some() {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            // Nothing consumed since the last commit.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
            Err(e) => eprintln!("warning: cannot commit offsets of group: {e}"),
        }
        consumer.unsubscribe();
    }
    if std::io::stderr().is_terminal() {
        eprintln!("Consumed {count} records.");
    }
    result?;
    flushed?;
    Ok(())
}

/// How long `--timeout` waits for a group to assign partitions before it starts counting
/// anyway (a member can be left with none).
const JOIN_ALLOWANCE: Duration = Duration::from_secs(30);

/// Errors that retrying cannot fix: the group or broker refuses this consumer's settings.
fn permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::InvalidSessionTimeout
            | RDKafkaErrorCode::InconsistentGroupProtocol
            | RDKafkaErrorCode::UnsupportedAssignor
            | RDKafkaErrorCode::FencedInstanceId
            | RDKafkaErrorCode::InvalidGroupId
            | RDKafkaErrorCode::GroupMaxSizeReached
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets() {
        assert_eq!(parse_start_offset("earliest"), Ok(StartOffset::Earliest));
        assert_eq!(parse_start_offset("beginning"), Ok(StartOffset::Earliest));
        assert_eq!(parse_start_offset("end"), Ok(StartOffset::Latest));
        assert_eq!(parse_start_offset("42"), Ok(StartOffset::At(42)));
        assert_eq!(parse_start_offset("-5"), Ok(StartOffset::Tail(5)));
        assert!(parse_start_offset("soon").is_err());
    }
}
