//! Generic webhook: the notification JSON as the body, signed with HMAC-SHA256.
//!
//! Headers: `X-Fleetpulse-Timestamp: <unix seconds>`, `X-Fleetpulse-Signature:
//! sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` (timestamp signed with the body, so
//! a captured request cannot be replayed later with a new timestamp) and
//! `X-Fleetpulse-Delivery: <record id>` (stable across retries: deduplicate on it).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::json;
use super::record::Record;

/// The request body.
pub fn body(r: &Record) -> Vec<u8> {
    json::encode(r).into_bytes()
}

/// `sha256=<hex>` over `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length: new_from_slice cannot fail for Hmac<Sha256>.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // The well-known HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
        // pins the primitive; the signature is that primitive over "<timestamp>.<body>".
        let sig = signature(b"key", 1_700_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
