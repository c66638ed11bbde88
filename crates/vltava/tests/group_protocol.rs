//! Group APIs on the wire, where client libraries hide the details: batched
//! FindCoordinator, the MEMBER_ID_REQUIRED join, generation fencing, bad commits, multi-group
//! OffsetFetch, ListGroups filters, a member that never rejoins, batched LeaveGroup,
//! session expiry, OffsetDelete, a later change of `offsets.topic.num.partitions`, a refused
//! join, and trimming of the offsets log.

use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use vltava_protocol::messages::create_topics_request::CreatableTopic;
use vltava_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use vltava_protocol::messages::leave_group_request::MemberIdentity;
use vltava_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use vltava_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use vltava_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use vltava_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, ErrorCode, StrBytes};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}
fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}
fn tname(v: &str) -> TopicName {
    TopicName(s(v))
}

/// Creates topic `t` with `partitions` partitions.
fn create_t(c: &mut RawClient, partitions: i32) {
    let mut t = CreatableTopic::default();
    t.name = tname("t");
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let r: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![t]),
    );
    assert_eq!(r.topics[0].error_code, 0);
}

fn join(c: &mut RawClient, group: &str, member: &str, rebalance_ms: i32) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(6000)
        .with_rebalance_timeout_ms(rebalance_ms)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"meta"))]);
    c.call(ApiKey::JoinGroup, 5, &req)
}

/// Joins through MEMBER_ID_REQUIRED; returns the response of the second join.
fn join_new(c: &mut RawClient, group: &str, rebalance_ms: i32) -> JoinGroupResponse {
    let first = join(c, group, "", rebalance_ms);
    assert_eq!(first.error_code, ErrorCode::MemberIdRequired.code());
    assert!(
        !first.member_id.is_empty(),
        "the broker hands out the member id"
    );
    join(c, group, &first.member_id.to_string(), rebalance_ms)
}

fn sync(
    c: &mut RawClient,
    group: &str,
    generation: i32,
    member: &str,
    assignment: &[u8],
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(member))
            .with_assignment(Bytes::copy_from_slice(assignment))]);
    c.call(ApiKey::SyncGroup, 3, &req)
}

fn heartbeat(c: &mut RawClient, group: &str, generation: i32, member: &str) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member));
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 3, &req);
    r.error_code
}

fn commit(
    c: &mut RawClient,
    group: &str,
    generation: i32,
    member: &str,
    parts: &[(&str, i32, i64, Option<String>)],
) -> Vec<(String, i32, i16)> {
    let topics = parts
        .iter()
        .map(|(t, p, o, m)| {
            OffsetCommitRequestTopic::default()
                .with_name(tname(t))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_metadata(m.as_deref().map(s))])
        })
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(topics);
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &req);
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index, p.error_code))
        })
        .collect()
}

fn list_groups(
    c: &mut RawClient,
    states: &[&str],
    types: &[&str],
) -> Vec<(String, String, String)> {
    let req = ListGroupsRequest::default()
        .with_states_filter(states.iter().map(|v| s(v)).collect())
        .with_types_filter(types.iter().map(|v| s(v)).collect());
    let r: ListGroupsResponse = c.call(ApiKey::ListGroups, 5, &req);
    assert_eq!(r.error_code, 0);
    r.groups
        .iter()
        .map(|g| {
            (
                g.group_id.to_string(),
                g.group_state.to_string(),
                g.group_type.to_string(),
            )
        })
        .collect()
}

