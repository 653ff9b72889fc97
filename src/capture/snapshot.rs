//! Reading each filesystem from a snapshot, so that what is restored existed
//! together at one instant (crash-consistent, as after a power cut):
//!
//! - btrfs: a read-only snapshot of the mounted subvolume at
//!   `<mount>/.rewind-snap-<pid>`; subvolumes nested below it (and not
//!   mounted elsewhere) are snapshotted into it at their places, each at its
//!   own instant. The capture hides `.rewind-snap-*` from every walk.
//! - ext2/3/4 and XFS on an LVM logical volume: a snapshot LV
//!   `rewind-snap-<pid>-<lv>` (thin LVs: a thin snapshot; others: a classic
//!   one sized `lvm-snapshot-percent` of the LV, capped by the VG's free
//!   space), mounted read-only under `/run/rewind/snap/<pid>/`. Device-mapper
//!   freezes the filesystem (as `fsfreeze` does) only while the snapshot is
//!   made.
//! - anything else (ext4/XFS on a plain partition, vfat): read live, and the
//!   manifest says so.
//!
//! A snapshot is removed when its filesystem has been read, on error too
//! ([`Taken`] removes it when dropped). One left behind by a capture that was
//! killed carries that capture's pid in its name: [`remove_leftovers`], at
//! the start of the next capture, removes every one whose process is gone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cmd;
use crate::manifest::{Filesystem, FsType, ReadMode, StackRef};

/// The name prefix of the capture's btrfs snapshots, and of its LVM ones.
pub const BTRFS_PREFIX: &str = ".rewind-snap-";
pub const LVM_PREFIX: &str = "rewind-snap-";
/// The tag every snapshot LV carries, to find leftovers.
pub const LVM_TAG: &str = "rewind-snapshot";
/// Where LVM snapshots are mounted.
pub const MOUNT_BASE: &str = crate::probe::fs::SNAPSHOT_MOUNTS;

#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Take no snapshot: read everything live.
    pub live: bool,
    /// Classic LVM snapshot size, percent of the LV (capped by VG free space).
    pub lvm_percent: u32,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            live: false,
            lvm_percent: 100,
        }
    }
}

/// A filesystem ready to be read: from a snapshot, or live.
#[derive(Debug)]
pub struct Taken {
    pub read: ReadMode,
    /// The directory to walk.
    pub root: PathBuf,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    None,
    /// Subvolumes to delete, in this order (nested ones first).
    Btrfs(Vec<PathBuf>),
    Lvm {
        mount_dir: PathBuf,
        mounted: bool,
        /// `vg/name`
        lv: String,
    },
}

impl Taken {
    fn live(point: &Path) -> Taken {
        Taken {
            read: ReadMode::Live,
            root: point.to_path_buf(),
            cleanup: Cleanup::None,
        }
    }

    /// Remove the snapshot now, reporting a failure.
    pub fn remove(mut self) -> Result<()> {
        let cleanup = std::mem::replace(&mut self.cleanup, Cleanup::None);
        remove(cleanup)
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        let cleanup = std::mem::replace(&mut self.cleanup, Cleanup::None);
        if let Err(e) = remove(cleanup) {
            eprintln!("rewind: warning: {e:#}");
        }
    }
}

fn remove(cleanup: Cleanup) -> Result<()> {
    match cleanup {
        Cleanup::None => Ok(()),
        Cleanup::Btrfs(subvolumes) => delete_btrfs(&subvolumes),
        Cleanup::Lvm {
            mount_dir,
            mounted,
            lv,
        } => {
            if mounted {
                cmd::run("umount", &[&mount_dir.to_string_lossy()])?;
            }
            let _ = std::fs::remove_dir(&mount_dir);
            cmd::run("lvremove", &["--yes", &lv]).map(|_| ())
        }
    }
}

/// Make `fs`, mounted at `point`, ready to read: a snapshot where its
/// storage allows one, or live. A snapshot that cannot be taken is a warning
/// and the filesystem is read live (recorded so).
pub fn take(
    fs: &Filesystem,
    point: &Path,
    read_only_mount: bool,
    opts: &SnapshotOptions,
    warnings: &mut Vec<String>,
) -> Taken {
    // A read-only mount does not change while it is read.
    if opts.live || read_only_mount {
        return Taken::live(point);
    }
    let taken = match (&fs.fs_type, &fs.volume) {
        (FsType::Btrfs(_), _) => take_btrfs(point),
        (
            FsType::Ext2(_) | FsType::Ext3(_) | FsType::Ext4(_) | FsType::Xfs(_),
            Some(StackRef::Lv(vg, lv)),
        ) => take_lvm(vg, lv, &fs.fs_type, opts.lvm_percent),
        _ => return Taken::live(point),
    };
    match taken {
        Ok(t) => t,
        Err(e) => {
            warnings.push(format!(
                "{} ({}) is read live, without a snapshot: {e:#}",
                point.display(),
                fs.device
            ));
            Taken::live(point)
        }
    }
}

