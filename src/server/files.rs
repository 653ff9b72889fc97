//! A host's repository on the server: DIR/hosts/<host>/ is an ordinary
//! rewind repository (docs/repository.md). What may be written into it is
//! checked here: a pack must be named by the BLAKE3 of its bytes and carry a
//! sound index; an index must be the one its pack ends with; a snapshot must
//! be a valid manifest of that host whose every tree and chunk is stored.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::api::ApiError;
use crate::manifest::{self, Manifest};
use crate::repo::pack;
use crate::repo::{CONFIG_TEXT, Repo};
use crate::tree::{ChunkId, Kind};

use crate::util::fs::write_atomic;

/// A refusal, with the HTTP status it answers.
fn refused(status: u16, message: impl Into<String>) -> ApiError {
    ApiError::from_status(status, message)
}

/// Host names: what a hostname may be, and a directory name that is safe.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 64
        && !host.starts_with(['.', '-'])
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

pub fn host_dir(data: &Path, host: &str) -> PathBuf {
    data.join("hosts").join(host)
}

/// The files a repository has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoFile {
    Config,
    Pack(String),
    Index(String),
    Snapshot(String),
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn valid_snapshot_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b':'))
}

/// Parse a repository file name; anything else (`..`, other directories)
/// is refused, so a name can never leave the host's directory.
pub fn parse_name(name: &str) -> Option<RepoFile> {
    if name == "config" {
        return Some(RepoFile::Config);
    }
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["packs", aa, file] => {
            let p = file.strip_suffix(".pack")?;
            (is_hex64(p) && &p[..2] == *aa).then(|| RepoFile::Pack(p.to_string()))
        }
        ["index", file] => {
            let p = file.strip_suffix(".idx")?;
            is_hex64(p).then(|| RepoFile::Index(p.to_string()))
        }
        ["snapshots", file] => {
            let id = file.strip_suffix(".xml")?;
            valid_snapshot_id(id).then(|| RepoFile::Snapshot(id.to_string()))
        }
        _ => None,
    }
}

