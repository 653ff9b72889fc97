//! The server's side of escrow: the master key (a file outside the data
//! directory, readable only by the server's user) and the escrowed keys
//! wrapped with it, one JSON record each under DATA/keys/HOST/.
//!
//! Wrapping is AES-256-GCM (ring, already the TLS provider: no new crate)
//! under a key derived from the master key for this one purpose, with a
//! random 96-bit nonce per record (a server escrows a few keys per host,
//! far from GCM's 2^32 random-nonce bound). The additional data binds a
//! record to its host, key id, volume and kind, so a record copied into
//! another host's directory, or renamed, does not open. A copy of the data
//! directory alone therefore reveals no key; the master key alone reveals
//! none either. Without the master key the records cannot be opened by
//! anyone, rewind included (docs/security.md, "Losing the master key").

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail, ensure};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::api::{
    ApiError, EscrowKey, EscrowedKey, KIND_VOLUME_KEY, KeyInfo, MAX_KEY_BYTES, ReleasedKey,
    valid_key_id,
};
use crate::util::hex;

const KEY_LEN: usize = 32;

/// The server's master key.
pub struct MasterKey {
    wrapping: LessSafeKey,
    /// What records name it by: derived from it, reveals nothing of it.
    pub fingerprint: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint)
    }
}

impl MasterKey {
    pub fn from_bytes(key: &[u8; KEY_LEN]) -> MasterKey {
        let wrapping = blake3::derive_key("rewind escrow wrapping key v1", key);
        let fp = blake3::derive_key("rewind escrow master key fingerprint v1", key);
        MasterKey {
            // 32 bytes is AES-256's key length: this cannot fail.
            wrapping: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &wrapping).unwrap_or_else(|_| unreachable!()),
            ),
            fingerprint: hex::encode(&fp[..8]),
        }
    }

    /// Read the master key file: 64 hex digits (and a newline). Refused
    /// when group or others may read it, when another user owns it, or
    /// when it is inside `data` (a copy of the data directory must not
    /// carry it). With `create`, a missing file is made (mode 0600, from
    /// the system's random generator); an existing one is never replaced.
    pub fn load(path: &Path, data: &Path, create: bool) -> Result<MasterKey> {
        let abs = |p: &Path| -> PathBuf {
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir().unwrap_or_default().join(p)
            };
            // The key file may not exist yet: its directory decides.
            match (
                p.parent().and_then(|d| d.canonicalize().ok()),
                p.file_name(),
            ) {
                (Some(d), Some(n)) => d.join(n),
                _ => p,
            }
        };
        let data_abs = data.canonicalize().unwrap_or_else(|_| abs(data));
        if abs(path).starts_with(&data_abs) {
            bail!(
                "--key-file {} is inside the data directory {}: keep the master key elsewhere (a copy of the data directory must not carry it), e.g. /etc/rewind/master.key",
                path.display(),
                data.display()
            );
        }
        if create && !path.exists() {
            let mut key = [0u8; KEY_LEN];
            ring::rand::SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create the master key file {}", path.display()))?;
            f.write_all(format!("{}\n", hex::encode(&key)).as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::util::fs::sync_dir(dir)
                    .with_context(|| format!("cannot sync {}", dir.display()))?;
            }
            eprintln!(
                "rewind: created the escrow master key {} (back it up apart from the data directory: without it no escrowed key can be read)",
                path.display()
            );
        }
        let meta = std::fs::metadata(path).with_context(|| {
            format!(
                "cannot read the master key file {} (give --create-key-file to make one)",
                path.display()
            )
        })?;
        ensure!(meta.is_file(), "{} is not a file", path.display());
        // A systemd credential (LoadCredential=) is readable only by the
        // service's user, which systemd may grant by an ACL on a root-owned
        // file: its mode bits then say nothing; its directory is the proof.
        let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
            .is_some_and(|d| !d.is_empty() && path.starts_with(&d));
        let mode = meta.permissions().mode() & 0o777;
        ensure!(
            credential || mode & 0o077 == 0,
            "the master key file {} has mode {mode:04o}: group or others may read it; chmod 600 {} (and keep it outside the data directory)",
            path.display(),
            path.display()
        );
        let me = nix::unistd::geteuid().as_raw();
        ensure!(
            credential || meta.uid() == me,
            "the master key file {} belongs to uid {}, not to the server's user (uid {me}): chown it",
            path.display(),
            meta.uid()
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let bytes = hex::decode(text.trim())
            .filter(|b| b.len() == KEY_LEN)
            .with_context(|| {
                format!(
                    "{} is not a master key (64 hex digits on one line)",
                    path.display()
                )
            })?;
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&bytes);
        Ok(MasterKey::from_bytes(&key))
    }

    fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| ApiError::Internal("the system random generator failed".into()))?;
        let mut buf = plain.to_vec();
        self.wrapping
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| ApiError::Internal("cannot wrap the key".into()))?;
        Ok((nonce.to_vec(), buf))
    }

    fn open(&self, aad: &[u8], nonce: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = self
            .wrapping
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// One escrowed key on disk: everything but the key in the clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    key_id: String,
    host: String,
    volume_uuid: String,
    name: String,
    kind: String,
    created: String,
    /// The fingerprint of the master key it is wrapped with.
    master: String,
    nonce: String,
    /// AES-256-GCM ciphertext and tag, hex.
    sealed: String,
}