// ---- btrfs ----

fn take_btrfs(point: &Path) -> Result<Taken> {
    let snap = point.join(format!("{BTRFS_PREFIX}{}", std::process::id()));
    let shown = |p: &Path| p.to_string_lossy().into_owned();
    let nested: Vec<String> = subvolumes_below(point)?
        .into_iter()
        .filter(|rel| !rel.split('/').any(|c| c.starts_with(BTRFS_PREFIX)))
        .filter(|rel| !is_mount_point(&point.join(rel)))
        .collect();
    if nested.is_empty() {
        cmd::run(
            "btrfs",
            &["subvolume", "snapshot", "-r", &shown(point), &shown(&snap)],
        )?;
        return Ok(Taken {
            read: ReadMode::BtrfsSnapshot,
            root: snap.clone(),
            cleanup: Cleanup::Btrfs(vec![snap]),
        });
    }
    // Nested subvolumes appear as empty directories in a snapshot: put a
    // snapshot of each at its place, in a writable snapshot made read-only
    // once complete.
    cmd::run(
        "btrfs",
        &["subvolume", "snapshot", &shown(point), &shown(&snap)],
    )?;
    let mut made = vec![snap.clone()];
    let mut fill = || -> Result<()> {
        // Parents sort before their children.
        for rel in &nested {
            let place = snap.join(rel);
            std::fs::remove_dir(&place)
                .with_context(|| format!("cannot replace {} by its snapshot", place.display()))?;
            cmd::run(
                "btrfs",
                &[
                    "subvolume",
                    "snapshot",
                    &shown(&point.join(rel)),
                    &shown(&place),
                ],
            )?;
            made.push(place);
        }
        for s in &made {
            cmd::run(
                "btrfs",
                &["property", "set", "-ts", &shown(s), "ro", "true"],
            )?;
        }
        Ok(())
    };
    let filled = fill();
    made.reverse();
    let taken = Taken {
        read: ReadMode::BtrfsSnapshot,
        root: snap,
        cleanup: Cleanup::Btrfs(made),
    };
    // On error, dropping `taken` deletes what was made.
    filled.map(|()| taken)
}

/// Delete subvolumes in order; read-only ones are made writable first, as
/// a subvolume inside a read-only one cannot be deleted.
fn delete_btrfs(subvolumes: &[PathBuf]) -> Result<()> {
    let nested = subvolumes.len() > 1;
    let mut first_error = None;
    for s in subvolumes.iter().rev().filter(|_| nested) {
        let _ = cmd::run(
            "btrfs",
            &[
                "property",
                "set",
                "-ts",
                &s.to_string_lossy(),
                "ro",
                "false",
            ],
        );
    }
    for s in subvolumes {
        if let Err(e) = cmd::run("btrfs", &["subvolume", "delete", &s.to_string_lossy()]) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e.context("a capture snapshot was not removed; the next capture retries")),
        None => Ok(()),
    }
}

/// Every subvolume below the one mounted at `point`, as paths relative to
/// it, sorted (a parent before its children). `btrfs subvolume list` prints
/// paths from the top level, or (btrfs-progs 6, for those below a mounted
/// subvolume) from the mount: both readings are tried, and a path is kept
/// only if it is a subvolume's root below `point` (inode 256).
fn subvolumes_below(point: &Path) -> Result<Vec<String>> {
    let p = point.to_string_lossy();
    let show = cmd::run("btrfs", &["subvolume", "show", &p])?;
    // The first line is the mounted subvolume's path from the top level,
    // `/` for the top level itself.
    let mounted = show.lines().next().unwrap_or("/").trim().trim_matches('/');
    let list = cmd::run("btrfs", &["subvolume", "list", &p])?;
    let mut out: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_once(" path ").map(|(_, path)| path.trim()))
        .flat_map(|path| {
            let below = match mounted {
                "" => None,
                m => path
                    .strip_prefix(m)
                    .and_then(|r| r.strip_prefix('/'))
                    .map(str::to_string),
            };
            [Some(path.to_string()), below]
        })
        .flatten()
        .filter(|rel| !rel.is_empty() && is_subvolume_root(&point.join(rel)))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// A btrfs subvolume's root directory is always inode 256.
