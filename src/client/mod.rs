//! The client side of the recovery server: an HTTP(S) client with a pinned
//! certificate (or a given CA, never the platform's store: the recovery
//! image has none) that retries with exponential backoff, an [`HttpBackend`]
//! so that `Repo` (capture, restore, snapshots, ls, find, check) works
//! against a server as against a directory, and the operator commands.
//!
//! reqwest's blocking client runs its own runtime thread; it must never be
//! called from async code (the server never does).

mod calls;
pub use calls::ServerVault;
pub mod commands;
mod direct;
pub mod ops;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::api::ApiError;
use crate::repo::Repo;
use crate::repo::backend::Backend;

/// How long calls keep retrying a server that is down, by default.
const RETRY_FOR: Duration = Duration::from_secs(300);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Chunk requests a restore keeps in flight.
const READS_IN_FLIGHT: usize = 8;

/// Where the server is and how to trust it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// The recovery server's URL, instead of a repository directory
    /// (`https://backup.example:8443`).
    #[arg(long, env = "REWIND_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token for the server (`rewind token create HOST` makes one).
    #[arg(
        long,
        env = "REWIND_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The server's public-key pin (base64 SHA-256 of its key, which
    /// `rewind serve` prints); repeatable or comma-separated: any of them
    /// is trusted, so a new key can be rolled in. The old 64-hex-digit
    /// certificate pin still works this release, with a warning.
    #[arg(
        long = "pin",
        env = "REWIND_PIN",
        value_name = "PIN",
        value_delimiter = ','
    )]
    pub pins: Vec<String>,
    /// A CA certificate (PEM) to verify the server against, instead of --pin.
    #[arg(long, env = "REWIND_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Allow a plain http:// server: the token and the data cross the
    /// network in clear (a lab; the server must run with --insecure-http too).
    #[arg(long, env = "REWIND_INSECURE_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_http: bool,
}

impl ServerArgs {
    /// How to trust the server: the pins, the CA, whether plain HTTP is allowed.
    pub fn trust(&self) -> Trust {
        Trust {
            pins: self.pins.clone(),
            ca: self.ca.clone(),
            insecure_http: self.insecure_http,
        }
    }

    pub fn client(&self) -> Result<Client> {
        let url = self
            .server
            .as_deref()
            .context("give the server with --server URL (or REWIND_SERVER)")?;
        let token = self
            .token
            .as_deref()
            .context("give a token with --token (or REWIND_TOKEN)")?;
        Client::new(url, token, &self.trust())
    }
}

/// How a client trusts the server: one of its public-key pins (any of a
/// set), or a CA; plain HTTP only when allowed in so many words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// Pins as given (`--pin`, `rewind.pin=`): each may be a comma list.
    pub pins: Vec<String>,
    pub ca: Option<PathBuf>,
    /// `--insecure-http`, `rewind.insecure=1`.
    pub insecure_http: bool,
}

impl Trust {
    /// Trust exactly these pins.
    pub fn pinned(pins: &[&str]) -> Trust {
        Trust {
            pins: pins.iter().map(|p| p.to_string()).collect(),
            ..Trust::default()
        }
    }

    /// Plain HTTP, allowed (tests and labs).
    pub fn insecure_http() -> Trust {
        Trust {
            insecure_http: true,
            ..Trust::default()
        }
    }
}

/// A repository: a directory, or a host's repository on a server.
#[derive(clap::Args, Debug, Clone)]
pub struct RepoArg {
    /// The repository directory (takes precedence over --server).
    #[arg(
        id = "repo_dir",
        long = "repo",
        env = "REWIND_REPO",
        value_name = "DIR"
    )]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
    /// With --server: whose repository (default: this machine's host name).
    /// With --repo: only this host's snapshots.
    #[arg(long)]
    pub host: Option<String>,
}

