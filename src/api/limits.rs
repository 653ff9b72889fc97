//! The sizes the server accepts, per kind of body: a body over its limit is
//! refused (413) while it is read, never buffered whole first. The client
//! stays under them by construction (a pack closes at 16 MiB).

/// A pack: one closes at 16 MiB, plus at most one blob (4 MiB plain,
/// compressed) and its index; well under this.
pub const MAX_PACK: usize = 64 << 20;

/// A pack's index is the pack's own trailer: never longer than the pack.
pub const MAX_INDEX: usize = MAX_PACK;

/// A snapshot's manifest (XML): a machine with thousands of disks,
/// partitions and EFI entries stays under 1 MiB.
pub const MAX_SNAPSHOT: usize = 16 << 20;

/// A repository's config file (one line).
pub const MAX_CONFIG: usize = 4 << 10;

/// Any JSON body (tokens, requests, progress, forget and prune).
pub const MAX_JSON: usize = 64 << 10;

/// Uploads read at once, server-wide: each may hold up to [`MAX_PACK`] in
/// memory while it is checked; more wait their turn.
pub const DEFAULT_MAX_UPLOADS: usize = 4;

/// Connections served at once; the next wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Requests handled at once (past authentication: waiting ones hold no
/// body).
pub const MAX_IN_FLIGHT: usize = 256;

/// Seconds a request body may stall between two reads, and the most a
/// whole request may take (a 64 MiB pack at 128 KiB/s).
pub const BODY_IDLE_SECS: u64 = 30;
pub const REQUEST_SECS: u64 = 600;
