//! `rewind check`: read every pack, verify every blob against its name, then
//! walk every snapshot's trees so that damage is reported as the files it
//! affects, not as hashes.

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;

use super::Repo;
use crate::tree::{ChunkId, Kind, display_bytes};

#[derive(Debug, Default)]
pub struct CheckReport {
    pub packs: usize,
    pub blobs: usize,
    pub snapshots: usize,
    /// Damaged packs and blobs, one line each.
    pub damage: Vec<String>,
    /// Files (as `SNAPSHOT: /path`) whose content or tree is affected.
    pub affected: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.affected.is_empty()
    }
}

pub fn check(repo: &Repo, mut progress: impl FnMut(usize, usize)) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut by_pack: BTreeMap<u32, Vec<(ChunkId, super::Location)>> = BTreeMap::new();
    for (id, loc) in repo.all_blobs() {
        by_pack.entry(loc.pack).or_default().push((id, loc));
    }
    let mut bad: HashSet<ChunkId> = HashSet::new();
    let total = by_pack.len();
    for (i, (pack, blobs)) in by_pack.iter().enumerate() {
        progress(i, total);
        let name = repo.pack_name(*pack);
        let path = Repo::pack_path(name);
        let bytes = match repo.backend.get(&path) {
            Ok(b) => b,
            Err(e) => {
                report.damage.push(format!("{path}: {e:#}"));
                bad.extend(blobs.iter().map(|(id, _)| *id));
                continue;
            }
        };
        if blake3::hash(&bytes).to_hex().as_str() != name {
            report
                .damage
                .push(format!("{path}: content does not match its name"));
        }
        for (id, loc) in blobs {
            report.blobs += 1;
            let ok = super::pack::blob_range(loc.offset, loc.stored_len)
                .filter(|_| loc.plain_len <= super::pack::MAX_PLAIN_LEN)
                .and_then(|range| bytes.get(range))
                .and_then(|stored| zstd::bulk::decompress(stored, loc.plain_len as usize).ok())
                .is_some_and(|plain| ChunkId::of(&plain) == *id);
            if !ok {
                report
                    .damage
                    .push(format!("{path}: chunk {} is damaged", id.to_hex()));
                bad.insert(*id);
            }
        }
        report.packs += 1;
    }
    progress(total, total);

    for m in repo.snapshots()? {
        report.snapshots += 1;
        let snap = &m.snapshot.id;
        // Filesystems' data and raw regions (named `DISK REGION`).
        for (from, tree) in m.trees() {
            let Some(tree) = ChunkId::from_hex(tree) else {
                report
                    .affected
                    .push(format!("{snap}: {from}: malformed tree id"));
                continue;
            };
            let entries = match repo.tree_entries(&tree) {
                Ok(e) => e,
                Err(e) => {
                    report.affected.push(format!(
                        "{snap}: every file under {from} (tree unreadable: {e:#})"
                    ));
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        report.affected.push(format!(
                            "{snap}: files under {from} after a damaged tree piece: {e:#}"
                        ));
                        break;
                    }
                };
                if entry.kind != Kind::File {
                    continue;
                }
                let damaged = entry
                    .chunks
                    .iter()
                    .find(|c| bad.contains(&c.id) || repo.location(&c.id).is_none());
                if let Some(c) = damaged {
                    report.affected.push(format!(
                        "{snap}: {} (chunk {})",
                        join_path(&from, &entry.path),
                        &c.id.to_hex()[..16]
                    ));
                }
            }
        }
    }
    Ok(report)
}

/// A tree path shown in the machine's namespace: mount point + relative path.
pub fn join_path(mount: &str, rel: &[u8]) -> String {
    if rel.is_empty() {
        return mount.to_string();
    }
    let rel = display_bytes(rel);
    if mount.ends_with('/') {
        format!("{mount}{rel}")
    } else {
        format!("{mount}/{rel}")
    }
}
