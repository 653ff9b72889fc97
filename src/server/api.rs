//! The HTTP API (docs/api.md): routes, authorization, handlers. Every file
//! operation runs on the blocking pool; nothing here calls a blocking HTTP
//! client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Access, Scope};
use super::files::{self, Refused, RepoFile};
use super::forget::{self, Policy};
use super::state::{Progress, Request as Recovery, RequestState};
use super::{Server, ipxe, prune};

/// Largest upload: a pack closes at 16 MiB, plus at most one blob (4 MiB
/// plain, compressed) and its index.
pub const MAX_UPLOAD: usize = 64 << 20;
/// Largest JSON body.
const MAX_JSON: usize = 64 << 10;

type Shared = Arc<Server>;

/// An error response: `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

fn err(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, msg.into())
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        ApiError(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            r.message,
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("storage error: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Run file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })?
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    if body.len() > MAX_JSON {
        return Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_JSON} bytes"),
        ));
    }
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

fn check_host(host: &str) -> ApiResult<()> {
    if files::valid_host(host) {
        Ok(())
    } else {
        Err(err(
            StatusCode::BAD_REQUEST,
            format!("{host:?} is not a valid host name"),
        ))
    }
}

impl Server {
    /// Who is asking: the bearer token (or, for boot routes, `?token=`).
    fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> ApiResult<(String, Scope)> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = bearer.or(query_token) else {
            return Err(err(
                StatusCode::UNAUTHORIZED,
                "missing bearer token (Authorization: Bearer rwd_...)",
            ));
        };
        let cat = self.catalog();
        let rec = auth::verify(&cat.tokens, token)
            .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "unknown or revoked token"))?;
        if let Scope::Recovery { request, .. } = &rec.scope {
            let active = cat
                .requests
                .iter()
                .any(|r| &r.id == request && r.state.is_active());
            if !active {
                return Err(err(
                    StatusCode::UNAUTHORIZED,
                    format!("recovery request {request} is over: its token no longer works"),
                ));
            }
        }
        Ok((rec.id.clone(), rec.scope.clone()))
    }

    fn authorize(&self, headers: &HeaderMap, access: Access<'_>) -> ApiResult<Scope> {
        self.authorize_q(headers, None, access)
    }

    fn authorize_q(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        access: Access<'_>,
    ) -> ApiResult<Scope> {
        let (_, scope) = self.authenticate(headers, query_token)?;
        if auth::allows(&scope, access) {
            return Ok(scope);
        }
        let what = match access {
            Access::Admin => "do this (admin only)".to_string(),
            Access::Read(h) => format!("read host {h}"),
            Access::Write(h) => format!("write to host {h}"),
            Access::Boot => "fetch boot scripts".to_string(),
        };
        Err(err(
            StatusCode::FORBIDDEN,
            format!("this token ({}) may not {what}", scope.describe()),
        ))
    }

    fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if self.fingerprint.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}")
    }
}

