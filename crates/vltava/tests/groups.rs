//! Consumer groups with librdkafka: sharing, takeover, exactly-once with sync commits,
//! resume after kill -9, static membership, cooperative rebalancing, KIP-848, admin.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Tracks a consumer's assignment and commits before partitions are taken away, which is
/// what makes delivery exactly-once across rebalances.
#[derive(Clone, Default)]
struct Tracker {
    assigned: Arc<Mutex<BTreeSet<i32>>>,
    rebalances: Arc<AtomicUsize>,
    revoked: Arc<Mutex<Vec<BTreeSet<i32>>>>,
}

impl ClientContext for Tracker {}
impl ConsumerContext for Tracker {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
            let parts: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let mut a = self.assigned.lock().unwrap();
            for p in &parts {
                a.remove(p);
            }
            self.revoked.lock().unwrap().push(parts);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        if let Rebalance::Assign(tpl) = rebalance {
            self.assigned
                .lock()
                .unwrap()
                .extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }
}

fn create_topic(rt: &tokio::runtime::Runtime, addr: SocketAddr, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config(addr).create().unwrap();
    let r = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

fn produce(addr: SocketAddr, topic: &str, n: usize) {
    let p = checked_producer(client_config(addr).set("linger.ms", "5"));
    for i in 0..n {
        let key = i.to_string();
        let value = format!("v{i}");
        send_retrying(&p, BaseRecord::to(topic).key(&key).payload(&value));
    }
    flush_delivered(&p, n, Duration::from_secs(30));
}

fn consumer(
    addr: SocketAddr,
    group: &str,
    extra: &[(&str, &str)],
    tracker: Tracker,
) -> BaseConsumer<Tracker> {
    let mut c = client_config(addr);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(tracker).unwrap()
}

/// A KIP-848 (`group.protocol=consumer`) member of `group`, subscribed to `topic`; static when
/// given an instance id.
fn kip848_member(
    addr: SocketAddr,
    group: &str,
    topic: &str,
    instance: Option<&str>,
    tracker: Tracker,
) -> BaseConsumer<Tracker> {
    let mut c = client_config(addr);
    c.set("group.id", group)
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    if let Some(i) = instance {
        c.set("group.instance.id", i);
    }
    let c: BaseConsumer<Tracker> = c.create_with_context(tracker).unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// Consumes `n` records (within 60 s) and returns the first offset seen on each partition.
fn first_offsets(c: &BaseConsumer<Tracker>, n: usize) -> HashMap<i32, i64> {
    let mut first = HashMap::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count < n {
        assert!(
            Instant::now() < deadline,
            "only {count} of {n} records arrived"
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            first.entry(m.partition()).or_insert(m.offset());
            count += 1;
        }
    }
    first
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Seen = Arc<Mutex<Vec<(i32, i64)>>>;

/// A consumer thread: polls, records what it saw, commits synchronously every `every` records.
fn spawn_member(
    c: BaseConsumer<Tracker>,
    seen: Seen,
    stop: Arc<AtomicBool>,
    every: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut since_commit = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                seen.lock().unwrap().push((m.partition(), m.offset()));
                c.store_offset_from_message(&m).unwrap();
                since_commit += 1;
                if since_commit >= every {
                    c.commit_consumer_state(CommitMode::Sync).unwrap();
                    since_commit = 0;
                }
            }
        }
        let _ = c.commit_consumer_state(CommitMode::Sync);
        drop(c);
    })
}

