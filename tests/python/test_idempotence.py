"""Idempotent producers with their clients' defaults: a batch whose answer is lost on the way
back is retried, and the log holds it once."""

from __future__ import annotations

from cut_proxy import CutProxy
from e2e_helpers import unique_topic


def _read_all(bootstrap: str, topic: str, n: int) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = [m.value for m in consumer]
    consumer.close()
    return got


def _produce_through_cuts(broker_factory, **producer_conf) -> tuple[list[int], list[bytes], int]:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    proxy = CutProxy(cuts=2)
    broker = broker_factory.start(overrides={"advertised.listeners": f"PLAINTEXT://127.0.0.1:{proxy.port}"})
    proxy.run(broker.host, broker.port)
    bootstrap = f"127.0.0.1:{proxy.port}"
    topic = unique_topic("idem-kp")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, **producer_conf)
    n = 200
    futures = []
    for i in range(n):
        futures.append(producer.send(topic, value=f"v{i}".encode(), partition=0))
        if i % 20 == 19:
            producer.flush()
    producer.flush()
    offsets = [f.get(timeout=30).offset for f in futures]
    producer.close()
    assert proxy.cuts_left == 0, "every cut happened"

    got = _read_all(bootstrap, topic, n)
    proxy.close()
    return offsets, got, n


def test_kafka_python_retry_after_a_lost_answer_is_stored_once(broker_factory):
    """kafka-python 3 enables idempotence by default; nothing here changes it."""
    from kafka import KafkaProducer

    assert KafkaProducer.DEFAULT_CONFIG["enable_idempotence"], "the default this test relies on"
    offsets, got, n = _produce_through_cuts(broker_factory)
    assert got == [f"v{i}".encode() for i in range(n)]
    assert offsets == list(range(n))


def test_without_idempotence_the_same_cuts_duplicate(broker_factory):
    """The control: what the test above sees is the broker's doing, not luck of timing."""
    _, got, n = _produce_through_cuts(broker_factory, enable_idempotence=False)
    assert len(got) > n
