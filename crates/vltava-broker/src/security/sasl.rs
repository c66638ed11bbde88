//! SASL authentication of connections on `SASL_PLAINTEXT` and `SASL_SSL` listeners.
//!
//! The exchange follows KIP-152: ApiVersions may come first, then SaslHandshake (v1) names a
//! mechanism, then SaslAuthenticate requests carry the mechanism's tokens until it succeeds or
//! fails. Any other request before success is refused by closing the connection, and a failure
//! is answered with SASL_AUTHENTICATION_FAILED and then the connection is closed, as Kafka's
//! `SaslServerAuthenticator` does. The principal is `User:<authenticated name>`.
//!
//! With `connections.max.reauth.ms` (KIP-368) a session lasts that long: the answer to the
//! last SaslAuthenticate says so in `session_lifetime_ms`, the client sends SaslHandshake and
//! SaslAuthenticate again on the same connection before then, as the same principal with the
//! same mechanism, and a connection whose session has run out is closed at its next request.
//!
//! [`Authenticator`] is the pure state machine, the time passed in; the connection loop feeds
//! it every request and acts on its verdicts.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use vltava_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use vltava_protocol::{ApiKey, ErrorCode, Request, Response, StrBytes};

use vltava_sasl::constant_time_eq;

use super::jaas;
use super::scram::{self, ScramExchange};
use crate::context::KafkaPrincipal;
use vltava_metadata::{ScramCredential, ScramMechanism};

/// The SASL mechanisms a listener may enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(m) => m.name(),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            other => ScramMechanism::from_name(other).map(Self::Scram),
        }
    }
}

/// Finds a user's SCRAM credential (in the metadata image).
pub type CredentialLookup<'a> = &'a dyn Fn(&str, ScramMechanism) -> Option<ScramCredential>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SaslConfigError {
    #[error("listener {listener}: sasl.enabled.mechanisms: {mechanism} is not supported (supported: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")]
    Unsupported { listener: String, mechanism: String },
    #[error("listener {listener}: sasl.enabled.mechanisms is empty")]
    NoMechanism { listener: String },
    #[error("listener {listener}: PLAIN needs listener.name.{lower}.plain.sasl.jaas.config with user_<name>=\"<password>\" options")]
    NoPlainUsers { listener: String, lower: String },
    #[error("listener {listener}: {key}={value}: expected a number of milliseconds")]
    BadReauth {
        listener: String,
        key: String,
        value: String,
    },
    #[error("listener {listener}: {source}")]
    Jaas {
        listener: String,
        #[source]
        source: jaas::JaasError,
    },
}

/// A SASL listener's settings: its mechanisms and, for PLAIN, its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslConfig {
    pub mechanisms: Vec<Mechanism>,
    plain_users: BTreeMap<String, String>,
    /// Each mechanism's session lifetime (`connections.max.reauth.ms`); absent when 0.
    session_lifetime_ms: BTreeMap<Mechanism, u64>,
}

