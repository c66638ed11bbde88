//! The registry as a pure state machine over `_schemas` records.
//!
//! `apply` is the only way state changes, and it is used both for live writes (after the
//! record is produced and read back) and for replay at start, so a restart rebuilds exactly
//! what was served. The `plan_*` methods decide what a request would write and answer
//! without changing anything; the caller produces their records, waits for them to be
//! applied, and only then answers the client. No sockets, no clocks.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::RegistryError;
use crate::formats::{self, ParsedSchema, ResolvedReference};
use crate::records::{
    CompatibilityLevel, ConfigValue, DeleteSubjectValue, Key, Mode, ModeValue, Record, Reference,
    SchemaType, SchemaValue, Value,
};

/// References deeper than this are refused rather than followed (a cycle written by another
/// tool must not hang a request).
const MAX_REFERENCE_DEPTH: usize = 32;

/// A schema as stored under its global id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    pub schema_type: SchemaType,
    pub schema: String,
    pub references: Vec<Reference>,
    identity: String,
}

/// One version of one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectVersion {
    pub id: i32,
    pub deleted: bool,
}

/// `latest` (or -1) or a version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(i32),
}

impl VersionSpec {
    pub fn parse(text: &str) -> Result<VersionSpec, RegistryError> {
        if text.eq_ignore_ascii_case("latest") || text == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match text.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(VersionSpec::Number(n)),
            _ => Err(RegistryError::InvalidVersion {
                version: text.to_string(),
            }),
        }
    }
}

/// A schema as a client sends it to register, look up or check.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct SchemaRequest {
    pub schema: String,
    #[serde(rename = "schemaType", default)]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Vec<Reference>,
    #[serde(default)]
    pub id: Option<i32>,
    #[serde(default)]
    pub version: Option<i32>,
}

/// What a registration resolved to, and the records to write for it (none when the schema
/// was already registered under the subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterPlan {
    pub id: i32,
    pub version: i32,
    pub records: Vec<Record>,
}

/// A version found by lookup or get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionView<'a> {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub deleted: bool,
    pub schema: &'a StoredSchema,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RegistryState {
    schemas: BTreeMap<i32, StoredSchema>,
    subjects: BTreeMap<String, BTreeMap<i32, SubjectVersion>>,
    global_config: Option<ConfigValue>,
    subject_configs: BTreeMap<String, ConfigValue>,
    global_mode: Option<Mode>,
    subject_modes: BTreeMap<String, Mode>,
    /// Highest id ever applied, including hard-deleted ones, so ids are not handed out twice.
    max_id: i32,
}

fn parse_type(text: Option<&str>) -> Result<SchemaType, RegistryError> {
    match text {
        None => Ok(SchemaType::Avro),
        Some(t) => SchemaType::parse(t).ok_or_else(|| RegistryError::InvalidSchema {
            reason: format!("unknown schema type {t}"),
        }),
    }
}

fn check_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty() || subject.chars().any(char::is_control) {
        return Err(RegistryError::InvalidSubject {
            subject: subject.to_string(),
        });
    }
    Ok(())
}