#[test]
fn three_members_share_take_over_and_consume_exactly_once() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("group.initial.rebalance.delay.ms", "500")],
    );
    let addr = broker.local_addr;
    create_topic(&rt, addr, "share", 6);
    produce(addr, "share", 100_000);

    let seen: Seen = Arc::default();
    let trackers: Vec<Tracker> = (0..3).map(|_| Tracker::default()).collect();
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
    let mut threads = Vec::new();
    for i in 0..3 {
        let c = consumer(
            addr,
            "sharers",
            &[("enable.auto.offset.store", "false")],
            trackers[i].clone(),
        );
        c.subscribe(&["share"]).unwrap();
        threads.push(Some(spawn_member(
            c,
            Arc::clone(&seen),
            Arc::clone(&stops[i]),
            200,
        )));
    }
    wait_until("2 partitions each", Duration::from_secs(30), || {
        trackers
            .iter()
            .all(|t| t.assigned.lock().unwrap().len() == 2)
    });
    let all: BTreeSet<i32> = trackers
        .iter()
        .flat_map(|t| t.assigned.lock().unwrap().clone())
        .collect();
    assert_eq!(all.len(), 6, "no partition is assigned twice");

    wait_until("some progress", Duration::from_secs(60), || {
        seen.lock().unwrap().len() >= 20_000
    });
    stops[2].store(true, Ordering::Relaxed);
    threads[2].take().unwrap().join().unwrap();
    let left_at = Instant::now();
    wait_until("takeover", Duration::from_secs(30), || {
        trackers[..2]
            .iter()
            .map(|t| t.assigned.lock().unwrap().len())
            .sum::<usize>()
            == 6
    });
    assert!(
        left_at.elapsed() < Duration::from_secs(6),
        "the others took over within the session timeout"
    );

    wait_until("all records", Duration::from_secs(120), || {
        seen.lock().unwrap().len() >= 100_000
    });
    std::thread::sleep(Duration::from_millis(500));
    for s in &stops {
        s.store(true, Ordering::Relaxed);
    }
    for t in threads.into_iter().flatten() {
        t.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let unique: HashSet<(i32, i64)> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 100_000, "every record consumed");
    assert_eq!(seen.len(), 100_000, "no record consumed twice");
    rt.block_on(broker.shutdown());
}

