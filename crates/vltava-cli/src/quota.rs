//! `vltava quota set|describe`: client quotas, as Kafka's `kafka-configs.sh --entity-type
//! users|clients|ips --alter --add-config producer_byte_rate=...` manages them, through
//! AlterClientQuotas and DescribeClientQuotas (KIP-546).

use clap::{Args, Subcommand};
use serde::Serialize;
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, StrBytes};

use crate::client::{ClientArgs, Output, Settings};
use crate::output::{print, print_json};
use crate::raw;
use crate::table::Table;
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava quota set --user alice --add producer_byte_rate=1048576,consumer_byte_rate=2097152
  vltava quota set --client-id-default --add request_percentage=50
  vltava quota set --user alice --remove producer_byte_rate
  vltava quota set --ip-default --add connection_creation_rate=10
  vltava quota describe
  vltava quota describe --user alice -o json")]
pub struct QuotaArgs {
    #[command(subcommand)]
    pub command: QuotaCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Which entity: a user and/or a client id (each named or the default), or an address.
#[derive(Debug, Args, Clone, Default)]
pub struct EntityArgs {
    /// A user (the principal's name, e.g. alice for User:alice)
    #[arg(long, conflicts_with = "user_default")]
    pub user: Option<String>,
    /// The default user: each user without a quota of its own
    #[arg(long)]
    pub user_default: bool,
    /// A client id
    #[arg(long, conflicts_with = "client_id_default")]
    pub client_id: Option<String>,
    /// The default client id: each client id without a quota of its own
    #[arg(long)]
    pub client_id_default: bool,
    /// An IP address (for connection_creation_rate)
    #[arg(long, conflicts_with_all = ["ip_default", "user", "user_default", "client_id", "client_id_default"])]
    pub ip: Option<String>,
    /// The default address: each address without a rate of its own
    #[arg(long, conflicts_with_all = ["user", "user_default", "client_id", "client_id_default"])]
    pub ip_default: bool,
}

impl EntityArgs {
    /// The entity's parts: type and name (`None`: that type's default).
    fn parts(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        let mut part = |t, name: &Option<String>, default: bool| {
            if name.is_some() || default {
                out.push((t, name.clone()));
            }
        };
        part("user", &self.user, self.user_default);
        part("client-id", &self.client_id, self.client_id_default);
        part("ip", &self.ip, self.ip_default);
        out
    }
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set or remove quotas of one entity
    #[command(
        after_help = "Keys: producer_byte_rate, consumer_byte_rate (bytes/s), request_percentage
(percent of one broker thread), controller_mutation_rate (partitions/s) for users and
client ids; connection_creation_rate (connections/s) for addresses.

Examples:
  vltava quota set --user alice --client-id app --add producer_byte_rate=1048576
  vltava quota set --user-default --add consumer_byte_rate=10485760
  vltava quota set --user alice --remove producer_byte_rate,consumer_byte_rate"
    )]
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        /// Quotas to set: key=value, comma-separated or repeated
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        /// Quotas to remove: keys, comma-separated or repeated
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
        /// Check the change without making it
        #[arg(long)]
        validate_only: bool,
    },
    /// List quotas [default: every entity]; an entity given narrows the list to entities
    /// that have it
    #[command(after_help = "Examples:
  vltava quota describe
  vltava quota describe --user alice
  vltava quota describe --client-id-default -o json")]
    Describe {
        #[command(flatten)]
        entity: EntityArgs,
        /// Only entities of exactly the types given
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Debug, Serialize)]
struct QuotaJson {
    entity: std::collections::BTreeMap<String, Option<String>>,
    quotas: std::collections::BTreeMap<String, f64>,
}

