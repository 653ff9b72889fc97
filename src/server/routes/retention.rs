//! Forget and prune, host by host, each with its host's lock held alone
//! (the repository operations are crate::repo::forget and ::prune).
//!
//! What they never remove, whatever the policy: a snapshot an active
//! recovery request restores (pinned: reason `recovery`); a snapshot
//! younger than `min_age_days` (`min-age`) or than the server's retention
//! lock (`serve --retention-lock DAYS`: `retention-lock`, which not even an
//! admin token lifts). A snapshot's age is the younger of its own time and
//! the server's commit time (its record in `commits/`, else its file's
//! mtime, written by the server), so a host cannot back-date a snapshot
//! out of the lock. Keep-N counts snapshots in the order selection uses
//! (effective time, then commit: see files::SnapshotFile::order). Prune's grace
//! period is stretched over any restore running for the host: packs
//! retired since its claim stay until it is over.

use std::collections::BTreeMap;

use axum::extract::State;

use super::Shared;
use crate::api::AuditAction;
use crate::api::{ApiError, DEFAULT_GRACE, ForgetAnswer, ForgetRequest, PruneAnswer, PruneRequest};
use crate::repo::{forget, prune};
use crate::server::error::ApiResult;
use crate::server::extract::{Admin, JsonBody, check_host};
use crate::server::files;
use crate::server::state::now_secs;
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
        let min_age = req.min_age_days;
        let decisions = s
            .host_alone(&h, move |s| {
                let dir = files::host_dir(&s.data, &host);
                let repo = crate::repo::Repo::open(&dir)?;
                let mut decisions = decide(&files::snapshot_files(&dir)?, &policy);
                hold(s, &host, &dir, &mut decisions, min_age);
                if !dry_run {
                    for d in decisions.iter().filter(|d| !d.keep) {
                        repo.backend.remove(&format!("snapshots/{}.xml", d.id))?;
                        files::remove_commit(&dir, &d.id)?;
                    }
                }
                s.host_changed(&host);
                Ok(decisions)
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

/// A policy's decisions over a host's history, newest first, in the
/// order selection uses ([`files::SnapshotFile::order`]): each snapshot
/// stands at its effective time (never later than its commit on this
/// server), and two in one second are told apart by their commits, so a
/// host dating a snapshot ahead cannot push later commits out of keep-N.
/// Each decision shows the snapshot's own time.
fn decide(snaps: &[files::SnapshotFile], policy: &forget::Policy) -> Vec<forget::Decision> {
    // forget::decide orders by (time, id): the id is prefixed with the
    // snapshot's rank in the history, which breaks ties in commit order.
    let keyed: Vec<(String, i64)> = snaps
        .iter()
        .enumerate()
        .map(|(rank, f)| {
            (
                format!("{rank:010}/{}", f.manifest.snapshot.id),
                f.effective_secs(),
            )
        })
        .collect();
    let mut decisions = forget::decide(&keyed, policy);
    for d in &mut decisions {
        let rank =
            d.id.split_once('/')
                .and_then(|(r, _)| r.parse::<usize>().ok());
        if let Some(f) = rank.and_then(|r| snaps.get(r)) {
            d.id = f.manifest.snapshot.id.clone();
            d.time = f.manifest.snapshot.time.to_string();
        }
    }
    decisions
}

/// The snapshots of `host` an active request restores.
fn pinned(s: &Server, host: &str) -> Vec<String> {
    s.catalog()
        .requests
        .iter()
        .filter(|r| r.host == host && r.state.is_active())
        .map(|r| r.snapshot.clone())
        .collect()
}

/// When the server committed a snapshot, seconds: its record, else (a
/// snapshot committed before records were kept) when the server wrote
/// its file.
fn committed_at(dir: &std::path::Path, id: &str) -> Option<i64> {
    if let Some(nanos) = files::read_commit(dir, id) {
        return i64::try_from(nanos.div_euclid(1_000_000_000)).ok();
    }
    let modified = std::fs::metadata(dir.join(format!("snapshots/{id}.xml")))
        .ok()?
        .modified()
        .ok()?;
    modified
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// The age of a snapshot in seconds: the younger of its own time and its
/// commit on this server.
fn age(dir: &std::path::Path, d: &forget::Decision, now: i64) -> i64 {
    let own = crate::time::parse_rfc3339(&d.time).unwrap_or(i64::MIN);
    let commit = committed_at(dir, &d.id).unwrap_or(i64::MIN);
    now.saturating_sub(own.max(commit))
}

/// Keep what must be kept whatever the policy: pinned by an active
/// request, younger than `min_age_days`, younger than the retention lock.
fn hold(
    s: &Server,
    host: &str,
    dir: &std::path::Path,
    decisions: &mut [forget::Decision],
    min_age_days: Option<u64>,
) {
    let pins = pinned(s, host);
    let now = now_secs();
    let days = |n: u64| n.saturating_mul(86_400) as i64;
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        let age = age(dir, d, now);
        let mut why = Vec::new();
        if pins.contains(&d.id) {
            why.push("recovery");
        }
        if min_age_days.is_some_and(|n| age < days(n)) {
            why.push("min-age");
        }
        if s.retention_lock_days > 0 && age < days(s.retention_lock_days) {
            why.push("retention-lock");
        }
        if !why.is_empty() {
            d.keep = true;
            d.reasons.extend(why.into_iter().map(str::to_string));
        }
    }
}

/// Whether an admin may remove a repository file by hand
/// (`DELETE /v1/hosts/{host}/files/{name}`): not a snapshot an active
/// request restores; under a retention lock, not a snapshot younger than
/// it, and no pack, index or config at all (prune removes packs).
pub(crate) fn may_remove(s: &Server, host: &str, name: &str) -> ApiResult<()> {
    let dir = files::host_dir(&s.data, host);
    match files::parse_name(name) {
        Some(files::RepoFile::Snapshot(id)) => {
            if pinned(s, host).contains(&id) {
                return Err(ApiError::Conflict(format!(
                    "snapshot {id} is being recovered (an armed or running request): cancel \
                     the request first"
                )));
            }
            if s.retention_lock_days > 0 {
                let now = now_secs();
                let own = files::snapshots(&dir)?
                    .into_iter()
                    .find(|m| m.snapshot.id == id)
                    .map_or(i64::MIN, |m| m.snapshot.time.unix());
                let newest = own.max(committed_at(&dir, &id).unwrap_or(i64::MIN));
                if now.saturating_sub(newest)
                    < (s.retention_lock_days.saturating_mul(86_400)) as i64
                {
                    return Err(ApiError::Conflict(format!(
                        "snapshot {id} is younger than the server's retention lock ({} days): \
                         it cannot be removed",
                        s.retention_lock_days
                    )));
                }
            }
            Ok(())
        }
        _ if s.retention_lock_days > 0 => Err(ApiError::Conflict(format!(
            "the server has a retention lock ({} days): repository files other than old \
             snapshots are removed by prune only",
            s.retention_lock_days
        ))),
        _ => Ok(()),
    }
}

/// Prune's grace for a host: at least as long as any restore running
/// for it (since its claim), so that the packs it loaded stay served.
fn grace_for(s: &Server, host: &str, grace: std::time::Duration) -> std::time::Duration {
    let now = now_secs();
    let running = s
        .catalog()
        .requests
        .iter()
        .filter(|r| r.host == host && r.state.is_active())
        .filter_map(|r| crate::time::parse_rfc3339(&r.claim.as_ref()?.claimed))
        .map(|t| now.saturating_sub(t).saturating_add(60).max(0) as u64)
        .max()
        .unwrap_or(0);
    grace.max(std::time::Duration::from_secs(running))
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
                let grace = grace_for(s, &host, grace);
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