impl RepoArg {
    pub fn open(&self) -> Result<Repo> {
        if let Some(dir) = &self.dir {
            return Repo::open(dir);
        }
        if self.server.server.is_none() {
            bail!("say where the repository is: --repo DIR, or --server URL --token TOKEN");
        }
        let host = match &self.host {
            Some(h) => h.clone(),
            None => local_hostname(),
        };
        let backend = HttpBackend::new(Arc::new(self.server.client()?), &host);
        if !backend.exists("config")? {
            bail!(
                "{} has no repository for host {host} yet (a capture creates it)",
                backend.client.base
            );
        }
        Repo::open_backend(Arc::new(backend))
    }
}

/// This machine's host name, as the probe reads it.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            nix::sys::utsname::uname()
                .map(|u| u.nodename().to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into())
        })
}

/// The repository a capture writes to: a directory (created if missing) or
/// the host's repository on the server (created on the server if missing).
/// With a server, the host name is settled here so that the snapshot and
/// the repository agree.
pub fn capture_repo(
    dir: Option<&Path>,
    server: &ServerArgs,
    host: &mut Option<String>,
) -> Result<Option<Repo>> {
    if let Some(dir) = dir {
        return Repo::init(dir).map(Some);
    }
    if server.server.is_none() {
        return Ok(None);
    }
    let h = host.get_or_insert_with(local_hostname).clone();
    let backend = HttpBackend::new(Arc::new(server.client()?), &h);
    if !backend.exists("config")? {
        backend.put("config", crate::repo::CONFIG_TEXT.as_bytes())?;
    }
    Repo::open_backend(Arc::new(backend)).map(Some)
}

/// Tell the server how a capture went (`POST /v1/hosts/{host}/captures`),
/// retrying briefly; a report that does not arrive is a warning, never the
/// capture's failure.
pub fn report_capture(server: &ServerArgs, host: &str, report: &crate::api::CaptureReport) {
    let sent = server.client().and_then(|mut c| {
        c.retry_for = Duration::from_secs(30);
        c.report_capture(host, report)
    });
    if let Err(e) = sent {
        eprintln!("rewind: warning: the capture report did not reach the server: {e:#}");
    }
}

