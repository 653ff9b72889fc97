//! `rewind prune`: garbage-collect the data no snapshot references, in a
//! repository directory (a local repository, or one host's repository on the
//! server).
//!
//! 1. Every snapshot's trees are read and every blob they reference (tree
//!    lists, tree pieces, file chunks) is marked. A snapshot whose tree
//!    cannot be read stops the prune: nothing is removed on partial
//!    knowledge.
//! 2. Each pack older than the grace period is then kept (mostly used),
//!    retired (nothing in it is used) or repacked (less than half of it is
//!    used: its used blobs are copied, still compressed, into new packs,
//!    which are written before the old pack is retired). Packs younger than
//!    the grace period are never touched: they may belong to a capture that
//!    is still running and has not committed its snapshot yet.
//! 3. Retiring moves a pack to `retired/` and removes its index, so that
//!    repositories opened from then on do not see it, while a restore that
//!    loaded the index before can still read it (the server falls back to
//!    `retired/`). Retired packs are deleted by a later prune, once they have
//!    been retired for longer than the grace period.
//!
//! A capture that deduplicated against a blob that a prune then removed
//! cannot commit a broken snapshot: the server checks every chunk a snapshot
//! references before accepting it (and prune and commits of a host are
//! serialized by the host's lock).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::repo::Repo;
use crate::repo::pack::{PackBuilder, PackEntry};
use crate::tree::{ChunkId, Kind};

use crate::util::fs::{sync_dir, write_atomic};

/// Repack a pack when less than this share of its bytes is used.
const REPACK_BELOW: f64 = 0.5;
const PACK_TARGET: usize = 16 << 20;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub packs_before: usize,
    pub packs_kept: usize,
    /// Too young to judge.
    pub packs_young: usize,
    pub packs_retired: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    /// Retired earlier, deleted now.
    pub retired_deleted: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

fn file_age(path: &Path) -> Result<Duration> {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("cannot stat {}", path.display()))?;
    Ok(SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO))
}

/// Every blob the repository's snapshots reference.
pub fn used_blobs(repo: &Repo) -> Result<(HashSet<ChunkId>, usize)> {
    let mut used = HashSet::new();
    let snaps = repo.snapshots()?;
    for m in &snaps {
        // Filesystems' data and raw regions (boot gap, BIOS boot partition).
        for (from, tree) in m.trees() {
            let what = || format!("snapshot {}: the tree of {from}", m.snapshot.id);
            let tree = ChunkId::from_hex(tree).with_context(what)?;
            used.insert(tree);
            for piece in repo.tree_pieces(&tree).with_context(what)? {
                used.insert(piece.id);
            }
            for entry in repo.tree_entries(&tree).with_context(what)? {
                let entry = entry.with_context(what)?;
                if entry.kind == Kind::File {
                    used.extend(entry.chunks.iter().map(|c| c.id));
                }
            }
        }
    }
    Ok((used, snaps.len()))
}

