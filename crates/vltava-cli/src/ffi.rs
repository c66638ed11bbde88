//! Calls into librdkafka's C API for what rust-rdkafka does not wrap: IncrementalAlterConfigs
//! (its `alter_configs` is the legacy API, which resets every config not named) and the
//! controller id. Each function owns every native object it creates and frees it on all
//! paths.

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
    let rk = client.native_ptr();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;

    // SAFETY: every pointer below is created here, checked for null where librdkafka may
    // return null, and destroyed exactly once before returning; `rk` outlives the call.
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
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS,
        );
        let mut errstr = [0 as std::os::raw::c_char; 512];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_IncrementalAlterConfigs(rk, &mut config, 1, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(5_000));
        let result = if event.is_null() {
            Err(AlterError::Timeout)
        } else if rd::rd_kafka_event_error(event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            Err(AlterError::Request(cstr_or(
                rd::rd_kafka_event_error_string(event),
                "request failed",
            )))
        } else {
            let res = rd::rd_kafka_event_IncrementalAlterConfigs_result(event);
            let mut n = 0usize;
            let resources = if res.is_null() {
                std::ptr::null()
            } else {
                rd::rd_kafka_IncrementalAlterConfigs_result_resources(res, &mut n)
            };
            let mut outcome = Ok(());
            for i in 0..n {
                let r = *resources.add(i);
                let code = rd::rd_kafka_ConfigResource_error(r);
                if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    let code = RDKafkaErrorCode::from(code);
                    let message = cstr_or(rd::rd_kafka_ConfigResource_error_string(r), "");
                    outcome = Err(AlterError::Refused { code, message });
                    break;
                }
            }
            outcome
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_ConfigResource_destroy(config);
        result
    }
}

/// The id of the cluster's controller as librdkafka learned it from Metadata, if known.
pub fn controller_id<C: ClientContext>(client: &Client<C>, timeout: Duration) -> Option<i32> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: a plain query on a live client handle.
    let id = unsafe { rd::rd_kafka_controllerid(client.native_ptr(), ms) };
    (id >= 0).then_some(id)
}
