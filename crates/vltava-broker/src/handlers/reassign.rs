//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455): moving replicas
//! between brokers while the partition stays available.

use std::sync::Arc;

use vltava_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use vltava_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use vltava_protocol::messages::*;
use vltava_protocol::ErrorCode;
use vltava_types::NodeId;

use super::{sb, tn};
use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};
use crate::controller::{reassign_records, OpError};

type Outcome = (String, i32, Result<(), OpError>);

pub async fn alter_partition_reassignments(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = req.allow_replication_factor_change;
    let asked: Vec<(String, i32, Option<Vec<NodeId>>)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.replicas
                        .as_ref()
                        .map(|r| r.iter().map(|b| NodeId::new(b.0)).collect()),
                )
            })
        })
        .collect();
    let refuse = |code: ErrorCode, message: &str| -> Vec<Outcome> {
        asked
            .iter()
            .map(|(t, p, _)| (t.clone(), *p, Err(OpError::new(code, message))))
            .collect()
    };
    let response = |outcomes, code: i16, message: Option<String>| {
        answer(outcomes, code, message).with_allow_replication_factor_change(allow_rf_change)
    };
    if !broker.authorize(ctx, AclOperation::Alter, Resource::Cluster) {
        let code = ErrorCode::ClusterAuthorizationFailed;
        let message = "not authorized to alter the cluster";
        return response(refuse(code, message), code.code(), Some(message.into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some((t, p, _)) = asked.iter().find(|(t, p, _)| !seen.insert((t, *p))) {
        let message = format!("{t}-{p} is named twice");
        return response(
            refuse(ErrorCode::InvalidRequest, &message),
            ErrorCode::InvalidRequest.code(),
            Some(message),
        );
    }
    let plan = asked.clone();
    let outcome = broker
        .controller
        .write(move |image| {
            // Each partition on the image as the ones before it left it.
            let mut image = image.clone();
            let mut records = Vec::new();
            let mut outcomes = Vec::new();
            for (topic, partition, target) in &plan {
                let r = reassign_records(
                    &image,
                    topic,
                    *partition,
                    target.as_deref(),
                    allow_rf_change,
                );
                outcomes.push((
                    topic.clone(),
                    *partition,
                    r.map(|recs| {
                        for rec in &recs {
                            image.apply(rec);
                        }
                        records.extend(recs);
                    }),
                ));
            }
            Ok((records, outcomes))
        })
        .await;
    match outcome {
        Ok(outcomes) => response(outcomes, 0, None),
        Err(e) => {
            let message = e.message.clone();
            response(refuse(e.code, &e.message), e.code.code(), Some(message))
        }
    }
}

fn answer(
    outcomes: Vec<Outcome>,
    code: i16,
    message: Option<String>,
) -> AlterPartitionReassignmentsResponse {
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for (topic, partition, r) in outcomes {
        let mut pr = ReassignablePartitionResponse::default().with_partition_index(partition);
        if let Err(e) = r {
            pr.error_code = e.code.code();
            pr.error_message = Some(sb(e.message));
        }
        match responses.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.partitions.push(pr),
            _ => responses.push(
                ReassignableTopicResponse::default()
                    .with_name(tn(topic))
                    .with_partitions(vec![pr]),
            ),
        }
    }
    AlterPartitionReassignmentsResponse::default()
        .with_error_code(code)
        .with_error_message(message.map(sb))
        .with_responses(responses)
}

pub fn list_partition_reassignments(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if !broker.authorize(ctx, AclOperation::Describe, Resource::Cluster) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(sb("not authorized to describe the cluster")));
    }
    let image = broker.controller.image();
    let wanted = |topic: &str, partition: i32| match &req.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.name.0.as_str() == topic && t.partition_indexes.contains(&partition)),
    };
    let ids = |v: &[NodeId]| v.iter().map(|r| BrokerId(r.get())).collect::<Vec<_>>();
    let topics = image
        .topics
        .values()
        .filter_map(|t| {
            let partitions: Vec<OngoingPartitionReassignment> = t
                .partitions
                .values()
                .filter(|p| p.is_reassigning() && wanted(&t.name, p.partition_id))
                .map(|p| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(p.partition_id)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding_replicas))
                        .with_removing_replicas(ids(&p.removing_replicas))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(tn(t.name.clone()))
                    .with_partitions(partitions)
            })
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
