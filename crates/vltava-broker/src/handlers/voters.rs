//! AddRaftVoter and RemoveRaftVoter (KIP-853): changing the metadata quorum's voters while
//! it serves. Any node takes the request; the quorum leader makes the change.

use std::sync::Arc;
use std::time::Duration;

use vltava_protocol::messages::*;
use vltava_protocol::ErrorCode;
use vltava_quorum::VoterChangeError;

use super::sb;
use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};

/// Longest a voter change may take when the request's timeout is shorter or unset: a new
/// voter first copies the whole log.
const MIN_TIMEOUT: Duration = Duration::from_secs(30);

fn refusal(
    broker: &Broker,
    ctx: &RequestContext,
    cluster_id: Option<&str>,
) -> Option<(i16, String)> {
    if !broker.authorize(ctx, AclOperation::Alter, Resource::Cluster) {
        return Some((
            ErrorCode::ClusterAuthorizationFailed.code(),
            "not authorized to alter the cluster".into(),
        ));
    }
    match cluster_id {
        Some(id) if !id.is_empty() && id != broker.cluster_id => Some((
            ErrorCode::InconsistentClusterId.code(),
            format!("the cluster id is {}, not {id}", broker.cluster_id),
        )),
        _ => None,
    }
}

fn answer(r: Result<(), VoterChangeError>) -> (i16, Option<String>) {
    let code = match &r {
        Ok(()) => return (0, None),
        Err(VoterChangeError::AlreadyVoter(_)) => ErrorCode::DuplicateVoter,
        Err(VoterChangeError::NotVoter(_)) => ErrorCode::VoterNotFound,
        Err(VoterChangeError::LastVoter) => ErrorCode::InvalidRequest,
        Err(VoterChangeError::Timeout(_)) => ErrorCode::RequestTimedOut,
        Err(VoterChangeError::NotLeader) => ErrorCode::NotLeaderOrFollower,
        Err(VoterChangeError::Failed(_)) => ErrorCode::UnknownServerError,
    };
    (code.code(), r.err().map(|e| e.to_string()))
}

pub async fn add_raft_voter(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AddRaftVoterRequest,
) -> AddRaftVoterResponse {
    let resp = |(code, message): (i16, Option<String>)| {
        AddRaftVoterResponse::default()
            .with_error_code(code)
            .with_error_message(message.map(sb))
    };
    if let Some((code, message)) = refusal(broker, ctx, req.cluster_id.as_deref()) {
        return resp((code, Some(message)));
    }
    // The listener the quorum talks on: the one named like ours, else the first.
    let ours = &broker.config.controller_listeners;
    let Some(listener) = req
        .listeners
        .iter()
        .find(|l| ours.iter().any(|n| n.eq_ignore_ascii_case(&l.name)))
        .or(req.listeners.first())
    else {
        return resp((
            ErrorCode::InvalidRequest.code(),
            Some("the new voter has no listener".into()),
        ));
    };
    if req.voter_id < 0 {
        return resp((
            ErrorCode::InvalidRequest.code(),
            Some(format!("{} is not a node id", req.voter_id)),
        ));
    }
    let addr = format!("{}:{}", listener.host.as_str(), listener.port);
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64).max(MIN_TIMEOUT);
    let quorum = broker.controller.quorum();
    resp(answer(
        quorum.add_voter(req.voter_id as u64, addr, timeout).await,
    ))
}

pub async fn remove_raft_voter(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: RemoveRaftVoterRequest,
) -> RemoveRaftVoterResponse {
    let resp = |(code, message): (i16, Option<String>)| {
        RemoveRaftVoterResponse::default()
            .with_error_code(code)
            .with_error_message(message.map(sb))
    };
    if let Some((code, message)) = refusal(broker, ctx, req.cluster_id.as_deref()) {
        return resp((code, Some(message)));
    }
    if req.voter_id < 0 {
        return resp((
            ErrorCode::VoterNotFound.code(),
            Some(format!("{} is not a node id", req.voter_id)),
        ));
    }
    let quorum = broker.controller.quorum();
    resp(answer(
        quorum.remove_voter(req.voter_id as u64, MIN_TIMEOUT).await,
    ))
}