pub fn router(server: Shared) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/hosts", get(list_hosts))
        .route("/v1/hosts/{host}/files", get(list_files))
        .route(
            "/v1/hosts/{host}/files/{*name}",
            get(get_file)
                .head(head_file)
                .put(put_file)
                .delete(delete_file),
        )
        .route("/v1/hosts/{host}/snapshots", get(list_snapshots))
        .route("/v1/hosts/{host}/manifest", get(get_manifest))
        .route("/v1/hosts/{host}/requests", post(create_request))
        .route("/v1/identify", get(identify))
        .route("/v1/requests", get(list_requests))
        .route("/v1/requests/{id}", get(get_request).delete(cancel_request))
        .route("/v1/recovery", get(my_recovery))
        .route("/v1/recovery/progress", post(report_progress))
        .route("/v1/recovery/result", post(report_result))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/forget", post(forget_cmd))
        .route("/v1/prune", post(prune_cmd))
        .route("/v1/stats", get(stats))
        .route("/boot/ipxe", get(boot_script))
        .route("/boot/{file}", get(boot_file))
        .fallback(|| async {
            err(
                StatusCode::NOT_FOUND,
                "no such endpoint (docs/api.md lists them)",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .layer(axum::middleware::from_fn(log))
        .with_state(server)
}

/// Log changes and errors (paths only: boot routes carry tokens in queries).
async fn log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    let quiet = (method == Method::GET || method == Method::HEAD)
        && (status.is_success() || status == StatusCode::NOT_FOUND);
    if !quiet {
        eprintln!(
            "rewind: {method} {path} -> {} ({} ms)",
            status.as_u16(),
            started.elapsed().as_millis()
        );
    }
    resp
}

async fn whoami(State(s): State<Shared>, headers: HeaderMap) -> ApiResult<Response> {
    let (id, scope) = s.authenticate(&headers, None)?;
    Ok(axum::Json(json!({ "id": id, "scope": scope })).into_response())
}

async fn list_hosts(State(s): State<Shared>, headers: HeaderMap) -> ApiResult<Response> {
    s.authorize(&headers, Access::Admin)?;
    let s2 = s.clone();
    let hosts = blocking(move || {
        let mut out = Vec::new();
        for h in s2.hosts() {
            let snaps = files::snapshots(&files::host_dir(&s2.data, &h))?;
            out.push(json!({
                "host": h,
                "snapshots": snaps.len(),
                "latest": snaps.last().map(|m| m.snapshot.time.clone()),
            }));
        }
        Ok(out)
    })
    .await?;
    Ok(axum::Json(Value::Array(hosts)).into_response())
}

// ---- repository files ----

async fn list_files(
    State(s): State<Shared>,
    Path(host): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_host(&host)?;
    s.authorize(&headers, Access::Read(&host))?;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    if !files::valid_prefix(&prefix) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("prefix {prefix:?}: list one of packs/, index/, snapshots/"),
        ));
    }
    let dir = files::host_dir(&s.data, &host);
    let names = blocking(move || {
        use crate::repo::backend::Backend;
        let names = crate::repo::backend::LocalDir::new(&dir).list(&prefix)?;
        // The retired/ directory is not part of the repository.
        Ok(names
            .into_iter()
            .filter(|n| files::parse_name(n).is_some())
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(axum::Json(names).into_response())
}

fn file_path(s: &Server, host: &str, name: &str) -> ApiResult<(PathBuf, Option<PathBuf>)> {
    let parsed = files::parse_name(name).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            format!("{name:?} is not a repository file name"),
        )
    })?;
    let dir = files::host_dir(&s.data, host);
    let fallback = match &parsed {
        RepoFile::Pack(p) => Some(prune::retired_path(&dir, p)),
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
            Err(err(StatusCode::NOT_FOUND, "no such file"))
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

async fn get_file(
    State(s): State<Shared>,
    Path((host, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_host(&host)?;
    s.authorize(&headers, Access::Read(&host))?;
    let (path, fallback) = file_path(&s, &host, &name)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let s2 = s.clone();
    blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = open_file(&path, fallback.as_deref())?;
        let size = f.metadata()?.len();
        let Some(range) = range else {
            let mut bytes = Vec::with_capacity(size as usize);
            std::io::Read::read_to_end(&mut &f, &mut bytes)?;
            s2.stats.bytes_sent.fetch_add(bytes.len() as u64, Relaxed);
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response());
        };
        let Some((start, end)) = parse_range(&range, size) else {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                axum::Json(json!({ "error": format!("range {range:?} is not within the file's {size} bytes") })),
            )
                .into_response());
        };
        let mut buf = vec![0u8; (end - start + 1) as usize];
        f.read_exact_at(&mut buf, start)?;
        s2.stats.bytes_sent.fetch_add(buf.len() as u64, Relaxed);
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

async fn head_file(
    State(s): State<Shared>,
    Path((host, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_host(&host)?;
    s.authorize(&headers, Access::Read(&host))?;
    let (path, _) = file_path(&s, &host, &name)?;
    let size = blocking(move || match std::fs::metadata(&path) {
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

async fn put_file(
    State(s): State<Shared>,
    Path((host, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    check_host(&host)?;
    s.authorize(&headers, Access::Write(&host))?;
    let parsed = files::parse_name(&name).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            format!("{name:?} is not a repository file name"),
        )
    })?;
    let lock = s.host_lock(&host);
    let _shared = lock.read().await;
    let s2 = s.clone();
    let stored = blocking(move || {
        let dir = files::host_dir(&s2.data, &host);
        files::ensure_repo(&dir)?;
        Ok(match parsed {
            RepoFile::Config => {
                files::put_config(&dir, &body)?;
                false
            }
            RepoFile::Pack(p) => {
                s2.stats.packs_received.fetch_add(1, Relaxed);
                s2.stats
                    .pack_bytes_received
                    .fetch_add(body.len() as u64, Relaxed);
                let new = files::put_pack(&dir, &p, &body)?;
                if new {
                    s2.stats.packs_stored.fetch_add(1, Relaxed);
                }
                new
            }
            RepoFile::Index(p) => {
                files::put_index(&dir, &p, &body)?;
                false
            }
            RepoFile::Snapshot(id) => {
                files::put_snapshot(&dir, &host, &id, &body)?;
                s2.stats.snapshots_committed.fetch_add(1, Relaxed);
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
    Ok((status, axum::Json(json!({ "stored": stored }))).into_response())
}

async fn delete_file(
    State(s): State<Shared>,
    Path((host, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_host(&host)?;
    s.authorize(&headers, Access::Admin)?;
    let (path, _) = file_path(&s, &host, &name)?;
    let lock = s.host_lock(&host);
    let _alone = lock.write().await;
    blocking(move || match std::fs::remove_file(&path) {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(err(StatusCode::NOT_FOUND, "no such file"))
        }
        Err(e) => Err(e.into()),
    })
    .await
}

// ---- snapshots and manifests ----

fn snapshot_json(m: &crate::manifest::Manifest) -> Value {
    json!({
        "id": m.snapshot.id,
        "host": m.snapshot.host,
        "time": m.snapshot.time,
        "parent": m.snapshot.parent,
        "filesystems": m.filesystems.iter().filter_map(|f| f.data.as_ref()).map(|d| json!({
            "from": d.from, "entries": d.entries, "bytes": d.bytes,
        })).collect::<Vec<_>>(),
    })
}

async fn list_snapshots(
    State(s): State<Shared>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_host(&host)?;
    s.authorize(&headers, Access::Read(&host))?;
    let dir = files::host_dir(&s.data, &host);
    let snaps = blocking(move || Ok(files::snapshots(&dir)?)).await?;
    Ok(axum::Json(snaps.iter().map(snapshot_json).collect::<Vec<_>>()).into_response())
}

async fn get_manifest(
    State(s): State<Shared>,
    Path(host): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_host(&host)?;
    s.authorize(&headers, Access::Read(&host))?;
    let dir = files::host_dir(&s.data, &host);
    let m = blocking(move || {
        if let Some(id) = q.get("snapshot") {
            let all = files::snapshots(&dir)?;
            return all
                .into_iter()
                .find(|m| &m.snapshot.id == id)
                .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no snapshot {id}")));
        }
        let at = q.get("at").map(String::as_str).unwrap_or("latest");
        Ok(files::snapshot_at(&dir, at)?)
    })
    .await?;
    let xml = crate::manifest::to_xml(&m)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
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

fn normalize_mac(m: &str) -> String {
    m.trim().to_ascii_lowercase().replace('-', ":")
}

/// The host whose latest manifest has one of these MAC addresses.
fn host_by_mac(s: &Server, macs: &[String], only: Option<&str>) -> ApiResult<Option<String>> {
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
            .filter_map(|i| i.mac.as_deref())
            .any(|mac| macs.contains(&normalize_mac(mac)));
        if found {
            return Ok(Some(h));
        }
    }
    Ok(None)
}

async fn identify(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, scope) = s.authenticate(&headers, None)?;
    let only = match &scope {
        Scope::Admin | Scope::Boot => None,
        Scope::Host { host } | Scope::Recovery { host, .. } => Some(host.clone()),
    };
    let macs: Vec<String> = q
        .get("mac")
        .map(|m| {
            m.split(',')
                .map(normalize_mac)
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if macs.is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "give mac=aa:bb:cc:dd:ee:ff[,...]",
        ));
    }
    let s2 = s.clone();
    let host = blocking(move || host_by_mac(&s2, &macs, only.as_deref())).await?;
    let Some(host) = host else {
        return Err(err(
            StatusCode::NOT_FOUND,
            "no host's latest snapshot has these MAC addresses",
        ));
    };
    let request = s.catalog().active_request(&host).cloned();
    Ok(axum::Json(json!({ "host": host, "request": request })).into_response())
}

// ---- recovery requests ----

#[derive(Deserialize)]
struct NewRequest {
    #[serde(default = "latest")]
    at: String,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
}

fn latest() -> String {
    "latest".into()
}

/// Mint a recovery token for a request, replacing any earlier one.
fn mint_recovery_token(s: &Server, req: &Recovery) -> ApiResult<String> {
    let mut cat = s.catalog();
    cat.revoke_recovery_tokens(&req.id);
    let (token, rec) = auth::generate(
        Scope::Recovery {
            host: req.host.clone(),
            request: req.id.clone(),
        },
        "recovery",
    );
    cat.tokens.push(rec);
    cat.save_tokens()?;
    Ok(token)
}

async fn create_request(
    State(s): State<Shared>,
    Path(host): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    check_host(&host)?;
    s.authorize(&headers, Access::Admin)?;
    let NewRequest {
        at,
        hostname,
        addresses,
    } = json_body(&body)?;
    if let Some(h) = &hostname {
        crate::retarget::parse_hostname(h)
            .map_err(|e| err(StatusCode::BAD_REQUEST, format!("hostname {h:?}: {e}")))?;
    }
    for a in &addresses {
        crate::retarget::parse_address(a)
            .map_err(|e| err(StatusCode::BAD_REQUEST, format!("address {a:?}: {e}")))?;
    }
    let s2 = s.clone();
    let (req, token) = blocking(move || {
        let m = files::snapshot_at(&files::host_dir(&s2.data, &host), &at)?;
        let now = crate::time::now_utc();
        let req = Recovery {
            id: format!("req-{}", auth::random_hex(6)),
            host: host.clone(),
            at,
            snapshot: m.snapshot.id.clone(),
            snapshot_time: m.snapshot.time.to_string(),
            state: RequestState::Armed,
            created: now.clone(),
            updated: now.clone(),
            progress: None,
            result: None,
            hostname,
            addresses,
        };
        {
            let mut cat = s2.catalog();
            if let Some(running) = cat
                .requests
                .iter()
                .find(|r| r.host == host && r.state == RequestState::Running)
            {
                return Err(err(
                    StatusCode::CONFLICT,
                    format!(
                        "recovery {} of {host} is running; cancel it first",
                        running.id
                    ),
                ));
            }
            // A new request replaces an armed one.
            let replaced: Vec<String> = cat
                .requests
                .iter_mut()
                .filter(|r| r.host == host && r.state == RequestState::Armed)
                .map(|r| {
                    r.state = RequestState::Cancelled;
                    r.updated = now.clone();
                    r.result = Some("replaced by a newer request".into());
                    r.id.clone()
                })
                .collect();
            for id in replaced {
                cat.revoke_recovery_tokens(&id);
            }
            cat.requests.push(req.clone());
            cat.save_requests()?;
        }
        let token = mint_recovery_token(&s2, &req)?;
        Ok((req, token))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "request": req, "token": token })),
    )
        .into_response())
}

async fn list_requests(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    s.authorize(&headers, Access::Admin)?;
    let cat = s.catalog();
    let list: Vec<&Recovery> = cat
        .requests
        .iter()
        .filter(|r| q.get("host").is_none_or(|h| &r.host == h))
        .collect();
    Ok(axum::Json(json!(list)).into_response())
}

async fn get_request(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, scope) = s.authenticate(&headers, None)?;
    let allowed = match &scope {
        Scope::Admin => true,
        Scope::Recovery { request, .. } => *request == id,
        _ => false,
    };
    if !allowed {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!(
                "this token ({}) may not read request {id}",
                scope.describe()
            ),
        ));
    }
    let cat = s.catalog();
    let r = cat
        .requests
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no request {id}")))?;
    Ok(axum::Json(json!(r)).into_response())
}

async fn cancel_request(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    s.authorize(&headers, Access::Admin)?;
    let s2 = s.clone();
    let r = blocking(move || {
        let mut cat = s2.catalog();
        let r = cat
            .request_mut(&id)
            .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no request {id}")))?;
        if !r.state.is_active() {
            return Err(err(
                StatusCode::CONFLICT,
                format!("request {id} is already {:?}", r.state).to_lowercase(),
            ));
        }
        r.state = RequestState::Cancelled;
        r.updated = crate::time::now_utc();
        r.result = Some("cancelled by an operator".into());
        let r = r.clone();
        cat.revoke_recovery_tokens(&id);
        cat.save_requests()?;
        cat.save_tokens()?;
        Ok(r)
    })
    .await?;
    Ok(axum::Json(json!(r)).into_response())
}

/// The request of a recovery token.
fn recovery_scope(s: &Server, headers: &HeaderMap) -> ApiResult<String> {
    match s.authenticate(headers, None)? {
        (_, Scope::Recovery { request, .. }) => Ok(request),
        (_, scope) => Err(err(
            StatusCode::FORBIDDEN,
            format!("this token ({}) is not a recovery token", scope.describe()),
        )),
    }
}

async fn my_recovery(State(s): State<Shared>, headers: HeaderMap) -> ApiResult<Response> {
    let id = recovery_scope(&s, &headers)?;
    let cat = s.catalog();
    let r = cat
        .requests
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, "no such request"))?;
    Ok(axum::Json(json!(r)).into_response())
}

#[derive(Deserialize)]
struct ProgressReport {
    stage: String,
    #[serde(default)]
    bytes_done: u64,
    #[serde(default)]
    bytes_total: u64,
    #[serde(default)]
    message: String,
}

async fn report_progress(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let id = recovery_scope(&s, &headers)?;
    let p: ProgressReport = json_body(&body)?;
    if p.stage.is_empty() || p.stage.len() > 64 || p.message.len() > 4096 {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "stage must be 1-64 bytes, message at most 4096",
        ));
    }
    let s2 = s.clone();
    let r = blocking(move || {
        let mut cat = s2.catalog();
        let r = cat
            .request_mut(&id)
            .ok_or_else(|| err(StatusCode::NOT_FOUND, "no such request"))?;
        let now = crate::time::now_utc();
        let now_secs = crate::time::parse_rfc3339(&now).unwrap_or(0);
        let stage_started = match &r.progress {
            Some(prev) if prev.stage == p.stage => prev.stage_started.clone(),
            _ => now.clone(),
        };
        let elapsed = now_secs - crate::time::parse_rfc3339(&stage_started).unwrap_or(now_secs);
        r.progress = Some(Progress {
            rate: if elapsed > 0 {
                p.bytes_done as f64 / elapsed as f64
            } else {
                0.0
            },
            stage: p.stage,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            message: p.message,
            stage_started,
            time: now.clone(),
        });
        r.state = RequestState::Running;
        r.updated = now;
        let r = r.clone();
        cat.save_requests()?;
        Ok(r)
    })
    .await?;
    Ok(axum::Json(json!(r)).into_response())
}