/// A listing prefix: one of the repository's directories, or nothing.
pub fn valid_prefix(prefix: &str) -> bool {
    matches!(prefix, "" | "packs/" | "index/" | "snapshots/")
        || (prefix.len() == 9
            && prefix.starts_with("packs/")
            && prefix.ends_with('/')
            && prefix[6..8].bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Check a pack's bytes against its name; returns its index bytes.
pub fn verify_pack(name: &str, bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    let bad = |why: &str| refused(400, format!("pack {name} refused: {why}"));
    if crate::util::hex::encode(blake3::hash(bytes).as_bytes()) != name {
        return Err(bad("its BLAKE3 is not its name (damaged in transit?)"));
    }
    if bytes.len() < 20 || &bytes[..8] != pack::PACK_MAGIC {
        return Err(bad("not a rewind pack"));
    }
    let (body_end, index) = pack::split_pack(bytes).map_err(|e| bad(&format!("{e:#}")))?;
    let entries = pack::decode_index(index).map_err(|e| bad(&format!("{e:#}")))?;
    pack::check_entries(&entries, body_end).map_err(|e| bad(&format!("{e:#}")))?;
    Ok(index.to_vec())
}

/// Store a pack (and its index). Idempotent: a pack already stored is
/// left as it is. Returns whether it was new.
pub fn put_pack(dir: &Path, name: &str, bytes: &[u8]) -> Result<bool, ApiError> {
    let index = verify_pack(name, bytes)?;
    let path = dir.join(format!("packs/{}/{name}.pack", &name[..2]));
    let idx = dir.join(format!("index/{name}.idx"));
    if path.exists() {
        if !idx.exists() {
            write_atomic(&idx, &index)?;
        }
        return Ok(false);
    }
    write_atomic(&path, bytes)?;
    write_atomic(&idx, &index)?;
    Ok(true)
}

/// An index is accepted when it is exactly the trailer of its stored pack.
pub fn put_index(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ApiError> {
    let pack_path = dir.join(format!("packs/{}/{name}.pack", &name[..2]));
    let pack_bytes = std::fs::read(&pack_path)
        .map_err(|_| refused(409, format!("index {name} refused: upload its pack first")))?;
    let (_, stored_index) = pack::split_pack(&pack_bytes)
        .map_err(|e| refused(500, format!("stored pack {name} is damaged: {e:#}")))?;
    if stored_index != bytes {
        return Err(refused(
            400,
            format!("index {name} refused: it is not the index its pack ends with"),
        ));
    }
    let idx = dir.join(format!("index/{name}.idx"));
    if !idx.exists() {
        write_atomic(&idx, bytes)?;
    }
    Ok(())
}

pub fn put_config(dir: &Path, bytes: &[u8]) -> Result<(), ApiError> {
    if bytes != CONFIG_TEXT.as_bytes() {
        return Err(refused(400, "unsupported repository version"));
    }
    let path = dir.join("config");
    if !path.exists() {
        write_atomic(&path, bytes)?;
    }
    Ok(())
}

/// Write the index of every pack that lacks one (the server stopped between
/// a pack and its index), so that no client, read-only ones included, has to.
/// Returns how many were written; damaged packs are reported, not indexed.
pub fn repair_indexes(dir: &Path) -> std::io::Result<usize> {
    let mut written = 0;
    let Ok(rd) = std::fs::read_dir(dir.join("packs")) else {
        return Ok(0);
    };
    for sub in rd.flatten() {
        // A stray file under packs/ is not a reason to refuse to start.
        let Ok(packs) = std::fs::read_dir(sub.path()) else {
            continue;
        };
        for e in packs.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".pack").filter(|n| is_hex64(n)) else {
                continue;
            };
            let idx = dir.join(format!("index/{name}.idx"));
            if idx.exists() {
                continue;
            }
            match verify_pack(name, &std::fs::read(e.path())?) {
                Ok(index) => {
                    write_atomic(&idx, &index)?;
                    written += 1;
                }
                Err(r) => log_line!("rewind: warning: {}: {}", e.path().display(), r.message()),
            }
        }
    }
    Ok(written)
}

/// Create a host's repository if it does not exist.
pub fn ensure_repo(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("config");
    if !path.exists() {
        write_atomic(&path, CONFIG_TEXT.as_bytes())?;
    }
    Ok(())
}

/// A snapshot upload, parsed and checked against its name and host.
pub enum Incoming {
    /// Not committed yet.
    New(Manifest),
    /// The same bytes are already committed (a retry): nothing to do.
    Again(SnapshotFile),
}

/// Parse and validate a snapshot upload: it must be a valid manifest of
/// `host` whose id is its name. Committing the same bytes again is a no-op
/// ([`Incoming::Again`]); other bytes under a committed name are refused.
pub fn check_snapshot(
    dir: &Path,
    host: &str,
    id: &str,
    bytes: &[u8],
) -> Result<Incoming, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| refused(400, format!("snapshot {id} refused: not UTF-8")))?;
    let m = manifest::from_xml(text)
        .map_err(|e| refused(400, format!("snapshot {id} refused: {e}")))?;
    if m.snapshot.id != id {
        return Err(refused(
            400,
            format!(
                "snapshot {id} refused: the manifest's id is {}",
                m.snapshot.id
            ),
        ));
    }
    if m.snapshot.host != host {
        return Err(refused(
            400,
            format!(
                "snapshot {id} refused: it is a snapshot of {}, not of {host}",
                m.snapshot.host
            ),
        ));
    }
    let path = dir.join(format!("snapshots/{id}.xml"));
    if let Ok(existing) = std::fs::read(&path) {
        return if existing == bytes {
            Ok(Incoming::Again(SnapshotFile {
                committed: read_commit(dir, id),
                manifest: m,
            }))
        } else {
            Err(refused(
                409,
                format!("snapshot {id} exists with other content"),
            ))
        };
    }
    Ok(Incoming::New(m))
}

