//! Confluent Schema Registry's REST API (v1) over axum.
//!
//! Bodies are read and checked here (content type, size, JSON) so that every refusal is a
//! Confluent error body rather than axum's plain-text rejections.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::{json, Value as Json};

use crate::election::Election;
use crate::error::RegistryError;
use crate::records::{CompatibilityLevel, ConfigValue, Mode, SchemaType};
use crate::state::{SchemaRequest, VersionSpec, VersionView};
use crate::store::Store;

/// Largest request body accepted; a schema must also fit in one Kafka record.
pub const MAX_BODY_BYTES: usize = 1 << 20;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const ACCEPTED_TYPES: [&str; 4] = [
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

type Shared = Arc<Store>;
type Params = Query<HashMap<String, String>>;

/// Every answer: a JSON body with Confluent's content type.
struct Answer(StatusCode, Json);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.0, self.1.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

struct ApiError(RegistryError);

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Answer(
            status,
            json!({"error_code": self.0.error_code(), "message": self.0.to_string()}),
        )
        .into_response()
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn ok(body: Json) -> Result<Answer> {
    Ok(Answer(StatusCode::OK, body))
}

/// A JSON request body in one of the content types Confluent accepts.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> std::result::Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim();
            if !ACCEPTED_TYPES.iter().any(|t| t.eq_ignore_ascii_case(ct)) {
                return Err(RegistryError::UnsupportedMediaType.into());
            }
        }
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| RegistryError::PayloadTooLarge {
                limit_bytes: MAX_BODY_BYTES,
            })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            let reason = e.to_string();
            if e.is_syntax() || e.is_eof() {
                RegistryError::BadRequest { reason }.into()
            } else {
                RegistryError::UnprocessableEntity { reason }.into()
            }
        })
    }
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn parse_id(text: &str) -> Result<i32> {
    text.parse::<i32>().map_err(|_| {
        RegistryError::SchemaNotFound {
            what: text.to_string(),
        }
        .into()
    })
}

/// The parts of a schema every answer about one carries: `schemaType` only when not Avro,
/// `references` only when there are some.
fn schema_fields(body: &mut serde_json::Map<String, Json>, schema: &crate::state::StoredSchema) {
    if schema.schema_type != SchemaType::Avro {
        body.insert("schemaType".into(), json!(schema.schema_type.name()));
    }
    if !schema.references.is_empty() {
        body.insert("references".into(), json!(schema.references));
    }
    body.insert("schema".into(), json!(answer_text(schema)));
}

/// The schema text as answers give it: a Protobuf schema registered as a base64 descriptor is
/// written out as `.proto` text, as Confluent answers (`format=serialized` gives the base64).
fn answer_text(schema: &crate::state::StoredSchema) -> String {
    match schema.schema_type {
        SchemaType::Protobuf => crate::formats::protobuf::descriptor_as_text(&schema.schema)
            .unwrap_or_else(|| schema.schema.clone()),
        _ => schema.schema.clone(),
    }
}

fn version_body(view: &VersionView<'_>) -> Json {
    let mut body = serde_json::Map::new();
    body.insert("subject".into(), json!(view.subject));
    body.insert("version".into(), json!(view.version));
    body.insert("id".into(), json!(view.id));
    schema_fields(&mut body, view.schema);
    Json::Object(body)
}

/// Writes change `_schemas` and so go to the leader: every PUT and DELETE, and POST of a new
/// version. Lookups and compatibility checks (also POSTs) are reads.
fn is_write(method: &Method, path: &str) -> bool {
    match *method {
        Method::PUT | Method::DELETE => true,
        Method::POST => {
            path.starts_with("/subjects/") && path.trim_end_matches('/').ends_with("/versions")
        }
        _ => false,
    }
}

#[derive(Clone)]
struct Forwarding {
    election: Arc<Election>,
    timeout: std::time::Duration,
}

