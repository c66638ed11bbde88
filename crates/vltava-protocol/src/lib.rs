//! Kafka wire protocol for Vltava: frames, the requests the broker implements, responses, and
//! error codes.
//!
//! Message structs come from `proto-kafka`, generated from Kafka's JSON schemas; this crate is
//! the only one that names it, so the codec can be swapped by editing one file. No I/O here:
//! the broker hands in frame bytes and gets typed requests back.

use bytes::{Buf, BufMut, Bytes, BytesMut};
pub use proto_kafka::protocol::{Decodable, Encodable};
use thiserror::Error;

pub use proto_kafka::messages;
pub use proto_kafka::messages::ApiKey;
pub use proto_kafka::protocol::SegmentedBuf;
pub use proto_kafka::protocol::StrBytes;
pub use proto_kafka::ResponseError as ErrorCode;

pub mod produce_head;
pub mod stand_in;

/// Bytes of the length prefix in front of every frame.
pub const FRAME_PREFIX: usize = 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: i64, max: usize },
    #[error("negative frame size {size}")]
    Negative { size: i32 },
}

/// Reads a length prefix and checks it against the cap before anything is allocated.
pub fn frame_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 {
        return Err(FrameError::Negative { size });
    }
    if size as usize > max {
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max,
        });
    }
    Ok(size as usize)
}

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("request too short for a header ({len} bytes)")]
    TooShort { len: usize },
    #[error("unsupported api key {api_key}")]
    UnsupportedApi { api_key: i16, correlation_id: i32 },
    #[error("unsupported version {api_version} of {api_key:?}")]
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{api_version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        reason: String,
    },
}

#[derive(Debug, Error)]
#[error("cannot encode {api_key:?} v{api_version} response: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub reason: String,
}

macro_rules! apis {
    ($( $variant:ident ( $req:ident, $resp:ident ) $( min $min:literal )? $( max $max:literal )? $( [ $unthrottled:ident ] )? ;)*) => {
        /// A decoded request of an API this broker implements.
        #[derive(Debug, Clone)]
        pub enum Request {
            $( $variant(messages::$req), )*
        }

        /// A response to encode.
        #[derive(Debug, Clone)]
        pub enum Response {
            $( $variant(messages::$resp), )*
        }

        $( impl From<messages::$resp> for Response {
            fn from(r: messages::$resp) -> Self { Response::$variant(r) }
        } )*

        /// The APIs this broker implements with their version ranges: exactly what ApiVersions
        /// advertises.
        pub fn supported_apis() -> Vec<(ApiKey, i16, i16)> {
            vec![ $( {
                let r = ApiKey::$variant.valid_versions();
                #[allow(unused_mut)]
                let (mut min, mut max) = (r.min, r.max);
                $( min = min.max($min); )?
                $( max = max.min($max); )?
                (ApiKey::$variant, min, max)
            }, )* ]
        }

        fn decode_body(key: ApiKey, version: i16, buf: &mut Bytes) -> Option<Result<Request, String>> {
            Some(match key {
                $( ApiKey::$variant => messages::$req::decode(buf, version)
                    .map(Request::$variant)
                    .map_err(|e| e.to_string()), )*
                _ => return None,
            })
        }

        impl Response {
            pub fn api_key(&self) -> ApiKey {
                match self { $( Response::$variant(_) => ApiKey::$variant, )* }
            }

            fn encode_body<B: proto_kafka::protocol::buf::ByteBufMut>(&self, buf: &mut B, version: i16) -> Result<(), String> {
                match self { $( Response::$variant(r) => r.encode(buf, version).map_err(|e| e.to_string()), )* }
            }

            fn body_size(&self, version: i16) -> Result<usize, String> {
                match self { $( Response::$variant(r) => r.compute_size(version).map_err(|e| e.to_string()), )* }
            }

            /// The size of the encoded body at `version`, without encoding it.
            pub fn encoded_size(&self, version: i16) -> Option<usize> {
                self.body_size(version).ok()
            }

            /// Sets `throttle_time_ms` where the response has one (KIP-219: how long the
            /// client should wait, and the broker keeps its connection muted).
            pub fn set_throttle_time_ms(&mut self, ms: i32) {
                match self { $( Response::$variant(r) => throttle_field!(set r, ms $(, $unthrottled)?), )* }
            }

            /// The response's `throttle_time_ms` (0 where it has none).
            pub fn throttle_time_ms(&self) -> i32 {
                match self { $( Response::$variant(r) => throttle_field!(get r $(, $unthrottled)?), )* }
            }
        }
    };
}

