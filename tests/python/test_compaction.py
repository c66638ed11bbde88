"""Log compaction seen by kafka-python (pure-Python client) and confluent-kafka."""

from __future__ import annotations

import os
import time

from e2e_helpers import cf_create_topic, unique_topic, wait_until

SEGMENT_BYTES = 32768
CLEANER = {"log.cleaner.backoff.ms": "100"}


def compacted_topic(bootstrap: str, prefix: str) -> str:
    topic = unique_topic(prefix)
    cf_create_topic(bootstrap, topic, partitions=1, config={
        "cleanup.policy": "compact",
        "segment.bytes": str(SEGMENT_BYTES),
        "min.cleanable.dirty.ratio": "0.01",
    })
    return topic


def kp_producer(bootstrap: str, **extra):
    from kafka import KafkaProducer
    return KafkaProducer(bootstrap_servers=bootstrap, **extra)


def kp_read_all(bootstrap: str, topic: str):
    """Every record of partition 0 from the beginning to the high watermark."""
    from kafka import KafkaConsumer, TopicPartition
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        out = []
        deadline = time.monotonic() + 30
        while (not out or out[-1][0] + 1 < end) and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500).values():
                out.extend((m.offset, m.key, m.value) for m in msgs)
        return out
    finally:
        consumer.close()


def test_kafka_python_reads_the_latest_value_of_each_key(broker_factory):
    """20,000 gzip-compressed updates over 200 keys and 20 tombstones: once cleaned, reading
    from the start gives each key's latest record once, at increasing offsets, and a
    group's committed offset is unchanged."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    broker = broker_factory.start(overrides=CLEANER)
    topic = compacted_topic(broker.bootstrap, "kp-compact")
    producer = kp_producer(broker.bootstrap, compression_type="gzip")
    latest = {}
    for i in range(20_000):
        key = f"key-{i % 200}".encode()
        value = f"value-{i}".encode()
        producer.send(topic, key=key, value=value, partition=0)
        latest[key] = value
    for k in range(0, 200, 10):
        key = f"key-{k}".encode()
        producer.send(topic, key=key, value=None, partition=0)
        latest[key] = None
    producer.flush()
    # A record bigger than a segment, in a batch of its own, seals every update.
    filler = os.urandom(SEGMENT_BYTES)  # incompressible, so the batch is this big on disk too
    producer.send(topic, key=b"filler", value=filler, partition=0).get(timeout=30)
    producer.close()

    tp = TopicPartition(topic, 0)
    group = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="kp-readers",
                          enable_auto_commit=False)
    try:
        group.assign([tp])
        group.commit({tp: OffsetAndMetadata(777, "", -1)})
    finally:
        group.close()

    def order(kv):
        return kv[0], kv[1] is None, kv[1] or b""

    expected = sorted([(k, v) for k, v in latest.items()] + [(b"filler", filler)], key=order)

    def cleaned():
        got = kp_read_all(broker.bootstrap, topic)
        offsets = [o for o, _, _ in got]
        assert offsets == sorted(set(offsets)), "offsets increase"
        return sorted(((k, v) for _, k, v in got), key=order) == expected

    try:
        wait_until(cleaned, timeout=60, interval=0.5, what="the topic to be cleaned")
    except AssertionError:
        got = kp_read_all(broker.bootstrap, topic)
        seen = {}
        for o, k, v in got:
            seen.setdefault(k, []).append(o)
        dups = {k: o for k, o in seen.items() if len(o) > 1}
        missing = [k for k in latest if k not in seen]
        raise AssertionError(f"{len(got)} records, {len(expected)} expected; "
                             f"repeated keys {list(dups.items())[:5]}; missing {missing[:5]}")

    group = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="kp-readers",
                          enable_auto_commit=False)
    try:
        assert group.committed(tp) == 777
    finally:
        group.close()


def test_confluent_keyless_record_to_a_compacted_topic_is_refused(broker):
    from confluent_kafka import KafkaError, Producer

    topic = compacted_topic(broker.bootstrap, "cf-keyless")
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topic, value=b"no key", partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    p.produce(topic, key=b"k", value=b"keyed", partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    codes = sorted(e.code() if e else 0 for e in errors)
    assert KafkaError.INVALID_RECORD in codes, errors
