//! Repository files: list, download (whole, streamed, or a range), exists,
//! upload (checked by super::super::files), remove.
//!
//! An upload is refused before its body is read when its name is wrong,
//! when the host is over its quota (507), and it waits for one of the
//! server's upload permits; its body is then read up to the limit of its
//! kind (api::limits) and refused (413) as soon as it passes it.
//!
//! A ranged download (a restore's chunks) is read whole into memory before
//! it is sent; the bytes so held, across all requests, are bounded by
//! `--range-buffer` ([`RangeBudget`]): many hosts restoring at once wait
//! for each other's bytes to go out instead of growing the server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::api::limits::{MAX_CONFIG, MAX_INDEX, MAX_PACK, MAX_SNAPSHOT};
use crate::api::{ApiError, ErrorBody, Stored};
use crate::server::Server;
use crate::server::error::ApiResult;
use crate::server::extract::{Admin, Caller, PathHost, ReadHost, WriteHost, read_body};
use crate::server::files::{self, RepoFile};
use crate::server::range::parse_range;

/// The one snapshot a recovery token may read: its request's (`None`
/// for every other token, which reads what its scope allows).
pub(super) fn recovery_snapshot(s: &Server, caller: &Caller) -> ApiResult<Option<String>> {
    match &caller.scope {
        crate::api::Scope::Recovery { request, .. } => s
            .catalog()
            .request(request)
            .map(|r| Some(r.snapshot.clone()))
            .ok_or_else(|| ApiError::NotFound(format!("no request {request}"))),
        _ => Ok(None),
    }
}

pub(super) async fn list_files(
    State(s): State<Shared>,
    ReadHost(host): ReadHost,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Vec<String>>> {
    let only = recovery_snapshot(&s, &caller)?;
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
            // The retired/ directory is not part of the repository; a
            // recovery token sees its request's snapshot only.
            Ok(names
                .into_iter()
                .filter(|n| match files::parse_name(n) {
                    Some(RepoFile::Snapshot(id)) => only.as_ref().is_none_or(|o| *o == id),
                    Some(_) => true,
                    None => false,
                })
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

pub(super) async fn get_file(
    State(s): State<Shared>,
    ReadHost(host): ReadHost,
    caller: Caller,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (path, fallback) = file_path(&s, &host, &name)?;
    if let (Some(RepoFile::Snapshot(id)), Some(own)) =
        (files::parse_name(&name), recovery_snapshot(&s, &caller)?)
        && id != own
    {
        return Err(ApiError::Forbidden(format!(
            "a recovery token reads its request's snapshot ({own}) only, not {id}"
        )));
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let opened = s
        .blocking(move |s| {
            let f = open_file(&path, fallback.as_deref())?;
            let size = f.metadata()?.len();
            let Some(range) = range else {
                s.stats.bytes_sent.fetch_add(size, Relaxed);
                return Ok(Opened::Answered(stream_file(f, size)));
            };
            let Some((start, end)) = parse_range(&range, size) else {
                let error = format!("range {range:?} is not within the file's {size} bytes");
                return Ok(Opened::Answered(
                    (
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                        axum::Json(ErrorBody { error }),
                    )
                        .into_response(),
                ));
            };
            // parse_range keeps end < size: the length fits what was stored.
            let len = usize::try_from(end - start + 1)
                .map_err(|_| ApiError::BadRequest("range too large".into()))?;
            Ok(Opened::Range {
                f,
                start,
                end,
                size,
                len,
            })
        })
        .await?;
    let (f, start, end, size, len) = match opened {
        Opened::Answered(resp) => return Ok(resp),
        Opened::Range {
            f,
            start,
            end,
            size,
            len,
        } => (f, start, end, size, len),
    };
    // Held until the body has been handed to the connection.
    let held = s.range_budget.hold(len).await?;
    let buf = s
        .blocking(move |s| {
            let buf = read_range(&f, start, len)?;
            s.stats.bytes_sent.fetch_add(buf.len() as u64, Relaxed);
            Ok(buf)
        })
        .await?;
    Ok((
        StatusCode::PARTIAL_CONTENT,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::new(HeldBody {
            data: buf.into(),
            held: Some(held),
        }),
    )
        .into_response())
}

/// What a download's file and headers call for.
enum Opened {
    /// The answer, complete: a whole file streamed, or an error.
    Answered(Response),
    /// Bytes `start..=end` (`len` of them) of the file of `size` bytes.
    Range {
        f: std::fs::File,
        start: u64,
        end: u64,
        size: u64,
        len: usize,
    },
}

/// The bytes ranged reads may hold in memory at once, server-wide
/// (`rewind serve --range-buffer`, 256 MiB by default): a restoring host
/// keeps up to 8 reads of up to 4 MiB in flight, so without a bound 16
/// hosts held 500 MiB at worst and a hundred hosts 3 GiB. A read takes its
/// length from the budget before the range is read and gives it back when
/// its body has been handed to the connection; a read that does not fit
/// waits (in order: tokio's semaphore is fair), and one larger than the
/// whole budget takes all of it, so that it is served, alone.
pub(crate) struct RangeBudget {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// The whole budget, in [`BUDGET_UNIT`]s.
    units: u32,
}

/// The budget counts 4 KiB pages (a `u32` of them: up to 16 TiB).
const BUDGET_UNIT: u64 = 4096;

impl RangeBudget {
    pub(crate) fn new(bytes: u64) -> RangeBudget {
        let units = bytes.div_ceil(BUDGET_UNIT).clamp(
            1,
            (tokio::sync::Semaphore::MAX_PERMITS as u64).min(u64::from(u32::MAX)),
        ) as u32;
        RangeBudget {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(units as usize)),
            units,
        }
    }

    /// Wait until `len` bytes (or the whole budget, if `len` is more) may
    /// be held; they are given back when the permit is dropped.
    pub(crate) async fn hold(&self, len: usize) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        let want = (len as u64)
            .div_ceil(BUDGET_UNIT)
            .clamp(1, u64::from(self.units)) as u32;
        self.permits
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| ApiError::Internal("the server is stopping".into()))
    }
}

/// How much of a held range one frame of its body hands to the
/// connection: the budget is given back only when the last piece has
/// been taken, that is when the ones before it have been written out.
const RANGE_PIECE: usize = 256 << 10;

/// A range read into memory, sent in [`RANGE_PIECE`]s (slices of the one
/// buffer, no copy), with its share of the [`RangeBudget`].
struct HeldBody {
    data: axum::body::Bytes,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl axum::body::HttpBody for HeldBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            this.held = None;
            return std::task::Poll::Ready(None);
        }
        let piece = this.data.split_to(this.data.len().min(RANGE_PIECE));
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.data.len() as u64)
    }
}

