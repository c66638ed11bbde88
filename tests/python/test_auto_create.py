"""auto.create.topics.enable and num.partitions broker overrides."""

from __future__ import annotations


import pytest

from broker_process import BrokerFactory
from e2e_helpers import RDKAFKA_LOGGER, unique_topic, wait_until


def kp_raw_metadata(bootstrap: str, topic: str, allow_auto_topic_creation: bool):
    """Send a Metadata request naming ``topic`` through kafka-python's own protocol code.

    The admin client's describe_topics() always sends
    allow_auto_topic_creation=False, so it cannot show whether the *broker*
    refuses to auto-create; this sends the flag explicitly.
    """
    from kafka import KafkaAdminClient
    from kafka.protocol.metadata import MetadataRequest

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        request = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
                                  allow_auto_topic_creation=allow_auto_topic_creation)

        async def send():
            return await admin._manager.send(request)

        return admin._manager.run(send).to_dict()
    finally:
        admin.close()


def topic_error(md: dict, topic: str) -> int:
    (t,) = [t for t in md["topics"] if t["name"] == topic]
    return t["error_code"]


@pytest.fixture(scope="module")
def nocreate(tmp_path_factory):
    factory = BrokerFactory(tmp_path_factory.mktemp("vltava-nocreate"))
    yield factory.start(overrides={"auto.create.topics.enable": "false"})
    factory.close()


@pytest.fixture(scope="module")
def autocreate(tmp_path_factory):
    factory = BrokerFactory(tmp_path_factory.mktemp("vltava-autocreate"))
    yield factory.start(overrides={"auto.create.topics.enable": "true", "num.partitions": "3"})
    factory.close()


class TestAutoCreateDisabled:
    def test_metadata_unknown_topic(self, nocreate):
        from kafka.errors import UnknownTopicOrPartitionError

        topic = unique_topic("nocreate-md")
        md = kp_raw_metadata(nocreate.bootstrap, topic, allow_auto_topic_creation=True)
        assert topic_error(md, topic) == UnknownTopicOrPartitionError.errno
        # ... and asking did not create it as a side effect.
        md = kp_raw_metadata(nocreate.bootstrap, topic, allow_auto_topic_creation=False)
        assert topic_error(md, topic) == UnknownTopicOrPartitionError.errno

    def test_kafka_python_produce_unknown_topic(self, nocreate):
        """kafka-python treats UNKNOWN_TOPIC_OR_PARTITION as retriable while
        waiting for metadata, so send() surfaces it as a metadata timeout."""
        from kafka import KafkaAdminClient, KafkaProducer
        from kafka.errors import KafkaTimeoutError

        topic = unique_topic("nocreate-kp")
        producer = KafkaProducer(bootstrap_servers=nocreate.bootstrap, max_block_ms=3000)
        try:
            with pytest.raises(KafkaTimeoutError):
                producer.send(topic, b"value").get(timeout=10)
        finally:
            producer.close(timeout=10)
        admin = KafkaAdminClient(bootstrap_servers=nocreate.bootstrap)
        try:
            assert topic not in admin.list_topics()
        finally:
            admin.close()

    def test_confluent_produce_unknown_topic(self, nocreate):
        """librdkafka fails the message with UNKNOWN_TOPIC_OR_PART (or its
        local twin _UNKNOWN_TOPIC) once the topic stays unknown."""
        from confluent_kafka import KafkaError, Producer

        topic = unique_topic("nocreate-cf")
        results = []
        p = Producer({"bootstrap.servers": nocreate.bootstrap,
                      "topic.metadata.propagation.max.ms": 1000, "message.timeout.ms": 20000,
                      "logger": RDKAFKA_LOGGER})
        p.produce(topic, b"value", on_delivery=lambda err, msg: results.append(err))
        assert p.flush(30) == 0
        assert len(results) == 1 and results[0] is not None, results
        assert results[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), results[0]

        md = p.list_topics(topic=topic, timeout=10)
        assert md.topics[topic].error is not None
        assert md.topics[topic].error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)

    def test_override_visible_in_broker_configs(self, nocreate):
        """--override sets a broker config, so DescribeConfigs(BROKER) reports it."""
        from confluent_kafka.admin import ConfigResource, ResourceType

        from e2e_helpers import cf_admin

        admin = cf_admin(nocreate.bootstrap)
        (node,) = admin.describe_cluster(request_timeout=30).result(timeout=60).nodes
        res = ConfigResource(ResourceType.BROKER, str(node.id))
        configs = admin.describe_configs([res], request_timeout=30)[res].result(timeout=60)
        assert configs["auto.create.topics.enable"].value == "false"

    def test_explicit_create_still_works(self, nocreate):
        from e2e_helpers import cf_consume, cf_create_topic, cf_produce, make_records, verify_roundtrip

        topic = unique_topic("nocreate-explicit")
        cf_create_topic(nocreate.bootstrap, topic, partitions=2)
        records = make_records(200, "explicit")
        cf_produce(nocreate.bootstrap, topic, records)
        verify_roundtrip(records, cf_consume(nocreate.bootstrap, topic, [0, 1], len(records)), [0, 1])


class TestAutoCreateEnabled:
    def test_metadata_auto_creates_with_num_partitions(self, autocreate):
        topic = unique_topic("auto-md")

        def created():
            md = kp_raw_metadata(autocreate.bootstrap, topic, allow_auto_topic_creation=True)
            (t,) = [t for t in md["topics"] if t["name"] == topic]
            # LEADER_NOT_AVAILABLE (5) right after creation is allowed by the protocol.
            return t if t["error_code"] == 0 and all(p["leader_id"] >= 0 for p in t["partitions"]) else None

        t = wait_until(created, 30, what="auto-created topic")
        assert sorted(p["partition_index"] for p in t["partitions"]) == [0, 1, 2]

    def test_metadata_without_allow_flag_does_not_create(self, autocreate):
        from kafka.errors import UnknownTopicOrPartitionError

        topic = unique_topic("auto-noflag")
        md = kp_raw_metadata(autocreate.bootstrap, topic, allow_auto_topic_creation=False)
        assert topic_error(md, topic) == UnknownTopicOrPartitionError.errno

    def test_produce_auto_creates(self, autocreate):
        from e2e_helpers import cf_consume, cf_produce, make_records, verify_roundtrip

        topic = unique_topic("auto-produce")
        records = make_records(500, "auto")
        cf_produce(autocreate.bootstrap, topic, records, "snappy")
        verify_roundtrip(records, cf_consume(autocreate.bootstrap, topic, [0, 1, 2], len(records)), [0, 1, 2])
