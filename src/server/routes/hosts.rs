//! Hosts: the list, and which host owns a MAC address.

use std::collections::HashMap;

use axum::extract::{Query, State};

use super::Shared;
use crate::api::{ApiError, HostSummary, Identified, Scope};
use crate::server::Server;
use crate::server::error::ApiResult;
use crate::server::extract::{Admin, Caller};
use crate::server::files;

pub(super) async fn list_hosts(
    State(s): State<Shared>,
    _: Admin,
) -> ApiResult<axum::Json<Vec<HostSummary>>> {
    let hosts = s
        .blocking(|s| {
            let mut out = Vec::new();
            for host in s.hosts() {
                let snaps = files::snapshots(&files::host_dir(&s.data, &host))?;
                out.push(HostSummary {
                    latest: snaps.last().map(|m| m.snapshot.time.to_string()),
                    snapshots: snaps.len(),
                    host,
                });
            }
            Ok(out)
        })
        .await?;
    Ok(axum::Json(hosts))
}

/// The `mac=` of a query: comma-separated, normalized.
pub(super) fn macs_of(q: &HashMap<String, String>) -> Vec<String> {
    q.get("mac")
        .map(|m| {
            m.split(',')
                .filter_map(crate::util::mac::normalize)
                .collect()
        })
        .unwrap_or_default()
}

/// The host whose latest manifest has one of these MAC addresses.
pub(super) fn host_by_mac(
    s: &Server,
    macs: &[String],
    only: Option<&str>,
) -> ApiResult<Option<String>> {
    for h in s.hosts() {
        if only.is_some_and(|o| o != h) {
            continue;
        }
        let snaps = files::snapshots(&files::host_dir(&s.data, &h))?;
        let Some(m) = snaps.last() else { continue };
        let found = m
            .network
            .interfaces
            .iter()
            .filter_map(|i| i.mac.as_ref())
            .any(|mac| macs.iter().any(|m| m == mac.as_str()));
        if found {
            return Ok(Some(h));
        }
    }
    Ok(None)
}

/// Admin and boot tokens search every host; host and recovery tokens only
/// their own (another host's MAC is 404, not 403: they do not learn that
/// it exists).
pub(super) async fn identify(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Identified>> {
    let only = match caller.scope {
        Scope::Admin | Scope::Boot => None,
        Scope::Host { host } | Scope::Recovery { host, .. } => Some(host),
        Scope::Monitor => {
            return Err(ApiError::Forbidden(
                "a monitor token identifies no host".into(),
            ));
        }
    };
    let macs = macs_of(&q);
    if macs.is_empty() {
        return Err(ApiError::BadRequest(
            "give mac=aa:bb:cc:dd:ee:ff[,...]".into(),
        ));
    }
    let host = s
        .blocking(move |s| host_by_mac(s, &macs, only.as_deref()))
        .await?;
    let Some(host) = host else {
        return Err(ApiError::NotFound(
            "no host's latest snapshot has these MAC addresses".into(),
        ));
    };
    let request = s.catalog().active_request(&host).cloned();
    Ok(axum::Json(Identified { host, request }))
}