/// `len` bytes of `f` from `start`, read into the buffer's spare capacity:
/// `vec![0; len]` first zeroed every byte a restore's ranged GETs read (a
/// megabyte and more each: fresh pages faulted in and cleared, then
/// overwritten by the read). Streaming a range in 256 KiB pieces through
/// tokio's file reads instead was measured (docs/performance.md,
/// "Site-wide"): 16 hosts at once peaked at 97 MB instead of 215 MB, but
/// took 1.3x as long with a third more server CPU; a request holds at
/// most its range, which a restore keeps to runs of 4 MiB, eight at a time.
fn read_range(f: &std::fs::File, start: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = start + buf.len() as u64;
        match rustix::io::pread(f, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the file ends at byte {at}"),
                ));
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The capacity may exceed what was asked for.
    buf.truncate(len);
    Ok(buf)
}

/// How much of a file a streamed body reads at a time: each read is a
/// hop to tokio's blocking pool, and `ReaderStream`'s default of 4 KiB made
/// a whole pack 4,096 of them.
const STREAM_PIECE: usize = 256 << 10;

/// A whole file as a streamed body (its memory is one buffer, whatever
/// its size).
pub(super) fn stream_file(f: std::fs::File, size: u64) -> Response {
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), STREAM_PIECE);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// [`stream_file`] followed by `tail` (the initrd and the pins archive).
pub(super) fn stream_file_then(f: std::fs::File, size: u64, tail: Vec<u8>) -> Response {
    use tokio::io::AsyncReadExt;
    let total = size + tail.len() as u64;
    let reader = tokio::fs::File::from_std(f).chain(std::io::Cursor::new(tail));
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, STREAM_PIECE);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, total.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
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

/// Refuse an upload of `incoming` bytes that would take a host past its
/// quota, before its body is read.
fn check_quota(s: &Server, host: &str, incoming: u64) -> ApiResult<()> {
    let Some(quota) = s.quota else {
        return Ok(());
    };
    let used = s.index.usage(host, &files::host_dir(&s.data, host));
    if used.saturating_add(incoming) > quota {
        return Err(ApiError::InsufficientStorage(format!(
            "host {host} is at its quota: it uses {} of {}, and this upload is {} \
             (forget old snapshots and prune, or raise `rewind serve --quota`)",
            crate::util::size::human_bytes(used),
            crate::util::size::human_bytes(quota),
            crate::util::size::human_bytes(incoming),
        )));
    }
    Ok(())
}

