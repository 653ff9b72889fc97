//! The server's catalog: tokens and recovery requests (with their progress),
//! two small JSON files under DIR/catalog written atomically (temporary
//! file, fsync, rename, fsync of the directory). Hosts and snapshots are not
//! in it: they are the per-host repositories themselves, so the catalog can
//! never disagree with the data.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::auth::{Scope, TokenRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for the machine to boot into recovery.
    Armed,
    /// The machine has reported progress.
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RequestState {
    /// Armed or running: its recovery token works, its boot script boots.
    pub fn is_active(self) -> bool {
        matches!(self, RequestState::Armed | RequestState::Running)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub stage: String,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: u64,
    /// Bytes per second since the stage started, computed by the server.
    #[serde(default)]
    pub rate: f64,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub stage_started: String,
    #[serde(default)]
    pub time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub host: String,
    /// As asked: an RFC 3339 time or `latest`.
    pub at: String,
    /// The snapshot it resolved to when it was armed.
    pub snapshot: String,
    pub snapshot_time: String,
    pub state: RequestState,
    pub created: String,
    pub updated: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The final message (error with its stage, or a summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Another host name for the recovered system (recovery to another site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New static addresses, `IFACE:CIDR[:GATEWAY]` (as `rewind.address=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Catalog {
    dir: PathBuf,
    pub tokens: Vec<TokenRecord>,
    pub requests: Vec<Request>,
}

const TOKENS: &str = "tokens.json";
const REQUESTS: &str = "requests.json";

impl Catalog {
    pub fn load(dir: &Path) -> Result<Catalog> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Catalog {
            dir: dir.to_path_buf(),
            tokens: read_json(&dir.join(TOKENS))?,
            requests: read_json(&dir.join(REQUESTS))?,
        })
    }

    pub fn save_tokens(&self) -> Result<()> {
        write_json(&self.dir.join(TOKENS), &self.tokens)
    }

    pub fn save_requests(&self) -> Result<()> {
        write_json(&self.dir.join(REQUESTS), &self.requests)
    }

    pub fn has_admin(&self) -> bool {
        self.tokens.iter().any(|t| t.scope == Scope::Admin)
    }

    /// The request a host has armed or running, if any.
    pub fn active_request(&self, host: &str) -> Option<&Request> {
        self.requests
            .iter()
            .rev()
            .find(|r| r.host == host && r.state.is_active())
    }

    pub fn request_mut(&mut self, id: &str) -> Option<&mut Request> {
        self.requests.iter_mut().find(|r| r.id == id)
    }

    /// Revoke the recovery tokens of a request.
    pub fn revoke_recovery_tokens(&mut self, request: &str) {
        self.tokens
            .retain(|t| !matches!(&t.scope, Scope::Recovery { request: r, .. } if r == request));
    }
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    write_atomic(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Write a file so that a reader (and a crash) sees the old or the whole new
/// content: a temporary file unique to this write, fsync, rename, fsync of
/// the directory. Parents are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
