//! Client quotas (KIP-546): which entities may carry which quota, and which quota applies to
//! a client. Quotas are `ClientQuotaRecord`s in the metadata log; [`QuotaTable`] is the image's
//! quotas indexed for the lookup every throttled request makes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// An entity: each of its types (`user`, `client-id`, `ip`) with a name, or `None` for that
/// type's default entity.
pub type QuotaEntity = BTreeMap<String, Option<String>>;

/// A quota's value. Kafka's records carry a float64; equality is by bits so records stay `Eq`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

/// The quotas a client can be given, by Kafka's key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKey {
    ProducerByteRate,
    ConsumerByteRate,
    RequestPercentage,
    ControllerMutationRate,
    ConnectionCreationRate,
}

impl QuotaKey {
    pub const ALL: [QuotaKey; 5] = [
        Self::ProducerByteRate,
        Self::ConsumerByteRate,
        Self::RequestPercentage,
        Self::ControllerMutationRate,
        Self::ConnectionCreationRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ProducerByteRate => "producer_byte_rate",
            Self::ConsumerByteRate => "consumer_byte_rate",
            Self::RequestPercentage => "request_percentage",
            Self::ControllerMutationRate => "controller_mutation_rate",
            Self::ConnectionCreationRate => "connection_creation_rate",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether values must be whole numbers (Kafka types these LONG or INT).
    fn whole(self) -> bool {
        !matches!(self, Self::RequestPercentage | Self::ControllerMutationRate)
    }
}

/// Checks an entity as AlterClientQuotas names it: `user` and/or `client-id`, or `ip` alone;
/// each type once; an ip's name must be an address.
pub fn check_entity(parts: &[(String, Option<String>)]) -> Result<QuotaEntity, String> {
    let mut entity = QuotaEntity::new();
    for (t, name) in parts {
        if !matches!(t.as_str(), USER | CLIENT_ID | IP) {
            return Err(format!("Unhandled client quota entity type: {t}"));
        }
        if name.as_deref() == Some("") {
            return Err(format!("Empty {t} not supported"));
        }
        if entity.insert(t.clone(), name.clone()).is_some() {
            return Err(format!(
                "Duplicate {t} entity type in the client quota entity"
            ));
        }
    }
    if entity.is_empty() {
        return Err("Invalid empty client quota entity".into());
    }
    if entity.contains_key(IP) {
        if entity.len() > 1 {
            return Err("IP entity should not be combined with User or ClientId".into());
        }
        if let Some(Some(ip)) = entity.get(IP) {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("{ip} is not a valid IP or resolvable host."));
            }
        }
    }
    Ok(entity)
}

/// Checks that `key` may be set on `entity` to `value` (for a removal, only the key).
pub fn check_op(entity: &QuotaEntity, key: &str, value: Option<f64>) -> Result<QuotaKey, String> {
    let invalid = || format!("Invalid configuration key {key}");
    let k = QuotaKey::parse(key).ok_or_else(invalid)?;
    if entity.contains_key(IP) != (k == QuotaKey::ConnectionCreationRate) {
        return Err(invalid());
    }
    if let Some(v) = value {
        if !v.is_finite() || v <= 0.0 {
            return Err(format!("Quota {key} must be greater than 0"));
        }
        if k.whole() && v.fract() != 0.0 {
            return Err(format!("{key} cannot be a fractional value."));
        }
    }
    Ok(k)
}

/// One `match_type` of a DescribeClientQuotas filter component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The entity has this type with this name.
    Exact(String),
    /// The entity has this type's default.
    Default,
    /// The entity has this type, with any name or the default.
    Any,
}

/// Whether `entity` passes a DescribeClientQuotas filter. `strict`: it may have no type the
/// filter does not name.
pub fn matches(entity: &QuotaEntity, filter: &[(String, Match)], strict: bool) -> bool {
    let all = filter.iter().all(|(t, m)| match (entity.get(t), m) {
        (None, _) => false,
        (Some(Some(n)), Match::Exact(want)) => n == want,
        (Some(None), Match::Default) => true,
        (Some(_), Match::Any) => true,
        _ => false,
    });
    all && (!strict || entity.keys().all(|t| filter.iter().any(|(f, _)| f == t)))
}

/// Whose traffic one quota meters together: the user's name, the client id, both, or (for
/// `ip`) the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeterKey {
    pub user: Option<String>,
    pub client_id: Option<String>,
}

/// Quotas of one level of user: per client id, for the default client id, and for the user
/// whatever the client.
#[derive(Debug, Default, Clone)]
struct Level {
    clients: HashMap<String, f64>,
    default_client: Option<f64>,
    alone: Option<f64>,
}

#[derive(Debug, Default, Clone)]
struct KeyTable {
    users: HashMap<String, Level>,
    default_user: Level,
    no_user: Level,
    ips: HashMap<String, f64>,
    default_ip: Option<f64>,
}