#[test]
fn consumers_resume_from_committed_offsets_after_kill_9() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["group.initial.rebalance.delay.ms=0"]);
    create_topic(&rt, broker.addr, "resume", 3);
    produce(broker.addr, "resume", 30_000);

    let c = consumer(
        broker.addr,
        "resumers",
        &[("enable.auto.offset.store", "false")],
        Tracker::default(),
    );
    c.subscribe(&["resume"]).unwrap();
    let mut consumed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed < 10_000 {
        assert!(
            Instant::now() < deadline,
            "only {consumed} of the first 10000 arrived"
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            c.store_offset_from_message(&m).unwrap();
            consumed += 1;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    let committed = c.committed(Duration::from_secs(5)).unwrap();
    let committed: HashMap<i32, i64> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    assert_eq!(committed.values().sum::<i64>(), 10_000);
    broker.kill9();
    // Closing a consumer whose coordinator is gone waits for it; let that happen aside.
    std::thread::spawn(move || drop(c));

    let broker = BrokerProcess::start(dir.path(), &["group.initial.rebalance.delay.ms=0"]);
    let c = consumer(broker.addr, "resumers", &[], Tracker::default());
    c.subscribe(&["resume"]).unwrap();
    let first = first_offsets(&c, 20_000);
    for (p, off) in &first {
        assert_eq!(
            Some(off),
            committed.get(p).or(Some(&0)),
            "partition {p} resumed exactly at its committed offset"
        );
    }
}

/// A dynamic member and a static one share a 4-partition topic; the static member stops
/// and starts again with the same instance id. It must get the same partitions back and the
/// dynamic member must see no rebalance. `mk(tracker, instance)` builds a subscribed member;
/// `group_epoch`, where the protocol has one to read, must not move either.
fn static_restart_moves_nothing(
    mk: impl Fn(Tracker, Option<&str>) -> BaseConsumer<Tracker>,
    group_epoch: Option<&dyn Fn() -> i32>,
) {
    let a_t = Tracker::default();
    let a = mk(a_t.clone(), None);
    wait_until("a has 4", Duration::from_secs(30), || {
        a.poll(Duration::from_millis(50));
        a_t.assigned.lock().unwrap().len() == 4
    });
    let s_t = Tracker::default();
    let s = mk(s_t.clone(), Some("instance-1"));
    wait_until("split 2/2", Duration::from_secs(30), || {
        a.poll(Duration::from_millis(20));
        s.poll(Duration::from_millis(20));
        a_t.assigned.lock().unwrap().len() == 2 && s_t.assigned.lock().unwrap().len() == 2
    });
    let a_parts = a_t.assigned.lock().unwrap().clone();
    let s_parts = s_t.assigned.lock().unwrap().clone();
    let a_rebalances = a_t.rebalances.load(Ordering::SeqCst);
    let epoch_before = group_epoch.map(|f| f());
    drop(s);
    let s2_t = Tracker::default();
    let s2 = mk(s2_t.clone(), Some("instance-1"));
    wait_until(
        "restarted static member assigned",
        Duration::from_secs(30),
        || {
            a.poll(Duration::from_millis(20));
            s2.poll(Duration::from_millis(20));
            !s2_t.assigned.lock().unwrap().is_empty()
        },
    );
    for _ in 0..20 {
        a.poll(Duration::from_millis(50));
        s2.poll(Duration::from_millis(50));
    }
    assert_eq!(
        *s2_t.assigned.lock().unwrap(),
        s_parts,
        "same partitions as before"
    );
    assert_eq!(
        *a_t.assigned.lock().unwrap(),
        a_parts,
        "the other member kept its own"
    );
    assert_eq!(
        a_t.rebalances.load(Ordering::SeqCst),
        a_rebalances,
        "the other member saw no rebalance"
    );
    assert_eq!(
        group_epoch.map(|f| f()),
        epoch_before,
        "the group did not rebalance"
    );
}

#[test]
fn static_member_restart_does_not_rebalance() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("group.initial.rebalance.delay.ms", "0")],
    );
    let addr = broker.local_addr;
    create_topic(&rt, addr, "static", 4);
    // A static member leaves no LeaveGroup behind when it stops.
    static_restart_moves_nothing(
        |t, instance| {
            let mut extra = vec![("session.timeout.ms", "10000")];
            extra.extend(instance.map(|i| ("group.instance.id", i)));
            let c = consumer(addr, "statics", &extra, t);
            c.subscribe(&["static"]).unwrap();
            c
        },
        None,
    );
    rt.block_on(broker.shutdown());
}