fn entity_name(parts: &[(String, Option<String>)]) -> String {
    parts
        .iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(args: QuotaArgs) -> Result<(), Error> {
    let settings = Settings::new(&args.client, &[])?;
    match args.command {
        QuotaCommand::Set {
            entity,
            add,
            remove,
            validate_only,
        } => {
            let parts = entity.parts();
            if parts.is_empty() {
                return Err(Error::Usage(
                    "name an entity: --user, --client-id, --ip or their --*-default".into(),
                ));
            }
            if add.is_empty() && remove.is_empty() {
                return Err(Error::Usage("give --add key=value or --remove key".into()));
            }
            let mut ops = Vec::new();
            for a in &add {
                let (k, v) = a
                    .split_once('=')
                    .ok_or_else(|| Error::Usage(format!("--add: expected key=value, not '{a}'")))?;
                let value: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| Error::Usage(format!("--add: '{v}' is not a number (for {k})")))?;
                ops.push(
                    alter_client_quotas_request::OpData::default()
                        .with_key(StrBytes::from_string(k.trim().to_string()))
                        .with_value(value),
                );
            }
            for k in &remove {
                ops.push(
                    alter_client_quotas_request::OpData::default()
                        .with_key(StrBytes::from_string(k.trim().to_string()))
                        .with_remove(true),
                );
            }
            let described: Vec<(String, Option<String>)> = parts
                .iter()
                .map(|(t, n)| (t.to_string(), n.clone()))
                .collect();
            let req = AlterClientQuotasRequest::default()
                .with_validate_only(validate_only)
                .with_entries(vec![alter_client_quotas_request::EntryData::default()
                    .with_entity(
                        parts
                            .into_iter()
                            .map(|(t, n)| {
                                alter_client_quotas_request::EntityData::default()
                                    .with_entity_type(StrBytes::from_static_str(t))
                                    .with_entity_name(n.map(StrBytes::from_string))
                            })
                            .collect(),
                    )
                    .with_ops(ops)]);
            let mut conn = raw::bootstrap(&settings)?;
            let resp: AlterClientQuotasResponse = conn.call(ApiKey::AlterClientQuotas, 1, &req)?;
            for e in &resp.entries {
                if e.error_code != 0 {
                    return Err(raw::refusal(
                        entity_name(&described),
                        e.error_code,
                        e.error_message.as_ref(),
                    ));
                }
            }
            if settings.verbose {
                eprintln!("quotas of {} changed", entity_name(&described));
            }
            Ok(())
        }
        QuotaCommand::Describe { entity, strict } => {
            let components = entity
                .parts()
                .into_iter()
                .map(|(t, n)| {
                    describe_client_quotas_request::ComponentData::default()
                        .with_entity_type(StrBytes::from_static_str(t))
                        .with_match_type(if n.is_some() { 0 } else { 1 })
                        .with_match(n.map(StrBytes::from_string))
                })
                .collect();
            let req = DescribeClientQuotasRequest::default()
                .with_components(components)
                .with_strict(strict);
            let mut conn = raw::bootstrap(&settings)?;
            let resp: DescribeClientQuotasResponse =
                conn.call(ApiKey::DescribeClientQuotas, 1, &req)?;
            if resp.error_code != 0 {
                return Err(raw::refusal(
                    "quotas",
                    resp.error_code,
                    resp.error_message.as_ref(),
                ));
            }
            let rows: Vec<QuotaJson> = resp
                .entries
                .unwrap_or_default()
                .into_iter()
                .map(|e| QuotaJson {
                    entity: e
                        .entity
                        .iter()
                        .map(|p| {
                            (
                                p.entity_type.to_string(),
                                p.entity_name.as_ref().map(|n| n.to_string()),
                            )
                        })
                        .collect(),
                    quotas: e
                        .values
                        .iter()
                        .map(|v| (v.key.to_string(), v.value))
                        .collect(),
                })
                .collect();
            match settings.output {
                Output::Json => print_json(&rows),
                Output::Table => {
                    let mut table = Table::new(&["ENTITY", "QUOTA", "VALUE"]);
                    for r in &rows {
                        let name = entity_name(
                            &r.entity
                                .iter()
                                .map(|(t, n)| (t.clone(), n.clone()))
                                .collect::<Vec<_>>(),
                        );
                        for (k, v) in &r.quotas {
                            table.row([name.clone(), k.clone(), format!("{v}")]);
                        }
                    }
                    print(&table.render())
                }
            }
        }
    }
}
