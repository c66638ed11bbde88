"""Durability across broker restarts on the same data directory."""

from __future__ import annotations

from e2e_helpers import (cf_consume, cf_create_topic, cf_produce, cf_wait_topic, cf_watermarks, make_records,
                         unique_topic, verify_roundtrip)

PARTITIONS = [0, 1, 2]


def test_sigterm_restart_keeps_everything(broker_factory):
    data_dir = broker_factory.new_data_dir()
    first = broker_factory.start(data_dir=data_dir)

    topics = {unique_topic("restart-none"): "none", unique_topic("restart-zstd"): "zstd"}
    produced = {}
    for topic, compression in topics.items():
        cf_create_topic(first.bootstrap, topic, partitions=len(PARTITIONS),
                        config={"retention.ms": "604800000"})
        produced[topic] = cf_produce(first.bootstrap, topic, make_records(5000, compression), compression)

    rc = first.stop()
    assert rc == 0, f"broker exited with {rc} after SIGTERM (expected a clean 0):\n{first.stderr_tail()}"

    second = broker_factory.start(data_dir=data_dir)
    for topic, compression in topics.items():
        cf_wait_topic(second.bootstrap, topic, len(PARTITIONS))
        records = produced[topic]
        per_part = {p: sum(1 for r in records if r.partition == p) for p in PARTITIONS}
        assert cf_watermarks(second.bootstrap, topic, PARTITIONS) == {p: (0, n) for p, n in per_part.items()}
        got = cf_consume(second.bootstrap, topic, PARTITIONS, expected=len(records))
        verify_roundtrip(records, got, PARTITIONS)

    # Topic configs survive too.
    from confluent_kafka.admin import ConfigResource, ResourceType

    from e2e_helpers import cf_admin
    topic = next(iter(topics))
    res = ConfigResource(ResourceType.TOPIC, topic)
    admin = cf_admin(second.bootstrap)  # keep a reference: futures die with their client
    configs = admin.describe_configs([res], request_timeout=30)[res].result(timeout=60)
    assert configs["retention.ms"].value == "604800000"

    # New writes continue the offsets; nothing is reused or lost.
    topic = next(iter(topics))
    more = make_records(1000, "after-restart")
    for r in more:
        r.index += 5000
    cf_produce(second.bootstrap, topic, more)
    before = produced[topic]
    for p in PARTITIONS:
        old = sorted(r.offset for r in before if r.partition == p)
        new = sorted(r.offset for r in more if r.partition == p)
        if new:
            assert new[0] == len(old), f"partition {p}: first offset after restart {new[0]}, expected {len(old)}"
    got = cf_consume(second.bootstrap, topic, PARTITIONS, expected=len(before) + len(more))
    verify_roundtrip(before + more, got, PARTITIONS, check_key_partitioning=False)

    rc = second.stop()
    assert rc == 0, f"broker exited with {rc} after SIGTERM:\n{second.stderr_tail()}"


def test_restart_twice_with_empty_and_deleted_topics(broker_factory):
    """Empty topics survive, deleted ones stay deleted."""
    from e2e_helpers import cf_admin

    data_dir = broker_factory.new_data_dir()
    b = broker_factory.start(data_dir=data_dir)
    empty, doomed = unique_topic("restart-empty"), unique_topic("restart-deleted")
    cf_create_topic(b.bootstrap, empty, partitions=2)
    cf_create_topic(b.bootstrap, doomed, partitions=1)
    cf_produce(b.bootstrap, doomed, make_records(10, "doomed"))
    admin = cf_admin(b.bootstrap)  # keep a reference: futures die with their client
    admin.delete_topics([doomed], operation_timeout=30)[doomed].result(timeout=60)

    for _ in range(2):
        assert b.stop() == 0
        b = broker_factory.start(data_dir=data_dir)
        cf_wait_topic(b.bootstrap, empty, 2)
        assert cf_watermarks(b.bootstrap, empty, [0, 1]) == {0: (0, 0), 1: (0, 0)}
        md = cf_admin(b.bootstrap).list_topics(timeout=15)
        assert doomed not in md.topics, f"deleted topic {doomed} came back after restart"


def test_sigkill_keeps_acknowledged_records(broker_factory):
    """A crash (SIGKILL, not a machine crash) must not lose acks=all records:
    they were acknowledged, so they reached the OS; recovery must find them."""
    data_dir = broker_factory.new_data_dir()
    b = broker_factory.start(data_dir=data_dir)
    topic = unique_topic("crash")
    cf_create_topic(b.bootstrap, topic, partitions=len(PARTITIONS))
    records = cf_produce(b.bootstrap, topic, make_records(3000, "lz4"), "lz4")
    b.kill()

    b = broker_factory.start(data_dir=data_dir)
    cf_wait_topic(b.bootstrap, topic, len(PARTITIONS))
    got = cf_consume(b.bootstrap, topic, PARTITIONS, expected=len(records))
    verify_roundtrip(records, got, PARTITIONS)
