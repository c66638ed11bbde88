"""Transactions with real clients and their default settings: read_committed against
read_uncommitted, the last stable offset, the broker's abort of a timed-out transaction,
fencing, kafka-python's transactional producer, and an exactly-once copier that survives
two `kill -9`s of the broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict

import pytest

from e2e_helpers import unique_topic, wait_until


def _admin_create(bootstrap: str, topic: str, partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, partitions, 1)])
    for f in fs.values():
        f.result(30)


def _consume_all(bootstrap: str, topic: str, isolation: str, idle_s: float = 3.0,
                 partitions: int = 1) -> list:
    """Every record (key, value, partition, offset) readable with `isolation`."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"read-{uuid.uuid4().hex[:8]}",
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        m = c.poll(0.2)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append((m.key(), m.value(), m.partition(), m.offset()))
        last = time.monotonic()
    c.close()
    return out


def _watermarks_and_lso(bootstrap: str, topic: str) -> tuple[int, int]:
    """(high watermark, last stable offset) of partition 0, from ListOffsets."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, 0)
    hw = admin.list_offsets({tp: OffsetSpec.latest()},
                            isolation_level=IsolationLevel.READ_UNCOMMITTED)[tp].result(30).offset
    lso = admin.list_offsets({tp: OffsetSpec.latest()},
                             isolation_level=IsolationLevel.READ_COMMITTED)[tp].result(30).offset
    return hw, lso


def test_read_committed_hides_aborted_and_open_transactions(broker):
    from confluent_kafka import Producer

    bootstrap = broker.bootstrap
    topic = unique_topic("txn-iso")
    _admin_create(bootstrap, topic)

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"k", value=f"committed-{i}".encode(), partition=0)
    p.commit_transaction(30)

    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"k", value=f"aborted-{i}".encode(), partition=0)
    p.flush(30)
    p.abort_transaction(30)

    # An open transaction: written, but the LSO stays at its first offset.
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, key=b"k", value=f"open-{i}".encode(), partition=0)
    p.flush(30)
    hw, lso = _watermarks_and_lso(bootstrap, topic)
    # 5 committed + marker, 5 aborted + marker, 3 open.
    assert hw == 15, hw
    assert lso == 12, "the open transaction's first offset holds the LSO back"

    committed = [v for _, v, _, _ in _consume_all(bootstrap, topic, "read_committed")]
    assert committed == [f"committed-{i}".encode() for i in range(5)]
    uncommitted = [v for _, v, _, _ in _consume_all(bootstrap, topic, "read_uncommitted")]
    assert uncommitted == (
        [f"committed-{i}".encode() for i in range(5)]
        + [f"aborted-{i}".encode() for i in range(5)]
        + [f"open-{i}".encode() for i in range(3)]
    )
    # Control records take offsets: 5 and 11 are the markers.
    offsets = [o for _, _, _, o in _consume_all(bootstrap, topic, "read_uncommitted")]
    assert offsets == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14]

    p.commit_transaction(30)
    hw, lso = _watermarks_and_lso(bootstrap, topic)
    assert (hw, lso) == (16, 16)
    committed = [v for _, v, _, _ in _consume_all(bootstrap, topic, "read_committed")]
    assert committed[-3:] == [f"open-{i}".encode() for i in range(3)]


def test_a_timed_out_transaction_is_aborted_by_the_broker(broker_factory):
    from confluent_kafka import KafkaException, Producer

    b = broker_factory.start(overrides={
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "200",
    })
    topic = unique_topic("txn-timeout")
    _admin_create(b.bootstrap, topic)
    p = Producer({
        "bootstrap.servers": b.bootstrap,
        "transactional.id": f"tx-{topic}",
        "transaction.timeout.ms": 2000,
    })
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"never committed", partition=0)
    p.flush(30)
    hw, lso = _watermarks_and_lso(b.bootstrap, topic)
    assert (hw, lso) == (1, 0)
    # The broker aborts it: its marker moves the LSO past it.
    wait_until(lambda: _watermarks_and_lso(b.bootstrap, topic) == (2, 2), timeout=20,
               what="the broker to abort the timed-out transaction")
    assert _consume_all(b.bootstrap, topic, "read_committed", idle_s=1.5) == []
    # The producer learns of it when it tries to commit.
    with pytest.raises(KafkaException):
        p.commit_transaction(30)


def test_a_second_instance_fences_the_first(broker):
    from confluent_kafka import KafkaException, Producer

    bootstrap = broker.bootstrap
    topic = unique_topic("txn-fence")
    _admin_create(bootstrap, topic)
    tid = f"tx-{topic}"
    first = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid})
    first.init_transactions(30)
    first.begin_transaction()
    first.produce(topic, value=b"from the first", partition=0)
    first.flush(30)

    second = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid})
    second.init_transactions(30)  # aborts the first one's open transaction
    second.begin_transaction()
    second.produce(topic, value=b"from the second", partition=0)
    second.commit_transaction(30)

    with pytest.raises(KafkaException) as e:
        first.produce(topic, value=b"late", partition=0)
        first.commit_transaction(30)
    err = e.value.args[0]
    assert err.fatal() or err.txn_requires_abort(), err
    values = [v for _, v, _, _ in _consume_all(bootstrap, topic, "read_committed")]
    assert values == [b"from the second"]


def test_kafka_python_transactions_commit_and_abort(broker):
    from kafka import KafkaProducer

    bootstrap = broker.bootstrap
    topic = unique_topic("txn-kp")
    _admin_create(bootstrap, topic)
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"kp-{topic}")
    p.init_transactions()
    p.begin_transaction()
    for i in range(3):
        p.send(topic, value=f"c{i}".encode(), partition=0)
    p.commit_transaction()
    p.begin_transaction()
    for i in range(3):
        p.send(topic, value=f"a{i}".encode(), partition=0)
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    p.send(topic, value=b"c3", partition=0)
    p.commit_transaction()
    p.close()

    committed = [v for _, v, _, _ in _consume_all(bootstrap, topic, "read_committed")]
    assert committed == [b"c0", b"c1", b"c2", b"c3"]
    every = [v for _, v, _, _ in _consume_all(bootstrap, topic, "read_uncommitted")]
    assert every == [b"c0", b"c1", b"c2", b"a0", b"a1", b"a2", b"c3"]

    # kafka-python's consumer with read_committed drops the aborted records too.
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                      enable_auto_commit=False, consumer_timeout_ms=3000)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    assert [m.value for m in c] == [b"c0", b"c1", b"c2", b"c3"]
    c.close()


# ---------------------------------------------------------------------------
# Exactly-once copier under kill -9
# ---------------------------------------------------------------------------

COPY_RECORDS = 100_000
COPY_PARTITIONS = 3


def _fill_input(bootstrap: str, topic: str) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(COPY_RECORDS):
        key = f"key-{i % 997}".encode()
        # The value carries a per-key sequence number, so order per key can be checked.
        p.produce(topic, key=key, value=f"{i}".encode())
        if i % 10_000 == 9_999:
            p.flush(60)
    assert p.flush(60) == 0


class ClientHang(Exception):
    """A client call that did not return by its deadline."""


class Copier:
    """Consume, transform (upper-case prefix), produce, commit offsets in the transaction."""

    def __init__(self, bootstrap: str, src: str, dst: str, group: str):
        self.bootstrap, self.src, self.dst, self.group = bootstrap, src, dst, group
        self.copied = 0  # input records whose transaction committed
        self.errors: list = []
        # Producers left stuck inside librdkafka (see _send_offsets), kept so that they are
        # not destroyed while their call is still blocked.
        self.abandoned: list = []
        self.done = threading.Event()
        self.failure: BaseException | None = None

    def _producer(self):
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": f"copier-{self.group}"})
        while True:
            try:
                p.init_transactions(30)
                return p
            except Exception as e:  # noqa: BLE001 - the broker may be down for a while
                self.errors.append(repr(e))
                if not getattr(e.args[0], "retriable", lambda: False)():
                    p = Producer({"bootstrap.servers": self.bootstrap,
                                  "transactional.id": f"copier-{self.group}"})

    def _rewind(self, consumer, parts):
        from confluent_kafka import TopicPartition

        while True:
            try:
                committed = consumer.committed(parts, 30)
                break
            except Exception as e:  # noqa: BLE001
                self.errors.append(repr(e))
                time.sleep(0.5)
        consumer.assign([TopicPartition(self.src, tp.partition, tp.offset if tp.offset >= 0 else 0)
                         for tp in committed])

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.failure = e
        finally:
            self.done.set()

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })
        parts = [TopicPartition(self.src, p) for p in range(COPY_PARTITIONS)]
        self._rewind(consumer, parts)
        producer = self._producer()
        deadline = time.monotonic() + 400
        while self.copied < COPY_RECORDS:
            assert time.monotonic() < deadline, f"copied only {self.copied}: {self.errors[-5:]}"
            msgs = consumer.consume(1000, 1.0)
            msgs = [m for m in msgs if m.error() is None]
            if not msgs:
                continue
            try:
                producer.begin_transaction()
                for m in msgs:
                    producer.produce(self.dst, key=m.key(), value=b"copy-" + m.value(),
                                     partition=m.partition())
                positions = consumer.position(consumer.assignment())
                self._send_offsets(producer, positions, consumer.consumer_group_metadata())
                self._commit(producer)
                self.copied += len(msgs)
            except ClientHang as e:
                # The producer is stuck in librdkafka: leave it, fence it with a new one.
                self.errors.append(str(e))
                self.abandoned.append(producer)
                producer = self._producer()
                self._rewind(consumer, parts)
                self.copied = self._committed_total(consumer, parts)
            except KafkaException as e:
                err = e.args[0]
                self.errors.append(str(err))
                if err.txn_requires_abort():
                    self._abort(producer)
                else:
                    # Fatal, or the outcome is unknown: a new instance fences this one and
                    # finishes or aborts what it left; the committed offsets then tell.
                    producer = self._producer()
                self._rewind(consumer, parts)
                self.copied = self._committed_total(consumer, parts)
        consumer.close()

    def _send_offsets(self, producer, positions, group_metadata) -> None:
        """send_offsets_to_transaction with a deadline the call itself does not keep.

        librdkafka (2.10 and later) re-bootstraps when every broker is down, and the
        decommissioned broker can stay cached as the group coordinator: the call then waits
        for it forever, past its own timeout (librdkafka issues #5511 and #5456). A
        single-broker cluster that restarts hits this with Kafka as with Vltava."""
        done = threading.Event()
        failure: list = []

        def call():
            try:
                producer.send_offsets_to_transaction(positions, group_metadata, 30)
            except BaseException as e:  # noqa: BLE001 - handed to the copier
                failure.append(e)
            finally:
                done.set()

        threading.Thread(target=call, daemon=True).start()
        if not done.wait(60):
            raise ClientHang("send_offsets_to_transaction did not return within 60 s")
        if failure:
            raise failure[0]

    def _commit(self, producer) -> None:
        from confluent_kafka import KafkaException

        while True:
            try:
                producer.commit_transaction(60)
                return
            except KafkaException as e:
                if e.args[0].retriable():
                    self.errors.append(str(e.args[0]))
                    continue
                raise

    def _abort(self, producer) -> None:
        from confluent_kafka import KafkaException

        while True:
            try:
                producer.abort_transaction(60)
                return
            except KafkaException as e:
                self.errors.append(str(e.args[0]))
                if not e.args[0].retriable():
                    return

    def _committed_total(self, consumer, parts) -> int:
        committed = consumer.committed(parts, 30)
        return sum(max(tp.offset, 0) for tp in committed)


def _stuck(copier: Copier, t: threading.Thread) -> str:
    """Where the copier is, for a failure report."""
    import sys
    import traceback

    frame = sys._current_frames().get(t.ident)
    stack = "".join(traceback.format_stack(frame)) if frame else "<not running>"
    return f"copied {copier.copied}, last errors {copier.errors[-10:]}\n{stack}"


def test_exactly_once_copier_survives_two_kill_9(broker_factory):
    from confluent_kafka import Consumer, TopicPartition

    b = broker_factory.start()
    port = b.port
    src, dst = unique_topic("eos-in"), unique_topic("eos-out")
    _admin_create(b.bootstrap, src, COPY_PARTITIONS)
    _admin_create(b.bootstrap, dst, COPY_PARTITIONS)
    _fill_input(b.bootstrap, src)

    copier = Copier(b.bootstrap, src, dst, f"eos-{uuid.uuid4().hex[:8]}")
    t = threading.Thread(target=copier.run, daemon=True)
    t.start()
    brokers = [b]
    for at in (COPY_RECORDS * 3 // 10, COPY_RECORDS * 6 // 10):
        try:
            wait_until(lambda: copier.copied >= at or copier.done.is_set(), timeout=300,
                       what=f"the copier to pass {at} records")
        except AssertionError as e:
            raise AssertionError(f"{e}; {_stuck(copier, t)}") from None
        assert not copier.done.is_set(), f"copier stopped early: {copier.failure!r}"
        brokers[-1].kill()
        time.sleep(1.0)
        brokers.append(broker_factory.start(port=port, data_dir=b.data_dir))
    if not copier.done.wait(400):
        raise AssertionError(f"copier did not finish: {_stuck(copier, t)}")
    if copier.failure is not None:
        raise copier.failure
    bootstrap = brokers[-1].bootstrap

    out = _consume_all(bootstrap, dst, "read_committed", idle_s=5.0, partitions=COPY_PARTITIONS)
    inp = _consume_all(bootstrap, src, "read_uncommitted", idle_s=5.0, partitions=COPY_PARTITIONS)
    assert len(inp) == COPY_RECORDS
    assert len(out) == COPY_RECORDS, (
        f"{len(out)} records in the output, {COPY_RECORDS} expected; errors seen: {copier.errors[-10:]}")
    # Every input record exactly once, in order per key.
    per_key_in, per_key_out = defaultdict(list), defaultdict(list)
    for k, v, _, _ in sorted(inp, key=lambda r: (r[2], r[3])):
        per_key_in[k].append(b"copy-" + v)
    for k, v, _, _ in sorted(out, key=lambda r: (r[2], r[3])):
        per_key_out[k].append(v)
    assert per_key_out == per_key_in
    # The group's committed offsets are the input's end offsets.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": copier.group})
    committed = c.committed([TopicPartition(src, p) for p in range(COPY_PARTITIONS)], 30)
    ends = defaultdict(int)
    for _, _, p, o in inp:
        ends[p] = max(ends[p], o + 1)
    assert {tp.partition: tp.offset for tp in committed} == dict(ends)
    c.close()
    # The kills happened while the copier was working, and it had to recover from them.
    assert len(brokers) == 3
