//! The API's one error type, and its mapping to the contract's error body:
//! `{"error": {"code": "<snake_case>", "message": "<sentence>"}}`.

use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use pushd_actors::engine::EngineError;
use pushd_actors::ports::StoreError;
use serde_json::json;

use crate::topology::{self, wire::Refused};

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

    /// 400 for a `cursor` this server did not hand out.
    pub fn bad_cursor() -> Self {
        Self::invalid_field(
            "cursor is not one this server handed out; page from the start (no cursor) and follow next_cursor",
        )
    }

    /// 400 with a field problem.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", message)
    }

    /// 400 for an id against the id rule's characters, naming it.
    pub fn bad_id(what: &str) -> Self {
        Self::invalid_field(format!(
            "{what} must be valid UTF-8 without control characters"
        ))
    }

    /// 404 naming the kind and the id: `message "welcom" not found`.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} {id:?} not found"),
        )
    }

    /// 408 for a body not read whole within `secs` seconds.
    pub fn request_timeout(secs: u64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {secs} s ([http] body_timeout_secs / \
                 PUSHD_HTTP_BODY_TIMEOUT_SECS); send the whole body at once, on a new connection"
            ),
        )
    }

    /// 503 for a request on a connection past the `max` served at once.
    pub fn too_many_connections(max: usize) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!(
                "pushd serves {max} connections at once ([http] max_connections / \
                 PUSHD_HTTP_MAX_CONNECTIONS) and all are in use; retry in a moment"
            ),
        )
    }

    /// 405 for `req`'s method on a known path, with the `Allow` header.
    pub fn method_not_allowed(req: &HttpRequest, allow: &str) -> HttpResponse {
        let message = format!(
            "{} is not allowed on {}; use {allow}",
            req.method(),
            req.path()
        );
        let mut res = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
        .error_response();
        if let Ok(value) = header::HeaderValue::from_str(allow) {
            res.headers_mut().insert(header::ALLOW, value);
        }
        res
    }
}

/// Maps an engine error to the API's, naming the id of what was not found:
/// the engine says "customer", the handler knows which one.
pub fn naming<'a>(ids: &'a [(&'a str, &'a str)]) -> impl Fn(EngineError) -> ApiError + 'a {
    move |e| match e {
        EngineError::NotFound(kind) => match ids.iter().find(|(k, _)| *k == kind) {
            Some((kind, id)) => ApiError::not_found(kind, id),
            None => ApiError::from(e),
        },
        e => ApiError::from(e),
    }
}

/// Says a serde error in JSON's words, naming the field (`path`): what was
/// expected and what was given, without serde's Rust type names.
pub fn field_error(path: &str, message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    if message.starts_with("unknown field") {
        return message.to_string();
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((given, expected)) = rest.split_once(", expected ")
    {
        return format!("{path} must be {}, not {given}", json_type(expected));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((given, expected)) = rest.split_once(", expected ")
    {
        return format!("{path} must be {}, not {given}", json_type(expected));
    }
    format!("{path}: {message}")
}

/// The JSON name of what serde expected.
fn json_type(expected: &str) -> &str {
    match expected {
        e if e.contains("map") || e.starts_with("struct") => "an object",
        e if e.contains("sequence") => "an array",
        e if e.contains("bool") => "true or false",
        e if e.starts_with('i') || e.starts_with('u') || e.contains("integer") => "a whole number",
        e if e.contains("string") => "a string",
        e => e,
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        }
        let mut res = res.json(json!({"error": {"code": self.code, "message": self.message}}));
        res.extensions_mut().insert(ErrorCode(self.code));
        res
    }
}

/// Seconds a 503's `Retry-After` asks the client to wait: what a partition
/// moving between nodes or a NATS server's loss usually takes.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The error code of an [`ApiError`] answer, kept with the response so a
/// middleware can tell one error from another without reading the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    /// A cluster node's journal failure: the partition's journal was fenced
    /// off (another node took the partition over) or its NATS stream did not
    /// answer. Nothing was acknowledged and the partition is served again
    /// (elsewhere) in a moment: 503, never 500.
    pub fn journal_in_cluster() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "partition_unavailable",
            "this node's journal of the partition refused the change (the partition moved to \
             another node, or NATS did not answer); nothing was acknowledged, retry in a moment",
        )
    }
}

