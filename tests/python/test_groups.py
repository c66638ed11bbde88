"""Consumer groups (classic protocol) end to end with kafka-python 3.x.

kafka-python's KafkaConsumer speaks the classic group protocol
(FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
OffsetFetch); its KafkaAdminClient covers ListGroups, DescribeGroups,
DeleteGroups and OffsetFetch for groups. In kafka-python 3.x the admin calls
are named ``list_groups`` / ``describe_groups`` / ``list_group_offsets`` /
``delete_groups`` (2.x: ``*_consumer_group*``).

A KafkaConsumer is not thread-safe and a classic rebalance needs every member
to keep polling (the coordinator parks JoinGroup until all members rejoin), so
each group member runs in its own thread (``Member``) and the test thread only
looks at snapshots.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from e2e_helpers import unique_topic, wait_until

PARTITIONS = 4
N_RECORDS = 2000
TEST_TIMEOUT = 90  # pytest-timeout ceiling per test (each runs in well under 60 s)


def kp_admin(bootstrap: str):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000,
                            client_id="vltava-e2e-groups-admin")


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = kp_admin(bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}},
                            wait_for_metadata=True)
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> dict[int, list[int]]:
    """Produce (partition, value) pairs with acks=all; return the offsets per partition."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             linger_ms=5, request_timeout_ms=30000, max_block_ms=30000)
    try:
        futures = [(p, producer.send(topic, value=v, partition=p)) for p, v in values]
        producer.flush(timeout=60)
        offsets: dict[int, list[int]] = {}
        for p, fut in futures:
            md = fut.get(timeout=30)
            assert md.partition == p
            offsets.setdefault(p, []).append(md.offset)
    finally:
        producer.close(timeout=30)
    return offsets


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        ends = c.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        c.close()


def committed_offsets(admin, group: str) -> dict[tuple[str, int], int]:
    """OffsetFetch (all topics) through the admin client: {(topic, partition): offset}."""
    per_group = admin.list_group_offsets({group: None})
    return {(tp.topic, tp.partition): om.offset for tp, om in per_group[group].items()}


def listed_group_ids(admin) -> set[str]:
    return {g["group_id"] for g in admin.list_groups()}


class Member(threading.Thread):
    """One group member: a KafkaConsumer polling in its own thread.

    Every polled batch is recorded and committed synchronously (commit()
    with the consumed positions) before the next poll, so once a record is
    seen here its offset commit has been sent. ``stop()`` closes the consumer
    (LeaveGroup) from the member's own thread.
    """

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, **overrides):
        super().__init__(name=name, daemon=True)
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.overrides = overrides
        self.lock = threading.Lock()
        self.records: list[tuple[int, int, bytes]] = []  # (partition, offset, value)
        self.assignment: frozenset[int] = frozenset()
        self.assignment_history: list[frozenset[int]] = []
        self.errors: list[BaseException] = []
        self.commits = 0
        self._stop_flag = threading.Event()
        self.closed = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        conf = dict(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=f"vltava-e2e-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10000,
            heartbeat_interval_ms=500,
            max_poll_interval_ms=30000,
            fetch_max_wait_ms=100,
            request_timeout_ms=30000,
        )
        conf.update(self.overrides)
        consumer = None
        try:
            consumer = KafkaConsumer(**conf)
            consumer.subscribe([self.topic])
            while not self._stop_flag.is_set():
                batch = consumer.poll(timeout_ms=200, max_records=500)
                polled = [(m.partition, m.offset, m.value) for msgs in batch.values() for m in msgs]
                assigned = frozenset(tp.partition for tp in (consumer.assignment() or ()))
                if polled:
                    consumer.commit()  # the positions after this batch
                with self.lock:
                    self.records.extend(polled)
                    if polled:
                        self.commits += 1
                    if assigned != self.assignment:
                        self.assignment = assigned
                        self.assignment_history.append(assigned)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            try:
                if consumer is not None:
                    consumer.close(autocommit=False, timeout_ms=10000)
            except BaseException as exc:  # noqa: BLE001
                self.errors.append(exc)
            self.closed.set()

    # -- called from the test thread ----------------------------------------
    def snapshot(self):
        with self.lock:
            return self.assignment, list(self.records)

    def stop(self, timeout: float = 20.0) -> None:
        self._stop_flag.set()
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not close within {timeout}s"

    def check_errors(self) -> None:
        assert not self.errors, f"{self.name} failed: {self.errors!r}"


