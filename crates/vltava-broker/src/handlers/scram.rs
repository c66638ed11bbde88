//! AlterUserScramCredentials and DescribeUserScramCredentials (KIP-554): SCRAM users live in
//! the metadata log as `UserScramCredentialRecord`s, so every broker of the cluster
//! authenticates them the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vltava_metadata::{MetadataRecord, ScramMechanism};
use vltava_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use vltava_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use vltava_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use vltava_protocol::{ErrorCode, StrBytes};

use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};
use crate::controller::OpError;
use crate::security::scram;

/// One user's outcome: no error, or Kafka's code and message.
type Outcome = Option<(ErrorCode, String)>;

/// Checks one alteration against the image and returns its record.
fn check_upsertion(
    u: &vltava_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion,
) -> Result<MetadataRecord, (ErrorCode, String)> {
    let m = ScramMechanism::from_wire(u.mechanism).ok_or((
        ErrorCode::UnsupportedSaslMechanism,
        "Unknown SCRAM mechanism".to_string(),
    ))?;
    if u.iterations < scram::MIN_ITERATIONS {
        return Err((
            ErrorCode::UnacceptableCredential,
            format!("Too few iterations: at least {}", scram::MIN_ITERATIONS),
        ));
    }
    if u.iterations > scram::MAX_ITERATIONS {
        return Err((
            ErrorCode::UnacceptableCredential,
            format!("Too many iterations: at most {}", scram::MAX_ITERATIONS),
        ));
    }
    if u.salt.is_empty() || u.salted_password.is_empty() {
        return Err((
            ErrorCode::UnacceptableCredential,
            "Salt and salted password must not be empty".to_string(),
        ));
    }
    let c = scram::credential(m, &u.salt, &u.salted_password, u.iterations);
    Ok(MetadataRecord::UserScramCredentialRecord {
        name: u.name.to_string(),
        mechanism: m,
        salt: c.salt,
        stored_key: c.stored_key,
        server_key: c.server_key,
        iterations: c.iterations,
    })
}

pub async fn alter(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // Users in request order, each once; a user named twice is refused as a whole.
    let mut order: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let names = req
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(req.upsertions.iter().map(|u| u.name.to_string()));
    for name in names {
        let n = seen.entry(name.clone()).or_insert(0);
        if *n == 0 {
            order.push(name);
        }
        *n += 1;
    }
    let allowed = broker.authorize(&ctx, AclOperation::Alter, Resource::Cluster);
    let result = broker
        .controller
        .write(move |image| {
            let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
            let mut records: BTreeMap<String, Vec<MetadataRecord>> = BTreeMap::new();
            let fail = |outcomes: &mut BTreeMap<String, Outcome>, user: &str, e| {
                outcomes.entry(user.to_string()).or_insert(Some(e));
            };
            for (user, n) in &seen {
                if !allowed {
                    fail(
                        &mut outcomes,
                        user,
                        (
                            ErrorCode::ClusterAuthorizationFailed,
                            "Authorization failed.".into(),
                        ),
                    );
                } else if user.is_empty() {
                    fail(
                        &mut outcomes,
                        user,
                        (
                            ErrorCode::UnacceptableCredential,
                            "Username must not be empty".into(),
                        ),
                    );
                } else if *n > 1 {
                    fail(
                        &mut outcomes,
                        user,
                        (
                            ErrorCode::DuplicateResource,
                            "A user credential cannot be altered twice in the same request".into(),
                        ),
                    );
                }
            }
            for d in &req.deletions {
                let user = d.name.to_string();
                if outcomes.contains_key(&user) {
                    continue;
                }
                match ScramMechanism::from_wire(d.mechanism) {
                    None => fail(
                        &mut outcomes,
                        &user,
                        (
                            ErrorCode::UnsupportedSaslMechanism,
                            "Unknown SCRAM mechanism".into(),
                        ),
                    ),
                    Some(m) if image.scram_credential(&user, m).is_none() => fail(
                        &mut outcomes,
                        &user,
                        (
                            ErrorCode::ResourceNotFound,
                            "Attempt to delete a user credential that does not exist".into(),
                        ),
                    ),
                    Some(m) => records.entry(user.clone()).or_default().push(
                        MetadataRecord::RemoveUserScramCredentialRecord {
                            name: user,
                            mechanism: m,
                        },
                    ),
                }
            }
            for u in &req.upsertions {
                let user = u.name.to_string();
                if outcomes.contains_key(&user) {
                    continue;
                }
                match check_upsertion(u) {
                    Ok(r) => records.entry(user).or_default().push(r),
                    Err(e) => fail(&mut outcomes, &user, e),
                }
            }
            // A user with any refused part changes nothing.
            let mut out = Vec::new();
            for (user, rs) in records {
                if let std::collections::btree_map::Entry::Vacant(e) = outcomes.entry(user) {
                    out.extend(rs);
                    e.insert(None);
                }
            }
            Ok((out, outcomes))
        })
        .await;
    let results = order
        .into_iter()
        .map(|user| {
            let outcome = match &result {
                Ok(outcomes) => outcomes.get(&user).cloned().flatten(),
                Err(OpError { code, message }) => Some((*code, message.clone())),
            };
            let (code, message) = match outcome {
                None => (0, None),
                Some((code, message)) => (code.code(), Some(StrBytes::from_string(message))),
            };
            AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user))
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

pub fn describe(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !broker.authorize(ctx, AclOperation::Describe, Resource::Cluster) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_static_str("Authorization failed.")));
    }
    let image = broker.controller.image();
    let mut by_user: BTreeMap<&str, Vec<CredentialInfo>> = BTreeMap::new();
    for ((user, m), c) in &image.scram_credentials {
        by_user.entry(user.as_str()).or_default().push(
            CredentialInfo::default()
                .with_mechanism(m.wire())
                .with_iterations(c.iterations),
        );
    }
    let result = |user: &str, infos: Vec<CredentialInfo>| {
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()))
            .with_credential_infos(infos)
    };
    let results = match req.users.filter(|u| !u.is_empty()) {
        // Null or empty: every user that has a credential.
        None => by_user
            .into_iter()
            .map(|(user, infos)| result(user, infos))
            .collect(),
        Some(users) => {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for u in &users {
                *counts.entry(u.name.to_string()).or_default() += 1;
            }
            let mut done = BTreeSet::new();
            let mut out = Vec::new();
            for u in users {
                let user = u.name.to_string();
                if !done.insert(user.clone()) {
                    continue;
                }
                let error = |code: ErrorCode, message: &'static str| {
                    result(&user, Vec::new())
                        .with_error_code(code.code())
                        .with_error_message(Some(StrBytes::from_static_str(message)))
                };
                out.push(if counts[&user] > 1 {
                    error(
                        ErrorCode::DuplicateResource,
                        "Cannot describe SCRAM credentials for the same user twice in a single request",
                    )
                } else {
                    match by_user.remove(user.as_str()) {
                        Some(infos) => result(&user, infos),
                        None => error(
                            ErrorCode::ResourceNotFound,
                            "Attempt to describe a user credential that does not exist",
                        ),
                    }
                });
            }
            out
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
