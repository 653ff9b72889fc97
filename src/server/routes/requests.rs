//! Recovery requests: arm, list, read, cancel (operators); the image's own
//! request, its progress and its result (recovery tokens). The transitions
//! themselves are the catalog's (super::super::state).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::Shared;
use crate::api::AuditAction;
use crate::api::{
    ApiError, CLAIM_LEASE_SECS, ChosenDisks, ClaimRequest, Claimed, CreatedRequest,
    DEFAULT_REQUEST_EXPIRY, MachineIdentity, NewRequest, ProgressReport, RecoveryRequest,
    RequestState, ResultReport, Scope, parse_machine_id,
};
use crate::server::error::ApiResult;
use crate::server::extract::{Admin, Caller, JsonBody, PathHost, RecoveryToken};
use crate::server::files;
use crate::server::state::{ClaimOutcome, now_secs};
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
        shrink,
        disks,
        overwrite,
        expires,
        machines,
        any_machine,
    } = new;
    let expires_in =
        crate::repo::prune::parse_duration(expires.as_deref().unwrap_or(DEFAULT_REQUEST_EXPIRY))
            .map_err(|e| ApiError::BadRequest(format!("expires: {e:#}")))?;
    if expires_in.as_secs() == 0 {
        return Err(ApiError::BadRequest(
            "expires: a request that expires at once would never start".into(),
        ));
    }
    let mut named = Vec::new();
    for m in &machines {
        named.push(parse_machine_id(m).map_err(|e| ApiError::BadRequest(format!("machine: {e}")))?);
    }
    if any_machine && !named.is_empty() {
        return Err(ApiError::BadRequest(
            "give either machines or any_machine, not both".into(),
        ));
    }
    if let Some(h) = &hostname {
        crate::retarget::parse_hostname(h)
            .map_err(|e| ApiError::BadRequest(format!("hostname {h:?}: {e}")))?;
    }
    for a in &addresses {
        crate::retarget::parse_address(a)
            .map_err(|e| ApiError::BadRequest(format!("address {a:?}: {e}")))?;
    }
    if disks.len() > crate::api::MAX_DISK_MAPPINGS {
        return Err(ApiError::BadRequest(format!(
            "{} disk mappings: at most {}",
            disks.len(),
            crate::api::MAX_DISK_MAPPINGS
        )));
    }
    for d in &disks {
        crate::api::parse_disk_mapping(d)
            .map_err(|e| ApiError::BadRequest(format!("disk: {e}")))?;
    }
    let created = s
        .blocking(move |s| {
            let m = files::snapshot_at(&files::host_dir(&s.data, &host), &at)?;
            let now_secs = now_secs();
            let now = crate::time::format_utc(now_secs);
            // By default the captured machine: its DMI when it identifies
            // it, else its MAC addresses.
            let captured = MachineIdentity::new(
                m.system.dmi.as_ref(),
                &m.network
                    .interfaces
                    .iter()
                    .filter_map(|i| i.mac.as_ref())
                    .map(|mac| mac.as_str().to_string())
                    .collect::<Vec<_>>(),
            );
            let captured_macs = if named.is_empty() {
                captured.macs.clone()
            } else {
                Vec::new()
            };
            let machines = if any_machine || !named.is_empty() {
                named
            } else {
                let ids = captured.default_ids();
                if ids.is_empty() {
                    return Err(ApiError::BadRequest(format!(
                        "snapshot {} of {host} records no DMI identity and no MAC address to \
                         recognise the machine by: name it (--machine uuid=...|serial=...|mac=...) \
                         or allow any machine (--any-machine)",
                        m.snapshot.id
                    )));
                }
                ids
            };
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
                shrink,
                disks,
                overwrite,
                expires: Some(crate::time::format_utc(
                    now_secs.saturating_add(expires_in.as_secs() as i64),
                )),
                machines,
                any_machine,
                captured_macs,
                claim: None,
                refused_claims: Vec::new(),
            };
            s.catalog.change(|cat| {
                cat.expire_due(now_secs);
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
    me.claimed()?;
    if p.message.len() > 4096 {
        return Err(ApiError::BadRequest("message over 4096 bytes".into()));
    }
    let now = crate::time::now_utc();
    s.change_catalog(move |cat| cat.report_progress(&me.request, p, &now).map(axum::Json))
        .await
}

/// `POST /v1/recovery/disks`: the claimed machine records the disks its
/// plan chose, before its first write (a claim's token only), so that its
/// next boot for this request may take them again (docs/security.md).
pub(super) async fn record_disks(
    State(s): State<Shared>,
    me: RecoveryToken,
    JsonBody(body): JsonBody<ChosenDisks>,
) -> Answer {
    me.claimed()?;
    let now = crate::time::now_utc();
    s.change_catalog(move |cat| {
        cat.record_disks(&me.request, body.disks, &now)
            .map(axum::Json)
    })
    .await
}

pub(super) async fn report_result(
    State(s): State<Shared>,
    me: RecoveryToken,
    JsonBody(rep): JsonBody<ResultReport>,
) -> Answer {
    me.claimed()?;
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

/// `POST /v1/claim`: a machine claims a request. With a recovery token,
/// the token's request; with a boot or admin token, `request` or the live
/// request of `host`. Granted: a recovery token bound to this machine.
/// Refused (another machine, an expired or finished request): 409, kept
/// on the request and in the audit log.
pub(super) async fn claim(
    State(s): State<Shared>,
    caller: Caller,
    JsonBody(body): JsonBody<ClaimRequest>,
) -> ApiResult<axum::Json<Claimed>> {
    let ClaimRequest {
        request,
        host,
        machine,
    } = body;
    let machine = MachineIdentity::new(Some(&machine.dmi()), &machine.macs);
    let now = now_secs();
    let id = match &caller.scope {
        Scope::Recovery { request: mine, .. } => {
            if request.as_ref().is_some_and(|r| r != mine) {
                return Err(ApiError::Forbidden(format!(
                    "this token is for request {mine}, not {}",
                    request.unwrap_or_default()
                )));
            }
            mine.clone()
        }
        Scope::Admin | Scope::Boot => match (request, host) {
            (Some(r), _) => r,
            (None, Some(h)) => {
                crate::server::extract::check_host(&h)?;
                s.catalog()
                    .live_request(&h, now)
                    .map(|r| r.id.clone())
                    .ok_or_else(|| ApiError::NotFound(format!("no recovery of {h} is armed")))?
            }
            (None, None) => {
                return Err(ApiError::BadRequest(
                    "name the request or the host to claim".into(),
                ));
            }
        },
        other => {
            return Err(ApiError::Forbidden(format!(
                "this token ({}) may not claim a recovery",
                other.describe()
            )));
        }
    };
    let who = machine.clone();
    let outcome = s
        .change_catalog(move |cat| cat.claim(&id, &who, now))
        .await?;
    match outcome {
        ClaimOutcome::Granted {
            request,
            token,
            renewed,
        } => {
            let detail = format!(
                "{} {} by {}",
                request.host,
                if renewed { "claim renewed" } else { "claimed" },
                machine.describe()
            );
            audit::record(&s, AuditAction::RequestClaimed, &request.id, &detail).await;
            Ok(axum::Json(Claimed {
                request,
                token,
                lease_secs: CLAIM_LEASE_SECS,
            }))
        }
        ClaimOutcome::Refused { request, error } => {
            audit::record(
                &s,
                AuditAction::ClaimRefused,
                &request.id,
                &format!("{}: {error}", request.host),
            )
            .await;
            Err(error)
        }
    }
}