def wait_assignments(members: list[Member], expected_sizes: list[int], timeout: float = 30.0,
                     stable_for: float = 1.0):
    """Wait until the members' assignments have the given sizes, are disjoint
    and cover all partitions, and stay that way for ``stable_for`` seconds."""
    def settled():
        for m in members:
            m.check_errors()
        snaps = [m.snapshot()[0] for m in members]
        sizes = sorted(len(a) for a in snaps)
        union = frozenset().union(*snaps)
        if sizes == sorted(expected_sizes) and union == frozenset(range(PARTITIONS)) \
                and sum(sizes) == PARTITIONS:
            return snaps
        return None

    deadline = time.monotonic() + timeout
    while True:
        first = wait_until(settled, max(0.1, deadline - time.monotonic()), 0.1,
                           what=f"assignments of sizes {expected_sizes} covering {PARTITIONS} partitions "
                                f"(now {[sorted(m.snapshot()[0]) for m in members]}, history "
                                f"{[[sorted(a) for a in m.assignment_history] for m in members]})")
        time.sleep(stable_for)
        if settled() == first:
            return first
        if time.monotonic() >= deadline:
            raise AssertionError(f"assignments kept changing: {[m.assignment_history for m in members]}")


def wait_consumed(members: list[Member], expected: int, timeout: float = 30.0, settle: float = 1.5):
    """Wait until the members together hold ``expected`` records, then a bit
    longer to catch duplicates/extras."""
    def enough():
        for m in members:
            m.check_errors()
        return sum(len(m.snapshot()[1]) for m in members) >= expected

    try:
        wait_until(enough, timeout, 0.1, what=f"{expected} records consumed")
    except AssertionError:
        counts = {m.name: len(m.snapshot()[1]) for m in members}
        raise AssertionError(f"consumed {counts} (need {expected} in total) within {timeout}s") from None
    time.sleep(settle)
    for m in members:
        m.check_errors()