#[test]
fn group_apis_on_the_wire() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("group.initial.rebalance.delay.ms", "0")],
    );
    let mut c = RawClient::connect(broker.local_addr);
    create_t(&mut c, 2);

    // FindCoordinator v4 answers every key of a batch.
    let fc: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g1"), s("g2")]),
    );
    assert_eq!(fc.coordinators.len(), 2);
    for co in &fc.coordinators {
        assert_eq!(co.error_code, 0);
        assert_eq!(co.port, i32::from(broker.local_addr.port()));
    }

    // Two-step join; the only member leads generation 1.
    let j = join_new(&mut c, "g1", 1000);
    assert_eq!(j.error_code, 0);
    let m1 = j.member_id.to_string();
    assert_eq!(
        (j.generation_id, j.leader.to_string(), j.members.len()),
        (1, m1.clone(), 1)
    );
    assert_eq!(
        sync(&mut c, "g1", 7, &m1, b"x").error_code,
        ErrorCode::IllegalGeneration.code()
    );
    let sy = sync(&mut c, "g1", 1, &m1, b"assignment-1");
    assert_eq!(
        (sy.error_code, &sy.assignment[..]),
        (0, &b"assignment-1"[..])
    );
    assert_eq!(heartbeat(&mut c, "g1", 1, &m1), 0);
    assert_eq!(
        heartbeat(&mut c, "g1", 2, &m1),
        ErrorCode::IllegalGeneration.code()
    );
    assert_eq!(
        heartbeat(&mut c, "g1", 1, "stranger"),
        ErrorCode::UnknownMemberId.code()
    );
    assert_eq!(
        heartbeat(&mut c, "nope", 1, "stranger"),
        ErrorCode::UnknownMemberId.code()
    );

    // Commits: good, unknown topic, partition out of range, metadata too large, stale generation.
    let big = Some("m".repeat(5000));
    let r = commit(
        &mut c,
        "g1",
        1,
        &m1,
        &[
            ("t", 0, 42, Some("meta".into())),
            ("missing", 0, 1, None),
            ("t", 9, 1, None),
            ("t", 1, 5, big),
        ],
    );
    let codes: Vec<i16> = r.iter().map(|x| x.2).collect();
    assert_eq!(
        codes,
        vec![
            0,
            ErrorCode::UnknownTopicOrPartition.code(),
            ErrorCode::UnknownTopicOrPartition.code(),
            ErrorCode::OffsetMetadataTooLarge.code()
        ],
        "{r:?}"
    );
    let r = commit(&mut c, "g1", 9, &m1, &[("t", 1, 5, None)]);
    assert_eq!(r[0].2, ErrorCode::IllegalGeneration.code());

    // OffsetFetch v8: several groups in one request.
    let group_req = |g: &str| {
        OffsetFetchRequestGroup::default()
            .with_group_id(gid(g))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(tname("t"))
                .with_partition_indexes(vec![0, 1])]))
    };
    let of: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        8,
        &OffsetFetchRequest::default().with_groups(vec![group_req("g1"), group_req("unknown")]),
    );
    let offsets: Vec<(String, Vec<i64>)> = of
        .groups
        .iter()
        .map(|g| {
            assert_eq!(g.error_code, 0);
            let o = g.topics[0]
                .partitions
                .iter()
                .map(|p| p.committed_offset)
                .collect();
            (g.group_id.to_string(), o)
        })
        .collect();
    assert_eq!(
        offsets,
        vec![
            ("g1".to_string(), vec![42, -1]),
            ("unknown".to_string(), vec![-1, -1])
        ]
    );
    let p0 = &of.groups[0].topics[0].partitions[0];
    assert_eq!(
        p0.metadata.as_ref().map(|m| m.to_string()),
        Some("meta".to_string())
    );

    // ListGroups filters by state and type.
    assert!(list_groups(&mut c, &[], &[]).contains(&(
        "g1".into(),
        "Stable".into(),
        "classic".into()
    )));
    assert!(list_groups(&mut c, &["Stable"], &[])
        .iter()
        .any(|g| g.0 == "g1"));
    assert!(list_groups(&mut c, &["Empty"], &[])
        .iter()
        .all(|g| g.0 != "g1"));
    assert!(list_groups(&mut c, &[], &["consumer"])
        .iter()
        .all(|g| g.0 != "g1"));

    // A second member joins; the first never rejoins. The rebalance completes when the first
    // member's rebalance timeout (1 s) ends, without it.
    let mut c2 = RawClient::connect(broker.local_addr);
    let started = Instant::now();
    let j2 = join_new(&mut c2, "g1", 1000);
    assert_eq!(j2.error_code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a silent member stalls the group only until its timeout"
    );
    let m2 = j2.member_id.to_string();
    assert_eq!(
        (j2.generation_id, j2.leader.to_string(), j2.members.len()),
        (2, m2.clone(), 1)
    );
    assert_eq!(
        heartbeat(&mut c, "g1", 1, &m1),
        ErrorCode::UnknownMemberId.code()
    );
    assert_eq!(sync(&mut c2, "g1", 2, &m2, b"a2").error_code, 0);

    // LeaveGroup v3 answers each member of a batch.
    let lg: LeaveGroupResponse = c2.call(
        ApiKey::LeaveGroup,
        3,
        &LeaveGroupRequest::default()
            .with_group_id(gid("g1"))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&m2)),
                MemberIdentity::default().with_member_id(s("ghost")),
            ]),
    );
    assert_eq!(lg.error_code, 0);
    let codes: Vec<i16> = lg.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![0, ErrorCode::UnknownMemberId.code()]);
    assert!(list_groups(&mut c, &["Empty"], &[])
        .iter()
        .any(|g| g.0 == "g1"));

    // Session expiry: a member that stops heartbeating is removed after session.timeout.ms.
    let j3 = join_new(&mut c2, "g2", 1000);
    let m3 = j3.member_id.to_string();
    assert_eq!(
        sync(&mut c2, "g2", j3.generation_id, &m3, b"").error_code,
        0
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !list_groups(&mut c, &["Empty"], &[])
        .iter()
        .any(|g| g.0 == "g2")
    {
        assert!(
            Instant::now() < deadline,
            "the silent member was never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        heartbeat(&mut c2, "g2", j3.generation_id, &m3),
        ErrorCode::UnknownMemberId.code()
    );

    // OffsetDelete on an empty group; unknown groups are GROUP_ID_NOT_FOUND.
    let od = |c: &mut RawClient, g: &str| -> OffsetDeleteResponse {
        c.call(
            ApiKey::OffsetDelete,
            0,
            &OffsetDeleteRequest::default()
                .with_group_id(gid(g))
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(tname("t"))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ])]),
        )
    };
    let r = od(&mut c, "g1");
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    let of: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        8,
        &OffsetFetchRequest::default().with_groups(vec![group_req("g1")]),
    );
    assert_eq!(of.groups[0].topics[0].partitions[0].committed_offset, -1);
    assert_eq!(
        od(&mut c, "never-was").error_code,
        ErrorCode::GroupIdNotFound.code()
    );
    rt.block_on(broker.shutdown());
}

