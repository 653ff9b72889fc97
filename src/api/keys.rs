//! Escrowed LUKS keys: the bodies of `/v1/hosts/{host}/keys`. A capture
//! puts a volume's key (its host token may put, never get); a recovery of
//! that host, while its request is armed or running, gets it back (and an
//! admin). Key bytes cross the wire as lowercase hex, inside TLS; the
//! server stores them only wrapped with its master key (docs/server.md,
//! "Escrowed LUKS keys").

use serde::{Deserialize, Serialize};

/// `volume-key`: the LUKS volume key itself (what `cryptsetup open
/// --volume-key-file` takes), read from the open mapping at capture.
pub const KIND_VOLUME_KEY: &str = "volume-key";

/// Most bytes of a key (LUKS volume keys are at most 512 bits; 1024 leaves
/// room for ciphers with an integrity key).
pub const MAX_KEY_BYTES: usize = 128;

/// `PUT /v1/hosts/{host}/keys`: a volume's key, to escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowKey {
    /// The LUKS UUID of the volume.
    pub volume_uuid: String,
    /// Its mapping name (`cryptroot`), for people.
    pub name: String,
    /// [`KIND_VOLUME_KEY`].
    pub kind: String,
    /// The key, lowercase hex.
    pub key: String,
}

/// The answer to `PUT /v1/hosts/{host}/keys`: the id the manifest's
/// `<escrow key-id>` names. Putting a key the server already holds for the
/// volume answers that key's id with `new: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowedKey {
    pub key_id: String,
    pub new: bool,
}

/// An item of `GET /v1/hosts/{host}/keys`: what is escrowed, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub volume_uuid: String,
    pub name: String,
    pub kind: String,
    /// When it was escrowed (RFC 3339).
    pub created: String,
    /// The fingerprint of the master key it is wrapped with (not the key).
    pub master: String,
}

/// `GET /v1/hosts/{host}/keys/{key_id}`: the key, released to a recovery
/// of the host (armed or running) or to an admin; every release is in the
/// audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedKey {
    pub key_id: String,
    pub volume_uuid: String,
    pub kind: String,
    /// The key, lowercase hex.
    pub key: String,
}

/// Whether `id` is a key id the server could have made: `<uuid>-<n>`, of
/// ASCII letters, digits and `-` (it names a file on the server).
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !id.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_name_no_path() {
        assert!(valid_key_id("c0ffee00-1234-4abc-8def-0123456789ab-1"));
        for bad in ["", "../x", "a/b", "-a", "a.b", &"a".repeat(81)] {
            assert!(!valid_key_id(bad), "{bad}");
        }
    }
}
