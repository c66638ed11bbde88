use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn body(frame: &Bytes) -> Bytes {
    frame.slice(FRAME_PREFIX..)
}

#[test]
fn frame_cap_is_checked_before_allocation() {
    assert_eq!(frame_len(100i32.to_be_bytes(), 100), Ok(100));
    assert!(matches!(
        frame_len(101i32.to_be_bytes(), 100),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(matches!(
        frame_len((-1i32).to_be_bytes(), 100),
        Err(FrameError::Negative { .. })
    ));
}

/// Versions the broker advertises that `proto-kafka`'s request codec cannot encode, with the
/// reason; none today (OffsetCommit and OffsetFetch are advertised up to v9, where the
/// codec's requests stop).
const KNOWN_REQUEST_GAPS: &[(ApiKey, i16)] = &[];

/// Round-trips a default request and a default response of `key` at `version`: the request
/// through `encode_request` and `decode_request`, the response through `encode_response` and
/// `decode_response`. Each must come back equal and as the right variant.
macro_rules! round_trip {
    ($key:expr, $version:expr, $gaps:expr; $( $variant:ident ( $req:ident, $resp:ident ); )*) => {
        match $key {
            $( ApiKey::$variant => {
                let (key, v) = (ApiKey::$variant, $version);
                let req = messages::$req::default();
                let frame = encode_request(key, v, 7, Some("c"), &req);
                if KNOWN_REQUEST_GAPS.contains(&(key, v)) {
                    assert!(frame.is_err(), "{key:?} v{v} requests now encode: drop the known gap");
                    $gaps += 1;
                } else {
                    let frame = frame
                        .unwrap_or_else(|e| panic!("encode {key:?} v{v} request: {e}"));
                    match decode_request(body(&frame)) {
                        Ok(Decoded::Request(h, Request::$variant(back))) => {
                            assert_eq!(
                                (h.api_key, h.api_version, h.correlation_id),
                                (key, v, 7)
                            );
                            assert_eq!(h.client_id.as_deref(), Some("c"), "{key:?} v{v}");
                            assert_eq!(back, req, "{key:?} v{v} request");
                        }
                        other => panic!("{key:?} v{v} request decoded as {other:?}"),
                    }
                }
                let resp = messages::$resp::default();
                let frame = encode_response(9, v, &Response::$variant(resp.clone()))
                    .unwrap_or_else(|e| panic!("encode {key:?} v{v} response: {e}"));
                let (corr, back): (i32, messages::$resp) = decode_response(key, v, body(&frame))
                    .unwrap_or_else(|e| panic!("decode {key:?} v{v} response: {e}"));
                assert_eq!(corr, 9, "{key:?} v{v}");
                assert_eq!(back, resp, "{key:?} v{v} response");
            } )*
            other => panic!("{other:?} is advertised but has no round trip in this test"),
        }
    };
}

#[test]
fn round_trip_every_supported_api_and_version() {
    let (mut checked, mut gaps) = (0, 0);
    for (key, min, max) in supported_apis() {
        assert!(min <= max, "{key:?}");
        for v in min..=max {
            round_trip! { key, v, gaps;
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
                DescribeQuorum(DescribeQuorumRequest, DescribeQuorumResponse);
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
                OffsetCommit(OffsetCommitRequest, OffsetCommitResponse);
                OffsetFetch(OffsetFetchRequest, OffsetFetchResponse);
                ListGroups(ListGroupsRequest, ListGroupsResponse);
                DescribeGroups(DescribeGroupsRequest, DescribeGroupsResponse);
                DeleteGroups(DeleteGroupsRequest, DeleteGroupsResponse);
                OffsetDelete(OffsetDeleteRequest, OffsetDeleteResponse);
                ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse);
                ConsumerGroupDescribe(ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse);
                InitProducerId(InitProducerIdRequest, InitProducerIdResponse);
                AddPartitionsToTxn(AddPartitionsToTxnRequest, AddPartitionsToTxnResponse);
                AddOffsetsToTxn(AddOffsetsToTxnRequest, AddOffsetsToTxnResponse);
                EndTxn(EndTxnRequest, EndTxnResponse);
                TxnOffsetCommit(TxnOffsetCommitRequest, TxnOffsetCommitResponse);
                DescribeTransactions(DescribeTransactionsRequest, DescribeTransactionsResponse);
                ListTransactions(ListTransactionsRequest, ListTransactionsResponse);
                WriteTxnMarkers(WriteTxnMarkersRequest, WriteTxnMarkersResponse);
                DescribeProducers(DescribeProducersRequest, DescribeProducersResponse);
                SaslHandshake(SaslHandshakeRequest, SaslHandshakeResponse);
                SaslAuthenticate(SaslAuthenticateRequest, SaslAuthenticateResponse);
                CreateAcls(CreateAclsRequest, CreateAclsResponse);
                DescribeAcls(DescribeAclsRequest, DescribeAclsResponse);
                DeleteAcls(DeleteAclsRequest, DeleteAclsResponse);
                DescribeUserScramCredentials(DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse);
                AlterUserScramCredentials(AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse);
                DescribeClientQuotas(DescribeClientQuotasRequest, DescribeClientQuotasResponse);
                AlterClientQuotas(AlterClientQuotasRequest, AlterClientQuotasResponse);
            }
            checked += 1;
        }
    }
    // 53 APIs; a change in this count means the advertised set changed (see ApiVersions'
    // pinned table in crates/vltava/tests/bad_input.rs).
    assert_eq!(checked, 230, "API versions round-tripped");
    assert_eq!(
        gaps,
        KNOWN_REQUEST_GAPS.len(),
        "known gaps no longer advertised: drop them"
    );
}

#[test]
fn hostile_metadata_body_is_an_error_not_an_abort() {
    // Known trap: this body claims a topic array of ~0x210a0a0a entries.
    let mut frame = encode_request(
        ApiKey::Metadata,
        4,
        1,
        None,
        &messages::MetadataRequest::default(),
    )
    .unwrap()
    .to_vec();
    frame.truncate(FRAME_PREFIX + 10); // header: key, version, correlation, null client id
    frame.extend_from_slice(&[0x21, 0x0a, 0x0a, 0x0a]);
    assert!(matches!(
        decode_request(Bytes::from(frame).slice(4..)),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn unknown_api_and_version() {
    let mut b = vec![0u8; 12];
    b[0..2].copy_from_slice(&1000i16.to_be_bytes());
    assert!(matches!(
        decode_request(Bytes::from(b.clone())),
        Err(DecodeError::UnsupportedApi { api_key: 1000, .. })
    ));
    b[0..2].copy_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
    b[2..4].copy_from_slice(&0i16.to_be_bytes());
    assert!(matches!(
        decode_request(Bytes::from(b.clone())),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    b[0..2].copy_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    b[2..4].copy_from_slice(&99i16.to_be_bytes());
    assert!(matches!(
        decode_request(Bytes::from(b)),
        Ok(Decoded::ApiVersionsTooNew(_))
    ));
}

#[test]
fn default_tagged_fields_are_omitted() {
    // librdkafka 2.0.2 rejects ApiVersions v3 responses that carry default-valued tagged fields.
    let resp = messages::ApiVersionsResponse::default().with_finalized_features_epoch(-1);
    let frame = encode_response(1, 3, &Response::ApiVersions(resp)).unwrap();
    // size(4) corr(4) error(2) api_keys compact array len 0 -> 1 byte (1), throttle(4), tags(1)
    assert_eq!(frame.len(), 4 + 4 + 2 + 1 + 4 + 1);
    assert_eq!(*frame.last().unwrap(), 0, "no tagged fields");
}

/// The frame written to the socket from a Fetch response is the flat encoding, byte for
/// byte, while the records stay in their own buffer (not copied into the frame).
#[test]
fn segmented_fetch_frames_equal_flat_ones_and_keep_records_shared() {
    use bytes::Buf;
    use messages::fetch_response::{FetchableTopicResponse, PartitionData};
    let records = Bytes::from(vec![7u8; 4096]);
    let partition = PartitionData::default()
        .with_partition_index(3)
        .with_high_watermark(10)
        .with_records(Some(records.clone()));
    let resp =
        messages::FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(messages::TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![partition])]);
    for v in [4i16, 11, 12, 16] {
        let response = Response::Fetch(resp.clone());
        let flat = encode_response(5, v, &response).unwrap();
        let mut seg = encode_response_segmented(5, v, &response).unwrap();
        let mut chunks = [std::io::IoSlice::new(&[]); 8];
        let n = seg.chunks_vectored(&mut chunks);
        assert!(
            chunks[..n]
                .iter()
                .any(|c| c.as_ptr() == records.as_ptr() && c.len() == records.len()),
            "v{v}: the records are a chunk of their own"
        );
        assert_eq!(seg.copy_to_bytes(seg.remaining()), flat, "v{v}");
    }
}

#[test]
fn response_round_trip() {
    let resp =
        messages::MetadataResponse::default().with_cluster_id(Some(StrBytes::from_static_str("x")));
    for v in 0..=12 {
        let frame = encode_response(9, v, &Response::Metadata(resp.clone())).unwrap();
        let (corr, back): (i32, messages::MetadataResponse) =
            decode_response(ApiKey::Metadata, v, body(&frame)).unwrap();
        assert_eq!(corr, 9);
        if v >= 2 {
            assert_eq!(back.cluster_id, resp.cluster_id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_bodies_never_panic(key in 0i16..80, version in 0i16..20, corr in any::<i32>(), tail in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut b = Vec::with_capacity(8 + tail.len());
        b.extend_from_slice(&key.to_be_bytes());
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&corr.to_be_bytes());
        b.extend_from_slice(&tail);
        let _ = decode_request(Bytes::from(b));
    }
}

#[test]
fn throttle_time_is_set_where_the_response_has_one() {
    let mut r = Response::Produce(messages::ProduceResponse::default());
    r.set_throttle_time_ms(250);
    let Response::Produce(p) = &r else {
        unreachable!()
    };
    assert_eq!(p.throttle_time_ms, 250);
    assert_eq!(r.throttle_time_ms(), 250);
    let frame = encode_response(1, 9, &r).unwrap();
    let (_, back): (i32, messages::ProduceResponse) =
        decode_response(ApiKey::Produce, 9, body(&frame)).unwrap();
    assert_eq!(back.throttle_time_ms, 250);
    // SaslHandshake has no such field: setting it changes nothing.
    let mut h = Response::SaslHandshake(messages::SaslHandshakeResponse::default());
    h.set_throttle_time_ms(250);
    assert_eq!(h.throttle_time_ms(), 0);
    assert!(
        matches!(h, Response::SaslHandshake(ref x) if *x == messages::SaslHandshakeResponse::default())
    );
}
