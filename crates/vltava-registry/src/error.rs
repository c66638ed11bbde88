//! The registry's errors, each carrying the Confluent error code and HTTP status that clients
//! switch on. The codes are a wire contract: clients such as confluent-kafka's
//! `SchemaRegistryClient` map 40401/40403 to "not found" and 409 to "incompatible".

/// Everything a registry operation can refuse or fail with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RegistryError {
    #[error("Subject '{subject}' not found.")]
    SubjectNotFound { subject: String },
    #[error("Version {version} not found.")]
    VersionNotFound { version: String },
    #[error("Schema {what} not found")]
    SchemaNotFound { what: String },
    #[error("Subject '{subject}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted { subject: String },
    #[error("Subject '{subject}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted { subject: String },
    #[error("Subject '{subject}' Version {version} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted { subject: String, version: i32 },
    #[error("Subject '{subject}' Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted { subject: String, version: i32 },
    #[error("Subject '{subject}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured { subject: String },
    #[error("Subject '{subject}' does not have subject-level mode configured")]
    SubjectModeNotConfigured { subject: String },
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: {}", messages.join(", "))]
    Incompatible {
        subject: String,
        messages: Vec<String>,
    },
    #[error("Invalid schema: {reason}")]
    InvalidSchema { reason: String },
    #[error("The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion { version: String },
    #[error("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibilityLevel,
    #[error("Invalid mode. Valid values are READWRITE, READONLY and IMPORT")]
    InvalidMode,
    #[error("{reason}")]
    OperationNotPermitted { reason: String },
    #[error("One or more references exist to the schema {{subject={subject},version={version}}}")]
    ReferenceExists { subject: String, version: i32 },
    #[error("Schema id {id} is already in use by a different schema")]
    IdInUse { id: i32 },
    #[error("The specified subject '{subject}' is not valid")]
    InvalidSubject { subject: String },
    #[error("{reason}")]
    BadRequest { reason: String },
    #[error("{reason}")]
    UnprocessableEntity { reason: String },
    #[error("HTTP 415 Unsupported Media Type")]
    UnsupportedMediaType,
    #[error("request body larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("HTTP 404 Not Found")]
    NotFound,
    #[error("Error while storing the record in the _schemas topic: {reason}")]
    Store { reason: String },
    #[error("Timed out waiting for the _schemas topic: {reason}")]
    Timeout { reason: String },
    #[error("Error while forwarding the request to the leader: {reason}")]
    ForwardingFailed { reason: String },
    #[error("Unknown leader: no registry instance leads yet")]
    UnknownLeader,
}

impl RegistryError {
    /// Confluent's `error_code` for this error.
    pub fn error_code(&self) -> u32 {
        use RegistryError::*;
        match self {
            SubjectNotFound { .. } => 40401,
            VersionNotFound { .. } => 40402,
            SchemaNotFound { .. } => 40403,
            SubjectSoftDeleted { .. } => 40404,
            SubjectNotSoftDeleted { .. } => 40405,
            VersionSoftDeleted { .. } => 40406,
            VersionNotSoftDeleted { .. } => 40407,
            SubjectCompatibilityNotConfigured { .. } => 40408,
            SubjectModeNotConfigured { .. } => 40409,
            Incompatible { .. } => 409,
            InvalidSchema { .. } => 42201,
            InvalidVersion { .. } => 42202,
            InvalidCompatibilityLevel => 42203,
            InvalidMode => 42204,
            OperationNotPermitted { .. } => 42205,
            ReferenceExists { .. } => 42206,
            IdInUse { .. } => 42207,
            InvalidSubject { .. } => 42208,
            BadRequest { .. } => 400,
            UnprocessableEntity { .. } => 422,
            UnsupportedMediaType => 415,
            PayloadTooLarge { .. } => 413,
            NotFound => 404,
            Store { .. } => 50001,
            Timeout { .. } => 50002,
            ForwardingFailed { .. } => 50003,
            UnknownLeader => 50004,
        }
    }

    /// The HTTP status Confluent answers this error with.
    pub fn http_status(&self) -> u16 {
        match self.error_code() {
            c @ 40401..=40499 => (c / 100) as u16,
            c @ 42201..=42299 => (c / 100) as u16,
            c @ 50001..=50099 => (c / 100) as u16,
            c => c as u16,
        }
    }
}
