//! A smaller target disk (`--shrink`, `rewind.shrink=1`, the recovery
//! request's `shrink`): the captured layout does not fit, but the files on
//! it do. rewind restores filesystems file by file, so a filesystem can be
//! made smaller than it was as long as its files fit in it with room to
//! spare; image tools cannot do this.
//!
//! What may change, and what may not:
//! - A partition holding a filesystem restored from the snapshot (ext2/3/4,
//!   xfs, btrfs on one device) **shrinks**, to no less than its
//!   [minimum](fs_minimum).
//! - A partition that is recreated empty or whose size does not matter to
//!   its content (swap, vfat, a filesystem without data in the snapshot, a
//!   multi-device btrfs) keeps its size but may **move** towards the start.
//! - A partition rewind does not recreate itself (a raw region such as a
//!   BIOS boot partition whose bytes come back from the snapshot, a member
//!   of the storage stack, anything unknown) is **kept**: same start, same
//!   size. GRUB's boot code holds the core image's LBA; it must not move.
//!
//! Partition numbers and order are kept, every moved start is aligned to
//! 1 MiB (or kept where the captured one was not aligned), the gaps between
//! partitions (an EBR, alignment) are kept, and the space the layout does
//! not need is shared among the shrinking partitions in proportion to what
//! each could give up. The GPT's backup header goes at the new end.
//!
//! The headroom rule, documented in docs/layout.md:
//! a filesystem needs `files + 4 KiB per entry`, plus a quarter of that,
//! plus 64 MiB and its own metadata (ext: the captured inode tables; xfs:
//! the captured log), at least the kind's smallest useful size (xfs
//! 300 MiB, btrfs 256 MiB, ext 16 MiB), rounded up to 1 MiB.

use std::fmt;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::fs::FsType;
use crate::layout::table::{GptEntry, MbrEntry};
use crate::manifest::{Disk, Filesystem, Manifest, MbrKind};
use crate::util::size::human_bytes;

const MIB: u64 = 1 << 20;

/// Per file, directory or link: its last block rounded up, its inode and
/// directory entry.
pub const PER_ENTRY: u64 = 4096;
/// The fixed part of the headroom: journal or log, allocation metadata,
/// room for the system to write its logs after the first boot.
pub const FIXED: u64 = 64 * MIB;

/// The smallest size (bytes) a filesystem `fs` can be recreated with,
/// holding its files from the snapshot, and how it was reckoned; `None`
/// when it is not to be shrunk (no data in the snapshot, vfat, a btrfs of
/// several devices).
pub fn fs_minimum(fs: &Filesystem) -> Option<(u64, String)> {
    fs.data.as_ref()?;
    // A btrfs holds its separately mounted subvolumes' files too.
    let (bytes, entries) = fs
        .data_trees()
        .fold((0, 0), |(b, n), d| (b + d.bytes, n + d.entries));
    let files = bytes + entries * PER_ENTRY;
    let (metadata, floor) = match &fs.fs_type {
        FsType::Ext2(p) | FsType::Ext3(p) | FsType::Ext4(p) => (
            p.as_ref()
                .map_or(0, |p| p.inode_count * u64::from(p.inode_size)),
            16 * MIB,
        ),
        FsType::Xfs(p) => {
            let log = p
                .as_ref()
                .map_or(0, |p| p.log_blocks * u64::from(p.block_size));
            // Every allocation group holds at least 16 MiB, and the log
            // lies in one of them.
            let ags = p.as_ref().map_or(4, |p| u64::from(p.ag_count.max(1)));
            (log, (300 * MIB).max(ags * (16 * MIB).max(log + MIB)))
        }
        FsType::Btrfs(_) if fs.members.is_empty() => (0, 256 * MIB),
        FsType::Btrfs(_) | FsType::Vfat(_) => return None,
    };
    let need = (files + files / 4 + FIXED + metadata)
        .max(floor)
        .div_ceil(MIB)
        * MIB;
    let why = format!(
        "{} of files in {} entries, +{} per entry, +25%, +{}{}",
        human_bytes(bytes),
        entries,
        human_bytes(PER_ENTRY),
        human_bytes(FIXED),
        if metadata > 0 {
            format!(", +{} of metadata", human_bytes(metadata))
        } else {
            String::new()
        }
    );
    Some((need, why))
}

/// What shrinking does to one partition (or the whole disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Shrunk,
    Moved,
    Kept,
}

/// One partition of the shrunk layout, in sectors of the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ShrunkPart {
    /// `None`: a filesystem on the whole disk.
    pub partition: Option<u32>,
    /// `ext4 /`, `swap`, `raw`: what it holds.
    pub holds: String,
    pub change: Change,
    pub from_start: u64,
    pub from_sectors: u64,
    pub start: u64,
    pub sectors: u64,
    /// A shrinking filesystem's minimum, in sectors, and how it was reckoned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reckoned: String,
    /// A logical partition's EBR, moved with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebr: Option<u64>,
}

