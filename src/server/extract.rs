//! Who is asking, as axum extractors: a handler names the token it needs
//! in its signature — [`Admin`], [`ReadHost`] / [`WriteHost`] (the
//! `{host}` of the path), [`RecoveryToken`], [`BootToken`], or [`Caller`]
//! for any valid token — and the extractor answers 400 (a bad host name),
//! 401 or 403 before the handler runs, so before any body is read (axum
//! runs the body's extractor last). [`JsonBody`] reads a JSON body with
//! the API's size limit, stopping as soon as it passes it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use super::Server;
use super::auth::{self, Access, Scope};
use super::error::ApiResult;
use super::files;
use crate::api::ApiError;

type Shared = Arc<Server>;

pub use crate::api::limits::MAX_JSON;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// `?token=` (boot routes: iPXE cannot send headers).
fn query_token(parts: &Parts) -> Option<String> {
    Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|Query(mut q)| q.remove("token"))
}

impl Server {
    /// Who is asking: the bearer token, else `query_token`. A recovery
    /// token works only while its request is armed or running.
    fn authenticate(&self, headers: &HeaderMap, query_token: Option<&str>) -> ApiResult<Caller> {
        let Some(token) = bearer(headers).or(query_token) else {
            return Err(ApiError::Unauthorized(
                "missing bearer token (Authorization: Bearer rwd_...)".into(),
            ));
        };
        let cat = self.catalog();
        let rec = auth::verify(&cat.tokens, token)
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
        if matches!(rec.scope, Scope::Recovery { .. }) {
            cat.check_recovery_token(rec, super::state::now_secs())
                .map_err(ApiError::Unauthorized)?;
        }
        Ok(Caller {
            id: rec.id.clone(),
            scope: rec.scope.clone(),
            claimed: rec.claimed,
        })
    }

    /// The scope of the token a request carries (bearer, else `?token=`),
    /// when it is a valid one.
    pub fn token_scope(&self, headers: &HeaderMap, uri: &axum::http::Uri) -> Option<Scope> {
        let query = Query::<HashMap<String, String>>::try_from_uri(uri)
            .ok()
            .and_then(|Query(mut q)| q.remove("token"));
        self.authenticate(headers, query.as_deref())
            .ok()
            .map(|c| c.scope)
    }

    fn authorize(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        access: Access<'_>,
    ) -> ApiResult<Scope> {
        let Caller { scope, claimed, .. } = self.authenticate(headers, query_token)?;
        if matches!(scope, Scope::Recovery { .. }) && !claimed {
            return Err(ApiError::Forbidden(format!(
                "this token ({}) is the request's own: it may only read the request and claim it \
                 for a machine (POST /v1/claim); the claim's token reads the data",
                scope.describe()
            )));
        }
        if auth::allows(&scope, access) {
            return Ok(scope);
        }
        let what = match access {
            Access::Admin => "do this (admin only)".to_string(),
            Access::Read(h) => format!("read host {h}"),
            Access::Write(h) => format!("write to host {h}"),
            Access::Boot => "fetch boot scripts".to_string(),
        };
        Err(ApiError::Forbidden(format!(
            "this token ({}) may not {what}",
            scope.describe()
        )))
    }
}

/// Any valid token.
pub struct Caller {
    pub id: String,
    pub scope: Scope,
    /// A recovery token minted by a claim (see `auth::TokenRecord`).
    pub claimed: bool,
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> ApiResult<Caller> {
        s.authenticate(&parts.headers, None)
    }
}

/// An admin token.
pub struct Admin;

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> ApiResult<Admin> {
        s.authorize(&parts.headers, None, Access::Admin)?;
        Ok(Admin)
    }
}

/// The `{host}` of the path, checked to be a valid host name.
async fn path_host(parts: &mut Parts, s: &Shared) -> ApiResult<String> {
    let params = RawPathParams::from_request_parts(parts, s)
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let host = params
        .iter()
        .find_map(|(k, v)| (k == "host").then(|| v.to_string()))
        .ok_or_else(|| ApiError::Internal("this route has no {host}".into()))?;
    check_host(&host)?;
    Ok(host)
}

