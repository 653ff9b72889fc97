//! Recovery requests: arm, list, read, cancel (operators); the image's own
//! request, its progress and its result (recovery tokens). The transitions
//! themselves are the catalog's (super::super::state).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::Shared;
use crate::api::AuditAction;
use crate::api::{
    ApiError, CreatedRequest, NewRequest, ProgressReport, RecoveryRequest, RequestState,
    ResultReport, Scope,
};
use crate::server::error::ApiResult;
use crate::server::extract::{Admin, Caller, JsonBody, PathHost, RecoveryToken};
use crate::server::files;
use crate::server::{audit, auth};

type Answer = ApiResult<axum::Json<RecoveryRequest>>;

pub(super) async fn create_request(
    State(s): State<Shared>,
    PathHost(host): PathHost,
    _: Admin,
    JsonBody(new): JsonBody<NewRequest>,
) -> ApiResult<(StatusCode, axum::Json<CreatedRequest>)> {
    let NewRequest {
        at,
        hostname,
        addresses,
    } = new;
    if let Some(h) = &hostname {
        crate::retarget::parse_hostname(h)
            .map_err(|e| ApiError::BadRequest(format!("hostname {h:?}: {e}")))?;
    }
    for a in &addresses {
        crate::retarget::parse_address(a)
            .map_err(|e| ApiError::BadRequest(format!("address {a:?}: {e}")))?;
    }
    let created = s
        .blocking(move |s| {
            let m = files::snapshot_at(&files::host_dir(&s.data, &host), &at)?;
            let now = crate::time::now_utc();
            let req = RecoveryRequest {
                id: format!("req-{}", auth::random_hex(6)),
                host,
                at,
                snapshot: m.snapshot.id.clone(),
                snapshot_time: m.snapshot.time.to_string(),
                state: RequestState::Armed,
                created: now.clone(),
                updated: now,
                progress: None,
                result: None,
                hostname,
                addresses,
            };
            s.catalog.change(|cat| {
                let request = cat.arm(req)?;
                let token = cat.mint_recovery_token(&request.id)?;
                Ok(CreatedRequest { request, token })
            })
        })
        .await?;
    let r = &created.request;
    audit::record(
        &s,
        AuditAction::RequestArmed,
        &r.id,
        &format!("{} to {}", r.host, r.snapshot),
    )
    .await;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

pub(super) async fn list_requests(
    State(s): State<Shared>,
    _: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Vec<RecoveryRequest>>> {
    let host = q.get("host").cloned();
    let list = s
        .catalog()
        .requests
        .iter()
        .filter(|r| host.as_ref().is_none_or(|h| &r.host == h))
        .cloned()
        .collect();
    Ok(axum::Json(list))
}

/// One request: for admin, or its own recovery token.
pub(super) async fn get_request(
    State(s): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let allowed = match &caller.scope {
        Scope::Admin => true,
        Scope::Recovery { request, .. } => *request == id,
        _ => false,
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "this token ({}) may not read request {id}",
            caller.scope.describe()
        )));
    }
    s.catalog()
        .request(&id)
        .cloned()
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound(format!("no request {id}")))
}

pub(super) async fn cancel_request(
    State(s): State<Shared>,
    _: Admin,
    Path(id): Path<String>,
) -> Answer {
    let now = crate::time::now_utc();
    let r = s.change_catalog(move |cat| cat.cancel(&id, &now)).await?;
    audit::record(&s, AuditAction::RequestCancelled, &r.id, &r.host).await;
    Ok(axum::Json(r))
}

/// The recovery token's own request.
pub(super) async fn my_recovery(State(s): State<Shared>, me: RecoveryToken) -> Answer {
    s.catalog()
        .request(&me.request)
        .cloned()
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound("no such request".into()))
}

pub(super) async fn report_progress(
    State(s): State<Shared>,
    me: RecoveryToken,
    JsonBody(p): JsonBody<ProgressReport>,
) -> Answer {
    if p.message.len() > 4096 {
        return Err(ApiError::BadRequest("message over 4096 bytes".into()));
    }
    let now = crate::time::now_utc();
    s.change_catalog(move |cat| cat.report_progress(&me.request, p, &now).map(axum::Json))
        .await
}

pub(super) async fn report_result(
    State(s): State<Shared>,
    me: RecoveryToken,
    JsonBody(rep): JsonBody<ResultReport>,
) -> Answer {
    if rep.message.len() > 16384 {
        return Err(ApiError::BadRequest("message over 16384 bytes".into()));
    }
    let now = crate::time::now_utc();
    let r = s
        .change_catalog(move |cat| cat.finish(&me.request, rep, &now))
        .await?;
    let detail = format!(
        "{} {}: {}",
        r.host,
        r.state,
        r.result.as_deref().unwrap_or("")
    );
    audit::record(&s, AuditAction::RequestFinished, &r.id, &detail).await;
    Ok(axum::Json(r))
}
