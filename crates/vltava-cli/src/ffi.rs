//! Calls into librdkafka's C API for what rust-rdkafka does not wrap: IncrementalAlterConfigs
//! (its `alter_configs` is the legacy API, which resets every config not named), the
//! controller id, and ListConsumerGroups/DescribeConsumerGroups (rust-rdkafka only has the
//! legacy group list, built on DescribeGroups, which reports KIP-848 groups as Dead). Each
//! function owns every native object it creates and frees it on all paths.
//!
//! One of the two modules in the workspace allowed `unsafe` (the other is
//! `vltava-storage/src/sys.rs`, for one system call).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;

/// The resource whose configs change.
#[derive(Debug, Clone)]
pub enum Resource {
    Topic(String),
    Broker(i32),
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Topic(t) => write!(f, "topic '{t}'"),
            Resource::Broker(b) => write!(f, "broker {b}"),
        }
    }
}

/// One change: `Some(value)` sets, `None` deletes (reverts to the default).
pub type ConfigOp = (String, Option<String>);

/// Why an incremental alter failed.
#[derive(Debug)]
pub enum AlterError {
    /// librdkafka refused the request before sending it, or the request failed as a whole.
    Request(String),
    /// The broker refused the change for this resource.
    Refused {
        code: RDKafkaErrorCode,
        message: String,
    },
    Timeout,
}

unsafe fn cstr_or(ptr: *const std::os::raw::c_char, fallback: &str) -> String {
    if ptr.is_null() {
        fallback.to_string()
    } else {
        // SAFETY: librdkafka returns NUL-terminated strings that live as long as their owner.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Applies `ops` to `resource` with IncrementalAlterConfigs. librdkafka routes broker
/// resources to that broker and topic resources to any broker.
pub fn incremental_alter_configs<C: ClientContext>(
    client: &Client<C>,
    resource: &Resource,
    ops: &[ConfigOp],
    timeout: Duration,
) -> Result<(), AlterError> {
    let (restype, name) = match resource {
        Resource::Topic(t) => (
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            t.clone(),
        ),
        Resource::Broker(b) => (
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_BROKER,
            b.to_string(),
        ),
    };
    let cname = CString::new(name).map_err(|_| AlterError::Request("name contains NUL".into()))?;
    let ops: Vec<(CString, Option<CString>)> = ops
        .iter()
        .map(|(k, v)| {
            Ok((
                CString::new(k.as_str())?,
                v.as_deref().map(CString::new).transpose()?,
            ))
        })
        .collect::<Result<_, std::ffi::NulError>>()
        .map_err(|_| AlterError::Request("config contains NUL".into()))?;
    // SAFETY: `config` is created here, checked for null, and destroyed exactly once on every
    // path; the request closures only start the request and read the event.
    unsafe {
        let mut config = rd::rd_kafka_ConfigResource_new(restype, cname.as_ptr());
        if config.is_null() {
            return Err(AlterError::Request("cannot create config resource".into()));
        }
        for (k, v) in &ops {
            let op = if v.is_some() {
                rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET
            } else {
                rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_DELETE
            };
            let value = v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
            let err =
                rd::rd_kafka_ConfigResource_add_incremental_config(config, k.as_ptr(), op, value);
            if !err.is_null() {
                let msg = cstr_or(rd::rd_kafka_error_string(err), "invalid config");
                rd::rd_kafka_error_destroy(err);
                rd::rd_kafka_ConfigResource_destroy(config);
                return Err(AlterError::Request(msg));
            }
        }
        let result = admin_request(
            client,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS,
            timeout,
            |rk, options, queue| {
                rd::rd_kafka_IncrementalAlterConfigs(rk, &mut config, 1, options, queue)
            },
            |event| {
                let res = rd::rd_kafka_event_IncrementalAlterConfigs_result(event);
                let mut n = 0usize;
                let resources = if res.is_null() {
                    std::ptr::null()
                } else {
                    rd::rd_kafka_IncrementalAlterConfigs_result_resources(res, &mut n)
                };
                for i in 0..n {
                    let r = *resources.add(i);
                    let code = rd::rd_kafka_ConfigResource_error(r);
                    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        let code = RDKafkaErrorCode::from(code);
                        let message = cstr_or(rd::rd_kafka_ConfigResource_error_string(r), "");
                        return Ok(Err(AlterError::Refused { code, message }));
                    }
                }
                Ok(Ok(()))
            },
        );
        rd::rd_kafka_ConfigResource_destroy(config);
        match result {
            Ok(outcome) => outcome,
            Err(AdminFailure::Timeout) => Err(AlterError::Timeout),
            Err(AdminFailure::Failed(msg)) => Err(AlterError::Request(msg)),
        }
    }
}

/// The id of the cluster's controller as librdkafka learned it from Metadata, if known.
pub fn controller_id<C: ClientContext>(client: &Client<C>, timeout: Duration) -> Option<i32> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: a plain query on a live client handle.
    let id = unsafe { rd::rd_kafka_controllerid(client.native_ptr(), ms) };
    (id >= 0).then_some(id)
}

