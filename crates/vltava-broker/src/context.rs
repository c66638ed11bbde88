//! Who sent a request and through which listener, and the one place that decides whether
//! they may do it.
//!
//! Every handler receives a [`RequestContext`] and asks the broker's [`Authorizer`] before it
//! acts on a resource, so TLS, SASL and ACLs change what the context holds and which authorizer
//! is installed, never the handlers.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// Kafka's `security.protocol` of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's id of the protocol (`SecurityProtocol.id`), as broker registrations carry it.
    pub fn id(self) -> i16 {
        match self {
            Self::Plaintext => 0,
            Self::Ssl => 1,
            Self::SaslPlaintext => 2,
            Self::SaslSsl => 3,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }
}

/// Kafka's `KafkaPrincipal`: a type and a name, written `User:alice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaPrincipal {
    pub principal_type: Arc<str>,
    pub name: Arc<str>,
}

impl KafkaPrincipal {
    /// The principal of an unauthenticated connection.
    pub fn anonymous() -> Self {
        Self {
            principal_type: Arc::from("User"),
            name: Arc::from("ANONYMOUS"),
        }
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

/// What a connection knows about itself; shared by all its requests.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    pub listener_name: Arc<str>,
    pub security_protocol: SecurityProtocol,
    pub principal: KafkaPrincipal,
    pub client_address: IpAddr,
    /// Bytes of responses computed but not yet written (Fetch holds its size here).
    pub response_budget: Arc<tokio::sync::Semaphore>,
    /// Until when the connection reads no request: a throttled client's (KIP-219).
    pub mute: Arc<crate::quota::Mute>,
}

/// One request's context: its connection plus the header fields handlers need.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub connection: Arc<ConnectionContext>,
    pub client_id: Option<String>,
    pub api_key: vltava_protocol::ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestContext {
    pub fn principal(&self) -> &KafkaPrincipal {
        &self.connection.principal
    }

    pub fn listener_name(&self) -> &str {
        &self.connection.listener_name
    }

    pub fn client_address(&self) -> IpAddr {
        self.connection.client_address
    }

    /// `client_id` as Kafka's describe APIs show it (empty when absent).
    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or("")
    }
}

pub use vltava_metadata::acl::AclOperation;

/// The resource an operation acts on (Kafka's `ResourceType` with a literal name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Topic(&'a str),
    Group(&'a str),
    Cluster,
    TransactionalId(&'a str),
}

impl Resource<'_> {
    /// The ACL resource type and name this resource is matched by.
    pub fn acl_key(&self) -> (vltava_metadata::acl::AclResourceType, &str) {
        use vltava_metadata::acl::{AclResourceType as T, CLUSTER_NAME};
        match *self {
            Resource::Topic(n) => (T::Topic, n),
            Resource::Group(n) => (T::Group, n),
            Resource::Cluster => (T::Cluster, CLUSTER_NAME),
            Resource::TransactionalId(n) => (T::TransactionalId, n),
        }
    }
}

/// Decides whether a request's principal may perform an operation on a resource. One
/// instance serves the whole broker; handlers call it before acting.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, ctx: &RequestContext, op: AclOperation, resource: Resource<'_>) -> bool;

    /// Whether ACLs decide (`authorizer.class.name` is set): without, Kafka answers the ACL
    /// APIs with SECURITY_DISABLED.
    fn uses_acls(&self) -> bool {
        false
    }
}

/// The authorizer installed until ACLs exist: every principal may do everything, as in a
/// Kafka cluster without `authorizer.class.name`.
#[derive(Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &RequestContext, _: AclOperation, _: Resource<'_>) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_principal_is_kafkas() {
        assert_eq!(KafkaPrincipal::anonymous().to_string(), "User:ANONYMOUS");
        assert_eq!(
            SecurityProtocol::parse("sasl_ssl"),
            Some(SecurityProtocol::SaslSsl)
        );
        assert_eq!(SecurityProtocol::parse("x"), None);
    }
}
