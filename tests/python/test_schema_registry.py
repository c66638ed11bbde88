"""confluent-kafka's SchemaRegistryClient and Avro serializers, with their default settings
(auto-registration on), against `vltava registry` and a Vltava broker."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import threading

import pytest

from broker_process import vltava_bin
from e2e_helpers import RDKAFKA_LOGGER, cf_create_topic, unique_topic

LISTENING_RE = re.compile(r"^vltava registry: listening on (http://[\d.]+:\d+)\s*$")

USER_V1 = """{"type": "record", "name": "User", "namespace": "shop",
  "fields": [{"name": "name", "type": "string"}, {"name": "visits", "type": "int"}]}"""
USER_V2 = """{"type": "record", "name": "User", "namespace": "shop",
  "fields": [{"name": "name", "type": "string"}, {"name": "visits", "type": "int"},
             {"name": "email", "type": ["null", "string"], "default": null}]}"""
USER_BREAKING = """{"type": "record", "name": "User", "namespace": "shop",
  "fields": [{"name": "name", "type": "string"}, {"name": "visits", "type": "int"},
             {"name": "country", "type": "string"}]}"""


class Registry:
    """One `vltava registry` process on an ephemeral port."""

    def __init__(self, bootstrap: str, log_path):
        self.bootstrap = bootstrap
        self.log_path = log_path
        self.proc = None
        self.url = None

    def start(self, timeout: float = 60.0) -> "Registry":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(vltava_bin()), "registry", "--bootstrap-server", self.bootstrap,
             "--listeners", "http://127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ, NO_COLOR="1"))
        found = {}
        ready = threading.Event()

        def read_stdout():
            for line in self.proc.stdout:
                m = LISTENING_RE.match(line)
                if m and not ready.is_set():
                    found["url"] = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        assert ready.wait(timeout) and "url" in found, "registry did not start; see " + str(self.log_path)
        self.url = found["url"]
        return self

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def registry_factory(broker, tmp_path):
    started = []

    def start() -> Registry:
        r = Registry(broker.bootstrap, tmp_path / f"registry-{len(started)}.log").start()
        started.append(r)
        return r

    yield start
    for r in started:
        if r.proc.poll() is None:
            assert r.stop() == 0


def produce(bootstrap, topic, serializer, values):
    from confluent_kafka import Producer
    from confluent_kafka.serialization import MessageField, SerializationContext

    p = Producer({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOGGER})
    for v in values:
        p.produce(topic, value=serializer(v, SerializationContext(topic, MessageField.VALUE)))
    assert p.flush(30) == 0


def consume_raw(bootstrap, topic, n):
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("sr-group"),
                  "auto.offset.reset": "earliest", "logger": RDKAFKA_LOGGER})
    c.subscribe([topic])
    out = []
    try:
        while len(out) < n:
            m = c.poll(30)
            assert m is not None, f"only {len(out)} of {n} records arrived"
            assert m.error() is None, m.error()
            out.append(m.value())
    finally:
        c.close()
    return out


def deserialize(client, topic, raw):
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    d = AvroDeserializer(client)
    return [d(b, SerializationContext(topic, MessageField.VALUE)) for b in raw]


def test_avro_round_trip_evolution_and_restart(broker, registry_factory):
    from confluent_kafka.schema_registry import SchemaRegistryClient, Schema
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    topic = unique_topic("sr-avro")
    cf_create_topic(broker.bootstrap, topic, partitions=1)
    registry = registry_factory()
    client = SchemaRegistryClient({"url": registry.url})

    # The serializer registers USER_V1 under <topic>-value on first use.
    v1_values = [{"name": f"user-{i}", "visits": i} for i in range(20)]
    produce(broker.bootstrap, topic, AvroSerializer(client, USER_V1), v1_values)
    latest = client.get_latest_version(f"{topic}-value")
    assert latest.version == 1
    v1_id = latest.schema_id

    # A compatible evolution gets a new id and version 2.
    v2_values = [{"name": "late", "visits": 1, "email": "late@example.com"}]
    produce(broker.bootstrap, topic, AvroSerializer(client, USER_V2), v2_values)
    # (A fresh client: SchemaRegistryClient caches get_latest_version.)
    latest = SchemaRegistryClient({"url": registry.url}).get_latest_version(f"{topic}-value")
    assert latest.version == 2 and latest.schema_id != v1_id
    v2_id = latest.schema_id

    # An incompatible one is refused with Confluent's 409.
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(f"{topic}-value", Schema(USER_BREAKING, "AVRO"))
    assert err.value.http_status_code == 409 and err.value.error_code == 409
    assert not client.test_compatibility(f"{topic}-value", Schema(USER_BREAKING, "AVRO"))

    raw = consume_raw(broker.bootstrap, topic, len(v1_values) + len(v2_values))
    # Confluent's framing: magic byte 0, then the schema id as a 4-byte big-endian integer.
    ids = [struct.unpack(">bI", b[:5]) for b in raw]
    assert ids == [(0, v1_id)] * len(v1_values) + [(0, v2_id)] * len(v2_values)
    assert deserialize(client, topic, raw) == v1_values + v2_values

    # Restart: a fresh registry and a fresh client (no cache) read everything back from
    # the _schemas topic, and the old records still deserialize.
    assert registry.stop() == 0
    registry = registry_factory()
    fresh = SchemaRegistryClient({"url": registry.url})
    assert fresh.get_versions(f"{topic}-value") == [1, 2]
    assert fresh.get_latest_version(f"{topic}-value").schema_id == v2_id
    assert deserialize(fresh, topic, raw) == v1_values + v2_values
    # Registering V1 again returns its old id.
    assert fresh.register_schema(f"{topic}-value", Schema(USER_V1, "AVRO")) == v1_id


def test_client_api_config_mode_and_delete(broker, registry_factory):
    from confluent_kafka.schema_registry import SchemaRegistryClient, Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    registry = registry_factory()
    client = SchemaRegistryClient({"url": registry.url})
    subject = unique_topic("sr-api") + "-value"

    sid = client.register_schema(subject, Schema('"string"', "AVRO"))
    assert client.get_schema(sid).schema_str == '"string"'
    assert subject in client.get_subjects()
    assert client.lookup_schema(subject, Schema('"string"', "AVRO")).version == 1

    assert client.set_compatibility(subject, "NONE")["compatibility"] == "NONE"
    assert client.get_compatibility(subject) == "NONE"
    assert client.register_schema(subject, Schema('"int"', "AVRO")) != sid

    json_id = client.register_schema(subject + "-json",
                                     Schema('{"type": "object", "properties": {"a": {"type": "string"}}}', "JSON"))
    assert client.get_schema(json_id).schema_type == "JSON"
    proto_id = client.register_schema(subject + "-proto",
                                      Schema('syntax = "proto3"; message M { string a = 1; }', "PROTOBUF"))
    assert client.get_schema(proto_id).schema_type == "PROTOBUF"

    assert client.delete_version(subject, 1) == 1
    assert client.get_versions(subject) == [2]
    assert client.delete_subject(subject) == [2]
    assert client.delete_subject(subject, permanent=True) == [1, 2]
    with pytest.raises(SchemaRegistryError) as err:
        client.get_versions(subject)
    assert err.value.error_code == 40401
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject, Schema('{"type": "nonsense"}', "AVRO"))
    assert err.value.error_code == 42201


def round_trip(broker, topic, serializer, deserializer, values):
    from confluent_kafka.serialization import MessageField, SerializationContext

    cf_create_topic(broker.bootstrap, topic, partitions=1)
    produce(broker.bootstrap, topic, serializer, values)
    raw = consume_raw(broker.bootstrap, topic, len(values))
    ctx = SerializationContext(topic, MessageField.VALUE)
    return raw, [deserializer(b, ctx) for b in raw]


ORDER_JSON = """{"$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
  "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}, "required": ["sku"]}"""


def test_json_schema_round_trip(broker, registry_factory):
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
    from confluent_kafka.serialization import SerializationError

    registry = registry_factory()
    client = SchemaRegistryClient({"url": registry.url})
    topic = unique_topic("sr-json")
    values = [{"sku": f"sku-{i}", "qty": i} for i in range(5)]
    serializer = JSONSerializer(ORDER_JSON, client)
    raw, got = round_trip(broker, topic, serializer, JSONDeserializer(ORDER_JSON, schema_registry_client=client),
                          values)
    assert got == values
    registered = client.get_latest_version(f"{topic}-value")
    assert registered.schema.schema_type == "JSON"
    assert {struct.unpack(">bI", b[:5]) for b in raw} == {(0, registered.schema_id)}
    # The serializer validates against the schema it registered.
    with pytest.raises(SerializationError):
        from confluent_kafka.serialization import MessageField, SerializationContext
        serializer({"qty": 1}, SerializationContext(topic, MessageField.VALUE))


def payment_class():
    """A Protobuf message class built at run time (no protoc here)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="shop/payment.proto", package="shop", syntax="proto3")
    fdp.dependency.append("google/protobuf/timestamp.proto")
    msg = fdp.message_type.add(name="Payment")
    f = descriptor_pb2.FieldDescriptorProto
    msg.field.add(name="id", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    msg.field.add(name="cents", number=2, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    msg.field.add(name="at", number=3, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                  type_name=".google.protobuf.Timestamp")
    pool = descriptor_pool.DescriptorPool()
    from google.protobuf import timestamp_pb2
    ts = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
    pool.Add(ts)
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Payment"))


def test_protobuf_round_trip(broker, registry_factory):
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer

    Payment = payment_class()
    registry = registry_factory()
    client = SchemaRegistryClient({"url": registry.url})
    topic = unique_topic("sr-proto")
    values = [Payment(id=f"p-{i}", cents=100 * i) for i in range(5)]
    for v in values:
        v.at.seconds = 1_700_000_000
    raw, got = round_trip(broker, topic, ProtobufSerializer(Payment, client),
                          ProtobufDeserializer(Payment, schema_registry_client=client), values)
    assert got == values
    registered = client.get_latest_version(f"{topic}-value")
    assert registered.schema.schema_type == "PROTOBUF"
    # Confluent's Protobuf framing: the id, then the message index list ([0] is one 0 byte).
    assert {b[:6] for b in raw} == {struct.pack(">bIb", 0, registered.schema_id, 0)}
    # The registry serves the descriptor back for clients that ask for it serialized.
    from google.protobuf import descriptor_pb2
    import base64
    served = client.get_schema(registered.schema_id, fmt="serialized")
    fdp = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(served.schema_str))
    assert [m.name for m in fdp.message_type] == ["Payment"]
