//! TLS for `SSL` and `SASL_SSL` listeners, configured with Kafka's `ssl.*` keys.
//!
//! Only PEM key and trust stores are read (`ssl.keystore.type=PEM`, KIP-651): inline through
//! `ssl.keystore.certificate.chain` + `ssl.keystore.key` and `ssl.truststore.certificates`, or
//! from files named by `ssl.keystore.location` (key and chain in one file) and
//! `ssl.truststore.location`. JKS and PKCS12 stores are refused with a clear error.
//!
//! A client that presents a certificate is `User:<subject>`, the subject written as Java's
//! `X500Principal.getName()` writes it (RFC 2253: last RDN first, no spaces), which is what
//! Kafka's default `ssl.principal.mapping.rules` keep; others are `User:ANONYMOUS`.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::asn1_rs::ToDer;

use crate::context::KafkaPrincipal;
use crate::security::principal_rules::PrincipalRules;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listener {listener}: {key}={value} is not supported; use PEM")]
    UnsupportedStoreType {
        listener: String,
        key: &'static str,
        value: String,
    },
    #[error("listener {listener}: {what}")]
    Missing { listener: String, what: String },
    #[error("listener {listener}: cannot read {path}: {source}")]
    Read {
        listener: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listener {listener}: {key}: {reason}")]
    Pem {
        listener: String,
        key: &'static str,
        reason: String,
    },
    #[error("listener {listener}: ssl.client.auth={value}: expected none, requested or required")]
    BadClientAuth { listener: String, value: String },
    #[error("listener {listener}: ssl.enabled.protocols={value}: expected TLSv1.2 and/or TLSv1.3")]
    BadProtocols { listener: String, value: String },
    #[error("listener {listener}: ssl.principal.mapping.rules={value}: {reason}")]
    PrincipalMappingRules {
        listener: String,
        value: String,
        reason: String,
    },
    #[error("listener {listener}: {source}")]
    Rustls {
        listener: String,
        #[source]
        source: rustls::Error,
    },
    #[error("listener {listener}: truststore: {reason}")]
    Verifier { listener: String, reason: String },
}

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// The listener's key store: its certificate chain and private key.
type KeyStore = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_store(listener: &str, path: String) -> Result<Vec<u8>, TlsError> {
    std::fs::read(&path).map_err(|source| TlsError::Read {
        listener: listener.to_string(),
        path,
        source,
    })
}

fn pem_only(
    listener: &str,
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
) -> Result<(), TlsError> {
    // Kafka's default store type is JKS, so PEM must be asked for.
    let value = get(key).unwrap_or_else(|| "JKS".to_string());
    if value.eq_ignore_ascii_case("PEM") {
        Ok(())
    } else {
        Err(TlsError::UnsupportedStoreType {
            listener: listener.to_string(),
            key,
            value,
        })
    }
}

/// `ssl.keystore.*`: `None` when the listener has no key store at all.
fn key_store(
    listener: &str,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<KeyStore>, TlsError> {
    let l = || listener.to_string();
    let pem_err = |key: &'static str, reason: String| TlsError::Pem {
        listener: l(),
        key,
        reason,
    };
    let (chain_pem, key_pem, chain_key, key_key) = match (
        get("ssl.keystore.certificate.chain"),
        get("ssl.keystore.key"),
        get("ssl.keystore.location"),
    ) {
        (None, None, None) => return Ok(None),
        (Some(chain), Some(key), _) => (
            chain.into_bytes(),
            key.into_bytes(),
            "ssl.keystore.certificate.chain",
            "ssl.keystore.key",
        ),
        (None, None, Some(path)) => {
            let both = read_store(listener, path)?;
            (
                both.clone(),
                both,
                "ssl.keystore.location",
                "ssl.keystore.location",
            )
        }
        _ => {
            return Err(TlsError::Missing {
                listener: l(),
                what: "needs ssl.keystore.location, or ssl.keystore.certificate.chain with ssl.keystore.key".into(),
            })
        }
    };
    pem_only(listener, get, "ssl.keystore.type")?;
    if get("ssl.key.password").is_some() {
        return Err(pem_err(
            key_key,
            "encrypted private keys (ssl.key.password) are not supported".into(),
        ));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(chain_key, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(chain_key, "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        pem_err(
            key_key,
            format!("no usable PRIVATE KEY block (an unencrypted PKCS#8, PKCS#1 or SEC1 key is needed): {e}"),
        )
    })?;
    Ok(Some((chain, key)))
}

/// `ssl.truststore.*`: the certificates peers are checked against; `None` when unset.
fn trust_store(
    listener: &str,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<RootCertStore>, TlsError> {
    let trust_pem = match (
        get("ssl.truststore.certificates"),
        get("ssl.truststore.location"),
    ) {
        (Some(inline), _) => inline.into_bytes(),
        (None, Some(path)) => read_store(listener, path)?,
        (None, None) => return Ok(None),
    };
    pem_only(listener, get, "ssl.truststore.type")?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&trust_pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            listener: listener.to_string(),
            key: "ssl.truststore.certificates",
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|source| TlsError::Rustls {
            listener: listener.to_string(),
            source,
        })?;
    }
    Ok(Some(roots))
}