/// The committed offset of `group` for partition 0 of topic `t`, through OffsetFetch v8.
fn committed(c: &mut RawClient, group: &str) -> i64 {
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(gid(group))
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(tname("t"))
            .with_partition_indexes(vec![0])]))]);
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &req);
    r.groups[0].topics[0].partitions[0].committed_offset
}

#[test]
fn changing_offsets_topic_partitions_later_does_not_move_groups() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let restart = |overrides: &[(&str, &str)]| {
        let broker = start_broker(&rt, dir.path(), overrides);
        let c = RawClient::connect(broker.local_addr);
        (broker, c)
    };
    let (broker, mut c) = restart(&[]);
    create_t(&mut c, 1);
    assert_eq!(
        commit(&mut c, "moved", -1, "", &[("t", 0, 1, None)])[0].2,
        0
    );
    rt.block_on(broker.shutdown());

    // The topic already has 50 partitions; a smaller setting must not re-home the group.
    let fewer = [("offsets.topic.num.partitions", "10")];
    let (broker, mut c) = restart(&fewer);
    assert_eq!(committed(&mut c, "moved"), 1);
    assert_eq!(
        commit(&mut c, "moved", -1, "", &[("t", 0, 3, None)])[0].2,
        0
    );
    rt.block_on(broker.shutdown());
    let (broker, mut c) = restart(&fewer);
    assert_eq!(
        committed(&mut c, "moved"),
        3,
        "the newer commit wins after a restart"
    );
    rt.block_on(broker.shutdown());
}

#[test]
fn a_refused_join_leaves_no_group_behind() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    let req = JoinGroupRequest::default()
        .with_group_id(gid("too-short"))
        .with_session_timeout_ms(1000)
        .with_rebalance_timeout_ms(1000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"meta"))]);
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &req);
    assert_eq!(r.error_code, ErrorCode::InvalidSessionTimeout.code());
    assert_eq!(list_groups(&mut c, &[], &[]), vec![]);
    rt.block_on(broker.shutdown());
}
