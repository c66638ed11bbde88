//! DescribeClientQuotas and AlterClientQuotas (KIP-546): quotas are `ClientQuotaRecord`s in
//! the metadata log, so every broker throttles a client the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vltava_metadata::quota::{self, Match, QuotaEntity, QuotaValue};
use vltava_metadata::MetadataRecord;
use vltava_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest,
    AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use vltava_protocol::{ErrorCode, StrBytes};

use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};

type Failure = (ErrorCode, String);

fn invalid(message: impl Into<String>) -> Failure {
    (ErrorCode::InvalidRequest, message.into())
}

/// A DescribeClientQuotas filter, checked as Kafka checks it.
fn parse_filter(req: &DescribeClientQuotasRequest) -> Result<Vec<(String, Match)>, Failure> {
    let mut filter: Vec<(String, Match)> = Vec::new();
    for c in &req.components {
        let t = c.entity_type.to_string();
        if t.is_empty() {
            return Err(invalid("Invalid empty entity type"));
        }
        if !matches!(t.as_str(), quota::USER | quota::CLIENT_ID | quota::IP) {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!("Custom entity type '{t}' not supported"),
            ));
        }
        if filter.iter().any(|(f, _)| *f == t) {
            return Err(invalid(format!(
                "Entity type {t} cannot appear more than once in the filter"
            )));
        }
        let m = match (c.match_type, &c._match) {
            (0, Some(name)) => Match::Exact(name.to_string()),
            (0, None) => {
                return Err(invalid(format!(
                    "Request specified MATCH_TYPE_EXACT, but set match string to null for {t}"
                )))
            }
            (1, None) => Match::Default,
            (2, None) => Match::Any,
            (1 | 2, Some(_)) => {
                return Err(invalid(format!(
                    "Request specified a match string for a match type without one for {t}"
                )))
            }
            (other, _) => return Err(invalid(format!("Unknown match type {other}"))),
        };
        filter.push((t, m));
    }
    if filter.iter().any(|(t, _)| t == quota::IP) && filter.len() > 1 {
        return Err(invalid(
            "IP entity should not be combined with User or ClientId",
        ));
    }
    Ok(filter)
}

pub fn describe(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let fail = |(code, message): Failure| {
        DescribeClientQuotasResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if !broker.authorize(ctx, AclOperation::DescribeConfigs, Resource::Cluster) {
        return fail((
            ErrorCode::ClusterAuthorizationFailed,
            "Authorization failed.".into(),
        ));
    }
    let filter = match parse_filter(&req) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let image = broker.controller.image();
    let entries = image
        .client_quotas
        .iter()
        .filter(|(entity, _)| quota::matches(entity, &filter, req.strict))
        .map(|(entity, values)| {
            describe_client_quotas_response::EntryData::default()
                .with_entity(
                    entity
                        .iter()
                        .map(|(t, n)| {
                            describe_client_quotas_response::EntityData::default()
                                .with_entity_type(StrBytes::from_string(t.clone()))
                                .with_entity_name(n.clone().map(StrBytes::from_string))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(k, v)| {
                            describe_client_quotas_response::ValueData::default()
                                .with_key(StrBytes::from_string(k.clone()))
                                .with_value(v.0)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// One entry's checked alteration: its entity and the keys to set (`Some`) or remove (`None`).
type Alteration = (QuotaEntity, BTreeMap<String, Option<f64>>);

fn check_entry(
    entry: &vltava_protocol::messages::alter_client_quotas_request::EntryData,
) -> Result<Alteration, Failure> {
    let parts: Vec<(String, Option<String>)> = entry
        .entity
        .iter()
        .map(|e| {
            (
                e.entity_type.to_string(),
                e.entity_name.as_ref().map(|n| n.to_string()),
            )
        })
        .collect();
    let entity = quota::check_entity(&parts).map_err(invalid)?;
    let mut ops = BTreeMap::new();
    for op in &entry.ops {
        let key = op.key.to_string();
        let value = (!op.remove).then_some(op.value);
        quota::check_op(&entity, &key, value).map_err(invalid)?;
        if ops.insert(key.clone(), value).is_some() {
            return Err(invalid(format!("Duplicate quota key {key}")));
        }
    }
    Ok((entity, ops))
}

pub async fn alter(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let allowed = broker.authorize(&ctx, AclOperation::AlterConfigs, Resource::Cluster);
    let checked: Vec<Result<Alteration, Failure>> = req
        .entries
        .iter()
        .map(|e| {
            if allowed {
                check_entry(e)
            } else {
                Err((
                    ErrorCode::ClusterAuthorizationFailed,
                    "Authorization failed.".into(),
                ))
            }
        })
        .collect();
    // An entity named twice: the later entries are refused.
    let mut seen = BTreeSet::new();
    let checked: Vec<Result<Alteration, Failure>> = checked
        .into_iter()
        .map(|c| match c {
            Ok((entity, _)) if !seen.insert(entity.clone()) => Err(invalid(format!(
                "Ignoring duplicate entity {}",
                describe_entity(&entity)
            ))),
            other => other,
        })
        .collect();
    let alterations: Vec<Alteration> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let validate_only = req.validate_only;
    let written = if alterations.is_empty() {
        Ok(())
    } else {
        broker
            .controller
            .write(move |image| {
                let mut records = Vec::new();
                for (entity, ops) in &alterations {
                    let current = image.client_quotas.get(entity);
                    for (key, value) in ops {
                        let now = current.and_then(|c| c.get(key)).map(|v| v.0);
                        // Only changes are written: a set to the same value or a removal of
                        // an absent key succeeds without a record.
                        let remove = value.is_none();
                        if now.map(f64::to_bits) == value.map(f64::to_bits) {
                            continue;
                        }
                        records.push(MetadataRecord::ClientQuotaRecord {
                            entity: entity.clone(),
                            key: key.clone(),
                            value: QuotaValue(value.unwrap_or(0.0)),
                            remove,
                        });
                    }
                }
                if validate_only {
                    records.clear();
                }
                Ok((records, ()))
            })
            .await
            .map_err(|e| (e.code, e.message))
    };
    let entries = req
        .entries
        .iter()
        .zip(checked)
        .map(|(entry, outcome)| {
            let failure = match (outcome, &written) {
                (Err(f), _) => Some(f),
                (Ok(_), Err(f)) => Some(f.clone()),
                (Ok(_), Ok(())) => None,
            };
            let (code, message) = match failure {
                None => (0, None),
                Some((c, m)) => (c.code(), Some(StrBytes::from_string(m))),
            };
            alter_client_quotas_response::EntryData::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_entity(
                    entry
                        .entity
                        .iter()
                        .map(|e| {
                            alter_client_quotas_response::EntityData::default()
                                .with_entity_type(e.entity_type.clone())
                                .with_entity_name(e.entity_name.clone())
                        })
                        .collect(),
                )
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}

/// `user=alice, client-id=<default>`, as Kafka prints an entity.
fn describe_entity(entity: &QuotaEntity) -> String {
    entity
        .iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(", ")
}
