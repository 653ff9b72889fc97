//! Planning: which present disk receives which captured disk, and every
//! action recovery will take on it. A pure function of the manifest, the
//! disks present and the options, so it is tested exhaustively, printed
//! before anything is written, and refused as a whole when a disk does not fit.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use super::present::{BootMedium, PresentDisk, partition_path, survey};
use super::table::{GptEntry, GptLayout, MbrEntry, MbrLayout};
use crate::cmd::display_argv;
use crate::fs::{FsType, MkfsTarget, Tools};
use crate::manifest::{BootGap, Disk, Filesystem, Manifest, MbrKind};
use crate::util::size::human_bytes;

/// What the operator asked for besides the manifest.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Explicit `CAPTURED=PRESENT` pairs. CAPTURED is a manifest disk's name,
    /// path or serial; PRESENT a present disk's name, path or serial. When
    /// any is given, only the disks so mapped are recreated.
    pub mapping: Vec<(String, String)>,
    /// On a bigger disk, grow the last partition (and its filesystem).
    pub grow: bool,
    /// On a smaller disk, shrink the filesystems restored file by file
    /// when their data fits (`--shrink`, `rewind.shrink=1`; see shrink.rs).
    pub shrink: bool,
    /// Any disk that is not blank may be chosen automatically
    /// (`--overwrite-non-blank`, `rewind.overwrite=any`); without it only a
    /// disk matched by serial or WWN, or named in `mapping`, may be.
    pub overwrite_non_blank: bool,
    /// Where the recreated filesystems are mounted.
    pub target_root: PathBuf,
    /// Filesystem types formatted but not mounted.
    pub skip_mount: Vec<String>,
    pub tools: Tools,
}

/// Why a present disk was chosen for a captured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchedBy {
    Explicit,
    Serial,
    Wwn,
    Size,
    SmallestFit,
    /// No disk fits the captured layout: the biggest one its data fits on,
    /// shrunk (`--shrink`).
    Shrunk,
}

impl fmt::Display for MatchedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchedBy::Explicit => "as mapped by --disk",
            MatchedBy::Serial => "same serial",
            MatchedBy::Wwn => "same WWN",
            MatchedBy::Size => "same size",
            MatchedBy::SmallestFit => "smallest disk that fits",
            MatchedBy::Shrunk => "biggest disk the data fits on, shrunk (--shrink)",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Plan {
    pub snapshot: String,
    pub host: String,
    pub target_root: String,
    pub disks: Vec<DiskPlan>,
    /// The storage stack (MD, LUKS, LVM) in creation order, after the
    /// partitions and before any filesystem.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<super::stack::StackStep>,
    /// Filesystems and swap on the stack's devices.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stack_volumes: Vec<super::stack::StackVolume>,
    /// In mounting order: parents first.
    pub mounts: Vec<MountStep>,
    /// What will not be exactly as captured, and why.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiskPlan {
    /// The manifest's name for the disk.
    pub captured: String,
    pub captured_size: u64,
    pub target: PresentDisk,
    pub matched_by: MatchedBy,
    pub sector_size: u32,
    /// The captured disk's logical sector size: when it differs, every LBA
    /// of `table` is rescaled to the same byte offset (rescale.rs).
    pub captured_sector_size: u32,
    pub table: Table,
    /// 440 bytes of boot code for LBA 0, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_code: Option<String>,
    /// Sectors after the MBR restored raw from the snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_gap: Option<BootGap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grown: Option<Grown>,
    /// On a smaller disk: the layout shrunk (`--shrink`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrunk: Option<shrink::Shrunk>,
    /// What goes into each partition (or the whole disk), in order.
    pub volumes: Vec<Volume>,
}

