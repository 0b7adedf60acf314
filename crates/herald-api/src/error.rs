//! The one error type every handler returns, and its mapping to the contract's
//! `APIErrorResponse` shape: `{"status": N, "message": "…", "data": […]}`.
//!
//! Client mistakes carry a message that names the field and the problem. Server faults (5xx)
//! are logged here with their cause and answered with a fixed message, so internals never
//! reach a response body.

use std::fmt;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_store::StoreError;
use serde_json::{Value, json};

/// An error answered in the contract's error shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    data: Option<Value>,
}

impl ApiError {
    /// An error with a status and message and no details.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            data: None,
        }
    }

    /// 400: malformed input that is not about one field (bad JSON, bad cursor).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no usable credentials.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized")
    }

    /// 403: valid credentials that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 for a named kind of resource: `"tenant not found"`.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    /// 409: the id is taken.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 413: the body is larger than the configured limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 422 with one `"field: problem"` line per failure. The message repeats them so a client
    /// that only shows `message` still learns which field is wrong.
    pub fn validation(problems: Vec<String>) -> Self {
        let message = if problems.is_empty() {
            "validation error".to_string()
        } else {
            format!("validation error: {}", problems.join("; "))
        };
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message,
            data: Some(json!(problems)),
        }
    }

    /// 422 for a single field.
    pub fn invalid(field: &str, problem: impl fmt::Display) -> Self {
        Self::validation(vec![format!("{field}: {problem}")])
    }

    /// 500: logs `cause` and answers a fixed message.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error while handling an API request");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }

    /// Adds contextual details.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// The error shape's body, `{"status", "message", "data"?}` (also one refused event of a
    /// batch publish).
    pub fn into_body(self) -> Value {
        let mut body = json!({ "status": self.status.as_u16(), "message": self.message });
        if let (Some(data), Some(obj)) = (self.data, body.as_object_mut()) {
            obj.insert("data".into(), data);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (status, Json(self.into_body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor => ApiError::bad_request("invalid cursor"),
            StoreError::Conflict { what, id } => {
                ApiError::conflict(format!("{what} {id:?} already exists"))
            }
            other => match other.unavailable() {
                Some(why) => {
                    tracing::warn!(error = %other, "store unavailable; answering 503");
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why)
                }
                None => ApiError::internal(other),
            },
        }
    }
}

/// Collects `"field: problem"` lines so a request reports every mistake at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Records one problem.
    pub fn push(&mut self, field: impl fmt::Display, problem: impl fmt::Display) {
        self.0.push(format!("{field}: {problem}"));
    }

    /// Records a problem that already names its field.
    pub fn push_line(&mut self, line: impl Into<String>) {
        self.0.push(line.into());
    }

    /// How many problems were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, else a 422.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}
