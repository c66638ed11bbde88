//! `vltava config`: describe, set and delete topic and broker configs.
//!
//! Changes go through IncrementalAlterConfigs (what `kafka-configs --alter` uses), so a
//! `set` touches only the keys it names.

use clap::{ArgGroup, Args, Subcommand};
use rdkafka::admin::{AdminClient, ConfigSource, ResourceSpecifier};
use serde::Serialize;

use crate::client::{self, admin_options, block_on, ClientArgs, LogContext, Output, Settings};
use crate::ffi::{self, AlterError, ConfigOp, Resource};
use crate::output::{print, print_json};
use crate::table::Table;
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava config describe --topic orders
  vltava config set --topic orders retention.ms=3600000 cleanup.policy=compact
  vltava config delete --topic orders retention.ms
  vltava config describe --broker 1 --all")]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show configs with their values and sources
    #[command(after_help = "Examples:
  vltava config describe --topic orders
  vltava config describe --broker 1 --all -o json")]
    Describe(DescribeArgs),
    /// Set configs (other configs are left as they are)
    #[command(after_help = "Examples:
  vltava config set --topic orders retention.ms=3600000
  vltava config set --broker 1 log.retention.ms=86400000")]
    Set(SetArgs),
    /// Remove config overrides, returning them to their defaults
    #[command(after_help = "Examples:
  vltava config delete --topic orders retention.ms segment.bytes")]
    Delete(DeleteArgs),
}

/// Which resource: exactly one of --topic and --broker.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["topic", "broker"])))]
pub struct Target {
    /// A topic
    #[arg(long)]
    pub topic: Option<String>,
    /// A broker, by id
    #[arg(long)]
    pub broker: Option<i32>,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub target: Target,
    /// List every config, not only those that differ from the default
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub target: Target,
    /// Configs to set
    #[arg(required = true, value_name = "KEY=VALUE", value_parser = client::parse_key_value)]
    pub configs: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub target: Target,
    /// Config keys to remove
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

/// One config entry as shown to the user.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigRow {
    pub name: String,
    pub value: Option<String>,
    pub source: &'static str,
    pub read_only: bool,
    pub sensitive: bool,
}

/// Kafka's names for config sources, as `kafka-configs` prints them.
pub fn source_name(s: &ConfigSource) -> &'static str {
    match s {
        ConfigSource::Unknown => "UNKNOWN",
        ConfigSource::DynamicTopic => "DYNAMIC_TOPIC_CONFIG",
        ConfigSource::DynamicBroker => "DYNAMIC_BROKER_CONFIG",
        ConfigSource::DynamicDefaultBroker => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        ConfigSource::StaticBroker => "STATIC_BROKER_CONFIG",
        ConfigSource::Default => "DEFAULT_CONFIG",
    }
}

pub fn config_table<'a>(rows: impl IntoIterator<Item = &'a ConfigRow>) -> Table {
    let mut t = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
    for r in rows {
        let value = if r.sensitive {
            "(sensitive)".to_string()
        } else {
            r.value.clone().unwrap_or_else(|| "(null)".into())
        };
        t.row([r.name.clone(), value, r.source.to_string()]);
    }
    t
}

