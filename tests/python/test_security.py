"""Listener security with real clients: confluent-kafka (librdkafka) and kafka-python produce and
consume over SASL_SSL (SCRAM-SHA-512 and PLAIN) and over SSL with client certificates, and each
client gets its proper error when it is refused: a wrong password, an unknown user, a broker
certificate it does not trust, no client certificate where one is required, plaintext on a TLS
port. After every refusal the broker goes on serving good clients.

The clients keep their defaults apart from the security settings (host name verification stays
on: the broker's certificate names DNS:localhost and IP:127.0.0.1, the clients dial 127.0.0.1).
The certificates are made with the openssl command line in a temporary directory. One broker
serves the whole module with three listeners: PLAINTEXT on port 0 (the port the broker
announces; the vltava CLI creates the SCRAM user through it), SASL_SSL and SSL (client
certificates required) on ports picked here, since the broker announces only its first listener.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import Broker, BrokerFactory, vltava_bin
from e2e_helpers import RDKAFKA_LOGGER, unique_topic, wait_until

PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'user_alice="alice-secret";')
# Users with a good password: alice from the JAAS config above, bob made with `vltava user scram`.
GOOD = {"PLAIN": ("alice", "alice-secret"), "SCRAM-SHA-512": ("bob", "bob-secret")}
RECORDS = 5


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------

@dataclass
class Pki:
    ca: Path  # the CA that signed the broker's and the client's certificates
    keystore: Path  # the broker's certificate and its unencrypted private key, PEM
    client_cert: Path  # subject CN=alice,O=Vltava, signed by ``ca``
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting only it, a client trusts no broker


def _openssl(cwd: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"openssl {' '.join(args)} failed:\n{done.stderr}"


def _make_ca(d: Path, name: str, subject: str) -> None:
    _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", subject,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _sign(d: Path, name: str, subject: str, extensions: str) -> None:
    _openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    (d / f"{name}.ext").write_text(extensions)
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca", "/CN=Vltava test CA")
    _make_ca(d, "other-ca", "/CN=Somebody else's CA")
    _sign(d, "server", "/CN=localhost",
          "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    _sign(d, "client", "/O=Vltava/CN=alice",
          "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
          "extendedKeyUsage=clientAuth\n")
    keystore = d / "broker-keystore.pem"
    keystore.write_text((d / "server.pem").read_text() + (d / "server.key").read_text())
    return Pki(ca=d / "ca.pem", keystore=keystore, client_cert=d / "client.pem",
               client_key=d / "client.key", other_ca=d / "other-ca.pem")


# ---------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def address(b: Broker, listener: str) -> str:
    """HOST:PORT of the broker's listener named ``listener``."""
    for entry in b.listeners.split(","):
        name, _, hostport = entry.partition("://")
        if name == listener:
            return hostport
    raise KeyError(listener)


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLTAVA_")}
    return subprocess.run([str(vltava_bin()), *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory, pki) -> Iterable[Broker]:
    factory = BrokerFactory(tmp_path_factory.mktemp("vltava-security"))
    overrides = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.ca),
        "listener.name.ssl.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN_JAAS,
    }
    b = None
    for attempt in range(3):  # another process may take a picked port before the broker binds it
        sasl_ssl_port, ssl_port = _free_ports(2)
        data_dir = factory.new_data_dir()
        b = Broker(data_dir, overrides, log_path=factory.base_dir / f"{data_dir.name}.stderr.log",
                   listeners=(f"PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:{sasl_ssl_port},"
                              f"SSL://127.0.0.1:{ssl_port}"))
        factory.brokers.append(b)
        try:
            b.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
    user, password = GOOD["SCRAM-SHA-512"]
    done = _cli("user", "scram", "set", user, "--mechanism", "SCRAM-SHA-512", "--password-stdin",
                "-b", b.bootstrap, stdin=password + "\n")
    assert done.returncode == 0, f"vltava user scram set: {done.stdout}{done.stderr}"
    # The credential is in the metadata log once the CLI returns; wait until the SASL_SSL
    # listener accepts it.
    scram = AdminClient(cf_sasl(b, pki, "SCRAM-SHA-512", user, password))
    wait_until(lambda: scram.list_topics(timeout=5), 30, what="bob's SCRAM login over SASL_SSL")
    yield b
    factory.close()  # raises if the broker died, exited non-zero or hung at shutdown


# ---------------------------------------------------------------------------
# confluent-kafka
# ---------------------------------------------------------------------------

def cf_sasl(b: Broker, pki: Pki, mechanism: str, user: str, password: str,
            ca: Optional[Path] = None) -> dict:
    return {"bootstrap.servers": address(b, "SASL_SSL"), "security.protocol": "SASL_SSL",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(ca or pki.ca), "logger": RDKAFKA_LOGGER}


