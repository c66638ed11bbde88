"""Old-client compatibility: Debian's kcat (librdkafka 2.0.2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import defaultdict

import pytest

from e2e_helpers import COMPRESSIONS, cf_create_topic, unique_topic

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
PARTITIONS = [0, 1, 2]
N_LINES = 3000
SEP = "\x1f"  # unit separator: never appears in the test data

pytestmark = pytest.mark.skipif(not shutil.which(KCAT), reason="kcat is not installed (apt-get install kcat)")


def kcat(broker, *args, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [KCAT, "-b", broker.bootstrap, "-X", "socket.timeout.ms=30000", *args]
    proc = subprocess.run(cmd, input=stdin.encode() if stdin is not None else None,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\nstderr:\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc


def kcat_produce(broker, topic: str, lines: list[str], compression: str, headers: list[str]):
    args = ["-P", "-t", topic, "-K:", "-X", "acks=all"]
    if compression != "none":
        args += ["-z", compression]
    for h in headers:
        args += ["-H", h]
    kcat(broker, *args, stdin="".join(f"{line}\n" for line in lines))


def kcat_consume(broker, topic: str) -> list[dict]:
    fmt = SEP.join(["%p", "%o", "%k", "%s", "%h", "%T"]) + "\n"
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", fmt).stdout.decode()
    rows = []
    for line in out.splitlines():
        p, o, k, s, h, ts = line.split(SEP)
        rows.append({"partition": int(p), "offset": int(o), "key": k, "value": s, "headers": h, "ts": int(ts)})
    return rows


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_kcat_roundtrip(broker, compression):
    topic = unique_topic(f"kcat-{compression}")
    cf_create_topic(broker.bootstrap, topic, partitions=len(PARTITIONS))

    lines = [f"k{i % 97}:v{i:05d}-{compression}-" + "xyz" * (i % 29) for i in range(N_LINES)]
    headers = ["src=kcat", f"codec={compression}", "dup=a", "dup=b"]
    t0 = int(time.time() * 1000)
    kcat_produce(broker, topic, lines, compression, headers)
    t1 = int(time.time() * 1000)

    rows = kcat_consume(broker, topic)
    assert len(rows) == N_LINES, f"produced {N_LINES} lines, consumed {len(rows)}"
    expected = {line.split(":", 1)[1]: line.split(":", 1)[0] for line in lines}
    assert sorted(r["value"] for r in rows) == sorted(expected), "values differ"
    by_part = defaultdict(list)
    key_parts = defaultdict(set)
    for r in rows:
        assert r["key"] == expected[r["value"]], r
        assert r["headers"] == ",".join(headers), r
        assert t0 - 1000 <= r["ts"] <= t1 + 1000, f"CreateTime {r['ts']} outside [{t0}, {t1}]"
        by_part[r["partition"]].append(r)
        key_parts[r["key"]].add(r["partition"])
    assert set(by_part) == set(PARTITIONS), f"partitions used: {sorted(by_part)}"
    for p, rs in by_part.items():
        assert [r["offset"] for r in rs] == list(range(len(rs))), f"partition {p}: offsets not dense/in order"
        seq = [int(r["value"][1:6]) for r in rs]
        assert seq == sorted(seq), f"partition {p}: records out of produce order"
    assert all(len(ps) == 1 for ps in key_parts.values()), "a key landed in two partitions"


def test_kcat_auto_create(broker):
    """A produce to a topic nobody created goes through Metadata auto-creation."""
    topic = unique_topic("kcat-auto")
    kcat_produce(broker, topic, [f"key{i}:value{i}" for i in range(50)], "none", [])
    rows = kcat_consume(broker, topic)
    assert sorted(r["value"] for r in rows) == sorted(f"value{i}" for i in range(50))


def test_kcat_metadata_listing(broker):
    topic = unique_topic("kcat-meta")
    cf_create_topic(broker.bootstrap, topic, partitions=3)

    text = kcat(broker, "-L").stdout.decode()
    assert "1 brokers:" in text, text
    assert f"at {broker.host}:{broker.port}" in text, text
    assert f'topic "{topic}" with 3 partitions:' in text, text

    md = json.loads(kcat(broker, "-L", "-J", "-t", topic).stdout)
    assert [b["name"] for b in md["brokers"]] == [f"{broker.host}:{broker.port}"], md
    broker_id = md["brokers"][0]["id"]
    (t,) = md["topics"]
    assert t["topic"] == topic and "error" not in t, t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    for p in t["partitions"]:
        assert p["leader"] == broker_id, p
        assert [r["id"] for r in p["replicas"]] == [broker_id], p
        assert [r["id"] for r in p["isrs"]] == [broker_id], p


def test_kcat_query_offsets(broker):
    """kcat -Q: ListOffsets by timestamp through the old client."""
    topic = unique_topic("kcat-query")
    cf_create_topic(broker.bootstrap, topic, partitions=1)
    kcat_produce(broker, topic, [f"k:v{i}" for i in range(10)], "gzip", [])
    rows = kcat_consume(broker, topic)
    ts = rows[0]["ts"]
    out = kcat(broker, "-Q", "-t", f"{topic}:0:{ts}").stdout.decode()
    # e.g. "topic-x [0] offset 0"
    assert f"{topic} [0] offset 0" in out, out
