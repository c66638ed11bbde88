//! `vltava acl add|list|remove`: what Kafka ships as `kafka-acls.sh`, through CreateAcls,
//! DescribeAcls and DeleteAcls (librdkafka's admin API has no ACL calls in the Rust
//! binding, so these go through `raw`).

use clap::{Args, Subcommand};
use serde::Serialize;
use vltava_protocol::messages::create_acls_request::AclCreation;
use vltava_protocol::messages::delete_acls_request::DeleteAclsFilter;
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, StrBytes};
use vltava_types::acl::{
    AclOperation, AclPermission, AclResourceType, PatternType, ANY, CLUSTER_NAME, MATCH,
};

use crate::client::{ClientArgs, Output, Settings};
use crate::output::{print, print_json};
use crate::raw;
use crate::table::Table;
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava acl add --allow-principal User:alice --operation read --topic orders
  vltava acl add --allow-principal User:alice --operation read --group app- --resource-pattern-type prefixed
  vltava acl add --deny-principal User:mallory --operation all --topic '*'
  vltava acl list --topic orders --resource-pattern-type match
  vltava acl remove --allow-principal User:alice --topic orders

Adding or removing ACLs takes ALTER on the cluster, listing DESCRIBE; a broker without
authorizer.class.name answers SECURITY_DISABLED.")]
pub struct AclArgs {
    #[command(subcommand)]
    pub command: AclCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Add ACLs: every principal and host given, for every operation, on the resource
    #[command(after_help = "Examples:
  vltava acl add --allow-principal User:alice --operation read --operation describe --topic orders
  vltava acl add --allow-principal User:app --operation write --topic pay- --resource-pattern-type prefixed
  vltava acl add --allow-principal User:ops --operation alter --cluster")]
    Add(Spec),
    /// List ACLs matching a filter [default: all]
    #[command(after_help = "Examples:
  vltava acl list
  vltava acl list --principal User:alice -o json
  vltava acl list --topic orders --resource-pattern-type match")]
    List(Spec),
    /// Remove the ACLs matching a filter (what is not given matches anything)
    #[command(after_help = "Examples:
  vltava acl remove --allow-principal User:alice --topic orders
  vltava acl remove --topic orders")]
    Remove(Spec),
}

#[derive(Debug, Args)]
pub struct Spec {
    /// Principal allowed (Type:name, User:* for everyone; repeatable)
    #[arg(long)]
    allow_principal: Vec<String>,
    /// Principal denied (repeatable)
    #[arg(long)]
    deny_principal: Vec<String>,
    /// Only these principals, allowed or denied (list and remove; repeatable)
    #[arg(long)]
    principal: Vec<String>,
    /// Hosts the allow-principals may come from [default: *]
    #[arg(long)]
    allow_host: Vec<String>,
    /// Hosts the deny-principals are denied from [default: *]
    #[arg(long)]
    deny_host: Vec<String>,
    /// read, write, create, delete, alter, describe, cluster-action, describe-configs,
    /// alter-configs, idempotent-write, all (repeatable)
    #[arg(long)]
    operation: Vec<String>,
    /// A topic ('*' for every topic)
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// A transactional id
    #[arg(long, group = "resource")]
    transactional_id: Option<String>,
    /// The cluster
    #[arg(long, group = "resource")]
    cluster: bool,
    /// literal or prefixed; for list and remove also any or match [default: literal]
    #[arg(long, default_value = "literal")]
    resource_pattern_type: String,
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct AclJson {
    resource_type: &'static str,
    resource_name: String,
    pattern_type: &'static str,
    principal: String,
    host: String,
    operation: &'static str,
    permission: &'static str,
}

fn usage(m: impl Into<String>) -> Error {
    Error::Usage(m.into())
}

fn refused(code: i16, message: Option<&StrBytes>) -> Error {
    raw::refusal("ACLs", code, message)
}

impl Spec {
    fn resource(&self) -> Option<(AclResourceType, String)> {
        if let Some(t) = &self.topic {
            Some((AclResourceType::Topic, t.clone()))
        } else if let Some(g) = &self.group {
            Some((AclResourceType::Group, g.clone()))
        } else if let Some(t) = &self.transactional_id {
            Some((AclResourceType::TransactionalId, t.clone()))
        } else if self.cluster {
            Some((AclResourceType::Cluster, CLUSTER_NAME.to_string()))
        } else {
            None
        }
    }

