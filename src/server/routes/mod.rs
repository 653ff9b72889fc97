//! The HTTP API's routes (docs/api.md), one module per resource. Handlers
//! state the token they need with an extractor (super::extract), do their
//! file work on the blocking pool through [`Server::blocking`] (or
//! [`Server::change_catalog`], [`Server::host_shared`], [`Server::host_alone`])
//! and answer the types of `crate::api`. Nothing here calls a blocking HTTP
//! client.

mod boot;
mod files;
mod hosts;
mod keys;
mod meta;
mod ops;
mod requests;
mod retention;
mod snapshots;
mod tokens;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};

use super::Server;
use super::error::ApiResult;
use super::state::Catalog;
use crate::api::{ApiError, limits};

/// Largest body of any route; each route reads less (api::limits).
pub const MAX_UPLOAD: usize = crate::api::limits::MAX_PACK;

type Shared = Arc<Server>;

pub use boot::BootListener;
pub(crate) use boot::{asset_name_ok, grub_script, pins_to_append};
pub(crate) use files::RangeBudget;

pub fn router(server: Shared) -> Router {
    let api = Router::new()
        .route("/v1/version", get(meta::version))
        .route("/v1/whoami", get(tokens::whoami))
        .route("/v1/hosts", get(hosts::list_hosts))
        .route("/v1/hosts/{host}/files", get(files::list_files))
        .route(
            "/v1/hosts/{host}/files/{*name}",
            get(files::get_file)
                .head(files::head_file)
                .put(files::put_file)
                .delete(files::delete_file),
        )
        .route("/v1/hosts/{host}/snapshots", get(snapshots::list_snapshots))
        .route("/v1/hosts/{host}/manifest", get(snapshots::get_manifest))
        .route("/v1/hosts/{host}/requests", post(requests::create_request))
        .route(
            "/v1/hosts/{host}/keys",
            get(keys::list_keys).put(keys::escrow_key),
        )
        .route("/v1/hosts/{host}/keys/{key_id}", get(keys::release_key))
        .route("/v1/identify", get(hosts::identify))
        .route("/v1/requests", get(requests::list_requests))
        .route(
            "/v1/requests/{id}",
            get(requests::get_request).delete(requests::cancel_request),
        )
        .route("/v1/recovery", get(requests::my_recovery))
        .route("/v1/claim", post(requests::claim))
        .route("/v1/recovery/progress", post(requests::report_progress))
        .route("/v1/recovery/result", post(requests::report_result))
        .route("/v1/recovery/disks", post(requests::record_disks))
        .route(
            "/v1/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/v1/tokens/{id}", delete(tokens::revoke_token))
        .route("/v1/forget", post(retention::forget))
        .route("/v1/prune", post(retention::prune))
        .route("/v1/stats", get(meta::stats))
        .route("/v1/hosts/{host}/captures", post(ops::report_capture))
        .route("/v1/hosts/{host}/health", get(ops::host_health))
        .route("/v1/health", get(ops::all_health))
        .route("/v1/verify", post(ops::verify_now))
        .route("/v1/audit", get(ops::audit_log))
        .route("/metrics", get(ops::metrics))
        .route("/boot/ipxe", get(boot::boot_script))
        .route("/boot/{file}", get(boot::boot_file))
        .fallback(|| async {
            ApiError::NotFound("no such endpoint (docs/api.md lists them)".into())
        });
    with_layers(api, server)
}

/// The plain-HTTP boot listener (`serve --boot-http`): the boot scripts and
/// assets and nothing else, for the boot token only (any other token is
/// refused before it is looked at further: it must never cross the network
/// in clear, so a configuration that sends one fails instead of working).
pub fn boot_router(server: Shared, listener: BootListener) -> Router {
    let boot = Router::new()
        .route("/boot/ipxe", get(boot::boot_script))
        .route("/boot/{file}", get(boot::boot_file))
        .fallback(|| async {
            ApiError::NotFound(
                "this is the plain-HTTP boot listener: it serves /boot/ only; the API is on the \
                 TLS listener (rewind serve --listen)"
                    .into(),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            boot_token_only,
        ))
        .layer(axum::Extension(listener));
    with_layers(boot, server)
}

/// On the boot listener: a token that is not a boot token is refused (403).
async fn boot_token_only(
    axum::extract::State(s): axum::extract::State<Shared>,
    req: Request,
    next: Next,
) -> Response {
    use axum::response::IntoResponse;
    if let Some(scope) = s.token_scope(req.headers(), req.uri())
        && scope != super::auth::Scope::Boot
    {
        return ApiError::Forbidden(format!(
            "this token ({}) may not be used on the plain-HTTP boot listener: only the boot \
             token is accepted here; use the TLS listener",
            scope.describe()
        ))
        .into_response();
    }
    next.run(req).await
}

/// The timeouts, limits, logging and metrics every listener has.
fn with_layers(routes: Router<Shared>, server: Shared) -> Router {
    let body_timeout = server.body_timeout;
    routes
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .layer(axum::middleware::from_fn(drain_unread_bodies))
        // A body that stalls, a request that never ends (slowloris), too
        // many at once: refused or queued before they cost memory.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(limits::REQUEST_SECS),
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits::MAX_IN_FLIGHT,
        ))
        // Before the global limits: a flooding token waits for no slot.
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            super::ratelimit::layer,
        ))
        .layer(axum::middleware::from_fn(log))
        .layer(axum::middleware::from_fn(super::audit::actor_layer))
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            super::metrics::observe,
        ))
        .with_state(server)
}

