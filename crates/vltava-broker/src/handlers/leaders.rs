//! ElectLeaders (KIP-460): preferred and unclean leader elections on request.

use std::sync::Arc;

use vltava_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use vltava_protocol::messages::*;
use vltava_protocol::ErrorCode;

use super::{sb, tn};
use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};
use crate::controller::{elect_leaders_records, ElectionOutcome, ElectionType, OpError};

pub async fn elect_leaders(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let targets: Option<Vec<(String, i32)>> = req.topic_partitions.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    let refuse = |code: ErrorCode, message: &str| -> Vec<ElectionOutcome> {
        targets
            .iter()
            .flatten()
            .map(|(t, p)| (t.clone(), *p, Err(OpError::new(code, message))))
            .collect()
    };
    if !broker.authorize(ctx, AclOperation::Alter, Resource::Cluster) {
        let code = ErrorCode::ClusterAuthorizationFailed;
        return answer(
            refuse(code, "not authorized to alter the cluster"),
            code.code(),
        );
    }
    let Some(kind) = ElectionType::from_wire(req.election_type) else {
        let message = format!("unknown election type {}", req.election_type);
        return answer(refuse(ErrorCode::InvalidRequest, &message), 0);
    };
    let asked = targets.clone();
    let outcome = broker
        .controller
        .write(move |image| Ok(elect_leaders_records(image, kind, asked.as_deref())))
        .await;
    match outcome {
        Ok(outcomes) => answer(outcomes, 0),
        // The write itself failed (no quorum, a timeout): every partition has that answer.
        Err(e) => answer(refuse(e.code, &e.message), e.code.code()),
    }
}

/// Groups per-partition answers by topic, in the order they came.
fn answer(outcomes: Vec<ElectionOutcome>, error_code: i16) -> ElectLeadersResponse {
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, r) in outcomes {
        let mut pr = PartitionResult::default().with_partition_id(partition);
        if let Err(e) = r {
            pr.error_code = e.code.code();
            pr.error_message = Some(sb(e.message));
        }
        match results.last_mut() {
            Some(last) if last.topic.0.as_str() == topic => last.partition_result.push(pr),
            _ => results.push(
                ReplicaElectionResult::default()
                    .with_topic(tn(topic))
                    .with_partition_result(vec![pr]),
            ),
        }
    }
    ElectLeadersResponse::default()
        .with_error_code(error_code)
        .with_replica_election_results(results)
}