impl DiskPlan {
    /// The identifier of the partition table the plan writes, as blkid
    /// gives it (`PTUUID`: a GPT's disk GUID, an MBR's signature in 8 hex
    /// digits), lower case; none for a disk without a table.
    pub fn table_id(&self) -> Option<String> {
        match &self.table {
            Table::Gpt(g) => Some(g.disk_guid.uuid().hyphenated().to_string()),
            Table::Mbr(m) => Some(format!("{:08x}", m.signature)),
            Table::None => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Table {
    Gpt(GptLayout),
    Mbr(MbrLayout),
    /// No partition table: a filesystem on the whole disk, or nothing.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Grown {
    pub partition: u32,
    pub from_sectors: u64,
    pub to_sectors: u64,
}

/// A partition (or the whole disk) and what it receives.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Volume {
    pub device: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The region on the disk, in sectors (zeroed at its ends before use).
    pub first_lba: u64,
    pub sectors: u64,
    pub content: Content,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Content {
    Filesystem {
        fs_type: String,
        uuid: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// mkfs and the tuning after it, each an argv.
        commands: Vec<Vec<String>>,
        /// btrfs subvolumes to create (paths inside the filesystem).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        subvolumes: Vec<String>,
        /// Grown or shrunk: its sizes differ from the capture's by plan.
        grown: bool,
        /// The captured filesystem, to check what mkfs made against it.
        #[serde(skip)]
        captured: Box<Filesystem>,
    },
    Swap {
        uuid: String,
        commands: Vec<Vec<String>>,
    },
    /// No filesystem rewind knows (a BIOS boot partition): its bytes come
    /// from the snapshot, when it holds them.
    Raw,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MountStep {
    pub device: String,
    pub fs_type: String,
    /// The captured mount point.
    pub point: String,
    /// Where it is mounted now: under the target root.
    pub target: String,
    /// The captured options, made fit for a restore (see mount.rs).
    pub options: String,
    /// Why it is not mounted, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Plan the recreation of `m` on the disks `present`.
pub fn plan(m: &Manifest, present: &[PresentDisk], opts: &PlanOptions) -> Result<Plan> {
    let shrinkable: Vec<&Disk> = if opts.shrink {
        m.disks.iter().collect()
    } else {
        Vec::new()
    };
    let pairs = map_disks_shrinking(
        &m.disks,
        present,
        &opts.mapping,
        opts.overwrite_non_blank,
        &|d, size| shrink::unfit_shrunk(m, d, size),
        &shrinkable,
    )?;
    let mut notes = Vec::new();
    let mut disks = Vec::new();
    for (ci, pi, by) in pairs {
        disks.push(
            disk_plan(m, &m.disks[ci], &present[pi], by, opts, &mut notes)
                .with_context(|| format!("cannot plan captured disk {}", m.disks[ci].name))?,
        );
    }
    let (stack, stack_volumes) = super::stack::plan_stack(m, &mut disks, opts, &mut notes)
        .context("cannot plan the storage stack")?;
    let mounts = mount_steps(&disks, &stack_volumes, opts);
    Ok(Plan {
        snapshot: m.snapshot.id.clone(),
        host: m.snapshot.host.clone(),
        target_root: opts.target_root.display().to_string(),
        disks,
        stack,
        stack_volumes,
        mounts,
        notes,
    })
}

/// Plan `m` on this machine's disks: [`survey`] them (sysfs, the boot
/// medium, what each holds), then [`plan`]. `rewind plan`, `rewind
/// recreate` and the recovery all choose their disks here.
pub fn plan_here(m: &Manifest, opts: &PlanOptions, boot: &BootMedium) -> Result<Plan> {
    let (present, mapping) = survey(Path::new("/sys"), Path::new("/proc"), &opts.mapping, boot)?;
    plan(
        m,
        &present,
        &PlanOptions {
            mapping,
            ..opts.clone()
        },
    )
}

/// Why `p` cannot take captured disk `d`, even shrunk, if it cannot.
fn unfit(d: &Disk, p: &PresentDisk, fit: &Fit) -> Option<String> {
    if p.logical_sector_size != d.logical_sector_size && p.size < d.size {
        // Each is planned on its own (rescale.rs, shrink.rs); both at once
        // would move every byte offset the rescaling keeps.
        Some(format!(
            "it has {}-byte logical sectors, the captured disk {}-byte ones, and it is smaller: \
             a layout moves to another sector size or shrinks, not both at once",
            p.logical_sector_size, d.logical_sector_size
        ))
    } else if let Err(e) = rescale::check_disk(d, p.logical_sector_size, p.size) {
        Some(format!(
            "it has {}-byte logical sectors, the captured disk {}-byte ones, and {e:#}",
            p.logical_sector_size, d.logical_sector_size
        ))
    } else if p.size < d.size {
        if fit.may_shrink(d) {
            (fit.unfit_shrunk)(d, p.size)
        } else {
            Some("it is too small".to_string())
        }
    } else {
        None
    }
}

/// Whether a smaller disk may take a captured one, shrunk (shrink.rs).
struct Fit<'a> {
    /// Why captured disk `d` does not fit on `size` bytes even shrunk.
    unfit_shrunk: &'a dyn Fn(&Disk, u64) -> Option<String>,
    /// The captured disks that may be shrunk (all with `--shrink`, none
    /// without).
    shrinkable: &'a [&'a Disk],
}

impl Fit<'_> {
    fn may_shrink(&self, d: &Disk) -> bool {
        self.shrinkable.iter().any(|s| s.name == d.name)
    }
}

/// Pair captured disks (by index in `disks`) with present ones (by index in
/// `present`). Explicit pairs when given; otherwise serial or WWN first,
/// then the same size, then the smallest disk that fits; never a disk in
/// use, never a removable, SAN or multipath disk unless named, and a disk
/// that is not blank only when matched by serial or WWN, or when
/// `overwrite_non_blank` says any may be overwritten.
pub fn map_disks(
    disks: &[Disk],
    present: &[PresentDisk],
    mapping: &[(String, String)],
    overwrite_non_blank: bool,
) -> Result<Vec<(usize, usize, MatchedBy)>> {
    map_disks_shrinking(
        disks,
        present,
        mapping,
        overwrite_non_blank,
        &|_, _| None,
        &[],
    )
}

/// [`map_disks`], where the captured disks in `shrinkable` may go onto a
/// smaller disk their data fits on (`unfit_shrunk` says why not), when no
/// disk fits them as captured: the biggest such disk.
pub fn map_disks_shrinking(
    disks: &[Disk],
    present: &[PresentDisk],
    mapping: &[(String, String)],
    overwrite_non_blank: bool,
    unfit_shrunk: &dyn Fn(&Disk, u64) -> Option<String>,
    shrinkable: &[&Disk],
) -> Result<Vec<(usize, usize, MatchedBy)>> {
    let fit = Fit {
        unfit_shrunk,
        shrinkable,
    };
    let unfit = |d: &Disk, p: &PresentDisk| unfit(d, p, &fit);
    if !mapping.is_empty() {
        return map_explicitly(disks, present, mapping, &unfit);
    }
    ensure!(!disks.is_empty(), "the manifest has no disks to recreate");
    let mut taken: Vec<Option<(usize, MatchedBy)>> = vec![None; disks.len()];
    let free = |taken: &[Option<(usize, MatchedBy)>], pi: usize| {
        present[pi].in_use.is_none()
            && present[pi].named_only().is_none()
            && !taken.iter().flatten().any(|(t, _)| *t == pi)
    };
    // A disk not matched by identity must be blank, unless told otherwise
    // or an interrupted run of this request chose it for this captured
    // disk (present::mark_chosen_before).
    let writable = |ci: usize, pi: usize| {
        overwrite_non_blank
            || present[pi].contents.is_blank()
            || present[pi].chosen_before.as_deref() == Some(disks[ci].name.as_str())
    };

    // 1. The same disk, by identity.
    for (ci, d) in disks.iter().enumerate() {
        let found = (0..present.len()).find_map(|pi| {
            let p = &present[pi];
            if !free(&taken, pi) || unfit(d, p).is_some() {
                return None;
            }
            if d.serial.is_some() && d.serial == p.serial {
                Some((pi, MatchedBy::Serial))
            } else if d.wwn.is_some() && d.wwn == p.wwn {
                Some((pi, MatchedBy::Wwn))
            } else {
                None
            }
        });
        taken[ci] = found;
    }
    // 1b. The disk an interrupted run of this request chose for it, as it
    //     chose it then (the same size, bigger, or smaller and shrunk).
    for (ci, d) in disks.iter().enumerate() {
        if taken[ci].is_some() {
            continue;
        }
        taken[ci] = (0..present.len())
            .find(|&pi| {
                free(&taken, pi)
                    && present[pi].chosen_before.as_deref() == Some(d.name.as_str())
                    && unfit(d, &present[pi]).is_none()
            })
            .map(|pi| {
                let by = match present[pi].size.cmp(&d.size) {
                    std::cmp::Ordering::Equal => MatchedBy::Size,
                    std::cmp::Ordering::Greater => MatchedBy::SmallestFit,
                    std::cmp::Ordering::Less => MatchedBy::Shrunk,
                };
                (pi, by)
            });
    }
    // 2. A disk of the same size; of several, the first by name.
    for (ci, d) in disks.iter().enumerate() {
        if taken[ci].is_some() {
            continue;
        }
        let mut same: Vec<usize> = (0..present.len())
            .filter(|&pi| {
                free(&taken, pi)
                    && writable(ci, pi)
                    && present[pi].size == d.size
                    && unfit(d, &present[pi]).is_none()
            })
            .collect();
        same.sort_by(|&a, &b| present[a].name.cmp(&present[b].name));
        taken[ci] = same.first().map(|&pi| (pi, MatchedBy::Size));
    }
    // 3. The smallest disk that fits, biggest captured disks first so that
    //    a small one does not take the only disk a big one fits on.
    let mut order: Vec<usize> = (0..disks.len()).filter(|&ci| taken[ci].is_none()).collect();
    order.sort_by(|&a, &b| disks[b].size.cmp(&disks[a].size));
    for ci in order {
        let d = &disks[ci];
        let fits =
            |pi: usize| free(&taken, pi) && writable(ci, pi) && unfit(d, &present[pi]).is_none();
        let best = (0..present.len())
            .filter(|&pi| fits(pi) && present[pi].size >= d.size)
            .min_by(|&a, &b| {
                (present[a].size, &present[a].name).cmp(&(present[b].size, &present[b].name))
            });
        // Shrunk: the biggest disk the data fits on, so the least shrinks.
        let shrunk = || {
            (0..present.len())
                .filter(|&pi| fits(pi) && present[pi].size < d.size)
                .max_by(|&a, &b| {
                    (present[a].size, &present[b].name).cmp(&(present[b].size, &present[a].name))
                })
        };
        taken[ci] = best
            .map(|pi| (pi, MatchedBy::SmallestFit))
            .or_else(|| shrunk().map(|pi| (pi, MatchedBy::Shrunk)));
    }

    let mut problems = Vec::new();
    for (ci, d) in disks.iter().enumerate() {
        if taken[ci].is_some() {
            continue;
        }
        let mut why: Vec<String> = present
            .iter()
            .enumerate()
            .map(|(pi, p)| {
                let reason = if let Some(u) = &p.in_use {
                    format!("in use: {u}")
                } else if let Some(why) = p.named_only() {
                    format!("{why} (name it with --disk)")
                } else if let Some(c) = taken.iter().position(|t| t.is_some_and(|(t, _)| t == pi)) {
                    format!("taken by captured disk {}", disks[c].name)
                } else if let Some(why) = unfit(d, p) {
                    why
                } else if !writable(ci, pi) {
                    format!(
                        "not blank ({}) and not matched by serial or WWN: to overwrite it, name \
                         it with --disk {}={} or allow any non-blank disk with \
                         --overwrite-non-blank (rewind.overwrite=any)",
                        p.contents, d.name, p.path
                    )
                } else {
                    String::new()
                };
                format!("{} ({}): {reason}", p.path, human_bytes(p.size))
            })
            .collect();
        if why.is_empty() {
            why.push("no disks found".to_string());
        }
        problems.push(format!(
            "no disk for captured disk {} ({}, {} bytes, {}-byte sectors): {}",
            d.name,
            human_bytes(d.size),
            d.size,
            d.logical_sector_size,
            why.join("; ")
        ));
    }
    if !problems.is_empty() {
        let hint = if fit.shrinkable.is_empty() && problems.iter().any(|p| p.contains("too small"))
        {
            "\n(a smaller disk takes the layout shrunk when the data fits: --shrink, rewind.shrink=1 \
             or `rewind request --shrink`)"
        } else {
            ""
        };
        bail!(
            "{}\n(name the target with --disk CAPTURED=/dev/DISK){hint}",
            problems.join("\n")
        );
    }
    Ok(taken
        .into_iter()
        .enumerate()
        .filter_map(|(ci, t)| t.map(|(pi, by)| (ci, pi, by)))
        .collect())
}

fn map_explicitly(
    disks: &[Disk],
    present: &[PresentDisk],
    mapping: &[(String, String)],
    unfit: &dyn Fn(&Disk, &PresentDisk) -> Option<String>,
) -> Result<Vec<(usize, usize, MatchedBy)>> {
    let mut pairs: Vec<(usize, usize, MatchedBy)> = Vec::new();
    for (c, p) in mapping {
        let ci = disks
            .iter()
            .position(|d| &d.name == c || &d.path == c || d.serial.as_ref() == Some(c))
            .with_context(|| {
                let known: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
                format!(
                    "--disk {c}={p}: the manifest has no disk named {c} (its disks: {})",
                    known.join(", ")
                )
            })?;
        let pi = present
            .iter()
            .position(|d| &d.name == p || &d.path == p || d.serial.as_ref() == Some(p))
            .with_context(|| format!("--disk {c}={p}: no disk {p} on this machine"))?;
        let (d, t) = (&disks[ci], &present[pi]);
        if let Some(why) = &t.in_use {
            bail!(
                "--disk {c}={p}: {} is in use ({why}); refusing to write it",
                t.path
            );
        }
        if let Some(why) = unfit(d, t) {
            bail!(
                "captured disk {} ({}, {} bytes) does not fit on {} ({}, {} bytes): {why}",
                d.name,
                human_bytes(d.size),
                d.size,
                t.path,
                human_bytes(t.size),
                t.size
            );
        }
        if let Some((other, _, _)) = pairs.iter().find(|(o, q, _)| *o == ci || *q == pi) {
            bail!(
                "--disk {c}={p}: captured disk {} or {} is mapped twice (also with captured disk {})",
                d.name,
                t.path,
                disks[*other].name
            );
        }
        pairs.push((ci, pi, MatchedBy::Explicit));
    }
    pairs.sort_by_key(|(ci, _, _)| *ci);
    Ok(pairs)
}

fn disk_plan(
    m: &Manifest,
    d: &Disk,
    target: &PresentDisk,
    matched_by: MatchedBy,
    opts: &PlanOptions,
    notes: &mut Vec<String>,
) -> Result<DiskPlan> {
    // Another sector size: the same byte offsets in the target's sectors
    // (rescale.rs); every size below is in the target's sectors.
    let from = d.logical_sector_size;
    let ss = target.logical_sector_size;
    let captured_sectors = d.size / u64::from(ss);
    let sectors = target.size / u64::from(ss);
    // Captured LBAs stay where they were; only the end of the disk moves,
    // unless the disk is smaller and the layout shrinks (shrink.rs).
    ensure!(
        from == ss || sectors >= captured_sectors,
        "captured disk {}: {} is smaller and has {ss}-byte sectors where the captured disk had \
         {from}-byte ones: a layout moves to another sector size or shrinks, not both at once",
        d.name,
        target.path
    );
    let shrunk = (sectors < captured_sectors)
        .then(|| shrink::shrink(m, d, sectors))
        .transpose()?;
    let delta = sectors.saturating_sub(captured_sectors);
    let grow = opts.grow && delta > 0;
    let mut grown = None;
    if from != ss {
        notes.push(format!(
            "captured disk {}: {from}-byte sectors recreated on {ss}-byte sectors of {}: every \
             partition at the same byte offsets, its LBAs rescaled",
            d.name, target.path
        ));
    }

    let table = match (&d.gpt, &d.mbr) {
        (Some(g), _) => {
            let mut layout = if from == ss {
                // The usable area ends as far from the disk's end as it did.
                gpt_layout(
                    g,
                    (g.last_usable_lba + sectors).saturating_sub(captured_sectors),
                    sectors,
                )
            } else {
                rescale::rescale_gpt(
                    &gpt_layout(g, g.last_usable_lba, sectors),
                    from,
                    ss,
                    sectors,
                )?
            };
            if let Some(s) = &shrunk {
                s.apply_gpt(&mut layout.partitions);
            }
            if grow && let Some(last) = layout.partitions.iter_mut().max_by_key(|p| p.last_lba) {
                let was = last.last_lba - last.first_lba + 1;
                let end = (last.last_lba + delta).min(layout.last_usable_lba);
                if end > last.last_lba {
                    last.last_lba = end;
                    grown = Some(Grown {
                        partition: last.number,
                        from_sectors: was,
                        to_sectors: end - last.first_lba + 1,
                    });
                }
            }
            layout.check(sectors, ss)?;
            Table::Gpt(layout)
        }
        (None, Some(mbr)) => {
            let mut parts = if from == ss {
                mbr_layout(mbr).partitions
            } else {
                rescale::rescale_mbr(&mbr_layout(mbr), from, ss)?.partitions
            };
            if let Some(s) = &shrunk {
                s.apply_mbr(&mut parts);
            }
            if grow {
                grown = grow_mbr(&mut parts, delta, sectors);
                if grown.is_none() {
                    notes.push(format!(
                        "captured disk {}: the MBR cannot address past 2 TiB; nothing grown",
                        d.name
                    ));
                }
            }
            let layout = MbrLayout {
                signature: mbr.signature.value(),
                partitions: parts,
            };
            layout.check(sectors)?;
            Table::Mbr(layout)
        }
        (None, None) => Table::None,
    };
    if let Some(code) = &d.boot_code {
        super::table::boot_code_bytes(code)?;
    }

    // Volumes: every partition but the extended container, or the disk.
    let parts: Vec<(u32, u64, u64)> = match &table {
        Table::Gpt(g) => g
            .partitions
            .iter()
            .map(|p| (p.number, p.first_lba, p.last_lba - p.first_lba + 1))
            .collect(),
        Table::Mbr(t) => t
            .partitions
            .iter()
            .filter(|p| p.kind != MbrKind::Extended)
            .map(|p| (p.number, p.start_lba, p.sectors))
            .collect(),
        Table::None => Vec::new(),
    };
    let mut volumes = Vec::new();
    let on_disk = |number: Option<u32>| {
        let fs = m
            .filesystems
            .iter()
            .find(|f| f.disk.as_deref() == Some(&d.name) && f.partition == number);
        let swap = m
            .swaps
            .iter()
            .find(|s| s.disk.as_deref() == Some(&d.name) && s.partition == number);
        (fs, swap)
    };
    let mut content_of = |number: Option<u32>, device: &str, is_grown: bool| -> Option<Content> {
        match on_disk(number) {
            (Some(fs), _) => {
                // On a shrunk partition: the filesystem with its new sizes.
                let resized = shrunk.as_ref().and_then(|s| s.resized(number, fs));
                let mut fs = resized.clone().unwrap_or_else(|| fs.clone());
                if from != ss {
                    // mkfs is told the new sector size; what it makes is
                    // checked against these parameters.
                    let (fs_type, changes) = rescale::filesystem(&fs.fs_type, from, ss, device);
                    notes.extend(changes);
                    fs.fs_type = fs_type;
                }
                Some(filesystem_content(
                    &fs,
                    device,
                    is_grown,
                    resized.is_some(),
                    opts,
                    notes,
                ))
            }
            (None, Some(sw)) => Some(Content::Swap {
                uuid: sw.uuid.clone(),
                commands: crate::fs::swap::commands(&sw.uuid, sw.label.as_deref(), device),
            }),
            (None, None) => None,
        }
    };
    if matches!(table, Table::None)
        && let Some(content) = content_of(None, &target.path, grow)
    {
        volumes.push(Volume {
            device: target.path.clone(),
            partition: None,
            first_lba: 0,
            sectors,
            content,
        });
    }
    for (number, first_lba, n) in parts {
        let device = partition_path(&target.path, number);
        let is_grown = grown.as_ref().is_some_and(|g| g.partition == number);
        let content = content_of(Some(number), &device, is_grown).unwrap_or(Content::Raw);
        volumes.push(Volume {
            device,
            partition: Some(number),
            first_lba,
            sectors: n,
            content,
        });
    }

    let boot_gap = d
        .boot_gap
        .as_ref()
        .and_then(|g| rescale::boot_gap(g, from, ss));
    if d.boot_gap.is_some() && boot_gap.is_none() {
        notes.push(format!(
            "captured disk {}: its boot gap (BIOS GRUB's core.img) addresses the disk in \
             {from}-byte sectors: not copied; GRUB is reinstalled on {}",
            d.name, target.path
        ));
    }
    if let Some(gap) = &boot_gap {
        let first_part = volumes
            .iter()
            .filter(|v| v.partition.is_some())
            .map(|v| v.first_lba)
            .chain(match &table {
                Table::Mbr(t) => t.partitions.iter().map(|p| p.start_lba).min(),
                _ => None,
            })
            .min()
            .unwrap_or(sectors);
        ensure!(
            gap.first_lba >= 1 && gap.first_lba <= gap.last_lba && gap.last_lba < first_part,
            "boot gap LBA {}..{} overlaps LBA 0 or the first partition (LBA {first_part})",
            gap.first_lba,
            gap.last_lba
        );
    }

    Ok(DiskPlan {
        captured: d.name.clone(),
        captured_size: d.size,
        target: target.clone(),
        matched_by,
        sector_size: ss,
        captured_sector_size: from,
        table,
        boot_code: d.boot_code.clone(),
        boot_gap,
        grown,
        shrunk,
        volumes,
    })
}

/// What a captured filesystem becomes on `device`: mkfs and its tuning,
/// the subvolumes to create, and the parameters to check the result with.
fn filesystem_content(
    fs: &Filesystem,
    device: &str,
    is_grown: bool,
    resized: bool,
    opts: &PlanOptions,
    notes: &mut Vec<String>,
) -> Content {
    Content::Filesystem {
        fs_type: fs.fs_type.name().to_string(),
        uuid: fs.uuid.clone(),
        label: fs.label.clone(),
        commands: fs.fs_type.mkfs_commands(
            &MkfsTarget {
                device,
                uuid: &fs.uuid,
                label: fs.label.as_deref(),
                grow: is_grown,
                tools: &opts.tools,
            },
            notes,
        ),
        // Every subvolume the manifest lists (schema 2), in id
        // order; otherwise those the mounts name.
        subvolumes: if fs.subvolumes.is_empty() {
            fs.mounts
                .iter()
                .filter(|mt| matches!(fs.fs_type, FsType::Btrfs(_)) && mt.root != "/")
                .map(|mt| mt.root.clone())
                .collect()
        } else {
            fs.subvolumes
                .iter()
                .map(|s| format!("/{}", s.path))
                .collect()
        },
        grown: is_grown || resized,
        captured: Box::new(fs.clone()),
    }
}

/// The captured GPT as a layout with `last_usable` and its backup header
/// at the end of a disk of `sectors` sectors (in the captured sectors).
pub(super) fn gpt_layout(g: &crate::manifest::Gpt, last_usable: u64, sectors: u64) -> GptLayout {
    let mut partitions: Vec<GptEntry> = g
        .partitions
        .iter()
        .map(|p| GptEntry {
            number: p.number,
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            type_guid: p.type_guid.clone(),
            guid: p.guid.clone(),
            name: p.name.clone(),
            attributes: p.attributes,
        })
        .collect();
    partitions.sort_by_key(|p| p.number);
    GptLayout {
        disk_guid: g.disk_guid.clone(),
        first_usable_lba: g.first_usable_lba,
        last_usable_lba: last_usable,
        entries: g.entries,
        backup_lba: sectors.saturating_sub(1),
        partitions,
    }
}

/// The captured MBR as a layout.
pub(super) fn mbr_layout(mbr: &crate::manifest::Mbr) -> MbrLayout {
    MbrLayout {
        signature: mbr.signature.value(),
        partitions: mbr
            .partitions
            .iter()
            .map(|p| MbrEntry {
                number: p.number,
                kind: p.kind,
                type_byte: p.type_byte.value(),
                boot: p.boot,
                start_lba: p.start_lba,
                sectors: p.sectors,
                ebr_lba: p.ebr_lba,
            })
            .collect(),
    }
}

/// Grow the MBR partition that ends last by `delta` sectors (and the
/// extended partition around it), within the MBR's 2^32-sector reach.
fn grow_mbr(parts: &mut [MbrEntry], delta: u64, sectors: u64) -> Option<Grown> {
    let limit = sectors.min(1 << 32);
    let last = parts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind != MbrKind::Extended)
        .max_by_key(|(_, p)| p.start_lba + p.sectors)
        .map(|(i, _)| i)?;
    let end = parts[last].start_lba + parts[last].sectors;
    let new_end = (end + delta).min(limit);
    if new_end <= end {
        return None;
    }
    let grow_by = new_end - end;
    let from = parts[last].sectors;
    parts[last].sectors += grow_by;
    if parts[last].kind == MbrKind::Logical
        && let Some(ext) = parts.iter_mut().find(|p| p.kind == MbrKind::Extended)
    {
        let ext_end = (ext.start_lba + ext.sectors).max(new_end).min(limit);
        ext.sectors = ext_end - ext.start_lba;
    }
    Some(Grown {
        partition: parts[last].number,
        from_sectors: from,
        to_sectors: from + grow_by,
    })
}

/// Mounts of the recreated filesystems, parents first.
fn mount_steps(
    disks: &[DiskPlan],
    stack_volumes: &[super::stack::StackVolume],
    opts: &PlanOptions,
) -> Vec<MountStep> {
    let mut steps = Vec::new();
    let on_disks = disks
        .iter()
        .flat_map(|d| d.volumes.iter().map(|v| (&v.device, &v.content)));
    let on_stack = stack_volumes.iter().map(|v| (&v.device, &v.content));
    {
        for (device, content) in on_disks.chain(on_stack) {
            let Content::Filesystem {
                fs_type, captured, ..
            } = content
            else {
                continue;
            };
            for mt in &captured.mounts {
                let skipped = opts
                    .skip_mount
                    .iter()
                    .any(|t| t == fs_type)
                    .then(|| format!("{fs_type} is in --skip-mount"));
                steps.push(MountStep {
                    device: device.clone(),
                    fs_type: fs_type.clone(),
                    point: mt.point.clone(),
                    target: under(&opts.target_root, &mt.point).display().to_string(),
                    options: recovery_options(&mt.options, fs_type, &mt.root),
                    skipped,
                });
            }
        }
    }
    steps.sort_by_key(|s| order_key(&s.point));
    steps
}

/// The captured fstab options, made fit for a restore: `ro` goes (the
/// restore writes), options only mount(8) or systemd understand go, and a
/// btrfs subvolume is named by path (`subvol=`), never by its old id.
pub fn recovery_options(captured: &str, fs_type: &str, root: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for o in captured.split(',') {
        let key = o.split('=').next().unwrap_or_default();
        let userspace = matches!(
            key,
            "defaults"
                | "auto"
                | "noauto"
                | "user"
                | "nouser"
                | "users"
                | "owner"
                | "group"
                | "nofail"
                | "_netdev"
                | "comment"
                | "loop"
        ) || key.starts_with("x-")
            || key.starts_with("X-");
        let stale = fs_type == "btrfs" && matches!(key, "subvolid" | "subvol");
        if o.is_empty()
            || o == "ro"
            || o == "rw"
            || userspace
            || stale
            || out.iter().any(|x| x == o)
        {
            continue;
        }
        out.push(o.to_string());
    }
    if fs_type == "btrfs" && root != "/" {
        out.push(format!("subvol={root}"));
    }
    out.insert(0, "rw".to_string());
    out.join(",")
}

/// Sort key that puts a mount point after every mount point above it.
pub fn order_key(point: &str) -> (usize, String) {
    let depth = point.split('/').filter(|c| !c.is_empty()).count();
    (depth, point.to_string())
}

/// `point` (absolute, captured) placed under `root`.
pub fn under(root: &Path, point: &str) -> PathBuf {
    let rel = point.trim_start_matches('/');
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// An argv as a shell line.
pub fn argv_line(a: &[String]) -> String {
    let (p, rest) = a
        .split_first()
        .map(|(p, r)| (p.as_str(), r))
        .unwrap_or(("", &[]));
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    display_argv(p, &rest)
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan: snapshot {} of {}, {} disk(s), mounted under {}",
            self.snapshot,
            self.host,
            self.disks.len(),
            self.target_root
        )?;
        for d in &self.disks {
            let t = &d.target;
            writeln!(
                f,
                "disk {} ({}) -> {} ({}{}): {}",
                d.captured,
                human_bytes(d.captured_size),
                t.path,
                human_bytes(t.size),
                t.serial
                    .as_ref()
                    .map(|s| format!(", serial {s}"))
                    .unwrap_or_default(),
                d.matched_by
            )?;
            writeln!(
                f,
                "  wipe {}: wipefs -a, zero its first and last MiB and both ends of every partition",
                t.path
            )?;
            let ss = u64::from(d.sector_size);
            if d.captured_sector_size != d.sector_size {
                writeln!(
                    f,
                    "  sector size {} -> {} bytes: every partition at its captured byte offsets, LBAs rescaled",
                    d.captured_sector_size, d.sector_size
                )?;
            }
            match &d.table {
                Table::Gpt(g) => {
                    writeln!(
                        f,
                        "  gpt disk-guid {}, {} entries, usable LBA {}..{}, backup header at LBA {}",
                        g.disk_guid, g.entries, g.first_usable_lba, g.last_usable_lba, g.backup_lba
                    )?;
                    for p in &g.partitions {
                        writeln!(
                            f,
                            "    partition {}: LBA {}..{} ({}), type {}, guid {}, name {:?}, attributes {}",
                            p.number,
                            p.first_lba,
                            p.last_lba,
                            human_bytes((p.last_lba - p.first_lba + 1) * ss),
                            p.type_guid,
                            p.guid,
                            p.name,
                            p.attributes
                        )?;
                    }
                }
                Table::Mbr(t) => {
                    writeln!(f, "  mbr signature 0x{:08x}", t.signature)?;
                    for p in &t.partitions {
                        let kind = match p.kind {
                            MbrKind::Primary => "primary",
                            MbrKind::Extended => "extended",
                            MbrKind::Logical => "logical",
                        };
                        writeln!(
                            f,
                            "    partition {} {kind}: start {}, {} sectors ({}), type 0x{:02x}{}{}",
                            p.number,
                            p.start_lba,
                            p.sectors,
                            human_bytes(p.sectors * ss),
                            p.type_byte,
                            if p.boot { ", bootable" } else { "" },
                            p.ebr_lba
                                .map(|e| format!(", EBR at LBA {e}"))
                                .unwrap_or_default()
                        )?;
                    }
                }
                Table::None => writeln!(f, "  no partition table")?,
            }
            if let Some(g) = &d.grown {
                writeln!(
                    f,
                    "  grow partition {} from {} to {} sectors ({} -> {})",
                    g.partition,
                    g.from_sectors,
                    g.to_sectors,
                    human_bytes(g.from_sectors * ss),
                    human_bytes(g.to_sectors * ss)
                )?;
            }
            if let Some(s) = &d.shrunk {
                write!(f, "{s}")?;
            }
            if d.boot_code.is_some() {
                writeln!(f, "  boot code: the captured 440 bytes into LBA 0")?;
                if d.captured_sector_size != d.sector_size {
                    // GRUB's core image is reinstalled (bootloader::grub);
                    // another loader's code may count sectors of the old size.
                    writeln!(
                        f,
                        "  note: that code was written for {}-byte sectors: GRUB's is reinstalled; \
                         another boot loader's must be reinstalled on this {}-byte-sector disk",
                        d.captured_sector_size, d.sector_size
                    )?;
                }
            }
            if let Some(gap) = &d.boot_gap {
                writeln!(
                    f,
                    "  raw boot gap LBA {}..{}: from the snapshot",
                    gap.first_lba, gap.last_lba
                )?;
            }
            for v in &d.volumes {
                match &v.content {
                    Content::Filesystem {
                        fs_type,
                        commands,
                        subvolumes,
                        ..
                    } => {
                        writeln!(f, "  {fs_type} on {}:", v.device)?;
                        for c in commands {
                            writeln!(f, "    {}", argv_line(c))?;
                        }
                        for s in subvolumes {
                            writeln!(f, "    btrfs subvolume create {s}")?;
                        }
                    }
                    Content::Swap { commands, .. } => {
                        writeln!(f, "  swap on {}:", v.device)?;
                        for c in commands {
                            writeln!(f, "    {}", argv_line(c))?;
                        }
                    }
                    Content::Raw => writeln!(
                        f,
                        "  raw {} ({}): its bytes from the snapshot",
                        v.device,
                        human_bytes(v.sectors * ss)
                    )?,
                }
            }
        }
        if !self.stack.is_empty() {
            writeln!(f, "storage stack, in this order:")?;
        }
        for step in &self.stack {
            let on: Vec<String> = step.on.iter().map(|(r, p)| format!("{r} = {p}")).collect();
            writeln!(
                f,
                "  {} -> {} on {}:",
                step.layer,
                step.device,
                on.join(", ")
            )?;
            for c in &step.commands {
                writeln!(f, "    {}", argv_line(c))?;
            }
        }
        for v in &self.stack_volumes {
            match &v.content {
                Content::Filesystem {
                    fs_type,
                    commands,
                    subvolumes,
                    ..
                } => {
                    writeln!(f, "  {fs_type} on {} ({}):", v.reference, v.device)?;
                    for c in commands {
                        writeln!(f, "    {}", argv_line(c))?;
                    }
                    for s in subvolumes {
                        writeln!(f, "    btrfs subvolume create {s}")?;
                    }
                }
                Content::Swap { commands, .. } => {
                    writeln!(f, "  swap on {} ({}):", v.reference, v.device)?;
                    for c in commands {
                        writeln!(f, "    {}", argv_line(c))?;
                    }
                }
                Content::Raw => {}
            }
        }
        if !self.mounts.is_empty() {
            writeln!(f, "mount under {}:", self.target_root)?;
            for mt in &self.mounts {
                match &mt.skipped {
                    None => writeln!(
                        f,
                        "  {} on {} ({}, {})",
                        mt.device, mt.target, mt.fs_type, mt.options
                    )?,
                    Some(why) => {
                        writeln!(f, "  {} on {}: not mounted ({why})", mt.device, mt.target)?
                    }
                }
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

pub mod rescale;
pub mod shrink;

#[cfg(test)]
pub(crate) mod tests;
