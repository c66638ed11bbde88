//! Identifiers that cross crate boundaries.
//!
//! An offset, a leader epoch, a producer id and a node id are all small integers on the wire,
//! and a call that swaps two of them still compiles when they are plain `i64`/`i32`. Each is a
//! distinct type here so storage, metadata, the coordinators and the broker cannot mix them up.
//! Inside a crate, arithmetic on the raw value is fine; the types guard the seams. Each is
//! `#[serde(transparent)]`, so records that hold one keep the plain number's encoding.

pub mod acl;

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($raw:ty), none = $none:expr) => {
        $(#[$doc])*
        #[derive(
            Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        #[repr(transparent)]
        pub struct $name($raw);

        impl $name {
            /// Kafka's "none" sentinel for this identifier on the wire.
            pub const NONE: Self = Self($none);

            pub const fn new(raw: $raw) -> Self {
                Self(raw)
            }

            /// The raw value, for the wire and for arithmetic inside a crate.
            pub const fn get(self) -> $raw {
                self.0
            }

            /// Whether this is the wire's "none" sentinel.
            pub const fn is_none(self) -> bool {
                self.0 == $none
            }
        }

        impl From<$raw> for $name {
            fn from(raw: $raw) -> Self {
                Self(raw)
            }
        }

        impl From<$name> for $raw {
            fn from(v: $name) -> Self {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A position in a partition's log. `NONE` (-1) is Kafka's "unknown offset".
    Offset(i64),
    none = -1
);

id_type!(
    /// The epoch of a partition's leadership. `NONE` (-1) is "no epoch known".
    LeaderEpoch(i32),
    none = -1
);

id_type!(
    /// A producer id handed out by InitProducerId. `NONE` (-1) marks a non-idempotent batch.
    ProducerId(i64),
    none = -1
);

id_type!(
    /// A producer's epoch; bumped to fence older instances. `NONE` (-1) as on the wire.
    ProducerEpoch(i16),
    none = -1
);

id_type!(
    /// A broker's or controller's `node.id`. `NONE` (-1) means "no leader".
    NodeId(i32),
    none = -1
);

impl Offset {
    /// The offset `n` positions later (`n` may be negative).
    #[must_use]
    pub const fn plus(self, n: i64) -> Self {
        Self(self.0 + n)
    }

    /// The offset after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// How many offsets lie from `earlier` up to (not including) `self`.
    pub const fn since(self, earlier: Offset) -> i64 {
        self.0 - earlier.0
    }
}

impl ProducerEpoch {
    /// The epoch after this one, or `None` past `i16::MAX` (Kafka then rotates the id).
    pub fn checked_next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl LeaderEpoch {
    /// The epoch after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_keeps_the_plain_number() {
        let o = Offset::new(42);
        assert_eq!(serde_json::to_string(&o).unwrap(), "42");
        let back: Offset = serde_json::from_str("42").unwrap();
        assert_eq!(back, o);
        let n: NodeId = serde_json::from_str("-1").unwrap();
        assert!(n.is_none());
    }

    #[test]
    fn offsets_order_and_step() {
        let a = Offset::new(10);
        assert!(a < a.next());
        assert_eq!(a.plus(5).since(a), 5);
        assert_eq!(i64::from(a.plus(-10)), 0);
        assert_eq!(LeaderEpoch::NONE.next(), LeaderEpoch::new(0));
        assert_eq!(ProducerEpoch::NONE.get(), -1);
        assert_eq!(format!("{}", ProducerId::new(7)), "7");
    }
}

/// The SCRAM mechanisms Kafka supports, with their wire codes (`ScramMechanism.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl ScramMechanism {
    pub fn from_wire(t: i8) -> Option<Self> {
        match t {
            1 => Some(Self::ScramSha256),
            2 => Some(Self::ScramSha512),
            _ => None,
        }
    }

    pub fn wire(self) -> i8 {
        match self {
            Self::ScramSha256 => 1,
            Self::ScramSha512 => 2,
        }
    }

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256" => Some(Self::ScramSha256),
            "SCRAM-SHA-512" => Some(Self::ScramSha512),
            _ => None,
        }
    }
}
