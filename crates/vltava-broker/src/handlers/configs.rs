//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs for topics and brokers.

use std::collections::BTreeMap;
use std::sync::Arc;

use vltava_metadata::config::{self as defs, ConfigDef, ResolvedConfig};
use vltava_metadata::{MetadataImage, MetadataRecord, ResourceType};
use vltava_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use vltava_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use vltava_protocol::messages::*;
use vltava_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};
use crate::controller::OpError;
use vltava_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResourceResponse;
use vltava_protocol::StrBytes;

fn entry(
    r: &ResolvedConfig,
    def: &ConfigDef,
    read_only: bool,
    synonyms: bool,
    docs: bool,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = sb(r.name);
    c.value = r.value.clone().map(sb);
    c.read_only = read_only;
    c.config_source = r.source as i8;
    c.config_type = def.ty as i8;
    if synonyms {
        c.synonyms = r
            .synonyms
            .iter()
            .map(|(n, v, s)| {
                let mut syn = DescribeConfigsSynonym::default();
                syn.name = sb(n.clone());
                syn.value = Some(sb(v.clone()));
                syn.source = *s as i8;
                syn
            })
            .collect();
    }
    if docs {
        c.documentation = Some(sb(def.doc));
    }
    c
}

/// Checks a broker resource name: ours, or `""` for the cluster-wide default.
fn check_broker(node_id: i32, name: &str) -> Result<(), OpError> {
    if name.is_empty() || name == node_id.to_string() {
        Ok(())
    } else {
        Err(OpError::new(
            ErrorCode::InvalidRequest,
            format!(
                "Unexpected broker id, expected {node_id} or empty string, but received {name}"
            ),
        ))
    }
}

pub fn describe_configs(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let version = ctx.api_version;
    let image = broker.controller.image();
    let synonyms = version >= 1 && req.include_synonyms;
    let docs = version >= 3 && req.include_documentation;
    let mut results = Vec::new();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let keys: Option<Vec<String>> = res
            .configuration_keys
            .map(|k| k.iter().map(|s| s.to_string()).collect());
        let wanted = |n: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == n));
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let outcome: Result<Vec<_>, OpError> = match ResourceType::from_wire(res.resource_type) {
            Some(ResourceType::Topic)
                if !broker.authorize(
                    ctx,
                    AclOperation::DescribeConfigs,
                    Resource::Topic(&name),
                ) =>
            {
                Err(OpError::new(
                    ErrorCode::TopicAuthorizationFailed,
                    "Authorization failed.",
                ))
            }
            Some(ResourceType::Broker)
                if !broker.authorize(ctx, AclOperation::DescribeConfigs, Resource::Cluster) =>
            {
                Err(OpError::new(
                    ErrorCode::ClusterAuthorizationFailed,
                    "Authorization failed.",
                ))
            }
            Some(ResourceType::Topic) => {
                if image.topic(&name).is_none() {
                    Err(OpError::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("Topic '{name}' does not exist."),
                    ))
                } else {
                    let layers = broker.config_layers(&image, Some(&name));
                    Ok(defs::TOPIC_CONFIGS
                        .iter()
                        .filter(|(d, _)| wanted(d.name))
                        .map(|(d, syn)| {
                            entry(
                                &defs::resolve_topic(d, syn, layers),
                                d,
                                false,
                                synonyms,
                                docs,
                            )
                        })
                        .collect())
                }
            }
            Some(ResourceType::Broker) => {
                check_broker(broker.config.node_id.get(), &name).map(|()| {
                    let mut layers = broker.config_layers(&image, None);
                    if name.is_empty() {
                        // The default resource shows only cluster-wide dynamic values.
                        layers.dynamic_broker = None;
                        layers.static_broker = None;
                    }
                    let read_only = defs::BROKER_CONFIGS.iter().map(|d| (d, true));
                    let dynamic = defs::BROKER_SYNONYM_DEFS
                        .iter()
                        .chain(defs::DYNAMIC_BROKER_CONFIGS)
                        .map(|d| (d, false));
                    read_only
                        .chain(dynamic)
                        .filter(|(d, _)| wanted(d.name))
                        .map(|(d, ro)| (defs::resolve_broker(d, layers), d, ro))
                        .filter(|(r, _, _)| {
                            !name.is_empty() || r.source == defs::ConfigSource::DynamicDefaultBroker
                        })
                        .map(|(r, d, ro)| entry(&r, d, ro, synonyms, docs))
                        .collect()
                })
            }
            None => Err(OpError::new(
                ErrorCode::InvalidRequest,
                format!("Unsupported resource type {}", res.resource_type),
            )),
        };
        match outcome {
            Ok(configs) => out.configs = configs,
            Err(e) => {
                out.error_code = e.code.code();
                out.error_message = Some(sb(e.message));
            }
        }
        results.push(out);
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// A requested change to one key: set to a value or delete the override.
type Change = (String, Option<String>);

