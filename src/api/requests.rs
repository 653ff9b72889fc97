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
    /// A smaller disk may take the layout shrunk when the data fits (as
    /// `rewind.shrink=1`; docs/layout.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shrink: bool,
    /// Which present disk takes which captured one, `CAPTURED=PRESENT`
    /// (as `rewind.disk=`; [`parse_disk_mapping`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<String>,
    /// Any disk that is not blank may be chosen (as `rewind.overwrite=any`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overwrite: bool,
    /// When an armed request that never started stops being startable
    /// (RFC 3339). Absent on requests armed before expiry existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The machines that may claim it: `uuid=...`, `serial=...`, `mac=...`
    /// (by default the captured machine's identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<String>,
    /// Any machine may claim it (`rewind request --any-machine`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_machine: bool,
    /// The MAC addresses of the captured machine, when no machine was
    /// named: a boot identifies the request by them too (iPXE sends only
    /// the MAC); the claim then checks `machines`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captured_macs: Vec<String>,
    /// The machine that claimed it, and its claim's lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// Claims refused (another machine, an expired request), the last few.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_claims: Vec<RefusedClaim>,
}

impl RecoveryRequest {
    /// Armed and past its expiry: it will never start.
    pub fn expired_at(&self, now: i64) -> bool {
        self.state == RequestState::Armed
            && self
                .expires
                .as_deref()
                .and_then(crate::time::parse_rfc3339)
                .is_some_and(|e| now >= e)
    }

    /// Armed (and not expired) or running: its boot script boots, its
    /// claim and its tokens work.
    pub fn is_live(&self, now: i64) -> bool {
        self.state.is_active() && !self.expired_at(now)
    }

    /// Whether `machine` is one this request names (never by
    /// `any_machine`: a boot identifies only by what was named or
    /// captured), or the machine that claimed it.
    pub fn names_machine(&self, machine: &MachineIdentity) -> bool {
        self.machines.iter().any(|id| machine.matches(id))
            || self.captured_macs.iter().any(|m| machine.macs.contains(m))
            || self
                .claim
                .as_ref()
                .is_some_and(|c| c.machine.same_machine(machine))
    }

    /// Whether `machine` may claim it (before anyone has).
    pub fn allows_machine(&self, machine: &MachineIdentity) -> bool {
        self.any_machine || self.machines.iter().any(|id| machine.matches(id))
    }
}

/// A machine as the recovery image reads it: its SMBIOS identity and the
/// MAC addresses of its network interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Normalized (`52:54:00:12:34:56`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
}

impl MachineIdentity {
    /// From a manifest's DMI and MACs, or what the image reads.
    pub fn new(dmi: Option<&crate::manifest::Dmi>, macs: &[String]) -> MachineIdentity {
        let dmi = dmi.cloned().unwrap_or_default();
        let mut macs: Vec<String> = macs
            .iter()
            .filter_map(|m| crate::util::mac::normalize(m))
            .collect();
        macs.sort();
        macs.dedup();
        MachineIdentity {
            system_uuid: dmi.system_uuid.map(|u| u.to_ascii_lowercase()),
            serial: dmi.serial,
            vendor: dmi.vendor,
            product: dmi.product,
            macs,
        }
    }

    pub fn dmi(&self) -> crate::manifest::Dmi {
        crate::manifest::Dmi {
            system_uuid: self.system_uuid.clone(),
            serial: self.serial.clone(),
            vendor: self.vendor.clone(),
            product: self.product.clone(),
        }
    }

    /// What names this machine for a request: its DMI UUID and serial when
    /// it has them, else its MAC addresses (`uuid=...`, `mac=...`).
    pub fn default_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        if let Some(u) = &self.system_uuid {
            ids.push(format!("uuid={u}"));
        }
        if let Some(s) = &self.serial {
            ids.push(format!("serial={s}"));
        }
        if ids.is_empty() {
            ids.extend(self.macs.iter().map(|m| format!("mac={m}")));
        }
        ids
    }

    /// Whether a `uuid=`/`serial=`/`mac=` id (normalized) names this machine.
    pub fn matches(&self, id: &str) -> bool {
        match id.split_once('=') {
            Some(("uuid", u)) => self
                .system_uuid
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(u)),
            Some(("serial", s)) => self.serial.as_deref() == Some(s),
            Some(("mac", m)) => self.macs.iter().any(|x| x == m),
            _ => false,
        }
    }

    /// The same machine: by DMI when either identifies by it (both must,
    /// and match: the same UUID, else the same serial — a claimant cannot
    /// leave its DMI out and pass on a copied MAC), else by a MAC address
    /// in common.
    pub fn same_machine(&self, other: &MachineIdentity) -> bool {
        let (a, b) = (self.dmi(), other.dmi());
        if a.identifies() || b.identifies() {
            return a.identifies() && b.identifies() && a.same_machine(&b);
        }
        self.macs.iter().any(|m| other.macs.contains(m))
    }

    /// For messages: `uuid 4c4c...; serial X; MACs 52:54:...`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(u) = &self.system_uuid {
            parts.push(format!("uuid {u}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial {s}"));
        }
        if !self.macs.is_empty() {
            parts.push(format!("MACs {}", self.macs.join(",")));
        }
        if parts.is_empty() {
            "a machine without DMI identity or MAC address".into()
        } else {
            parts.join("; ")
        }
    }
}