/// Sends a write that reaches a follower on to the leader and relays the answer.
async fn forward_writes(State(f): State<Forwarding>, request: Request, next: Next) -> Response {
    if !is_write(request.method(), request.uri().path()) || f.election.leadership.is_leader() {
        return next.run(request).await;
    }
    let deadline = tokio::time::Instant::now() + f.timeout;
    let leader = loop {
        let e = f.election.clone();
        let url =
            tokio::task::spawn_blocking(move || e.leader_url(std::time::Duration::from_secs(2)))
                .await
                .ok()
                .flatten();
        if f.election.leadership.is_leader() {
            return next.run(request).await;
        }
        match url {
            Some(url) => break url,
            None if tokio::time::Instant::now() >= deadline => {
                return ApiError(RegistryError::UnknownLeader).into_response()
            }
            None => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    };
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError(RegistryError::PayloadTooLarge {
                limit_bytes: MAX_BODY_BYTES,
            })
            .into_response()
        }
    };
    tracing::debug!(%leader, %method, %target, "forwarding a write to the leader");
    match crate::http_client::request(
        &leader,
        &method,
        &target,
        content_type.as_deref(),
        &body,
        f.timeout,
    )
    .await
    {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (status, answer.body).into_response();
            let ct = answer
                .content_type
                .and_then(|c| HeaderValue::from_str(&c).ok())
                .unwrap_or(HeaderValue::from_static(CONTENT_TYPE));
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
            response
        }
        Err(e) => ApiError(e).into_response(),
    }
}