/// The captured layout shrunk onto a smaller disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Shrunk {
    pub sector_size: u32,
    pub captured_bytes: u64,
    pub target_bytes: u64,
    /// The smallest disk this layout fits on, shrunk.
    pub minimum_bytes: u64,
    pub parts: Vec<ShrunkPart>,
}

/// A partition as the shrinking sees it.
#[derive(Debug, Clone)]
struct Slot {
    partition: Option<u32>,
    holds: String,
    start: u64,
    sectors: u64,
    /// `start - ebr` of a logical partition.
    ebr_back: Option<u64>,
    kind: Kind,
    reckoned: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Down to this many sectors.
    Shrink(u64),
    Move,
    Keep,
}

/// What is on partition `number` of `d` (or on the whole disk), and how it
/// may change.
fn classify(m: &Manifest, d: &Disk, number: Option<u32>, ss: u64) -> (String, Kind, String) {
    let fs = m
        .filesystems
        .iter()
        .find(|f| f.disk.as_deref() == Some(&d.name) && f.partition == number);
    let swap = m
        .swaps
        .iter()
        .any(|s| s.disk.as_deref() == Some(&d.name) && s.partition == number);
    match (fs, swap) {
        (Some(fs), _) => {
            let mut holds = fs.fs_type.name().to_string();
            if let Some(mt) = fs.mounts.first() {
                holds.push(' ');
                holds.push_str(&mt.point);
            }
            match fs_minimum(fs) {
                Some((bytes, why)) => (holds, Kind::Shrink(bytes.div_ceil(ss)), why),
                None => (holds, Kind::Move, String::new()),
            }
        }
        (None, true) => ("swap".into(), Kind::Move, String::new()),
        (None, false) => ("raw".into(), Kind::Keep, String::new()),
    }
}

/// The partitions of `d` in disk order (the extended container left out:
/// it follows its logical partitions).
fn slots(m: &Manifest, d: &Disk) -> Vec<Slot> {
    let ss = u64::from(d.logical_sector_size);
    let mut out = Vec::new();
    let mut push = |number: Option<u32>, start: u64, sectors: u64, ebr_back: Option<u64>| {
        let (holds, kind, reckoned) = classify(m, d, number, ss);
        out.push(Slot {
            partition: number,
            holds,
            start,
            sectors,
            ebr_back,
            kind,
            reckoned,
        });
    };
    if let Some(g) = &d.gpt {
        for p in &g.partitions {
            push(
                Some(p.number),
                p.first_lba,
                p.last_lba - p.first_lba + 1,
                None,
            );
        }
    } else if let Some(mbr) = &d.mbr {
        let has_logicals = mbr.partitions.iter().any(|p| p.kind == MbrKind::Logical);
        for p in &mbr.partitions {
            if p.kind == MbrKind::Extended && has_logicals {
                continue;
            }
            let ebr_back = p.ebr_lba.map(|e| p.start_lba.saturating_sub(e));
            push(Some(p.number), p.start_lba, p.sectors, ebr_back);
        }
    } else {
        push(None, 0, d.size / ss, None);
    }
    // An empty extended partition: nothing to recreate in it.
    if let Some(mbr) = &d.mbr {
        for s in out.iter_mut() {
            if mbr
                .partitions
                .iter()
                .any(|p| Some(p.number) == s.partition && p.kind == MbrKind::Extended)
            {
                s.holds = "extended (empty)".into();
                s.kind = Kind::Move;
            }
        }
    }
    out.sort_by_key(|s| s.start);
    out
}

/// Sectors the disk keeps after the last partition: the GPT's backup
/// entries and header.
fn tail(d: &Disk) -> u64 {
    let ss = u64::from(d.logical_sector_size);
    d.gpt
        .as_ref()
        .map_or(0, |g| (d.size / ss).saturating_sub(g.last_usable_lba))
}

/// Starts and sizes with each shrinking slot given `fraction` (of
/// `FRACTION_ONE`) of what it could give up; the end of the layout.
fn place(slots: &[Slot], fraction: u64, align: u64) -> (Vec<(u64, u64)>, u64) {
    let mut out = Vec::with_capacity(slots.len());
    let (mut prev_end, mut prev_end_new) = (0u64, 0u64);
    let mut end = 0;
    for s in slots {
        let gap = s.start.saturating_sub(prev_end);
        let sectors = match s.kind {
            Kind::Shrink(min) if min < s.sectors => {
                let extra =
                    u128::from(s.sectors - min) * u128::from(fraction) / u128::from(FRACTION_ONE);
                let extra = u64::try_from(extra).unwrap_or(u64::MAX) / align * align;
                (min.div_ceil(align) * align + extra).min(s.sectors)
            }
            _ => s.sectors,
        };
        let start = match (s.kind, s.partition) {
            (Kind::Keep, _) | (_, None) => s.start,
            _ => ((prev_end_new + gap).div_ceil(align) * align).min(s.start),
        };
        out.push((start, sectors));
        prev_end = s.start + s.sectors;
        prev_end_new = start + sectors;
        end = end.max(prev_end_new);
    }
    (out, end)
}