impl RegistryState {
    /// Applies one record from `_schemas`. Total: any record sequence applies.
    pub fn apply(&mut self, record: &Record) {
        match (&record.key, &record.value) {
            (Key::Schema { .. }, Some(Value::Schema(v))) => {
                let stored = StoredSchema {
                    schema_type: v.schema_type,
                    schema: v.schema.clone(),
                    references: v.references.clone(),
                    identity: formats::identity(v.schema_type, &v.schema),
                };
                self.schemas.insert(v.id, stored);
                self.subjects.entry(v.subject.clone()).or_default().insert(
                    v.version,
                    SubjectVersion {
                        id: v.id,
                        deleted: v.deleted,
                    },
                );
                self.max_id = self.max_id.max(v.id);
            }
            (
                Key::Schema {
                    subject, version, ..
                },
                None,
            ) => {
                if let Some(versions) = self.subjects.get_mut(subject) {
                    if let Some(gone) = versions.remove(version) {
                        if versions.is_empty() {
                            self.subjects.remove(subject);
                        }
                        self.forget_unused(gone.id);
                    }
                }
            }
            (Key::Config { subject, .. }, value) => {
                let value = match value {
                    Some(Value::Config(c)) => Some(c.clone()),
                    _ => None,
                };
                match (subject, value) {
                    (None, v) => self.global_config = v,
                    (Some(s), Some(v)) => {
                        self.subject_configs.insert(s.clone(), v);
                    }
                    (Some(s), None) => {
                        self.subject_configs.remove(s);
                    }
                }
            }
            (Key::Mode { subject, .. }, value) => {
                let value = match value {
                    Some(Value::Mode(m)) => Some(m.mode),
                    _ => None,
                };
                match (subject, value) {
                    (None, v) => self.global_mode = v,
                    (Some(s), Some(v)) => {
                        self.subject_modes.insert(s.clone(), v);
                    }
                    (Some(s), None) => {
                        self.subject_modes.remove(s);
                    }
                }
            }
            (Key::DeleteSubject { .. }, Some(Value::DeleteSubject(d))) => {
                if let Some(versions) = self.subjects.get_mut(&d.subject) {
                    for (_, v) in versions.range_mut(..=d.version) {
                        v.deleted = true;
                    }
                }
            }
            (Key::ClearSubject { subject, .. }, _) => {
                if let Some(versions) = self.subjects.get_mut(subject) {
                    let gone: Vec<i32> = versions
                        .iter()
                        .filter(|(_, v)| v.deleted)
                        .map(|(_, v)| v.id)
                        .collect();
                    versions.retain(|_, v| !v.deleted);
                    if versions.is_empty() {
                        self.subjects.remove(subject);
                    }
                    for id in gone {
                        self.forget_unused(id);
                    }
                }
            }
            // NOOPs mark positions; values that do not fit their key are ignored.
            _ => {}
        }
    }

    fn forget_unused(&mut self, id: i32) {
        let used = self
            .subjects
            .values()
            .flat_map(|v| v.values())
            .any(|v| v.id == id);
        if !used {
            self.schemas.remove(&id);
        }
    }

