"""Round trips and admin calls through kafka-python 3.x (pure-Python client)."""

from __future__ import annotations

import time

import pytest

from e2e_helpers import COMPRESSIONS, Got, make_records, unique_topic, verify_roundtrip, wait_until

PARTITIONS = [0, 1, 2]
N_RECORDS = 5_000


def kp_codec_skip_reason(compression: str):
    """kafka-python compresses in Python; each codec needs its own package."""
    from kafka import codec
    needs = {
        "snappy": (codec.has_snappy, "python-snappy (backed by cramjam)"),
        "lz4": (codec.has_lz4, "lz4"),
        "zstd": (codec.has_zstd, "zstandard"),
    }
    if compression in needs and not needs[compression][0]():
        return f"kafka-python needs the {needs[compression][1]} package for {compression}"
    return None


def kp_admin(bootstrap: str):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000,
                            client_id="vltava-e2e-admin")


def kp_produce(bootstrap: str, topic: str, records, compression: str):
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type=None if compression == "none" else compression,
        linger_ms=5,
        request_timeout_ms=30000,
        max_block_ms=30000,
    )
    try:
        futures = [
            (rec, producer.send(topic, key=rec.key, value=rec.value, headers=rec.headers,
                                timestamp_ms=rec.timestamp))
            for rec in records
        ]
        producer.flush(timeout=120)
        for rec, fut in futures:
            md = fut.get(timeout=60)
            rec.partition, rec.offset = md.partition, md.offset
    finally:
        producer.close(timeout=30)
    return records


def kp_consume(bootstrap: str, topic: str, partitions, expected: int, timeout: float = 120.0):
    """Manual assignment from the beginning: no group, no commits."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",  # we seek explicitly; never silently reset
        fetch_max_wait_ms=100,
        request_timeout_ms=30000,
    )
    got = []
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        settle_until = None
        while True:
            now = time.monotonic()
            if len(got) >= expected:
                settle_until = settle_until or now + 1.0
                if now >= settle_until:
                    break
            elif now >= deadline:
                break
            for _tp, msgs in consumer.poll(timeout_ms=500, max_records=5000).items():
                for m in msgs:
                    got.append(Got(m.partition, m.offset, m.key, m.value, list(m.headers or []),
                                   m.timestamp, {0: "create", 1: "log_append"}.get(m.timestamp_type, "none")))
    finally:
        consumer.close()
    assert len(got) >= expected, f"consumed only {len(got)} of {expected} records within {timeout}s"
    return got


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_roundtrip(broker, compression):
    reason = kp_codec_skip_reason(compression)
    if reason:
        pytest.skip(reason)
    topic = unique_topic(f"kp-{compression}")
    admin = kp_admin(broker.bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": len(PARTITIONS), "replication_factor": 1}},
                            wait_for_metadata=True)
    finally:
        admin.close()

    # kafka-python's producer rejects null header values ((str, bytes) only).
    records = make_records(N_RECORDS, f"kp-{compression}", null_header_values=False)
    kp_produce(broker.bootstrap, topic, records, compression)
    got = kp_consume(broker.bootstrap, topic, PARTITIONS, expected=N_RECORDS)
    # kafka-python's default partitioner is murmur2 (Java-compatible); the
    # check is only that a key always maps to one partition.
    verify_roundtrip(records, got, PARTITIONS)


def test_offsets_api(broker):
    """beginning_offsets / end_offsets / offsets_for_times (ListOffsets)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = unique_topic("kp-offsets")
    admin = kp_admin(broker.bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    finally:
        admin.close()
    records = make_records(100, "kp-offsets", null_header_values=False)
    kp_produce(broker.bootstrap, topic, records, "gzip")
    tp = TopicPartition(topic, 0)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 100}
        found = c.offsets_for_times({tp: records[42].timestamp})
        assert found[tp] is not None and found[tp].offset == 42
        assert found[tp].timestamp == records[42].timestamp
        assert c.offsets_for_times({tp: records[-1].timestamp + 1})[tp] is None
    finally:
        c.close()


