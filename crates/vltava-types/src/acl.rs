//! The vocabulary of Kafka's ACLs, with their wire codes and names: shared by the metadata
//! records that store ACLs and the tools that manage them.

use serde::{Deserialize, Serialize};

/// The name of the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal resource name that matches every name.
pub const WILDCARD: &str = "*";
/// The principal that matches every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant,)* }

        impl $name {
            pub fn from_wire(code: i8) -> Option<Self> {
                match code { $($code => Some(Self::$variant),)* _ => None }
            }
            pub fn wire(self) -> i8 {
                match self { $(Self::$variant => $code,)* }
            }
            /// Kafka's name (`ResourceType.TOPIC`, `AclOperation.READ`, ...).
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $text,)* }
            }
            /// Parses Kafka's name, in any case, with `-` or `_` between words.
            pub fn parse(s: &str) -> Option<Self> {
                let s = s.trim().to_ascii_uppercase().replace('-', "_");
                match s.as_str() { $($text => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

wire_enum!(
    /// Kafka's `ResourceType` of an ACL, with its wire code.
    AclResourceType {
        Topic = 2 => "TOPIC",
        Group = 3 => "GROUP",
        Cluster = 4 => "CLUSTER",
        TransactionalId = 5 => "TRANSACTIONAL_ID",
        DelegationToken = 6 => "DELEGATION_TOKEN",
        User = 7 => "USER",
    }
);

wire_enum!(
    /// Kafka's `PatternType` of a stored ACL (KIP-290).
    PatternType {
        Literal = 3 => "LITERAL",
        Prefixed = 4 => "PREFIXED",
    }
);

wire_enum!(
    /// Kafka's `AclOperation`, with its wire code.
    AclOperation {
        All = 2 => "ALL",
        Read = 3 => "READ",
        Write = 4 => "WRITE",
        Create = 5 => "CREATE",
        Delete = 6 => "DELETE",
        Alter = 7 => "ALTER",
        Describe = 8 => "DESCRIBE",
        ClusterAction = 9 => "CLUSTER_ACTION",
        DescribeConfigs = 10 => "DESCRIBE_CONFIGS",
        AlterConfigs = 11 => "ALTER_CONFIGS",
        IdempotentWrite = 12 => "IDEMPOTENT_WRITE",
        CreateTokens = 13 => "CREATE_TOKENS",
        DescribeTokens = 14 => "DESCRIBE_TOKENS",
    }
);

wire_enum!(
    /// Kafka's `AclPermissionType`.
    AclPermission {
        Deny = 2 => "DENY",
        Allow = 3 => "ALLOW",
    }
);

/// The wire code of ANY in every ACL enum and filter.
pub const ANY: i8 = 1;
/// The wire code of the MATCH pattern filter.
pub const MATCH: i8 = 2;
