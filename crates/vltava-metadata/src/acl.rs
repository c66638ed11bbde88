//! Kafka's ACLs: bindings of a resource pattern to a principal, host, operation and
//! permission, stored as metadata records, and StandardAuthorizer's decision over them.
//! Everything here is pure, so the rules are tested without a broker.

use serde::{Deserialize, Serialize};

pub use vltava_types::acl::*;

/// One ACL: who may (or may not) do what to which resources, from where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: AclResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `Type:name`, for example `User:alice`; `User:*` is every user.
    pub principal: String,
    /// A client IP address, or `*`.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclBinding {
    /// Why Kafka would refuse to store this binding, if it would.
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_name.is_empty() {
            return Err("the resource name must not be empty".into());
        }
        if self.resource_type == AclResourceType::Cluster
            && (self.resource_name != CLUSTER_NAME || self.pattern_type != PatternType::Literal)
        {
            return Err(format!(
                "the cluster resource is the literal name {CLUSTER_NAME}"
            ));
        }
        match self.principal.split_once(':') {
            Some((t, n)) if !t.is_empty() && !n.is_empty() => {}
            _ => {
                return Err(format!(
                    "could not parse principal {:?}: expected Type:name",
                    self.principal
                ))
            }
        }
        if self.host.is_empty() {
            return Err("the host must be an address or *".into());
        }
        Ok(())
    }

    /// Whether this binding's pattern covers the resource `name` of `resource_type`.
    pub fn covers(&self, resource_type: AclResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }
}

/// Operations an ALLOW of `granted` also allows (Kafka's implied operations).
fn implies(granted: AclOperation, wanted: AclOperation) -> bool {
    use AclOperation::*;
    granted == All
        || granted == wanted
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

/// The settings of StandardAuthorizer besides the ACLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerSettings {
    /// `super.users`: principals allowed everything.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_if_no_acl: bool,
}

impl AuthorizerSettings {
    /// `super.users` is a `;`-separated list of principals.
    pub fn new(super_users: &str, allow_if_no_acl: bool) -> Self {
        Self {
            super_users: super_users
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            allow_if_no_acl,
        }
    }
}

/// StandardAuthorizer's decision: super users may do anything; otherwise a DENY that
/// matches wins over any ALLOW; an ALLOW of the operation (or of one that implies it)
/// allows; with no ACL on the resource at all, `allow.everyone.if.no.acl.found` decides.
pub fn authorize<'a>(
    acls: impl IntoIterator<Item = &'a AclBinding>,
    settings: &AuthorizerSettings,
    principal: &str,
    host: &str,
    operation: AclOperation,
    resource_type: AclResourceType,
    resource_name: &str,
) -> bool {
    if settings.super_users.iter().any(|s| s == principal) {
        return true;
    }
    let mut any_on_resource = false;
    let mut allowed = false;
    for acl in acls {
        if !acl.covers(resource_type, resource_name) {
            continue;
        }
        any_on_resource = true;
        let who = acl.principal == principal
            || (acl.principal == WILDCARD_PRINCIPAL && principal.starts_with("User:"));
        if !who || !(acl.host == WILDCARD || acl.host == host) {
            continue;
        }
        match acl.permission {
            AclPermission::Deny
                if acl.operation == operation || acl.operation == AclOperation::All =>
            {
                return false
            }
            AclPermission::Deny => {}
            AclPermission::Allow => allowed |= implies(acl.operation, operation),
        }
    }
    allowed || (!any_on_resource && settings.allow_if_no_acl)
}