pub fn check_host(host: &str) -> ApiResult<()> {
    if files::valid_host(host) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{host:?} is not a valid host name"
        )))
    }
}

/// The `{host}` of the path, a valid host name (no token check: an
/// [`Admin`] after it).
pub struct PathHost(pub String);

impl FromRequestParts<Shared> for PathHost {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> ApiResult<PathHost> {
        path_host(parts, s).await.map(PathHost)
    }
}

/// A token that may read the path's host: admin, its host token, or its
/// recovery token.
pub struct ReadHost(pub String);

impl FromRequestParts<Shared> for ReadHost {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> ApiResult<ReadHost> {
        let host = path_host(parts, s).await?;
        s.authorize(&parts.headers, None, Access::Read(&host))?;
        Ok(ReadHost(host))
    }
}

/// A token that may write to the path's host: admin or its host token.
pub struct WriteHost(pub String);

impl FromRequestParts<Shared> for WriteHost {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> ApiResult<WriteHost> {
        let host = path_host(parts, s).await?;
        s.authorize(&parts.headers, None, Access::Write(&host))?;
        Ok(WriteHost(host))
    }
}

/// A recovery token (of a live request): the request's id, and whether it
/// is a claim's token (reports need one).
pub struct RecoveryToken {
    pub request: String,
    pub claimed: bool,
}

impl RecoveryToken {
    /// Refuse the request's own token where a claim's is needed.
    pub fn claimed(&self) -> ApiResult<()> {
        if self.claimed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the token of request {} must claim it for a machine first (POST /v1/claim)",
                self.request
            )))
        }
    }
}

impl FromRequestParts<Shared> for RecoveryToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> ApiResult<RecoveryToken> {
        let caller = s.authenticate(&parts.headers, None)?;
        match caller.scope {
            Scope::Recovery { request, .. } => Ok(RecoveryToken {
                request,
                claimed: caller.claimed,
            }),
            scope => Err(ApiError::Forbidden(format!(
                "this token ({}) is not a recovery token",
                scope.describe()
            ))),
        }
    }
}

/// A token that may boot (boot or admin), as a bearer token or `?token=`;
/// `token` is the one to put in the URLs of a boot script.
pub struct BootToken {
    pub token: String,
}

impl FromRequestParts<Shared> for BootToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> ApiResult<BootToken> {
        let query = query_token(parts);
        s.authorize(&parts.headers, query.as_deref(), Access::Boot)?;
        let token = query
            .or_else(|| {
                parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        Ok(BootToken { token })
    }
}

/// A JSON body of at most [`MAX_JSON`] bytes; an empty body is `{}`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = axum::response::Response;

    async fn from_request(req: Request, s: &Shared) -> Result<JsonBody<T>, Self::Rejection> {
        use axum::response::IntoResponse;
        let _ = s;
        let body = read_body(req.into_body(), MAX_JSON, "a JSON body")
            .await
            .map_err(IntoResponse::into_response)?;
        json_body(&body)
            .map(JsonBody)
            .map_err(IntoResponse::into_response)
    }
}

/// Read a body up to `limit` bytes: past it 413, as soon as it passes; a
/// body that stalls past `--body-timeout` 408. The bytes go straight into
/// one buffer sized from the declared length, so a body costs its size in
/// memory once (collecting frames and then joining them costs it twice).
pub async fn read_body(body: axum::body::Body, limit: usize, what: &str) -> ApiResult<Bytes> {
    use http_body_util::BodyExt;
    let too_large = || ApiError::TooLarge(format!("{what} over {limit} bytes refused"));
    let declared = axum::body::HttpBody::size_hint(&body).exact();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if c.is::<tower_http::timeout::TimeoutError>() {
                    return ApiError::Other(408, format!("{what} stalled: the upload timed out"));
                }
                cause = c.source();
            }
            ApiError::BadRequest(format!("{what} broke off: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

fn json_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.len() > MAX_JSON {
        return Err(ApiError::TooLarge(format!(
            "request body over {MAX_JSON} bytes"
        )));
    }
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}