/// Writes a response's `throttle_time_ms`, or nothing for the few responses without one.
macro_rules! throttle_field {
    (set $r:ident, $ms:ident) => {
        $r.throttle_time_ms = $ms
    };
    (set $r:ident, $ms:ident, unthrottled) => {{
        let _ = ($r, $ms);
    }};
    (get $r:ident) => {
        $r.throttle_time_ms
    };
    (get $r:ident, unthrottled) => {{
        let _ = $r;
        0
    }};
}

apis! {
    Produce(ProduceRequest, ProduceResponse);
    Fetch(FetchRequest, FetchResponse);
    ListOffsets(ListOffsetsRequest, ListOffsetsResponse);
    Metadata(MetadataRequest, MetadataResponse);
    ApiVersions(ApiVersionsRequest, ApiVersionsResponse);
    CreateTopics(CreateTopicsRequest, CreateTopicsResponse);
    DeleteTopics(DeleteTopicsRequest, DeleteTopicsResponse);
    DeleteRecords(DeleteRecordsRequest, DeleteRecordsResponse);
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse);
    DescribeConfigs(DescribeConfigsRequest, DescribeConfigsResponse);
    AlterConfigs(AlterConfigsRequest, AlterConfigsResponse);
    DescribeLogDirs(DescribeLogDirsRequest, DescribeLogDirsResponse);
    CreatePartitions(CreatePartitionsRequest, CreatePartitionsResponse);
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse);
    DescribeCluster(DescribeClusterRequest, DescribeClusterResponse);
    DescribeQuorum(DescribeQuorumRequest, DescribeQuorumResponse) [unthrottled];
    AddRaftVoter(AddRaftVoterRequest, AddRaftVoterResponse);
    RemoveRaftVoter(RemoveRaftVoterRequest, RemoveRaftVoterResponse);
    ElectLeaders(ElectLeadersRequest, ElectLeadersResponse);
    AlterPartitionReassignments(AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse);
    ListPartitionReassignments(ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse);
    DescribeTopicPartitions(DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse);
    FindCoordinator(FindCoordinatorRequest, FindCoordinatorResponse);
    JoinGroup(JoinGroupRequest, JoinGroupResponse);
    SyncGroup(SyncGroupRequest, SyncGroupResponse);
    Heartbeat(HeartbeatRequest, HeartbeatResponse);
    LeaveGroup(LeaveGroupRequest, LeaveGroupResponse);
    // v10 names topics by id; the codec cannot decode those requests yet.
    OffsetCommit(OffsetCommitRequest, OffsetCommitResponse) max 9;
    OffsetFetch(OffsetFetchRequest, OffsetFetchResponse) max 9;
    ListGroups(ListGroupsRequest, ListGroupsResponse);
    DescribeGroups(DescribeGroupsRequest, DescribeGroupsResponse);
    DeleteGroups(DeleteGroupsRequest, DeleteGroupsResponse);
    OffsetDelete(OffsetDeleteRequest, OffsetDeleteResponse);
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse);
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse);
    // The codec's request stops at v5 (v6 is KIP-939's two-phase commit).
    InitProducerId(InitProducerIdRequest, InitProducerIdResponse) max 5;
    AddPartitionsToTxn(AddPartitionsToTxnRequest, AddPartitionsToTxnResponse);
    AddOffsetsToTxn(AddOffsetsToTxnRequest, AddOffsetsToTxnResponse);
    EndTxn(EndTxnRequest, EndTxnResponse);
    TxnOffsetCommit(TxnOffsetCommitRequest, TxnOffsetCommitResponse);
    DescribeTransactions(DescribeTransactionsRequest, DescribeTransactionsResponse);
    // v2 filters by a transactional id pattern (KIP-1152), not supported.
    ListTransactions(ListTransactionsRequest, ListTransactionsResponse) max 1;
    WriteTxnMarkers(WriteTxnMarkersRequest, WriteTxnMarkersResponse) [unthrottled];
    DescribeProducers(DescribeProducersRequest, DescribeProducersResponse);
    // v0 switches the connection to bare SASL tokens (no Kafka framing); only KIP-152's v1,
    // whose tokens travel in SaslAuthenticate, is served.
    SaslHandshake(SaslHandshakeRequest, SaslHandshakeResponse) min 1 [unthrottled];
    SaslAuthenticate(SaslAuthenticateRequest, SaslAuthenticateResponse) [unthrottled];
    CreateAcls(CreateAclsRequest, CreateAclsResponse);
    DescribeAcls(DescribeAclsRequest, DescribeAclsResponse);
    DeleteAcls(DeleteAclsRequest, DeleteAclsResponse);
    DescribeUserScramCredentials(DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse);
    AlterUserScramCredentials(AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse);
    DescribeClientQuotas(DescribeClientQuotasRequest, DescribeClientQuotasResponse);
    AlterClientQuotas(AlterClientQuotasRequest, AlterClientQuotasResponse);
}

