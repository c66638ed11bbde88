"""Round trips through confluent-kafka (librdkafka 2.x, the current client)."""

from __future__ import annotations

import pytest

from e2e_helpers import (COMPRESSIONS, RDKAFKA_LOGGER, cf_consume, cf_create_topic, cf_produce, cf_watermarks, make_records,
                         unique_topic, verify_roundtrip)

PARTITIONS = [0, 1, 2]
N_RECORDS = 10_000


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_roundtrip(broker, compression):
    topic = unique_topic(f"cf-{compression}")
    cf_create_topic(broker.bootstrap, topic, partitions=len(PARTITIONS))

    records = make_records(N_RECORDS, compression)
    cf_produce(broker.bootstrap, topic, records, compression)

    # ListOffsets: earliest 0, latest = number of records in the partition.
    per_part = {p: sum(1 for r in records if r.partition == p) for p in PARTITIONS}
    assert cf_watermarks(broker.bootstrap, topic, PARTITIONS) == {p: (0, n) for p, n in per_part.items()}

    got = cf_consume(broker.bootstrap, topic, PARTITIONS, expected=N_RECORDS)
    verify_roundtrip(records, got, PARTITIONS)


def test_offsets_for_times(broker):
    """ListOffsets by timestamp: first offset whose timestamp >= the target."""
    from confluent_kafka import Consumer, TopicPartition

    topic = unique_topic("cf-times")
    cf_create_topic(broker.bootstrap, topic, partitions=1)
    records = make_records(300, "times")
    cf_produce(broker.bootstrap, topic, records, "lz4", extra_conf={"linger.ms": 50})
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "e2e-unused-times",
                  "enable.auto.commit": False, "logger": RDKAFKA_LOGGER})
    try:
        for target_index in (0, 1, 150, 299):
            ts = records[target_index].timestamp
            (tp,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=15)
            assert tp.error is None, tp.error
            assert tp.offset == records[target_index].offset, f"timestamp of record #{target_index}"
        # Past the newest timestamp: no such offset (-1 on the wire, OFFSET_END in librdkafka).
        (tp,) = c.offsets_for_times([TopicPartition(topic, 0, records[-1].timestamp + 1)], timeout=15)
        assert tp.error is None, tp.error
        assert tp.offset == -1, f"expected -1 (no record at/after the timestamp), got {tp.offset}"
    finally:
        c.close()


def test_admin_describe_cluster_and_configs(broker):
    from confluent_kafka.admin import ConfigResource, ResourceType

    from e2e_helpers import cf_admin

    admin = cf_admin(broker.bootstrap)
    topic = unique_topic("cf-cfg")
    cf_create_topic(broker.bootstrap, topic, partitions=2, config={"retention.ms": "123456789"})

    cluster = admin.describe_cluster(request_timeout=30).result(timeout=60)
    assert len(cluster.nodes) == 1
    assert cluster.controller is not None
    node = cluster.nodes[0]
    assert (node.host, node.port) == (broker.host, broker.port)

    res = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([res], request_timeout=30)[res].result(timeout=60)
    assert configs["retention.ms"].value == "123456789"

    # IncrementalAlterConfigs, then read it back.
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res2 = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "987654321", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res2], request_timeout=30)[res2].result(timeout=60)
    configs = admin.describe_configs([res], request_timeout=30)[res].result(timeout=60)
    assert configs["retention.ms"].value == "987654321"


def test_create_partitions_then_produce(broker):
    from confluent_kafka.admin import NewPartitions

    from e2e_helpers import cf_admin, cf_wait_topic

    topic = unique_topic("cf-grow")
    cf_create_topic(broker.bootstrap, topic, partitions=1)
    admin = cf_admin(broker.bootstrap)
    admin.create_partitions([NewPartitions(topic, 4)], request_timeout=30)[topic].result(timeout=60)
    cf_wait_topic(broker.bootstrap, topic, 4)
    records = make_records(2000, "grow")
    cf_produce(broker.bootstrap, topic, records)
    got = cf_consume(broker.bootstrap, topic, [0, 1, 2, 3], expected=len(records))
    verify_roundtrip(records, got, [0, 1, 2, 3])


def test_delete_records(broker):
    """DeleteRecords moves the log start offset; reads from the beginning start there."""
    from confluent_kafka import TopicPartition

    from e2e_helpers import cf_admin

    topic = unique_topic("cf-delrec")
    cf_create_topic(broker.bootstrap, topic, partitions=1)
    records = make_records(1000, "delrec")
    cf_produce(broker.bootstrap, topic, records, "zstd", extra_conf={"linger.ms": 50, "batch.num.messages": 100})
    admin = cf_admin(broker.bootstrap)
    tp = TopicPartition(topic, 0, 600)
    deleted = admin.delete_records([tp], request_timeout=30, operation_timeout=30)[tp].result(timeout=60)
    assert deleted.low_watermark == 600
    assert cf_watermarks(broker.bootstrap, topic, [0]) == {0: (600, 1000)}
    got = cf_consume(broker.bootstrap, topic, [0], expected=400)
    assert [g.offset for g in got] == list(range(600, 1000))
    by_offset = {r.offset: r for r in records}
    assert all(g.value == by_offset[g.offset].value and g.key == by_offset[g.offset].key for g in got)
