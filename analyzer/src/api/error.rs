//! API errors and their JSON bodies: `{"error":{"field":..,"reason":..}}` for bad parameters,
//! `{"error":{"reason":..}}` otherwise.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::query::QueryError;
use crate::query::filters::FieldError;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(FieldError),
    Unauthorized(&'static str),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Unavailable(String),
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::BadRequest(e)
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        tracing::error!(error = %e, "query failed");
        Self::Unavailable("the analytics store could not answer; retry later".to_owned())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::BadRequest(e) => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"field": e.field, "reason": e.reason}}),
            ),
            Self::Unauthorized(r) => (StatusCode::UNAUTHORIZED, json!({"error": {"reason": r}})),
            Self::Forbidden(r) => (StatusCode::FORBIDDEN, json!({"error": {"reason": r}})),
            Self::NotFound(r) => (StatusCode::NOT_FOUND, json!({"error": {"reason": r}})),
            Self::Conflict(r) => (StatusCode::CONFLICT, json!({"error": {"reason": r}})),
            Self::Unavailable(r) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"reason": r}}),
            ),
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"fleetpulse\""),
            );
        }
        resp
    }
}
