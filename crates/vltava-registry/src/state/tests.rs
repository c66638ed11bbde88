use super::*;
use proptest::prelude::*;

fn avro(text: &str) -> SchemaRequest {
    SchemaRequest {
        schema: text.to_string(),
        ..Default::default()
    }
}

fn user(fields: &str) -> SchemaRequest {
    avro(&format!(
        r#"{{"type":"record","name":"User","fields":[{{"name":"name","type":"string"}}{fields}]}}"#
    ))
}

/// Applies records the way the store does: through their encoded bytes.
fn apply_encoded(
    state: &mut RegistryState,
    records: &[Record],
    log: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
) {
    for r in records {
        let (k, v) = r.encode();
        let decoded = Record::decode(Some(&k), v.as_deref()).unwrap();
        state.apply(&decoded);
        log.push((k, v));
    }
}

fn register(
    state: &mut RegistryState,
    subject: &str,
    req: &SchemaRequest,
) -> Result<(i32, i32), RegistryError> {
    let plan = state.plan_register(subject, req, false)?;
    apply_encoded(state, &plan.records, &mut Vec::new());
    Ok((plan.id, plan.version))
}

#[test]
fn same_schema_registers_once_and_shares_its_id_across_subjects() {
    let mut s = RegistryState::default();
    assert_eq!(register(&mut s, "a", &user("")), Ok((1, 1)));
    // Same text with other whitespace is the same schema.
    let spaced = avro(&format!(" {} ", user("").schema.replace(',', " , ")));
    let plan = s.plan_register("a", &spaced, false).unwrap();
    assert_eq!((plan.id, plan.version, plan.records.len()), (1, 1, 0));
    assert_eq!(register(&mut s, "b", &user("")), Ok((1, 1)));
    assert_eq!(
        s.id_versions(1, false),
        vec![("a".to_string(), 1), ("b".to_string(), 1)]
    );
}