impl SaslConfig {
    /// Reads listener `listener`'s SASL settings; `get` returns a key's value for this
    /// listener (its `listener.name.<name>.` override, else the broker-wide key).
    pub fn from_config(
        listener: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SaslConfigError> {
        let l = || listener.to_string();
        // Kafka's default is GSSAPI, which is refused below with a message naming the key.
        let names = get("sasl.enabled.mechanisms").unwrap_or_else(|| "GSSAPI".into());
        let mut mechanisms = Vec::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let m = Mechanism::parse(name).ok_or_else(|| SaslConfigError::Unsupported {
                listener: l(),
                mechanism: name.to_string(),
            })?;
            if !mechanisms.contains(&m) {
                mechanisms.push(m);
            }
        }
        if mechanisms.is_empty() {
            return Err(SaslConfigError::NoMechanism { listener: l() });
        }
        let mut plain_users = BTreeMap::new();
        if mechanisms.contains(&Mechanism::Plain) {
            let modules = get("plain.sasl.jaas.config")
                .map(|v| jaas::parse(&v))
                .transpose()
                .map_err(|source| SaslConfigError::Jaas {
                    listener: l(),
                    source,
                })?
                .unwrap_or_default();
            plain_users = jaas::plain_users(&modules);
            if plain_users.is_empty() {
                return Err(SaslConfigError::NoPlainUsers {
                    listener: l(),
                    lower: listener.to_ascii_lowercase(),
                });
            }
        }
        let mut session_lifetime_ms = BTreeMap::new();
        for m in &mechanisms {
            // Kafka's per-mechanism form wins: listener.name.<l>.<mechanism>.connections.max.reauth.ms.
            let specific = format!(
                "{}.connections.max.reauth.ms",
                m.name().to_ascii_lowercase()
            );
            let found = get(&specific).map(|v| (specific, v)).or_else(|| {
                get("connections.max.reauth.ms").map(|v| ("connections.max.reauth.ms".into(), v))
            });
            if let Some((key, value)) = found {
                let ms = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| SaslConfigError::BadReauth {
                        listener: l(),
                        key,
                        value: value.clone(),
                    })?;
                if ms > 0 {
                    session_lifetime_ms.insert(*m, ms);
                }
            }
        }
        Ok(Self {
            mechanisms,
            plain_users,
            session_lifetime_ms,
        })
    }

    fn mechanism_names(&self) -> Vec<StrBytes> {
        self.mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect()
    }
}

/// What the connection does with a request while it is not yet authenticated.
#[derive(Debug)]
pub enum Verdict {
    /// Serve the request as usual (ApiVersions).
    Pass(Request),
    /// Send this answer and go on reading.
    Answer(Response),
    /// Send this answer, then use `principal` for every later request.
    Authenticated(Response, KafkaPrincipal),
    /// Send this answer, then close the connection.
    AnswerAndClose(Response),
    /// Close the connection without an answer: the request is not allowed here.
    Refuse(String),
}

/// An authenticated session. A re-authentication must keep its user and mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    mechanism: Mechanism,
    user: String,
    /// When the session ends (monotonic milliseconds), if `connections.max.reauth.ms` is set.
    expires_at_ms: Option<u64>,
}

#[derive(Debug)]
enum State {
    /// Waiting for SaslHandshake (or ApiVersions).
    Handshake,
    /// The mechanism is chosen; waiting for its first token.
    Authenticate(Mechanism),
    /// SCRAM's server-first message is sent; waiting for the client's final message.
    ScramFinal(Box<ScramExchange>, Mechanism),
    Done(Session),
}

/// One connection's SASL server side.
#[derive(Debug)]
pub struct Authenticator {
    config: Arc<SaslConfig>,
    state: State,
    /// The session being re-authenticated, while that runs.
    previous: Option<Session>,
}

impl Authenticator {
    pub fn new(config: Arc<SaslConfig>) -> Self {
        Self {
            config,
            state: State::Handshake,
            previous: None,
        }
    }