@pytest.mark.timeout(TEST_TIMEOUT)
def test_group_two_members_rebalance_commit_describe_delete(broker):
    """Two members split 4 partitions 2/2, consume 2000 records exactly once
    with commits; when one leaves the other takes all 4 and continues from
    the committed offsets; admin describe/list/offsets/delete agree."""
    topic = unique_topic("kp-grp")
    group = unique_topic("kp-grp-g")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    admin = kp_admin(broker.bootstrap)
    a = Member("a", broker.bootstrap, group, topic)
    b = Member("b", broker.bootstrap, group, topic)
    try:
        a.start()
        # Let the first member own everything before the second joins, so
        # the test goes through a real rebalance (4 -> 2/2).
        wait_assignments([a], [PARTITIONS])
        b.start()
        assign_a, assign_b = wait_assignments([a, b], [2, 2])
        assert not (assign_a & assign_b)

        # -- phase 1: 2000 records, exactly once across the two members ----
        values = [(i % PARTITIONS, f"r1-{i:05d}".encode()) for i in range(N_RECORDS)]
        produced = produce(broker.bootstrap, topic, values)
        assert {p: sorted(o) for p, o in produced.items()} == \
            {p: list(range(N_RECORDS // PARTITIONS)) for p in range(PARTITIONS)}
        wait_consumed([a, b], N_RECORDS)

        # The assignment did not move while consuming.
        assert a.snapshot()[0] == assign_a and b.snapshot()[0] == assign_b, \
            (a.assignment_history, b.assignment_history)
        recs_a, recs_b = a.snapshot()[1], b.snapshot()[1]
        assert {p for p, _, _ in recs_a} <= assign_a, "member a got records of partitions it does not own"
        assert {p for p, _, _ in recs_b} <= assign_b, "member b got records of partitions it does not own"
        both = recs_a + recs_b
        dup = [k for k, n in Counter((p, o) for p, o, _ in both).items() if n > 1]
        assert not dup, f"{len(dup)} records delivered more than once, e.g. {dup[:5]}"
        assert sorted(v for _, _, v in both) == sorted(v for _, v in values), \
            f"consumed {len(both)} records, not exactly the {N_RECORDS} produced"
        for p in range(PARTITIONS):
            offs = [o for q, o, _ in both if q == p]
            assert offs == list(range(N_RECORDS // PARTITIONS)), f"partition {p}: offsets not dense/in order"

        # Committed offsets (OffsetFetch) equal the end offsets.
        ends = end_offsets(broker.bootstrap, topic, PARTITIONS)
        assert ends == {p: N_RECORDS // PARTITIONS for p in range(PARTITIONS)}
        want = {(topic, p): e for p, e in ends.items()}
        wait_until(lambda: committed_offsets(admin, group) == want, 10,
                   what=f"committed offsets {want} (last: {committed_offsets(admin, group)})")

        # DescribeGroups: Stable, two members, their assignments as above.
        desc = admin.describe_groups([group])[group]
        assert desc["error"] is None, desc
        assert desc["group_state"] == "Stable", desc
        assert desc["protocol_type"] == "consumer", desc
        assert desc["protocol_data"] in ("range", "roundrobin"), desc
        members = desc["members"]
        assert len(members) == 2, members
        assert len({m["member_id"] for m in members}) == 2, members
        assert sorted(m["client_id"] for m in members) == ["vltava-e2e-a", "vltava-e2e-b"], members
        described_assignment = {}
        for m in members:
            assignment = m["member_assignment"]
            parts = set()
            for t in assignment["assigned_partitions"]:
                assert t["topic"] == topic, assignment
                parts |= set(t["partitions"])
            described_assignment[m["client_id"]] = frozenset(parts)
            assert list(m["member_metadata"]["topics"]) == [topic], m["member_metadata"]
        assert described_assignment == {"vltava-e2e-a": assign_a, "vltava-e2e-b": assign_b}, members

        # ListGroups shows it; DeleteGroups refuses a group with members.
        assert group in listed_group_ids(admin)
        assert admin.delete_groups([group]) == {group: "NonEmptyGroupError"}
        assert group in listed_group_ids(admin)

        # -- phase 2: b leaves, a takes over all four partitions -----------
        b.stop()
        b.check_errors()
        # Well within the 10 s session timeout: b's LeaveGroup triggered the
        # rebalance, not the coordinator expiring b.
        (assign_a,) = wait_assignments([a], [PARTITIONS], timeout=6.0)
        n_before = len(a.snapshot()[1])
        more = [(i % PARTITIONS, f"r2-{i:05d}".encode()) for i in range(400)]
        produce(broker.bootstrap, topic, more)
        wait_consumed([a], n_before + len(more))
        new = a.snapshot()[1][n_before:]
        # Nothing b had consumed (and committed) is re-delivered to a.
        assert sorted(v for _, _, v in new) == sorted(v for _, v in more), \
            f"after the rebalance a consumed {len(new)} records; first few: {new[:5]}"
        for p in range(PARTITIONS):
            offs = [o for q, o, _ in new if q == p]
            assert offs == list(range(500, 600)), f"partition {p}: offsets after takeover {offs[:5]}..."
        want = {(topic, p): 600 for p in range(PARTITIONS)}
        wait_until(lambda: committed_offsets(admin, group) == want, 10,
                   what=f"committed offsets {want} (last: {committed_offsets(admin, group)})")
        desc = admin.describe_groups([group])[group]
        assert desc["group_state"] == "Stable" and len(desc["members"]) == 1, desc
        assert desc["members"][0]["client_id"] == "vltava-e2e-a", desc

        # -- phase 3: all members gone; delete the group -------------------
        a.stop()
        a.check_errors()
        desc = admin.describe_groups([group])[group]
        assert desc["group_state"] == "Empty" and desc["members"] == [], desc
        assert group in listed_group_ids(admin)
        # Offsets survive the members.
        assert committed_offsets(admin, group) == want
        assert admin.delete_groups([group]) == {group: "OK"}
        assert group not in listed_group_ids(admin)
        assert committed_offsets(admin, group) == {}, "offsets survived DeleteGroups"
        desc = admin.describe_groups([group])[group]
        assert desc["group_state"] == "Dead" and desc["members"] == [], desc
        # Deleting it again: GROUP_ID_NOT_FOUND.
        assert admin.delete_groups([group]) == {group: "GroupIdNotFoundError"}
    finally:
        for m in (a, b):
            if m.is_alive():
                m._stop_flag.set()
                m.join(20)
        admin.close()


@pytest.mark.timeout(TEST_TIMEOUT)
def test_resume_from_committed_offset(broker):
    """A member commits explicit offsets and closes; the next member of the
    group starts exactly there (no redelivery before, nothing skipped)."""
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

    topic = unique_topic("kp-resume")
    group = unique_topic("kp-resume-g")
    n = 120
    create_topic(broker.bootstrap, topic, 3)
    produce(broker.bootstrap, topic, [(p, f"p{p}-{i:04d}".encode()) for p in range(3) for i in range(n)])
    # p0: mid-partition, p1: just after the first record, p2: at the end.
    commit_at = {0: 37, 1: 1, 2: n}
    tps = {p: TopicPartition(topic, p) for p in range(3)}

    def consumer():
        return KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest",  # a lost commit would re-deliver from 0
                             session_timeout_ms=10000, heartbeat_interval_ms=500,
                             fetch_max_wait_ms=100, request_timeout_ms=30000)

    def consume(c, expected: int, timeout: float = 30.0, settle: float = 1.5):
        got = []
        deadline = time.monotonic() + timeout
        settle_until = None
        while True:
            now = time.monotonic()
            if len(got) >= expected:
                settle_until = settle_until or now + settle
                if now >= settle_until:
                    break
            elif now >= deadline:
                break
            for msgs in c.poll(timeout_ms=200).values():
                got.extend((m.partition, m.offset, m.value) for m in msgs)
        return got

    admin = kp_admin(broker.bootstrap)
    first = consumer()
    try:
        first.subscribe([topic])
        got = consume(first, 3 * n)
        assert len(got) == 3 * n, f"first member consumed {len(got)} of {3 * n}"
        assert set(first.assignment()) == set(tps.values())
        first.commit({tps[p]: OffsetAndMetadata(k, f"at-{k}", -1) for p, k in commit_at.items()})
        assert {p: first.committed(tps[p]) for p in range(3)} == commit_at
    finally:
        first.close(autocommit=False)
    try:
        fetched = admin.list_group_offsets({group: None})[group]
        assert {tp.partition: (om.offset, om.metadata) for tp, om in fetched.items()} == \
            {p: (k, f"at-{k}") for p, k in commit_at.items()}

        second = consumer()
        try:
            second.subscribe([topic])
            expected = sum(n - k for k in commit_at.values())
            got = consume(second, expected)
            for p in range(3):
                offs = [o for q, o, _ in got if q == p]
                assert offs == list(range(commit_at[p], n)), (
                    f"partition {p}: committed {commit_at[p]}, resumed with offsets "
                    f"{offs[:5]}...{offs[-3:]} ({len(offs)} records)")
                assert [v for q, _, v in got if q == p] == \
                    [f"p{p}-{i:04d}".encode() for i in range(commit_at[p], n)]
            # The partition committed at its end is live: new records arrive.
            produce(broker.bootstrap, topic, [(2, f"p2-{i:04d}".encode()) for i in range(n, n + 10)])
            got = consume(second, 10)
            assert [(p, o) for p, o, _ in got] == [(2, o) for o in range(n, n + 10)], got
            second.commit()
        finally:
            second.close(autocommit=False)
        fetched = admin.list_group_offsets({group: None})[group]
        assert {tp.partition: om.offset for tp, om in fetched.items()} == {0: n, 1: n, 2: n + 10}
    finally:
        admin.close()
