//! CreateAcls, DescribeAcls and DeleteAcls: ACLs are `AccessControlEntryRecord`s in the
//! metadata log, so every broker's authorizer sees a change with the batch that commits it.
//! Without an authorizer Kafka answers SECURITY_DISABLED; changing ACLs takes ALTER on the
//! cluster and listing them DESCRIBE.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use vltava_metadata::acl::{
    AclBinding, AclFilter, AclOperation as Op, AclPermission, AclResourceType, PatternType,
};
use vltava_metadata::MetadataRecord;
use vltava_protocol::messages::create_acls_response::AclCreationResult;
use vltava_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use vltava_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use vltava_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use vltava_protocol::{ErrorCode, StrBytes};

use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};

const NO_AUTHORIZER: &str = "No Authorizer is configured.";

/// Why the whole request is refused, if it is.
fn refusal(
    broker: &Broker,
    ctx: &RequestContext,
    op: AclOperation,
) -> Option<(ErrorCode, &'static str)> {
    if !broker.authorizer.uses_acls() {
        Some((ErrorCode::SecurityDisabled, NO_AUTHORIZER))
    } else if !broker.authorize(ctx, op, Resource::Cluster) {
        Some((
            ErrorCode::ClusterAuthorizationFailed,
            "Authorization failed.",
        ))
    } else {
        None
    }
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn binding(
    c: &vltava_protocol::messages::create_acls_request::AclCreation,
) -> Result<AclBinding, String> {
    let b = AclBinding {
        resource_type: AclResourceType::from_wire(c.resource_type)
            .ok_or_else(|| format!("invalid resource type {}", c.resource_type))?,
        resource_name: c.resource_name.to_string(),
        pattern_type: PatternType::from_wire(c.resource_pattern_type)
            .ok_or_else(|| format!("invalid pattern type {}", c.resource_pattern_type))?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Op::from_wire(c.operation)
            .ok_or_else(|| format!("invalid operation {}", c.operation))?,
        permission: AclPermission::from_wire(c.permission_type)
            .ok_or_else(|| format!("invalid permission type {}", c.permission_type))?,
    };
    b.validate()?;
    Ok(b)
}

pub async fn create(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    let n = req.creations.len();
    let fail_all = |code: ErrorCode, message: &str| {
        let results = (0..n)
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(text(message)))
            })
            .collect();
        CreateAclsResponse::default().with_results(results)
    };
    if let Some((code, message)) = refusal(&broker, &ctx, AclOperation::Alter) {
        return fail_all(code, message);
    }
    let wanted: Vec<Result<AclBinding, String>> = req.creations.iter().map(binding).collect();
    let valid: Vec<AclBinding> = wanted.iter().filter_map(|w| w.clone().ok()).collect();
    let written = broker
        .controller
        .write(move |image| {
            let mut records = Vec::new();
            let mut new: Vec<&AclBinding> = Vec::new();
            for b in &valid {
                // Kafka stores a binding once, however often it is created.
                if image.acls.values().any(|e| e == b) || new.contains(&b) {
                    continue;
                }
                new.push(b);
                records.push(MetadataRecord::AccessControlEntryRecord {
                    id: Uuid::new_v4(),
                    binding: b.clone(),
                });
            }
            Ok((records, ()))
        })
        .await;
    if let Err(e) = written {
        return fail_all(e.code, &e.message);
    }
    let results = wanted
        .into_iter()
        .map(|w| match w {
            Ok(_) => AclCreationResult::default(),
            Err(e) => AclCreationResult::default()
                .with_error_code(ErrorCode::InvalidRequest.code())
                .with_error_message(Some(text(e))),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

fn filter(
    resource_type: i8,
    name: &Option<StrBytes>,
    pattern_type: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> AclFilter {
    AclFilter {
        resource_type,
        resource_name: name.as_ref().map(|s| s.to_string()),
        pattern_type,
        principal: principal.as_ref().map(|s| s.to_string()),
        host: host.as_ref().map(|s| s.to_string()),
        operation,
        permission,
    }
}

pub fn describe(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let refuse = |code: ErrorCode, message: String| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(text(message)))
    };
    if let Some((code, message)) = refusal(broker, ctx, AclOperation::Describe) {
        return refuse(code, message.into());
    }
    let f = filter(
        req.resource_type_filter,
        &req.resource_name_filter,
        req.pattern_type_filter,
        &req.principal_filter,
        &req.host_filter,
        req.operation,
        req.permission_type,
    );
    if let Err(e) = f.validate() {
        return refuse(ErrorCode::InvalidRequest, e);
    }
    let image = broker.controller.image();
    let mut by_resource: BTreeMap<(AclResourceType, &str, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for b in image.acls.values().filter(|b| f.matches(b)) {
        by_resource
            .entry((b.resource_type, &b.resource_name, b.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(text(b.principal.clone()))
                    .with_host(text(b.host.clone()))
                    .with_operation(b.operation.wire())
                    .with_permission_type(b.permission.wire()),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((rt, name, pt), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rt.wire())
                .with_resource_name(text(name))
                .with_pattern_type(pt.wire())
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn delete(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let n = req.filters.len();
    let fail_all = |code: ErrorCode, message: &str| {
        let results = (0..n)
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(text(message)))
            })
            .collect();
        DeleteAclsResponse::default().with_filter_results(results)
    };
    if let Some((code, message)) = refusal(&broker, &ctx, AclOperation::Alter) {
        return fail_all(code, message);
    }
    let filters: Vec<AclFilter> = req
        .filters
        .iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                &f.resource_name_filter,
                f.pattern_type_filter,
                &f.principal_filter,
                &f.host_filter,
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let written = broker
        .controller
        .write(move |image| {
            let mut records = Vec::new();
            let mut removed: Vec<Uuid> = Vec::new();
            let mut outcomes: Vec<Result<Vec<AclBinding>, String>> = Vec::new();
            for f in &filters {
                if let Err(e) = f.validate() {
                    outcomes.push(Err(e));
                    continue;
                }
                let mut matched = Vec::new();
                for (id, b) in image.acls.iter().filter(|(_, b)| f.matches(b)) {
                    matched.push(b.clone());
                    if !removed.contains(id) {
                        removed.push(*id);
                        records.push(MetadataRecord::RemoveAccessControlEntryRecord { id: *id });
                    }
                }
                outcomes.push(Ok(matched));
            }
            Ok((records, outcomes))
        })
        .await;
    let outcomes = match written {
        Ok(o) => o,
        Err(e) => return fail_all(e.code, &e.message),
    };
    let results = outcomes
        .into_iter()
        .map(|o| match o {
            Err(e) => DeleteAclsFilterResult::default()
                .with_error_code(ErrorCode::InvalidRequest.code())
                .with_error_message(Some(text(e))),
            Ok(matched) => DeleteAclsFilterResult::default().with_matching_acls(
                matched
                    .into_iter()
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type.wire())
                            .with_resource_name(text(b.resource_name))
                            .with_pattern_type(b.pattern_type.wire())
                            .with_principal(text(b.principal))
                            .with_host(text(b.host))
                            .with_operation(b.operation.wire())
                            .with_permission_type(b.permission.wire())
                    })
                    .collect(),
            ),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