/// Two static members; the first to join leads the group. The leader closes and starts
/// again within its session timeout, then the other does: each time the member that stays
/// must see no revocation and no rebalance, and the restarted one gets its partitions back.
#[test]
fn static_leader_restart_does_not_make_the_other_member_revoke() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("group.initial.rebalance.delay.ms", "0")],
    );
    let addr = broker.local_addr;
    create_topic(&rt, addr, "static-leader", 4);
    let mk = |t: Tracker, instance: &str| {
        let extra = [
            ("session.timeout.ms", "10000"),
            ("group.instance.id", instance),
        ];
        let c = consumer(addr, "static-leaders", &extra, t);
        c.subscribe(&["static-leader"]).unwrap();
        c
    };
    let l_t = Tracker::default();
    let leader = mk(l_t.clone(), "leader");
    wait_until("the leader has 4", Duration::from_secs(30), || {
        leader.poll(Duration::from_millis(50));
        l_t.assigned.lock().unwrap().len() == 4
    });
    let f_t = Tracker::default();
    let follower = mk(f_t.clone(), "follower");
    wait_until("split 2/2", Duration::from_secs(30), || {
        leader.poll(Duration::from_millis(20));
        follower.poll(Duration::from_millis(20));
        l_t.assigned.lock().unwrap().len() == 2 && f_t.assigned.lock().unwrap().len() == 2
    });
    let mut members = [Some(leader), Some(follower)];
    let mut trackers = [l_t, f_t];
    for (gone, name) in [(0, "leader"), (1, "follower")] {
        let stays = 1 - gone;
        let kept = trackers[stays].assigned.lock().unwrap().clone();
        let gone_parts = trackers[gone].assigned.lock().unwrap().clone();
        let rebalances = trackers[stays].rebalances.load(Ordering::SeqCst);
        let revocations = trackers[stays].revoked.lock().unwrap().len();
        // A static librdkafka member closes without a LeaveGroup.
        drop(members[gone].take());
        trackers[gone] = Tracker::default();
        members[gone] = Some(mk(trackers[gone].clone(), name));
        let poll_both = |members: &[Option<BaseConsumer<Tracker>>; 2], ms| {
            for m in members.iter().flatten() {
                m.poll(Duration::from_millis(ms));
            }
        };
        wait_until(
            &format!("the restarted {name} assigned"),
            Duration::from_secs(30),
            || {
                poll_both(&members, 20);
                !trackers[gone].assigned.lock().unwrap().is_empty()
            },
        );
        // Several heartbeat intervals: a rebalance would have reached the other member.
        for _ in 0..40 {
            poll_both(&members, 50);
        }
        // Copied out, so that a failed assertion does not poison the trackers' locks, which
        // the consumers' callbacks still take while they close.
        let stays_t = &trackers[stays];
        let revoked = stays_t.revoked.lock().unwrap()[revocations..].to_vec();
        let stays_now = stays_t.assigned.lock().unwrap().clone();
        let gone_now = trackers[gone].assigned.lock().unwrap().clone();
        assert_eq!(
            revoked,
            [],
            "restarting the {name}: the other member revoked nothing"
        );
        assert_eq!(
            stays_t.rebalances.load(Ordering::SeqCst),
            rebalances,
            "restarting the {name}: the other member saw no rebalance"
        );
        assert_eq!(stays_now, kept);
        assert_eq!(
            gone_now, gone_parts,
            "the restarted {name} got its partitions back"
        );
    }
    drop(members);
    rt.block_on(broker.shutdown());
}

#[test]
fn cooperative_sticky_moves_only_what_must_move() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("group.initial.rebalance.delay.ms", "0")],
    );
    let addr = broker.local_addr;
    create_topic(&rt, addr, "coop", 6);
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];
    let a_t = Tracker::default();
    let a = consumer(addr, "coops", &coop, a_t.clone());
    a.subscribe(&["coop"]).unwrap();
    // Generous budgets: two cooperative rounds on a loaded 2-core CI machine.
    wait_until("a has all", Duration::from_secs(60), || {
        a.poll(Duration::from_millis(50));
        a_t.assigned.lock().unwrap().len() == 6
    });
    let b_t = Tracker::default();
    let b = consumer(addr, "coops", &coop, b_t.clone());
    b.subscribe(&["coop"]).unwrap();
    wait_until("3/3", Duration::from_secs(90), || {
        a.poll(Duration::from_millis(20));
        b.poll(Duration::from_millis(20));
        a_t.assigned.lock().unwrap().len() == 3 && b_t.assigned.lock().unwrap().len() == 3
    });
    let revoked = a_t.revoked.lock().unwrap().clone();
    let total: usize = revoked.iter().map(BTreeSet::len).sum();
    assert_eq!(
        total, 3,
        "a gave up exactly the 3 partitions b needed: {revoked:?}"
    );
    let a_now = a_t.assigned.lock().unwrap().clone();
    let b_now = b_t.assigned.lock().unwrap().clone();
    assert!(a_now.is_disjoint(&b_now));
    // Closing a consumer that still holds partitions runs its rebalance callback inside
    // rd_kafka_consumer_close, where librdkafka's rd_kafka_rebalance_protocol (called by
    // rdkafka's callback) can block forever (librdkafka issue 4041): both leave first.
    for (c, t) in [(&a, &a_t), (&b, &b_t)] {
        c.unsubscribe();
        wait_until("partitions given up", Duration::from_secs(30), || {
            c.poll(Duration::from_millis(50));
            t.assigned.lock().unwrap().is_empty()
        });
    }
    drop((a, b));
    rt.block_on(broker.shutdown());
}