impl KeyRecord {
    fn aad(&self) -> Vec<u8> {
        format!(
            "rewind escrow v1\0{}\0{}\0{}\0{}",
            self.host, self.key_id, self.volume_uuid, self.kind
        )
        .into_bytes()
    }

    fn info(&self) -> KeyInfo {
        KeyInfo {
            key_id: self.key_id.clone(),
            volume_uuid: self.volume_uuid.clone(),
            name: self.name.clone(),
            kind: self.kind.clone(),
            created: self.created.clone(),
            master: self.master.clone(),
        }
    }

    /// The key, or why not.
    fn unwrap_with(&self, master: &MasterKey) -> Result<Vec<u8>, ApiError> {
        if self.master != master.fingerprint {
            return Err(ApiError::Conflict(format!(
                "key {} is wrapped with the master key {}, but this server runs with {}: start it with the --key-file it had when the key was escrowed",
                self.key_id, self.master, master.fingerprint
            )));
        }
        let (Some(nonce), Some(sealed)) = (hex::decode(&self.nonce), hex::decode(&self.sealed))
        else {
            return Err(ApiError::Conflict(format!(
                "the record of key {} is damaged",
                self.key_id
            )));
        };
        master.open(&self.aad(), &nonce, &sealed).ok_or_else(|| {
            ApiError::Conflict(format!(
                "key {} does not unwrap: its record was changed or moved from another host",
                self.key_id
            ))
        })
    }
}

/// Where a host's escrowed keys live.
pub fn host_keys_dir(data: &Path, host: &str) -> PathBuf {
    data.join("keys").join(host)
}

/// One escrow at a time per server process (the check for an existing key
/// and the new id are one step).
static PUTTING: Mutex<()> = Mutex::new(());

fn records(data: &Path, host: &str) -> Result<Vec<KeyRecord>, ApiError> {
    let dir = host_keys_dir(data, host);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "cannot read {}: {e}",
                dir.display()
            )));
        }
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).map_err(|err| {
            ApiError::Internal(format!("cannot read {}: {err}", e.path().display()))
        })?;
        let r: KeyRecord = serde_json::from_str(&text).map_err(|err| {
            ApiError::Internal(format!("{} is damaged: {err}", e.path().display()))
        })?;
        out.push(r);
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.key_id.cmp(&b.key_id)));
    Ok(out)
}

/// Escrow a key for `host`: a new record, or the id of the record that
/// already holds this key for this volume.
pub fn put(
    data: &Path,
    master: &MasterKey,
    host: &str,
    req: &EscrowKey,
) -> Result<EscrowedKey, ApiError> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    if req.kind != KIND_VOLUME_KEY {
        return bad(format!(
            "unknown key kind {:?} (this server escrows {KIND_VOLUME_KEY})",
            req.kind
        ));
    }
    if req.volume_uuid.parse::<crate::manifest::Guid>().is_err() {
        return bad(format!("{:?} is not a LUKS UUID", req.volume_uuid));
    }
    if req.name.len() > 128 || req.name.contains(['\0', '\n']) {
        return bad("the mapping name is over 128 bytes or holds a control character".into());
    }
    let key = match hex::decode(&req.key) {
        Some(k) if (16..=MAX_KEY_BYTES).contains(&k.len()) => k,
        _ => {
            return bad(format!("the key is not 16 to {MAX_KEY_BYTES} bytes of hex"));
        }
    };
    let uuid = req.volume_uuid.to_ascii_lowercase();
    let _one = PUTTING.lock().unwrap_or_else(|e| e.into_inner());
    let existing: Vec<KeyRecord> = records(data, host)?
        .into_iter()
        .filter(|r| r.volume_uuid == uuid)
        .collect();
    for r in &existing {
        if r.kind == req.kind
            && r.master == master.fingerprint
            && r.unwrap_with(master).is_ok_and(|k| k == key)
        {
            return Ok(EscrowedKey {
                key_id: r.key_id.clone(),
                new: false,
            });
        }
    }
    let n = existing
        .iter()
        .filter_map(|r| r.key_id.rsplit('-').next()?.parse::<u32>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let mut rec = KeyRecord {
        key_id: format!("{uuid}-{n}"),
        host: host.to_string(),
        volume_uuid: uuid,
        name: req.name.clone(),
        kind: req.kind.clone(),
        created: crate::time::now_utc(),
        master: master.fingerprint.clone(),
        nonce: String::new(),
        sealed: String::new(),
    };
    let (nonce, sealed) = master.seal(&rec.aad(), &key)?;
    rec.nonce = hex::encode(&nonce);
    rec.sealed = hex::encode(&sealed);
    let dir = host_keys_dir(data, host);
    let path = dir.join(format!("{}.json", rec.key_id));
    let text = serde_json::to_vec_pretty(&rec)
        .map_err(|e| ApiError::Internal(format!("cannot encode the key record: {e}")))?;
    crate::util::fs::write_atomic_with(&path, |f| f.write_all(&text))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(EscrowedKey {
        key_id: rec.key_id,
        new: true,
    })
}

