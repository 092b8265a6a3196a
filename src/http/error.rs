//! The API's one error type, and its mapping to the error body of API.md:
//! `{"error": {"code": "<snake_case>", "message": "<sentence>"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use pushd_actors::engine::EngineError;
use pushd_actors::ports::StoreError;
use serde_json::json;

/// An answer other than 2xx.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human sentence.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a field problem.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", message)
    }

    /// 404 for a named kind of resource.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .json(json!({"error": {"code": self.code, "message": self.message}}))
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => ApiError::not_found(what),
            EngineError::NotRetryable(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_retryable", e.to_string())
            }
            EngineError::Store(e) => e.into(),
            EngineError::Unavailable(_) => {
                tracing::error!(error = %e, "engine unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            "the store failed; nothing was changed",
        )
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        match e {
            crate::store::Error::BadCursor => {
                ApiError::invalid_field("cursor is not one this server handed out")
            }
            other => StoreError::from(other).into(),
        }
    }
}