const FRACTION_ONE: u64 = 1 << 20;

/// The smallest disk (bytes) `d`'s layout fits on, every filesystem at its
/// minimum, and a line per partition saying why.
pub fn minimum(m: &Manifest, d: &Disk) -> (u64, Vec<String>) {
    let ss = u64::from(d.logical_sector_size);
    let slots = slots(m, d);
    let (placed, end) = place(&slots, 0, (MIB / ss).max(1));
    let bytes = ((end + tail(d)) * ss).min(d.size);
    let lines = slots
        .iter()
        .zip(&placed)
        .map(|(s, (_, n))| describe(s, *n * ss, ss))
        .collect();
    (bytes, lines)
}

fn describe(s: &Slot, bytes: u64, ss: u64) -> String {
    let what = match s.partition {
        Some(n) => format!("partition {n} ({})", s.holds),
        None => format!("the whole disk ({})", s.holds),
    };
    match s.kind {
        Kind::Shrink(min) if min < s.sectors => format!(
            "{what}: at least {} ({})",
            human_bytes(min.div_ceil((MIB / ss).max(1)) * MIB),
            s.reckoned
        ),
        Kind::Shrink(_) => format!(
            "{what}: {} as captured (its files need it all: {})",
            human_bytes(bytes),
            s.reckoned
        ),
        Kind::Move => format!("{what}: {} as captured", human_bytes(bytes)),
        Kind::Keep => format!(
            "{what}: {} as captured, in its place (rewind does not recreate it)",
            human_bytes(bytes)
        ),
    }
}

/// Why `d` does not fit on a disk of `size` bytes, even shrunk; `None`
/// when it fits shrunk.
pub fn unfit_shrunk(m: &Manifest, d: &Disk, size: u64) -> Option<String> {
    let (need, lines) = minimum(m, d);
    (size < need).then(|| {
        if need >= d.size {
            format!(
                "it is too small, and nothing on the captured disk can shrink (--shrink): {}",
                lines.join("; ")
            )
        } else {
            format!(
                "it is too small even shrunk (--shrink): the data needs a disk of at least {} \
                 ({need} bytes), this one has {} ({size} bytes): {}",
                human_bytes(need),
                human_bytes(size),
                lines.join("; ")
            )
        }
    })
}

