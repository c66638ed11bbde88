//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka serves them: no channel
//! binding, credentials from the metadata log (`UserScramCredentialRecord`), at least 4096
//! iterations. The math, and the client side, are `vltava-sasl`'s.
//!
//! The server never sees a password: AlterUserScramCredentials carries the salted password,
//! from which [`credential`] derives the stored and server keys the image keeps.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
pub use vltava_metadata::{ScramCredential, ScramMechanism};
pub use vltava_sasl::scram::{
    hash, hmac, salted_password, ScramClient, MAX_ITERATIONS, MIN_ITERATIONS,
};

/// The credential kept for a salted password (RFC 5802 section 3).
pub fn credential(
    m: ScramMechanism,
    salt: &[u8],
    salted_password: &[u8],
    iterations: i32,
) -> ScramCredential {
    let (stored_key, server_key) = vltava_sasl::scram::keys(m, salted_password);
    ScramCredential {
        salt: salt.to_vec(),
        stored_key,
        server_key,
        iterations,
    }
}

/// Kafka's message for every credential failure, so a client learns nothing about which
/// part was wrong.
fn invalid(m: ScramMechanism) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        m.name()
    )
}

/// After the client's first message: what the server must remember for the final one.
#[derive(Debug)]
pub struct ScramExchange {
    mechanism: ScramMechanism,
    pub user: String,
    gs2_header: String,
    nonce: String,
    credential: ScramCredential,
    /// client-first-message-bare "," server-first-message
    auth_prefix: String,
}

/// Reads `client-first-message` and answers `server-first-message`. `lookup` finds a user's
/// credential; `server_nonce` is fresh randomness (printable, without ',').
pub fn first(
    m: ScramMechanism,
    message: &[u8],
    server_nonce: &str,
    lookup: &dyn Fn(&str) -> Option<ScramCredential>,
) -> Result<(ScramExchange, Vec<u8>), String> {
    let message = std::str::from_utf8(message)
        .map_err(|_| "Invalid SCRAM client first message: not UTF-8".to_string())?;
    let bad = || format!("Invalid SCRAM client first message: {message:?}");
    // gs2-header: cbind-flag "," [authzid] ","
    let (flag, rest) = message.split_once(',').ok_or_else(bad)?;
    let (authzid, bare) = rest.split_once(',').ok_or_else(bad)?;
    match flag {
        "n" | "y" => {}
        _ => return Err("SCRAM channel binding is not supported".into()),
    }
    let mut fields = bare.split(',');
    let user = fields
        .next()
        .and_then(|f| f.strip_prefix("n="))
        .ok_or_else(bad)?;
    let client_nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or_else(bad)?;
    let user = unescape(user).ok_or_else(bad)?;
    if let Some(authzid) = authzid.strip_prefix("a=") {
        if unescape(authzid).as_deref() != Some(user.as_str()) {
            return Err(
                "Authentication failed: Client requested an authorization id that is different from username"
                    .into(),
            );
        }
    } else if !authzid.is_empty() {
        return Err(bad());
    }
    let credential = lookup(&user).ok_or_else(|| invalid(m))?;
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        B64.encode(&credential.salt),
        credential.iterations
    );
    let gs2_header = format!("{flag},{authzid},");
    Ok((
        ScramExchange {
            mechanism: m,
            user,
            gs2_header,
            nonce,
            credential,
            auth_prefix: format!("{bare},{server_first}"),
        },
        server_first.into_bytes(),
    ))
}

impl ScramExchange {
    /// Checks `client-final-message` and answers `server-final-message`.
    pub fn finish(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let m = self.mechanism;
        let message = std::str::from_utf8(message)
            .map_err(|_| "Invalid SCRAM client final message: not UTF-8".to_string())?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or_else(|| "Invalid SCRAM client final message: no proof".to_string())?;
        let mut fields = without_proof.split(',');
        let binding = fields.next().and_then(|f| f.strip_prefix("c="));
        let nonce = fields.next().and_then(|f| f.strip_prefix("r="));
        if binding != Some(B64.encode(&self.gs2_header).as_str()) {
            return Err("Invalid SCRAM client final message: channel binding differs".into());
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err("Invalid SCRAM client final message: nonce differs".into());
        }
        let proof = B64.decode(proof).map_err(|_| invalid(m))?;
        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let signature = hmac(m, &self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(invalid(m));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let stored = hash(m, &client_key);
        if !vltava_sasl::constant_time_eq(&stored, &self.credential.stored_key) {
            return Err(invalid(m));
        }
        let server_signature = hmac(m, &self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// RFC 5802 saslname: `=2C` is ',' and `=3D` is '='; any other '=' is malformed.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A fresh server nonce.
pub fn server_nonce() -> String {
    vltava_sasl::scram::nonce()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, run against the server side.
    #[test]
    fn rfc7677_example() {
        let m = ScramMechanism::ScramSha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = credential(m, &salt, &salted_password(m, "pencil", &salt, 4096), 4096);
        let lookup = |u: &str| (u == "user").then(|| cred.clone());
        let (exchange, server_first) = first(
            m,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            &lookup,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(server_first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let server_final = exchange
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            String::from_utf8(server_final).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // A wrong proof, a wrong nonce, an unknown user.
        assert!(exchange
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVM=")
            .is_err());
        assert!(exchange
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .is_err());
        assert!(first(m, b"n,,n=other,r=abc", "x", &lookup).is_err());
        assert!(first(m, b"p=tls-unique,,n=user,r=abc", "x", &lookup).is_err());
        assert!(first(m, b"n,a=other,n=user,r=abc", "x", &lookup).is_err());
        assert!(first(m, b"garbage", "x", &lookup).is_err());
    }

    #[test]
    fn saslname_escapes() {
        assert_eq!(unescape("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(unescape("plain").as_deref(), Some("plain"));
        assert_eq!(unescape("bad=41"), None);
        assert_eq!(unescape("end="), None);
        assert!(!server_nonce().contains(','));
    }

    #[test]
    fn the_client_side_authenticates_against_the_server_side() {
        for m in [ScramMechanism::ScramSha256, ScramMechanism::ScramSha512] {
            let salt = b"pepper".to_vec();
            let c = credential(m, &salt, &salted_password(m, "s3cret", &salt, 4096), 4096);
            let lookup = move |u: &str| (u == "ad,m=in").then(|| c.clone());
            let (mut client, first_msg) =
                ScramClient::start(m, "ad,m=in", "s3cret", "cnonce".into());
            let (exchange, server_first) = first(m, &first_msg, "snonce", &lookup).unwrap();
            assert_eq!(exchange.user, "ad,m=in");
            let final_msg = client.proof(&server_first).unwrap();
            let server_final = exchange.finish(&final_msg).unwrap();
            client.verify(&server_final).unwrap();
            assert!(client.verify(b"v=AAAA").is_err());
            // A wrong password is refused by the server.
            let (mut wrong, first_msg) = ScramClient::start(m, "ad,m=in", "guess", "n2".into());
            let (exchange, server_first) = first(m, &first_msg, "s2", &lookup).unwrap();
            let final_msg = wrong.proof(&server_first).unwrap();
            assert!(exchange.finish(&final_msg).is_err());
        }
    }
}