#[test]
fn backward_compatibility_is_checked_against_the_latest_version() {
    let mut s = RegistryState::default();
    register(&mut s, "a", &user("")).unwrap();
    let with_default = user(r#",{"name":"age","type":"int","default":0}"#);
    assert_eq!(register(&mut s, "a", &with_default), Ok((2, 2)));
    let without_default = user(r#",{"name":"email","type":"string"}"#);
    let err = register(&mut s, "a", &without_default).unwrap_err();
    assert_eq!(err.error_code(), 409);
    assert_eq!(err.http_status(), 409);
    // With NONE anything goes.
    let r = s
        .plan_set_config(
            Some("a"),
            ConfigValue {
                compatibility_level: Some(CompatibilityLevel::None),
                normalize: None,
            },
        )
        .unwrap();
    s.apply(&r);
    assert_eq!(register(&mut s, "a", &without_default), Ok((3, 3)));
}

#[test]
fn transitive_levels_check_every_version() {
    let mut s = RegistryState::default();
    let set = |s: &mut RegistryState, level| {
        let r = s
            .plan_set_config(
                Some("t"),
                ConfigValue {
                    compatibility_level: Some(level),
                    normalize: None,
                },
            )
            .unwrap();
        s.apply(&r);
    };
    set(&mut s, CompatibilityLevel::None);
    register(&mut s, "t", &user(r#",{"name":"a","type":"int"}"#)).unwrap();
    register(&mut s, "t", &user("")).unwrap();
    // `a` back as a string with a default reads v2 data (no `a`) but not v1's int `a`.
    let next = user(r#",{"name":"a","type":"string","default":""}"#);
    set(&mut s, CompatibilityLevel::Backward);
    assert!(s.plan_register("t", &next, false).is_ok());
    set(&mut s, CompatibilityLevel::BackwardTransitive);
    assert_eq!(
        s.plan_register("t", &next, false).unwrap_err().error_code(),
        409
    );
}

#[test]
fn forward_means_old_schemas_read_new_data() {
    let mut s = RegistryState::default();
    let r = s
        .plan_set_config(
            None,
            ConfigValue {
                compatibility_level: Some(CompatibilityLevel::Forward),
                normalize: None,
            },
        )
        .unwrap();
    s.apply(&r);
    register(&mut s, "f", &user(r#",{"name":"age","type":"int"}"#)).unwrap();
    // Dropping a field the old schema needs (no default there) breaks old readers.
    assert_eq!(
        s.plan_register("f", &user(""), false)
            .unwrap_err()
            .error_code(),
        409
    );
    // Adding a field is fine for old readers.
    assert!(s
        .plan_register(
            "f",
            &user(r#",{"name":"age","type":"int"},{"name":"x","type":"long"}"#),
            false
        )
        .is_ok());
}

#[test]
fn deletes_follow_confluents_two_steps_and_ids_are_never_reused() {
    let mut s = RegistryState::default();
    register(&mut s, "d", &user("")).unwrap();
    assert_eq!(
        s.plan_delete_version("d", VersionSpec::Number(1), true)
            .unwrap_err()
            .error_code(),
        40407
    );
    assert_eq!(
        s.plan_delete_subject("d", true).unwrap_err().error_code(),
        40405
    );
    let (versions, records) = s.plan_delete_subject("d", false).unwrap();
    assert_eq!(versions, vec![1]);
    apply_encoded(&mut s, &records, &mut Vec::new());
    assert!(s.subjects(false, "").is_empty());
    assert_eq!(s.subjects(true, ""), vec!["d".to_string()]);
    assert_eq!(s.versions("d", false).unwrap_err().error_code(), 40401);
    assert_eq!(
        s.plan_delete_subject("d", false).unwrap_err().error_code(),
        40404
    );
    // The id still answers after a soft delete.
    assert!(s.schema_by_id(1).is_ok());
    // A new registration continues the version numbers.
    assert_eq!(
        register(
            &mut s,
            "d",
            &user(r#",{"name":"x","type":"int","default":1}"#)
        ),
        Ok((2, 2))
    );
    let (n, records) = s
        .plan_delete_version("d", VersionSpec::Latest, false)
        .unwrap();
    assert_eq!(n, 2);
    apply_encoded(&mut s, &records, &mut Vec::new());
    assert_eq!(
        s.plan_delete_version("d", VersionSpec::Number(2), false)
            .unwrap_err()
            .error_code(),
        40406
    );
    let (versions, records) = s.plan_delete_subject("d", true).unwrap();
    assert_eq!(versions, vec![1, 2]);
    apply_encoded(&mut s, &records, &mut Vec::new());
    assert_eq!(s.schema_by_id(1).unwrap_err().error_code(), 40403);
    assert!(s.subjects(true, "").is_empty());
    // Hard-deleted ids are not handed out again.
    assert_eq!(register(&mut s, "d", &user("")), Ok((3, 1)));
}

#[test]
fn references_resolve_and_protect_what_they_point_at() {
    let mut s = RegistryState::default();
    let address =
        avro(r#"{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}"#);
    register(&mut s, "address", &address).unwrap();
    let mut customer =
        avro(r#"{"type":"record","name":"Customer","fields":[{"name":"home","type":"Address"}]}"#);
    assert_eq!(
        s.plan_register("customer", &customer, false)
            .unwrap_err()
            .error_code(),
        42201
    );
    customer.references = vec![Reference {
        name: "Address".into(),
        subject: "address".into(),
        version: 1,
    }];
    assert_eq!(register(&mut s, "customer", &customer), Ok((2, 1)));
    assert_eq!(s.referenced_by("address", 1), vec![2]);
    assert_eq!(
        s.plan_delete_subject("address", false)
            .unwrap_err()
            .error_code(),
        42206
    );
    customer.references[0].version = 7;
    assert_eq!(
        s.plan_register("other", &customer, false)
            .unwrap_err()
            .error_code(),
        42201
    );
}

#[test]
fn modes_gate_writes_and_import_keeps_given_ids() {
    let mut s = RegistryState::default();
    s.apply(&s.plan_set_mode(None, Mode::Readonly, false).unwrap());
    assert_eq!(
        s.plan_register("m", &user(""), false)
            .unwrap_err()
            .error_code(),
        42205
    );
    s.apply(&s.plan_set_mode(None, Mode::Import, false).unwrap());
    assert_eq!(
        s.plan_register("m", &user(""), false)
            .unwrap_err()
            .error_code(),
        42205
    );
    let mut req = user("");
    req.id = Some(42);
    req.version = Some(5);
    assert_eq!(register(&mut s, "m", &req), Ok((42, 5)));
    // Import mode over existing subjects needs force.
    assert_eq!(
        s.plan_set_mode(None, Mode::Import, false)
            .unwrap_err()
            .error_code(),
        42205
    );
    assert!(s.plan_set_mode(None, Mode::Import, true).is_ok());
    s.apply(&s.plan_set_mode(None, Mode::Readwrite, false).unwrap());
    // New ids continue above imported ones.
    assert_eq!(register(&mut s, "n", &avro(r#""string""#)), Ok((43, 1)));
    // A subject-level mode overrides the global one.
    s.apply(&s.plan_set_mode(Some("n"), Mode::Readonly, false).unwrap());
    assert_eq!(
        s.plan_register("n", &avro(r#""int""#), false)
            .unwrap_err()
            .error_code(),
        42205
    );
    assert_eq!(s.mode("other"), Mode::Readwrite);
}

#[test]
fn bad_input_is_an_error_code() {
    let s = RegistryState::default();
    assert_eq!(
        s.plan_register("x", &avro("{"), false)
            .unwrap_err()
            .error_code(),
        42201
    );
    let mut bad_type = avro(r#""string""#);
    bad_type.schema_type = Some("XML".into());
    assert_eq!(
        s.plan_register("x", &bad_type, false)
            .unwrap_err()
            .error_code(),
        42201
    );
    assert_eq!(
        s.plan_register("", &avro(r#""string""#), false)
            .unwrap_err()
            .error_code(),
        42208
    );
    assert_eq!(VersionSpec::parse("0").unwrap_err().error_code(), 42202);
    assert_eq!(VersionSpec::parse("x").unwrap_err().error_code(), 42202);
    assert_eq!(VersionSpec::parse("latest"), Ok(VersionSpec::Latest));
    assert_eq!(
        s.get_version("nope", VersionSpec::Latest, false)
            .unwrap_err()
            .error_code(),
        40401
    );
}

#[test]
fn normalize_registers_layout_variants_as_one() {
    let mut s = RegistryState::default();
    let a = avro(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#);
    let b = avro(r#"{"fields":[{"type":"int","name":"a"}],"name":"R","type":"record"}"#);
    let (id, _) = s
        .plan_register("n", &a, true)
        .map(|p| {
            let id = (p.id, p.version);
            apply_encoded(&mut s, &p.records, &mut Vec::new());
            id
        })
        .unwrap();
    let again = s.plan_register("n", &b, true).unwrap();
    assert_eq!((again.id, again.records.len()), (id, 0));
    assert_eq!(s.lookup("n", &b, true, false).unwrap().id, id);
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        subject: usize,
        schema: usize,
    },
    DeleteVersion {
        subject: usize,
        version: i32,
        permanent: bool,
    },
    DeleteSubject {
        subject: usize,
        permanent: bool,
    },
    Config {
        subject: Option<usize>,
        level: usize,
    },
    Mode {
        subject: Option<usize>,
        mode: usize,
    },
}

const SUBJECTS: [&str; 3] = ["s0", "s1", "s2"];
const LEVELS: [CompatibilityLevel; 3] = [
    CompatibilityLevel::None,
    CompatibilityLevel::Backward,
    CompatibilityLevel::FullTransitive,
];
const MODES: [Mode; 2] = [Mode::Readwrite, Mode::Readonly];

fn schema_pool(i: usize) -> SchemaRequest {
    match i % 5 {
        0 => user(""),
        1 => user(r#",{"name":"age","type":"int","default":0}"#),
        2 => user(r#",{"name":"email","type":"string"}"#),
        3 => avro(r#""string""#),
        _ => avro(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#),
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..5usize).prop_map(|(subject, schema)| Op::Register { subject, schema }),
        1 => (0..3usize, 1..4i32, any::<bool>())
            .prop_map(|(subject, version, permanent)| Op::DeleteVersion { subject, version, permanent }),
        1 => (0..3usize, any::<bool>()).prop_map(|(subject, permanent)| Op::DeleteSubject { subject, permanent }),
        1 => (proptest::option::of(0..3usize), 0..3usize).prop_map(|(subject, level)| Op::Config { subject, level }),
        1 => (proptest::option::of(0..3usize), 0..2usize).prop_map(|(subject, mode)| Op::Mode { subject, mode }),
    ]
}

proptest! {
    /// Replaying the written records rebuilds the live state, and an id never names two
    /// different schemas, even across hard deletes.
    #[test]
    fn replay_rebuilds_state_and_ids_are_never_reused(ops in proptest::collection::vec(op(), 1..40)) {
        let mut live = RegistryState::default();
        let mut log = Vec::new();
        let mut id_owner: BTreeMap<i32, String> = BTreeMap::new();
        for op in ops {
            let records = match op {
                Op::Register { subject, schema } => {
                    let req = schema_pool(schema);
                    live.plan_register(SUBJECTS[subject], &req, false).map(|p| {
                        let identity = formats::identity(SchemaType::Avro, &req.schema);
                        let owner = id_owner.entry(p.id).or_insert_with(|| identity.clone());
                        assert_eq!(owner, &identity, "id {} reused", p.id);
                        p.records
                    })
                }
                Op::DeleteVersion { subject, version, permanent } => live
                    .plan_delete_version(SUBJECTS[subject], VersionSpec::Number(version), permanent)
                    .map(|(_, r)| r),
                Op::DeleteSubject { subject, permanent } => {
                    live.plan_delete_subject(SUBJECTS[subject], permanent).map(|(_, r)| r)
                }
                Op::Config { subject, level } => live
                    .plan_set_config(
                        subject.map(|s| SUBJECTS[s]),
                        ConfigValue { compatibility_level: Some(LEVELS[level]), normalize: None },
                    )
                    .map(|r| vec![r]),
                Op::Mode { subject, mode } => {
                    live.plan_set_mode(subject.map(|s| SUBJECTS[s]), MODES[mode], false).map(|r| vec![r])
                }
            };
            if let Ok(records) = records {
                apply_encoded(&mut live, &records, &mut log);
            }
        }
        let mut replayed = RegistryState::default();
        for (k, v) in &log {
            replayed.apply(&Record::decode(Some(k), v.as_deref()).unwrap());
        }
        assert!(replayed == live, "replay differs from live state");
        // Compaction keeps the last value per key; replaying only those gives the same state.
        let mut last: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (k, v) in &log {
            last.retain(|(lk, _)| lk != k);
            last.push((k.clone(), v.clone()));
        }
        let mut compacted = RegistryState::default();
        for (k, v) in &last {
            compacted.apply(&Record::decode(Some(k), v.as_deref()).unwrap());
        }
        // A compacted-away tombstone takes its id's high-water mark with it (Confluent has
        // the same gap); everything else survives compaction.
        compacted.max_id = live.max_id;
        assert!(compacted == live, "compacted replay differs from live state");
    }
}
