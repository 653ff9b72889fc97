//! LUKS key escrow: with the operator's consent (`rewind capture
//! --escrow-luks-keys`), each captured LUKS volume's *volume key* is read
//! from its open mapping and escrowed with the recovery server, which
//! keeps it wrapped with a master key held outside its data directory and
//! releases it only to an armed recovery of that host (or an admin). The
//! recovery writes the captured header back and opens the volume with
//! that key: no passphrase, no prompt.
//!
//! Why the volume key rather than a random recovery key enrolled in an
//! extra keyslot (docs/security.md, "Escrowed LUKS keys"):
//! - capture stays read-only on the machine's disks: enrolling a keyslot
//!   writes the header of a live root volume, and a crash there can lose
//!   the volume; the header rewind restores is then byte for byte the one
//!   the machine had, and every passphrase, keyfile and token in it keeps
//!   working;
//! - it opens with `cryptsetup open --volume-key-file`, with no key
//!   derivation: an argon2id keyslot may demand up to 1 GiB of memory,
//!   which the machine running the recovery image may not have;
//! - it also serves a volume whose header was not captured (a manifest
//!   only snapshot): `luksFormat --volume-key-file` makes a header for the
//!   same key, where a recovery keyslot dies with the header;
//! - LUKS1 has 8 keyslots and machines may use them all;
//! - revoking a recovery keyslot (`luksKillSlot`) protects nothing while
//!   the repository keeps older headers that still hold it.
//!
//! The cost: a volume key cannot be rotated without re-encrypting, so a
//! leaked escrowed key exposes the volume (and its old disks) for good;
//! hence the wrapping, the narrow release rules and the audit log.
//!
//! - [`vault`]: the server's master key and the wrapped records;
//! - [`source`]: reading a mapping's volume key at capture, and escrowing
//!   every captured volume's;
//! - [`staging`]: the recovery's key and header files on the image's tmpfs.

pub mod source;
pub mod staging;
pub mod vault;

pub use vault::MasterKey;