/// What is escrowed for `host`, oldest first (no key).
pub fn list(data: &Path, host: &str) -> Result<Vec<KeyInfo>, ApiError> {
    Ok(records(data, host)?.iter().map(KeyRecord::info).collect())
}

/// The key `key_id` of `host`, unwrapped. The caller has checked that it
/// may be released.
pub fn release(
    data: &Path,
    master: &MasterKey,
    host: &str,
    key_id: &str,
) -> Result<ReleasedKey, ApiError> {
    if !valid_key_id(key_id) {
        return Err(ApiError::BadRequest(format!("{key_id:?} is not a key id")));
    }
    let path = host_keys_dir(data, host).join(format!("{key_id}.json"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NotFound(format!(
                "host {host} has no escrowed key {key_id}"
            )));
        }
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let rec: KeyRecord = serde_json::from_str(&text)
        .map_err(|e| ApiError::Conflict(format!("{} is damaged: {e}", path.display())))?;
    if rec.host != host || rec.key_id != key_id {
        return Err(ApiError::Conflict(format!(
            "{} names key {} of host {}: it was moved; it is not released",
            path.display(),
            rec.key_id,
            rec.host
        )));
    }
    let key = rec.unwrap_with(master)?;
    Ok(ReleasedKey {
        key_id: rec.key_id,
        volume_uuid: rec.volume_uuid,
        kind: rec.kind,
        key: hex::encode(&key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &[u8]) -> EscrowKey {
        EscrowKey {
            volume_uuid: "c0ffee00-1234-4abc-8def-0123456789ab".into(),
            name: "cryptroot".into(),
            kind: KIND_VOLUME_KEY.into(),
            key: hex::encode(key),
        }
    }

    #[test]
    fn keys_are_wrapped_deduplicated_and_bound_to_their_host() {
        let dir = tempfile::tempdir().unwrap();
        let m = MasterKey::from_bytes(&[7u8; 32]);
        let key = [0xa5u8; 64];
        let a = put(dir.path(), &m, "web1", &req(&key)).unwrap();
        assert!(a.new);
        assert_eq!(a.key_id, "c0ffee00-1234-4abc-8def-0123456789ab-1");
        let again = put(dir.path(), &m, "web1", &req(&key)).unwrap();
        assert_eq!(
            (again.key_id.as_str(), again.new),
            (a.key_id.as_str(), false)
        );
        let other = put(dir.path(), &m, "web1", &req(&[0x5a; 64])).unwrap();
        assert!(other.key_id.ends_with("-2") && other.new);
        let got = release(dir.path(), &m, "web1", &a.key_id).unwrap();
        assert_eq!(got.key, hex::encode(&key));
        assert_eq!(list(dir.path(), "web1").unwrap().len(), 2);
        // The record names no key bytes.
        let text = std::fs::read_to_string(
            host_keys_dir(dir.path(), "web1").join(format!("{}.json", a.key_id)),
        )
        .unwrap();
        assert!(!text.contains(&hex::encode(&key)[..32]), "{text}");
        // Moved into another host's directory: it does not open.
        let moved = host_keys_dir(dir.path(), "web2");
        std::fs::create_dir_all(&moved).unwrap();
        let mut rec: KeyRecord = serde_json::from_str(&text).unwrap();
        rec.host = "web2".into();
        std::fs::write(
            moved.join(format!("{}.json", a.key_id)),
            serde_json::to_string(&rec).unwrap(),
        )
        .unwrap();
        let e = release(dir.path(), &m, "web2", &a.key_id).unwrap_err();
        assert!(e.message().contains("does not unwrap"), "{e:?}");
        // Another master key: named, not released.
        let e = release(
            dir.path(),
            &MasterKey::from_bytes(&[8u8; 32]),
            "web1",
            &a.key_id,
        )
        .unwrap_err();
        assert!(e.message().contains("--key-file it had"), "{e:?}");
        assert!(matches!(
            release(dir.path(), &m, "web1", "../x"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            put(
                dir.path(),
                &m,
                "web1",
                &EscrowKey {
                    key: "zz".into(),
                    ..req(&key)
                }
            ),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn the_master_key_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let path = dir.path().join("master.key");
        let e = MasterKey::load(&path, &data, false).unwrap_err();
        assert!(format!("{e:#}").contains("--create-key-file"), "{e:#}");
        let made = MasterKey::load(&path, &data, true).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = MasterKey::load(&path, &data, true).unwrap();
        assert_eq!(made.fingerprint, again.fingerprint, "never replaced");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = MasterKey::load(&path, &data, false).unwrap_err();
        assert!(format!("{e:#}").contains("chmod 600"), "{e:#}");
        let inside = data.join("master.key");
        let e = MasterKey::load(&inside, &data, true).unwrap_err();
        assert!(
            format!("{e:#}").contains("inside the data directory"),
            "{e:#}"
        );
        assert!(!inside.exists());
    }
}
