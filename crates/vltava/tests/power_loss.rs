//! Power loss, not just `kill -9`: partition logs live on a simulated disk that drops every
//! byte not yet fsynced when the power goes. Every acks=all acknowledgement survives; acks=1
//! acknowledgements may not (they are answered before any fsync).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use vltava_broker::{BrokerConfig, StartOptions};
use vltava_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, StrBytes};
use vltava_storage::sim::SimFs;
use vltava_storage::Fs;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A broker on `fs` in its own runtime, so that dropping the runtime stops it without any
/// of its clean-shutdown work (no final flush): the process as it is when the power goes.
struct SimBroker {
    rt: tokio::runtime::Runtime,
    handle: Option<vltava_broker::BrokerHandle>,
}

impl SimBroker {
    fn start(dir: &std::path::Path, fs: &Arc<SimFs>) -> Self {
        let rt = runtime();
        let props: BTreeMap<String, String> = [
            ("listeners", "PLAINTEXT://127.0.0.1:0"),
            ("log.dirs", dir.to_str().unwrap()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let options = StartOptions {
            fs: Arc::clone(fs) as _,
            ..Default::default()
        };
        let handle = rt
            .block_on(vltava_broker::start_with(
                BrokerConfig::from_props(props).unwrap(),
                options,
            ))
            .unwrap();
        Self {
            rt,
            handle: Some(handle),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.handle.as_ref().unwrap().local_addr
    }

    /// Drops the process state; the simulated disk keeps only what was fsynced.
    fn power_loss(mut self, fs: &SimFs) {
        fs.crash();
        drop(self.handle.take());
        self.rt.shutdown_timeout(Duration::from_secs(5));
    }
}

/// Produces one record per request; returns the offset each was acknowledged at.
fn produce(c: &mut RawClient, topic: &str, acks: i16, values: &[String]) -> Vec<i64> {
    values
        .iter()
        .map(|v| {
            let (code, offset) = c.produce_values(topic, acks, &[v.as_bytes()]);
            assert_eq!(code, 0, "produce to {topic}");
            offset
        })
        .collect()
}

/// Every value in `topic`, by offset.
fn read_all(c: &mut RawClient, topic: &str) -> BTreeMap<i64, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch {topic} at {offset}");
        let records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            return out;
        }
        for (h, range) in vltava_record::Batches::new(&records).map(Result::unwrap) {
            for r in vltava_record::uncompressed_records(&records[range]).unwrap() {
                out.insert(h.base_offset + r.offset_delta, r.value.unwrap().to_vec());
            }
            offset = h.next_offset();
        }
    }
}

#[test]
fn acks_all_survives_power_loss_and_acks_one_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(SimFs::new());
    // The data directory exists before the broker runs, as on a real machine.
    fs.create_dir_all(dir.path()).unwrap();
    for d in dir.path().ancestors() {
        fs.sync_dir(d).unwrap();
    }
    let broker = SimBroker::start(dir.path(), &fs);
    let mut c = RawClient::connect(broker.addr());
    for t in ["durable", "fast"] {
        assert_eq!(c.create_topic(t, 1).topics[0].error_code, 0);
    }
    let values: Vec<String> = (0..200).map(|i| format!("value-{i}")).collect();
    let acked_all = produce(&mut c, "durable", -1, &values);
    let acked_one = produce(&mut c, "fast", 1, &values);
    drop(c);
    broker.power_loss(&fs);

    let broker = SimBroker::start(dir.path(), &fs);
    let mut c = RawClient::connect(broker.addr());
    let durable = read_all(&mut c, "durable");
    for (offset, value) in acked_all.iter().zip(&values) {
        assert_eq!(
            durable.get(offset).map(Vec::as_slice),
            Some(value.as_bytes()),
            "acks=all record acknowledged at offset {offset} lost"
        );
    }
    // Nothing fsynced the acks=1 partition, so the power loss took what it held: the
    // simulation is strict, and this test would notice acks=all answered before its fsync.
    let fast = read_all(&mut c, "fast");
    assert!(
        fast.len() < acked_one.len(),
        "every acks=1 record survived ({}): the simulated disk did not drop unsynced bytes",
        fast.len()
    );
    // What survived is a prefix, at the offsets it was acknowledged with.
    for (offset, value) in &fast {
        assert_eq!(value.as_slice(), values[*offset as usize].as_bytes());
    }
    // The log takes new writes after recovery.
    let more = produce(&mut c, "durable", -1, &["after".to_string()]);
    assert_eq!(more, [acked_all.len() as i64]);
}
