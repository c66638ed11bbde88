"""A three-node cluster seen through confluent-kafka (librdkafka) and kafka-python with their
defaults: RF=3 topics with min.insync.replicas=2, metadata (leaders, replicas, ISR) agreed on
by both clients and every node, and a leader killed with SIGKILL while the clients go on."""

from __future__ import annotations

from collections import Counter

import pytest

from e2e_helpers import cf_admin, unique_topic, wait_until


@pytest.fixture
def nodes(broker_factory):
    return broker_factory.cluster(3)


def bootstrap(nodes) -> str:
    return ",".join(n.bootstrap for n in nodes if n.alive())


def cf_partitions(bootstrap_servers: str, topic: str) -> dict:
    """partition -> (leader, replicas, isr) as librdkafka sees it."""
    md = cf_admin(bootstrap_servers).list_topics(topic=topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, t.error
    return {p.id: (p.leader, sorted(p.replicas), sorted(p.isrs)) for p in t.partitions.values()}


def kp_partitions(bootstrap_servers: str, topic: str) -> dict:
    """partition -> (leader, replicas, isr) as kafka-python's admin describes it."""
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="vltava-e2e-cluster")
    try:
        (t,) = admin.describe_topics([topic])
        assert t["error_code"] == 0, t
        # kafka-python 3 names fields as Kafka's schemas do; 2.x had shorter names.
        def f(p, new, old):
            return p[new] if new in p else p[old]
        return {f(p, "partition_index", "partition"): (
                    f(p, "leader_id", "leader"),
                    sorted(f(p, "replica_nodes", "replicas")),
                    sorted(f(p, "isr_nodes", "isr")))
                for p in t["partitions"]}
    finally:
        admin.close()


def test_replicated_topic_metadata_produce_and_failover(nodes):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import NewTopic
    from kafka import KafkaConsumer, KafkaProducer

    topic = unique_topic("rep")
    admin = cf_admin(bootstrap(nodes))  # kept alive until its future completes
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=3,
                  config={"min.insync.replicas": "2"})],
        operation_timeout=30, request_timeout=30)
    futures[topic].result(timeout=60)

    ids = [1, 2, 3]

    def fully_replicated():
        seen = [cf_partitions(n.bootstrap, topic) for n in nodes]
        ok = all(len(s) == 3 and all(leader in ids and replicas == ids and isr == ids
                                     for leader, replicas, isr in s.values()) for s in seen)
        return seen[0] if ok and all(s == seen[0] for s in seen) else None

    before = wait_until(fully_replicated, 30, what="three in-sync replicas on every node")
    # kafka-python sees the same leaders, replicas and ISR.
    assert wait_until(lambda: kp_partitions(bootstrap(nodes), topic) == before, 20,
                      what="kafka-python metadata matching librdkafka's")
    leaders = {leader for leader, _, _ in before.values()}
    assert leaders == set(ids), f"leaders spread over the brokers: {before}"

    # Both producers with their defaults (librdkafka: acks=all; kafka-python: acks=1).
    cf = Producer({"bootstrap.servers": bootstrap(nodes)})
    acked: list[str] = []

    def report(err, msg):
        if err is None:
            acked.append(msg.value().decode())

    for i in range(300):
        cf.produce(topic, key=f"k{i}", value=f"cf-{i}", on_delivery=report)
    assert cf.flush(60) == 0
    kp = KafkaProducer(bootstrap_servers=bootstrap(nodes))
    for i in range(300):
        kp.send(topic, key=f"k{i}".encode(), value=f"kp-{i}".encode()).get(timeout=30)
    kp.flush()
    kp.close()

    # The leader of partition 0 dies; librdkafka goes on producing through the failover.
    victim_id = before[0][0]
    victim = nodes[victim_id - 1]
    victim.kill()
    live = [n for n in nodes if n.alive()]
    for i in range(300, 600):
        cf.produce(topic, key=f"k{i}", value=f"cf-{i}", on_delivery=report)
        cf.poll(0)
    assert cf.flush(120) == 0
    assert len(acked) == 600, f"{600 - len(acked)} librdkafka records not acknowledged"

    def failed_over():
        seen = [cf_partitions(n.bootstrap, topic) for n in live]
        ok = all(all(leader in ids and leader != victim_id and victim_id not in isr
                     for leader, _, isr in s.values()) for s in seen)
        return seen[0] if ok else None

    after = wait_until(failed_over, 30, what="new leaders from the ISR, without the dead broker")
    assert wait_until(
        lambda: {p: (l, isr) for p, (l, _, isr) in kp_partitions(bootstrap(live), topic).items()}
        == {p: (l, isr) for p, (l, _, isr) in after.items()},
        20, what="kafka-python seeing the failover")

    # Everything acknowledged is read back exactly once, by both consumers.
    expected = set(acked) | {f"kp-{i}" for i in range(300)}
    c = Consumer({"bootstrap.servers": bootstrap(live), "group.id": unique_topic("g"),
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: Counter = Counter()
    wait_until(lambda: _poll_into(c, got) and set(got) >= expected, 60,
               what="librdkafka reading every acknowledged record")
    c.close()
    assert not [v for v, n in got.items() if n > 1], "read twice"

    kc = KafkaConsumer(topic, bootstrap_servers=bootstrap(live), auto_offset_reset="earliest",
                       group_id=unique_topic("kg"), consumer_timeout_ms=2000)
    kgot: Counter = Counter()
    wait_until(lambda: _kp_poll_into(kc, kgot) and set(kgot) >= expected, 60,
               what="kafka-python reading every acknowledged record")
    kc.close()
    assert not [v for v, n in kgot.items() if n > 1], "read twice"


def _poll_into(consumer, got: Counter) -> bool:
    for m in consumer.consume(500, timeout=1.0):
        if m.error() is None:
            got[m.value().decode()] += 1
    return True


def _kp_poll_into(consumer, got: Counter) -> bool:
    for batch in consumer.poll(timeout_ms=1000).values():
        for m in batch:
            got[m.value.decode()] += 1
    return True