def cf_mtls(b: Broker, pki: Pki, ca: Optional[Path] = None, certificate: bool = True) -> dict:
    conf = {"bootstrap.servers": address(b, "SSL"), "security.protocol": "SSL",
            "ssl.ca.location": str(ca or pki.ca), "logger": RDKAFKA_LOGGER}
    if certificate:
        conf.update({"ssl.certificate.location": str(pki.client_cert),
                     "ssl.key.location": str(pki.client_key)})
    return conf


def cf_good(b: Broker, pki: Pki, kind: str) -> dict:
    if kind == "SSL":
        return cf_mtls(b, pki)
    return cf_sasl(b, pki, kind, *GOOD[kind])


def cf_round_trip(conf: dict, n: int = RECORDS) -> None:
    """Creates a one-partition topic, produces ``n`` records and reads them back in order."""
    topic = unique_topic("sec-cf")
    admin = AdminClient(conf)  # kept: the futures fail if their client is destroyed
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    sent = [(f"k{i}".encode(), f"secret-{i}".encode()) for i in range(n)]
    reports = []
    producer = Producer(conf)
    for key, value in sent:
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert producer.flush(30) == 0, "records still undelivered after 30 s"
    assert [err for err, _ in reports] == [None] * n, reports
    assert [offset for _, offset in reports] == list(range(n))

    # group.id is mandatory; assign() reads from the start without a group rebalance.
    consumer = Consumer({**conf, "group.id": f"{topic}-readers"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        m = consumer.poll(0.2)
        if m is not None:
            assert m.error() is None, m.error()
            got.append((m.key(), m.value(), m.offset()))
    consumer.close()
    assert got == [(k, v, i) for i, (k, v) in enumerate(sent)]


@pytest.mark.parametrize("kind", ["SCRAM-SHA-512", "PLAIN", "SSL"])
def test_confluent_kafka_round_trip(secure_broker, pki, kind):
    cf_round_trip(cf_good(secure_broker, pki, kind))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Refusal:
    metadata_error: KafkaError  # what AdminClient.list_topics raised
    errors: list  # KafkaErrors given to error_cb
    log: list  # librdkafka's log lines

    def codes(self) -> set:
        return {e.code() for e in self.errors}

    def texts(self, code: int) -> list[str]:
        return [e.str() for e in self.errors if e.code() == code]


def cf_refused(conf: dict, until: int, name: str, timeout: float = 15.0) -> Refusal:
    """An AdminClient of ``conf`` fails to read metadata; its error_cb is served until an error
    with code ``until`` arrives (or ``timeout`` passes)."""
    errors: list = []
    records = _Records()
    logger = logging.getLogger(f"librdkafka.refused.{name}")
    logger.setLevel(logging.INFO)
    logger.addHandler(records)
    try:
        admin = AdminClient({**conf, "error_cb": errors.append, "logger": logger})
        deadline = time.monotonic() + timeout
        while until not in {e.code() for e in errors} and time.monotonic() < deadline:
            admin.poll(0.1)
        with pytest.raises(KafkaException) as failed:
            admin.list_topics(timeout=1)
        admin.poll(0.1)
    finally:
        logger.removeHandler(records)
    return Refusal(failed.value.args[0], errors, records.lines)


def _bad_sasl(mechanism: str, user: str, password: str):
    return lambda b, pki: cf_sasl(b, pki, mechanism, user, password)


CF_REFUSALS = {
    # name: (client config, the listener a good client checks afterwards)
    "scram-wrong-password": (_bad_sasl("SCRAM-SHA-512", "bob", "wrong"), "SCRAM-SHA-512"),
    "scram-unknown-user": (_bad_sasl("SCRAM-SHA-512", "mallory", "bob-secret"), "SCRAM-SHA-512"),
    "plain-wrong-password": (_bad_sasl("PLAIN", "alice", "wrong"), "PLAIN"),
    "plain-unknown-user": (_bad_sasl("PLAIN", "mallory", "alice-secret"), "PLAIN"),
}


@pytest.mark.parametrize("case", list(CF_REFUSALS))
def test_confluent_kafka_bad_credentials_are_refused(secure_broker, pki, case):
    make, good = CF_REFUSALS[case]
    r = cf_refused(make(secure_broker, pki), KafkaError._AUTHENTICATION, case)
    # librdkafka answers a metadata call that found no usable broker with _TRANSPORT; the cause
    # comes through error_cb.
    assert r.metadata_error.code() == KafkaError._TRANSPORT, r.metadata_error
    assert KafkaError._AUTHENTICATION in r.codes(), r.errors
    assert r.codes() <= {KafkaError._AUTHENTICATION, KafkaError._ALL_BROKERS_DOWN}, r.errors
    assert all("SASL authentication error" in t for t in r.texts(KafkaError._AUTHENTICATION)), r.errors
    assert_still_serves(secure_broker, pki, good)


def test_confluent_kafka_refuses_an_untrusted_broker_certificate(secure_broker, pki):
    for name, conf, good in [
        ("sasl_ssl-untrusted", cf_sasl(secure_broker, pki, "PLAIN", *GOOD["PLAIN"], ca=pki.other_ca),
         "PLAIN"),
        ("ssl-untrusted", cf_mtls(secure_broker, pki, ca=pki.other_ca), "SSL"),
    ]:
        r = cf_refused(conf, KafkaError._SSL, name)
        assert r.metadata_error.code() == KafkaError._TRANSPORT, (name, r.metadata_error)
        assert KafkaError._SSL in r.codes(), (name, r.errors)
        assert all("certificate verify failed" in t for t in r.texts(KafkaError._SSL)), (name, r.errors)
        # librdkafka reports a handshake that fails in its first SSL_connect() call, made right
        # after the TCP connect, as _TRANSPORT (same OpenSSL reason), one that fails later in the
        # handshake as _SSL; which one an attempt gives depends on timing.
        assert all("certificate verify failed" in t for t in r.texts(KafkaError._TRANSPORT)), (name, r.errors)
        assert r.codes() <= {KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}, (
            name, r.errors)
        assert_still_serves(secure_broker, pki, good)


def test_confluent_kafka_needs_a_client_certificate(secure_broker, pki):
    # TLS 1.3: the client finishes its handshake before the broker checks for a certificate; the
    # broker's "certificate required" alert fails the client's first read (_TRANSPORT).
    r = cf_refused(cf_mtls(secure_broker, pki, certificate=False), KafkaError._TRANSPORT, "no-cert")
    assert r.metadata_error.code() == KafkaError._TRANSPORT, r.metadata_error
    assert r.codes() <= {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}, r.errors
    assert r.texts(KafkaError._TRANSPORT), r.errors
    assert all("certificate required" in t for t in r.texts(KafkaError._TRANSPORT)), r.errors
    assert_still_serves(secure_broker, pki, "SSL")


@pytest.mark.parametrize("listener,good", [("SSL", "SSL"), ("SASL_SSL", "PLAIN")])
def test_confluent_kafka_plaintext_on_a_tls_port_is_refused(secure_broker, pki, listener, good):
    conf = {"bootstrap.servers": address(secure_broker, listener), "logger": RDKAFKA_LOGGER}
    r = cf_refused(conf, KafkaError._ALL_BROKERS_DOWN, f"plaintext-{listener}")
    # A closed connection is no error librdkafka passes to error_cb (it logs it at info level):
    # the application sees only "all brokers down" and the failed metadata call.
    assert r.metadata_error.code() == KafkaError._TRANSPORT, r.metadata_error
    assert r.codes() == {KafkaError._ALL_BROKERS_DOWN}, r.errors
    closed = [line for line in r.log if "Disconnected" in line and "APIVERSION_QUERY" in line]
    assert closed, r.log
    assert_still_serves(secure_broker, pki, good)


def assert_still_serves(b: Broker, pki: Pki, kind: str) -> None:
    """A good client of listener ``kind`` reads metadata, which names that listener."""
    assert b.alive(), "the broker exited"
    conf = cf_good(b, pki, kind)
    md = AdminClient(conf).list_topics(timeout=15)
    assert [f"{m.host}:{m.port}" for m in md.brokers.values()] == [conf["bootstrap.servers"]], md.brokers


# ---------------------------------------------------------------------------
# kafka-python
# ---------------------------------------------------------------------------

def kp_sasl(b: Broker, pki: Pki, mechanism: str, user: str, password: str,
            ca: Optional[Path] = None) -> dict:
    return dict(bootstrap_servers=address(b, "SASL_SSL"), security_protocol="SASL_SSL",
                sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password,
                ssl_cafile=str(ca or pki.ca))


def kp_mtls(b: Broker, pki: Pki, ca: Optional[Path] = None, certificate: bool = True) -> dict:
    conf = dict(bootstrap_servers=address(b, "SSL"), security_protocol="SSL",
                ssl_cafile=str(ca or pki.ca))
    if certificate:
        conf.update(ssl_certfile=str(pki.client_cert), ssl_keyfile=str(pki.client_key))
    return conf


def kp_good(b: Broker, pki: Pki, kind: str) -> dict:
    if kind == "SSL":
        return kp_mtls(b, pki)
    return kp_sasl(b, pki, kind, *GOOD[kind])


def kp_round_trip(conf: dict, n: int = RECORDS) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KpTopicPartition
    from kafka.admin import NewTopic as KpNewTopic

    topic = unique_topic("sec-kp")
    admin = KafkaAdminClient(**conf)
    try:
        admin.create_topics([KpNewTopic(topic, 1, 1)])
    finally:
        admin.close()
    sent = [(f"k{i}".encode(), f"secret-{i}".encode()) for i in range(n)]
    producer = KafkaProducer(**conf)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in sent]
        offsets = [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close()
    assert offsets == list(range(n))

    consumer = KafkaConsumer(**conf)
    try:
        tp = KpTopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                got.extend((r.key, r.value, r.offset) for r in records)
    finally:
        consumer.close()
    assert got == [(k, v, i) for i, (k, v) in enumerate(sent)]


@pytest.mark.parametrize("kind", ["SCRAM-SHA-512", "PLAIN", "SSL"])
def test_kafka_python_round_trip(secure_broker, pki, kind):
    kp_round_trip(kp_good(secure_broker, pki, kind))


def test_kafka_python_refusals(secure_broker, pki, caplog):
    """kafka-python retries a failed bootstrap connection until bootstrap_timeout_ms (30 s by
    default) and then raises KafkaTimeoutError("Unable to bootstrap from ..."), whatever the
    cause; the cause is in its log. The cases run at once so the test waits 30 s, not 30 s each.
    """
    import kafka.errors as Errors
    from kafka import KafkaAdminClient

    b = secure_broker
    cases = {
        "scram-wrong-password": kp_sasl(b, pki, "SCRAM-SHA-512", "bob", "wrong"),
        "scram-unknown-user": kp_sasl(b, pki, "SCRAM-SHA-512", "mallory", "bob-secret"),
        "plain-wrong-password": kp_sasl(b, pki, "PLAIN", "alice", "wrong"),
        "plain-unknown-user": kp_sasl(b, pki, "PLAIN", "mallory", "alice-secret"),
        "sasl_ssl-untrusted": kp_sasl(b, pki, "PLAIN", *GOOD["PLAIN"], ca=pki.other_ca),
        "ssl-untrusted": kp_mtls(b, pki, ca=pki.other_ca),
        "ssl-no-certificate": kp_mtls(b, pki, certificate=False),
        "plaintext-on-ssl": dict(bootstrap_servers=address(b, "SSL")),
        "plaintext-on-sasl_ssl": dict(bootstrap_servers=address(b, "SASL_SSL")),
    }

    def attempt(conf: dict):
        try:
            KafkaAdminClient(**conf).close()
        except Exception as e:  # noqa: BLE001 - asserted below
            return e
        return None

    caplog.set_level(logging.INFO, logger="kafka")
    with ThreadPoolExecutor(len(cases)) as pool:
        outcomes = dict(zip(cases, pool.map(attempt, cases.values())))

    for name, outcome in outcomes.items():
        expected = (Errors.KafkaTimeoutError,)
        if "password" in name or "user" in name:
            # kafka-python 3.0.12 raises SaslAuthenticationFailedError only if it has read the
            # broker's SaslAuthenticate error response. The broker sends it (error 58,
            # SASL_AUTHENTICATION_FAILED, "Authentication failed: ...") and closes the connection
            # right after, as Kafka does once connection.failed.authentication.delay.ms has
            # passed. The client reads response and end of stream in one go and drops the
            # response (kafka/net/transport.py: _read_from_sock aborts on the end of stream
            # without handing on what _sock_recv read before it), so it logs only "socket
            # disconnected". So for bad credentials, too, it gives in practice only the
            # generic bootstrap timeout; should it ever read the response first, it raises the
            # proper error.
            expected += (Errors.SaslAuthenticationFailedError,)
        assert isinstance(outcome, expected), (name, outcome)
        if isinstance(outcome, Errors.KafkaTimeoutError):
            assert "Unable to bootstrap" in str(outcome), (name, outcome)

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("kafka")]
    # Only the clients that trust another CA can log this: they refuse the broker's certificate.
    assert any("CERTIFICATE_VERIFY_FAILED" in line for line in lines)
    # Only the client without a certificate on the SSL listener: the broker's TLS 1.3 alert.
    assert any("TLSV13_ALERT_CERTIFICATE_REQUIRED" in line for line in lines)
    # Only the plaintext clients use a TCP transport: the broker closes their connections.
    assert any("KafkaTCPTransport" in line and "socket disconnected" in line for line in lines)

    assert b.alive(), "the broker exited"
    for kind in ("SCRAM-SHA-512", "PLAIN", "SSL"):
        kp_round_trip(kp_good(b, pki, kind), n=2)
