//! Recovery requests: what the server keeps and answers, what an operator
//! and the recovery image send.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stage::Stage;

/// Where a recovery request is. In JSON, lowercase: `"armed"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for the machine to boot into recovery.
    #[default]
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

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Armed => "armed",
            RequestState::Running => "running",
            RequestState::Succeeded => "succeeded",
            RequestState::Failed => "failed",
            RequestState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last progress report of a recovery, as the server keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryProgress {
    /// The recovery's stage.
    pub stage: Stage,
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

/// A recovery request: the catalog's record, and the answer of every
/// request route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRequest {
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
    pub progress: Option<RecoveryProgress>,
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

/// `POST /v1/hosts/{host}/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRequest {
    /// `latest` or an RFC 3339 time.
    #[serde(default = "latest")]
    pub at: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
}

fn latest() -> String {
    "latest".into()
}

impl Default for NewRequest {
    fn default() -> NewRequest {
        NewRequest {
            at: latest(),
            hostname: None,
            addresses: Vec::new(),
        }
    }
}

/// The answer to `POST /v1/hosts/{host}/requests`: the request and its
/// recovery token, shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedRequest {
    pub request: RecoveryRequest,
    pub token: String,
}

/// `GET /v1/identify`: the host owning the MAC addresses, and its armed or
/// running request (`null` when none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identified {
    pub host: String,
    pub request: Option<RecoveryRequest>,
}

/// `POST /v1/recovery/progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// A stage's lowercase name on the wire (`restore`); an unknown name
    /// is refused with 400.
    pub stage: Stage,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: u64,
    /// At most 4096 bytes.
    #[serde(default)]
    pub message: String,
}

/// `POST /v1/recovery/result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultReport {
    pub ok: bool,
    /// The stage that failed (or `finish`).
    pub stage: Stage,
    /// At most 16384 bytes.
    #[serde(default)]
    pub message: String,
}