/// The image's quotas, indexed for lookup without allocation.
#[derive(Debug, Default, Clone)]
pub struct QuotaTable {
    keys: BTreeMap<QuotaKey, KeyTable>,
}

impl QuotaTable {
    pub fn build(quotas: &BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>) -> Self {
        let mut keys: BTreeMap<QuotaKey, KeyTable> = BTreeMap::new();
        for (entity, values) in quotas {
            for (key, value) in values {
                let Some(k) = QuotaKey::parse(key) else {
                    continue;
                };
                let t = keys.entry(k).or_default();
                let v = value.0;
                if let Some(ip) = entity.get(IP) {
                    match ip {
                        Some(ip) => {
                            t.ips.insert(ip.clone(), v);
                        }
                        None => t.default_ip = Some(v),
                    }
                    continue;
                }
                let level = match entity.get(USER) {
                    None => &mut t.no_user,
                    Some(None) => &mut t.default_user,
                    Some(Some(u)) => t.users.entry(u.clone()).or_default(),
                };
                match entity.get(CLIENT_ID) {
                    None => level.alone = Some(v),
                    Some(None) => level.default_client = Some(v),
                    Some(Some(c)) => {
                        level.clients.insert(c.clone(), v);
                    }
                }
            }
        }
        Self { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether any entity has a quota for `key`.
    pub fn has(&self, key: QuotaKey) -> bool {
        self.keys.contains_key(&key)
    }

    /// The quota of `key` for a client, in Kafka's order of precedence: user and client id,
    /// user and default client id, user, default user and client id, default user and
    /// default client id, default user, client id, default client id. Also says whose
    /// traffic it meters: a default entity meters each user or client on its own, as in Kafka.
    pub fn lookup(&self, key: QuotaKey, user: &str, client_id: &str) -> Option<(f64, MeterKey)> {
        let t = self.keys.get(&key)?;
        let both = || MeterKey {
            user: Some(user.to_string()),
            client_id: Some(client_id.to_string()),
        };
        let user_only = || MeterKey {
            user: Some(user.to_string()),
            client_id: None,
        };
        let client_only = || MeterKey {
            user: None,
            client_id: Some(client_id.to_string()),
        };
        for level in [t.users.get(user), Some(&t.default_user)]
            .into_iter()
            .flatten()
        {
            if let Some(v) = level.clients.get(client_id) {
                return Some((*v, both()));
            }
            if let Some(v) = level.default_client {
                return Some((v, both()));
            }
            if let Some(v) = level.alone {
                return Some((v, user_only()));
            }
        }
        if let Some(v) = t.no_user.clients.get(client_id) {
            return Some((*v, client_only()));
        }
        t.no_user.default_client.map(|v| (v, client_only()))
    }

    /// The `connection_creation_rate` of an address: its own, else the default ip's.
    pub fn ip_rate(&self, ip: &str) -> Option<f64> {
        let t = self.keys.get(&QuotaKey::ConnectionCreationRate)?;
        t.ips.get(ip).copied().or(t.default_ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(parts: &[(&str, Option<&str>)]) -> QuotaEntity {
        parts
            .iter()
            .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
            .collect()
    }

    /// An entity's parts.
    type Parts<'a> = &'a [(&'a str, Option<&'a str>)];

    fn table(quotas: &[(Parts<'_>, &str, f64)]) -> QuotaTable {
        let mut m: BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>> = BTreeMap::new();
        for (e, k, v) in quotas {
            m.entry(entity(e))
                .or_default()
                .insert(k.to_string(), QuotaValue(*v));
        }
        QuotaTable::build(&m)
    }

    #[test]
    fn precedence_is_kafkas() {
        let p = "producer_byte_rate";
        let levels: Vec<(Parts<'_>, f64)> = vec![
            (&[("user", Some("u")), ("client-id", Some("c"))], 1.0),
            (&[("user", Some("u")), ("client-id", None)], 2.0),
            (&[("user", Some("u"))], 3.0),
            (&[("user", None), ("client-id", Some("c"))], 4.0),
            (&[("user", None), ("client-id", None)], 5.0),
            (&[("user", None)], 6.0),
            (&[("client-id", Some("c"))], 7.0),
            (&[("client-id", None)], 8.0),
        ];
        // Removing the most specific level each time reveals the next one.
        for skip in 0..levels.len() {
            let t = table(
                &levels[skip..]
                    .iter()
                    .map(|(e, v)| (*e, p, *v))
                    .collect::<Vec<_>>(),
            );
            let (v, _) = t.lookup(QuotaKey::ProducerByteRate, "u", "c").unwrap();
            assert_eq!(v, levels[skip].1);
        }
        assert!(table(&[])
            .lookup(QuotaKey::ProducerByteRate, "u", "c")
            .is_none());
    }

    #[test]
    fn defaults_meter_each_client_alone_and_named_users_together() {
        let t = table(&[
            (&[("user", Some("u"))], "consumer_byte_rate", 10.0),
            (&[("client-id", None)], "consumer_byte_rate", 20.0),
        ]);
        let (_, k) = t.lookup(QuotaKey::ConsumerByteRate, "u", "c1").unwrap();
        assert_eq!(
            k,
            MeterKey {
                user: Some("u".into()),
                client_id: None
            }
        );
        let (v, k) = t.lookup(QuotaKey::ConsumerByteRate, "v", "c1").unwrap();
        assert_eq!(v, 20.0);
        assert_eq!(
            k,
            MeterKey {
                user: None,
                client_id: Some("c1".into())
            }
        );
        assert!(t.lookup(QuotaKey::ProducerByteRate, "v", "c1").is_none());
    }

    #[test]
    fn ip_rates_fall_back_to_the_default_ip() {
        let t = table(&[
            (&[("ip", Some("10.0.0.1"))], "connection_creation_rate", 5.0),
            (&[("ip", None)], "connection_creation_rate", 50.0),
        ]);
        assert_eq!(t.ip_rate("10.0.0.1"), Some(5.0));
        assert_eq!(t.ip_rate("10.0.0.2"), Some(50.0));
        assert_eq!(table(&[]).ip_rate("10.0.0.2"), None);
    }

    #[test]
    fn entities_and_keys_are_checked() {
        let parts = |p: &[(&str, Option<&str>)]| {
            p.iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect::<Vec<_>>()
        };
        assert!(check_entity(&parts(&[("user", Some("u")), ("client-id", None)])).is_ok());
        assert!(check_entity(&parts(&[])).is_err());
        assert!(check_entity(&parts(&[("user", Some("u")), ("user", Some("v"))])).is_err());
        assert!(check_entity(&parts(&[("ip", None), ("user", None)])).is_err());
        assert!(check_entity(&parts(&[("ip", Some("not-an-ip"))])).is_err());
        assert!(check_entity(&parts(&[("group", Some("g"))])).is_err());
        assert!(check_entity(&parts(&[("user", Some(""))])).is_err());
        let user = entity(&[("user", Some("u"))]);
        let ip = entity(&[("ip", None)]);
        assert_eq!(
            check_op(&user, "producer_byte_rate", Some(1024.0)),
            Ok(QuotaKey::ProducerByteRate)
        );
        assert!(check_op(&user, "producer_byte_rate", Some(10.5)).is_err());
        assert!(check_op(&user, "request_percentage", Some(10.5)).is_ok());
        assert!(check_op(&user, "producer_byte_rate", Some(0.0)).is_err());
        assert!(check_op(&user, "connection_creation_rate", Some(5.0)).is_err());
        assert!(check_op(&user, "bogus", Some(5.0)).is_err());
        assert!(check_op(&ip, "connection_creation_rate", Some(5.0)).is_ok());
        assert!(check_op(&ip, "producer_byte_rate", None).is_err());
    }

    #[test]
    fn filters_match_like_kafkas() {
        let uc = entity(&[("user", Some("u")), ("client-id", None)]);
        let u = |m| vec![("user".to_string(), m)];
        assert!(matches(&uc, &u(Match::Exact("u".into())), false));
        assert!(!matches(&uc, &u(Match::Exact("u".into())), true));
        assert!(!matches(&uc, &u(Match::Default), false));
        assert!(matches(&uc, &u(Match::Any), false));
        let both = vec![
            ("user".to_string(), Match::Any),
            ("client-id".to_string(), Match::Default),
        ];
        assert!(matches(&uc, &both, true));
        assert!(matches(&uc, &[], false));
        assert!(!matches(&uc, &[], true));
    }

    #[test]
    fn records_set_and_remove_quotas_in_the_image() {
        use crate::{MetadataImage, MetadataRecord};
        let e = entity(&[("user", Some("u")), ("client-id", None)]);
        let set = MetadataRecord::ClientQuotaRecord {
            entity: e.clone(),
            key: "producer_byte_rate".into(),
            value: QuotaValue(1024.0),
            remove: false,
        };
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(
            json,
            r#"{"type":"ClientQuotaRecord","entity":{"client-id":null,"user":"u"},"key":"producer_byte_rate","value":1024.0}"#
        );
        assert_eq!(serde_json::from_str::<MetadataRecord>(&json).unwrap(), set);
        let mut image = MetadataImage::default();
        image.apply(&set);
        assert_eq!(
            image.client_quotas[&e]["producer_byte_rate"],
            QuotaValue(1024.0)
        );
        assert_eq!(image.to_records().last(), Some(&set));
        image.apply(&MetadataRecord::ClientQuotaRecord {
            entity: e,
            key: "producer_byte_rate".into(),
            value: QuotaValue(0.0),
            remove: true,
        });
        assert!(image.client_quotas.is_empty());
    }
}