pub fn router(store: Shared, election: Arc<Election>, timeout: std::time::Duration) -> Router {
    let forwarding = Forwarding { election, timeout };
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route(
            "/schemas/types",
            get(|| async { ok(json!(["JSON", "PROTOBUF", "AVRO"])) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(id_subjects))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(get_global_mode).put(put_global_mode))
        .route(
            "/mode/{subject}",
            get(get_subject_mode)
                .put(put_subject_mode)
                .delete(delete_subject_mode),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(store)
        .layer(axum::middleware::from_fn_with_state(
            forwarding,
            forward_writes,
        ))
}

async fn not_found() -> ApiError {
    ApiError(RegistryError::NotFound)
}

async fn method_not_allowed(method: Method) -> Response {
    Answer(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error_code": 405, "message": format!("HTTP 405 Method {method} Not Allowed")}),
    )
    .into_response()
}

/// `subject` only names a context in Confluent's registry; there is one context here, so it
/// changes nothing. `format=serialized` gives Protobuf schemas as base64 descriptors.
async fn schema_by_id(
    State(store): State<Shared>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Result<Answer> {
    let id = parse_id(&id)?;
    let state = store.state();
    let mut body = serde_json::Map::new();
    schema_fields(&mut body, state.schema_by_id(id)?);
    if p.contains_key("format") {
        let text = state.schema_text(id, p.get("format").map(String::as_str))?;
        body.insert("schema".into(), json!(text));
    }
    ok(Json::Object(body))
}

async fn raw_schema_by_id(State(store): State<Shared>, Path(id): Path<String>) -> Result<Response> {
    let id = parse_id(&id)?;
    let text = answer_text(store.state().schema_by_id(id)?);
    Ok(raw(text))
}

fn raw(text: String) -> Response {
    let mut response = Body::from(text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

async fn id_subjects(
    State(store): State<Shared>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Result<Answer> {
    let id = parse_id(&id)?;
    let state = store.state();
    state.schema_by_id(id)?;
    let mut subjects: Vec<String> = state
        .id_versions(id, flag(&p, "deleted"))
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    ok(json!(subjects))
}

async fn id_versions(
    State(store): State<Shared>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Result<Answer> {
    let id = parse_id(&id)?;
    let state = store.state();
    state.schema_by_id(id)?;
    let versions: Vec<Json> = state
        .id_versions(id, flag(&p, "deleted"))
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    ok(json!(versions))
}

async fn subjects(State(store): State<Shared>, Query(p): Params) -> Result<Answer> {
    let prefix = p.get("subjectPrefix").map(String::as_str).unwrap_or("");
    ok(json!(store.state().subjects(flag(&p, "deleted"), prefix)))
}

async fn versions(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Result<Answer> {
    ok(json!(store
        .state()
        .versions(&subject, flag(&p, "deleted"))?))
}

async fn register(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<Answer> {
    let normalize = flag(&p, "normalize");
    let id = store
        .write(|state| {
            let plan = state.plan_register(&subject, &request, normalize)?;
            Ok((plan.id, plan.records))
        })
        .await?;
    ok(json!({ "id": id }))
}

async fn lookup(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<Answer> {
    let state = store.state();
    let view = state.lookup(
        &subject,
        &request,
        flag(&p, "normalize"),
        flag(&p, "deleted"),
    )?;
    ok(version_body(&view))
}

async fn get_version(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Result<Answer> {
    let spec = VersionSpec::parse(&version)?;
    let state = store.state();
    ok(version_body(&state.get_version(
        &subject,
        spec,
        flag(&p, "deleted"),
    )?))
}

async fn raw_version(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Result<Response> {
    let spec = VersionSpec::parse(&version)?;
    let text = answer_text(
        store
            .state()
            .get_version(&subject, spec, flag(&p, "deleted"))?
            .schema,
    );
    Ok(raw(text))
}

async fn referenced_by(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Answer> {
    let spec = VersionSpec::parse(&version)?;
    let state = store.state();
    let view = state.get_version(&subject, spec, false)?;
    ok(json!(state.referenced_by(&subject, view.version)))
}

async fn delete_subject(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Result<Answer> {
    let permanent = flag(&p, "permanent");
    let versions = store
        .write(|state| state.plan_delete_subject(&subject, permanent))
        .await?;
    ok(json!(versions))
}

async fn delete_version(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Result<Answer> {
    let spec = VersionSpec::parse(&version)?;
    let permanent = flag(&p, "permanent");
    let n = store
        .write(|state| state.plan_delete_version(&subject, spec, permanent))
        .await?;
    ok(json!(n))
}

/// `PUT /config` bodies: Confluent's clients send `compatibility`; its topic and some tools
/// say `compatibilityLevel`.
#[derive(serde::Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
    normalize: Option<bool>,
}

impl ConfigRequest {
    fn into_config(self) -> Result<ConfigValue> {
        let level = match self.compatibility.or(self.compatibility_level) {
            Some(text) => Some(
                CompatibilityLevel::parse(&text).ok_or(RegistryError::InvalidCompatibilityLevel)?,
            ),
            None => None,
        };
        if level.is_none() && self.normalize.is_none() {
            return Err(RegistryError::InvalidCompatibilityLevel.into());
        }
        Ok(ConfigValue {
            compatibility_level: level,
            normalize: self.normalize,
        })
    }
}

fn config_body(config: &ConfigValue) -> Json {
    let mut body = serde_json::Map::new();
    if let Some(level) = config.compatibility_level {
        body.insert("compatibilityLevel".into(), json!(level));
    }
    if let Some(n) = config.normalize {
        body.insert("normalize".into(), json!(n));
    }
    Json::Object(body)
}

fn config_answer(config: &ConfigValue) -> Json {
    let mut body = serde_json::Map::new();
    if let Some(level) = config.compatibility_level {
        body.insert("compatibility".into(), json!(level));
    }
    if let Some(n) = config.normalize {
        body.insert("normalize".into(), json!(n));
    }
    Json::Object(body)
}

async fn get_global_config(State(store): State<Shared>) -> Result<Answer> {
    ok(config_body(&store.state().global_config()))
}

async fn put_global_config(
    State(store): State<Shared>,
    JsonBody(request): JsonBody<ConfigRequest>,
) -> Result<Answer> {
    put_config(store, None, request).await
}

async fn put_subject_config(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    JsonBody(request): JsonBody<ConfigRequest>,
) -> Result<Answer> {
    put_config(store, Some(subject), request).await
}

async fn put_config(
    store: Shared,
    subject: Option<String>,
    request: ConfigRequest,
) -> Result<Answer> {
    let config = request.into_config()?;
    let answer = config_answer(&config);
    store
        .write(|state| Ok(((), vec![state.plan_set_config(subject.as_deref(), config)?])))
        .await?;
    ok(answer)
}

async fn delete_global_config(State(store): State<Shared>) -> Result<Answer> {
    let previous = store
        .write(|state| state.plan_delete_config(None).map(|(p, r)| (p, vec![r])))
        .await?;
    ok(config_body(&previous))
}

async fn get_subject_config(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Result<Answer> {
    let state = store.state();
    match state.subject_config(&subject) {
        Some(c) => ok(config_body(c)),
        None if flag(&p, "defaultToGlobal") => ok(config_body(&state.global_config())),
        None => Err(RegistryError::SubjectCompatibilityNotConfigured { subject }.into()),
    }
}

async fn delete_subject_config(
    State(store): State<Shared>,
    Path(subject): Path<String>,
) -> Result<Answer> {
    let previous = store
        .write(|state| {
            state
                .plan_delete_config(Some(&subject))
                .map(|(p, r)| (p, vec![r]))
        })
        .await?;
    ok(config_body(&previous))
}

#[derive(serde::Deserialize)]
struct ModeRequest {
    mode: String,
}

async fn get_global_mode(State(store): State<Shared>) -> Result<Answer> {
    ok(json!({"mode": store.state().global_mode()}))
}

async fn get_subject_mode(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Result<Answer> {
    let state = store.state();
    match state.subject_mode(&subject) {
        Some(m) => ok(json!({ "mode": m })),
        None if flag(&p, "defaultToGlobal") => ok(json!({"mode": state.global_mode()})),
        None => Err(RegistryError::SubjectModeNotConfigured { subject }.into()),
    }
}

async fn put_global_mode(
    State(store): State<Shared>,
    Query(p): Params,
    JsonBody(request): JsonBody<ModeRequest>,
) -> Result<Answer> {
    put_mode(store, None, flag(&p, "force"), request).await
}

async fn put_subject_mode(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
    JsonBody(request): JsonBody<ModeRequest>,
) -> Result<Answer> {
    put_mode(store, Some(subject), flag(&p, "force"), request).await
}

async fn put_mode(
    store: Shared,
    subject: Option<String>,
    force: bool,
    request: ModeRequest,
) -> Result<Answer> {
    let mode = Mode::parse(&request.mode).ok_or(RegistryError::InvalidMode)?;
    store
        .write(|state| {
            Ok((
                (),
                vec![state.plan_set_mode(subject.as_deref(), mode, force)?],
            ))
        })
        .await?;
    ok(json!({ "mode": mode }))
}

async fn delete_subject_mode(
    State(store): State<Shared>,
    Path(subject): Path<String>,
) -> Result<Answer> {
    let previous = store
        .write(|state| state.plan_delete_mode(&subject).map(|(p, r)| (p, vec![r])))
        .await?;
    ok(json!({ "mode": previous }))
}

async fn check_all(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<Answer> {
    check(store, subject, None, p, request)
}

async fn check_version(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<Answer> {
    let spec = VersionSpec::parse(&version)?;
    check(store, subject, Some(spec), p, request)
}

fn check(
    store: Shared,
    subject: String,
    version: Option<VersionSpec>,
    p: HashMap<String, String>,
    request: SchemaRequest,
) -> Result<Answer> {
    let problems =
        store
            .state()
            .check_compatibility(&subject, version, &request, flag(&p, "normalize"))?;
    let mut body = json!({ "is_compatible": problems.is_empty() });
    if flag(&p, "verbose") {
        body["messages"] = json!(problems);
    }
    ok(body)
}
