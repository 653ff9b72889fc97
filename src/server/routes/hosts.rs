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

/// The host whose latest manifest has one of these MAC addresses (from
/// the server's index, kept up to date at each commit: no manifest is read
/// here).
pub(super) fn host_by_mac(s: &Server, macs: &[String], only: Option<&str>) -> Option<String> {
    s.index.host_by_mac(macs, only)
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
    let host = host_by_mac(&s, &macs, only.as_deref());
    let Some(host) = host else {
        return Err(ApiError::NotFound(
            "no host's latest snapshot has these MAC addresses".into(),
        ));
    };
    let request = s.catalog().active_request(&host).cloned();
    Ok(axum::Json(Identified { host, request }))
}
