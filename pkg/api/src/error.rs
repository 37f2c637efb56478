//! `ApiError`: every failure is JSON `{"error","message"}` with a status.
//! Server-side failures never carry the query or ClickHouse's text (it may
//! echo user input or schema details): the detail goes to the log. What a
//! store failure answers is decided here, for every route: [`ApiError::store`]
//! for data routes, [`ApiError::explorer`] for the SQL explorer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use skyhouse_store::StoreError;

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

impl ApiError {
    /// A data route's store failure: 503 naming `what`, never ClickHouse's
    /// text. Logged at error when it will not pass by itself (the schema
    /// does not match the binary, the credentials are refused, a bug),
    /// else at warn.
    pub fn store(what: &str, e: StoreError) -> ApiError {
        match e {
            StoreError::Transient { .. } | StoreError::BadRows(_) => {}
            StoreError::Schema(_)
            | StoreError::Access(_)
            | StoreError::Config(_)
            | StoreError::Migration(_)
            | StoreError::Internal(_) => {
                tracing::error!(what, error = %e, "Request failed; it will until this is fixed.");
                return ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error: "Unavailable",
                    message: format!("{what} is unavailable; try again"),
                };
            }
        }
        ApiError::unavailable(what, e)
    }

    /// The SQL explorer's failure: what ClickHouse said about the caller's
    /// own statement is a 400 showing it (one line); a failure to reach
    /// ClickHouse, or a server it needs (a shard none of whose replicas
    /// answers, ZooKeeper: [`StoreError::is_outage`]), is a 503 as for data
    /// routes.
    pub fn explorer(e: StoreError) -> ApiError {
        if e.is_outage() {
            return ApiError::store("ClickHouse", e);
        }
        match e.server_message() {
            Some(said) => ApiError::bad_request(format!(
                "ClickHouse refused the query: {}",
                skyhouse_store::one_line(said)
            )),
            None => ApiError::store("ClickHouse", e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}
