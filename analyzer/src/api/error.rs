//! API errors and their JSON bodies: `{"error":{"field":..,"reason":..}}` for bad parameters,
//! `{"error":{"reason":..}}` otherwise.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::doc::{ErrorBody, ErrorDetail};

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
        let (status, field, reason) = match self {
            Self::BadRequest(e) => (StatusCode::BAD_REQUEST, Some(e.field), e.reason),
            Self::Unauthorized(r) => (StatusCode::UNAUTHORIZED, None, r.to_owned()),
            Self::Forbidden(r) => (StatusCode::FORBIDDEN, None, r),
            Self::NotFound(r) => (StatusCode::NOT_FOUND, None, r),
            Self::Conflict(r) => (StatusCode::CONFLICT, None, r),
            Self::Unavailable(r) => (StatusCode::SERVICE_UNAVAILABLE, None, r),
        };
        let body = ErrorBody {
            error: ErrorDetail { field, reason },
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