#[derive(Deserialize)]
struct ResultReport {
    ok: bool,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    message: String,
}

async fn report_result(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let id = recovery_scope(&s, &headers)?;
    let rep: ResultReport = json_body(&body)?;
    if rep.message.len() > 16384 {
        return Err(err(StatusCode::BAD_REQUEST, "message over 16384 bytes"));
    }
    let s2 = s.clone();
    let r = blocking(move || {
        let mut cat = s2.catalog();
        let r = cat
            .request_mut(&id)
            .ok_or_else(|| err(StatusCode::NOT_FOUND, "no such request"))?;
        r.state = if rep.ok {
            RequestState::Succeeded
        } else {
            RequestState::Failed
        };
        r.updated = crate::time::now_utc();
        r.result = Some(if rep.stage.is_empty() {
            rep.message
        } else {
            format!("{}: {}", rep.stage, rep.message)
        });
        let r = r.clone();
        // One recovery per request: its token ends here.
        cat.revoke_recovery_tokens(&id);
        cat.save_requests()?;
        cat.save_tokens()?;
        Ok(r)
    })
    .await?;
    Ok(axum::Json(json!(r)).into_response())
}

// ---- tokens ----

#[derive(Deserialize)]
struct NewToken {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    boot: bool,
    #[serde(default)]
    note: String,
}

