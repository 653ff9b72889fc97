//! Operations: what a capture reports to the server, each host's health
//! ("recoverable now, and why not"), the server's verification of what it
//! stores, and the audit log. `rewind status --check`, `/metrics` and
//! dashboards read these; their JSON is a stable interface (docs/api.md).

use serde::{Deserialize, Serialize};

/// The default age limit of a host's last good capture: a daily capture
/// may be two hours late before it warns; twice that is critical.
pub const DEFAULT_MAX_AGE: &str = "26h";

/// How a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureOutcome {
    /// Committed, nothing skipped.
    Success,
    /// Committed, with warnings: something was skipped or cannot be
    /// recreated (a volume, unreadable files, an LVM or LUKS device).
    Partial,
    /// Nothing committed.
    Failed,
}

impl CaptureOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureOutcome::Success => "success",
            CaptureOutcome::Partial => "partial",
            CaptureOutcome::Failed => "failed",
        }
    }
}

/// `POST /v1/hosts/{host}/captures`: sent by `rewind capture --server`
/// after its commit, and also when it fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureReport {
    pub outcome: CaptureOutcome,
    /// The snapshot committed (`null` when the capture failed).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// When the capture started (RFC 3339, UTC).
    pub started: String,
    pub duration_secs: f64,
    /// Bytes of file content the snapshot holds.
    #[serde(default)]
    pub bytes: u64,
    /// Bytes newly stored on the server (compressed, deduplicated).
    #[serde(default)]
    pub bytes_stored: u64,
    /// What was skipped or cannot be recreated, one line each.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Why a failed capture failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// A capture report as the server keeps it: with the time it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedCapture {
    pub received: String,
    #[serde(flatten)]
    pub report: CaptureReport,
}

/// The result of reading back every pack of a host and checking every hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResult {
    pub host: String,
    /// When the verification finished.
    pub time: String,
    pub packs: usize,
    pub chunks: usize,
    pub snapshots: usize,
    /// Damaged packs and chunks, one line each, naming the pack.
    pub damage: Vec<String>,
    /// Files (`SNAPSHOT: /path`) the damage affects.
    pub affected: Vec<String>,
    /// Why the verification could not run (an unreadable repository).
    #[serde(default)]
    pub error: Option<String>,
}

impl VerifyResult {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.affected.is_empty() && self.error.is_none()
    }
}

/// `POST /v1/verify`: verify one host now, or every host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    #[serde(default)]
    pub host: Option<String>,
}

/// How bad a problem is, as monitoring plugins count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The host is recoverable, but look (a failed capture, an old one).
    Warning,
    /// The host is not recoverable now.
    Critical,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub severity: Severity,
    pub message: String,
}

/// An item of `GET /v1/health`, and `GET /v1/hosts/{host}/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostHealth {
    pub host: String,
    /// No critical problem: a good snapshot, recent enough, verified.
    pub recoverable: bool,
    /// Why not (critical), and what to look at (warning).
    pub problems: Vec<Problem>,
    pub snapshots: usize,
    /// The newest snapshot no report marks partial (RFC 3339).
    pub last_good: Option<String>,
    /// Its age in seconds.
    pub last_good_age_secs: Option<u64>,
    /// The last capture report received.
    pub last_capture: Option<ReceivedCapture>,
    /// The last server-side verification.
    pub last_verify: Option<VerifyResult>,
}

impl HostHealth {
    /// The worst problem's severity (`None`: all is well).
    pub fn severity(&self) -> Option<Severity> {
        self.problems.iter().map(|p| p.severity).max()
    }
}

/// What an audit event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    TokenCreated,
    TokenRevoked,
    RequestArmed,
    /// A machine claimed a recovery request (or renewed its claim).
    RequestClaimed,
    /// A claim was refused: another machine, an expired or finished request.
    ClaimRefused,
    RequestCancelled,
    RequestFinished,
    /// An escrowed key was released to a recovery (recorded once keys exist).
    KeyReleased,
    Forget,
    Prune,
    Verify,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::TokenCreated => "token_created",
            AuditAction::TokenRevoked => "token_revoked",
            AuditAction::RequestArmed => "request_armed",
            AuditAction::RequestClaimed => "request_claimed",
            AuditAction::ClaimRefused => "claim_refused",
            AuditAction::RequestCancelled => "request_cancelled",
            AuditAction::RequestFinished => "request_finished",
            AuditAction::KeyReleased => "key_released",
            AuditAction::Forget => "forget",
            AuditAction::Prune => "prune",
            AuditAction::Verify => "verify",
        }
    }
}

/// A line of the audit log; `GET /v1/audit` answers a list of them, oldest
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time: String,
    pub action: AuditAction,
    /// The id of the token that acted (`server` for the server's own work).
    pub actor: String,
    /// What it acted on: a token id, a request id, a host (`*`: all hosts).
    pub target: String,
    #[serde(default)]
    pub detail: String,
}

/// An age for people: `3d 2h`, `5h 3m`, `42m`, `12s`.
pub fn human_age(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}