    fn operations(&self) -> Result<Vec<AclOperation>, Error> {
        self.operation
            .iter()
            .map(|o| {
                AclOperation::parse(o).ok_or_else(|| usage(format!("unknown operation '{o}'")))
            })
            .collect()
    }

    /// (principal, host, permission) triples, hosts defaulting to `*`.
    fn entries(&self) -> Vec<(String, String, AclPermission)> {
        let star = vec!["*".to_string()];
        let mut out = Vec::new();
        for (principals, hosts, permission) in [
            (
                &self.allow_principal,
                &self.allow_host,
                AclPermission::Allow,
            ),
            (&self.deny_principal, &self.deny_host, AclPermission::Deny),
        ] {
            let hosts = if hosts.is_empty() { &star } else { hosts };
            for p in principals {
                for h in hosts {
                    out.push((p.clone(), h.clone(), permission));
                }
            }
        }
        out
    }

    fn pattern_filter(&self) -> Result<i8, Error> {
        match self.resource_pattern_type.to_ascii_lowercase().as_str() {
            "any" => Ok(ANY),
            "match" => Ok(MATCH),
            other => PatternType::parse(other).map(PatternType::wire).ok_or_else(|| {
                usage(format!(
                    "--resource-pattern-type: expected literal, prefixed, any or match, not '{other}'"
                ))
            }),
        }
    }

    /// The DescribeAcls/DeleteAcls filters this spec stands for: one per principal, host and
    /// operation given (what is not given matches anything).
    fn filters(&self) -> Result<Vec<DeleteAclsFilter>, Error> {
        let (rtype, name) = match self.resource() {
            Some((t, n)) => (t.wire(), Some(StrBytes::from_string(n))),
            None => (ANY, None),
        };
        let pattern = self.pattern_filter()?;
        let mut who: Vec<(Option<String>, Option<String>, i8)> = self
            .entries()
            .into_iter()
            .map(|(p, h, perm)| {
                let host = (h != "*" || self.has_hosts()).then_some(h);
                (Some(p), host, perm.wire())
            })
            .collect();
        who.extend(self.principal.iter().map(|p| (Some(p.clone()), None, ANY)));
        if who.is_empty() {
            who.push((None, None, ANY));
        }
        let ops: Vec<i8> = match self.operations()? {
            ops if ops.is_empty() => vec![ANY],
            ops => ops.into_iter().map(AclOperation::wire).collect(),
        };
        let mut out = Vec::new();
        for (principal, host, permission) in &who {
            for op in &ops {
                out.push(
                    DeleteAclsFilter::default()
                        .with_resource_type_filter(rtype)
                        .with_resource_name_filter(name.clone())
                        .with_pattern_type_filter(pattern)
                        .with_principal_filter(principal.clone().map(StrBytes::from_string))
                        .with_host_filter(host.clone().map(StrBytes::from_string))
                        .with_operation(*op)
                        .with_permission_type(*permission),
                );
            }
        }
        Ok(out)
    }