/// A DescribeAcls or DeleteAcls filter, with Kafka's wire codes (1 is ANY; `None` strings
/// match anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    /// ANY, MATCH, LITERAL or PREFIXED.
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    /// Why Kafka would refuse this filter, if it would (an unknown code anywhere).
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_type != ANY && AclResourceType::from_wire(self.resource_type).is_none() {
            return Err(format!("unknown resource type {}", self.resource_type));
        }
        if ![ANY, MATCH].contains(&self.pattern_type)
            && PatternType::from_wire(self.pattern_type).is_none()
        {
            return Err(format!("unknown pattern type {}", self.pattern_type));
        }
        if self.operation != ANY && AclOperation::from_wire(self.operation).is_none() {
            return Err(format!("unknown operation {}", self.operation));
        }
        if self.permission != ANY && AclPermission::from_wire(self.permission).is_none() {
            return Err(format!("unknown permission type {}", self.permission));
        }
        Ok(())
    }

    /// Kafka's `AclBindingFilter.matches`: MATCH selects every binding that would apply to
    /// the named resource (the literal name, the `*` wildcard, and covering prefixes).
    pub fn matches(&self, b: &AclBinding) -> bool {
        let code_ok = |want: i8, got: i8| want == ANY || want == got;
        if !code_ok(self.resource_type, b.resource_type.wire())
            || !code_ok(self.operation, b.operation.wire())
            || !code_ok(self.permission, b.permission.wire())
        {
            return false;
        }
        if self.principal.as_ref().is_some_and(|p| *p != b.principal)
            || self.host.as_ref().is_some_and(|h| *h != b.host)
        {
            return false;
        }
        if ![ANY, MATCH].contains(&self.pattern_type) && self.pattern_type != b.pattern_type.wire()
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type != MATCH {
            return *name == b.resource_name;
        }
        match b.pattern_type {
            PatternType::Literal => *name == b.resource_name || b.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&b.resource_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        rt: AclResourceType,
        name: &str,
        pt: PatternType,
        who: &str,
        op: AclOperation,
        perm: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    use AclOperation::*;
    use AclPermission::*;
    use AclResourceType::*;
    use PatternType::*;

    fn can(
        acls: &[AclBinding],
        who: &str,
        op: AclOperation,
        rt: AclResourceType,
        name: &str,
    ) -> bool {
        authorize(
            acls,
            &AuthorizerSettings::new("User:admin", false),
            who,
            "10.0.0.1",
            op,
            rt,
            name,
        )
    }

    #[test]
    fn deny_by_default_and_super_users_may_do_anything() {
        assert!(!can(&[], "User:alice", Read, Topic, "t"));
        assert!(can(&[], "User:admin", Alter, Cluster, CLUSTER_NAME));
        let open = AuthorizerSettings::new("", true);
        assert!(authorize(&[], &open, "User:alice", "h", Read, Topic, "t"));
        // Any ACL on the resource, even for someone else, closes it.
        let bob = [acl(Topic, "t", Literal, "User:bob", Read, Allow)];
        assert!(!authorize(&bob, &open, "User:alice", "h", Read, Topic, "t"));
        assert!(authorize(
            &bob,
            &open,
            "User:alice",
            "h",
            Read,
            Topic,
            "other"
        ));
    }

    #[test]
    fn patterns_principals_hosts_and_implied_operations() {
        let acls = [
            acl(Topic, "orders", Literal, "User:alice", Read, Allow),
            acl(Topic, "pay-", Prefixed, "User:*", Write, Allow),
            acl(Group, "*", Literal, "User:alice", All, Allow),
            acl(
                Cluster,
                CLUSTER_NAME,
                Literal,
                "User:ops",
                AlterConfigs,
                Allow,
            ),
        ];
        assert!(can(&acls, "User:alice", Read, Topic, "orders"));
        assert!(can(&acls, "User:alice", Describe, Topic, "orders"));
        assert!(!can(&acls, "User:alice", Write, Topic, "orders"));
        assert!(!can(&acls, "User:alice", Read, Topic, "orders2"));
        assert!(can(&acls, "User:bob", Write, Topic, "pay-eu"));
        assert!(can(&acls, "User:bob", Describe, Topic, "pay-eu"));
        assert!(!can(&acls, "User:bob", Write, Topic, "pa"));
        assert!(!can(&acls, "Group:bob", Write, Topic, "pay-eu"));
        assert!(can(&acls, "User:alice", Delete, Group, "any-group"));
        assert!(can(
            &acls,
            "User:ops",
            DescribeConfigs,
            Cluster,
            CLUSTER_NAME
        ));
        assert!(!can(&acls, "User:ops", Describe, Cluster, CLUSTER_NAME));
        let mut from = acl(Topic, "t", Literal, "User:carol", Read, Allow);
        from.host = "10.0.0.2".into();
        assert!(!can(&[from.clone()], "User:carol", Read, Topic, "t"));
        from.host = "10.0.0.1".into();
        assert!(can(&[from], "User:carol", Read, Topic, "t"));
    }

    #[test]
    fn a_deny_beats_any_allow_but_implies_nothing() {
        let acls = [
            acl(Topic, "*", Literal, "User:*", All, Allow),
            acl(Topic, "secret", Prefixed, "User:mallory", Read, Deny),
        ];
        assert!(can(&acls, "User:mallory", Read, Topic, "public"));
        assert!(!can(&acls, "User:mallory", Read, Topic, "secret-plans"));
        assert!(can(&acls, "User:mallory", Describe, Topic, "secret-plans"));
        let all = [acl(Topic, "*", Literal, "User:mallory", All, Deny)];
        assert!(!can(&all, "User:mallory", Describe, Topic, "x"));
        assert!(can(&all, "User:admin", Describe, Topic, "x"));
    }

    #[test]
    fn filters_follow_kafkas_match_rules() {
        let lit = acl(Topic, "orders", Literal, "User:a", Read, Allow);
        let wild = acl(Topic, "*", Literal, "User:a", Read, Allow);
        let pre = acl(Topic, "ord", Prefixed, "User:a", Read, Allow);
        let any = AclFilter {
            resource_type: ANY,
            resource_name: None,
            pattern_type: ANY,
            principal: None,
            host: None,
            operation: ANY,
            permission: ANY,
        };
        assert!([&lit, &wild, &pre].iter().all(|b| any.matches(b)));
        let named = |pattern_type| AclFilter {
            resource_name: Some("orders".into()),
            pattern_type,
            ..any.clone()
        };
        let hits = |f: &AclFilter| [&lit, &wild, &pre].iter().filter(|b| f.matches(b)).count();
        assert_eq!(hits(&named(MATCH)), 3);
        assert_eq!(hits(&named(ANY)), 1);
        assert_eq!(hits(&named(Literal.wire())), 1);
        assert_eq!(hits(&named(Prefixed.wire())), 0);
        let denies = AclFilter {
            permission: Deny.wire(),
            ..any.clone()
        };
        assert_eq!(hits(&denies), 0);
        assert!(AclFilter {
            operation: 0,
            ..any.clone()
        }
        .validate()
        .is_err());
        assert!(any.validate().is_ok());
    }

    #[test]
    fn acl_records_round_trip_and_rebuild_the_image() {
        let id = uuid::Uuid::from_u128(7);
        let binding = acl(Topic, "pay-", Prefixed, "User:*", Write, Allow);
        let record = crate::MetadataRecord::AccessControlEntryRecord {
            id,
            binding: binding.clone(),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            json.contains(r#""type":"AccessControlEntryRecord""#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<crate::MetadataRecord>(&json).unwrap(),
            record
        );
        let mut image = crate::MetadataImage::default();
        image.apply(&record);
        assert_eq!(image.acls[&id], binding);
        let mut copy = crate::MetadataImage::default();
        for r in image.to_records() {
            copy.apply(&r);
        }
        assert_eq!(copy, image);
        image.apply(&crate::MetadataRecord::RemoveAccessControlEntryRecord { id });
        assert!(image.acls.is_empty());
    }

    #[test]
    fn bindings_are_validated_as_kafka_does() {
        let ok = acl(Topic, "t", Literal, "User:a", Read, Allow);
        assert!(ok.validate().is_ok());
        assert!(AclBinding {
            principal: "alice".into(),
            ..ok.clone()
        }
        .validate()
        .is_err());
        assert!(AclBinding {
            resource_name: "".into(),
            ..ok.clone()
        }
        .validate()
        .is_err());
        let cluster = acl(Cluster, "other", Literal, "User:a", Alter, Allow);
        assert!(cluster.validate().is_err());
        assert_eq!(
            AclOperation::parse("describe-configs"),
            Some(DescribeConfigs)
        );
        assert_eq!(
            AclResourceType::parse("transactional_id"),
            Some(TransactionalId)
        );
        for code in 2..=14 {
            assert_eq!(AclOperation::from_wire(code).unwrap().wire(), code);
        }
    }
}
