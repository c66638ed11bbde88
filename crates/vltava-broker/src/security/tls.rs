//! TLS for `SSL` and `SASL_SSL` listeners, configured with Kafka's `ssl.*` keys.
//!
//! Key and trust stores are PEM (`ssl.*.type=PEM`, KIP-651: inline through
//! `ssl.keystore.certificate.chain` + `ssl.keystore.key` and `ssl.truststore.certificates`,
//! or in the files named by `ssl.keystore.location` (key and chain in one file) and
//! `ssl.truststore.location`; an encrypted PKCS#8 key opens with `ssl.key.password`) or PKCS12
//! files opened with `ssl.keystore.password` / `ssl.truststore.password`. JKS files are refused
//! with the keytool command that converts them.
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
    #[error("listener {listener}: {key}={value} is not supported: {hint}")]
    UnsupportedStoreType {
        listener: String,
        key: &'static str,
        value: String,
        hint: &'static str,
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

/// How a store file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Pem,
    Pkcs12,
}

/// A store's `ssl.*.type`, checked against its bytes (`None` for inline PEM). Kafka's default
/// type is JKS, and Java's JKS key store has read PKCS12 files since JDK 9, so an unset or JKS
/// type with a PKCS12 file is read as PKCS12, as Kafka would; a real JKS file is refused with
/// the conversion to use.
fn store_kind(
    listener: &str,
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    bytes: Option<&[u8]>,
) -> Result<StoreKind, TlsError> {
    let value = get(key).unwrap_or_else(|| "JKS".to_string());
    let unsupported = |hint: &'static str| TlsError::UnsupportedStoreType {
        listener: listener.to_string(),
        key,
        value: value.clone(),
        hint,
    };
    match value.to_ascii_uppercase().as_str() {
        "PEM" => Ok(StoreKind::Pem),
        "PKCS12" => Ok(StoreKind::Pkcs12),
        "JKS" => match bytes {
            Some([0xfe, 0xed, 0xfe, 0xed, ..]) => Err(unsupported(
                "JKS files are not read; convert with keytool -importkeystore -deststoretype PKCS12, or use PEM",
            )),
            // A PKCS12 file is a DER SEQUENCE.
            Some([0x30, ..]) => Ok(StoreKind::Pkcs12),
            Some(_) => Err(unsupported("this file is not PKCS12; for a PEM file set the type to PEM")),
            None => Err(unsupported("inline certificates and keys need the type PEM")),
        },
        _ => Err(unsupported("use PEM or PKCS12")),
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
        (Some(chain), Some(key), _) => {
            store_kind(listener, get, "ssl.keystore.type", None)?;
            (
                chain.into_bytes(),
                key.into_bytes(),
                "ssl.keystore.certificate.chain",
                "ssl.keystore.key",
            )
        }
        (None, None, Some(path)) => {
            let both = read_store(listener, path)?;
            if store_kind(listener, get, "ssl.keystore.type", Some(&both))? == StoreKind::Pkcs12 {
                return pkcs12_key_store(listener, get, &both).map(Some);
            }
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
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(chain_key, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(chain_key, "no CERTIFICATE block".into()));
    }
    let key = pem_private_key(&key_pem, get("ssl.key.password"))
        .map_err(|reason| pem_err(key_key, reason))?;
    Ok(Some((chain, key)))
}

/// The private key of a PEM store: plain (PKCS#8, PKCS#1 or SEC1), or an encrypted PKCS#8
/// block opened with `ssl.key.password`, the one encrypted form Kafka's PEM stores take.
fn pem_private_key(pem: &[u8], password: Option<String>) -> Result<PrivateKeyDer<'static>, String> {
    const BEGIN: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &[u8] = b"-----END ENCRYPTED PRIVATE KEY-----";
    let find = |needle: &[u8]| pem.windows(needle.len()).position(|w| w == needle);
    let Some(begin) = find(BEGIN) else {
        return PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            format!("no usable PRIVATE KEY block (a PKCS#8, PKCS#1 or SEC1 key, or an ENCRYPTED PRIVATE KEY with ssl.key.password, is needed): {e}")
        });
    };
    let end = find(END)
        .filter(|&e| e > begin)
        .ok_or("an ENCRYPTED PRIVATE KEY block has no end line")?;
    let password = password.ok_or("the private key is encrypted: set ssl.key.password")?;
    let (_, der) = pkcs8::der::pem::decode_vec(&pem[begin..end + END.len()])
        .map_err(|e| format!("the ENCRYPTED PRIVATE KEY block cannot be read: {e}"))?;
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
        .map_err(|e| format!("the ENCRYPTED PRIVATE KEY block cannot be read: {e}"))?;
    let key = info
        .decrypt(password.as_bytes())
        .map_err(|e| format!("cannot decrypt the private key with ssl.key.password: {e}"))?;
    Ok(PrivateKeyDer::Pkcs8(key.as_bytes().to_vec().into()))
}