pub fn prune(dir: &Path, grace: Duration, dry_run: bool) -> Result<PruneReport> {
    let repo = Repo::open(dir)?;
    let mut report = PruneReport {
        bytes_before: crate::util::fs::dir_bytes(dir),
        packs_before: repo.pack_count(),
        ..PruneReport::default()
    };
    let (used, snapshots) = used_blobs(&repo).context(
        "prune stopped before removing anything: a snapshot cannot be read (`rewind check` tells more)",
    )?;
    report.snapshots = snapshots;

    // Which packs hold which used blob: a blob stored twice (two captures
    // uploading the same chunk at once) counts in the pack the index picked.
    let mut by_pack: HashMap<u32, Vec<(ChunkId, crate::repo::Location)>> = HashMap::new();
    for (id, loc) in repo.all_blobs() {
        if used.contains(&id) {
            by_pack.entry(loc.pack).or_default().push((id, loc));
        }
    }
    let mut to_retire = Vec::new();
    let mut to_repack = Vec::new();
    for p in 0..repo.pack_count() as u32 {
        let name = repo.pack_name(p).to_string();
        let path = dir.join(Repo::pack_path(&name));
        if file_age(&path)? < grace {
            report.packs_young += 1;
            continue;
        }
        let size = std::fs::metadata(&path)?.len();
        let blobs = by_pack.remove(&p).unwrap_or_default();
        let used_bytes = blobs.iter().fold(0u64, |sum, (_, l)| {
            sum.saturating_add(u64::from(l.stored_len))
        });
        if blobs.is_empty() {
            to_retire.push(name);
        } else if (used_bytes as f64) < REPACK_BELOW * size as f64 {
            to_repack.push((name, blobs));
        } else {
            report.packs_kept += 1;
        }
    }
    report.packs_retired = to_retire.len();
    report.packs_repacked = to_repack.len();
    if dry_run {
        report.bytes_after = report.bytes_before;
        return Ok(report);
    }

    // Copy what is used out of the packs to repack, then retire them.
    let mut builder = PackBuilder::new();
    for (name, mut blobs) in to_repack {
        blobs.sort_by_key(|(_, l)| l.offset);
        let path = dir.join(Repo::pack_path(&name));
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        for (id, loc) in blobs {
            let stored = crate::repo::pack::blob_range(loc.offset, loc.stored_len)
                .and_then(|range| bytes.get(range))
                .with_context(|| {
                    format!(
                        "{}: blob {} lies past the end (truncated or damaged index)",
                        path.display(),
                        id.to_hex()
                    )
                })?;
            builder.add(id, loc.kind, loc.plain_len, stored);
            if builder.len() >= PACK_TARGET {
                write_pack(dir, std::mem::take(&mut builder))?;
                report.packs_written += 1;
            }
        }
        to_retire.push(name);
    }
    if !builder.is_empty() {
        write_pack(dir, builder)?;
        report.packs_written += 1;
    }
    for name in &to_retire {
        retire(dir, name)?;
    }

    // Delete packs retired longer ago than the grace period.
    let retired = dir.join("retired");
    if let Ok(rd) = std::fs::read_dir(&retired) {
        for e in rd.flatten() {
            let p = e.path();
            // Packs retired just now are as old as the grace period only
            // when it is zero (a prune the operator knows runs alone).
            if file_age(&p)? >= grace {
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
                report.retired_deleted += 1;
            }
        }
    }
    report.bytes_after = crate::util::fs::dir_bytes(dir);
    Ok(report)
}

fn write_pack(dir: &Path, builder: PackBuilder) -> Result<()> {
    let (name, bytes, index, _): (String, Vec<u8>, Vec<u8>, Vec<PackEntry>) = builder.finish();
    write_atomic(&dir.join(Repo::pack_path(&name)), &bytes)
        .and_then(|()| write_atomic(&dir.join(format!("index/{name}.idx")), &index))
        .with_context(|| format!("cannot write pack {name}"))
}

/// Move a pack out of sight: its index first, durably, then the pack.
/// A power cut between the two leaves a pack without index, which the
/// next open re-indexes from its trailer (the pack is back, and the next
/// prune retires it again). The other order could leave an index naming a
/// retired pack: a capture would then skip uploading a chunk that only a
/// pack about to be deleted holds.
fn retire(dir: &Path, name: &str) -> Result<()> {
    let idx = dir.join(format!("index/{name}.idx"));
    match std::fs::remove_file(&idx) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot remove {}: {e}", idx.display()),
    }
    sync_dir(&dir.join("index")).context("cannot sync index/")?;
    let retired = dir.join("retired");
    if !retired.exists() {
        std::fs::create_dir_all(&retired)?;
        sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    let from = dir.join(Repo::pack_path(name));
    let to = retired.join(format!("{name}.pack"));
    std::fs::rename(&from, &to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    // The retirement time is what the grace period counts from.
    std::fs::File::options()
        .write(true)
        .open(&to)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .with_context(|| format!("cannot touch {}", to.display()))?;
    sync_dir(&retired).context("cannot sync retired/")?;
    if let Some(parent) = from.parent() {
        sync_dir(parent).with_context(|| format!("cannot sync {}", parent.display()))?;
    }
    Ok(())
}

/// Where a retired pack lives, for readers that still know it.
pub fn retired_path(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join("retired").join(format!("{name}.pack"))
}

/// Parse a duration: `90s`, `30m`, `6h`, `2d` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration (90s, 30m, 6h, 2d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{s:?}: unknown unit {unit:?} (s, m, h or d)"),
    };
    Ok(Duration::from_secs(n * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(6 * 3600));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86_400)
        );
        assert!(parse_duration("6x").is_err());
        assert!(parse_duration("h").is_err());
    }
}