async fn create_token(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    s.authorize(&headers, Access::Admin)?;
    let req: NewToken = json_body(&body)?;
    let scope = match (req.host, req.boot) {
        (Some(h), false) => {
            check_host(&h)?;
            Scope::Host { host: h }
        }
        (None, true) => Scope::Boot,
        _ => {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "give either \"host\" or \"boot\": true",
            ));
        }
    };
    let s2 = s.clone();
    let (token, id) = blocking(move || {
        if let Scope::Host { host } = &scope {
            files::ensure_repo(&files::host_dir(&s2.data, host))?;
        }
        let (token, rec) = auth::generate(scope, &req.note);
        let id = rec.id.clone();
        let mut cat = s2.catalog();
        cat.tokens.push(rec);
        cat.save_tokens()?;
        Ok((token, id))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "id": id, "token": token })),
    )
        .into_response())
}

async fn list_tokens(State(s): State<Shared>, headers: HeaderMap) -> ApiResult<Response> {
    s.authorize(&headers, Access::Admin)?;
    let cat = s.catalog();
    let list: Vec<Value> = cat
        .tokens
        .iter()
        .map(|t| json!({ "id": t.id, "scope": t.scope, "created": t.created, "note": t.note }))
        .collect();
    Ok(axum::Json(list).into_response())
}