#[test]
fn kip_848_consumer_protocol_assigns_and_rebalances() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("group.consumer.heartbeat.interval.ms", "300")],
    );
    let addr = broker.local_addr;
    create_topic(&rt, addr, "kip848", 4);
    let mk = |t: Tracker| kip848_member(addr, "new-protocol", "kip848", None, t);
    let a_t = Tracker::default();
    let a = mk(a_t.clone());
    wait_until("a has 4", Duration::from_secs(30), || {
        a.poll(Duration::from_millis(50));
        a_t.assigned.lock().unwrap().len() == 4
    });
    let b_t = Tracker::default();
    let b = mk(b_t.clone());
    wait_until("2/2", Duration::from_secs(30), || {
        a.poll(Duration::from_millis(20));
        b.poll(Duration::from_millis(20));
        a_t.assigned.lock().unwrap().len() == 2 && b_t.assigned.lock().unwrap().len() == 2
    });
    assert!(a_t
        .assigned
        .lock()
        .unwrap()
        .is_disjoint(&b_t.assigned.lock().unwrap()));
    // Records produced now are consumed exactly once between the two members.
    produce(addr, "kip848", 1000);
    let mut got = 0;
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < 1000 {
        assert!(Instant::now() < deadline, "consumed {got} of 1000");
        for c in [&a, &b] {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                assert!(seen.insert((m.partition(), m.offset())), "delivered twice");
                got += 1;
            }
        }
    }
    a.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(b);
    wait_until("a takes all back", Duration::from_secs(30), || {
        a.poll(Duration::from_millis(50));
        a_t.assigned.lock().unwrap().len() == 4
    });
    drop(a); // while the broker still answers its leave
    rt.block_on(broker.shutdown());
}

#[test]
fn kip_848_static_member_restart_does_not_move_partitions() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("group.consumer.heartbeat.interval.ms", "300")],
    );
    let addr = broker.local_addr;
    create_topic(&rt, addr, "static848", 4);
    // The group epoch moves on any rebalance, even one that happens to hand out the same
    // partitions again, which librdkafka alone cannot tell apart. The member leaves with
    // epoch -2 and comes back.
    let group_epoch = || {
        use vltava_protocol::messages::{
            ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId,
        };
        let r: ConsumerGroupDescribeResponse = RawClient::connect(addr).call(
            vltava_protocol::ApiKey::ConsumerGroupDescribe,
            0,
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(
                vltava_protocol::StrBytes::from_static_str("static-new"),
            )]),
        );
        r.groups[0].group_epoch
    };
    static_restart_moves_nothing(
        |t, instance| kip848_member(addr, "static-new", "static848", instance, t),
        Some(&group_epoch),
    );
    rt.block_on(broker.shutdown());
}