/// `d`'s layout shrunk onto a disk of `target_sectors` sectors.
pub fn shrink(m: &Manifest, d: &Disk, target_sectors: u64) -> Result<Shrunk> {
    let ss = u64::from(d.logical_sector_size);
    let align = (MIB / ss).max(1);
    let slots = slots(m, d);
    let mut limit = target_sectors.saturating_sub(tail(d));
    if d.mbr.is_some() {
        limit = limit.min(1 << 32);
    }
    let (minimum_bytes, lines) = minimum(m, d);
    let (_, end_min) = place(&slots, 0, align);
    if end_min > limit {
        bail!(
            "captured disk {} ({}, {} bytes) does not fit on {} bytes even shrunk: its data \
             needs a disk of at least {} ({minimum_bytes} bytes): {}",
            d.name,
            human_bytes(d.size),
            d.size,
            target_sectors * ss,
            human_bytes(minimum_bytes),
            lines.join("; ")
        );
    }
    // The largest share of the spare room that still fits (the end grows
    // with the fraction).
    let (mut lo, mut hi) = (0, FRACTION_ONE);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if place(&slots, mid, align).1 <= limit {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let (placed, _) = place(&slots, lo, align);
    let parts = slots
        .iter()
        .zip(placed)
        .map(|(s, (start, sectors))| ShrunkPart {
            partition: s.partition,
            holds: s.holds.clone(),
            change: if sectors < s.sectors {
                Change::Shrunk
            } else if start != s.start {
                Change::Moved
            } else {
                Change::Kept
            },
            from_start: s.start,
            from_sectors: s.sectors,
            start,
            sectors: if s.partition.is_none() {
                target_sectors
            } else {
                sectors
            },
            minimum: match s.kind {
                Kind::Shrink(min) => Some(min),
                _ => None,
            },
            reckoned: s.reckoned.clone(),
            ebr: s.ebr_back.map(|b| start - b),
        })
        .collect();
    Ok(Shrunk {
        sector_size: d.logical_sector_size,
        captured_bytes: d.size,
        target_bytes: target_sectors * ss,
        minimum_bytes,
        parts,
    })
}

impl Shrunk {
    fn part(&self, number: Option<u32>) -> Option<&ShrunkPart> {
        self.parts.iter().find(|p| p.partition == number)
    }

    /// The GPT entries at their new places.
    pub fn apply_gpt(&self, parts: &mut [GptEntry]) {
        for e in parts {
            if let Some(p) = self.part(Some(e.number)) {
                e.first_lba = p.start;
                e.last_lba = p.start + p.sectors - 1;
            }
        }
    }

    /// The MBR entries at their new places; the extended container from
    /// its first logical partition's EBR to the end of its last one.
    pub fn apply_mbr(&self, parts: &mut [MbrEntry]) {
        for e in parts.iter_mut() {
            if let Some(p) = self.part(Some(e.number)) {
                e.start_lba = p.start;
                e.sectors = p.sectors;
                e.ebr_lba = p.ebr;
            }
        }
        let logicals: Vec<(u64, u64)> = parts
            .iter()
            .filter(|e| e.kind == MbrKind::Logical)
            .map(|e| (e.ebr_lba.unwrap_or(e.start_lba), e.start_lba + e.sectors))
            .collect();
        let (Some(first), Some(end)) = (
            logicals.iter().map(|l| l.0).min(),
            logicals.iter().map(|l| l.1).max(),
        ) else {
            return;
        };
        if let Some(ext) = parts.iter_mut().find(|e| e.kind == MbrKind::Extended) {
            // Where the container began before its first EBR, it still does.
            let before = self
                .parts
                .iter()
                .filter_map(|p| p.ebr.map(|e| (e, p.from_start - (p.start - e))))
                .min()
                .map_or(0, |(_, old_ebr)| old_ebr.saturating_sub(ext.start_lba));
            ext.start_lba = first - before;
            ext.sectors = end - ext.start_lba;
        }
    }

    /// The filesystem `fs` on partition `number` as it is made on its
    /// smaller partition: the captured parameters with the sizes of the
    /// new one. `None` when that partition did not shrink.
    pub fn resized(&self, number: Option<u32>, fs: &Filesystem) -> Option<Filesystem> {
        let p = self.part(number)?;
        if p.change != Change::Shrunk && number.is_some() {
            return None;
        }
        let bytes = p.sectors * u64::from(self.sector_size);
        let mut out = fs.clone();
        match &mut out.fs_type {
            FsType::Ext2(Some(e)) | FsType::Ext3(Some(e)) | FsType::Ext4(Some(e)) => {
                let blocks = bytes / u64::from(e.block_size);
                e.reserved_blocks = u64::try_from(
                    u128::from(e.reserved_blocks) * u128::from(blocks)
                        / u128::from(e.block_count.max(1)),
                )
                .unwrap_or(0);
                // At most a block of inode bitmap per group.
                let groups = blocks.div_ceil(8 * u64::from(e.block_size));
                e.inode_count = e.inode_count.min(groups * 8 * u64::from(e.block_size));
                e.block_count = blocks;
            }
            _ => {}
        }
        Some(out)
    }
}

impl fmt::Display for Shrunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ss = u64::from(self.sector_size);
        writeln!(
            f,
            "  shrink (--shrink): the captured layout needs {}, this disk has {}; its data fits \
             (at least {} with headroom: files + 4 KiB per entry, +25%, +64 MiB and the \
             filesystem's metadata)",
            human_bytes(self.captured_bytes),
            human_bytes(self.target_bytes),
            human_bytes(self.minimum_bytes)
        )?;
        for p in &self.parts {
            let what = match p.partition {
                Some(n) => format!("partition {n} ({})", p.holds),
                None => format!("the whole disk ({})", p.holds),
            };
            match p.change {
                Change::Shrunk => writeln!(
                    f,
                    "    {what}: shrunk {} -> {} (at least {}: {}), LBA {} -> {}",
                    human_bytes(p.from_sectors * ss),
                    human_bytes(p.sectors * ss),
                    human_bytes(p.minimum.unwrap_or(0) * ss),
                    p.reckoned,
                    p.from_start,
                    p.start
                )?,
                Change::Moved => writeln!(
                    f,
                    "    {what}: {}, moved from LBA {} to {}",
                    human_bytes(p.sectors * ss),
                    p.from_start,
                    p.start
                )?,
                Change::Kept => writeln!(
                    f,
                    "    {what}: {}, in place at LBA {}",
                    human_bytes(p.sectors * ss),
                    p.start
                )?,
            }
        }
        Ok(())
    }
}