/// Validates changes to a resource and returns the records that make them.
fn change_records(
    node_id: i32,
    image: &MetadataImage,
    rtype: ResourceType,
    name: &str,
    changes: &[Change],
) -> Result<Vec<MetadataRecord>, OpError> {
    match rtype {
        ResourceType::Topic => {
            if image.topic(name).is_none() {
                return Err(OpError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                ));
            }
            for (k, v) in changes {
                if defs::topic_config_def(k).is_none() {
                    return Err(OpError::new(
                        ErrorCode::InvalidConfig,
                        format!("Unknown topic config name: {k}"),
                    ));
                }
                if let Some(v) = v {
                    defs::validate_topic_config(k, v)
                        .map_err(|m| OpError::new(ErrorCode::InvalidConfig, m))?;
                }
            }
        }
        ResourceType::Broker => {
            check_broker(node_id, name)?;
            for (k, v) in changes {
                let dynamic = defs::topic_config_by_synonym(k)
                    .map(|(d, _)| d)
                    .or_else(|| defs::DYNAMIC_BROKER_CONFIGS.iter().find(|d| d.name == *k));
                let Some(def) = dynamic else {
                    let why = if defs::broker_config_def(k).is_some() {
                        "cannot be updated dynamically"
                    } else {
                        "is not a known broker config"
                    };
                    return Err(OpError::new(
                        ErrorCode::InvalidConfig,
                        format!("Config {k} {why}"),
                    ));
                };
                if let Some(v) = v {
                    defs::validate_value(def, v)
                        .map_err(|m| OpError::new(ErrorCode::InvalidConfig, m))?;
                }
            }
        }
    }
    Ok(changes
        .iter()
        .map(|(k, v)| MetadataRecord::ConfigRecord {
            resource_type: rtype,
            resource_name: name.to_string(),
            name: k.clone(),
            value: v.clone(),
        })
        .collect())
}

async fn apply(
    broker: &Broker,
    ctx: &RequestContext,
    rtype_wire: i8,
    name: String,
    validate_only: bool,
    changes: impl Fn(&MetadataImage, ResourceType) -> Result<Vec<Change>, OpError>
        + Send
        + Sync
        + 'static,
) -> Result<(), OpError> {
    let rtype = ResourceType::from_wire(rtype_wire).ok_or_else(|| {
        OpError::new(
            ErrorCode::InvalidRequest,
            format!("Unsupported resource type {rtype_wire}"),
        )
    })?;
    let (resource, denied) = match rtype {
        ResourceType::Topic => (Resource::Topic(&name), ErrorCode::TopicAuthorizationFailed),
        ResourceType::Broker => (Resource::Cluster, ErrorCode::ClusterAuthorizationFailed),
    };
    if !broker.authorize(ctx, AclOperation::AlterConfigs, resource) {
        return Err(OpError::new(denied, "Authorization failed."));
    }
    let node_id = broker.config.node_id;
    broker
        .controller
        .write(move |image| {
            let changes = changes(image, rtype)?;
            let records = change_records(node_id.get(), image, rtype, &name, &changes)?;
            Ok((if validate_only { Vec::new() } else { records }, ()))
        })
        .await
}

fn resource_response(
    rtype: i8,
    name: &StrBytes,
    outcome: Result<(), OpError>,
) -> AlterConfigsResourceResponse {
    let mut r = AlterConfigsResourceResponse::default();
    r.resource_type = rtype;
    r.resource_name = name.clone();
    if let Err(e) = outcome {
        r.error_code = e.code.code();
        r.error_message = Some(sb(e.message));
    }
    r
}

