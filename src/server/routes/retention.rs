//! Forget and prune, host by host, each with its host's lock held alone
//! (the repository operations are crate::repo::forget and ::prune).

use std::collections::BTreeMap;

use axum::extract::State;

use super::Shared;
use crate::api::AuditAction;
use crate::api::{ApiError, DEFAULT_GRACE, ForgetAnswer, ForgetRequest, PruneAnswer, PruneRequest};
use crate::repo::{forget, prune};
use crate::server::error::ApiResult;
use crate::server::extract::{Admin, JsonBody, check_host};
use crate::server::files;
use crate::server::{Server, audit};

/// The hosts a retention request is about: one (that exists), or all.
fn target_hosts(s: &Server, host: Option<String>) -> ApiResult<Vec<String>> {
    match host {
        Some(h) => {
            check_host(&h)?;
            if !s.hosts().contains(&h) {
                return Err(ApiError::NotFound(format!("no host {h}")));
            }
            Ok(vec![h])
        }
        None => Ok(s.hosts()),
    }
}

pub(super) async fn forget(
    State(s): State<Shared>,
    _: Admin,
    JsonBody(req): JsonBody<ForgetRequest>,
) -> ApiResult<axum::Json<ForgetAnswer>> {
    if req.policy.is_empty() {
        return Err(ApiError::BadRequest(
            "an empty policy would forget every snapshot: give at least one keep rule".into(),
        ));
    }
    let mut hosts = BTreeMap::new();
    let target = req.host.clone().unwrap_or_else(|| "*".into());
    for h in target_hosts(&s, req.host)? {
        let (policy, dry_run) = (req.policy, req.dry_run);
        let host = h.clone();
        let decisions = s
            .host_alone(&h, move |s| {
                let repo = crate::repo::Repo::open(&files::host_dir(&s.data, &host))?;
                let mut by_host = forget::forget(&repo, &policy, Some(&host), dry_run)?;
                s.host_changed(&host);
                Ok(by_host.remove(&host).unwrap_or_default())
            })
            .await?;
        hosts.insert(h, decisions);
    }
    if !req.dry_run {
        let gone: usize = hosts.values().flatten().filter(|d| !d.keep).count();
        audit::record(
            &s,
            AuditAction::Forget,
            &target,
            &format!("{gone} snapshots forgotten"),
        )
        .await;
    }
    Ok(axum::Json(ForgetAnswer { hosts }))
}

pub(super) async fn prune(
    State(s): State<Shared>,
    _: Admin,
    JsonBody(req): JsonBody<PruneRequest>,
) -> ApiResult<axum::Json<PruneAnswer>> {
    let grace = prune::parse_duration(req.grace.as_deref().unwrap_or(DEFAULT_GRACE))
        .map_err(|e| ApiError::BadRequest(format!("{e:#}")))?;
    let mut hosts = BTreeMap::new();
    let target = req.host.clone().unwrap_or_else(|| "*".into());
    for h in target_hosts(&s, req.host)? {
        let dry_run = req.dry_run;
        let host = h.clone();
        let report = s
            .host_alone(&h, move |s| {
                let report = prune::prune(&files::host_dir(&s.data, &host), grace, dry_run);
                s.index.recount(&host);
                Ok(report?)
            })
            .await?;
        hosts.insert(h, report);
    }
    if !req.dry_run {
        let retired: usize = hosts.values().map(|r| r.packs_retired).sum();
        audit::record(
            &s,
            AuditAction::Prune,
            &target,
            &format!("{retired} packs retired"),
        )
        .await;
    }
    Ok(axum::Json(PruneAnswer { hosts }))
}