async fn revoke_token(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    s.authorize(&headers, Access::Admin)?;
    let s2 = s.clone();
    blocking(move || {
        let mut cat = s2.catalog();
        let Some(i) = cat.tokens.iter().position(|t| t.id == id) else {
            return Err(err(StatusCode::NOT_FOUND, format!("no token {id}")));
        };
        if cat.tokens[i].scope == Scope::Admin
            && cat
                .tokens
                .iter()
                .filter(|t| t.scope == Scope::Admin)
                .count()
                == 1
        {
            return Err(err(
                StatusCode::CONFLICT,
                "this is the only admin token (`rewind serve --new-admin-token` replaces it)",
            ));
        }
        cat.tokens.remove(i);
        cat.save_tokens()?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

// ---- forget and prune ----

#[derive(Deserialize)]
struct ForgetRequest {
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

fn target_hosts(s: &Server, host: Option<String>) -> ApiResult<Vec<String>> {
    match host {
        Some(h) => {
            check_host(&h)?;
            if !s.hosts().contains(&h) {
                return Err(err(StatusCode::NOT_FOUND, format!("no host {h}")));
            }
            Ok(vec![h])
        }
        None => Ok(s.hosts()),
    }
}

async fn forget_cmd(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    s.authorize(&headers, Access::Admin)?;
    let req: ForgetRequest = json_body(&body)?;
    if req.policy.is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "an empty policy would forget every snapshot: give at least one keep rule",
        ));
    }
    let mut out = serde_json::Map::new();
    for h in target_hosts(&s, req.host)? {
        let lock = s.host_lock(&h);
        let _alone = lock.write().await;
        let s2 = s.clone();
        let (policy, dry_run) = (req.policy, req.dry_run);
        let h2 = h.clone();
        let decisions = blocking(move || {
            let repo = crate::repo::Repo::open(&files::host_dir(&s2.data, &h2))?;
            let mut by_host = forget::forget(&repo, &policy, Some(&h2), dry_run)?;
            Ok(by_host.remove(&h2).unwrap_or_default())
        })
        .await?;
        out.insert(h, json!(decisions));
    }
    Ok(axum::Json(json!({ "hosts": out })).into_response())
}

#[derive(Deserialize)]
struct PruneRequest {
    #[serde(default)]
    grace: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

pub const DEFAULT_GRACE: &str = "6h";

async fn prune_cmd(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    s.authorize(&headers, Access::Admin)?;
    let req: PruneRequest = json_body(&body)?;
    let grace = prune::parse_duration(req.grace.as_deref().unwrap_or(DEFAULT_GRACE))
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    let mut out = serde_json::Map::new();
    for h in target_hosts(&s, req.host)? {
        let lock = s.host_lock(&h);
        let _alone = lock.write().await;
        let dir = files::host_dir(&s.data, &h);
        let dry_run = req.dry_run;
        let report = blocking(move || Ok(prune::prune(&dir, grace, dry_run)?)).await?;
        out.insert(h, json!(report));
    }
    Ok(axum::Json(json!({ "hosts": out })).into_response())
}

async fn stats(State(s): State<Shared>, headers: HeaderMap) -> ApiResult<Response> {
    s.authorize(&headers, Access::Admin)?;
    let st = &s.stats;
    Ok(axum::Json(json!({
        "pack_bytes_received": st.pack_bytes_received.load(Relaxed),
        "packs_received": st.packs_received.load(Relaxed),
        "packs_stored": st.packs_stored.load(Relaxed),
        "bytes_sent": st.bytes_sent.load(Relaxed),
        "snapshots_committed": st.snapshots_committed.load(Relaxed),
    }))
    .into_response())
}

// ---- boot ----

async fn boot_script(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = q.get("token").map(String::as_str);
    s.authorize_q(&headers, token, Access::Boot)?;
    let macs: Vec<String> = q
        .get("mac")
        .map(|m| {
            m.split(',')
                .map(normalize_mac)
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let text = |body: String| {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    };
    if macs.is_empty() {
        return Ok(text(ipxe::exit_script(
            "no MAC address given (chain .../boot/ipxe?mac=${net0/mac})",
        )));
    }
    let s2 = s.clone();
    let host = blocking(move || host_by_mac(&s2, &macs, None)).await?;
    let Some(host) = host else {
        return Ok(text(ipxe::exit_script(
            "this machine is not known to the recovery server",
        )));
    };
    let Some(req) = s.catalog().active_request(&host).cloned() else {
        return Ok(text(ipxe::exit_script(&format!(
            "no recovery is armed for {host}"
        ))));
    };
    let base = s.base_url(&headers);
    let boot_token = token
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .unwrap_or_default();
    let s2 = s.clone();
    let req2 = req.clone();
    let recovery_token = blocking(move || mint_recovery_token(&s2, &req2)).await?;
    let extra = std::fs::read_to_string(s.data.join("boot/cmdline")).unwrap_or_default();
    let kernel_url = format!("{base}/boot/vmlinuz?token={boot_token}");
    let initrd_url = format!("{base}/boot/initrd.img?token={boot_token}");
    let script = ipxe::recovery_script(&ipxe::BootParams {
        server: &base,
        token: &recovery_token,
        host: &host,
        at: &req.snapshot_time,
        pin: s.fingerprint.as_deref(),
        kernel_url: &kernel_url,
        initrd_url: &initrd_url,
        extra: extra.lines().next().unwrap_or(""),
    })
    .ok_or_else(|| {
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a boot setting cannot go on a kernel command line (spaces in --public-url?)",
        )
    })?;
    Ok(text(script))
}

async fn boot_file(
    State(s): State<Shared>,
    Path(file): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    s.authorize_q(&headers, q.get("token").map(String::as_str), Access::Boot)?;
    if file.starts_with('.') || file.contains('/') || file == "cmdline" {
        return Err(err(StatusCode::BAD_REQUEST, "not a boot asset name"));
    }
    let path = s.data.join("boot").join(&file);
    let bytes = blocking(move || match std::fs::read(&path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(err(
            StatusCode::NOT_FOUND,
            format!("no boot asset {file} (put it in DIR/boot/)"),
        )),
        Err(e) => Err(e.into()),
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

// ---- the listener ----

pub async fn run(
    server: Shared,
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("rewind: listening on {scheme}://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let app = router(server);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                eprintln!("rewind: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            let result = match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                .await
                        }
                        Ok(Err(e)) => {
                            eprintln!("rewind: TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result
                && !e.is_incomplete_message()
            {
                eprintln!("rewind: connection from {peer}: {e}");
            }
        });
    }
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