/// The header fields the broker needs, whatever the header version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// What a frame decodes to.
// Not boxed: nearly every frame is a `Request`, and boxing would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Decoded {
    Request(Header, Request),
    /// ApiVersions at a version newer than ours: Kafka answers with a v0 body carrying
    /// UNSUPPORTED_VERSION and our ranges, so the client can retry at a version we know.
    ApiVersionsTooNew(Header),
}

/// Decodes a frame body (without its length prefix).
pub fn decode_request(mut buf: Bytes) -> Result<Decoded, DecodeError> {
    if buf.len() < 8 {
        return Err(DecodeError::TooShort { len: buf.len() });
    }
    let raw_key = i16::from_be_bytes([buf[0], buf[1]]);
    let api_version = i16::from_be_bytes([buf[2], buf[3]]);
    let correlation_id = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let Some((api_key, min, max)) = ApiKey::try_from(raw_key)
        .ok()
        .and_then(|k| supported_apis().into_iter().find(|(s, _, _)| *s == k))
    else {
        return Err(DecodeError::UnsupportedApi {
            api_key: raw_key,
            correlation_id,
        });
    };
    if api_version < min || api_version > max {
        if api_key == ApiKey::ApiVersions && api_version > max {
            return Ok(Decoded::ApiVersionsTooNew(Header {
                api_key,
                api_version,
                correlation_id,
                client_id: None,
            }));
        }
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    let header_version = api_key.request_header_version(api_version);
    let header = messages::RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| malformed(e.to_string()))?;
    let body = decode_body(api_key, api_version, &mut buf)
        .expect("supported api decodes")
        .map_err(malformed)?;
    let header = Header {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
    };
    Ok(Decoded::Request(header, body))
}

/// Encodes a response frame, length prefix included.
pub fn encode_response(
    correlation_id: i32,
    api_version: i16,
    response: &Response,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    encode_response_into(correlation_id, api_version, response, &mut buf)?;
    Ok(buf.freeze())
}

/// Encodes a response frame as [`encode_response`] does, but with every `Bytes` field of the
/// message (Fetch's records) kept as a reference to its buffer rather than copied: the
/// frame is written with one vectored write (`tokio::io::AsyncWriteExt::write_all_buf`).
pub fn encode_response_segmented(
    correlation_id: i32,
    api_version: i16,
    response: &Response,
) -> Result<SegmentedBuf, EncodeError> {
    let mut buf = SegmentedBuf::new();
    encode_response_into(correlation_id, api_version, response, &mut buf)?;
    Ok(buf)
}

fn encode_response_into<B: proto_kafka::protocol::buf::ByteBufMut>(
    correlation_id: i32,
    api_version: i16,
    response: &Response,
    buf: &mut B,
) -> Result<(), EncodeError> {
    let api_key = response.api_key();
    let err = |reason: String| EncodeError {
        api_key,
        api_version,
        reason,
    };
    // ApiVersions responses always use header v0 so that a client can parse them before it
    // knows which versions we speak.
    let header_version = api_key.response_header_version(api_version);
    let header = messages::ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .map_err(|e| err(e.to_string()))?
        + response.body_size(api_version).map_err(err)?;
    let start = buf.offset();
    buf.put_i32(size as i32);
    header
        .encode(buf, header_version)
        .map_err(|e| err(e.to_string()))?;
    response.encode_body(buf, api_version).map_err(err)?;
    debug_assert_eq!(buf.offset() - start, FRAME_PREFIX + size);
    Ok(())
}

/// Encodes a request frame; used by tests and tools that speak to a broker without a client
/// library.
pub fn encode_request<R: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
    body: &R,
) -> Result<Bytes, String> {
    let header = messages::RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.map(|c| StrBytes::from_string(c.to_string())));
    let hv = api_key.request_header_version(api_version);
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, hv).map_err(|e| e.to_string())?;
    body.encode(&mut buf, api_version)
        .map_err(|e| e.to_string())?;
    let len = (buf.len() - FRAME_PREFIX) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a response frame body (after the length prefix) of a known API and version.
pub fn decode_response<R: Decodable>(
    api_key: ApiKey,
    api_version: i16,
    mut buf: Bytes,
) -> Result<(i32, R), String> {
    let hv = api_key.response_header_version(api_version);
    let header = messages::ResponseHeader::decode(&mut buf, hv).map_err(|e| e.to_string())?;
    let body = R::decode(&mut buf, api_version).map_err(|e| e.to_string())?;
    if buf.has_remaining() {
        return Err(format!("{} trailing bytes", buf.remaining()));
    }
    Ok((header.correlation_id, body))
}

pub mod ext;
#[cfg(test)]
mod tests;
