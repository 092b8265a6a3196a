//! The API's one error type, and its mapping to the error body of API.md:
//! `{"error": {"code": "<snake_case>", "message": "<sentence>"}}`.

use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::ErrorHandlerResponse;
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
            EngineError::Invalid(message) => ApiError::invalid_field(message),
            EngineError::Journal(_) => {
                tracing::error!(error = %e, "journal failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "journal_error",
                    "the journal could not make the change durable; it was not acknowledged",
                )
            }
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

/// Gives actix-web's own error answers (404 for an unknown path, 405 for a
/// known path with another method, ...) the contract's error body.
/// Answers that already carry a JSON body pass unchanged.
pub fn contract_body<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_client_error() => "invalid_request",
        _ => "internal_error",
    };
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let body = ApiError::new(status, code, reason).error_response();
    let (req, _) = res.into_parts();
    let res = ServiceResponse::new(req, body).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
