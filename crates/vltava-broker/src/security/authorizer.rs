//! Kafka's StandardAuthorizer (`authorizer.class.name`): decisions over the ACLs of the
//! current metadata image, so a committed CreateAcls or DeleteAcls applies on every broker
//! with the batch that carries it.

use std::sync::Arc;

use vltava_metadata::acl::{self, AuthorizerSettings};

use crate::config::BrokerConfig;
use crate::context::{AclOperation, Authorizer, RequestContext, Resource};
use crate::controller::Controller;

/// The class names that select it: Kafka's and our own.
pub const CLASS_NAMES: [&str; 2] = [
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "vltava.StandardAuthorizer",
];

pub struct StandardAuthorizer {
    controller: Arc<Controller>,
    settings: AuthorizerSettings,
}

impl StandardAuthorizer {
    /// The authorizer `config` asks for, if any (`None`: everyone may do everything).
    pub fn from_config(
        config: &BrokerConfig,
        controller: &Arc<Controller>,
    ) -> Result<Option<Self>, String> {
        let class = config
            .props
            .get("authorizer.class.name")
            .map_or("", |s| s.trim());
        if class.is_empty() {
            return Ok(None);
        }
        if !CLASS_NAMES.contains(&class) {
            return Err(format!(
                "authorizer.class.name={class}: only StandardAuthorizer ({}) is available",
                CLASS_NAMES.join(" or ")
            ));
        }
        Ok(Some(Self {
            controller: Arc::clone(controller),
            settings: AuthorizerSettings::new(
                config.props.get("super.users").map_or("", String::as_str),
                config.get_bool("allow.everyone.if.no.acl.found"),
            ),
        }))
    }
}

impl Authorizer for StandardAuthorizer {
    fn authorize(&self, ctx: &RequestContext, op: AclOperation, resource: Resource<'_>) -> bool {
        let image = self.controller.image();
        let (resource_type, name) = resource.acl_key();
        let allowed = acl::authorize(
            image.acls.values(),
            &self.settings,
            &ctx.principal().to_string(),
            &ctx.client_address().to_string(),
            op,
            resource_type,
            name,
        );
        if !allowed {
            tracing::debug!(
                principal = %ctx.principal(),
                host = %ctx.client_address(),
                operation = op.name(),
                resource = ?resource,
                "denied"
            );
        }
        allowed
    }

    fn uses_acls(&self) -> bool {
        true
    }
}
