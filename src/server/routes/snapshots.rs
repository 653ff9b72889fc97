//! A host's snapshots and manifests.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::api::{ApiError, SnapshotSummary};
use crate::server::error::ApiResult;
use crate::server::extract::{Caller, ReadHost};
use crate::server::files;

/// A host's snapshots in the order selection and retention use (its
/// commit records' effective time). A recovery token sees its request's
/// snapshot only.
pub(super) async fn list_snapshots(
    State(s): State<Shared>,
    ReadHost(host): ReadHost,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<SnapshotSummary>>> {
    let only = super::files::recovery_snapshot(&s, &caller)?;
    let snaps = s
        .blocking(move |s| Ok(files::snapshot_files(&files::host_dir(&s.data, &host))?))
        .await?;
    // In the server's order, with its commit records: a client that reads
    // the repository file by file orders by this list (Repo::snapshot_list).
    Ok(axum::Json(
        snaps
            .iter()
            .filter(|f| only.as_ref().is_none_or(|o| *o == f.manifest.snapshot.id))
            .map(|f| SnapshotSummary {
                committed: f.committed.map(files::format_nanos),
                ..SnapshotSummary::of(&f.manifest)
            })
            .collect(),
    ))
}

/// The manifest at `?at=` (default `latest`) or of `?snapshot=ID`, as XML;
/// its id in `X-Rewind-Snapshot`. A recovery token gets its request's
/// snapshot only, whatever it asks for.
pub(super) async fn get_manifest(
    State(s): State<Shared>,
    ReadHost(host): ReadHost,
    caller: Caller,
    Query(mut q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    if let crate::api::Scope::Recovery { request, .. } = &caller.scope {
        let snapshot = s
            .catalog()
            .request(request)
            .map(|r| r.snapshot.clone())
            .ok_or_else(|| ApiError::NotFound(format!("no request {request}")))?;
        q.insert("snapshot".into(), snapshot);
    }
    let m = s
        .blocking(move |s| {
            let dir = files::host_dir(&s.data, &host);
            if let Some(id) = q.get("snapshot") {
                let all = files::snapshots(&dir)?;
                return all
                    .into_iter()
                    .find(|m| &m.snapshot.id == id)
                    .ok_or_else(|| ApiError::NotFound(format!("no snapshot {id}")));
            }
            let at = q.get("at").map(String::as_str).unwrap_or("latest");
            files::snapshot_at(&dir, at)
        })
        .await?;
    let xml = crate::manifest::to_xml(&m).map_err(|e| ApiError::Internal(e.to_string()))?;
    let id = HeaderValue::from_str(&m.snapshot.id).unwrap_or(HeaderValue::from_static("?"));
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            ),
            (header::HeaderName::from_static("x-rewind-snapshot"), id),
        ],
        xml,
    )
        .into_response())
}
