//! Repository files: list, download (whole or a range), exists, upload
//! (checked by super::super::files), remove.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::api::{ApiError, ErrorBody, Stored};
use crate::server::Server;
use crate::server::error::ApiResult;
use crate::server::extract::{Admin, PathHost, ReadHost, WriteHost};
use crate::server::files::{self, RepoFile};

pub(super) async fn list_files(
    State(s): State<Shared>,
    ReadHost(host): ReadHost,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Vec<String>>> {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    if !files::valid_prefix(&prefix) {
        return Err(ApiError::BadRequest(format!(
            "prefix {prefix:?}: list one of packs/, index/, snapshots/"
        )));
    }
    let names = s
        .blocking(move |s| {
            use crate::repo::backend::Backend;
            let dir = files::host_dir(&s.data, &host);
            let names = crate::repo::backend::LocalDir::new(&dir).list(&prefix)?;
            // The retired/ directory is not part of the repository.
            Ok(names
                .into_iter()
                .filter(|n| files::parse_name(n).is_some())
                .collect())
        })
        .await?;
    Ok(axum::Json(names))
}

fn parse_name(name: &str) -> ApiResult<RepoFile> {
    files::parse_name(name)
        .ok_or_else(|| ApiError::BadRequest(format!("{name:?} is not a repository file name")))
}

/// A file's path, and where a retired pack would be.
fn file_path(s: &Server, host: &str, name: &str) -> ApiResult<(PathBuf, Option<PathBuf>)> {
    let parsed = parse_name(name)?;
    let dir = files::host_dir(&s.data, host);
    let fallback = match &parsed {
        RepoFile::Pack(p) => Some(crate::repo::prune::retired_path(&dir, p)),
        _ => None,
    };
    Ok((dir.join(name), fallback))
}

/// Open a file, or the retired copy of a pack.
fn open_file(
    path: &std::path::Path,
    fallback: Option<&std::path::Path>,
) -> ApiResult<std::fs::File> {
    match std::fs::File::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(f) = fallback.and_then(|p| std::fs::File::open(p).ok()) {
                return Ok(f);
            }
            Err(ApiError::NotFound("no such file".into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// `bytes=START-END` (END inclusive, optional; past the end of the file it
/// is clipped, as RFC 9110 says: clients read aligned windows of packs).
fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let last = size.checked_sub(1)?;
    let end: u64 = if b.trim().is_empty() {
        last
    } else {
        b.trim().parse::<u64>().ok()?.min(last)
    };
    (start <= end).then_some((start, end))
}

pub(super) async fn get_file(
    State(s): State<Shared>,
    ReadHost(host): ReadHost,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (path, fallback) = file_path(&s, &host, &name)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.blocking(move |s| {
        use std::os::unix::fs::FileExt;
        let f = open_file(&path, fallback.as_deref())?;
        let size = f.metadata()?.len();
        let Some(range) = range else {
            let mut bytes = Vec::with_capacity(size as usize);
            std::io::Read::read_to_end(&mut &f, &mut bytes)?;
            s.stats.bytes_sent.fetch_add(bytes.len() as u64, Relaxed);
            return Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                bytes,
            )
                .into_response());
        };
        let Some((start, end)) = parse_range(&range, size) else {
            let error = format!("range {range:?} is not within the file's {size} bytes");
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                axum::Json(ErrorBody { error }),
            )
                .into_response());
        };
        let mut buf = vec![0u8; (end - start + 1) as usize];
        f.read_exact_at(&mut buf, start)?;
        s.stats.bytes_sent.fetch_add(buf.len() as u64, Relaxed);
        Ok((
            StatusCode::PARTIAL_CONTENT,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
            ],
            buf,
        )
            .into_response())
    })
    .await
}

pub(super) async fn head_file(
    State(s): State<Shared>,
    ReadHost(host): ReadHost,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (path, _) = file_path(&s, &host, &name)?;
    let size = s
        .blocking(move |_| match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await?;
    match size {
        Some(n) => Ok((StatusCode::OK, [(header::CONTENT_LENGTH, n.to_string())]).into_response()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

pub(super) async fn put_file(
    State(s): State<Shared>,
    WriteHost(host): WriteHost,
    Path((_, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<Stored>)> {
    let parsed = parse_name(&name)?;
    let lock_host = host.clone();
    let stored = s
        .host_shared(&lock_host, move |s| {
            let dir = files::host_dir(&s.data, &host);
            files::ensure_repo(&dir)?;
            Ok(match parsed {
                RepoFile::Config => {
                    files::put_config(&dir, &body)?;
                    false
                }
                RepoFile::Pack(p) => {
                    s.stats.packs_received.fetch_add(1, Relaxed);
                    s.stats
                        .pack_bytes_received
                        .fetch_add(body.len() as u64, Relaxed);
                    let new = files::put_pack(&dir, &p, &body)?;
                    if new {
                        s.stats.packs_stored.fetch_add(1, Relaxed);
                    }
                    new
                }
                RepoFile::Index(p) => {
                    files::put_index(&dir, &p, &body)?;
                    false
                }
                RepoFile::Snapshot(id) => {
                    files::put_snapshot(&dir, &host, &id, &body)?;
                    s.stats.snapshots_committed.fetch_add(1, Relaxed);
                    eprintln!("rewind: committed snapshot {id} of {host}");
                    true
                }
            })
        })
        .await?;
    let status = if stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(Stored { stored })))
}

pub(super) async fn delete_file(
    State(s): State<Shared>,
    PathHost(host): PathHost,
    // Host tokens cannot delete anything: a compromised machine cannot
    // erase its backups.
    _: Admin,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (path, _) = file_path(&s, &host, &name)?;
    s.host_alone(&host, move |_| match std::fs::remove_file(&path) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::NotFound("no such file".into()))
        }
        Err(e) => Err(e.into()),
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges() {
        use super::parse_range;
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=90-100", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-200", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
        assert_eq!(parse_range("bytes=5-4", 100), None);
        assert_eq!(parse_range("lines=1-2", 100), None);
    }
}