/// A KIP-848 member subscribed by regular expression gets the matching topics, and a
/// matching topic created after it joined is assigned to it too; others never are.
#[test]
fn kip_848_regex_subscription_follows_new_topics() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("group.consumer.heartbeat.interval.ms", "300")],
    );
    let addr = broker.local_addr;
    create_topic(&rt, addr, "vltava-rx-one", 2);
    create_topic(&rt, addr, "not-vltava-rx", 1);
    let mut cfg = client_config(addr);
    cfg.set("group.id", "regex")
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "500");
    let c: BaseConsumer<Tracker> = cfg.create_with_context(Tracker::default()).unwrap();
    c.subscribe(&["^vltava-rx-.*"]).unwrap();
    let assigned = |c: &BaseConsumer<Tracker>| -> BTreeSet<(String, i32)> {
        c.assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect()
    };
    let one: BTreeSet<(String, i32)> = (0..2).map(|p| ("vltava-rx-one".into(), p)).collect();
    let mut last = BTreeSet::new();
    wait_until(
        "the matching topic assigned",
        Duration::from_secs(30),
        || {
            c.poll(Duration::from_millis(50));
            last = assigned(&c);
            last == one
        },
    );
    create_topic(&rt, addr, "vltava-rx-two", 2);
    let mut both = one.clone();
    both.extend((0..2).map(|p| ("vltava-rx-two".to_string(), p)));
    wait_until(
        "the topic created later assigned",
        Duration::from_secs(30),
        || {
            c.poll(Duration::from_millis(50));
            last = assigned(&c);
            last == both
        },
    );
    // And it is consumed.
    produce(addr, "vltava-rx-two", 10);
    let mut got = 0;
    wait_until("records of the new topic", Duration::from_secs(30), || {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            assert_eq!(m.topic(), "vltava-rx-two");
            got += 1;
        }
        got == 10
    });
    drop(c);
    rt.block_on(broker.shutdown());
}

#[test]
fn groups_are_listed_described_and_deleted() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("group.initial.rebalance.delay.ms", "0")],
    );
    let addr = broker.local_addr;
    create_topic(&rt, addr, "adm", 2);
    produce(addr, "adm", 100);
    let t = Tracker::default();
    let c = consumer(addr, "admins", &[], t.clone());
    c.subscribe(&["adm"]).unwrap();
    let mut n = 0;
    while n < 100 {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(50)) {
            n += 1;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).unwrap();

    let admin: AdminClient<DefaultClientContext> = client_config(addr).create().unwrap();
    // librdkafka's list_groups can come back empty while a new client is still connecting:
    // ask until it answers.
    let mut list = None;
    wait_until("group listed", Duration::from_secs(10), || {
        let l = admin
            .inner()
            .fetch_group_list(Some("admins"), Duration::from_secs(5))
            .unwrap();
        let found = !l.groups().is_empty();
        list = Some(l);
        found
    });
    let list = list.unwrap();
    let g = &list.groups()[0];
    assert_eq!(
        (g.name(), g.state(), g.protocol_type()),
        ("admins", "Stable", "consumer")
    );
    assert_eq!(g.members().len(), 1);
    assert!(!g.members()[0].assignment().unwrap_or_default().is_empty());
    let all = admin
        .inner()
        .fetch_group_list(None, Duration::from_secs(5))
        .unwrap();
    assert!(all.groups().iter().any(|g| g.name() == "admins"));

    // Lag is end offset minus committed offset: zero here.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("adm", 0);
    tpl.add_partition("adm", 1);
    let committed = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    let mut lag = 0;
    for e in committed.elements() {
        let (_, high) = c
            .fetch_watermarks("adm", e.partition(), Duration::from_secs(5))
            .unwrap();
        lag += high - e.offset().to_raw().unwrap();
    }
    assert_eq!(lag, 0);

    let r = rt
        .block_on(admin.delete_groups(&["admins"], &AdminOptions::new()))
        .unwrap();
    assert!(r[0].is_err(), "a group with members cannot be deleted");
    drop(c);
    wait_until("group empty", Duration::from_secs(20), || {
        let l = admin
            .inner()
            .fetch_group_list(Some("admins"), Duration::from_secs(5))
            .unwrap();
        l.groups()
            .first()
            .is_some_and(|g| g.state() == "Empty" && g.members().is_empty())
    });
    let r = rt
        .block_on(admin.delete_groups(&["admins"], &AdminOptions::new()))
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let l = admin
        .inner()
        .fetch_group_list(None, Duration::from_secs(5))
        .unwrap();
    assert!(
        l.groups().iter().all(|g| g.name() != "admins"),
        "a deleted group is no longer listed"
    );
    let r = rt
        .block_on(admin.delete_groups(&["admins"], &AdminOptions::new()))
        .unwrap();
    assert!(r[0].is_err(), "deleting it again fails: {r:?}");
    rt.block_on(broker.shutdown());
}

