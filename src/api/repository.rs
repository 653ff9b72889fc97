//! Hosts, snapshots, uploads, retention and counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::repo::forget::{Decision, Policy};
use crate::repo::prune::PruneReport;

/// The grace period of a prune when none is given.
pub const DEFAULT_GRACE: &str = "6h";

/// The answer to `PUT /v1/hosts/{host}/files/{name}`: whether the upload
/// stored something new (a pack, a snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub stored: bool,
}

/// An item of `GET /v1/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    pub host: String,
    pub snapshots: usize,
    /// The time of the newest snapshot (`null` without one).
    pub latest: Option<String>,
}

/// An item of `GET /v1/hosts/{host}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub id: String,
    pub host: String,
    pub time: String,
    pub parent: Option<String>,
    /// The filesystems whose data it holds.
    pub filesystems: Vec<FsSummary>,
    /// When the server committed it (RFC 3339, nanoseconds), as it
    /// recorded it; absent for snapshots committed before it kept records,
    /// and in a local repository's listing. The list is in the server's
    /// order: by the snapshot's time, or its commit when that is earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsSummary {
    pub from: String,
    pub entries: u64,
    pub bytes: u64,
}

impl SnapshotSummary {
    pub fn of(m: &crate::manifest::Manifest) -> SnapshotSummary {
        SnapshotSummary {
            id: m.snapshot.id.clone(),
            host: m.snapshot.host.clone(),
            time: m.snapshot.time.to_string(),
            parent: m.snapshot.parent.clone(),
            filesystems: m
                .backed_up()
                .map(|d| FsSummary {
                    from: d.from.clone(),
                    entries: d.entries,
                    bytes: d.bytes,
                })
                .collect(),
            committed: None,
        }
    }
}

/// `POST /v1/forget`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRequest {
    #[serde(default)]
    pub policy: Policy,
    /// One host; `null`: every host.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// Keep every snapshot younger than this many days, whatever the
    /// policy (`rewind forget --min-age DAYS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age_days: Option<u64>,
}

/// The answer to `POST /v1/forget`: each host's decisions, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetAnswer {
    pub hosts: BTreeMap<String, Vec<Decision>>,
}

/// `POST /v1/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneRequest {
    /// `90s`, `30m`, `6h`, `2d`; `null`: [`DEFAULT_GRACE`].
    #[serde(default)]
    pub grace: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to `POST /v1/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PruneAnswer {
    pub hosts: BTreeMap<String, PruneReport>,
}

/// `GET /v1/stats`: counters since the server started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Bytes of pack uploads received (accepted or not).
    pub pack_bytes_received: u64,
    pub packs_received: u64,
    /// Packs that were new (not already stored).
    pub packs_stored: u64,
    /// Bytes of repository files sent.
    pub bytes_sent: u64,
    pub snapshots_committed: u64,
}
