//! CreateTopics, DeleteTopics, CreatePartitions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;
use vltava_metadata::config as defs;
use vltava_metadata::MetadataRecord;
use vltava_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use vltava_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use vltava_protocol::messages::delete_topics_response::DeletableTopicResult;
use vltava_protocol::messages::*;
use vltava_protocol::ErrorCode;
use vltava_types::NodeId;

use super::{sb, tn};
use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};
use crate::controller::{create_partitions_records, create_topic_records, OpError};

/// Topics the broker keeps its own state in.
pub fn is_internal_topic(name: &str) -> bool {
    matches!(
        name,
        "__consumer_offsets" | "__transaction_state" | "__share_group_state"
    )
}

/// Kafka's cap on the partitions one CreateTopics request may create.
pub const MAX_PARTITIONS_PER_REQUEST: i64 = 10_000;

/// Creates a topic (or only validates it). Shared by CreateTopics and Metadata auto-creation.
/// All or nothing: a topic whose logs cannot all be opened here is removed again.
pub async fn create_topic(
    broker: &Arc<Broker>,
    name: &str,
    num_partitions: i32,
    replication_factor: i16,
    configs: &BTreeMap<String, String>,
    given: Option<Vec<Vec<NodeId>>>,
    validate_only: bool,
) -> Result<Uuid, OpError> {
    let limit = broker.max_hosted_partitions();
    let node_id = broker.controller.node_id();
    let (topic, configs) = (name.to_string(), configs.clone());
    let created = broker
        .controller
        .write(move |image| {
            let (id, records) = create_topic_records(
                image,
                node_id,
                &topic,
                num_partitions,
                replication_factor,
                &configs,
                given.as_deref(),
            )?;
            let hosted = image
                .topics
                .values()
                .map(|t| t.partitions.len())
                .sum::<usize>();
            if hosted + num_partitions.max(0) as usize > limit {
                return Err(OpError::new(
                    ErrorCode::PolicyViolation,
                    format!(
                        "Creating {num_partitions} partitions would make this broker host more than {limit}, the most its open-file limit allows."
                    ),
                ));
            }
            Ok((if validate_only { Vec::new() } else { records }, id))
        })
        .await;
    match created {
        Ok(id) => {
            if !validate_only {
                tracing::info!(topic = name, partitions = num_partitions, "created topic");
            }
            Ok(id)
        }
        Err(e) if e.code == ErrorCode::KafkaStorageError => {
            // Committed but not every log opened (or the metadata log failed, and then there
            // is nothing to remove).
            if let Some(t) = broker.controller.image().topic(name) {
                tracing::error!(topic = name, error = %e.message, "could not open the new topic's logs; removing it");
                let topic_id = t.topic_id;
                let removed = broker
                    .controller
                    .write(move |_| Ok((vec![MetadataRecord::RemoveTopicRecord { topic_id }], ())))
                    .await;
                if let Err(e) = removed {
                    tracing::error!(topic = name, error = %e.message, "could not remove the half-created topic");
                }
            }
            Err(OpError::new(
                ErrorCode::KafkaStorageError,
                format!(
                    "Could not create the logs of topic '{name}': {}. The topic was not created.",
                    e.message
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

pub async fn create_topics(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let version = ctx.api_version;
    let mut seen = HashSet::new();
    let dupes: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    // Kafka refuses a request whose topics add up to too many partitions, whole.
    let requested_partitions: i64 = req
        .topics
        .iter()
        .map(|t| match (t.assignments.is_empty(), t.num_partitions) {
            (false, _) => t.assignments.len() as i64,
            (true, -1) => i64::from(broker.config.num_partitions()),
            (true, n) => i64::from(n.max(0)),
        })
        .sum();
    let too_many = requested_partitions > MAX_PARTITIONS_PER_REQUEST;
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = tn(&name);
        let outcome: Result<(Uuid, i32, i16), OpError> = async {
            if too_many {
                return Err(OpError::new(
                    ErrorCode::PolicyViolation,
                    "Excessively large number of partitions per request.",
                ));
            }
            if !broker.authorize(ctx, AclOperation::Create, Resource::Cluster)
                && !broker.authorize(ctx, AclOperation::Create, Resource::Topic(&name))
            {
                return Err(OpError::new(
                    ErrorCode::TopicAuthorizationFailed,
                    "Authorization failed.",
                ));
            }
            if dupes.contains(&name) {
                return Err(OpError::new(
                    ErrorCode::InvalidRequest,
                    format!("Create topics request from client contains duplicate topic '{name}'."),
                ));
            }
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                let Some(v) = &c.value else {
                    return Err(OpError::new(
                        ErrorCode::InvalidConfig,
                        format!("Null value not supported for topic config {}", c.name),
                    ));
                };
                configs.insert(c.name.to_string(), v.to_string());
            }
            let (partitions, rf) = if t.assignments.is_empty() {
                let p = if t.num_partitions == -1 {
                    broker.config.num_partitions()
                } else {
                    t.num_partitions
                };
                let rf = if t.replication_factor == -1 {
                    broker.config.default_replication_factor()
                } else {
                    t.replication_factor
                };
                (p, rf)
            } else {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err(OpError::new(ErrorCode::InvalidRequest, "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."));
                }
                for (i, a) in t.assignments.iter().enumerate() {
                    if a.partition_index != i as i32 {
                        return Err(OpError::new(
                            ErrorCode::InvalidReplicaAssignment,
                            "Partitions must be numbered consecutively from 0.",
                        ));
                    }
                }
                (
                    t.assignments.len() as i32,
                    t.assignments[0].broker_ids.len() as i16,
                )
            };
            let given = (!t.assignments.is_empty()).then(|| {
                t.assignments
                    .iter()
                    .map(|a| a.broker_ids.iter().map(|b| NodeId::new(b.0)).collect())
                    .collect()
            });
            let id = create_topic(
                broker,
                &name,
                partitions,
                rf,
                &configs,
                given,
                req.validate_only,
            )
            .await?;
            Ok((id, partitions, rf))
        }
        .await;
        match outcome {
            Ok((id, partitions, rf)) => {
                r.topic_id = if req.validate_only { Uuid::nil() } else { id };
                r.num_partitions = partitions;
                r.replication_factor = rf;
                if version >= 5 {
                    let requested = requested_configs(&t.configs);
                    r.configs = Some(described_topic_configs(
                        broker,
                        &name,
                        req.validate_only.then_some(&requested),
                    ));
                }
            }
            Err(e) => {
                tracing::debug!(topic = %name, error = %e.message, "create topic refused");
                r.error_code = e.code.code();
                r.error_message = Some(sb(e.message));
                r.num_partitions = -1;
                r.replication_factor = -1;
                r.configs = None;
            }
        }
        results.push(r);
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn requested_configs(
    configs: &[create_topics_request::CreatableTopicConfig],
) -> BTreeMap<String, String> {
    configs
        .iter()
        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
        .collect()
}

/// The configs a new topic has. With `validate_only` the topic does not exist, so the
/// requested overrides are reported as its topic-level values.
fn described_topic_configs(
    broker: &Broker,
    name: &str,
    validate_only: Option<&BTreeMap<String, String>>,
) -> Vec<CreatableTopicConfigs> {
    let image = broker.controller.image();
    let mut layers = broker.config_layers(&image, Some(name));
    if let Some(requested) = validate_only {
        layers.topic = Some(requested);
    }
    defs::TOPIC_CONFIGS
        .iter()
        .map(|(def, syn)| {
            let r = defs::resolve_topic(def, syn, layers);
            let mut c = CreatableTopicConfigs::default();
            c.name = sb(def.name);
            c.value = r.value.map(sb);
            c.config_source = r.source as i8;
            c
        })
        .collect()
}

/// Deletes one topic named by name or id.
async fn delete_topic(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    name: Option<String>,
    id: Uuid,
) -> Result<(String, Uuid), (ErrorCode, Option<String>)> {
    let image = broker.controller.image();
    let topic = match (&name, id.is_nil()) {
        (Some(n), _) => image
            .topic(n)
            .ok_or((ErrorCode::UnknownTopicOrPartition, None))?,
        (None, false) => image
            .topic_by_id(&id)
            .ok_or((ErrorCode::UnknownTopicId, None))?,
        (None, true) => return Err((ErrorCode::InvalidRequest, None)),
    };
    let (name, topic_id) = (topic.name.clone(), topic.topic_id);
    if !broker.authorize(ctx, AclOperation::Delete, Resource::Topic(&name)) {
        return Err((ErrorCode::TopicAuthorizationFailed, None));
    }
    if is_internal_topic(&name) {
        // Groups and transactions live there; losing it loses their state.
        return Err((
            ErrorCode::InvalidTopicException,
            Some(format!("Internal topic {name} cannot be deleted.")),
        ));
    }
    broker
        .controller
        .write(move |image| {
            // Deleted meanwhile by another request: nothing left to do.
            if image.topic_by_id(&topic_id).is_none() {
                return Err(OpError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    "This topic does not exist.",
                ));
            }
            Ok((vec![MetadataRecord::RemoveTopicRecord { topic_id }], ()))
        })
        .await
        .map_err(|e| (e.code, Some(e.message)))?;
    tracing::info!(topic = %name, "deleted topic");
    Ok((name, topic_id))
}

pub async fn delete_topics(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let version = ctx.api_version;
    // v0-5 name topics in `topic_names`; v6 in `topics`, by name or by id.
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::new();
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        r.name = name.clone().map(tn);
        r.topic_id = id;
        let outcome = delete_topic(broker, ctx, name, id).await;
        match outcome {
            Ok((n, tid)) => {
                r.name = Some(tn(n));
                r.topic_id = tid;
            }
            Err((code, message)) => {
                r.error_code = code.code();
                r.error_message = Some(sb(message.unwrap_or_else(|| code.to_string())));
            }
        }
        responses.push(r);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        if !broker.authorize(ctx, AclOperation::Alter, Resource::Topic(&name)) {
            r.error_code = ErrorCode::TopicAuthorizationFailed.code();
            results.push(r);
            continue;
        }
        let (node_id, count, validate_only) =
            (broker.controller.node_id(), t.count, req.validate_only);
        let given: Option<Vec<Vec<NodeId>>> = t.assignments.as_ref().map(|a| {
            a.iter()
                .map(|x| x.broker_ids.iter().map(|b| NodeId::new(b.0)).collect())
                .collect()
        });
        let topic = name.clone();
        let outcome = broker
            .controller
            .write(move |image| {
                let records =
                    create_partitions_records(image, node_id, &topic, count, given.as_deref())?;
                Ok((if validate_only { Vec::new() } else { records }, ()))
            })
            .await;
        if let Err(e) = outcome {
            r.error_code = e.code.code();
            r.error_message = Some(sb(e.message));
        }
        results.push(r);
    }
    CreatePartitionsResponse::default().with_results(results)
}
