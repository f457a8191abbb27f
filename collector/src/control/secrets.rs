//! Secret tokens: format, generation, hashing and constant-time comparison.
//!
//! An enrollment token reads `fpe_<id>_<secret>` and an agent credential `fpa_<agent-uuid>_<secret>`.
//! The id part lets the collector find the record by primary key; the secret is 32 random bytes
//! from the OS, hex-encoded. Only SHA-256 of the secret is stored, so a leaked control database
//! does not leak usable credentials; a 256-bit random secret needs no slow password hash.
//! Hashes are compared with `subtle` so the time taken does not reveal how many bytes matched.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub const ENROLLMENT_PREFIX: &str = "fpe_";
pub const AGENT_PREFIX: &str = "fpa_";
/// Length of a secret: 32 bytes, hex-encoded.
const SECRET_HEX_LEN: usize = 64;
/// Length of an enrollment token id: 8 random bytes, hex-encoded.
const TOKEN_ID_HEX_LEN: usize = 16;

/// A token did not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind}: expected `{expected}`")]
pub struct MalformedToken {
    pub kind: &'static str,
    pub expected: &'static str,
}

/// 32 random bytes from the operating system, hex-encoded.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A fresh enrollment token id (16 hex digits).
pub fn new_token_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Hex SHA-256 of a secret, as stored in the control database.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored_hash` (hex), compared in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    let computed = Sha256::digest(secret.as_bytes());
    match hex::decode(stored_hash) {
        Ok(stored) => computed.as_slice().ct_eq(&stored).into(),
        Err(_) => false,
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Splits `fpe_<id>_<secret>` into (id, secret).
pub fn parse_enrollment_token(token: &str) -> Result<(&str, &str), MalformedToken> {
    let malformed = MalformedToken {
        kind: "enrollment token",
        expected: "fpe_<16 hex digits>_<64 hex digits>",
    };
    let rest = token
        .strip_prefix(ENROLLMENT_PREFIX)
        .ok_or(malformed.clone())?;
    let (id, secret) = rest.split_once('_').ok_or(malformed.clone())?;
    if is_lower_hex(id, TOKEN_ID_HEX_LEN) && is_lower_hex(secret, SECRET_HEX_LEN) {
        Ok((id, secret))
    } else {
        Err(malformed)
    }
}

/// Splits `fpa_<agent-uuid>_<secret>` into (agent id, secret).
pub fn parse_agent_credential(credential: &str) -> Result<(Uuid, &str), MalformedToken> {
    let malformed = MalformedToken {
        kind: "agent credential",
        expected: "fpa_<agent uuid>_<64 hex digits>",
    };
    let rest = credential
        .strip_prefix(AGENT_PREFIX)
        .ok_or(malformed.clone())?;
    let (id, secret) = rest.split_once('_').ok_or(malformed.clone())?;
    let uuid = Uuid::try_parse(id).map_err(|_| malformed.clone())?;
    if id.len() == 36 && is_lower_hex(secret, SECRET_HEX_LEN) {
        Ok((uuid, secret))
    } else {
        Err(malformed)
    }
}

pub fn format_enrollment_token(id: &str, secret: &str) -> String {
    format!("{ENROLLMENT_PREFIX}{id}_{secret}")
}

pub fn format_agent_credential(agent_id: &Uuid, secret: &str) -> String {
    format!("{AGENT_PREFIX}{}_{secret}", agent_id.hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_round_trip() {
        let id = new_token_id();
        let secret = new_secret();
        assert_eq!(id.len(), 16);
        assert_eq!(secret.len(), 64);
        let token = format_enrollment_token(&id, &secret);
        assert_eq!(
            parse_enrollment_token(&token).unwrap(),
            (id.as_str(), secret.as_str())
        );

        let agent = Uuid::new_v4();
        let cred = format_agent_credential(&agent, &secret);
        assert!(cred.starts_with("fpa_"));
        assert_eq!(
            parse_agent_credential(&cred).unwrap(),
            (agent, secret.as_str())
        );
    }

    #[test]
    fn secrets_differ_each_time() {
        assert_ne!(new_secret(), new_secret());
    }

    #[test]
    fn malformed_tokens_are_rejected_with_the_expected_shape() {
        let s = "a".repeat(64);
        for bad in [
            String::new(),
            "fpe_".into(),
            format!("fpa_0123456789abcdef_{s}"),
            format!("fpe_0123456789abcdeg_{s}"),
            format!("fpe_0123456789abcdef_{}", "A".repeat(64)),
            format!("fpe_0123456789abcdef_{}", "a".repeat(63)),
            format!("fpe_0123456789abcdef{s}"),
        ] {
            assert_eq!(
                parse_enrollment_token(&bad).unwrap_err().to_string(),
                "malformed enrollment token: expected `fpe_<16 hex digits>_<64 hex digits>`",
                "{bad}"
            );
        }
        let u = Uuid::new_v4();
        for bad in [
            format!("fpa_{}_{s}", u.simple()),
            format!("fpa_{u}_{}", "z".repeat(64)),
            format!("fpa_{u}"),
            format!("Bearer fpa_{u}_{s}"),
        ] {
            assert_eq!(
                parse_agent_credential(&bad).unwrap_err().to_string(),
                "malformed agent credential: expected `fpa_<agent uuid>_<64 hex digits>`",
                "{bad}"
            );
        }
    }

    #[test]
    fn hash_is_sha256_hex_and_comparison_is_exact() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let h = hash_secret("secret-1");
        assert!(secret_matches("secret-1", &h));
        assert!(!secret_matches("secret-2", &h));
        assert!(
            !secret_matches("secret-1", &h[..62]),
            "truncated hash never matches"
        );
        assert!(!secret_matches("secret-1", "not hex"));
    }
}
