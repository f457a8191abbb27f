//! Opaque pagination cursors: a position serialized as JSON, then URL-safe base64, so clients
//! pass it back verbatim and a tampered one is a clear 400 rather than a wrong page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::filters::FieldError;

pub fn encode<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// The position in `s`, or a `cursor` field error.
pub fn decode<T: DeserializeOwned>(s: &str) -> Result<T, FieldError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| FieldError::new("cursor", "not a cursor returned by this endpoint"))
}