    /// Whether the connection has an authenticated session (not in the middle of an exchange).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// Decides what to do with `request`, received at `now_ms` (monotonic milliseconds).
    pub fn on_request(
        &mut self,
        now_ms: u64,
        api_key: ApiKey,
        request: Request,
        credentials: CredentialLookup<'_>,
    ) -> Verdict {
        match (&self.state, request) {
            (State::Done(session), Request::SaslHandshake(r)) => {
                self.previous = Some(session.clone());
                self.state = State::Handshake;
                self.handshake(r)
            }
            (State::Done(session), request) => match session.expires_at_ms {
                Some(at) if now_ms >= at => Verdict::Refuse(format!(
                    "{api_key:?} request after the SASL session expired: the client did not re-authenticate within connections.max.reauth.ms"
                )),
                _ => Verdict::Pass(request),
            },
            (State::Handshake, Request::ApiVersions(r)) => Verdict::Pass(Request::ApiVersions(r)),
            (State::Handshake, Request::SaslHandshake(r)) => self.handshake(r),
            (State::Authenticate(m), Request::SaslAuthenticate(r)) => {
                let m = *m;
                self.authenticate(now_ms, m, r, credentials)
            }
            (State::ScramFinal(exchange, m), Request::SaslAuthenticate(r)) => {
                let m = *m;
                let outcome = exchange.finish(&r.auth_bytes).map(|answer| {
                    let user = exchange.user.clone();
                    (user, answer)
                });
                self.conclude(now_ms, m, outcome)
            }
            (state, _) => Verdict::Refuse(format!(
                "unexpected {api_key:?} request during SASL {}{}",
                if self.previous.is_some() { "re-" } else { "" },
                match state {
                    State::Handshake => "handshake",
                    _ => "authentication",
                }
            )),
        }
    }

    fn handshake(&mut self, r: SaslHandshakeRequest) -> Verdict {
        let response =
            SaslHandshakeResponse::default().with_mechanisms(self.config.mechanism_names());
        match Mechanism::parse(&r.mechanism).filter(|m| self.config.mechanisms.contains(m)) {
            Some(m) => {
                self.state = State::Authenticate(m);
                Verdict::Answer(Response::SaslHandshake(response))
            }
            None => Verdict::AnswerAndClose(Response::SaslHandshake(
                response.with_error_code(ErrorCode::UnsupportedSaslMechanism.code()),
            )),
        }
    }

    fn authenticate(
        &mut self,
        now_ms: u64,
        mechanism: Mechanism,
        r: SaslAuthenticateRequest,
        credentials: CredentialLookup<'_>,
    ) -> Verdict {
        match mechanism {
            Mechanism::Plain => {
                let outcome = plain(&self.config.plain_users, &r.auth_bytes);
                self.conclude(now_ms, mechanism, outcome.map(|user| (user, Vec::new())))
            }
            Mechanism::Scram(m) => {
                let lookup = |user: &str| credentials(user, m);
                match scram::first(m, &r.auth_bytes, &scram::server_nonce(), &lookup) {
                    Ok((exchange, server_first)) => {
                        self.state = State::ScramFinal(Box::new(exchange), mechanism);
                        Verdict::Answer(Response::SaslAuthenticate(
                            SaslAuthenticateResponse::default()
                                .with_auth_bytes(Bytes::from(server_first)),
                        ))
                    }
                    Err(message) => self.conclude(now_ms, mechanism, Err(message)),
                }
            }
        }
    }

