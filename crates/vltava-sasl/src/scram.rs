//! SCRAM (RFC 5802, RFC 7677): the keys a credential holds, the salted password a client
//! derives, and the client side of the exchange. The server side lives with the broker,
//! which holds the credentials.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac};
pub use vltava_types::ScramMechanism;

/// Kafka's bounds on iterations (`ScramMechanism.minIterations`/`maxIterations`).
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

fn hmac_alg(m: ScramMechanism) -> hmac::Algorithm {
    match m {
        ScramMechanism::ScramSha256 => hmac::HMAC_SHA256,
        ScramMechanism::ScramSha512 => hmac::HMAC_SHA512,
    }
}

fn digest_alg(m: ScramMechanism) -> &'static digest::Algorithm {
    match m {
        ScramMechanism::ScramSha256 => &digest::SHA256,
        ScramMechanism::ScramSha512 => &digest::SHA512,
    }
}

/// `HMAC(key, data)` with the mechanism's hash.
pub fn hmac(m: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac_alg(m), key), data)
        .as_ref()
        .to_vec()
}

/// `H(data)` with the mechanism's hash.
pub fn hash(m: ScramMechanism, data: &[u8]) -> Vec<u8> {
    digest::digest(digest_alg(m), data).as_ref().to_vec()
}

/// `StoredKey` and `ServerKey` of a salted password (RFC 5802 section 3).
pub fn keys(m: ScramMechanism, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let client_key = hmac(m, salted_password, b"Client Key");
    (
        hash(m, &client_key),
        hmac(m, salted_password, b"Server Key"),
    )
}

/// `Hi(password, salt, iterations)` of RFC 5802: what a client sends in
/// AlterUserScramCredentials as the salted password.
pub fn salted_password(m: ScramMechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let (alg, len) = match m {
        ScramMechanism::ScramSha256 => (ring::pbkdf2::PBKDF2_HMAC_SHA256, 32),
        ScramMechanism::ScramSha512 => (ring::pbkdf2::PBKDF2_HMAC_SHA512, 64),
    };
    let mut out = vec![0u8; len];
    let iterations = std::num::NonZeroU32::new(iterations.max(1)).expect("at least 1");
    ring::pbkdf2::derive(alg, iterations, salt, password.as_bytes(), &mut out);
    out
}

/// The client side of an exchange.
#[derive(Debug)]
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    nonce: String,
    bare: String,
    /// The server signature the last message must carry.
    expected: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts an exchange as `user`; returns `client-first-message`.
    pub fn start(m: ScramMechanism, user: &str, password: &str, nonce: String) -> (Self, Vec<u8>) {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={name},r={nonce}");
        let first = format!("n,,{bare}").into_bytes();
        (
            Self {
                mechanism: m,
                password: password.to_string(),
                nonce,
                bare,
                expected: None,
            },
            first,
        )
    }

    /// Reads `server-first-message`; returns `client-final-message`.
    pub fn proof(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let m = self.mechanism;
        let text = std::str::from_utf8(server_first)
            .map_err(|_| "SCRAM server first message is not UTF-8".to_string())?;
        let bad = || format!("Invalid SCRAM server first message: {text:?}");
        let mut fields = text.split(',');
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(bad)?;
        let salt = fields
            .next()
            .and_then(|f| f.strip_prefix("s="))
            .ok_or_else(bad)?;
        let iterations: u32 = fields
            .next()
            .and_then(|f| f.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .ok_or_else(bad)?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("SCRAM server nonce does not extend the client's".into());
        }
        if !(MIN_ITERATIONS as u32..=MAX_ITERATIONS as u32).contains(&iterations) {
            return Err(format!("SCRAM iterations {iterations} out of range"));
        }
        let salt = B64.decode(salt).map_err(|_| bad())?;
        let salted = salted_password(m, &self.password, &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.bare);
        let client_key = hmac(m, &salted, b"Client Key");
        let stored_key = hash(m, &client_key);
        let signature = hmac(m, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(m, &salted, b"Server Key");
        self.expected = Some(hmac(m, &server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks `server-final-message`: the server knew the credential too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).unwrap_or("");
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or_else(|| format!("SCRAM server final message: {text:?}"))?;
        match &self.expected {
            Some(e) if crate::constant_time_eq(e, &signature) => Ok(()),
            _ => Err("SCRAM server signature does not match".into()),
        }
    }
}

/// A fresh salt for a new credential: 32 random bytes.
pub fn salt() -> Vec<u8> {
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    bytes
}

/// A fresh nonce: 24 random bytes, base64 (never contains ','), for either side.
pub fn nonce() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, from the client's side.
    #[test]
    fn rfc7677_example() {
        let m = ScramMechanism::ScramSha256;
        let (mut client, first) =
            ScramClient::start(m, "user", "pencil", "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = client
            .proof(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(client.verify(b"v=AAAA").is_err());
        // A server nonce that does not extend the client's, or too few iterations.
        let (mut c, _) = ScramClient::start(m, "user", "pencil", "abc".into());
        assert!(c.proof(b"r=xyz,s=AAAA,i=4096").is_err());
        assert!(c.proof(b"r=abcd,s=AAAA,i=1").is_err());
        assert!(!nonce().contains(','));
    }
}
