//! Errors: a status and `{"error": "..."}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// An error answer: its status (the variant) and its message. The server
/// answers with it; the client turns a non-2xx answer into it, so that a
/// caller matches `ApiError::NotFound(_)` rather than a message's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: malformed input.
    BadRequest(String),
    /// 401: no token, an unknown or revoked one, or a recovery token whose
    /// request is over.
    Unauthorized(String),
    /// 403: a valid token that may not do this.
    Forbidden(String),
    /// 404: no such file, snapshot, host, request or endpoint.
    NotFound(String),
    /// 409: a conflict with the stored state.
    Conflict(String),
    /// 413: a body over the limit.
    TooLarge(String),
    /// 507: the host's quota or the server's disk is full.
    InsufficientStorage(String),
    /// 500: the server failed.
    Internal(String),
    /// Any other status.
    Other(u16, String),
}

impl ApiError {
    pub fn from_status(status: u16, message: impl Into<String>) -> ApiError {
        let m = message.into();
        match status {
            400 => ApiError::BadRequest(m),
            401 => ApiError::Unauthorized(m),
            403 => ApiError::Forbidden(m),
            404 => ApiError::NotFound(m),
            409 => ApiError::Conflict(m),
            413 => ApiError::TooLarge(m),
            507 => ApiError::InsufficientStorage(m),
            500 => ApiError::Internal(m),
            s => ApiError::Other(s, m),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::InsufficientStorage(_) => 507,
            ApiError::Internal(_) => 500,
            ApiError::Other(s, _) => *s,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::TooLarge(m)
            | ApiError::InsufficientStorage(m)
            | ApiError::Internal(m)
            | ApiError::Other(_, m) => m,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.message().to_string(),
        }
    }

    /// Worth trying again: the server failed or is overloaded (not a
    /// full quota or disk: that stays full until an operator acts).
    pub fn is_transient(&self) -> bool {
        let s = self.status();
        (s >= 500 && s != 507) || s == 429
    }
}

/// The reason phrases of the statuses the API uses (RFC 9110).
fn reason(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => return None,
    })
}

/// `404 Not Found: no such file`, as an HTTP status line reads.
impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match reason(self.status()) {
            Some(r) => write!(f, "{} {r}: {}", self.status(), self.message()),
            None => write!(f, "{}: {}", self.status(), self.message()),
        }
    }
}

impl std::error::Error for ApiError {}

/// A full filesystem (ENOSPC, EDQUOT) among an error's causes.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

const DISK_FULL: &str =
    "the recovery server's disk is full: nothing was stored (free space or prune, then retry)";

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        if e.chain()
            .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(is_disk_full))
        {
            return ApiError::InsufficientStorage(format!("{DISK_FULL} ({e:#})"));
        }
        ApiError::Internal(format!("{e:#}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        if is_disk_full(&e) {
            return ApiError::InsufficientStorage(format!("{DISK_FULL} ({e})"));
        }
        ApiError::Internal(format!("storage error: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_read_like_a_status_line() {
        for s in [400, 401, 403, 404, 409, 413, 416, 500, 503, 507] {
            assert_eq!(ApiError::from_status(s, "m").status(), s);
        }
        let e = ApiError::from_status(404, "no such file");
        assert_eq!(e, ApiError::NotFound("no such file".into()));
        assert_eq!(e.to_string(), "404 Not Found: no such file");
        assert_eq!(ApiError::from_status(418, "x").to_string(), "418: x");
        assert!(ApiError::from_status(503, "").is_transient());
        assert!(!ApiError::from_status(409, "").is_transient());
        assert!(
            !ApiError::from_status(507, "").is_transient(),
            "full stays full"
        );
        let full = std::io::Error::from_raw_os_error(28); // ENOSPC
        assert_eq!(ApiError::from(full).status(), 507);
        let full = anyhow::Error::from(std::io::Error::from_raw_os_error(28)).context("writing");
        assert_eq!(ApiError::from(full).status(), 507);
        assert_eq!(
            serde_json::to_string(&e.body()).unwrap(),
            r#"{"error":"no such file"}"#
        );
    }
}