/// A machine id as `--machine` takes it, normalized: `uuid=` (lowercase
/// GUID), `serial=` (as the firmware reports it), `mac=` (normalized).
pub fn parse_machine_id(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not uuid=UUID, serial=SERIAL or mac=MAC");
    let (kind, value) = s.split_once('=').ok_or_else(bad)?;
    let value = value.trim();
    match kind.trim() {
        "uuid" if crate::manifest::is_guid(&value.to_ascii_lowercase()) => {
            Ok(format!("uuid={}", value.to_ascii_lowercase()))
        }
        "serial" if crate::manifest::is_dmi_text(value) && !value.is_empty() => {
            Ok(format!("serial={value}"))
        }
        "mac" => crate::util::mac::normalize(value)
            .map(|m| format!("mac={m}"))
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// Who claimed a request: the machine, when, and how long its token works
/// without news (renewed by each progress report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub machine: MachineIdentity,
    /// The id of the claim's recovery token (only the latest works).
    pub token: String,
    pub claimed: String,
    /// The last claim or progress report.
    pub renewed: String,
    /// The token stops working then, unless renewed.
    pub lease_until: String,
    /// How many times this machine claimed it (1 + reboots).
    #[serde(default)]
    pub claims: u32,
    /// The present disks this machine's recovery chose, as it recorded
    /// them before writing (`POST /v1/recovery/disks`): after a cut before
    /// its restore started, its next boot may take exactly these again
    /// although they are not blank.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskChoice>,
}

pub use crate::layout::present::DiskChoice;

/// `POST /v1/recovery/disks` (a claim's token): the disks the plan chose,
/// recorded on the claim before the first write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChosenDisks {
    pub disks: Vec<DiskChoice>,
}

/// At most this many disks are recorded on a claim.
pub const MAX_CHOSEN_DISKS: usize = 64;

/// A claim the server refused, kept on the request for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedClaim {
    pub time: String,
    pub machine: MachineIdentity,
    pub reason: String,
}

/// `POST /v1/claim`: claim a request for this machine. With a recovery
/// token the request is the token's; with a boot or admin token it is
/// `request`, or the live request of `host`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub machine: MachineIdentity,
}

/// The answer to a claim: the request and the claim's recovery token
/// (bound to this machine, working for `lease_secs` after each report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claimed {
    pub request: RecoveryRequest,
    pub token: String,
    pub lease_secs: u64,
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
    /// A smaller disk may take the layout shrunk when the data fits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shrink: bool,
    /// `CAPTURED=PRESENT` disk mappings (as `rewind.disk=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<String>,
    /// Any disk that is not blank may be chosen (as `rewind.overwrite=any`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overwrite: bool,
    /// How long it stays startable (`24h` by default; `30m`, `2d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The machines that may claim it (`uuid=`, `serial=`, `mac=`); by
    /// default the captured machine's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<String>,
    /// Any machine may claim it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_machine: bool,
}

/// How long a request stays startable unless `expires` says otherwise.
pub const DEFAULT_REQUEST_EXPIRY: &str = "24h";

/// How long a claim's token works without a progress report.
pub const CLAIM_LEASE_SECS: u64 = 15 * 60;

fn latest() -> String {
    "latest".into()
}

impl Default for NewRequest {
    fn default() -> NewRequest {
        NewRequest {
            at: latest(),
            hostname: None,
            addresses: Vec::new(),
            shrink: false,
            disks: Vec::new(),
            overwrite: false,
            expires: None,
            machines: Vec::new(),
            any_machine: false,
        }
    }
}

/// At most this many disk mappings on a request.
pub const MAX_DISK_MAPPINGS: usize = 64;

/// A disk mapping as `rewind request --disk` and a request take it:
/// `CAPTURED=PRESENT`, the captured disk's name in the manifest (`vda`)
/// and a device path on the recovered machine (`/dev/sdb`,
/// `/dev/disk/by-id/...`), each without spaces or commas, at most 256
/// bytes.
pub fn parse_disk_mapping(s: &str) -> Result<(String, String), String> {
    let bad = |why: &str| format!("{s:?}: {why} (give CAPTURED=PRESENT, e.g. vda=/dev/sdb)");
    let (captured, present) = s.split_once('=').ok_or_else(|| bad("no ="))?;
    let plain = |t: &str| {
        !t.is_empty() && t.len() <= 256 && !t.contains(|c: char| c.is_whitespace() || c == ',')
    };
    if !plain(captured) || captured.contains('/') {
        return Err(bad("not a captured disk's name"));
    }
    if !plain(present) || !present.starts_with("/dev/") || present.contains("/../") {
        return Err(bad("not a device path under /dev/"));
    }
    Ok((captured.to_string(), present.to_string()))
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
