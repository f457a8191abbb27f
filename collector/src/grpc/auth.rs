//! Agent authentication from the `authorization: Bearer fpa_...` metadata entry.
//!
//! The credential is checked against the control database on every call (no cache), so a
//! revocation takes effect with the next request. The resulting identity (tenant, agent,
//! registered device) is the only source of the tenant for everything stored. For Push and
//! GetLimits the check runs in the gate (`gate.rs`) on the headers alone, before the body is
//! read.

use tonic::Status;

use crate::control::tokens::AuthFailure;

/// Extracts the bearer credential from the request headers. The scheme is case-insensitive
/// (RFC 9110, section 11.1): `Bearer`, `bearer` and `BEARER` are the same.
pub fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthFailure> {
    let Some(value) = headers.get("authorization") else {
        return Err(AuthFailure::Missing(
            "missing `authorization` metadata: send `authorization: Bearer <agent credential>` \
             with the credential returned by Register"
                .into(),
        ));
    };
    let malformed = || {
        AuthFailure::Malformed(
            "malformed `authorization` metadata: expected `Bearer <agent credential>`".into(),
        )
    };
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

/// UNAUTHENTICATED with the failure's message.
pub fn unauthenticated(f: &AuthFailure) -> Status {
    Status::unauthenticated(f.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: Option<&str>) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn extracts_bearer_tokens() {
        assert_eq!(bearer(&md(Some("Bearer fpa_x_y"))).unwrap(), "fpa_x_y");
        assert_eq!(bearer(&md(Some("bearer  fpa_x_y "))).unwrap(), "fpa_x_y");
        assert_eq!(bearer(&md(Some("BEARER fpa_x_y"))).unwrap(), "fpa_x_y");
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        assert_eq!(
            bearer(&md(None)).unwrap_err().to_string(),
            "missing `authorization` metadata: send `authorization: Bearer <agent credential>` \
             with the credential returned by Register"
        );
        for bad in ["fpa_x_y", "Basic abc", "Bearer ", "Bearer    "] {
            let e = bearer(&md(Some(bad))).unwrap_err();
            assert_eq!(e.reason(), "malformed", "{bad}");
            assert_eq!(
                e.to_string(),
                "malformed `authorization` metadata: expected `Bearer <agent credential>`"
            );
        }
    }
}
