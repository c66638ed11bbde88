use rdkafka::error::KafkaError;
use thiserror::Error;

/// Why a command failed. Messages are printed as `error: <message>` and should tell the
/// user what to do next.
///
/// `Usage` carries free text on purpose: it is the post-parse counterpart of clap's own
/// usage errors (arguments that parse but make no sense together), and exits with 2 like them.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("no broker answered at {bootstrap} within {timeout_ms} ms (is a broker running there? set --bootstrap-server or VLTAVA_BOOTSTRAP)")]
    NoBroker { bootstrap: String, timeout_ms: u64 },
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error("{resource}: {reason}")]
    Refused { resource: String, reason: String },
    #[error("topic '{topic}' does not exist")]
    UnknownTopic { topic: String },
    #[error("broker {id} is not in the cluster (brokers: {known})")]
    UnknownBroker { id: i32, known: String },
    #[error("consumer group '{group}' does not exist")]
    UnknownGroup { group: String },
    #[error("consumer group '{group}' is {state} with {members} member(s); stop its consumers before resetting offsets")]
    GroupActive {
        group: String,
        state: String,
        members: usize,
    },
    #[error("{failed} of {total} records were not delivered")]
    Delivery { failed: u64, total: u64 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write output: {0}")]
    Write(#[source] std::io::Error),
    /// stdout was closed by its reader (`vltava consume t | head`): stop quietly.
    #[error("broken pipe")]
    BrokenPipe,
    #[error("{what} timed out after {timeout_ms} ms")]
    Timeout { what: String, timeout_ms: u64 },
    #[error("schema registry: {reason}")]
    Schema { reason: String },
}

impl Error {
    /// 2 for usage errors, 1 for everything that went wrong talking to the cluster.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::BrokenPipe => 0,
            _ => 1,
        }
    }

    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
        let context = context.into();
        move |source| Error::Kafka { context, source }
    }

    pub(crate) fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Error::BrokenPipe
        } else {
            Error::Write(e)
        }
    }
}