#[test]
fn kip_848_member_keeps_its_assignment_across_a_broker_kill_9() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let hb = "group.consumer.heartbeat.interval.ms=300";
    let broker = BrokerProcess::start(dir.path(), &[hb]);
    let port = broker.addr.port();
    create_topic(&rt, broker.addr, "kip848-restart", 4);
    let t = Tracker::default();
    let c = kip848_member(broker.addr, "survivors", "kip848-restart", None, t.clone());
    wait_until("assigned", Duration::from_secs(30), || {
        c.poll(Duration::from_millis(50));
        t.assigned.lock().unwrap().len() == 4
    });
    let rebalances = t.rebalances.load(Ordering::SeqCst);

    broker.kill9();
    let broker = BrokerProcess::start_on(dir.path(), port, &[hb]);
    produce(broker.addr, "kip848-restart", 200);
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < 200 {
        assert!(
            Instant::now() < deadline,
            "consumed {got} of 200 after the restart"
        );
        if let Some(Ok(_)) = c.poll(Duration::from_millis(50)) {
            got += 1;
        }
    }
    // A few more heartbeats against the restarted broker.
    for _ in 0..20 {
        c.poll(Duration::from_millis(50));
    }
    assert_eq!(t.assigned.lock().unwrap().len(), 4);
    assert_eq!(
        t.rebalances.load(Ordering::SeqCst),
        rebalances,
        "the member kept its id, epoch and partitions: no rebalance"
    );
    drop(c);
    drop(broker);
}

#[test]
fn standalone_consumers_commit_and_resume_without_joining() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let addr = broker.local_addr;
    create_topic(&rt, addr, "solo", 2);
    produce(addr, "solo", 400);
    let mk = || consumer(addr, "solos", &[], Tracker::default());
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("solo", 0, Offset::Beginning)
        .unwrap();
    tpl.add_partition_offset("solo", 1, Offset::Beginning)
        .unwrap();

    let c = mk();
    c.assign(&tpl).unwrap();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while n < 100 {
        assert!(Instant::now() < deadline, "read {n} of 100");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            c.store_offset_from_message(&m).unwrap();
            n += 1;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    let committed: HashMap<i32, i64> = c
        .committed(Duration::from_secs(5))
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| {
            e.offset()
                .to_raw()
                .filter(|o| *o >= 0)
                .map(|o| (e.partition(), o))
        })
        .collect();
    assert_eq!(committed.values().sum::<i64>(), 100, "{committed:?}");
    drop(c);

    // Another standalone consumer of the same group id starts at the commits.
    let c = mk();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("solo", 0, Offset::Stored).unwrap();
    tpl.add_partition_offset("solo", 1, Offset::Stored).unwrap();
    c.assign(&tpl).unwrap();
    let first = first_offsets(&c, 300);
    for (p, off) in &first {
        assert_eq!(
            off,
            committed.get(p).unwrap_or(&0),
            "partition {p} resumes at its commit"
        );
    }
    drop(c);

    // The group exists only through its offsets: listed and described as Empty.
    let admin: AdminClient<DefaultClientContext> = client_config(addr).create().unwrap();
    let mut state = String::new();
    wait_until("group listed", Duration::from_secs(10), || {
        let l = admin
            .inner()
            .fetch_group_list(Some("solos"), Duration::from_secs(5))
            .unwrap();
        state = l
            .groups()
            .first()
            .map(|g| g.state().to_string())
            .unwrap_or_default();
        !state.is_empty()
    });
    assert_eq!(state, "Empty");
    rt.block_on(broker.shutdown());
}
