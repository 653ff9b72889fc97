//! Tokens: who am I, create, list, revoke.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::Shared;
use crate::api::AuditAction;
use crate::api::{ApiError, CreatedToken, NewToken, Scope, TokenInfo, WhoAmI};
use crate::server::error::ApiResult;
use crate::server::extract::{Admin, Caller, JsonBody, check_host};
use crate::server::files;
use crate::server::{audit, auth};

pub(super) async fn whoami(caller: Caller) -> axum::Json<WhoAmI> {
    axum::Json(WhoAmI {
        id: caller.id,
        scope: caller.scope,
    })
}

pub(super) async fn create_token(
    State(s): State<Shared>,
    _: Admin,
    JsonBody(req): JsonBody<NewToken>,
) -> ApiResult<(StatusCode, axum::Json<CreatedToken>)> {
    let scope = match (req.host, req.boot, req.monitor) {
        (Some(h), false, false) => {
            check_host(&h)?;
            Scope::Host { host: h }
        }
        (None, true, false) => Scope::Boot,
        (None, false, true) => Scope::Monitor,
        _ => {
            return Err(ApiError::BadRequest(
                "give one of \"host\", \"boot\": true or \"monitor\": true".into(),
            ));
        }
    };
    let note = req.note;
    let created = s
        .blocking(move |s| {
            // A host token comes with the host's (empty) repository.
            if let Scope::Host { host } = &scope {
                files::ensure_repo(&files::host_dir(&s.data, host))?;
            }
            let (token, rec) = auth::generate(scope, &note);
            let id = rec.id.clone();
            s.catalog.change(|cat| {
                cat.tokens.push(rec);
                cat.save_tokens()?;
                Ok(CreatedToken { id, token })
            })
        })
        .await?;
    audit::record(
        &s,
        AuditAction::TokenCreated,
        &created.id,
        &note_of(&s, &created.id),
    )
    .await;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

pub(super) async fn list_tokens(
    State(s): State<Shared>,
    _: Admin,
) -> ApiResult<axum::Json<Vec<TokenInfo>>> {
    let list = s
        .catalog()
        .tokens
        .iter()
        .map(|t| TokenInfo {
            id: t.id.clone(),
            scope: t.scope.clone(),
            created: t.created.clone(),
            note: t.note.clone(),
        })
        .collect();
    Ok(axum::Json(list))
}

/// The last admin token cannot be revoked.
pub(super) async fn revoke_token(
    State(s): State<Shared>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let (target, scope) = (id.clone(), note_of(&s, &id));
    s.change_catalog(move |cat| {
        let Some(i) = cat.tokens.iter().position(|t| t.id == id) else {
            return Err(ApiError::NotFound(format!("no token {id}")));
        };
        let admins = cat
            .tokens
            .iter()
            .filter(|t| t.scope == Scope::Admin)
            .count();
        if cat.tokens[i].scope == Scope::Admin && admins == 1 {
            return Err(ApiError::Conflict(
                "this is the only admin token (`rewind serve --new-admin-token` replaces it)"
                    .into(),
            ));
        }
        cat.tokens.remove(i);
        cat.save_tokens()?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await?;
    audit::record(&s, AuditAction::TokenRevoked, &target, &scope).await;
    Ok(StatusCode::NO_CONTENT)
}

/// What the audit log says of a token: its scope.
fn note_of(s: &Shared, id: &str) -> String {
    s.catalog()
        .tokens
        .iter()
        .find(|t| t.id == id)
        .map(|t| t.scope.describe())
        .unwrap_or_default()
}
