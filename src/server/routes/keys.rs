//! Escrowed LUKS keys (`/v1/hosts/{host}/keys`): a capture puts its
//! volumes' keys, anyone who may read the host lists what is escrowed,
//! and a key itself is released only to a recovery of that host whose
//! request is armed or running, or to an admin, each release written to
//! the audit log first (no log line, no key).
//!
//! The host's own token may put but never get: it lives on the running
//! machine (a config file, the machine's backups, configuration
//! management), outlives any recovery and is the token most likely to
//! leak; the machine has no use for its key from the server while it runs.
//! A key leaving the server thus always follows an operator's
//! `rewind request`, and is in the audit log.

use axum::extract::{Path, State};

use super::Shared;
use crate::api::{
    ApiError, AuditAction, AuditEvent, EscrowKey, EscrowedKey, KeyInfo, ReleasedKey, Scope,
};
use crate::escrow::vault;
use crate::server::error::ApiResult;
use crate::server::extract::{Caller, JsonBody, PathHost, ReadHost, WriteHost, check_host};

fn no_master_key() -> ApiError {
    ApiError::Conflict(
        "this server holds no escrow master key: start `rewind serve` with --key-file FILE (--create-key-file makes one; docs/server.md)".into(),
    )
}

/// `PUT /v1/hosts/{host}/keys` (the host's token or admin).
pub(super) async fn escrow_key(
    State(s): State<Shared>,
    WriteHost(host): WriteHost,
    JsonBody(req): JsonBody<EscrowKey>,
) -> ApiResult<axum::Json<EscrowedKey>> {
    let master = s.master_key.clone().ok_or_else(no_master_key)?;
    let name = req.name.clone();
    let h = host.clone();
    let put = s
        .blocking(move |s| vault::put(&s.data, &master, &h, &req))
        .await?;
    if put.new {
        log_line!("rewind: escrowed key {} of {host} ({name})", put.key_id);
    }
    Ok(axum::Json(put))
}

/// `GET /v1/hosts/{host}/keys`: what is escrowed, never a key.
pub(super) async fn list_keys(
    State(s): State<Shared>,
    ReadHost(host): ReadHost,
) -> ApiResult<axum::Json<Vec<KeyInfo>>> {
    let list = s.blocking(move |s| vault::list(&s.data, &host)).await?;
    Ok(axum::Json(list))
}

/// `GET /v1/hosts/{host}/keys/{key_id}`: the key, to a recovery of the
/// host (request armed or running) or an admin.
pub(super) async fn release_key(
    State(s): State<Shared>,
    PathHost(host): PathHost,
    caller: Caller,
    Path((_, key_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<ReleasedKey>> {
    check_host(&host)?;
    let to = match &caller.scope {
        Scope::Admin => "admin".to_string(),
        Scope::Recovery { host: h, request } if *h == host => {
            // Only a claim's token, bound to the machine the request
            // allows: the request's own token (printed, perhaps typed at a
            // boot menu) only claims.
            if !caller.claimed {
                return Err(ApiError::Forbidden(format!(
                    "the token of request {request} must claim it for a machine first (POST /v1/claim): keys are released to the claim's token"
                )));
            }
            // The token check already refuses a request that is over;
            // asked again here, where it matters most.
            if !s.catalog().is_active(request) {
                return Err(ApiError::Forbidden(format!(
                    "recovery request {request} is not armed or running: no key is released"
                )));
            }
            format!("recovery {request}")
        }
        Scope::Host { host: h } if *h == host => {
            return Err(ApiError::Forbidden(format!(
                "a host token may escrow {host}'s keys but never read them back: keys are released to an armed recovery of {host} (`rewind request {host}`) or to an admin"
            )));
        }
        scope => {
            return Err(ApiError::Forbidden(format!(
                "this token ({}) may not read the escrowed keys of {host}",
                scope.describe()
            )));
        }
    };
    let master = s.master_key.clone().ok_or_else(no_master_key)?;
    let actor = format!("token {}", caller.id);
    let released = s
        .blocking(move |s| {
            let key = vault::release(&s.data, &master, &host, &key_id)?;
            // Logged before it leaves; a key whose release cannot be
            // logged is not released.
            let event = AuditEvent {
                time: crate::time::now_utc(),
                action: AuditAction::KeyReleased,
                actor,
                target: key.key_id.clone(),
                detail: format!("host {host}, volume {}, to {to}", key.volume_uuid),
            };
            crate::server::audit::append(&s.data, &event).map_err(|e| {
                ApiError::Internal(format!(
                    "the key was not released: the audit log cannot be written: {e}"
                ))
            })?;
            log_line!("rewind: released key {} of {host} to {to}", key.key_id);
            Ok(key)
        })
        .await?;
    Ok(axum::Json(released))
}
