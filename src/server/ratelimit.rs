//! Per-token rate limits (`serve --rate-limit`): a token that floods the
//! server is answered 429 with `Retry-After` while every other token is
//! served as usual. The server-wide limits (connections, requests in
//! handlers, uploads) keep the server up; this keeps it fair: one
//! misbehaving host, or a stolen token in a loop, cannot take the
//! capacity the others need.
//!
//! Each valid token has a bucket of `2 × rate` requests that refills at
//! `rate` per second (a token bucket). Only tokens that verify get a
//! bucket, so the map holds at most one entry per token of the catalog,
//! and nobody can spend another token's budget without its secret.
//! Requests without a valid token are not counted here: they are refused
//! 401 by the handlers' extractors without reading their bodies, under the
//! server-wide limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Server, auth};
use crate::api::ApiError;

/// Requests per second per token, by default: far above what a capture or
/// a restore asks (a restore reads packs in 1 MiB windows: 500 MiB/s),
/// far below what a loop can send.
pub const DEFAULT_PER_SECOND: u32 = 500;

/// The buckets of every token seen, by token id.
#[derive(Debug)]
pub struct RateLimits {
    /// Requests per second; 0: no limit.
    per_second: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests that may be made now (fractions accumulate).
    available: f64,
    updated: Instant,
}

impl RateLimits {
    /// `per_second` requests per second per token (0: unlimited), with a
    /// burst of twice that.
    pub fn new(per_second: u32) -> RateLimits {
        RateLimits {
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn burst(&self) -> f64 {
        2.0 * f64::from(self.per_second)
    }

    /// Take one request from `token_id`'s bucket at `now`: `Ok`, or how
    /// long until the next request would be accepted.
    pub fn take(&self, token_id: &str, now: Instant) -> Result<(), Duration> {
        if self.per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_second);
        let burst = self.burst();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(token_id.to_string()).or_insert(Bucket {
            available: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.available = (bucket.available + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.available >= 1.0 {
            bucket.available -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.available) / rate))
        }
    }

    /// Buckets held.
    pub fn buckets_held(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Forget the buckets of tokens that no longer exist (a revoked
    /// token's entry would otherwise stay), keeping `live` ones.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live(id));
    }
}

/// The token a request presents: `Authorization: Bearer`, or `?token=`
/// (boot files fetched by iPXE).
fn presented(req: &Request) -> Option<String> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    header.or_else(|| {
        req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_string)
        })
    })
}

/// Middleware: count the request against its token's bucket; past the
/// limit, answer 429 with `Retry-After` (whole seconds, at least 1)
/// before the handler runs or a byte of the body is read.
pub async fn layer(State(s): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let catalog = s.catalog();
    let id = presented(&req)
        .and_then(|token| auth::verify(&catalog.tokens, &token).map(|r| r.id.clone()));
    // Revoked tokens' buckets go once they outnumber the live ones.
    if s.rate_limits.buckets_held() > 2 * catalog.tokens.len() + 16 {
        s.rate_limits
            .retain(|id| catalog.tokens.iter().any(|t| t.id == id));
    }
    drop(catalog);
    if let Some(id) = id
        && let Err(wait) = s.rate_limits.take(&id, Instant::now())
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut resp = ApiError::Other(
            429,
            format!(
                "token {id} sends more than {} requests per second: slow down (retry in {secs} s)",
                s.rate_limits.per_second
            ),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let limits = RateLimits::new(10);
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(limits.take("a", t0), Ok(()), "request {i} of the burst");
        }
        let wait = limits.take("a", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another token is not affected.
        assert_eq!(limits.take("b", t0), Ok(()));
        // A tenth of a second later: one more.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limits.take("a", t1), Ok(()));
        assert!(limits.take("a", t1).is_err());
        // Idle long enough: the whole burst again, never more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..20 {
            assert_eq!(limits.take("a", t2), Ok(()));
        }
        assert!(limits.take("a", t2).is_err());
    }

    #[test]
    fn zero_is_no_limit_and_revoked_tokens_are_forgotten() {
        let off = RateLimits::new(0);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(off.take("a", t0), Ok(()));
        }
        let limits = RateLimits::new(1);
        limits.take("a", t0).unwrap();
        limits.take("b", t0).unwrap();
        limits.retain(|id| id == "b");
        assert_eq!(limits.buckets.lock().unwrap().len(), 1);
    }
}