fn is_subvolume_root(path: &Path) -> bool {
    rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::INO | rustix::fs::StatxFlags::TYPE,
    )
    .is_ok_and(|s| s.stx_ino == 256 && u32::from(s.stx_mode) & 0o170000 == 0o040000)
}

fn is_mount_point(path: &Path) -> bool {
    let Some(parent) = path.parent() else {
        return false;
    };
    let mnt = |p: &Path| {
        rustix::fs::statx(
            rustix::fs::CWD,
            p,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            rustix::fs::StatxFlags::MNT_ID,
        )
        .ok()
        .map(|s| s.stx_mnt_id)
    };
    matches!((mnt(path), mnt(parent)), (Some(a), Some(b)) if a != b)
}

// ---- LVM ----

#[derive(Debug, Deserialize)]
struct LvsReport {
    report: Vec<LvsSection>,
}

#[derive(Debug, Deserialize)]
struct LvsSection {
    #[serde(default)]
    lv: Vec<LvsRow>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct LvsRow {
    vg_name: String,
    lv_name: String,
    segtype: String,
    lv_size: String,
    vg_free: String,
    vg_extent_size: String,
}

fn lvs(args: &[&str]) -> Result<Vec<LvsRow>> {
    let mut argv = vec![
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "vg_name,lv_name,segtype,lv_size,vg_free,vg_extent_size",
    ];
    argv.extend_from_slice(args);
    let out = cmd::run("lvs", &argv)?;
    let report: LvsReport =
        serde_json::from_str(&out).context("cannot read the report of lvs --reportformat json")?;
    Ok(report.report.into_iter().flat_map(|s| s.lv).collect())
}

fn number(s: &str, what: &str) -> Result<u64> {
    s.trim()
        .parse()
        .with_context(|| format!("lvs reported {what} {s:?}, not a number of bytes"))
}

/// The size of a classic snapshot, in extents: `percent` of the LV, at
/// most the VG's free extents; an error says what to do when there are none.
fn classic_extents(row: &LvsRow, percent: u32) -> Result<u64> {
    let extent = number(&row.vg_extent_size, "extent size")?.max(1);
    let free = number(&row.vg_free, "free space")? / extent;
    let lv = number(&row.lv_size, "LV size")?.div_ceil(extent);
    let want = (lv * u64::from(percent)).div_ceil(100).max(1);
    if free == 0 {
        bail!(
            "volume group {} has no free space for a snapshot of {}: free some extents (pvresize, vgextend, lvreduce), or give --live to read it live",
            row.vg_name,
            row.lv_name
        );
    }
    Ok(want.min(free))
}

fn dm_path(vg: &str, lv: &str) -> String {
    format!(
        "/dev/mapper/{}-{}",
        vg.replace('-', "--"),
        lv.replace('-', "--")
    )
}

fn take_lvm(vg: &str, lv: &str, fs_type: &FsType, percent: u32) -> Result<Taken> {
    let origin = format!("{vg}/{lv}");
    let row = lvs(&[&origin])?
        .into_iter()
        .next()
        .with_context(|| format!("lvs does not know {origin}"))?;
    let pid = std::process::id();
    let name = format!("{LVM_PREFIX}{pid}-{lv}");
    let thin = row.segtype == "thin";
    let mut args = vec!["--snapshot", "--name", &name, "--addtag", LVM_TAG, "--yes"];
    let extents;
    let read = if thin {
        // Thin snapshots skip activation unless told otherwise.
        args.extend_from_slice(&["--setactivationskip", "n"]);
        ReadMode::LvmThinSnapshot
    } else {
        extents = classic_extents(&row, percent)?.to_string();
        args.extend_from_slice(&["--extents", &extents]);
        ReadMode::LvmSnapshot
    };
    args.push(&origin);
    cmd::run("lvcreate", &args)?;
    let mount_dir = PathBuf::from(format!("{MOUNT_BASE}/{pid}/{vg}-{lv}"));
    let mut taken = Taken {
        read,
        root: mount_dir.clone(),
        cleanup: Cleanup::Lvm {
            mount_dir: mount_dir.clone(),
            mounted: false,
            lv: format!("{vg}/{name}"),
        },
    };
    std::fs::create_dir_all(&mount_dir)
        .with_context(|| format!("cannot create {}", mount_dir.display()))?;
    // The snapshot has its origin's UUID, which XFS refuses twice.
    let options = match fs_type {
        FsType::Xfs(_) => "ro,nouuid",
        _ => "ro",
    };
    cmd::run(
        "mount",
        &[
            "-o",
            options,
            &dm_path(vg, &name),
            &mount_dir.to_string_lossy(),
        ],
    )?;
    if let Cleanup::Lvm { mounted, .. } = &mut taken.cleanup {
        *mounted = true;
    }
    Ok(taken)
}

// ---- leftovers ----

fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove the snapshots left by captures that are no longer running: btrfs
/// ones in `btrfs_points`, LVM ones (by tag) when `lvm` says there are
/// volume groups, and their mounts. Returns what was removed; a snapshot
/// that cannot be removed is a warning.
pub fn remove_leftovers(
    btrfs_points: &[PathBuf],
    lvm: bool,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let mut removed = Vec::new();
    for point in btrfs_points {
        let Ok(dir) = std::fs::read_dir(point) else {
            continue;
        };
        let leftovers: Vec<PathBuf> = dir
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(BTRFS_PREFIX))
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !pid_alive(pid))
            })
            .map(|e| e.path())
            .collect();
        for snap in leftovers {
            let name = snap.file_name().map(|n| n.to_string_lossy().into_owned());
            let nested: Vec<PathBuf> = match subvolumes_below(point) {
                Ok(all) => all
                    .into_iter()
                    .filter(|rel| {
                        name.as_ref()
                            .is_some_and(|n| rel.starts_with(&format!("{n}/")))
                    })
                    .map(|rel| point.join(rel))
                    .collect(),
                Err(_) => Vec::new(),
            };
            let mut order: Vec<PathBuf> = nested.into_iter().rev().collect();
            order.push(snap.clone());
            match delete_btrfs(&order) {
                Ok(()) => removed.push(snap.display().to_string()),
                Err(e) => warnings.push(format!("{e:#}")),
            }
        }
    }
    // Mounts of LVM snapshots whose capture is gone.
    if let Ok(base) = std::fs::read_dir(MOUNT_BASE) {
        for e in base.filter_map(|e| e.ok()) {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid_alive(pid) {
                continue;
            }
            for m in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                let _ = cmd::run("umount", &[&m.path().to_string_lossy()]);
                let _ = std::fs::remove_dir(m.path());
            }
            let _ = std::fs::remove_dir(e.path());
        }
    }
    if lvm {
        let rows = match lvs(&[&format!("@{LVM_TAG}")]) {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!("cannot look for leftover snapshot LVs: {e:#}"));
                Vec::new()
            }
        };
        for row in rows {
            let pid = row
                .lv_name
                .strip_prefix(LVM_PREFIX)
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(pid_alive) {
                continue;
            }
            let lv = format!("{}/{}", row.vg_name, row.lv_name);
            match cmd::run("lvremove", &["--yes", &lv]) {
                Ok(_) => removed.push(lv),
                Err(e) => warnings.push(format!(
                    "a snapshot LV left by an earlier capture was not removed: {e:#}"
                )),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(size: u64, free: u64) -> LvsRow {
        LvsRow {
            vg_name: "vg0".into(),
            lv_name: "root".into(),
            segtype: "linear".into(),
            lv_size: size.to_string(),
            vg_free: free.to_string(),
            vg_extent_size: (4u64 << 20).to_string(),
        }
    }

    #[test]
    fn a_classic_snapshot_fits_the_free_space() {
        let mib = 1u64 << 20;
        assert_eq!(
            classic_extents(&row(400 * mib, 1000 * mib), 100).unwrap(),
            100
        );
        assert_eq!(
            classic_extents(&row(400 * mib, 1000 * mib), 10).unwrap(),
            10
        );
        // Capped by the VG's free extents.
        assert_eq!(classic_extents(&row(400 * mib, 40 * mib), 100).unwrap(), 10);
        let e = classic_extents(&row(400 * mib, 2 * mib), 100).unwrap_err();
        assert!(
            e.to_string()
                .contains("volume group vg0 has no free space for a snapshot of root"),
            "{e}"
        );
    }

    #[test]
    fn lvs_json_is_read() {
        let json = r#"{"report":[{"lv":[{"vg_name":"vg0","lv_name":"root","segtype":"thin","lv_size":"1073741824","vg_free":"0","vg_extent_size":"4194304"}]}],"log":[]}"#;
        let r: LvsReport = serde_json::from_str(json).unwrap();
        assert_eq!(r.report[0].lv[0].segtype, "thin");
        assert_eq!(
            dm_path("vg-a", "rewind-snap-1-root"),
            "/dev/mapper/vg--a-rewind--snap--1--root"
        );
    }
}
