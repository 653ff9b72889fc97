//! The disks present on this machine, read from sysfs, and whether each one
//! is in use. A disk in use (it holds a mounted filesystem, active swap, a
//! device-mapper or md member, or backs a loop device) is never written: it
//! is the running system or the medium it booted from.
//!
//! Only sysfs and /proc are read here; no disk is opened.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::probe::disks::{list_disks, read_attr};
use crate::probe::fs::{parse_mountinfo, parse_proc_swaps};

/// A disk recovery could write to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PresentDisk {
    /// Kernel name (`sdb`, `nvme0n1`, `loop3`).
    pub name: String,
    /// `/dev/NAME`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    pub logical_sector_size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Removable media (a USB stick, perhaps the one recovery booted from):
    /// never chosen automatically, only when named with `--disk`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub removable: bool,
    /// Why the disk must not be written, when it is in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<String>,
}

/// Every disk a capture would cover (hardware-backed disks), plus the
/// disks named in `extra` (kernel names, e.g. loop devices named in an
/// explicit mapping), each with its in-use state.
pub fn present_disks(sys: &Path, proc: &Path, extra: &[String]) -> Result<Vec<PresentDisk>> {
    let mut names = list_disks(sys)?;
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let usage = usage(sys, proc)?;
    names
        .iter()
        .map(|name| {
            let mut d = describe(sys, name)?;
            d.in_use = usage.get(name).cloned();
            Ok(d)
        })
        .collect()
}

/// Identity and geometry of one disk from /sys/block/NAME.
pub fn describe(sys: &Path, name: &str) -> Result<PresentDisk> {
    let base = sys.join("block").join(name);
    let sectors: u64 = read_attr(&base, "size")
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("cannot read the size of {name} from {}", base.display()))?;
    let logical = read_attr(&base, "queue/logical_block_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    Ok(PresentDisk {
        name: name.to_string(),
        path: format!("/dev/{name}"),
        size: sectors * 512, // sysfs counts 512-byte units whatever the sector size
        logical_sector_size: logical,
        model: read_attr(&base, "device/model"),
        serial: serial(&base),
        wwn: read_attr(&base, "wwid").or_else(|| read_attr(&base, "device/wwid")),
        removable: read_attr(&base, "removable").as_deref() == Some("1"),
        in_use: None,
    })
}

/// The serial as capture records it (sysfs `serial`, `device/serial`, or the
/// SCSI Unit Serial Number VPD page), so that the two compare equal.
fn serial(base: &Path) -> Option<String> {
    read_attr(base, "serial")
        .or_else(|| read_attr(base, "device/serial"))
        .or_else(|| {
            let page = std::fs::read(base.join("device/vpd_pg80")).ok()?;
            let s = String::from_utf8_lossy(page.get(4..)?)
                .trim_matches(['\0', ' '])
                .to_string();
            (!s.is_empty()).then_some(s)
        })
}

/// Disk name → why it is in use, for every disk in use on this system.
pub fn usage(sys: &Path, proc: &Path) -> Result<BTreeMap<String, String>> {
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    let mut mark = |disk: Option<String>, why: String| {
        if let Some(d) = disk {
            used.entry(d).or_insert(why);
        }
    };

    let mountinfo_path = proc.join("self/mountinfo");
    let text = std::fs::read_to_string(&mountinfo_path)
        .with_context(|| format!("cannot read {}", mountinfo_path.display()))?;
    for mi in parse_mountinfo(&text)
        .with_context(|| format!("cannot parse {}", mountinfo_path.display()))?
    {
        let why = format!("{} is mounted at {}", mi.source, mi.mount_point);
        // btrfs mounts carry an anonymous device number: use the source too.
        mark(disk_of_dev(sys, (mi.major, mi.minor)), why.clone());
        if mi.source.starts_with("/dev/") {
            mark(disk_of_node(sys, Path::new(&mi.source)), why);
        }
    }

    if let Ok(text) = std::fs::read_to_string(proc.join("swaps")) {
        for dev in parse_proc_swaps(&text) {
            mark(
                disk_of_node(sys, Path::new(&dev)),
                format!("{dev} is active swap"),
            );
        }
    }

    let block = sys.join("block");
    for name in sorted_entries(&block)? {
        let base = block.join(&name);
        // Holders of the disk or of any of its partitions: dm (LVM, LUKS,
        // multipath) or md RAID members.
        let mut holders = entries(&base.join("holders"));
        for part in entries(&base) {
            if base.join(&part).join("partition").exists() {
                holders.extend(entries(&base.join(&part).join("holders")));
            }
        }
        if let Some(h) = holders.first() {
            mark(
                Some(name.clone()),
                format!("held by {h} (device-mapper or md)"),
            );
        }
        // A loop device whose backing file is a disk (or one of its
        // partitions) keeps that disk busy.
        if let Some(backing) = read_attr(&base, "loop/backing_file") {
            mark(
                disk_of_node(sys, Path::new(&backing)),
                format!("backs loop device {name}"),
            );
        }
    }
    Ok(used)
}