def test_admin_create_list_delete(broker):
    from kafka.errors import TopicAlreadyExistsError

    admin = kp_admin(broker.bootstrap)
    try:
        names = [unique_topic("kp-admin") for _ in range(3)]
        result = admin.create_topics({n: {"num_partitions": i + 1, "replication_factor": 1}
                                      for i, n in enumerate(names)}, wait_for_metadata=True)
        assert sorted(t["name"] for t in result["topics"]) == sorted(names)
        assert all(t["error_code"] == 0 for t in result["topics"]), result

        listed = admin.list_topics()
        assert set(names) <= set(listed)
        described = {t["name"]: t for t in admin.describe_topics(names)}
        for i, n in enumerate(names):
            assert described[n]["error_code"] == 0
            assert sorted(p["partition_index"] for p in described[n]["partitions"]) == list(range(i + 1))

        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics({names[0]: {"num_partitions": 1, "replication_factor": 1}})

        admin.delete_topics(names[:2])
        wait_until(lambda: not (set(names[:2]) & set(admin.list_topics())), 30,
                   what="deleted topics to disappear from metadata")
        assert names[2] in admin.list_topics()
    finally:
        admin.close()


@pytest.mark.parametrize("bad_name", ["bad/name", "spaces are bad", "..", ".", "x" * 250, "émoji-☃"],
                         ids=["slash", "spaces", "dotdot", "dot", "too-long", "non-ascii"])
def test_admin_invalid_topic_name(broker, bad_name):
    from kafka.errors import InvalidTopicError

    admin = kp_admin(broker.bootstrap)
    try:
        with pytest.raises(InvalidTopicError):
            admin.create_topics({bad_name: {"num_partitions": 1, "replication_factor": 1}})
        assert bad_name not in admin.list_topics()
    finally:
        admin.close()


def test_admin_describe_configs(broker):
    from kafka.admin import ConfigResource, ConfigResourceType

    topic = unique_topic("kp-cfg")
    admin = kp_admin(broker.bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1,
                                     "configs": {"cleanup.policy": "delete", "retention.ms": "3600000"}}},
                            wait_for_metadata=True)
        resource = ConfigResource(ConfigResourceType.TOPIC, topic)
        everything = admin.describe_configs([resource], config_filter="all")["topic"][topic]
        assert everything["retention.ms"]["value"] == "3600000", everything.get("retention.ms")
        assert everything["cleanup.policy"]["value"] == "delete", everything.get("cleanup.policy")
        # A value set at creation is a topic override, not a default.
        modified = admin.describe_configs([resource])["topic"][topic]
        assert "retention.ms" in modified, f"retention.ms not reported as non-default: {modified}"

        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "7200000"})],
                            incremental=True)
        everything = admin.describe_configs([resource], config_filter="all")["topic"][topic]
        assert everything["retention.ms"]["value"] == "7200000"
    finally:
        admin.close()


def test_admin_describe_cluster_and_log_dirs(broker):
    from pathlib import Path

    topic = unique_topic("kp-logdirs")
    admin = kp_admin(broker.bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True)
        records = make_records(200, "logdirs", null_header_values=False)
        kp_produce(broker.bootstrap, topic, records, "none")

        cluster = admin.describe_cluster()
        assert len(cluster["brokers"]) == 1, cluster
        (b,) = cluster["brokers"]
        assert (b["host"], b["port"]) == (broker.host, broker.port), cluster
        assert cluster["controller_id"] == b["broker_id"], cluster

        (per_broker,) = admin.describe_log_dirs({topic: [0, 1]})
        assert per_broker["broker"] == b["broker_id"]
        dirs = per_broker["log_dirs"]
        assert dirs and all(d["error_code"] == 0 for d in dirs), dirs
        data_dir = broker.data_dir.resolve()
        for d in dirs:
            path = Path(d["log_dir"]).resolve()
            assert path == data_dir or data_dir in path.parents, f"log dir {path} is not under {data_dir}"
        parts = {p["partition_index"]: p for d in dirs for t in d["topics"] if t["name"] == topic
                 for p in t["partitions"]}
        assert sorted(parts) == [0, 1], dirs
        for p in (0, 1):
            if any(r.partition == p for r in records):
                assert parts[p]["partition_size"] > 0, parts[p]
    finally:
        admin.close()