pub(super) async fn put_file(
    State(s): State<Shared>,
    WriteHost(host): WriteHost,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, axum::Json<Stored>)> {
    let parsed = parse_name(&name)?;
    let limit = match parsed {
        RepoFile::Config => MAX_CONFIG,
        RepoFile::Pack(_) => MAX_PACK,
        RepoFile::Index(_) => MAX_INDEX,
        RepoFile::Snapshot(_) => MAX_SNAPSHOT,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(format!(
            "{name}: {} bytes is over the limit of {limit}",
            declared.unwrap_or_default()
        )));
    }
    {
        let (s, host) = (s.clone(), host.clone());
        let incoming = declared.unwrap_or(limit as u64);
        s.clone()
            .blocking(move |_| check_quota(&s, &host, incoming))
            .await?;
    }
    let _permit = s
        .uploads
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the server is stopping".into()))?;
    let body = read_body(body, limit, &name).await?;
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
                        // The pack and its index.
                        s.index.add_usage(&host, 2 * body.len() as u64);
                    }
                    new
                }
                RepoFile::Index(p) => {
                    files::put_index(&dir, &p, &body)?;
                    false
                }
                RepoFile::Snapshot(id) => {
                    // One commit at a time, across hosts: its time and its
                    // machine are checked against every host's latest, then
                    // it is written and becomes its host's latest.
                    let _one = s.index.commit_guard();
                    let f = match files::check_snapshot(&dir, &host, &id, &body)? {
                        // A retry of the same bytes is not new.
                        files::Incoming::Again(f) => f,
                        files::Incoming::New(m) => {
                            let committed = s.index.check_commit(
                                &host,
                                &m,
                                crate::server::index::now_nanos(),
                                &s.shared_identities,
                            )?;
                            files::write_snapshot(&dir, m, &body, committed)?
                        }
                    };
                    s.index.committed(&host, &f);
                    s.index.add_usage(&host, body.len() as u64);
                    s.stats.snapshots_committed.fetch_add(1, Relaxed);
                    log_line!("rewind: committed snapshot {id} of {host}");
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
    let changed = host.clone();
    s.host_alone(&host, move |s| {
        super::retention::may_remove(s, &changed, &name)?;
        // The removal is durable before it is acknowledged.
        let removed = match std::fs::remove_file(&path)
            .and_then(|()| path.parent().map_or(Ok(()), crate::util::fs::sync_dir))
            .and_then(|()| match files::parse_name(&name) {
                // Its commit record goes after it (a record alone is inert).
                Some(RepoFile::Snapshot(id)) => {
                    files::remove_commit(&files::host_dir(&s.data, &changed), &id)
                }
                _ => Ok(()),
            }) {
            Ok(()) => Ok(StatusCode::NO_CONTENT),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ApiError::NotFound("no such file".into()))
            }
            Err(e) => Err(e.into()),
        };
        s.host_changed(&changed);
        removed
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range larger than the whole budget takes all of it and is served;
    /// a read that does not fit waits (it does not fail) until bytes are
    /// given back, and reads that fit go together.
    #[test]
    fn the_range_budget_waits_and_never_refuses() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let wait = std::time::Duration::from_millis(200);
            let budget = RangeBudget::new(1 << 20);
            let big = budget.hold(4 << 20).await.unwrap();
            assert_eq!(budget.permits.available_permits(), 0);
            // Not even a byte more while it is held.
            assert!(tokio::time::timeout(wait, budget.hold(1)).await.is_err());
            drop(big);
            let a = budget.hold(512 << 10).await.unwrap();
            let b = budget.hold(512 << 10).await.unwrap();
            assert!(tokio::time::timeout(wait, budget.hold(4096)).await.is_err());
            // The waiting read goes on as soon as one is given back.
            let waiting = budget.hold(300 << 10);
            drop(a);
            let c = tokio::time::timeout(wait, waiting).await.unwrap().unwrap();
            drop((b, c));
            assert_eq!(budget.permits.available_permits(), 256);
        });
    }

    /// The body hands over every byte, in pieces, and gives its share of
    /// the budget back after the last one.
    #[test]
    fn a_held_body_gives_its_bytes_back_after_the_last_piece() {
        use axum::body::HttpBody;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let budget = RangeBudget::new(8 << 20);
            let data: Vec<u8> = (0..(RANGE_PIECE * 2 + 5)).map(|i| i as u8).collect();
            let mut body = HeldBody {
                data: data.clone().into(),
                held: Some(budget.hold(data.len()).await.unwrap()),
            };
            assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
            let mut got = Vec::new();
            let mut pieces = 0;
            loop {
                let frame =
                    std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
                let Some(frame) = frame else { break };
                assert!(budget.permits.available_permits() < 2048);
                got.extend_from_slice(&frame.unwrap().into_data().unwrap());
                pieces += 1;
            }
            assert_eq!(pieces, 3);
            assert!(got == data);
            assert_eq!(budget.permits.available_permits(), 2048);
        });
    }
}
