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

#[test]
fn request_round_trip_every_supported_version() {
    for (key, min, max) in supported_apis() {
        assert!(min <= max, "{key:?}");
        if key != ApiKey::Metadata {
            continue;
        }
        for v in min..=max {
            let req = messages::MetadataRequest::default();
            let frame = encode_request(key, v, 7, Some("c"), &req).unwrap();
            match decode_request(body(&frame)).unwrap() {
                Decoded::Request(h, Request::Metadata(_)) => {
                    assert_eq!((h.api_version, h.correlation_id), (v, 7));
                    assert_eq!(h.client_id.as_deref(), Some("c"));
                }
                other => panic!("{other:?}"),
            }
        }
    }
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
