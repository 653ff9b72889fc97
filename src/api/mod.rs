//! The recovery server's HTTP contract (docs/api.md) as types: every JSON
//! body the server answers or accepts is a struct or an enum here, with
//! serde on both sides, so that the server, the client, the recovery image
//! (and later a dashboard) cannot disagree about a field's name or type: a
//! renamed field fails to compile or to parse instead of silently becoming
//! zero. The JSON is the one the untyped code spoke (golden fixtures in
//! tests/fixtures/api/ keep it so).
//!
//! This module knows nothing of HTTP libraries: the server turns
//! [`ApiError`] into a response, the client turns a response into one.

mod error;
mod keys;
pub mod limits;
mod ops;
mod pin;
mod repository;
mod requests;
mod tokens;
mod version;

pub use error::{ApiError, ErrorBody};
pub use keys::{
    EscrowKey, EscrowedKey, KIND_VOLUME_KEY, KeyInfo, MAX_KEY_BYTES, ReleasedKey, valid_key_id,
};
pub use ops::{
    AuditAction, AuditEvent, CaptureOutcome, CaptureReport, DEFAULT_MAX_AGE, HostHealth, Problem,
    ReceivedCapture, Severity, VerifyRequest, VerifyResult, human_age,
};
pub use pin::{Pin, parse_pins};
pub use repository::{
    DEFAULT_GRACE, ForgetAnswer, ForgetRequest, FsSummary, HostSummary, PruneAnswer, PruneRequest,
    SnapshotSummary, Stats, Stored,
};
pub use requests::{
    CLAIM_LEASE_SECS, ChosenDisks, Claim, ClaimRequest, Claimed, CreatedRequest,
    DEFAULT_REQUEST_EXPIRY, DiskChoice, Identified, MAX_CHOSEN_DISKS, MAX_DISK_MAPPINGS,
    MachineIdentity, NewRequest, ProgressReport, RecoveryProgress, RecoveryRequest, RefusedClaim,
    RequestState, ResultReport, parse_disk_mapping, parse_machine_id,
};
pub use tokens::{CreatedToken, NewToken, Scope, TokenInfo, TokenKind, WhoAmI};
pub use version::{API_VERSION, REPOSITORY_FORMAT, Versions};

/// SHA-256 of a certificate's DER bytes, lowercase hex: the old pin form
/// ([`Pin::Certificate`]); clients now pin the public key ([`Pin`]).
pub fn fingerprint(cert: &rustls::pki_types::CertificateDer<'_>) -> String {
    crate::util::hex::encode(ring::digest::digest(&ring::digest::SHA256, cert.as_ref()).as_ref())
}