/// Most bytes of a refused request's body read and thrown away so that
/// its client can read the answer (past it the connection is just closed).
const DRAIN_LIMIT: usize = 128 << 20;

/// A handler that refuses a request before reading its body (a token for
/// another host, a declared size over the limit) would make the server
/// close the connection with the body unread: the kernel then resets it,
/// and a client still sending sees a broken pipe instead of the answer.
/// So the body is fed to the handler through a one-frame channel, and what
/// the handler did not read is read and thrown away (never kept: memory
/// stays one frame) before the answer goes out, up to [`DRAIN_LIMIT`] and
/// within `--body-timeout` (this layer sits inside the timeout layers):
/// what web servers call a lingering close.
async fn drain_unread_bodies(req: Request, next: Next) -> Response {
    use http_body_util::BodyExt;
    let empty = axum::body::HttpBody::size_hint(req.body()).exact() == Some(0);
    if empty {
        return next.run(req).await;
    }
    let (parts, mut body) = req.into_parts();
    let size = axum::body::HttpBody::size_hint(&body);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let pump = tokio::spawn(async move {
        let mut handler = Some(tx);
        let mut drained = 0usize;
        while let Some(frame) = body.frame().await {
            match handler.as_ref() {
                Some(h) => {
                    let failed = frame.is_err();
                    if h.send(frame).await.is_err() {
                        // The handler stopped reading: discard from here.
                        handler = None;
                    }
                    if failed {
                        break;
                    }
                }
                None => match frame.map(|f| f.into_data()) {
                    Ok(Ok(data)) => {
                        drained += data.len();
                        if drained > DRAIN_LIMIT {
                            break;
                        }
                    }
                    Ok(Err(_)) => {}
                    Err(_) => break,
                },
            }
        }
    });
    let resp = next
        .run(Request::from_parts(
            parts,
            axum::body::Body::new(ChannelBody { rx, size }),
        ))
        .await;
    let _ = pump.await;
    resp
}

/// A request body whose frames arrive through a channel; its size hint is
/// the original body's (the declared length sizes the reader's buffer).
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<hyper::body::Frame<axum::body::Bytes>, axum::Error>>,
    size: hyper::body::SizeHint,
}

impl axum::body::HttpBody for ChannelBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.rx.poll_recv(cx)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.size
    }
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
        log_line!(
            "rewind: {method} {path} -> {} ({} ms)",
            status.as_u16(),
            started.elapsed().as_millis()
        );
    }
    resp
}

impl Server {
    /// Run file work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Server) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|e| ApiError::Internal(format!("internal error: {e}")))?
    }

    /// Change the catalog: on a copy, saved, then swapped in (its saves
    /// write and fsync files: blocking pool).
    async fn change_catalog<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Catalog) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        self.blocking(move |s| s.catalog.change(f)).await
    }

    /// File work on a host's repository that may run beside uploads and
    /// commits (its lock shared).
    async fn host_shared<T: Send + 'static>(
        self: &Arc<Self>,
        host: &str,
        f: impl FnOnce(&Server) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let lock = self.host_lock(host);
        let _shared = lock.read().await;
        self.blocking(f).await
    }

    /// File work on a host's repository that runs alone (forget, prune,
    /// removals).
    async fn host_alone<T: Send + 'static>(
        self: &Arc<Self>,
        host: &str,
        f: impl FnOnce(&Server) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let lock = self.host_lock(host);
        let _alone = lock.write().await;
        self.blocking(f).await
    }

    /// The URL machines reach this server at: `--public-url`, else from
    /// the request's Host header.
    fn base_url(&self, headers: &axum::http::HeaderMap) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = headers
            .get(axum::http::header::HOST)
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