/// Why an attempt failed.
pub enum Failure {
    /// The server is unreachable or failing (connection error, 5xx): try again.
    Retry(String),
    Fatal(anyhow::Error),
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Failure {
        let chain = error_chain(&e);
        // A certificate that is not the trusted one will not become it.
        if e.is_builder() || e.is_redirect() || chain.contains("certificate") {
            Failure::Fatal(anyhow!(chain))
        } else {
            Failure::Retry(chain)
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// Where a client gets a new token when the server answers 401 (a
/// recovery claim's lease lapsed during an outage: the image claims again).
pub type Renew = Box<dyn Fn() -> Result<String> + Send + Sync>;

pub struct Client {
    pub base: String,
    token: std::sync::RwLock<String>,
    http: reqwest::blocking::Client,
    /// A restore's ranged reads on the calling thread (see `direct`).
    direct: Option<direct::Direct>,
    /// How long to keep retrying a server that is down.
    pub retry_for: Duration,
    /// Retry a server that is down until this wall-clock time instead of
    /// for `retry_for` (a recovery: until its request expires).
    pub retry_until: Option<std::time::SystemTime>,
    /// A new token on 401, once per call (see [`Renew`]).
    pub renew: Option<Renew>,
}

impl Client {
    pub fn new(url: &str, token: &str, trust: &Trust) -> Result<Client> {
        let base = url.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        anyhow::ensure!(
            https || base.starts_with("http://"),
            "{url}: the server URL starts with https:// (or http:// with --insecure-http)"
        );
        if !https && !trust.insecure_http {
            bail!(
                "{url} is plain HTTP: the token and the data would cross the network in clear. \
                 Give the server's https:// URL with --pin (`rewind serve` prints its pin), or, \
                 in a lab, allow plain HTTP with --insecure-http (REWIND_INSECURE_HTTP=1; \
                 rewind.insecure=1 on the recovery image's kernel command line)"
            );
        }
        let pins = crate::api::parse_pins(&trust.pins).map_err(|e| anyhow!("--pin: {e}"))?;
        if https && pins.is_empty() && trust.ca.is_none() {
            bail!(
                "{url}: give the server's public-key pin with --pin (`rewind serve` prints it) or its CA with --ca"
            );
        }
        if https {
            for old in pins.iter().filter(|p| p.is_certificate_hash()) {
                eprintln!(
                    "rewind: warning: pin {old} is the old whole-certificate pin: it stops working \
                     when the certificate is renewed; use the public-key pin `rewind serve` prints \
                     (the old form is refused from the next release)"
                );
            }
        }
        let tls = tls_config(pins, trust.ca.as_deref())?;
        let http = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .pool_max_idle_per_host(16)
            .build()
            .context("cannot set up the HTTP client")?;
        let retry_for = std::env::var("REWIND_RETRY_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(RETRY_FOR, Duration::from_secs);
        let direct = direct::Direct::new(&base, &tls);
        Ok(Client {
            base,
            token: std::sync::RwLock::new(token.to_string()),
            http,
            direct,
            retry_for,
            retry_until: None,
            renew: None,
        })
    }

    /// The token calls send now.
    pub fn token(&self) -> String {
        match self.token.read() {
            Ok(t) => t.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// How long retrying may still go on, from a call's start: `retry_for`,
    /// or until `retry_until` when that is set.
    fn retry_window(&self) -> Duration {
        match self.retry_until {
            Some(until) => until
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
            None => self.retry_for,
        }
    }

    /// Run `attempt` until it succeeds, fails for good, or the server has
    /// been unreachable for `retry_for` (or until `retry_until`); waits
    /// double each time (0.25 s up to 8 s). A 401 with a [`Renew`] set gets
    /// a new token and one more attempt.
    pub fn retrying<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut(&reqwest::blocking::Client) -> Result<T, Failure>,
    ) -> Result<T> {
        let started = Instant::now();
        let window = self.retry_window();
        let mut delay = Duration::from_millis(250);
        let mut warned = false;
        let mut renewed = false;
        loop {
            let failure = match attempt(&self.http) {
                Ok(v) => {
                    if warned {
                        eprintln!("rewind: {} is back", self.base);
                    }
                    return Ok(v);
                }
                Err(Failure::Fatal(e))
                    if !renewed
                        && self.renew.is_some()
                        && matches!(api_error(&e), Some(ApiError::Unauthorized(_))) =>
                {
                    renewed = true;
                    let renew = self.renew.as_ref().expect("checked");
                    match renew() {
                        Ok(token) => {
                            eprintln!("rewind: {what}: the token lapsed; renewed it");
                            if let Ok(mut t) = self.token.write() {
                                *t = token;
                            }
                            continue;
                        }
                        Err(r) => {
                            return Err(e.context(format!(
                                "{what} failed, and a new token could not be had: {r:#}"
                            )));
                        }
                    }
                }
                Err(f) => f,
            };
            match failure {
                Failure::Fatal(e) => return Err(e.context(format!("{what} failed"))),
                Failure::Retry(why) => {
                    if started.elapsed() + delay > window {
                        bail!(
                            "{what} failed: {} did not answer for {}s: {why}",
                            self.base,
                            window.as_secs()
                        );
                    }
                    if !warned {
                        eprintln!(
                            "rewind: {what}: {why}; retrying for up to {}s",
                            window.as_secs()
                        );
                        warned = true;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
    }

    fn auth(&self, rb: RequestBuilder) -> RequestBuilder {
        match self.token.read() {
            Ok(t) => rb.bearer_auth(&*t),
            Err(e) => rb.bearer_auth(&*e.into_inner()),
        }
    }

    /// Send a request with an optional JSON body (retrying) and parse the
    /// JSON answer (`null` for 204). A non-2xx answer is an [`ApiError`]
    /// (see [`api_error`]).
    pub fn send<B: serde::Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let url = self.url(path);
        let what = format!("{method} {path}");
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .context("cannot encode the request")?;
        self.retrying(&what, |http| {
            let mut rb = self.auth(http.request(method.clone(), &url));
            if let Some(b) = &body {
                rb = rb
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let resp = accept(rb.send()?, &[])?;
            let bytes: Vec<u8> = if resp.status() == StatusCode::NO_CONTENT {
                b"null".to_vec()
            } else {
                resp.bytes()?.to_vec()
            };
            serde_json::from_slice(&bytes).map_err(|e| {
                Failure::Fatal(anyhow!(
                    "the server's answer is not what {what} answers: {e}"
                ))
            })
        })
    }

    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send::<(), T>(reqwest::Method::GET, path, None)
    }

    pub fn post<B: serde::Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(reqwest::Method::POST, path, Some(body))
    }

    pub fn delete<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send::<(), T>(reqwest::Method::DELETE, path, None)
    }

    /// Any answer as untyped JSON (for tests and tools; the API's calls
    /// are typed, in calls.rs).
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        self.get(path)
    }

    /// The manifest of `host` at a point in time (`latest` or RFC 3339):
    /// (snapshot id, XML).
    pub fn manifest_at(&self, host: &str, at: &str) -> Result<(String, String)> {
        let url = self.url(&format!(
            "/v1/hosts/{host}/manifest?at={}",
            query_escape(at)
        ));
        self.retrying(&format!("manifest of {host} at {at}"), |http| {
            let resp = accept(self.auth(http.get(&url)).send()?, &[])?;
            let id = resp
                .headers()
                .get("x-rewind-snapshot")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            Ok((id, resp.text()?))
        })
    }
}

/// Percent-encode a query value (everything but unreserved characters).
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sort a response: success (2xx or one of `also`), retry (5xx, 429), or
/// fatal: an [`ApiError`] with the server's message.
fn accept(resp: Response, also: &[StatusCode]) -> Result<Response, Failure> {
    let status = resp.status();
    if status.is_success() || also.contains(&status) {
        return Ok(resp);
    }
    let body = resp.text().unwrap_or_default();
    let msg = serde_json::from_str::<crate::api::ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or_else(|_| body.trim().chars().take(500).collect());
    let error = ApiError::from_status(status.as_u16(), msg);
    if error.is_transient() {
        Err(Failure::Retry(error.to_string()))
    } else {
        Err(Failure::Fatal(anyhow::Error::new(error)))
    }
}

/// The server's error answer behind an error of this client, if that is
/// what it is: `matches!(api_error(&e), Some(ApiError::NotFound(_)))`.
pub fn api_error(e: &anyhow::Error) -> Option<&ApiError> {
    e.downcast_ref::<ApiError>()
}

/// Reads of a pack up to this size go through an aligned window.
const SMALL_READ: usize = 128 << 10;
const WINDOW: u64 = 1 << 20;
/// Windows kept (fetched or being fetched).
const WINDOWS_KEPT: usize = 32;

type Window = Arc<std::sync::OnceLock<Result<Arc<Vec<u8>>, String>>>;

/// A response's body, read straight into a buffer of the `want` bytes the
/// headers announced (at most that much is reserved up front: the number
/// comes from the network): `bytes()?.to_vec()` collected the body and then
/// copied it once more.
fn read_body(mut resp: Response, want: u64) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let cap = usize::try_from(want).unwrap_or(usize::MAX).min(64 << 20);
    let mut buf = Vec::with_capacity(cap);
    match resp.read_to_end(&mut buf) {
        Ok(_) => Ok(buf),
        Err(e) => Err(Failure::Retry(format!("reading the body: {e}"))),
    }
}

/// One host's repository on the server.
pub struct HttpBackend {
    pub client: Arc<Client>,
    pub host: String,
    /// Recent windows of packs, oldest first.
    windows: std::sync::Mutex<std::collections::VecDeque<((String, u64), Window)>>,
}

impl HttpBackend {
    pub fn new(client: Arc<Client>, host: &str) -> HttpBackend {
        HttpBackend {
            client,
            host: host.to_string(),
            windows: Default::default(),
        }
    }

    /// Window `k` of a pack (shorter at its end); fetched once, however
    /// many readers want it at the same time.
    fn window(&self, name: &str, k: u64) -> Result<Arc<Vec<u8>>> {
        let cell: Window = {
            let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            let key = (name.to_string(), k);
            match windows.iter().find(|(w, _)| *w == key) {
                Some((_, cell)) => cell.clone(),
                None => {
                    if windows.len() >= WINDOWS_KEPT {
                        windows.pop_front();
                    }
                    let cell = Window::default();
                    windows.push_back((key, cell.clone()));
                    cell
                }
            }
        };
        cell.get_or_init(|| {
            self.fetch_range(name, k * WINDOW, (k + 1) * WINDOW - 1, None)
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
    }

    /// Bytes `first..=last` of a file (`last` clipped to its end by the
    /// server unless `exact` says how many must come).
    fn fetch_range(
        &self,
        name: &str,
        first: u64,
        last: u64,
        exact: Option<usize>,
    ) -> Result<Vec<u8>> {
        let range = format!("bytes={first}-{last}");
        // The fetcher's own connection first (see `direct`); whatever it
        // does not take as a whole goes through reqwest, as every call.
        if let Some(direct) = &self.client.direct
            && let Some(got) = direct.get_range(
                &self.file_path(name),
                &range,
                last - first + 1,
                &self.client.token(),
            )
            && let Some(want) = range_length(&got.content_range)
            && got.body.len() as u64 == want
            && exact.is_none_or(|n| n as u64 == want)
        {
            return Ok(got.body);
        }
        let url = self.file_url(name);
        self.client
            .retrying(&format!("download of {name} at {first}"), |http| {
                let resp = self
                    .client
                    .auth(http.get(&url))
                    .header(reqwest::header::RANGE, &range)
                    .send()?;
                let resp = accept(resp, &[])?;
                if resp.status() != StatusCode::PARTIAL_CONTENT {
                    return Err(Failure::Fatal(anyhow!(
                        "the server ignored the range request"
                    )));
                }
                let want = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(range_length)
                    .ok_or_else(|| Failure::Fatal(anyhow!("the server sent no Content-Range")))?;
                if exact.is_some_and(|n| n as u64 != want) {
                    return Err(Failure::Fatal(anyhow!(
                        "{name} is shorter than the index says"
                    )));
                }
                let bytes = read_body(resp, want)?;
                if bytes.len() as u64 != want {
                    // A connection cut mid-body: try again.
                    return Err(Failure::Retry(format!(
                        "short read: {} of {want} bytes",
                        bytes.len()
                    )));
                }
                Ok(bytes)
            })
    }

    fn file_url(&self, name: &str) -> String {
        self.client.url(&self.file_path(name))
    }

    fn file_path(&self, name: &str) -> String {
        format!("/v1/hosts/{}/files/{name}", self.host)
    }
}

impl Backend for HttpBackend {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let url = self.file_url(name);
        // PUT is idempotent: a pack or snapshot stored by an attempt whose
        // answer was lost is accepted again.
        self.client.retrying(&format!("upload of {name}"), |http| {
            let resp = self
                .client
                .auth(http.put(&url))
                .body(bytes.to_vec())
                .send()?;
            accept(resp, &[]).map(|_| ())
        })
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        let url = self.file_url(name);
        self.client
            .retrying(&format!("download of {name}"), |http| {
                let resp = accept(self.client.auth(http.get(&url)).send()?, &[])?;
                let want = resp.content_length().unwrap_or(0);
                read_body(resp, want)
            })
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        // A small chunk is read with its neighbours: the aligned window of
        // the pack around it, shared by the chunks that follow (packs are
        // written in the order restore reads them).
        let k = offset / WINDOW;
        if len <= SMALL_READ && name.ends_with(".pack") && offset + len as u64 <= (k + 1) * WINDOW {
            let window = self.window(name, k)?;
            let start = (offset - k * WINDOW) as usize;
            return window
                .get(start..start + len)
                .map(<[u8]>::to_vec)
                .with_context(|| {
                    format!(
                        "{name} is shorter than the index says (it ends before byte {})",
                        offset + len as u64
                    )
                });
        }
        self.fetch_range(name, offset, offset + len as u64 - 1, Some(len))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let url = self.client.url(&format!(
            "/v1/hosts/{}/files?prefix={}",
            self.host,
            query_escape(prefix)
        ));
        self.client
            .retrying(&format!("listing of {prefix}"), |http| {
                let resp = accept(self.client.auth(http.get(&url)).send()?, &[])?;
                let bytes = resp.bytes()?;
                serde_json::from_slice(&bytes).map_err(|e| {
                    Failure::Fatal(anyhow!("the server's listing is not a JSON list: {e}"))
                })
            })
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let url = self.file_url(name);
        self.client.retrying(&format!("lookup of {name}"), |http| {
            let resp = accept(
                self.client.auth(http.head(&url)).send()?,
                &[StatusCode::NOT_FOUND],
            )?;
            Ok(resp.status() != StatusCode::NOT_FOUND)
        })
    }

    fn remove(&self, name: &str) -> Result<()> {
        let url = self.file_url(name);
        self.client.retrying(&format!("removal of {name}"), |http| {
            accept(self.client.auth(http.delete(&url)).send()?, &[]).map(|_| ())
        })
    }

    fn describe(&self) -> String {
        format!("{} (host {})", self.client.base, self.host)
    }

    /// The server's order (`GET /v1/hosts/{host}/snapshots`): by its own
    /// commit times, as its `latest`, `at=` and keep-N go.
    fn snapshot_order(&self) -> Result<Option<Vec<crate::repo::backend::OrderedSnapshot>>> {
        let list: Vec<crate::api::SnapshotSummary> = self
            .client
            .get(&format!("/v1/hosts/{}/snapshots", self.host))
            .context("cannot read the server's order of the snapshots")?;
        Ok(Some(
            list.into_iter()
                .map(|s| crate::repo::backend::OrderedSnapshot {
                    id: s.id,
                    committed: s.committed,
                })
                .collect(),
        ))
    }

    fn read_parallelism(&self) -> usize {
        READS_IN_FLIGHT
    }
}

/// How long a body `Content-Range: bytes a-b/size` announces.
fn range_length(content_range: &str) -> Option<u64> {
    let (a, b) = content_range
        .strip_prefix("bytes ")?
        .split('/')
        .next()?
        .split_once('-')?;
    (b.parse::<u64>().ok()? + 1).checked_sub(a.parse::<u64>().ok()?)
}

// ---- TLS ----

fn tls_config(pins: Vec<crate::api::Pin>, ca: Option<&Path>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let mut config = if !pins.is_empty() {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pins, provider }))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = ca {
            use rustls::pki_types::pem::PemObject;
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read {}", ca.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("{} is not PEM", ca.display()))?)
                    .with_context(|| format!("{}: unusable CA certificate", ca.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Trusts a certificate whose public key is one of the pinned ones (or,
/// the old form, whose SHA-256 is). Names and dates are not checked: the
/// key is the identity, as with SSH host keys — which is also why a
/// pinned connection works with a clock that is years off (the recovery
/// image sets its clock from it). The handshake's signature proves the
/// server holds the key's private half.
#[derive(Debug)]
struct Pinned {
    pins: Vec<crate::api::Pin>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pins.iter().any(|p| p.matches(end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        let got = crate::api::Pin::of_public_key(end_entity)
            .map_or_else(|e| format!("unreadable: {e}"), |p| p.to_string());
        let want: Vec<String> = self.pins.iter().map(|p| p.to_string()).collect();
        Err(rustls::Error::General(format!(
            "the server's certificate (public-key pin {got}) is not the pinned one (pinned: {})",
            want.join(", ")
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_normalized() {
        let hex = "ab".repeat(32);
        let colons: Vec<String> = (0..32).map(|_| "AB".to_string()).collect();
        let sha = format!("sha256:{hex}");
        let set = crate::api::parse_pins(&[&hex, &colons.join(":"), &sha]).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].to_string(), hex);
        assert!(crate::api::parse_pins(&["abcd"]).is_err());
        assert!(Client::new("https://x:1", "t", &Trust::pinned(&["abcd"])).is_err());
    }

    #[test]
    fn https_needs_a_pin_or_a_ca() {
        assert!(Client::new("https://x:1", "t", &Trust::default()).is_err());
        assert!(Client::new("ftp://x", "t", &Trust::default()).is_err());
        assert!(Client::new("http://127.0.0.1:1", "t", &Trust::insecure_http()).is_ok());
    }

    #[test]
    fn plain_http_needs_insecure_http_in_so_many_words() {
        let e = Client::new("http://127.0.0.1:1", "t", &Trust::default())
            .err()
            .expect("plain HTTP refused");
        let text = format!("{e:#}");
        assert!(text.contains("--insecure-http"), "{text}");
        assert!(text.contains("https://"), "{text}");
        assert!(text.contains("rewind.insecure=1"), "{text}");
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A server on 127.0.0.1 that answers each connection with the next
    /// status of `answers`, recording the `Authorization` headers it saw.
    fn serve(answers: Vec<u16>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for status in answers {
                let (mut conn, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    if line.to_ascii_lowercase().starts_with("authorization:") {
                        record.lock().unwrap().push(line.trim().to_string());
                    }
                    line.clear();
                }
                let body = if status == 200 {
                    "{\"ok\":1}"
                } else {
                    "{\"error\":\"token lapsed\"}"
                };
                write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        (url, seen)
    }

    /// A claim's lease lapsed during an outage: the first 401 gets a new
    /// token from `renew`, and the call goes on with it.
    #[test]
    fn a_lapsed_token_is_renewed_once() {
        let (url, seen) = serve(vec![401, 200]);
        let mut c = Client::new(&url, "old", &Trust::insecure_http()).unwrap();
        c.renew = Some(Box::new(|| Ok("new".to_string())));
        let v: serde_json::Value = c.get("/v1/x").unwrap();
        assert_eq!(v["ok"], 1);
        assert_eq!(
            *seen.lock().unwrap(),
            ["authorization: Bearer old", "authorization: Bearer new"]
        );
        // Without renew, a 401 is final.
        let (url, _) = serve(vec![401]);
        let c = Client::new(&url, "old", &Trust::insecure_http()).unwrap();
        let e = c.get::<serde_json::Value>("/v1/x").unwrap_err();
        assert!(matches!(api_error(&e), Some(ApiError::Unauthorized(_))));
    }

    /// `retry_until` replaces `retry_for`: a server that is down is waited
    /// for until then.
    #[test]
    fn retry_until_outlasts_retry_for() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = Client::new(
            &format!("http://127.0.0.1:{port}"),
            "t",
            &Trust::insecure_http(),
        )
        .unwrap();
        c.retry_for = Duration::from_millis(100);
        c.retry_until = Some(std::time::SystemTime::now() + Duration::from_secs(2));
        let t = Instant::now();
        assert!(c.get::<serde_json::Value>("/v1/x").is_err());
        assert!(
            t.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
    }
}
