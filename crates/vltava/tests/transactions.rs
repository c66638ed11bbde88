//! The transaction coordinator over the wire: a transaction with produce partitions and a
//! consumer group's offsets, committed through Kafka's requests as a client sends them, its
//! markers written, and everything still there after a restart.
//!
//! Producer ids come from the broker's own allocator (blocks in the metadata log).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::common::{runtime, RawClient};
use vltava_broker::{BrokerConfig, BrokerHandle};
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, StrBytes};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn start(rt: &tokio::runtime::Runtime, dir: &Path) -> BrokerHandle {
    let props: BTreeMap<String, String> = [
        ("listeners", "PLAINTEXT://127.0.0.1:0"),
        ("log.dirs", dir.to_str().unwrap()),
        ("offsets.topic.num.partitions", "2"),
        ("transaction.state.log.num.partitions", "3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    rt.block_on(vltava_broker::start(
        BrokerConfig::from_props(props).unwrap(),
    ))
    .unwrap()
}

fn describe(c: &mut RawClient, id: &str) -> describe_transactions_response::TransactionState {
    let r: DescribeTransactionsResponse = c.call(
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s(id))]),
    );
    r.transaction_states.into_iter().next().unwrap()
}

fn committed_offset(c: &mut RawClient, group: &str) -> i64 {
    let r: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        5,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0]),
            ])),
    );
    r.topics[0].partitions[0].committed_offset
}

fn add_partitions(
    c: &mut RawClient,
    version: i16,
    pid: i64,
    epoch: i16,
    topics: &[(&str, Vec<i32>)],
) -> Vec<(String, i32, i16)> {
    let r: AddPartitionsToTxnResponse = c.call(
        ApiKey::AddPartitionsToTxn,
        version,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(
                topics
                    .iter()
                    .map(|(t, ps)| {
                        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(s(t)))
                            .with_partitions(ps.clone())
                    })
                    .collect(),
            ),
    );
    let mut out: Vec<(String, i32, i16)> = r
        .results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.partition_error_code,
                )
            })
        })
        .collect();
    out.sort();
    out
}

fn end_txn(c: &mut RawClient, version: i16, pid: i64, epoch: i16, commit: bool) -> EndTxnResponse {
    c.call(
        ApiKey::EndTxn,
        version,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    )
}

fn log_end(broker: &BrokerHandle, topic: &str, partition: i32) -> i64 {
    let p = broker.broker.partitions.get(topic, partition).unwrap();
    p.offsets().log_end_offset.get()
}

/// A broker with topic `t` (2 partitions), and a client connected to it.
fn start_with_topic(rt: &tokio::runtime::Runtime, dir: &Path) -> (BrokerHandle, RawClient) {
    let broker = start(rt, dir);
    let mut c = RawClient::connect(broker.local_addr);
    assert_eq!(c.create_topic("t", 2).topics[0].error_code, 0);
    (broker, c)
}

/// InitProducerId for transactional id `tx`, as a new producer sends it.
fn init_tx(c: &mut RawClient) -> InitProducerIdResponse {
    c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s("tx"))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
}

