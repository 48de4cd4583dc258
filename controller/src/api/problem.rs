//! Errors as RFC 9457 problem details (`application/problem+json`).
use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// Seconds a client should wait before writing again during maintenance.
pub const MAINTENANCE_RETRY_SECS: u64 = 300;

/// A problem: status, a stable type, a title and what happened.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, the same for every problem of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// The field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait (also in `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    #[serde(skip)]
    www_authenticate: Option<String>,
}

impl Problem {
    /// A problem of `status` with a slug naming its type.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://sluice.invalid/problems/{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 401, with a `WWW-Authenticate` challenge.
    pub fn unauthorized(detail: impl Into<String>, challenge: &str) -> Problem {
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        );
        p.www_authenticate = Some(challenge.into());
        p
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        let mut p = Problem::new(
            StatusCode::FORBIDDEN,
            "insufficient-scope",
            "Insufficient scope",
            detail,
        );
        p.www_authenticate = Some("Bearer realm=\"sluice\", error=\"insufficient_scope\"".into());
        p
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 429 with `Retry-After`.
    pub fn too_many(retry_after: u64) -> Problem {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("this client's request rate is over its limit: retry after {retry_after} s"),
        );
        p.retry_after = Some(retry_after);
        p
    }

    /// 500 (the detail goes to the log, not to the caller).
    pub fn internal(e: &dyn std::fmt::Display) -> Problem {
        log::error!("admin API: {e}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the controller failed; its log says why",
        )
    }

    /// With the field at fault.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match e {
            StoreError::NotFound { .. } => Problem::not_found(e.to_string()),
            StoreError::NameTaken { .. } => Problem::new(
                StatusCode::CONFLICT,
                "name-taken",
                "Name taken",
                e.to_string(),
            )
            .with_field("name"),
            StoreError::VersionMismatch { .. } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "version-mismatch",
                "Precondition failed",
                e.to_string(),
            ),
            StoreError::Maintenance(_) => {
                let mut p = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "maintenance",
                    "Read-only maintenance",
                    format!("{e}; reads work, writes are refused until it ends"),
                );
                p.retry_after = Some(MAINTENANCE_RETRY_SECS);
                p
            }
            StoreError::Invalid(f) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "Invalid field",
                f.to_string(),
            )
            .with_field(f.field),
            StoreError::Policy(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-policy",
                "Invalid policy",
                e.to_string(),
            ),
            StoreError::Refused(_) => {
                Problem::new(StatusCode::CONFLICT, "refused", "Refused", e.to_string())
            }
            StoreError::Enrolment => {
                Problem::unauthorized(e.to_string(), "Bearer realm=\"sluice-enrol\"")
            }
            StoreError::Db(e) => Problem::internal(&e),
        }
    }
}

impl From<crate::db::DbError> for Problem {
    fn from(e: crate::db::DbError) -> Problem {
        Problem::internal(&e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut r = (status, body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(c) = self
            .www_authenticate
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            h.insert(header::WWW_AUTHENTICATE, c);
        }
        r
    }
}
