//! `ApiError`: every failure is JSON `{"error","message"}` with a status.
//! Server-side failures never carry the query or ClickHouse's text (it may
//! echo user input or schema details): the detail goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable name (`InvalidRequest`, `Unauthorized`, …).
    pub error: &'static str,
    /// One line for a human.
    pub message: String,
}

impl ApiError {
    /// 400: a parameter is wrong (the message names it).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "InvalidRequest",
            message: message.into(),
        }
    }

    /// 401: no key, or a key we do not know.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "Unauthorized",
            message: message.into(),
        }
    }

    /// 403: a valid key without the scope.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            error: "Forbidden",
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "NotFound",
            message: message.into(),
        }
    }

    /// 503 (logged with `detail`; the client sees a generic line).
    pub fn unavailable(what: &str, detail: impl std::fmt::Display) -> ApiError {
        tracing::warn!(what, error = %detail, "Request failed.");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "Unavailable",
            message: format!("{what} is unavailable; try again"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}
