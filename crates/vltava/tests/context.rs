//! Every request carries its context (listener, principal, client) to one authorizer, and each
//! named listener tells clients its own advertised address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::common::*;
use bytes::Bytes;
use vltava_broker::context::{AclOperation, Authorizer, RequestContext, Resource};
use vltava_broker::BrokerConfig;
use vltava_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use vltava_protocol::messages::metadata_request::MetadataRequestTopic;
use vltava_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, ErrorCode, StrBytes};
use vltava_record::build_batch;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Denies everything on topic `secret` and cluster-wide creation (which would cover it, as in
/// Kafka), allows the rest, and remembers who asked.
#[derive(Default)]
struct DenySecret {
    seen: Mutex<Vec<(String, String, String, AclOperation)>>,
}

impl Authorizer for DenySecret {
    fn authorize(&self, ctx: &RequestContext, op: AclOperation, resource: Resource<'_>) -> bool {
        self.seen.lock().unwrap().push((
            ctx.principal().to_string(),
            ctx.listener_name().to_string(),
            ctx.client_id().to_string(),
            op,
        ));
        match resource {
            Resource::Topic("secret") => false,
            Resource::Cluster => op != AclOperation::Create,
            _ => true,
        }
    }
}

fn start(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    props: &[(&str, &str)],
    authorizer: Arc<dyn Authorizer>,
) -> vltava_broker::BrokerHandle {
    let mut all: BTreeMap<String, String> = [("log.dirs", dir.to_str().unwrap())]
        .iter()
        .chain(props)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.entry("listeners".into())
        .or_insert_with(|| "PLAINTEXT://127.0.0.1:0".into());
    let config = BrokerConfig::from_props(all).unwrap();
    let options = vltava_broker::StartOptions {
        authorizer,
        ..Default::default()
    };
    rt.block_on(vltava_broker::start_with(config, options))
        .unwrap()
}

fn metadata(c: &mut RawClient, topics: Option<&[&str]>) -> MetadataResponse {
    let req = MetadataRequest::default()
        .with_topics(topics.map(|t| {
            t.iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(s(n)))))
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    c.call(ApiKey::Metadata, 12, &req)
}

fn create(c: &mut RawClient, name: &str) -> i16 {
    c.create_topic(name, 1).topics[0].error_code
}

#[test]
fn the_authorizer_sees_every_request_and_its_refusals_get_kafkas_codes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let authorizer = Arc::new(DenySecret::default());
    let broker = start(&rt, dir.path(), &[], authorizer.clone());
    let mut c = RawClient::connect(broker.local_addr);

    assert_eq!(create(&mut c, "open"), 0);
    assert_eq!(
        create(&mut c, "secret"),
        ErrorCode::TopicAuthorizationFailed.code()
    );

    let listed = metadata(&mut c, None);
    let names: Vec<_> = listed
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert!(names.contains(&"open".to_string()), "{names:?}");
    assert!(!names.contains(&"secret".to_string()), "{names:?}");
    let named = metadata(&mut c, Some(&["secret"]));
    assert_eq!(
        named.topics[0].error_code,
        ErrorCode::TopicAuthorizationFailed.code()
    );

    let batch = build_batch(0, &[(None, Some(b"v".as_slice()), 1)]);
    for (topic, expect) in [
        ("open", 0),
        ("secret", ErrorCode::TopicAuthorizationFailed.code()),
    ] {
        let pd = PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(Bytes::from(batch.clone())));
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s(topic)))
                .with_partition_data(vec![pd])]);
        let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code, expect,
            "produce to {topic}"
        );

        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
        assert_eq!(
            resp.responses[0].partitions[0].error_code, expect,
            "fetch from {topic}"
        );
    }

    let seen = authorizer.seen.lock().unwrap();
    assert!(seen.iter().any(|(_, _, _, op)| *op == AclOperation::Write));
    assert!(seen.iter().any(|(_, _, _, op)| *op == AclOperation::Read));
    for (principal, listener, client, _) in seen.iter() {
        assert_eq!(principal, "User:ANONYMOUS");
        assert_eq!(listener, "PLAINTEXT");
        assert_eq!(client, "raw-test");
    }
    drop(seen);
    rt.block_on(broker.shutdown());
}

#[test]
fn each_listener_advertises_its_own_address() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        &rt,
        dir.path(),
        &[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
            ),
            ("advertised.listeners", "INTERNAL://internal.example:19092"),
        ],
        Arc::new(vltava_broker::context::AllowAll),
    );
    let addrs: Vec<SocketAddr> = broker
        .broker
        .listeners
        .iter()
        .map(|l| l.local_addr)
        .collect();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0], broker.local_addr);

    let mut external = RawClient::connect(addrs[0]);
    let m = metadata(&mut external, Some(&[]));
    assert_eq!(m.brokers[0].host.to_string(), "127.0.0.1");
    assert_eq!(m.brokers[0].port, i32::from(addrs[0].port()));

    let mut internal = RawClient::connect(addrs[1]);
    let m = metadata(&mut internal, Some(&[]));
    assert_eq!(m.brokers[0].host.to_string(), "internal.example");
    assert_eq!(m.brokers[0].port, 19092);
    let f: FindCoordinatorResponse = internal.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(s("g")),
    );
    assert_eq!(f.host.to_string(), "internal.example");
    rt.block_on(broker.shutdown());
}