#[test]
fn a_transaction_commits_its_partitions_and_offsets_and_survives_a_restart() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut c) = start_with_topic(&rt, dir.path());

    // FindCoordinator for a transactional id: this broker, single and batched.
    let f: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default()
            .with_key(s("tx"))
            .with_key_type(1),
    );
    assert_eq!(
        (f.error_code, f.port),
        (0, i32::from(broker.local_addr.port()))
    );
    let f: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![s("tx"), s("other")]),
    );
    assert!(f
        .coordinators
        .iter()
        .all(|k| k.error_code == 0 && k.port > 0));

    // InitProducerId: a new transactional id gets a fresh producer id at epoch 0.
    let r = init_tx(&mut c);
    assert_eq!((r.error_code, r.producer_epoch), (0, 0));
    let first_pid = r.producer_id.0;
    assert!(first_pid >= 0);
    // A timeout above transaction.max.timeout.ms is refused.
    let r: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s("tx"))))
            .with_transaction_timeout_ms(900_001)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(r.error_code, 50, "INVALID_TRANSACTION_TIMEOUT");
    let (pid, epoch) = (first_pid, 0);

    // A missing topic fails the whole request: the others are not attempted.
    assert_eq!(
        add_partitions(&mut c, 3, pid, epoch, &[("t", vec![0]), ("nope", vec![0])]),
        vec![("nope".into(), 0, 3), ("t".into(), 0, 55)]
    );
    assert_eq!(
        add_partitions(&mut c, 3, pid, epoch, &[("t", vec![0, 1])]),
        vec![("t".into(), 0, 0), ("t".into(), 1, 0)]
    );
    // The wrong producer id.
    assert_eq!(
        add_partitions(&mut c, 3, pid + 1, epoch, &[("t", vec![0])]),
        vec![("t".into(), 0, 49)]
    );

    let r: AddOffsetsToTxnResponse = c.call(
        ApiKey::AddOffsetsToTxn,
        3,
        &AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(s("g"))),
    );
    assert_eq!(r.error_code, 0);
    let r: TxnOffsetCommitResponse = c.call(
        ApiKey::TxnOffsetCommit,
        3,
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_group_id(GroupId(s("g")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(5)
                            .with_committed_leader_epoch(-1),
                    ]),
            ]),
    );
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(committed_offset(&mut c, "g"), -1, "not before the commit");
    // KIP-447: a consumer asking for stable offsets is told to wait.
    let r: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_require_stable(true)
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0]),
            ])),
    );
    assert_eq!(
        r.topics[0].partitions[0].error_code, 88,
        "UNSTABLE_OFFSET_COMMIT"
    );

    let d = describe(&mut c, "tx");
    assert_eq!((d.error_code, d.transaction_state.as_str()), (0, "Ongoing"));
    let mut topics: Vec<(String, Vec<i32>)> = d
        .topics
        .iter()
        .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
        .collect();
    topics.sort();
    assert_eq!(topics[1], ("t".to_string(), vec![0, 1]));
    assert_eq!(topics[0].0, "__consumer_offsets");
    let l: ListTransactionsResponse = c.call(
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default()
            .with_state_filters(vec![s("Ongoing"), s("Bogus")])
            .with_duration_filter(-1),
    );
    assert_eq!(l.error_code, 0);
    assert_eq!(l.unknown_state_filters, vec![s("Bogus")]);
    assert_eq!(l.transaction_states.len(), 1);
    assert_eq!(l.transaction_states[0].producer_id.0, pid);

    // EndTxn with a stale epoch: PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH before v2.
    assert_eq!(end_txn(&mut c, 3, pid, 7, true).error_code, 90);
    assert_eq!(end_txn(&mut c, 1, pid, 7, true).error_code, 47);
    let before = (log_end(&broker, "t", 0), log_end(&broker, "t", 1));
    let r = end_txn(&mut c, 3, pid, epoch, true);
    assert_eq!(r.error_code, 0);
    for _ in 0..500 {
        if describe(&mut c, "tx").transaction_state.as_str() == "CompleteCommit" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        describe(&mut c, "tx").transaction_state.as_str(),
        "CompleteCommit"
    );
    // One marker in each partition of the transaction, and the offsets are committed.
    assert_eq!(
        (log_end(&broker, "t", 0), log_end(&broker, "t", 1)),
        (before.0 + 1, before.1 + 1)
    );
    assert_eq!(committed_offset(&mut c, "g"), 5);
    // A retried commit is answered as a success; an abort now is INVALID_TXN_STATE.
    assert_eq!(end_txn(&mut c, 3, pid, epoch, true).error_code, 0);
    assert_eq!(end_txn(&mut c, 3, pid, epoch, false).error_code, 48);

    // InitProducerId without a transactional id: a fresh id at epoch 0.
    let r: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(-1)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!((r.error_code, r.producer_epoch), (0, 0));
    assert!(r.producer_id.0 >= 0 && r.producer_id.0 != first_pid);

    drop(c);
    rt.block_on(broker.shutdown());
    let broker = start(&rt, dir.path());
    let mut c = RawClient::connect(broker.local_addr);
    let d = describe(&mut c, "tx");
    assert_eq!(
        (
            d.transaction_state.as_str(),
            d.producer_id.0,
            d.producer_epoch
        ),
        ("CompleteCommit", pid, epoch)
    );
    assert_eq!(committed_offset(&mut c, "g"), 5);
    // The same producer initialises again: the epoch is bumped.
    let r = init_tx(&mut c);
    assert_eq!(
        (r.error_code, r.producer_id.0, r.producer_epoch),
        (0, pid, 1)
    );
    let d = describe(&mut c, "unknown");
    assert_eq!(d.error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");
    rt.block_on(broker.shutdown());
}

/// KIP-890 part 1: a transactional batch for a partition that is not in the producer's
/// ongoing transaction is refused (INVALID_TXN_STATE for Produce before v11,
/// TRANSACTION_ABORTABLE from v11), nothing is written, and the last stable offset does not
/// move; once the partition is added the same batch is written.
#[test]
fn a_transactional_batch_for_a_partition_not_in_the_transaction_is_refused() {
    use produce_request::{PartitionProduceData, TopicProduceData};

    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut c) = start_with_topic(&rt, dir.path());
    let r = init_tx(&mut c);
    assert_eq!(r.error_code, 0);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);

    let batch = |seq: i32| {
        let mut b = vltava_record::BatchBuilder::new(vltava_record::BatchAttributes {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            transactional: true,
            ..Default::default()
        });
        b.push(1_000, Some(b"k"), Some(b"v"), &[]);
        bytes::Bytes::from(b.finish())
    };
    let produce = |c: &mut RawClient, version: i16, tid: Option<&str>, partition: i32| -> i16 {
        let req = ProduceRequest::default()
            .with_transactional_id(tid.map(|t| TransactionalId(s(t))))
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s("t")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch(0)))])]);
        let resp: ProduceResponse = c.call(ApiKey::Produce, version, &req);
        resp.responses[0].partition_responses[0].error_code
    };

    // Partition 1 only is in the transaction.
    assert_eq!(
        add_partitions(&mut c, 3, pid, epoch, &[("t", vec![1])]),
        vec![("t".to_string(), 1, 0)]
    );
    assert_eq!(produce(&mut c, 9, Some("tx"), 0), 48, "INVALID_TXN_STATE");
    assert_eq!(
        produce(&mut c, 11, Some("tx"), 0),
        120,
        "TRANSACTION_ABORTABLE"
    );
    // Without the request's transactional id a transactional batch is not accepted either.
    assert_eq!(produce(&mut c, 9, None, 0), 87, "INVALID_RECORD");
    assert_eq!(log_end(&broker, "t", 0), 0, "nothing refused is written");
    // Another transactional id's producer: the coordinator does not know this pairing.
    assert_ne!(produce(&mut c, 9, Some("other"), 0), 0);
    assert_eq!(log_end(&broker, "t", 0), 0);

    assert_eq!(produce(&mut c, 9, Some("tx"), 1), 0);
    assert_eq!(
        add_partitions(&mut c, 3, pid, epoch, &[("t", vec![0])]),
        vec![("t".to_string(), 0, 0)]
    );
    assert_eq!(produce(&mut c, 9, Some("tx"), 0), 0);
    assert_eq!(log_end(&broker, "t", 0), 1);
    rt.block_on(broker.shutdown());
}
