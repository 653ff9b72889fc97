//! Operations: capture reports, host health, `/metrics`, verification on
//! demand, the audit log. Health and metrics are for admin and monitor
//! tokens (a host's own health also for its host token); the audit log and
//! verification for admin only.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::api::{
    ApiError, AuditEvent, CaptureReport, HostHealth, Scope, VerifyRequest, VerifyResult,
};
use crate::server::error::ApiResult;
use crate::server::extract::{Admin, Caller, JsonBody, PathHost, WriteHost, check_host};
use crate::server::health::{self, Limits};
use crate::server::metrics::{self, HostFigures, ServerFigures};
use crate::server::{Server, audit, verify};

/// Longest warning list a report may carry.
const MAX_WARNINGS: usize = 10_000;

/// `POST /v1/hosts/{host}/captures`: the host's token (or admin) reports a
/// capture.
pub(super) async fn report_capture(
    State(s): State<Shared>,
    WriteHost(host): WriteHost,
    JsonBody(mut report): JsonBody<CaptureReport>,
) -> ApiResult<StatusCode> {
    if report.warnings.len() > MAX_WARNINGS {
        let more = report.warnings.len() - MAX_WARNINGS;
        report.warnings.truncate(MAX_WARNINGS);
        report.warnings.push(format!("and {more} more warnings"));
    }
    s.blocking(move |s| health::record_capture(&s.data, &host, report))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn limits(q: &HashMap<String, String>) -> ApiResult<Limits> {
    Limits::parse(
        q.get("max_age").map(String::as_str),
        q.get("critical_age").map(String::as_str),
    )
}

/// Admin or monitor tokens.
fn may_monitor(caller: &Caller) -> ApiResult<()> {
    match caller.scope {
        Scope::Admin | Scope::Monitor => Ok(()),
        ref other => Err(ApiError::Forbidden(format!(
            "this token ({}) may not read the server's health (admin or monitor tokens)",
            other.describe()
        ))),
    }
}

/// `GET /v1/health?max_age=26h&critical_age=52h`: every host.
pub(super) async fn all_health(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Vec<HostHealth>>> {
    may_monitor(&caller)?;
    let limits = limits(&q)?;
    let list = s
        .blocking(move |s| {
            s.hosts()
                .iter()
                .map(|h| health::host_health(&s.data, h, limits))
                .collect()
        })
        .await?;
    Ok(axum::Json(list))
}

/// `GET /v1/hosts/{host}/health`: admin, monitor, or the host's own tokens.
pub(super) async fn host_health(
    State(s): State<Shared>,
    PathHost(host): PathHost,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<HostHealth>> {
    let own = match &caller.scope {
        Scope::Host { host: h } | Scope::Recovery { host: h, .. } => *h == host,
        _ => false,
    };
    if !own {
        may_monitor(&caller)?;
    }
    let limits = limits(&q)?;
    let answer = s
        .blocking(move |s| {
            if !s.hosts().contains(&host) {
                return Err(ApiError::NotFound(format!("no host {host}")));
            }
            health::host_health(&s.data, &host, limits)
        })
        .await?;
    Ok(axum::Json(answer))
}

/// Bytes of the files under `dir` (as stored: their lengths).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Free bytes for an unprivileged writer on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|v| v.blocks_available().saturating_mul(v.fragment_size()))
        .unwrap_or(0)
}

fn figures(s: &Server) -> ApiResult<(Vec<HostFigures>, ServerFigures)> {
    let limits = Limits::parse(None, None)?;
    let mut hosts = Vec::new();
    for h in s.hosts() {
        hosts.push(HostFigures {
            stored_bytes: bytes_under(&crate::server::files::host_dir(&s.data, &h)),
            health: health::host_health(&s.data, &h, limits)?,
        });
    }
    let mut requests_by_state = BTreeMap::new();
    for r in &s.catalog().requests {
        *requests_by_state.entry(r.state.as_str()).or_insert(0) += 1;
    }
    let server = ServerFigures {
        requests_by_state,
        storage_used_bytes: hosts.iter().map(|h| h.stored_bytes).sum(),
        storage_free_bytes: free_bytes(&s.data),
    };
    Ok((hosts, server))
}

/// `GET /metrics`: Prometheus text format, for admin and monitor tokens
/// (Prometheus sends one with `authorization: {credentials: ...}`).
pub(super) async fn metrics(State(s): State<Shared>, caller: Caller) -> ApiResult<Response> {
    may_monitor(&caller)?;
    let text = s
        .blocking(|s| {
            let (hosts, server) = figures(s)?;
            Ok(metrics::render(&hosts, &server, &s.latencies))
        })
        .await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// `POST /v1/verify`: verify one host, or all, now; answers the results.
pub(super) async fn verify_now(
    State(s): State<Shared>,
    _: Admin,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> ApiResult<axum::Json<Vec<VerifyResult>>> {
    let hosts = match req.host {
        Some(h) => {
            check_host(&h)?;
            if !s.hosts().contains(&h) {
                return Err(ApiError::NotFound(format!("no host {h}")));
            }
            vec![h]
        }
        None => s.hosts(),
    };
    Ok(axum::Json(verify::verify_hosts(&s, hosts).await))
}

/// `GET /v1/audit`: the audit log, oldest first (admin). There is no
/// route that changes it.
pub(super) async fn audit_log(
    State(s): State<Shared>,
    _: Admin,
) -> ApiResult<axum::Json<Vec<AuditEvent>>> {
    let events = s.blocking(|s| audit::read(&s.data)).await?;
    Ok(axum::Json(events))
}