    pub fn subjects(&self, include_deleted: bool, prefix: &str) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(s, versions)| {
                s.starts_with(prefix) && (include_deleted || versions.values().any(|v| !v.deleted))
            })
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn live_versions(&self, subject: &str) -> Vec<(i32, SubjectVersion)> {
        self.subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, v)| !v.deleted)
                    .map(|(n, v)| (*n, *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let versions: Vec<i32> = self
            .subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, v)| include_deleted || !v.deleted)
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound {
                subject: subject.to_string(),
            });
        }
        Ok(versions)
    }

    pub fn get_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<VersionView<'_>, RegistryError> {
        let versions = self.versions(subject, include_deleted)?;
        let number = match spec {
            VersionSpec::Latest => *versions.last().expect("versions() is never empty"),
            VersionSpec::Number(n) => n,
        };
        if !versions.contains(&number) {
            return Err(RegistryError::VersionNotFound {
                version: number.to_string(),
            });
        }
        let v = self.subjects[subject][&number];
        let schema = self.schema_by_id(v.id)?;
        Ok(VersionView {
            subject: subject.to_string(),
            version: number,
            id: v.id,
            deleted: v.deleted,
            schema,
        })
    }

    pub fn schema_by_id(&self, id: i32) -> Result<&StoredSchema, RegistryError> {
        self.schemas.get(&id).ok_or(RegistryError::SchemaNotFound {
            what: id.to_string(),
        })
    }

    /// Subject-versions that use schema `id`.
    pub fn id_versions(&self, id: i32, include_deleted: bool) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for (subject, versions) in &self.subjects {
            for (n, v) in versions {
                if v.id == id && (include_deleted || !v.deleted) {
                    out.push((subject.clone(), *n));
                }
            }
        }
        out
    }

    /// Ids of live schema versions that reference `subject` at `version`.
    pub fn referenced_by(&self, subject: &str, version: i32) -> Vec<i32> {
        let mut ids = BTreeSet::new();
        for versions in self.subjects.values() {
            for v in versions.values().filter(|v| !v.deleted) {
                if let Some(s) = self.schemas.get(&v.id) {
                    if s.references
                        .iter()
                        .any(|r| r.subject == subject && r.version == version)
                    {
                        ids.insert(v.id);
                    }
                }
            }
        }
        ids.into_iter().collect()
    }

    pub fn global_compatibility(&self) -> CompatibilityLevel {
        self.global_config
            .as_ref()
            .and_then(|c| c.compatibility_level)
            .unwrap_or_default()
    }

    pub fn global_config(&self) -> ConfigValue {
        let mut c = self.global_config.clone().unwrap_or_default();
        c.compatibility_level = Some(self.global_compatibility());
        c
    }

    pub fn subject_config(&self, subject: &str) -> Option<&ConfigValue> {
        self.subject_configs.get(subject)
    }

    pub fn compatibility(&self, subject: &str) -> CompatibilityLevel {
        self.subject_configs
            .get(subject)
            .and_then(|c| c.compatibility_level)
            .unwrap_or_else(|| self.global_compatibility())
    }

    fn normalize_default(&self, subject: &str) -> bool {
        self.subject_configs
            .get(subject)
            .and_then(|c| c.normalize)
            .or_else(|| self.global_config.as_ref().and_then(|c| c.normalize))
            .unwrap_or(false)
    }

    pub fn global_mode(&self) -> Mode {
        self.global_mode.unwrap_or_default()
    }

    pub fn subject_mode(&self, subject: &str) -> Option<Mode> {
        self.subject_modes.get(subject).copied()
    }

    pub fn mode(&self, subject: &str) -> Mode {
        self.subject_mode(subject)
            .unwrap_or_else(|| self.global_mode())
    }

    pub fn max_id(&self) -> i32 {
        self.max_id
    }

    /// Every schema reachable through `references`, dependencies first.
    pub fn resolve_references(
        &self,
        references: &[Reference],
    ) -> Result<Vec<ResolvedReference>, RegistryError> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        self.resolve_into(references, 0, &mut seen, &mut out)?;
        Ok(out)
    }

    fn resolve_into(
        &self,
        references: &[Reference],
        depth: usize,
        seen: &mut BTreeSet<(String, i32)>,
        out: &mut Vec<ResolvedReference>,
    ) -> Result<(), RegistryError> {
        if depth > MAX_REFERENCE_DEPTH {
            return Err(RegistryError::InvalidSchema {
                reason: "references nest too deeply".to_string(),
            });
        }
        for r in references {
            let spec = if r.version == -1 {
                VersionSpec::Latest
            } else {
                VersionSpec::Number(r.version)
            };
            let found = self.get_version(&r.subject, spec, false).map_err(|_| {
                RegistryError::InvalidSchema {
                    reason: format!(
                        "reference {} to subject {} version {} not found",
                        r.name, r.subject, r.version
                    ),
                }
            })?;
            if !seen.insert((found.subject.clone(), found.version)) {
                continue;
            }
            self.resolve_into(&found.schema.references, depth + 1, seen, out)?;
            out.push(ResolvedReference {
                name: r.name.clone(),
                schema_type: found.schema.schema_type,
                schema: found.schema.schema.clone(),
            });
        }
        Ok(())
    }

    /// The text of schema `id` in `format` (`serialized` for Protobuf descriptors); the
    /// stored text for other formats or none.
    pub fn schema_text(&self, id: i32, format: Option<&str>) -> Result<String, RegistryError> {
        let stored = self.schema_by_id(id)?;
        if format == Some("serialized") {
            if let Some(text) = self.parse_stored(stored)?.serialized() {
                return Ok(text);
            }
        }
        Ok(stored.schema.clone())
    }

    fn parse_stored(&self, stored: &StoredSchema) -> Result<ParsedSchema, RegistryError> {
        let refs = self.resolve_references(&stored.references)?;
        formats::parse(stored.schema_type, &stored.schema, &refs)
            .map_err(|reason| RegistryError::InvalidSchema { reason })
    }

    /// Parses a request's schema; returns it with the text to store and its identity.
    fn parse_request(
        &self,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<(SchemaType, ParsedSchema, String), RegistryError> {
        let schema_type = parse_type(request.schema_type.as_deref())?;
        let refs = self.resolve_references(&request.references)?;
        let parsed = formats::parse(schema_type, &request.schema, &refs)
            .map_err(|reason| RegistryError::InvalidSchema { reason })?;
        let text = if normalize {
            parsed.normalized()
        } else {
            request.schema.clone()
        };
        Ok((schema_type, parsed, text))
    }

    /// Finds the version of `subject` holding this schema.
    pub fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        normalize: bool,
        include_deleted: bool,
    ) -> Result<VersionView<'_>, RegistryError> {
        let versions = self.versions(subject, include_deleted)?;
        let normalize = normalize || self.normalize_default(subject);
        let (schema_type, _, text) = self.parse_request(request, normalize)?;
        let identity = formats::identity(schema_type, &text);
        for n in versions.into_iter().rev() {
            let view = self.get_version(subject, VersionSpec::Number(n), include_deleted)?;
            let s = view.schema;
            if s.schema_type == schema_type
                && s.identity == identity
                && s.references == request.references
            {
                return Ok(view);
            }
        }
        Err(RegistryError::SchemaNotFound {
            what: "of the request".to_string(),
        })
    }

    /// Why `candidate` may not follow the versions of `subject` under `level`.
    fn compatibility_problems(
        &self,
        subject: &str,
        candidate: &ParsedSchema,
        against: &[i32],
        level: CompatibilityLevel,
    ) -> Result<Vec<String>, RegistryError> {
        let mut problems = Vec::new();
        if level == CompatibilityLevel::None {
            return Ok(problems);
        }
        for n in against {
            let view = self.get_version(subject, VersionSpec::Number(*n), true)?;
            let old = self.parse_stored(view.schema)?;
            if level.backward() {
                for p in candidate.read_problems(&old) {
                    problems.push(format!("version {n}: reading data written with it: {p}"));
                }
            }
            if level.forward() {
                for p in old.read_problems(candidate) {
                    problems.push(format!("version {n}: it reading new data: {p}"));
                }
            }
        }
        Ok(problems)
    }

    /// The versions a new schema is checked against under `level`.
    fn versions_to_check(&self, subject: &str, level: CompatibilityLevel) -> Vec<i32> {
        let live: Vec<i32> = self
            .live_versions(subject)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if level.transitive() {
            live
        } else {
            live.last().copied().into_iter().collect()
        }
    }

    /// `POST /compatibility/subjects/{subject}/versions[/{version}]`: the problems found.
    pub fn check_compatibility(
        &self,
        subject: &str,
        version: Option<VersionSpec>,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let level = self.compatibility(subject);
        let against = match version {
            Some(VersionSpec::Number(n)) => vec![
                self.get_version(subject, VersionSpec::Number(n), false)?
                    .version,
            ],
            Some(VersionSpec::Latest) => {
                match self.get_version(subject, VersionSpec::Latest, false) {
                    Ok(v) => vec![v.version],
                    Err(_) => Vec::new(),
                }
            }
            None => self.versions_to_check(subject, level),
        };
        let normalize = normalize || self.normalize_default(subject);
        let (_, parsed, _) = self.parse_request(request, normalize)?;
        self.compatibility_problems(subject, &parsed, &against, level)
    }

    fn check_writable(&self, subject: Option<&str>) -> Result<Mode, RegistryError> {
        let mode = match subject {
            Some(s) => self.mode(s),
            None => self.global_mode(),
        };
        if mode == Mode::Readonly {
            return Err(RegistryError::OperationNotPermitted {
                reason: format!(
                    "Subject {} is in read-only mode",
                    subject.unwrap_or("(global)")
                ),
            });
        }
        Ok(mode)
    }

    /// `POST /subjects/{subject}/versions`.
    pub fn plan_register(
        &self,
        subject: &str,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<RegisterPlan, RegistryError> {
        check_subject(subject)?;
        let mode = self.check_writable(Some(subject))?;
        let normalize = normalize || self.normalize_default(subject);
        let (schema_type, parsed, text) = self.parse_request(request, normalize)?;
        let identity = formats::identity(schema_type, &text);
        let same = |s: &StoredSchema| {
            s.schema_type == schema_type
                && s.identity == identity
                && s.references == request.references
        };

        for (n, v) in self.live_versions(subject).into_iter().rev() {
            if self.schemas.get(&v.id).is_some_and(same) {
                if let Some(wanted) = request.id.filter(|id| *id != v.id) {
                    return Err(RegistryError::IdInUse { id: wanted });
                }
                return Ok(RegisterPlan {
                    id: v.id,
                    version: n,
                    records: Vec::new(),
                });
            }
        }

        let id = match (mode, request.id) {
            (Mode::Import, Some(id)) if id >= 1 => {
                if self.schemas.get(&id).is_some_and(|s| !same(s)) {
                    return Err(RegistryError::IdInUse { id });
                }
                id
            }
            (Mode::Import, _) => {
                return Err(RegistryError::OperationNotPermitted {
                    reason: "a schema registered in IMPORT mode must carry its id".to_string(),
                })
            }
            (_, Some(id)) if self.schemas.get(&id).is_some_and(same) => id,
            (_, Some(_)) => {
                return Err(RegistryError::OperationNotPermitted {
                    reason: format!("Subject {subject} is not in import mode"),
                })
            }
            (_, None) => match self.schemas.iter().find(|(_, s)| same(s)) {
                Some((id, _)) => *id,
                None => self.max_id.checked_add(1).ok_or(RegistryError::Store {
                    reason: "schema ids exhausted".to_string(),
                })?,
            },
        };

        if mode != Mode::Import {
            let level = self.compatibility(subject);
            let against = self.versions_to_check(subject, level);
            let messages = self.compatibility_problems(subject, &parsed, &against, level)?;
            if !messages.is_empty() {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_string(),
                    messages,
                });
            }
        }

        let highest = self
            .subjects
            .get(subject)
            .and_then(|vs| vs.keys().next_back().copied())
            .unwrap_or(0);
        let version = match request.version {
            Some(v) if mode == Mode::Import && v >= 1 => {
                if self
                    .subjects
                    .get(subject)
                    .is_some_and(|vs| vs.contains_key(&v))
                {
                    return Err(RegistryError::InvalidVersion {
                        version: v.to_string(),
                    });
                }
                v
            }
            _ => highest
                .checked_add(1)
                .ok_or(RegistryError::InvalidVersion {
                    version: "next".to_string(),
                })?,
        };
        let record = Record {
            key: Key::schema(subject, version),
            value: Some(Value::Schema(SchemaValue {
                subject: subject.to_string(),
                version,
                id,
                schema_type,
                references: request.references.clone(),
                schema: text,
                deleted: false,
            })),
        };
        Ok(RegisterPlan {
            id,
            version,
            records: vec![record],
        })
    }

    fn schema_record(&self, subject: &str, version: i32, deleted: bool) -> Option<Record> {
        let v = self.subjects.get(subject)?.get(&version)?;
        let s = self.schemas.get(&v.id)?;
        Some(Record {
            key: Key::schema(subject, version),
            value: Some(Value::Schema(SchemaValue {
                subject: subject.to_string(),
                version,
                id: v.id,
                schema_type: s.schema_type,
                references: s.references.clone(),
                schema: s.schema.clone(),
                deleted,
            })),
        })
    }

    fn check_not_referenced(&self, subject: &str, version: i32) -> Result<(), RegistryError> {
        if self.referenced_by(subject, version).is_empty() {
            Ok(())
        } else {
            Err(RegistryError::ReferenceExists {
                subject: subject.to_string(),
                version,
            })
        }
    }

    /// `DELETE /subjects/{subject}`: the versions deleted and the records that do it.
    pub fn plan_delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Vec<i32>, Vec<Record>), RegistryError> {
        self.check_writable(Some(subject))?;
        let all = self.versions(subject, true)?;
        let live: Vec<i32> = self
            .live_versions(subject)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut records = Vec::new();
        if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted {
                    subject: subject.to_string(),
                });
            }
            for n in &all {
                self.check_not_referenced(subject, *n)?;
                records.push(Record {
                    key: Key::schema(subject, *n),
                    value: None,
                });
            }
            return Ok((all, records));
        }
        if live.is_empty() {
            return Err(RegistryError::SubjectSoftDeleted {
                subject: subject.to_string(),
            });
        }
        for n in &live {
            self.check_not_referenced(subject, *n)?;
            records.extend(self.schema_record(subject, *n, true));
        }
        records.push(Record {
            key: Key::delete_subject(subject),
            value: Some(Value::DeleteSubject(DeleteSubjectValue {
                subject: subject.to_string(),
                version: *live.last().expect("checked non-empty"),
            })),
        });
        if self.subject_configs.contains_key(subject) {
            records.push(Record {
                key: Key::config(Some(subject)),
                value: None,
            });
        }
        if self.subject_modes.contains_key(subject) {
            records.push(Record {
                key: Key::mode(Some(subject)),
                value: None,
            });
        }
        Ok((live, records))
    }

    /// `DELETE /subjects/{subject}/versions/{version}`.
    pub fn plan_delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<(i32, Vec<Record>), RegistryError> {
        self.check_writable(Some(subject))?;
        if !permanent {
            self.refuse_soft_deleted(subject, spec)?;
        }
        let view = self.get_version(subject, spec, permanent)?;
        let n = view.version;
        self.check_not_referenced(subject, n)?;
        if permanent {
            if !view.deleted {
                return Err(RegistryError::VersionNotSoftDeleted {
                    subject: subject.to_string(),
                    version: n,
                });
            }
            return Ok((
                n,
                vec![Record {
                    key: Key::schema(subject, n),
                    value: None,
                }],
            ));
        }
        Ok((
            n,
            self.schema_record(subject, n, true).into_iter().collect(),
        ))
    }

    /// A second soft delete of a version gets 40406, as in Confluent.
    fn refuse_soft_deleted(&self, subject: &str, spec: VersionSpec) -> Result<(), RegistryError> {
        if let VersionSpec::Number(n) = spec {
            if self
                .subjects
                .get(subject)
                .and_then(|vs| vs.get(&n))
                .is_some_and(|v| v.deleted)
            {
                return Err(RegistryError::VersionSoftDeleted {
                    subject: subject.to_string(),
                    version: n,
                });
            }
        }
        Ok(())
    }

    /// `PUT /config[/{subject}]`.
    pub fn plan_set_config(
        &self,
        subject: Option<&str>,
        config: ConfigValue,
    ) -> Result<Record, RegistryError> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        self.check_writable(subject)?;
        Ok(Record {
            key: Key::config(subject),
            value: Some(Value::Config(config)),
        })
    }

    /// `DELETE /config[/{subject}]`: the config being removed and the tombstone.
    pub fn plan_delete_config(
        &self,
        subject: Option<&str>,
    ) -> Result<(ConfigValue, Record), RegistryError> {
        self.check_writable(subject)?;
        let previous = match subject {
            None => self.global_config(),
            Some(s) => self.subject_configs.get(s).cloned().ok_or_else(|| {
                RegistryError::SubjectNotFound {
                    subject: s.to_string(),
                }
            })?,
        };
        Ok((
            previous,
            Record {
                key: Key::config(subject),
                value: None,
            },
        ))
    }

    /// `PUT /mode[/{subject}]`. IMPORT needs an empty registry (or subject) unless forced,
    /// since imported ids could collide with ones already handed out.
    pub fn plan_set_mode(
        &self,
        subject: Option<&str>,
        mode: Mode,
        force: bool,
    ) -> Result<Record, RegistryError> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        if mode == Mode::Import && !force {
            let occupied = match subject {
                None => !self.subjects.is_empty(),
                Some(s) => self.subjects.contains_key(s),
            };
            if occupied {
                return Err(RegistryError::OperationNotPermitted {
                    reason: "Cannot import since found existing subjects".to_string(),
                });
            }
        }
        Ok(Record {
            key: Key::mode(subject),
            value: Some(Value::Mode(ModeValue { mode })),
        })
    }

    /// `DELETE /mode/{subject}`.
    pub fn plan_delete_mode(&self, subject: &str) -> Result<(Mode, Record), RegistryError> {
        let previous =
            self.subject_mode(subject)
                .ok_or_else(|| RegistryError::SubjectModeNotConfigured {
                    subject: subject.to_string(),
                })?;
        Ok((
            previous,
            Record {
                key: Key::mode(Some(subject)),
                value: None,
            },
        ))
    }
}

#[cfg(test)]
mod tests;