    /// The last step: success with the user and the mechanism's final token, or failure.
    fn conclude(
        &mut self,
        now_ms: u64,
        mechanism: Mechanism,
        outcome: Result<(String, Vec<u8>), String>,
    ) -> Verdict {
        let outcome = outcome.and_then(|(user, token)| match self.previous.take() {
            Some(p) if p.user != user => Err(format!(
                "Cannot change principals during re-authentication from User:{}: User:{user}",
                p.user
            )),
            Some(p) if p.mechanism != mechanism => Err(format!(
                "Cannot change SASL mechanism during re-authentication from {} to {}",
                p.mechanism.name(),
                mechanism.name()
            )),
            _ => Ok((user, token)),
        });
        match outcome {
            Ok((user, token)) => {
                let lifetime = self.config.session_lifetime_ms.get(&mechanism).copied();
                self.state = State::Done(Session {
                    mechanism,
                    user: user.clone(),
                    expires_at_ms: lifetime.map(|l| now_ms.saturating_add(l)),
                });
                Verdict::Authenticated(
                    Response::SaslAuthenticate(
                        SaslAuthenticateResponse::default()
                            .with_auth_bytes(Bytes::from(token))
                            .with_session_lifetime_ms(
                                lifetime.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX)),
                            ),
                    ),
                    KafkaPrincipal {
                        principal_type: Arc::from("User"),
                        name: Arc::from(user.as_str()),
                    },
                )
            }
            Err(message) => Verdict::AnswerAndClose(Response::SaslAuthenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(ErrorCode::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from_string(message)))
                    .with_auth_bytes(Bytes::new()),
            )),
        }
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`. Returns the user, or Kafka's failure message.
fn plain(users: &BTreeMap<String, String>, token: &[u8]) -> Result<String, String> {
    let invalid = || "Authentication failed: Invalid username or password".to_string();
    let token = std::str::from_utf8(token)
        .map_err(|_| "Invalid SASL/PLAIN response: not UTF-8".to_string())?;
    let mut parts = token.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Invalid SASL/PLAIN response: expected 3 tokens".into());
    };
    if user.is_empty() {
        return Err("Authentication failed: username not specified".into());
    }
    if password.is_empty() {
        return Err("Authentication failed: password not specified".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Err(
            "Authentication failed: Client requested an authorization id that is different from username"
                .into(),
        );
    }
    match users.get(user) {
        Some(expected) if constant_time_eq(expected.as_bytes(), password.as_bytes()) => {
            Ok(user.to_string())
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No SCRAM users.
    fn none(_: &str, _: ScramMechanism) -> Option<ScramCredential> {
        None
    }

    fn config() -> Arc<SaslConfig> {
        let jaas = r#"org.apache.kafka.common.security.plain.PlainLoginModule required
            user_alice="alice-secret" user_bob="b";"#;
        Arc::new(
            SaslConfig::from_config("SASL", |k| match k {
                "sasl.enabled.mechanisms" => Some("PLAIN".into()),
                "plain.sasl.jaas.config" => Some(jaas.into()),
                _ => None,
            })
            .unwrap(),
        )
    }

    fn handshake(mechanism: &str) -> Request {
        Request::SaslHandshake(
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into())),
        )
    }

    fn token(t: &str) -> Request {
        Request::SaslAuthenticate(
            SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(t.to_string())),
        )
    }

    fn error_of(v: &Verdict) -> i16 {
        match v {
            Verdict::Answer(Response::SaslHandshake(r))
            | Verdict::AnswerAndClose(Response::SaslHandshake(r)) => r.error_code,
            Verdict::Authenticated(Response::SaslAuthenticate(r), _)
            | Verdict::AnswerAndClose(Response::SaslAuthenticate(r)) => r.error_code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_success_gives_the_user_principal() {
        let mut a = Authenticator::new(config());
        assert!(matches!(
            a.on_request(
                0,
                ApiKey::ApiVersions,
                Request::ApiVersions(Default::default()),
                &none
            ),
            Verdict::Pass(_)
        ));
        assert_eq!(
            error_of(&a.on_request(0, ApiKey::SaslHandshake, handshake("PLAIN"), &none)),
            0
        );
        match a.on_request(
            0,
            ApiKey::SaslAuthenticate,
            token("\0alice\0alice-secret"),
            &none,
        ) {
            Verdict::Authenticated(_, p) => assert_eq!(p.to_string(), "User:alice"),
            other => panic!("{other:?}"),
        }
        assert!(a.is_done());
        // An authorization id equal to the user is allowed.
        let mut a = Authenticator::new(config());
        a.on_request(0, ApiKey::SaslHandshake, handshake("PLAIN"), &none);
        assert!(matches!(
            a.on_request(0, ApiKey::SaslAuthenticate, token("bob\0bob\0b"), &none),
            Verdict::Authenticated(..)
        ));
    }

    #[test]
    fn failures_close_the_connection() {
        let failed = ErrorCode::SaslAuthenticationFailed.code();
        for t in [
            "\0alice\0wrong",
            "\0mallory\0alice-secret",
            "bob\0alice\0alice-secret",
            "\0alice\0",
            "alice-secret",
            "\0\0x",
        ] {
            let mut a = Authenticator::new(config());
            a.on_request(0, ApiKey::SaslHandshake, handshake("PLAIN"), &none);
            let v = a.on_request(0, ApiKey::SaslAuthenticate, token(t), &none);
            assert!(matches!(v, Verdict::AnswerAndClose(_)), "{t:?}: {v:?}");
            assert_eq!(error_of(&v), failed, "{t:?}");
        }
        let mut a = Authenticator::new(config());
        let v = a.on_request(0, ApiKey::SaslHandshake, handshake("SCRAM-SHA-256"), &none);
        assert!(matches!(v, Verdict::AnswerAndClose(_)));
        assert_eq!(error_of(&v), ErrorCode::UnsupportedSaslMechanism.code());
    }

    #[test]
    fn other_requests_before_authentication_are_refused() {
        let mut a = Authenticator::new(config());
        assert!(matches!(
            a.on_request(
                0,
                ApiKey::Metadata,
                Request::Metadata(Default::default()),
                &none
            ),
            Verdict::Refuse(_)
        ));
        let mut a = Authenticator::new(config());
        assert!(matches!(
            a.on_request(
                0,
                ApiKey::SaslAuthenticate,
                token("\0alice\0alice-secret"),
                &none
            ),
            Verdict::Refuse(_)
        ));
        a.on_request(0, ApiKey::SaslHandshake, handshake("PLAIN"), &none);
        assert!(matches!(
            a.on_request(
                0,
                ApiKey::ApiVersions,
                Request::ApiVersions(Default::default()),
                &none
            ),
            Verdict::Refuse(_)
        ));
    }

    fn reauth_config(props: &[(&str, &str)]) -> Result<SaslConfig, SaslConfigError> {
        let jaas = r#"org.apache.kafka.common.security.plain.PlainLoginModule required
            user_alice="alice-secret" user_bob="b";"#;
        SaslConfig::from_config("SASL", |k| match k {
            "sasl.enabled.mechanisms" => Some("PLAIN".into()),
            "plain.sasl.jaas.config" => Some(jaas.into()),
            _ => props
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string()),
        })
    }

    /// A PLAIN login at `now`; the answer's session lifetime, or the error code it closed with.
    fn login(a: &mut Authenticator, now: u64, t: &str) -> Result<i64, i16> {
        a.on_request(now, ApiKey::SaslHandshake, handshake("PLAIN"), &none);
        match a.on_request(now, ApiKey::SaslAuthenticate, token(t), &none) {
            Verdict::Authenticated(Response::SaslAuthenticate(r), _) => Ok(r.session_lifetime_ms),
            v => Err(error_of(&v)),
        }
    }

    fn passes(a: &mut Authenticator, now: u64) -> bool {
        let metadata = Request::Metadata(Default::default());
        match a.on_request(now, ApiKey::Metadata, metadata, &none) {
            Verdict::Pass(_) => true,
            Verdict::Refuse(_) => false,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sessions_last_connections_max_reauth_ms_and_renew_as_the_same_user() {
        let config = Arc::new(reauth_config(&[("connections.max.reauth.ms", "1000")]).unwrap());
        let mut a = Authenticator::new(Arc::clone(&config));
        assert_eq!(login(&mut a, 100, "\0alice\0alice-secret"), Ok(1000));
        assert!(passes(&mut a, 1099));
        // Re-authenticated in time: the session runs 1000 ms from then.
        assert_eq!(login(&mut a, 1000, "\0alice\0alice-secret"), Ok(1000));
        assert!(passes(&mut a, 1999));
        assert!(!passes(&mut a, 2000));

        // Another user, or a wrong password, ends the connection.
        let failed = ErrorCode::SaslAuthenticationFailed.code();
        let mut a = Authenticator::new(Arc::clone(&config));
        login(&mut a, 0, "\0alice\0alice-secret").unwrap();
        assert_eq!(login(&mut a, 500, "\0bob\0b"), Err(failed));
        let mut a = Authenticator::new(config);
        login(&mut a, 0, "\0alice\0alice-secret").unwrap();
        assert_eq!(login(&mut a, 500, "\0alice\0wrong"), Err(failed));

        // Unset, sessions never end.
        let mut a = Authenticator::new(self::config());
        assert_eq!(login(&mut a, 0, "\0alice\0alice-secret"), Ok(0));
        assert!(passes(&mut a, u64::MAX));

        // The mechanism's own key wins; a value that is not a number is refused.
        let config = reauth_config(&[
            ("connections.max.reauth.ms", "1000"),
            ("plain.connections.max.reauth.ms", "0"),
        ])
        .unwrap();
        let mut a = Authenticator::new(Arc::new(config));
        assert_eq!(login(&mut a, 0, "\0alice\0alice-secret"), Ok(0));
        assert!(matches!(
            reauth_config(&[("connections.max.reauth.ms", "soon")]),
            Err(SaslConfigError::BadReauth { .. })
        ));
    }

    /// The token parsers read bytes from unauthenticated peers: whatever they are sent, they
    /// answer with a verdict, never a panic.
    mod hostile_tokens {
        use super::*;
        use proptest::prelude::*;

        fn scram_config() -> Arc<SaslConfig> {
            Arc::new(
                SaslConfig::from_config("SASL", |k| {
                    (k == "sasl.enabled.mechanisms").then(|| "SCRAM-SHA-256".to_string())
                })
                .unwrap(),
            )
        }

        fn some_user(_: &str, m: ScramMechanism) -> Option<ScramCredential> {
            Some(scram::credential(m, b"salt", b"salted", 4096))
        }

        proptest! {
            #[test]
            fn plain_tokens(t in prop::collection::vec(any::<u8>(), 0..64)) {
                let mut a = Authenticator::new(config());
                a.on_request(0, ApiKey::SaslHandshake, handshake("PLAIN"), &none);
                let r = Request::SaslAuthenticate(
                    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(t)),
                );
                let v = a.on_request(0, ApiKey::SaslAuthenticate, r, &none);
                prop_assert!(matches!(v, Verdict::AnswerAndClose(_)));
            }

            #[test]
            fn scram_tokens(
                first in "(n|y|p=x),(a=[a-z]{0,3})?,n=[a-z=,0-9]{0,6},r=[a-z0-9]{0,6}.{0,8}",
                junk in prop::collection::vec(any::<u8>(), 0..64),
                last in "c=[a-zA-Z0-9=]{0,8},r=.{0,12},p=[a-zA-Z0-9+/=]{0,12}",
            ) {
                for (one, two) in [(first.clone().into_bytes(), last.into_bytes()), (junk.clone(), junk)] {
                    let mut a = Authenticator::new(scram_config());
                    a.on_request(0, ApiKey::SaslHandshake, handshake("SCRAM-SHA-256"), &some_user);
                    for t in [one, two] {
                        let r = Request::SaslAuthenticate(
                            SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(t)),
                        );
                        let v = a.on_request(0, ApiKey::SaslAuthenticate, r, &some_user);
                        prop_assert!(!matches!(v, Verdict::Authenticated(..)));
                        if !matches!(v, Verdict::Answer(_)) {
                            break;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn listener_config_errors() {
        let none = |_: &str| None;
        assert!(matches!(
            SaslConfig::from_config("L", none),
            Err(SaslConfigError::Unsupported { .. })
        ));
        let plain_only = |k: &str| (k == "sasl.enabled.mechanisms").then(|| "PLAIN".to_string());
        assert!(matches!(
            SaslConfig::from_config("L", plain_only),
            Err(SaslConfigError::NoPlainUsers { .. })
        ));
    }
}