/// Commit a checked snapshot: everything it references must be stored;
/// its commit time (`committed`, nanoseconds since the epoch, the
/// server's clock) is recorded first, then its manifest is written.
pub fn write_snapshot(
    dir: &Path,
    m: Manifest,
    bytes: &[u8],
    committed: i128,
) -> Result<SnapshotFile, ApiError> {
    let repo = Repo::open(dir).map_err(|e| refused(500, format!("{e:#}")))?;
    check_references(&repo, &m)?;
    let id = &m.snapshot.id;
    // The record before the manifest: a crash between them leaves a
    // record without snapshot (rewritten by the retry), never a snapshot
    // whose commit time is lost.
    write_atomic(
        &commit_path(dir, id),
        format!("{}\n", format_nanos(committed)).as_bytes(),
    )?;
    write_atomic(&dir.join(format!("snapshots/{id}.xml")), bytes)?;
    Ok(SnapshotFile {
        manifest: m,
        committed: Some(committed),
    })
}

/// Every tree of the snapshot reads, and every chunk its files name is
/// stored.
fn check_references(repo: &Repo, m: &Manifest) -> Result<(), ApiError> {
    let missing = |what: String| {
        refused(
            409,
            format!(
                "snapshot {} refused: {what} is not stored (a prune removed it while the capture ran? run the capture again)",
                m.snapshot.id
            ),
        )
    };
    let mut seen: HashSet<ChunkId> = HashSet::new();
    // Filesystems' data and raw regions alike.
    for (from, tree_hex) in m.trees() {
        let tree = ChunkId::from_hex(tree_hex)
            .ok_or_else(|| refused(400, format!("malformed tree id {tree_hex}")))?;
        if repo.location(&tree).is_none() {
            return Err(missing(format!("the tree of {from}")));
        }
        let entries = repo
            .tree_entries(&tree)
            .map_err(|e| missing(format!("the tree of {from} ({e:#})")))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| missing(format!("a piece of the tree of {from} ({e:#})")))?;
            if entry.kind != Kind::File {
                continue;
            }
            for c in &entry.chunks {
                if seen.insert(c.id) && repo.location(&c.id).is_none() {
                    return Err(missing(format!(
                        "chunk {} of {}",
                        &c.id.to_hex()[..16],
                        crate::repo::check::join_path(&from, &entry.path)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Where the server records a snapshot's commit time: beside the
/// repository (`DIR/hosts/HOST/commits/ID`), outside what clients list.
pub fn commit_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("commits").join(id)
}

/// Nanoseconds since the epoch as RFC 3339 with nine fractional digits.
pub fn format_nanos(nanos: i128) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let whole = crate::time::format_utc(i64::try_from(secs).unwrap_or(i64::MAX));
    format!("{}.{frac:09}Z", whole.trim_end_matches('Z'))
}

/// [`format_nanos`] read back (any RFC 3339 time; a fraction of up to nine
/// digits is kept).
pub fn parse_nanos(text: &str) -> Option<i128> {
    let text = text.trim();
    let secs = crate::time::parse_rfc3339(text)?;
    let frac = text
        .get(19..)
        .and_then(|r| r.strip_prefix('.'))
        .map(|f| {
            f.bytes()
                .take_while(u8::is_ascii_digit)
                .take(9)
                .collect::<Vec<u8>>()
        })
        .unwrap_or_default();
    let mut nanos: i128 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| i128::from(d - b'0'));
    }
    Some(i128::from(secs) * 1_000_000_000 + nanos)
}

/// The server's record of when it committed snapshot `id`, if it has one
/// (snapshots committed before it kept records have none).
pub fn read_commit(dir: &Path, id: &str) -> Option<i128> {
    parse_nanos(&std::fs::read_to_string(commit_path(dir, id)).ok()?)
}

/// Remove the commit record of a snapshot that was removed.
pub fn remove_commit(dir: &Path, id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(commit_path(dir, id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A committed snapshot and the server's record of its commit.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub manifest: Manifest,
    /// Nanoseconds since the epoch, the server's clock; `None` for a
    /// snapshot committed before the server recorded commit times.
    pub committed: Option<i128>,
}

impl SnapshotFile {
    /// The commit time, or the snapshot's own time without a record.
    pub fn committed_nanos(&self) -> i128 {
        self.committed
            .unwrap_or_else(|| i128::from(self.manifest.snapshot.time.unix()) * 1_000_000_000)
    }

    /// The time selection and retention go by, seconds: the snapshot's
    /// own time, unless the server committed it earlier than that (a
    /// host's clock ahead, or a host dating its snapshot into the future
    /// to win `latest`): then the commit time. An honest capture's time is
    /// its start, before its commit, so `--at` keeps meaning "taken at or
    /// before", and no snapshot can stand later than its commit.
    pub fn effective_secs(&self) -> i64 {
        let own = self.manifest.snapshot.time.unix();
        match self.committed {
            Some(c) => own.min(i64::try_from(c.div_euclid(1_000_000_000)).unwrap_or(i64::MAX)),
            None => own,
        }
    }

    /// The order of a host's history: the effective time, then the commit
    /// (two snapshots in one second), then the id.
    pub fn order(&self) -> (i64, i128) {
        (self.effective_secs(), self.committed_nanos())
    }
}

/// A host's snapshots, oldest first (by [`SnapshotFile::order`]), with
/// their commit records, read straight from its directory.
pub fn snapshot_files(dir: &Path) -> std::io::Result<Vec<SnapshotFile>> {
    let mut out = Vec::new();
    let sdir = dir.join("snapshots");
    let rd = match std::fs::read_dir(&sdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".xml") {
            continue;
        }
        let text = std::fs::read_to_string(sdir.join(&name))?;
        match manifest::from_xml(&text) {
            Ok(m) => out.push(SnapshotFile {
                committed: read_commit(dir, &m.snapshot.id),
                manifest: m,
            }),
            Err(e) => log_line!("rewind: warning: {}: {e}", sdir.join(&name).display()),
        }
    }
    out.sort_by(|a, b| {
        (a.order(), &a.manifest.snapshot.id).cmp(&(b.order(), &b.manifest.snapshot.id))
    });
    Ok(out)
}

/// A host's snapshots, oldest first (see [`snapshot_files`]).
pub fn snapshots(dir: &Path) -> std::io::Result<Vec<Manifest>> {
    Ok(snapshot_files(dir)?
        .into_iter()
        .map(|f| f.manifest)
        .collect())
}

/// `at=`: the newest snapshot taken at or before `at`, or the newest of
/// all when `at` is `None` (`latest`). `snaps` are (key, id) in any order,
/// the key a time (seconds) or anything ordered like one; returns an index
/// into it.
pub fn select_at<K: Ord + Copy>(snaps: &[(K, &str)], at: Option<K>) -> Option<usize> {
    snaps
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| at.is_none_or(|at| *t <= at))
        .max_by(|(_, a), (_, b)| a.cmp(b))
        .map(|(i, _)| i)
}

/// Parse an `at=` value: `latest` or an RFC 3339 time. `Err` names the problem.
pub fn parse_at(at: &str) -> Result<Option<i64>, ApiError> {
    if at == "latest" {
        return Ok(None);
    }
    crate::time::parse_rfc3339(at).map(Some).ok_or_else(|| {
        refused(
            400,
            format!("at={at:?}: give `latest` or an RFC 3339 time (2026-11-25T06:00:00Z)"),
        )
    })
}

/// The snapshot of a host at a point in time, by [`SnapshotFile::order`]:
/// `latest` is the last committed; `at` the newest whose effective time is
/// not after it.
pub fn snapshot_at(dir: &Path, at: &str) -> Result<Manifest, ApiError> {
    let at_secs = parse_at(at)?;
    let all = snapshot_files(dir)?;
    let keyed: Vec<((i64, i128), &str)> = all
        .iter()
        .map(|f| (f.order(), f.manifest.snapshot.id.as_str()))
        .collect();
    match select_at(&keyed, at_secs.map(|t| (t, i128::MAX))) {
        Some(i) => Ok(all[i].manifest.clone()),
        None if all.is_empty() => Err(refused(404, "this host has no snapshot yet")),
        None => Err(refused(
            404,
            format!(
                "no snapshot taken at or before {at} (the oldest is from {})",
                all[0].manifest.snapshot.time
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_repository() {
        let h = "ab".to_string() + &"0".repeat(62);
        assert_eq!(
            parse_name(&format!("packs/ab/{h}.pack")),
            Some(RepoFile::Pack(h.clone()))
        );
        assert_eq!(parse_name(&format!("packs/cd/{h}.pack")), None);
        assert_eq!(
            parse_name(&format!("index/{h}.idx")),
            Some(RepoFile::Index(h.clone()))
        );
        assert_eq!(
            parse_name("snapshots/20261125T060000Z-web1.xml"),
            Some(RepoFile::Snapshot("20261125T060000Z-web1".into()))
        );
        for bad in [
            "../config",
            "snapshots/../x.xml",
            "snapshots/.x.xml",
            "snapshots/a/b.xml",
            "/etc/passwd",
            "packs/ab/../../x.pack",
            "index/ABC.idx",
            "",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        assert!(valid_prefix("packs/") && valid_prefix("packs/0f/") && valid_prefix(""));
        assert!(!valid_prefix("../") && !valid_prefix("packs/../"));
        assert!(valid_host("web-1.example") && !valid_host("../x") && !valid_host("a/b"));
        assert!(!valid_host("") && !valid_host(".hidden"));
    }

    #[test]
    fn at_picks_the_newest_snapshot_not_after_it() {
        let t = |s: &str| crate::time::parse_rfc3339(s).unwrap();
        let snaps = [
            (t("2026-11-25T06:00:00Z"), "b"),
            (t("2026-11-24T06:00:00Z"), "a"),
            (t("2026-11-26T06:00:00Z"), "c"),
        ];
        assert_eq!(select_at(&snaps, None), Some(2), "latest");
        assert_eq!(
            select_at(&snaps, Some(t("2026-11-25T06:00:00Z"))),
            Some(0),
            "exact time"
        );
        assert_eq!(select_at(&snaps, Some(t("2026-11-25T05:59:59Z"))), Some(1));
        assert_eq!(select_at(&snaps, Some(t("2026-12-01T00:00:00Z"))), Some(2));
        assert_eq!(
            select_at(&snaps, Some(t("2026-11-24T05:00:00Z"))),
            None,
            "before all"
        );
        assert_eq!(select_at::<i64>(&[], None), None);
        // Two at the same second: the id breaks the tie, as in listings.
        let same = [(5, "x-2"), (5, "x")];
        assert_eq!(select_at(&same, Some(5)), Some(0));
        assert!(parse_at("latest").unwrap().is_none());
        assert_eq!(parse_at("bogus").unwrap_err().status(), 400);
    }

    #[test]
    fn packs_are_verified_against_their_names() {
        let mut b = pack::PackBuilder::new();
        b.add(ChunkId::of(b"a"), pack::BlobKind::Data, 1, b"xx");
        let (name, bytes, index, _) = b.finish();
        let dir = tempfile::tempdir().unwrap();
        assert!(put_pack(dir.path(), &name, &bytes).unwrap());
        assert!(!put_pack(dir.path(), &name, &bytes).unwrap(), "idempotent");
        put_index(dir.path(), &name, &index).unwrap();
        let mut damaged = bytes.clone();
        damaged[9] ^= 1;
        assert_eq!(
            put_pack(dir.path(), &name, &damaged).unwrap_err().status(),
            400
        );
        let other = "ff".to_string() + &name[2..];
        assert_eq!(
            put_pack(dir.path(), &other, &bytes).unwrap_err().status(),
            400
        );
        assert_eq!(
            put_index(dir.path(), &other, &index).unwrap_err().status(),
            409
        );
        let idx = dir.path().join(format!("index/{name}.idx"));
        std::fs::remove_file(&idx).unwrap();
        assert_eq!(repair_indexes(dir.path()).unwrap(), 1);
        assert_eq!(std::fs::read(&idx).unwrap(), index);
        assert_eq!(repair_indexes(dir.path()).unwrap(), 0);
        let mut bad_index = index.clone();
        bad_index[0] ^= 1;
        assert_eq!(
            put_index(dir.path(), &name, &bad_index)
                .unwrap_err()
                .status(),
            400
        );
    }
}