/// A PKCS12 key store: its first private key with that key's certificate chain.
fn pkcs12_key_store(
    listener: &str,
    get: &impl Fn(&str) -> Option<String>,
    bytes: &[u8],
) -> Result<KeyStore, TlsError> {
    let err = |key: &'static str, reason: String| TlsError::Pem {
        listener: listener.to_string(),
        key,
        reason,
    };
    let password = get("ssl.keystore.password").ok_or_else(|| TlsError::Missing {
        listener: listener.to_string(),
        what: "a PKCS12 key store needs ssl.keystore.password".into(),
    })?;
    if get("ssl.key.password").is_some_and(|k| k != password) {
        return Err(err(
            "ssl.key.password",
            "the key of a PKCS12 store must be encrypted with the store's password".into(),
        ));
    }
    let store = p12_keystore::KeyStore::from_pkcs12(
        bytes,
        &password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .map_err(|e| {
        err(
            "ssl.keystore.location",
            format!("cannot read the PKCS12 store: {e}"),
        )
    })?;
    let (_, chain) = store.private_key_chain().ok_or_else(|| {
        err(
            "ssl.keystore.location",
            "the PKCS12 store holds no private key with its certificate".into(),
        )
    })?;
    let certs = chain
        .certs()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    Ok((
        certs,
        PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into()),
    ))
}

/// `ssl.truststore.*`: the certificates peers are checked against; `None` when unset. Every
/// certificate of a PKCS12 trust store is trusted, whether keytool or openssl wrote it.
fn trust_store(
    listener: &str,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<RootCertStore>, TlsError> {
    let (bytes, kind) = match (
        get("ssl.truststore.certificates"),
        get("ssl.truststore.location"),
    ) {
        (Some(inline), _) => {
            store_kind(listener, get, "ssl.truststore.type", None)?;
            (inline.into_bytes(), StoreKind::Pem)
        }
        (None, Some(path)) => {
            let bytes = read_store(listener, path)?;
            let kind = store_kind(listener, get, "ssl.truststore.type", Some(&bytes))?;
            (bytes, kind)
        }
        (None, None) => return Ok(None),
    };
    let err = |reason: String| TlsError::Pem {
        listener: listener.to_string(),
        key: "ssl.truststore.location",
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = match kind {
        StoreKind::Pem => CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?,
        StoreKind::Pkcs12 => {
            let password = get("ssl.truststore.password").unwrap_or_default();
            p12_keystore::Pkcs12Archive::from_pkcs12(&bytes, &password)
                .map_err(|e| err(format!("cannot read the PKCS12 store: {e}")))?
                .certs
                .into_iter()
                .map(|bag| CertificateDer::from(bag.cert.as_der().to_vec()))
                .collect()
        }
    };
    if certs.is_empty() {
        return Err(err("the trust store holds no certificate".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
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
const SERVER_KEYS: [&str; 13] = [
    "ssl.keystore.type",
    "ssl.keystore.password",
    "ssl.truststore.password",
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
    fn store_kinds_follow_the_type_and_the_file() {
        let typed = |t: Option<&'static str>| move |_: &str| t.map(str::to_string);
        let kind = |t, bytes| store_kind("SSL", &typed(t), "ssl.keystore.type", bytes);
        assert_eq!(kind(Some("pem"), None).unwrap(), StoreKind::Pem);
        assert_eq!(kind(Some("PKCS12"), Some(b"x")).unwrap(), StoreKind::Pkcs12);
        // As Java's JKS key store does, an unset type reads a PKCS12 file.
        assert_eq!(kind(None, Some(&[0x30, 0x82])).unwrap(), StoreKind::Pkcs12);
        let refused = |t, bytes| match kind(t, bytes) {
            Err(TlsError::UnsupportedStoreType { hint, .. }) => hint,
            other => panic!("{other:?}"),
        };
        assert!(refused(None, Some(&[0xfe, 0xed, 0xfe, 0xed, 0])).contains("keytool"));
        assert!(refused(Some("JKS"), Some(b"-----BEGIN")).contains("PEM"));
        assert!(refused(Some("BCFKS"), Some(b"x")).contains("PKCS12"));
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let block =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(pem_private_key(block, None)
            .unwrap_err()
            .contains("set ssl.key.password"));
        assert!(pem_private_key(block, Some("pw".into()))
            .unwrap_err()
            .contains("cannot be read"));
        assert!(pem_private_key(b"nothing", None)
            .unwrap_err()
            .contains("no usable PRIVATE KEY"));
    }

    #[test]
    fn store_types_and_missing_keys_are_config_errors() {
        let none = |_: &str| None;
        assert!(matches!(
            server_config("SSL", none),
            Err(TlsError::Missing { .. })
        ));
        // Inline PEM under Kafka's default type (JKS) names the type to set.
        let inline = |k: &str| match k {
            "ssl.keystore.certificate.chain" | "ssl.keystore.key" => Some("x".to_string()),
            _ => None,
        };
        assert!(matches!(
            server_config("SSL", inline),
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