fn current(image: &MetadataImage, rtype: ResourceType, name: &str) -> BTreeMap<String, String> {
    image
        .configs
        .get(&(rtype, name.to_string()))
        .cloned()
        .unwrap_or_default()
}

/// AlterConfigs replaces the resource's whole set of dynamic overrides.
pub async fn alter_configs(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let (rtype_wire, resource_name) = (res.resource_type, res.resource_name.clone());
        let configs = res.configs;
        let n = name.clone();
        let outcome = apply(
            broker,
            ctx,
            rtype_wire,
            name,
            req.validate_only,
            move |image, rtype| {
                let name = &n;
                let mut wanted = BTreeMap::new();
                for c in &configs {
                    let Some(v) = &c.value else {
                        return Err(OpError::new(
                            ErrorCode::InvalidConfig,
                            format!("Null value not supported for config {}", c.name),
                        ));
                    };
                    wanted.insert(c.name.to_string(), v.to_string());
                }
                let mut changes: Vec<Change> = current(image, rtype, name)
                    .into_keys()
                    .filter(|k| !wanted.contains_key(k))
                    .map(|k| (k, None))
                    .collect();
                changes.extend(wanted.into_iter().map(|(k, v)| (k, Some(v))));
                Ok(changes)
            },
        )
        .await;
        responses.push(resource_response(rtype_wire, &resource_name, outcome));
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let (rtype_wire, resource_name) = (res.resource_type, res.resource_name.clone());
        let configs = res.configs;
        let n = name.clone();
        let outcome = apply(
            broker,
            ctx,
            rtype_wire,
            name,
            req.validate_only,
            move |image, rtype| {
                let name = &n;
                let mut now = current(image, rtype, name);
                let mut changes = Vec::new();
                for c in &configs {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    let default_of = |k: &str| match rtype {
                        ResourceType::Topic => {
                            defs::topic_config_def(k).map(|(d, _)| d.default.to_string())
                        }
                        ResourceType::Broker => {
                            defs::broker_config_def(k).map(|d| d.default.to_string())
                        }
                    };
                    let list_of = |k: &str, now: &BTreeMap<String, String>| -> Vec<String> {
                        now.get(k)
                            .cloned()
                            .or_else(|| default_of(k))
                            .unwrap_or_default()
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    };
                    let new = match c.config_operation {
                        0 => match value {
                            Some(v) => Some(v),
                            None => {
                                return Err(OpError::new(
                                    ErrorCode::InvalidConfig,
                                    format!("Null value not supported for SET of {key}"),
                                ))
                            }
                        },
                        1 => None,
                        2 | 3 => {
                            let is_list = match rtype {
                                ResourceType::Topic => {
                                    defs::topic_config_def(&key).map(|(d, _)| d.ty)
                                }
                                ResourceType::Broker => defs::broker_config_def(&key).map(|d| d.ty),
                            } == Some(defs::ConfigType::List);
                            if !is_list {
                                return Err(OpError::new(ErrorCode::InvalidConfig, format!("Config {key} is not a list; APPEND and SUBTRACT apply only to lists")));
                            }
                            let mut items = list_of(&key, &now);
                            let given: Vec<String> = value
                                .unwrap_or_default()
                                .split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(String::from)
                                .collect();
                            if c.config_operation == 2 {
                                for g in given {
                                    if !items.contains(&g) {
                                        items.push(g);
                                    }
                                }
                            } else {
                                items.retain(|i| !given.contains(i));
                            }
                            Some(items.join(","))
                        }
                        op => {
                            return Err(OpError::new(
                                ErrorCode::InvalidRequest,
                                format!("Unknown config operation {op}"),
                            ))
                        }
                    };
                    match &new {
                        Some(v) => now.insert(key.clone(), v.clone()),
                        None => now.remove(&key),
                    };
                    changes.push((key, new));
                }
                Ok(changes)
            },
        )
        .await;
        let mut r = IncrementalResourceResponse::default();
        r.resource_type = rtype_wire;
        r.resource_name = resource_name;
        if let Err(e) = outcome {
            r.error_code = e.code.code();
            r.error_message = Some(sb(e.message));
        }
        responses.push(r);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
