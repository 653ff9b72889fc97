//! Hosts: the list, and which host owns a MAC address.

use std::collections::HashMap;

use axum::extract::{Query, State};

use super::Shared;
use crate::api::{ApiError, HostSummary, Identified, MachineIdentity, Scope};
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

/// The machine a query describes: `mac=` (comma-separated), and the
/// optional `uuid=` and `serial=` (iPXE's `${uuid}` and `${serial}`; the
/// image sends its DMI).
pub(super) fn machine_of(q: &HashMap<String, String>) -> MachineIdentity {
    let dmi = crate::manifest::Dmi {
        system_uuid: q
            .get("uuid")
            .map(|u| u.trim().to_ascii_lowercase())
            .filter(|u| crate::manifest::is_guid(u)),
        serial: q
            .get("serial")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && crate::manifest::is_dmi_text(v)),
        vendor: None,
        product: None,
    };
    MachineIdentity::new(Some(&dmi), &macs_of(q))
}

/// Which host a booting machine is, for boot and admin tokens: among the
/// live requests that name it (by the identity the request allows, or as
/// the machine that claimed it) — more than one is refused (409), so that
/// no host can capture another's recovery by listing its MACs. With none,
/// the host whose latest snapshot has one of its MACs, without a request
/// (so the machine is told there is nothing to recover for it).
pub(super) fn identify_machine(
    s: &Server,
    machine: &MachineIdentity,
) -> ApiResult<Option<Identified>> {
    let now = crate::server::state::now_secs();
    let cat = s.catalog();
    let matching = cat.live_requests_naming(machine, now);
    match matching.as_slice() {
        [one] => Ok(Some(Identified {
            host: one.host.clone(),
            request: Some((*one).clone()),
        })),
        [] => Ok(s
            .index
            .host_by_mac(&machine.macs, None)
            .map(|host| Identified {
                host,
                request: None,
            })),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|r| format!("{} ({})", r.host, r.id))
                .collect();
            Err(ApiError::Conflict(format!(
                "more than one armed recovery names this machine ({}): {}; cancel all but one",
                machine.describe(),
                names.join(", ")
            )))
        }
    }
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
    if only.is_none() {
        return identify_machine(&s, &machine_of(&q))?
            .map(axum::Json)
            .ok_or_else(|| {
                ApiError::NotFound("no host's latest snapshot has these MAC addresses".into())
            });
    }
    let host = host_by_mac(&s, &macs, only.as_deref());
    let Some(host) = host else {
        return Err(ApiError::NotFound(
            "no host's latest snapshot has these MAC addresses".into(),
        ));
    };
    let request = s
        .catalog()
        .live_request(&host, crate::server::state::now_secs())
        .cloned();
    Ok(axum::Json(Identified { host, request }))
}
