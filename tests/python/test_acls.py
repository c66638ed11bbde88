"""ACLs through confluent-kafka's AdminClient (create_acls, describe_acls, delete_acls)
against a broker with Kafka's StandardAuthorizer and SASL/PLAIN users; the clients keep
their defaults apart from the credentials."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType)

from broker_process import Broker
from e2e_helpers import unique_topic

JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        'user_admin="admin-secret" user_alice="alice-secret";')


@pytest.fixture
def secured(broker_factory) -> Broker:
    data_dir = broker_factory.new_data_dir()
    b = Broker(data_dir, {
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin",
    }, log_path=broker_factory.base_dir / "secured.stderr.log",
        listeners="SASL_PLAINTEXT://127.0.0.1:0")
    broker_factory.brokers.append(b)
    return b.start()


def conf(b: Broker, user: str) -> dict:
    return {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": f"{user}-secret"}


def produce_one(c: dict, topic: str):
    """None once delivered, else the delivery error."""
    outcome = []
    p = Producer(c)
    p.produce(topic, b"v", on_delivery=lambda err, msg: outcome.append(err))
    p.flush(30)
    assert len(outcome) == 1
    return outcome[0]


def test_confluent_kafka_manages_acls_that_decide(secured):
    topic = unique_topic("acl")
    admin = AdminClient(conf(secured, "admin"))
    alice_admin = AdminClient(conf(secured, "alice"))
    admin.create_topics([NewTopic(topic, 1)])[topic].result(30)

    # Deny by default.
    err = produce_one(conf(secured, "alice"), topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err

    write = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*",
                       AclOperation.WRITE, AclPermissionType.ALLOW)
    read = AclBinding(ResourceType.TOPIC, topic[:4], ResourcePatternType.PREFIXED, "User:alice",
                      "*", AclOperation.READ, AclPermissionType.ALLOW)
    group = AclBinding(ResourceType.GROUP, "alice-", ResourcePatternType.PREFIXED, "User:alice",
                       "*", AclOperation.READ, AclPermissionType.ALLOW)
    # Only ALTER on the cluster creates ACLs.
    with pytest.raises(KafkaException) as refused:
        alice_admin.create_acls([write])[write].result(30)
    assert refused.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    for binding, future in admin.create_acls([write, read, group]).items():
        assert future.result(30) is None, binding

    assert produce_one(conf(secured, "alice"), topic) is None
    consumer = Consumer({**conf(secured, "alice"), "group.id": "alice-readers",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = None
    for _ in range(150):
        m = consumer.poll(0.2)
        if m is not None:
            assert m.error() is None, m.error()
            got = m.value()
            break
    consumer.close()
    assert got == b"v"

    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    described = admin.describe_acls(everything).result(30)
    assert set(described) == {write, read, group}
    matching = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.MATCH, None, None,
                                AclOperation.ANY, AclPermissionType.ANY)
    assert set(admin.describe_acls(matching).result(30)) == {write, read}

    only_write = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL,
                                  "User:alice", None, AclOperation.WRITE, AclPermissionType.ALLOW)
    deleted = admin.delete_acls([only_write])[only_write].result(30)
    assert deleted == [write]
    err = produce_one(conf(secured, "alice"), topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
