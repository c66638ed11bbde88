"""Client-side helpers shared by the end-to-end tests (no broker logic here)."""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Optional

COMPRESSIONS = ["none", "gzip", "snappy", "lz4", "zstd"]

# librdkafka logs go through Python logging, so pytest shows them with a
# failing test instead of printing them to stderr at random times.
RDKAFKA_LOGGER = logging.getLogger("librdkafka")


def unique_topic(prefix: str = "t") -> str:
    """A topic name no other test (or earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.1,
               what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------

@dataclass
class Rec:
    """One record as produced (and as expected back)."""
    index: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list  # list[tuple[str, Optional[bytes]]]
    timestamp: int  # ms since epoch, CreateTime
    partition: int = -1  # filled from the delivery report
    offset: int = -1


def make_records(n: int, tag: str, *, null_header_values: bool = True,
                 base_ts: Optional[int] = None) -> list[Rec]:
    """Deterministic, varied records.

    * keys repeat (``i % 379``), some are non-ASCII, a few are null;
    * a few values are null, some are large (20 KiB), sizes vary;
    * headers include duplicates, an empty value, optionally null values,
      and some records have no headers at all;
    * explicit, strictly increasing CreateTime timestamps one hour in the past.
    """
    if base_ts is None:
        base_ts = (int(time.time() * 1000) - 3_600_000) // 1000 * 1000
    out = []
    for i in range(n):
        if i % 1000 == 999:
            key = None
        elif i % 3 == 0:
            key = f"klíč-{i % 379}".encode("utf-8")
        else:
            key = f"key-{i % 379}".encode()
        if i % 500 == 250:
            value = None
        elif i % 997 == 13:
            value = (f"big-{i}-".encode() + bytes(range(256)) * 80)[:20480]
        else:
            value = (f"value-{i:06d}-{tag}-" + "abcdefghij" * (i % 37) + f"-{i * 2654435761 % 2**32:08x}").encode()
        if i % 11 == 0:
            headers = []
        else:
            headers = [("idx", str(i).encode()), ("codec", tag.encode()),
                       ("dup", b"first"), ("dup", b"second"), ("empty", b"")]
            if null_header_values and i % 7 == 0:
                headers.append(("nullable", None))
        out.append(Rec(i, key, value, headers, base_ts + i))
    return out


# ---------------------------------------------------------------------------
# confluent-kafka (librdkafka) helpers
# ---------------------------------------------------------------------------

def cf_admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 30000, "logger": RDKAFKA_LOGGER})


def cf_wait_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0):
    """Wait until metadata shows ``topic`` with ``partitions`` partitions, each with a leader."""
    admin = cf_admin(bootstrap)

    def ready():
        md = admin.list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None or len(t.partitions) != partitions:
            return False
        return all(p.leader >= 0 and p.error is None for p in t.partitions.values())

    wait_until(ready, timeout, what=f"topic {topic} with {partitions} partitions in metadata")


def cf_create_topic(bootstrap: str, topic: str, partitions: int = 3, config: Optional[dict] = None):
    from confluent_kafka.admin import NewTopic
    admin = cf_admin(bootstrap)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=30, request_timeout=30)
    futures[topic].result(timeout=60)  # raises KafkaException on error
    cf_wait_topic(bootstrap, topic, partitions)


def cf_produce(bootstrap: str, topic: str, records: list[Rec], compression: str = "none",
               extra_conf: Optional[dict] = None, timeout: float = 120.0) -> list[Rec]:
    """Produce ``records`` with acks=all; fill in partition/offset from delivery reports."""
    from confluent_kafka import Producer

    errors: list = []
    conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "compression.type": compression,
        "linger.ms": 5,
        "message.timeout.ms": int(timeout * 1000),
        "error_cb": lambda err: errors.append(("error_cb", err)),
        "logger": RDKAFKA_LOGGER,
    }
    conf.update(extra_conf or {})
    producer = Producer(conf)

    def on_delivery(rec: Rec):
        def cb(err, msg):
            if err is not None:
                errors.append((rec.index, err))
            else:
                rec.partition, rec.offset = msg.partition(), msg.offset()
        return cb

    for rec in records:
        while True:
            try:
                producer.produce(topic, key=rec.key, value=rec.value, headers=rec.headers or None,
                                 timestamp=rec.timestamp, on_delivery=on_delivery(rec))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    fatal = [e for e in errors if e[0] != "error_cb" or e[1].fatal()]
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s; errors={errors[:10]}"
    assert not fatal, f"delivery errors: {fatal[:10]} (total {len(fatal)})"
    undelivered = [r.index for r in records if r.offset < 0]
    assert not undelivered, f"no delivery report for {len(undelivered)} records, e.g. {undelivered[:10]}"
    return records


@dataclass
class Got:
    """One record as consumed."""
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list
    timestamp: int
    timestamp_type: str  # "create" | "log_append" | "none"


def cf_consume(bootstrap: str, topic: str, partitions: list[int], expected: int,
               timeout: float = 120.0, settle: float = 1.0) -> list[Got]:
    """Read ``topic`` from the beginning by manual assignment (no group protocol).

    librdkafka insists on a group.id, but with assign() + explicit offsets and
    no commits it never needs the group coordinator.
    """
    from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer, TopicPartition

    errors: list = []
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"e2e-unused-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",  # OFFSET_BEGINNING is explicit; never silently reset
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
        "error_cb": lambda err: errors.append(err),
        "logger": RDKAFKA_LOGGER,
    })
    got: list[Got] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout
        settle_until = None
        while True:
            now = time.monotonic()
            if len(got) >= expected:
                settle_until = settle_until or now + settle  # look for extras/duplicates
                if now >= settle_until:
                    break
            elif now >= deadline:
                break
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                if msg.error() is not None:
                    raise AssertionError(f"consume error on {msg.topic()}[{msg.partition()}]: {msg.error()}")
                ts_type, ts = msg.timestamp()
                got.append(Got(
                    msg.partition(), msg.offset(), msg.key(), msg.value(), list(msg.headers() or []), ts,
                    {TIMESTAMP_CREATE_TIME: "create", TIMESTAMP_LOG_APPEND_TIME: "log_append"}.get(ts_type, "none"),
                ))
    finally:
        consumer.close()
    fatal = [e for e in errors if e.fatal()]
    assert not fatal, f"fatal consumer errors: {fatal}"
    assert len(got) >= expected, (
        f"consumed only {len(got)} of {expected} records within {timeout}s; non-fatal client errors: {errors[:5]}")
    return got


def cf_watermarks(bootstrap: str, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-wm-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "logger": RDKAFKA_LOGGER})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15, cached=False) for p in partitions}
    finally:
        c.close()


# ---------------------------------------------------------------------------
# Verification shared by every client
# ---------------------------------------------------------------------------

def verify_roundtrip(produced: list[Rec], got: list[Got], partitions: list[int],
                     check_key_partitioning: bool = True) -> None:
    """Everything produced comes back exactly once, byte for byte, in order."""
    assert len(got) == len(produced), f"produced {len(produced)} records, consumed {len(got)}"

    # Offsets: per partition strictly increasing, dense from 0, no duplicates.
    by_part: dict[int, list[Got]] = defaultdict(list)
    for g in got:
        by_part[g.partition].append(g)
    assert set(by_part) <= set(partitions), f"records from unexpected partitions {set(by_part) - set(partitions)}"
    for p, recs in by_part.items():
        offsets = [g.offset for g in recs]
        assert offsets == list(range(len(offsets))), (
            f"partition {p}: offsets not 0..{len(offsets) - 1} in order; first bad at "
            f"{next(i for i, (a, b) in enumerate(zip(offsets, range(len(offsets)))) if a != b)}: {offsets[:20]}...")

    # Content: the record at (partition, offset) is exactly the one the
    # delivery report put there.
    expected = {(r.partition, r.offset): r for r in produced}
    assert len(expected) == len(produced), "delivery reports gave two records the same (partition, offset)"
    mismatches = []
    for g in got:
        r = expected.get((g.partition, g.offset))
        if r is None:
            mismatches.append(f"unexpected record at {g.partition}/{g.offset}")
            continue
        problems = []
        if g.key != r.key:
            problems.append(f"key {g.key!r} != {r.key!r}")
        if g.value != r.value:
            problems.append(f"value {g.value[:40] if g.value else g.value!r}... != {r.value[:40] if r.value else r.value!r}...")
        if [(k, v) for k, v in g.headers] != [(k, v) for k, v in r.headers]:
            problems.append(f"headers {g.headers!r} != {r.headers!r}")
        if g.timestamp != r.timestamp:
            problems.append(f"timestamp {g.timestamp} != {r.timestamp}")
        if g.timestamp_type != "create":
            problems.append(f"timestamp type {g.timestamp_type} != create")
        if problems:
            mismatches.append(f"record #{r.index} at {g.partition}/{g.offset}: " + "; ".join(problems))
    assert not mismatches, f"{len(mismatches)} mismatching records, e.g.:\n" + "\n".join(mismatches[:10])

    # Per-partition order equals produce order.
    for p, recs in by_part.items():
        idx = [expected[(g.partition, g.offset)].index for g in recs]
        assert idx == sorted(idx), f"partition {p}: records not in produce order"

    if check_key_partitioning:
        key_parts: dict[bytes, set] = defaultdict(set)
        for r in produced:
            if r.key is not None:
                key_parts[r.key].add(r.partition)
        split = {k: v for k, v in key_parts.items() if len(v) > 1}
        assert not split, f"{len(split)} keys landed in more than one partition, e.g. {list(split.items())[:3]}"
        used = {r.partition for r in produced}
        assert used == set(partitions), f"keyed records only used partitions {sorted(used)} of {partitions}"
