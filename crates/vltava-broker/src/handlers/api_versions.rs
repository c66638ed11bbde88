//! ApiVersions: advertises exactly the APIs and versions that `vltava-protocol` implements.

use vltava_protocol::messages::api_versions_response::ApiVersion;
use vltava_protocol::messages::ApiVersionsResponse;
use vltava_protocol::{supported_apis, ErrorCode};

fn api_keys() -> Vec<ApiVersion> {
    supported_apis()
        .into_iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

pub fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_api_keys(api_keys())
        .with_finalized_features_epoch(-1)
}

/// The v0 answer to an ApiVersions request newer than we speak.
pub fn unsupported_version() -> ApiVersionsResponse {
    handle().with_error_code(ErrorCode::UnsupportedVersion.code())
}