/// Builds the TLS server side of listener `listener`; `get` returns a key's value for this
/// listener (its `listener.name.<name>.` override, else the broker-wide key).
pub fn server_config(
    listener: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let l = || listener.to_string();
    principal_rules(listener, &get)?;
    // Kafka's default store type is JKS: a listener that says nothing hears that first.
    pem_only(listener, &get, "ssl.keystore.type")?;
    let (chain, key) = key_store(listener, &get)?.ok_or_else(|| TlsError::Missing {
        listener: l(),
        what:
            "needs ssl.keystore.location, or ssl.keystore.certificate.chain with ssl.keystore.key"
                .into(),
    })?;

    let client_auth = match get("ssl.client.auth")
        .unwrap_or_else(|| "none".into())
        .to_ascii_lowercase()
        .as_str()
    {
        "none" => ClientAuth::None,
        "requested" => ClientAuth::Requested,
        "required" => ClientAuth::Required,
        other => {
            return Err(TlsError::BadClientAuth {
                listener: l(),
                value: other.to_string(),
            })
        }
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = protocol_versions(listener, get("ssl.enabled.protocols"))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|source| TlsError::Rustls {
            listener: l(),
            source,
        })?;
    let builder = if client_auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        let roots = trust_store(listener, &get)?.ok_or_else(|| TlsError::Missing {
            listener: l(),
            what: "ssl.client.auth needs ssl.truststore.location or ssl.truststore.certificates"
                .into(),
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if client_auth == ClientAuth::Requested {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        let verifier = verifier.build().map_err(|e| TlsError::Verifier {
            listener: l(),
            reason: e.to_string(),
        })?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            listener: l(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// How often a listener looks at its store files for a change.
const RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The keys [`server_config`] reads, kept so the listener can be rebuilt later.
const SERVER_KEYS: [&str; 11] = [
    "ssl.keystore.type",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.keystore.location",
    "ssl.key.password",
    "ssl.client.auth",
    "ssl.enabled.protocols",
    "ssl.truststore.type",
    "ssl.truststore.certificates",
    "ssl.truststore.location",
    "ssl.principal.mapping.rules",
];

/// What identifies one version of a file: its inode, size and modification time.
type Stamp = Option<(u64, u64, std::time::SystemTime)>;

fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

/// A listener's TLS server side that follows its store files: when the file named by
/// `ssl.keystore.location` or `ssl.truststore.location` changes (rewritten or replaced),
/// the next connection is served with the new certificates, without a restart. Files are
/// looked at no more than once a second, by the connection about to shake hands. A file
/// that no longer makes a valid config is logged and the last good config kept.
pub struct ServerTls {
    listener: String,
    settings: std::collections::BTreeMap<&'static str, String>,
    files: Vec<std::path::PathBuf>,
    state: parking_lot::Mutex<Loaded>,
}

struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Stamp>,
    checked: std::time::Instant,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("listener", &self.listener)
            .field("files", &self.files)
            .finish()
    }
}

impl ServerTls {
    pub fn new(listener: &str, get: impl Fn(&str) -> Option<String>) -> Result<Self, TlsError> {
        let settings: std::collections::BTreeMap<&'static str, String> = SERVER_KEYS
            .iter()
            .filter_map(|k| get(k).map(|v| (*k, v)))
            .collect();
        let files: Vec<std::path::PathBuf> = ["ssl.keystore.location", "ssl.truststore.location"]
            .iter()
            .filter_map(|k| settings.get(k).map(std::path::PathBuf::from))
            .collect();
        let stamps = files.iter().map(|f| stamp(f)).collect();
        let config = server_config(listener, |k| settings.get(k).cloned())?;
        Ok(Self {
            listener: listener.to_string(),
            settings,
            files,
            state: parking_lot::Mutex::new(Loaded {
                config,
                stamps,
                checked: std::time::Instant::now(),
            }),
        })
    }

    /// The config for a new connection, reloaded first if a store file changed.
    pub fn config(&self) -> Arc<ServerConfig> {
        let mut s = self.state.lock();
        if !self.files.is_empty() && s.checked.elapsed() >= RELOAD_CHECK {
            s.checked = std::time::Instant::now();
            let stamps: Vec<Stamp> = self.files.iter().map(|f| stamp(f)).collect();
            if stamps != s.stamps {
                s.stamps = stamps;
                match server_config(&self.listener, |k| self.settings.get(k).cloned()) {
                    Ok(c) => {
                        tracing::info!(listener = %self.listener, "TLS key or trust store changed; new connections use it");
                        s.config = c;
                    }
                    Err(e) => tracing::warn!(
                        listener = %self.listener,
                        error = %e,
                        "TLS key or trust store changed but cannot be used; keeping the previous one"
                    ),
                }
            }
        }
        Arc::clone(&s.config)
    }
}

/// Builds the TLS client side a broker uses to reach a peer's listener `listener`, as
/// Kafka's inter-broker clients do: the peer's certificate is checked against the
/// listener's trust store and its host name, and the listener's key store, if any, is
/// presented as this broker's certificate.
pub fn client_config(
    listener: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let l = || listener.to_string();
    let roots = trust_store(listener, &get)?.ok_or_else(|| TlsError::Missing {
        listener: l(),
        what: "brokers reach each other over TLS here: set ssl.truststore.location or ssl.truststore.certificates"
            .into(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = protocol_versions(listener, get("ssl.enabled.protocols"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|source| TlsError::Rustls {
            listener: l(),
            source,
        })?
        .with_root_certificates(roots);
    let config = match key_store(listener, &get)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsError::Rustls {
                listener: l(),
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `ssl.enabled.protocols` (Kafka's default: TLSv1.2,TLSv1.3).
fn protocol_versions(
    listener: &str,
    value: Option<String>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let Some(value) = value else {
        return Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]);
    };
    let mut out = Vec::new();
    for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match p {
            "TLSv1.3" => out.push(&rustls::version::TLS13),
            "TLSv1.2" => out.push(&rustls::version::TLS12),
            _ => {
                return Err(TlsError::BadProtocols {
                    listener: listener.to_string(),
                    value,
                })
            }
        }
    }
    if out.is_empty() {
        return Err(TlsError::BadProtocols {
            listener: listener.to_string(),
            value,
        });
    }
    Ok(out)
}

/// The principal of a TLS connection: its client certificate's subject, or ANONYMOUS.
pub fn principal(
    peer_certificates: Option<&[CertificateDer<'_>]>,
    rules: &PrincipalRules,
) -> Result<KafkaPrincipal, String> {
    let Some(name) = peer_certificates
        .and_then(|c| c.first())
        .and_then(|leaf| subject_name(leaf))
    else {
        return Ok(KafkaPrincipal::anonymous());
    };
    let mapped = rules
        .apply(&name)
        .ok_or_else(|| format!("no ssl.principal.mapping.rules apply to {name}"))?;
    Ok(KafkaPrincipal {
        principal_type: Arc::from("User"),
        name: Arc::from(mapped),
    })
}

/// A listener's `ssl.principal.mapping.rules` (DEFAULT when unset).
pub fn principal_rules(
    listener: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<PrincipalRules, TlsError> {
    match get("ssl.principal.mapping.rules") {
        None => Ok(PrincipalRules::default()),
        Some(value) => {
            PrincipalRules::parse(&value).map_err(|reason| TlsError::PrincipalMappingRules {
                listener: listener.to_string(),
                value,
                reason,
            })
        }
    }
}

/// A certificate's subject in RFC 2253 form, as `X500Principal.getName()` gives it.
fn subject_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let mut rdns: Vec<String> = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let mut parts: Vec<String> = Vec::new();
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let key = match oid.as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.9" => "STREET".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                _ => oid,
            };
            let value = match attr.as_str() {
                Ok(s) => escape_rfc2253(s),
                // Attributes without a string value are written as `#` and the hex of their
                // DER encoding, as RFC 2253 says.
                Err(_) => {
                    let mut hex = String::from("#");
                    for b in attr.attr_value().to_der_vec().ok()? {
                        hex.push_str(&format!("{b:02x}"));
                    }
                    hex
                }
            };
            parts.push(format!("{key}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    if rdns.is_empty() {
        return None;
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// RFC 2253 section 2.4 escaping of an attribute value.
fn escape_rfc2253(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2253_escaping() {
        assert_eq!(escape_rfc2253("plain"), "plain");
        assert_eq!(escape_rfc2253("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc2253(" #x "), "\\ #x\\ ");
        assert_eq!(escape_rfc2253("#x"), "\\#x");
    }

    #[test]
    fn store_types_and_missing_keys_are_config_errors() {
        let none = |_: &str| None;
        assert!(matches!(
            server_config("SSL", none),
            Err(TlsError::UnsupportedStoreType { .. })
        ));
        let rules = |k: &str| (k == "ssl.principal.mapping.rules").then(|| "RULE:(/x/".to_string());
        assert!(matches!(
            server_config("SSL", rules),
            Err(TlsError::PrincipalMappingRules { .. })
        ));
        let pem_only = |k: &str| (k == "ssl.keystore.type").then(|| "PEM".to_string());
        assert!(matches!(
            server_config("SSL", pem_only),
            Err(TlsError::Missing { .. })
        ));
        let bad_pem = |k: &str| match k {
            "ssl.keystore.type" => Some("PEM".to_string()),
            "ssl.keystore.certificate.chain" | "ssl.keystore.key" => Some("garbage".to_string()),
            _ => None,
        };
        assert!(matches!(
            server_config("SSL", bad_pem),
            Err(TlsError::Pem { .. })
        ));
    }
}