/// The whole disk holding block device `dev` (a disk or a partition).
fn disk_of_dev(sys: &Path, dev: (u32, u32)) -> Option<String> {
    if dev.0 == 0 {
        return None; // anonymous (tmpfs, proc, btrfs subvolumes)
    }
    let link = sys.join(format!("dev/block/{}:{}", dev.0, dev.1));
    let real = std::fs::canonicalize(link).ok()?;
    let dir = if real.join("partition").exists() {
        real.parent()?.to_path_buf()
    } else {
        real
    };
    Some(dir.file_name()?.to_string_lossy().into_owned())
}

/// The whole disk holding the block device node at `path`.
fn disk_of_node(sys: &Path, path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let dev = (
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    );
    disk_of_dev(sys, dev)
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn sorted_entries(dir: &Path) -> Result<Vec<String>> {
    std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut v = entries(dir);
    v.sort();
    Ok(v)
}

/// The device node of partition `number` of disk `disk_path`, as the kernel
/// names it: `sda1`, but `nvme0n1p1`, `loop0p1`, `mmcblk0p1` when the disk
/// name ends in a digit.
pub fn partition_path(disk_path: &str, number: u32) -> String {
    if disk_path.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk_path}p{number}")
    } else {
        format!("{disk_path}{number}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(partition_path("/dev/sda", 1), "/dev/sda1");
        assert_eq!(partition_path("/dev/nvme0n1", 2), "/dev/nvme0n1p2");
        assert_eq!(partition_path("/dev/loop7", 5), "/dev/loop7p5");
        assert_eq!(partition_path("/dev/vdb", 12), "/dev/vdb12");
    }

    /// A fake sysfs/proc pair: sda holds the mounted root, sdb is free, sdc
    /// holds an LVM PV, sdd backs a loop device, sde holds active swap.
    #[test]
    fn in_use_from_mounts_swap_holders_and_loops() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let proc = t.path().join("proc");
        let write = |p: PathBuf, s: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        for (name, dev) in [
            ("sda", "8:0"),
            ("sdb", "8:16"),
            ("sdc", "8:32"),
            ("sdd", "8:48"),
        ] {
            let d = sys.join("devices").join(name);
            write(d.join("dev"), dev);
            write(d.join("size"), "2048");
            std::fs::create_dir_all(d.join("holders")).unwrap();
            std::fs::create_dir_all(d.join("device")).unwrap();
            std::fs::create_dir_all(sys.join("block")).unwrap();
            std::os::unix::fs::symlink(&d, sys.join("block").join(name)).unwrap();
            std::fs::create_dir_all(sys.join("dev/block")).unwrap();
            std::os::unix::fs::symlink(&d, sys.join("dev/block").join(dev)).unwrap();
        }
        // sda2 is a partition of sda, mounted as /.
        let sda2 = sys.join("devices/sda/sda2");
        write(sda2.join("partition"), "2");
        write(sda2.join("dev"), "8:2");
        std::os::unix::fs::symlink(&sda2, sys.join("dev/block/8:2")).unwrap();
        // sdc1 is held by dm-0.
        let sdc1 = sys.join("devices/sdc/sdc1");
        write(sdc1.join("partition"), "1");
        write(sdc1.join("holders/dm-0"), "");
        // loop0 is backed by a file on... sdd (given as a block node we
        // cannot make here, so by a path that is no block device: ignored)
        // and loop1 by nothing.
        let loop0 = sys.join("devices/loop0");
        write(loop0.join("dev"), "7:0");
        write(loop0.join("size"), "0");
        write(loop0.join("loop/backing_file"), "/nonexistent/image");
        std::os::unix::fs::symlink(&loop0, sys.join("block/loop0")).unwrap();
        write(
            proc.join("self/mountinfo"),
            "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n\
             23 22 0:21 / /proc rw - proc proc rw\n",
        );
        write(proc.join("swaps"), "Filename\tType\tSize\tUsed\tPriority\n");
        let u = usage(&sys, &proc).unwrap();
        assert_eq!(
            u.get("sda").map(String::as_str),
            Some("/dev/sda2 is mounted at /")
        );
        assert!(u["sdc"].contains("dm-0"), "{u:?}");
        assert!(!u.contains_key("sdb") && !u.contains_key("sdd"), "{u:?}");

        let all = present_disks(&sys, &proc, &["loop0".to_string()]).unwrap();
        let names: Vec<_> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "sdb", "sdc", "sdd", "loop0"]);
        assert_eq!(all[1].size, 2048 * 512);
        assert_eq!(all[1].in_use, None);
        assert!(all[0].in_use.is_some());
    }

    #[test]
    fn this_machine_is_readable() {
        // The running system's root disk is in use, whatever it is.
        let u = usage(Path::new("/sys"), Path::new("/proc")).unwrap();
        let root = u.values().any(|why| why.ends_with(" at /"));
        if !root {
            eprintln!("note: / is not on a block device here: {u:?}");
        }
    }
}