/// A group as ListConsumerGroups reports it.
#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group: String,
    pub state: String,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: String,
}

/// A group member as DescribeConsumerGroups reports it.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<(String, i32)>,
}

/// A group as DescribeConsumerGroups reports it. librdkafka asks ConsumerGroupDescribe
/// first and falls back to DescribeGroups for classic groups.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub group_type: String,
    pub assignor: String,
    pub members: Vec<MemberInfo>,
    pub error: Option<(RDKafkaErrorCode, String)>,
}

fn state_name(state: rd::rd_kafka_consumer_group_state_t) -> String {
    // SAFETY: returns a static string for every value.
    unsafe { cstr_or(rd::rd_kafka_consumer_group_state_name(state), "Unknown") }
}

fn type_name(t: rd::rd_kafka_consumer_group_type_t) -> String {
    // SAFETY: returns a static string for every value.
    unsafe { cstr_or(rd::rd_kafka_consumer_group_type_name(t), "Unknown") }.to_ascii_lowercase()
}

/// Why an admin request produced no result.
#[derive(Debug)]
pub enum AdminFailure {
    Timeout,
    Failed(String),
}

impl std::fmt::Display for AdminFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminFailure::Timeout => f.write_str("no answer in time"),
            AdminFailure::Failed(msg) => f.write_str(msg),
        }
    }
}