    fn has_hosts(&self) -> bool {
        !self.allow_host.is_empty() || !self.deny_host.is_empty()
    }
}

fn row(
    rtype: i8,
    name: &StrBytes,
    pattern: i8,
    principal: &StrBytes,
    host: &StrBytes,
    op: i8,
    perm: i8,
) -> AclJson {
    AclJson {
        resource_type: AclResourceType::from_wire(rtype).map_or("UNKNOWN", |t| t.name()),
        resource_name: name.to_string(),
        pattern_type: PatternType::from_wire(pattern).map_or("UNKNOWN", |t| t.name()),
        principal: principal.to_string(),
        host: host.to_string(),
        operation: AclOperation::from_wire(op).map_or("UNKNOWN", |t| t.name()),
        permission: AclPermission::from_wire(perm).map_or("UNKNOWN", |t| t.name()),
    }
}

fn show(settings: &Settings, rows: &[AclJson]) -> Result<(), Error> {
    match settings.output {
        Output::Json => print_json(rows),
        Output::Table => {
            let mut table = Table::new(&[
                "RESOURCE-TYPE",
                "NAME",
                "PATTERN",
                "PRINCIPAL",
                "HOST",
                "OPERATION",
                "PERMISSION",
            ]);
            for r in rows {
                table.row([
                    r.resource_type,
                    &r.resource_name,
                    r.pattern_type,
                    &r.principal,
                    &r.host,
                    r.operation,
                    r.permission,
                ]);
            }
            print(&table.render())
        }
    }
}

pub fn run(args: AclArgs) -> Result<(), Error> {
    let settings = Settings::new(&args.client, &[])?;
    match args.command {
        AclCommand::Add(spec) => add(&settings, &spec),
        AclCommand::List(spec) => list(&settings, &spec),
        AclCommand::Remove(spec) => remove(&settings, &spec),
    }
}

fn add(settings: &Settings, spec: &Spec) -> Result<(), Error> {
    let (rtype, name) = spec.resource().ok_or_else(|| {
        usage("name the resource: --topic, --group, --transactional-id or --cluster")
    })?;
    let pattern = PatternType::parse(&spec.resource_pattern_type).ok_or_else(|| {
        usage("--resource-pattern-type: ACLs are added with literal or prefixed patterns")
    })?;
    let entries = spec.entries();
    if entries.is_empty() {
        return Err(usage("give --allow-principal or --deny-principal"));
    }
    let ops = spec.operations()?;
    if ops.is_empty() {
        return Err(usage("give at least one --operation"));
    }
    let mut creations = Vec::new();
    let mut rows = Vec::new();
    for (principal, host, permission) in &entries {
        for op in &ops {
            creations.push(
                AclCreation::default()
                    .with_resource_type(rtype.wire())
                    .with_resource_name(StrBytes::from_string(name.clone()))
                    .with_resource_pattern_type(pattern.wire())
                    .with_principal(StrBytes::from_string(principal.clone()))
                    .with_host(StrBytes::from_string(host.clone()))
                    .with_operation(op.wire())
                    .with_permission_type(permission.wire()),
            );
            rows.push(AclJson {
                resource_type: rtype.name(),
                resource_name: name.clone(),
                pattern_type: pattern.name(),
                principal: principal.clone(),
                host: host.clone(),
                operation: op.name(),
                permission: permission.name(),
            });
        }
    }
    let mut conn = raw::bootstrap(settings)?;
    let resp: CreateAclsResponse = conn.call(
        ApiKey::CreateAcls,
        3,
        &CreateAclsRequest::default().with_creations(creations),
    )?;
    if let Some(r) = resp.results.iter().find(|r| r.error_code != 0) {
        return Err(refused(r.error_code, r.error_message.as_ref()));
    }
    show(settings, &rows)
}

fn list(settings: &Settings, spec: &Spec) -> Result<(), Error> {
    let mut conn = raw::bootstrap(settings)?;
    let mut rows = Vec::new();
    for f in spec.filters()? {
        let req = DescribeAclsRequest::default()
            .with_resource_type_filter(f.resource_type_filter)
            .with_resource_name_filter(f.resource_name_filter)
            .with_pattern_type_filter(f.pattern_type_filter)
            .with_principal_filter(f.principal_filter)
            .with_host_filter(f.host_filter)
            .with_operation(f.operation)
            .with_permission_type(f.permission_type);
        let resp: DescribeAclsResponse = conn.call(ApiKey::DescribeAcls, 3, &req)?;
        if resp.error_code != 0 {
            return Err(refused(resp.error_code, resp.error_message.as_ref()));
        }
        for r in &resp.resources {
            for a in &r.acls {
                rows.push(row(
                    r.resource_type,
                    &r.resource_name,
                    r.pattern_type,
                    &a.principal,
                    &a.host,
                    a.operation,
                    a.permission_type,
                ));
            }
        }
    }
    rows.sort();
    rows.dedup();
    show(settings, &rows)
}

fn remove(settings: &Settings, spec: &Spec) -> Result<(), Error> {
    let mut conn = raw::bootstrap(settings)?;
    let resp: DeleteAclsResponse = conn.call(
        ApiKey::DeleteAcls,
        3,
        &DeleteAclsRequest::default().with_filters(spec.filters()?),
    )?;
    let mut rows = Vec::new();
    for r in &resp.filter_results {
        if r.error_code != 0 {
            return Err(refused(r.error_code, r.error_message.as_ref()));
        }
        for a in &r.matching_acls {
            rows.push(row(
                a.resource_type,
                &a.resource_name,
                a.pattern_type,
                &a.principal,
                &a.host,
                a.operation,
                a.permission_type,
            ));
        }
    }
    show(settings, &rows)
}