/// Describes one resource's configs, sorted by name.
pub fn describe_rows(
    admin: &AdminClient<LogContext>,
    resource: &ResourceSpecifier<'_>,
) -> Result<Vec<ConfigRow>, Error> {
    let results = block_on(admin.describe_configs([resource], &admin_options()))
        .map_err(Error::kafka("cannot describe configs"))?;
    let mut rows = Vec::new();
    for r in results {
        let r = r.map_err(|code| Error::Refused {
            resource: "cannot describe configs".into(),
            reason: code.to_string(),
        })?;
        rows.extend(r.entries.iter().map(|e| ConfigRow {
            name: e.name.clone(),
            value: e.value.clone(),
            source: source_name(&e.source),
            read_only: e.is_read_only,
            sensitive: e.is_sensitive,
        }));
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// Applies incremental config changes, turning librdkafka's answer into our errors.
pub fn alter(
    admin: &AdminClient<LogContext>,
    resource: &Resource,
    ops: &[ConfigOp],
) -> Result<(), Error> {
    ffi::incremental_alter_configs(admin.inner(), resource, ops, client::ADMIN_TIMEOUT).map_err(
        |e| match e {
            AlterError::Request(reason) => Error::Refused {
                resource: format!("cannot alter configs of {resource}"),
                reason,
            },
            AlterError::Refused { code, message } => Error::Refused {
                resource: format!("cannot alter configs of {resource}"),
                reason: if message.is_empty() || message == code.to_string() {
                    code.to_string()
                } else {
                    format!("{code}: {message}")
                },
            },
            AlterError::Timeout => Error::Timeout {
                what: format!("altering configs of {resource}"),
                timeout_ms: client::ADMIN_TIMEOUT.as_millis() as u64,
            },
        },
    )
}

/// Checks that the target exists (so errors name it) and returns it as a resource.
fn resolve(
    admin: &AdminClient<LogContext>,
    settings: &Settings,
    target: &Target,
) -> Result<Resource, Error> {
    match (&target.topic, target.broker) {
        (Some(t), _) => {
            client::topic_metadata(admin.inner(), settings, t)?;
            Ok(Resource::Topic(t.clone()))
        }
        (None, Some(id)) => {
            let md = client::metadata(admin.inner(), settings, None)?;
            if !md.brokers().iter().any(|b| b.id() == id) {
                let known: Vec<String> = md.brokers().iter().map(|b| b.id().to_string()).collect();
                return Err(Error::UnknownBroker {
                    id,
                    known: known.join(","),
                });
            }
            Ok(Resource::Broker(id))
        }
        (None, None) => unreachable!("clap requires --topic or --broker"),
    }
}

pub fn run(args: ConfigArgs) -> Result<(), Error> {
    let settings = Settings::new(&args.client, &[])?;
    let admin = settings.admin()?;
    match args.command {
        ConfigCommand::Describe(a) => {
            let resource = resolve(&admin, &settings, &a.target)?;
            let spec = match &resource {
                Resource::Topic(t) => ResourceSpecifier::Topic(t),
                Resource::Broker(b) => ResourceSpecifier::Broker(*b),
            };
            let rows = describe_rows(&admin, &spec)?;
            let shown: Vec<&ConfigRow> = rows
                .iter()
                .filter(|r| a.all || r.source != source_name(&ConfigSource::Default))
                .collect();
            match settings.output {
                Output::Json => print_json(&shown),
                Output::Table if shown.is_empty() => print(&format!(
                    "All configs of {resource} have their defaults (--all lists them).\n"
                )),
                Output::Table => print(&config_table(shown).render()),
            }
        }
        ConfigCommand::Set(a) => {
            let resource = resolve(&admin, &settings, &a.target)?;
            let ops: Vec<ConfigOp> = a
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            alter(&admin, &resource, &ops)?;
            report(&settings, &resource, &ops)
        }
        ConfigCommand::Delete(a) => {
            let resource = resolve(&admin, &settings, &a.target)?;
            let ops: Vec<ConfigOp> = a.keys.iter().map(|k| (k.clone(), None)).collect();
            alter(&admin, &resource, &ops)?;
            report(&settings, &resource, &ops)
        }
    }
}

fn report(settings: &Settings, resource: &Resource, ops: &[ConfigOp]) -> Result<(), Error> {
    match settings.output {
        Output::Json => {
            let set: serde_json::Map<String, serde_json::Value> = ops
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone().into())))
                .collect();
            let deleted: Vec<&str> = ops
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.as_str())
                .collect();
            print_json(
                &serde_json::json!({ "resource": resource.to_string(), "set": set, "deleted": deleted }),
            )
        }
        Output::Table => {
            let mut text = String::new();
            for (k, v) in ops {
                match v {
                    Some(v) => text.push_str(&format!("Set {k}={v} on {resource}.\n")),
                    None => text.push_str(&format!("Deleted {k} from {resource}.\n")),
                }
            }
            print(&text)
        }
    }
}