impl From<Refused> for ApiError {
    /// A node-to-node call without a valid node signature: nothing was done.
    fn from(e: Refused) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "node_credential_invalid",
            format!(
                "a node-to-node call must be signed with the cluster secret for this node: {e}"
            ),
        )
    }
}

impl From<topology::Error> for ApiError {
    fn from(e: topology::Error) -> Self {
        match e {
            topology::Error::PartitionUnavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "partition_unavailable",
                e.to_string(),
            ),
            topology::Error::Unavailable(why) => {
                tracing::error!(error = %why, "cluster call failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    format!(
                        "the cluster's NATS did not answer ({why}); nothing was changed, retry \
                         in a moment"
                    ),
                )
            }
            topology::Error::Refused(refused) => refused.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            EngineError::NotRetryable(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_retryable", e.to_string())
            }
            EngineError::NotCancelable(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_cancelable", e.to_string())
            }
            EngineError::Store(e) => e.into(),
            EngineError::Invalid(message) => ApiError::invalid_field(message),
            EngineError::IdempotencyConflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", e.to_string())
            }
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
            crate::store::Error::BadCursor => ApiError::bad_cursor(),
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

impl From<JsonPayloadError> for ApiError {
    fn from(e: JsonPayloadError) -> Self {
        match e {
            JsonPayloadError::OverflowKnownLength { limit, .. }
            | JsonPayloadError::Overflow { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {limit} bytes (max_body_bytes / PUSHD_MAX_BODY_BYTES)"),
            ),
            JsonPayloadError::Deserialize(e) if e.is_data() => {
                // `Fields` put the field's path first; the position adds nothing.
                let text = e.to_string();
                ApiError::invalid_field(text.split(" at line ").next().unwrap_or(&text))
            }
            JsonPayloadError::Deserialize(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON: {e}"),
            ),
            other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", other.to_string()),
        }
    }
}

impl From<QueryPayloadError> for ApiError {
    fn from(e: QueryPayloadError) -> Self {
        match e {
            QueryPayloadError::Deserialize(e) => ApiError::invalid_field(e.to_string()),
            other => ApiError::invalid_field(other.to_string()),
        }
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        ApiError::invalid_field(format!("bad path: {e}"))
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        tracing::error!(error = %e, "blocking call failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the call could not run; nothing was changed",
        )
    }
}

impl From<crate::webhooks::Error> for ApiError {
    fn from(e: crate::webhooks::Error) -> Self {
        use crate::webhooks::Error;
        match e {
            Error::NotFound(id) => ApiError::not_found("webhook", &id),
            Error::Invalid(message) => ApiError::invalid_field(message),
            Error::Io { .. } => {
                tracing::error!(error = %e, "webhooks file failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    "the webhooks file could not be written; nothing was changed",
                )
            }
        }
    }
}

impl From<crate::events::ReadError> for ApiError {
    fn from(e: crate::events::ReadError) -> Self {
        use crate::events::ReadError;
        match e {
            ReadError::BadCursor(_) | ReadError::PastEnd { .. } => {
                ApiError::invalid_field(format!(
                    "after: {e}; start again without after, or from the last cursor you stored"
                ))
            }
            ReadError::Unavailable(_) => {
                tracing::error!(error = %e, "events stream not read");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    format!("the cluster's NATS did not answer ({e}); retry in a moment"),
                )
            }
            ReadError::Io(_) => {
                tracing::error!(error = %e, "event log failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    "the event log could not be read",
                )
            }
        }
    }
}

impl From<crate::backup::Error> for ApiError {
    fn from(e: crate::backup::Error) -> Self {
        if let crate::backup::Error::Unavailable { partition, why } = e {
            tracing::warn!(
                partition,
                why,
                "backup not taken: a partition did not answer"
            );
            return topology::Error::PartitionUnavailable { partition, why }.into();
        }
        tracing::error!(error = %e, "backup failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            "the backup could not be taken (the daemon's log says why); nothing was changed",
        )
    }
}