/// Runs one admin request: `issue` sends it with the options and a fresh queue; the result
/// event is handed to `read`. Options, queue and event are freed here.
///
/// # Safety
/// `issue` must only start the request; `read` must not keep pointers into the event.
unsafe fn admin_request<C: ClientContext, T>(
    client: &Client<C>,
    op: rd::rd_kafka_admin_op_t,
    timeout: Duration,
    issue: impl FnOnce(*mut rd::rd_kafka_t, *mut rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t),
    read: impl FnOnce(*mut rd::rd_kafka_event_t) -> Result<T, String>,
) -> Result<T, AdminFailure> {
    let rk = client.native_ptr();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: per the function's contract; every object is destroyed once below.
    unsafe {
        let options = rd::rd_kafka_AdminOptions_new(rk, op);
        let mut errstr = [0 as std::os::raw::c_char; 512];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let queue = rd::rd_kafka_queue_new(rk);
        issue(rk, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(5_000));
        let result = if event.is_null() {
            Err(AdminFailure::Timeout)
        } else if rd::rd_kafka_event_error(event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            Err(AdminFailure::Failed(cstr_or(
                rd::rd_kafka_event_error_string(event),
                "request failed",
            )))
        } else {
            read(event).map_err(AdminFailure::Failed)
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        result
    }
}

/// Every group the cluster knows, with its state and type (ListGroups v5 where available).
pub fn list_consumer_groups<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<Vec<GroupListing>, AdminFailure> {
    // SAFETY: the closures only start the request and copy results out of the event.
    unsafe {
        admin_request(
            client,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS,
            timeout,
            |rk, options, queue| rd::rd_kafka_ListConsumerGroups(rk, options, queue),
            |event| {
                let res = rd::rd_kafka_event_ListConsumerGroups_result(event);
                if res.is_null() {
                    return Err("unexpected result".into());
                }
                let mut n = 0usize;
                let errs = rd::rd_kafka_ListConsumerGroups_result_errors(res, &mut n);
                if n > 0 {
                    return Err(cstr_or(rd::rd_kafka_error_string(*errs), "listing failed"));
                }
                let valid = rd::rd_kafka_ListConsumerGroups_result_valid(res, &mut n);
                Ok((0..n)
                    .map(|i| {
                        let g = *valid.add(i);
                        GroupListing {
                            group: cstr_or(rd::rd_kafka_ConsumerGroupListing_group_id(g), ""),
                            state: state_name(rd::rd_kafka_ConsumerGroupListing_state(g)),
                            group_type: type_name(rd::rd_kafka_ConsumerGroupListing_type(g)),
                        }
                    })
                    .collect())
            },
        )
    }
}

/// Describes `groups`: state, type, assignor and members with their assignments.
pub fn describe_consumer_groups<C: ClientContext>(
    client: &Client<C>,
    groups: &[&str],
    timeout: Duration,
) -> Result<Vec<GroupDescription>, AdminFailure> {
    if groups.is_empty() {
        return Ok(vec![]);
    }
    let names: Vec<CString> = groups
        .iter()
        .map(|g| CString::new(*g))
        .collect::<Result<_, _>>()
        .map_err(|_| AdminFailure::Failed("group name contains NUL".into()))?;
    let mut ptrs: Vec<*const std::os::raw::c_char> = names.iter().map(|n| n.as_ptr()).collect();
    // SAFETY: `names` and `ptrs` outlive the call (librdkafka copies the names); the closures
    // only start the request and copy results out of the event.
    unsafe {
        admin_request(
            client,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
            timeout,
            |rk, options, queue| {
                rd::rd_kafka_DescribeConsumerGroups(
                    rk,
                    ptrs.as_mut_ptr(),
                    ptrs.len(),
                    options,
                    queue,
                )
            },
            |event| {
                let res = rd::rd_kafka_event_DescribeConsumerGroups_result(event);
                if res.is_null() {
                    return Err("unexpected result".into());
                }
                let mut n = 0usize;
                let descs = rd::rd_kafka_DescribeConsumerGroups_result_groups(res, &mut n);
                Ok((0..n).map(|i| read_description(*descs.add(i))).collect())
            },
        )
    }
}

/// # Safety
/// `d` must be a live description owned by a result event.
unsafe fn read_description(d: *const rd::rd_kafka_ConsumerGroupDescription_t) -> GroupDescription {
    // SAFETY: accessors on a live description; strings are copied out.
    unsafe {
        let err = rd::rd_kafka_ConsumerGroupDescription_error(d);
        let error = (!err.is_null()).then(|| {
            (
                RDKafkaErrorCode::from(rd::rd_kafka_error_code(err)),
                cstr_or(rd::rd_kafka_error_string(err), ""),
            )
        });
        let members = (0..rd::rd_kafka_ConsumerGroupDescription_member_count(d))
            .map(|i| {
                let m = rd::rd_kafka_ConsumerGroupDescription_member(d, i);
                let mut assignment = Vec::new();
                let a = rd::rd_kafka_MemberDescription_assignment(m);
                let tpl = if a.is_null() {
                    std::ptr::null()
                } else {
                    rd::rd_kafka_MemberAssignment_partitions(a)
                };
                if !tpl.is_null() {
                    for j in 0..(*tpl).cnt.max(0) as usize {
                        let tp = &*(*tpl).elems.add(j);
                        assignment.push((cstr_or(tp.topic, ""), tp.partition));
                    }
                }
                let instance = rd::rd_kafka_MemberDescription_group_instance_id(m);
                MemberInfo {
                    member_id: cstr_or(rd::rd_kafka_MemberDescription_consumer_id(m), ""),
                    instance_id: (!instance.is_null()).then(|| cstr_or(instance, "")),
                    client_id: cstr_or(rd::rd_kafka_MemberDescription_client_id(m), ""),
                    host: cstr_or(rd::rd_kafka_MemberDescription_host(m), ""),
                    assignment,
                }
            })
            .collect();
        GroupDescription {
            group: cstr_or(rd::rd_kafka_ConsumerGroupDescription_group_id(d), ""),
            state: state_name(rd::rd_kafka_ConsumerGroupDescription_state(d)),
            group_type: type_name(rd::rd_kafka_ConsumerGroupDescription_type(d)),
            assignor: cstr_or(
                rd::rd_kafka_ConsumerGroupDescription_partition_assignor(d),
                "",
            ),
            members,
            error,
        }
    }
}
