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
pub fn create_topic(
    broker: &Broker,
    name: &str,
    num_partitions: i32,
    replication_factor: i16,
    configs: &BTreeMap<String, String>,
    validate_only: bool,
) -> Result<Uuid, OpError> {
    broker.controller.with_lock(|c| {
        let image = c.image();
        let (id, records) = create_topic_records(
            &image,
            c.node_id(),
            name,
            num_partitions,
            replication_factor,
            configs,
        )?;
        let hosted = image.topics.values().map(|t| t.partitions.len()).sum::<usize>();
        let limit = broker.max_hosted_partitions();
        if hosted + num_partitions.max(0) as usize > limit {
            return Err(OpError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "Creating {num_partitions} partitions would make this broker host more than {limit}, the most its open-file limit allows."
                ),
            ));
        }
        if validate_only {
            return Ok(id);
        }
        let (old, new) = c.commit(&records)?;
        if let Err(e) = broker.reconcile(&old, &new) {
            // All or nothing: a topic whose logs could not all be opened is removed again.
            tracing::error!(topic = name, error = %e, "could not open the new topic's logs; removing it");
            if let Ok((old, new)) = c.commit(&[MetadataRecord::RemoveTopicRecord { topic_id: id }]) {
                if let Err(e) = broker.reconcile(&old, &new) {
                    tracing::error!(topic = name, error = %e, "could not remove the half-created topic's logs");
                }
            }
            return Err(OpError::new(
                ErrorCode::KafkaStorageError,
                format!("Could not create the logs of topic '{name}': {e}. The topic was not created."),
            ));
        }
        tracing::info!(topic = name, partitions = num_partitions, "created topic");
        Ok(id)
    })
}

pub fn create_topics(
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
        let outcome = (|| {
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
                    if a.broker_ids.iter().any(|b| b.0 != broker.config.node_id)
                        || a.broker_ids.is_empty()
                    {
                        return Err(OpError::new(
                            ErrorCode::InvalidReplicaAssignment,
                            "Replica assignment names an unknown broker.",
                        ));
                    }
                }
                (
                    t.assignments.len() as i32,
                    t.assignments[0].broker_ids.len() as i16,
                )
            };
            let id = create_topic(broker, &name, partitions, rf, &configs, req.validate_only)?;
            Ok((id, partitions, rf))
        })();
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

pub fn delete_topics(
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
        let outcome = broker.controller.with_lock(|c| {
            let image = c.image();
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
            let (old, new) = c
                .commit(&[MetadataRecord::RemoveTopicRecord { topic_id }])
                .map_err(|e| (e.code, Some(e.message)))?;
            broker
                .reconcile(&old, &new)
                .map_err(|e| (ErrorCode::KafkaStorageError, Some(e.to_string())))?;
            tracing::info!(topic = %name, "deleted topic");
            Ok((name, topic_id))
        });
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

pub fn create_partitions(
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
        let outcome = broker.controller.with_lock(|c| {
            let image = c.image();
            let records = create_partitions_records(&image, c.node_id(), &name, t.count)?;
            if let Some(a) = &t.assignments {
                if a.len() != records.len() || a.iter().any(|x| x.broker_ids.iter().any(|b| b.0 != c.node_id())) {
                    return Err(OpError::new(ErrorCode::InvalidReplicaAssignment, "Replica assignment does not match the new partitions or names an unknown broker."));
                }
            }
            if req.validate_only {
                return Ok(());
            }
            let (old, new) = c.commit(&records)?;
            broker.reconcile(&old, &new).map_err(|e| OpError::new(ErrorCode::KafkaStorageError, e.to_string()))
        });
        if let Err(e) = outcome {
            r.error_code = e.code.code();
            r.error_message = Some(sb(e.message));
        }
        results.push(r);
    }
    CreatePartitionsResponse::default().with_results(results)
}
