//! The disks present on this machine, read from sysfs, and whether each one
//! may be written. A disk in use (it holds a mounted filesystem, active swap,
//! a device-mapper or md member, or backs a loop device) is never written: it
//! is the running system. Neither is the medium the recovery image booted
//! from, found by the image's identity (not its label), nor one path of a
//! LUN reached by several (multipath): such a LUN is written through its
//! multipath device, or not at all.
//!
//! [`present_disks`] reads only sysfs and /proc; [`survey`] then opens each
//! free disk read-only to say what is on it ([`Contents`]): the plan writes a
//! disk that is not blank only when told to.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::probe::disks::{disk_hardware, list_disks, read_attr};
use crate::probe::fs::{parse_mountinfo, parse_proc_swaps};
use crate::util::size::human_bytes;

/// A disk recovery could write to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PresentDisk {
    /// Kernel name (`sdb`, `nvme0n1`, `loop3`, `dm-2` for a multipath LUN).
    pub name: String,
    /// `/dev/NAME` (`/dev/mapper/MAP` for a multipath LUN).
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
    /// Where the disk hangs in the machine's hardware: its sysfs device
    /// path (`devices/pci0000:00/0000:00:05.0/virtio2`), stable across
    /// boots of one machine; none for loop and device-mapper devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hw_path: Option<String>,
    /// The identifier of the partition table it holds, as blkid gives it
    /// (`PTUUID`: a GPT's disk GUID, an MBR's signature in 8 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
    /// `sata`, `sas`, `nvme`, `usb`, `fc`, `iscsi`, `virtio`, `scsi`,
    /// `mmc`, `multipath`, `loop` (see [`crate::probe::disks::DiskHardware`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The disk's kernel driver (`sd`, `virtio_blk`, `nvme`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The controller's driver (`ahci`, `virtio_scsi`, `nvme`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// Removable media (a USB stick, perhaps the one recovery booted from):
    /// never chosen automatically, only when named with `--disk`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub removable: bool,
    /// Why the disk must not be written, even when named: in use, the boot
    /// medium, one path of a multipath LUN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<String>,
    /// For a multipath device: the kernel names of its paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// What is on it.
    pub contents: Contents,
    /// The captured disk an interrupted run of the same recovery request,
    /// on this machine, chose this disk for ([`mark_chosen_before`]): the
    /// plan may take it for that captured disk again although it is not
    /// blank (the run left its half-made layout on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen_before: Option<String>,
}

impl Default for PresentDisk {
    /// A free, blank 512-byte-sector disk with no name: a base for test
    /// fixtures (`PresentDisk { name, path, size, ..Default::default() }`).
    fn default() -> Self {
        PresentDisk {
            name: String::new(),
            path: String::new(),
            size: 0,
            logical_sector_size: 512,
            model: None,
            serial: None,
            wwn: None,
            hw_path: None,
            table_id: None,
            transport: None,
            driver: None,
            controller: None,
            removable: false,
            in_use: None,
            paths: Vec::new(),
            contents: Contents::Blank,
            chosen_before: None,
        }
    }
}

impl PresentDisk {
    /// A free, blank disk `/dev/NAME` of `size` bytes (test fixtures).
    pub fn bare(name: &str, size: u64) -> PresentDisk {
        PresentDisk {
            name: name.to_string(),
            path: format!("/dev/{name}"),
            size,
            ..Default::default()
        }
    }

    /// Why the disk is chosen only when named (`--disk`), if it is: a
    /// removable medium, a SAN LUN (FC, iSCSI) or a multipath device, which
    /// other machines may share.
    pub fn named_only(&self) -> Option<String> {
        if self.removable {
            return Some("removable media, never chosen automatically".to_string());
        }
        match self.transport.as_deref() {
            Some("fc") => Some("a Fibre Channel LUN, never chosen automatically".to_string()),
            Some("iscsi") => Some("an iSCSI LUN, never chosen automatically".to_string()),
            Some("multipath") => Some(format!(
                "a multipath LUN ({} paths: {}), never chosen automatically",
                self.paths.len(),
                self.paths.join(", ")
            )),
            _ => None,
        }
    }
}

/// A present disk a recovery's plan chose for a captured one, as the
/// server keeps it on the request's claim (`POST /v1/recovery/disks`,
/// docs/api.md) before the first byte is written: so that when the run is
/// cut before its restore started (no resume journal yet), the same
/// machine's next boot for the same request may take exactly that disk
/// again although it is no longer blank. A disk is known again by its
/// serial and WWN (each as recorded, at least one) and its size. A disk
/// with neither (a virtio disk of a VM, often) is known by where it hangs
/// in the hardware, its size, and the partition table the plan writes on
/// it: the claim is bound to the machine, so the same slot of the same
/// machine, holding the very table identifier the cut run wrote, is that
/// run's disk (a disk put in its place holds another table, or none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskChoice {
    /// The manifest's name of the captured disk it took.
    pub captured: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Bytes.
    pub size: u64,
    /// [`PresentDisk::hw_path`], for a disk with neither serial nor WWN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw_path: Option<String>,
    /// The identifier of the partition table the plan writes on it
    /// ([`PresentDisk::table_id`]), for a disk with neither serial nor WWN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
}

impl DiskChoice {
    /// The record of `present` taking `captured`, where the plan writes a
    /// partition table identified by `table_id`; `None` when the disk could
    /// not be known again: neither serial nor WWN, and no hardware path or
    /// no partition table.
    pub fn of(captured: &str, present: &PresentDisk, table_id: Option<&str>) -> Option<DiskChoice> {
        let mut c = DiskChoice {
            captured: captured.to_string(),
            serial: present.serial.clone(),
            wwn: present.wwn.clone(),
            size: present.size,
            hw_path: None,
            table_id: None,
        };
        if c.serial.is_none() && c.wwn.is_none() {
            c.hw_path = Some(present.hw_path.clone()?);
            c.table_id = Some(table_id?.to_ascii_lowercase());
        }
        Some(c)
    }

    /// Whether `p` is the disk recorded: the same serial and WWN (as
    /// recorded: a recorded one must be present and equal, an absent one
    /// absent), at least one of them, and the same size; or, for a disk
    /// recorded with neither, one that has neither either, in the same
    /// place, of the same size, holding the recorded partition table.
    pub fn is(&self, p: &PresentDisk) -> bool {
        let same_ids_and_size = self.serial == p.serial && self.wwn == p.wwn && self.size == p.size;
        if self.serial.is_some() || self.wwn.is_some() {
            return same_ids_and_size;
        }
        same_ids_and_size
            && self.hw_path.is_some()
            && self.hw_path == p.hw_path
            && self.table_id.is_some()
            && p.table_id.as_deref().map(str::to_ascii_lowercase) == self.table_id
    }

    /// How the console names the disk it was known by.
    fn known_by(&self) -> String {
        match (&self.serial, &self.wwn, &self.hw_path) {
            (Some(s), _, _) => format!("serial {s}"),
            (None, Some(w), _) => format!("WWN {w}"),
            (None, None, Some(h)) => format!(
                "no serial: at {h}, holding partition table {}",
                self.table_id.as_deref().unwrap_or("?")
            ),
            (None, None, None) => "?".to_string(),
        }
    }
}

/// Mark the present disks an interrupted run of this request chose
/// (`earlier`, from the server's claim record): each free disk that is
/// exactly one record's disk, and the only such present disk, may take
/// that record's captured disk again ([`PresentDisk::chosen_before`]).
/// Nothing else changes: every other disk is chosen by the usual rules.
/// Returns what was marked, for the console.
pub fn mark_chosen_before(disks: &mut [PresentDisk], earlier: &[DiskChoice]) -> Vec<String> {
    let mut said = Vec::new();
    for c in earlier {
        let matching: Vec<usize> = (0..disks.len()).filter(|&i| c.is(&disks[i])).collect();
        match matching.as_slice() {
            [i] if disks[*i].in_use.is_none() => {
                let d = &mut disks[*i];
                d.chosen_before = Some(c.captured.clone());
                said.push(format!(
                    "{} ({}, {}) was chosen for captured disk {} by an interrupted run of this request: it may take it again although it is not blank ({})",
                    d.path,
                    human_bytes(d.size),
                    c.known_by(),
                    c.captured,
                    d.contents
                ));
            }
            [i] => said.push(format!(
                "{} was chosen for captured disk {} by an interrupted run of this request, but it is in use now: not taken",
                disks[*i].path, c.captured
            )),
            [] => {}
            many => said.push(format!(
                "{} disks match what an interrupted run of this request chose for captured disk {} ({}): none is taken on that ground",
                many.len(),
                c.captured,
                many.iter()
                    .map(|&i| disks[i].path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    said
}

/// What a disk holds, as far as recovery can tell without writing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "what", rename_all = "kebab-case")]
pub enum Contents {
    /// No signature blkid knows, and only zeros in its first and last MiB.
    Blank,
    /// What is on it: its partition table, each partition's filesystem and
    /// label, or unrecognised data.
    Holds(Vec<String>),
    /// Not examined (in use), or it could not be read: treated as not blank.
    Unknown(String),
}

impl Contents {
    pub fn is_blank(&self) -> bool {
        matches!(self, Contents::Blank)
    }
}

impl std::fmt::Display for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Contents::Blank => f.write_str("blank"),
            Contents::Holds(what) => f.write_str(&what.join("; ")),
            Contents::Unknown(why) => write!(f, "contents unknown ({why})"),
        }
    }
}

/// Every disk a capture would cover (hardware-backed disks), every
/// multipath device, plus the disks named in `extra` (kernel names, e.g.
/// loop devices named in an explicit mapping), each with its in-use state.
/// Reads sysfs and /proc only: [`Contents`] is left `Unknown`.
pub fn present_disks(sys: &Path, proc: &Path, extra: &[String]) -> Result<Vec<PresentDisk>> {
    let mut names = list_disks(sys)?;
    let multipath = multipath_devices(sys);
    for name in multipath.keys().chain(extra) {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let usage = usage(sys, proc)?;
    let mut disks: Vec<PresentDisk> = names
        .iter()
        .map(|name| {
            let mut d = describe(sys, name)?;
            d.in_use = usage.get(name).cloned();
            if let Some((map, paths)) = multipath.get(name) {
                d.path = format!("/dev/mapper/{map}");
                d.paths = paths.clone();
            }
            Ok(d)
        })
        .collect::<Result<_>>()?;
    mark_lun_paths(&mut disks);
    Ok(disks)
}

/// The multipath devices: `dm-N` → (map name, its paths' kernel names).
fn multipath_devices(sys: &Path) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for name in entries(&sys.join("block")) {
        let base = sys.join("block").join(&name);
        if !read_attr(&base, "dm/uuid").is_some_and(|u| u.starts_with("mpath-")) {
            continue;
        }
        let map = read_attr(&base, "dm/name").unwrap_or_else(|| name.clone());
        let mut paths = entries(&base.join("slaves"));
        paths.sort();
        out.insert(name, (map, paths));
    }
    out
}

/// Paths to one LUN are one disk: the members of a multipath device are
/// written only through it, and several disks with one WWN (or one serial,
/// at one size) and no multipath device over them are never written.
fn mark_lun_paths(disks: &mut [PresentDisk]) {
    let members: Vec<(String, String, usize)> = disks
        .iter()
        .filter(|d| !d.paths.is_empty())
        .flat_map(|d| {
            d.paths
                .iter()
                .map(|p| (p.clone(), d.path.clone(), d.paths.len()))
        })
        .collect();
    for (member, via, n) in &members {
        if let Some(d) = disks.iter_mut().find(|d| &d.name == member) {
            d.in_use = Some(format!(
                "one of {n} paths to the multipath LUN {via}: written only through {via}"
            ));
        }
    }
    let mut groups: BTreeMap<(String, u64), Vec<usize>> = BTreeMap::new();
    for (i, d) in disks.iter().enumerate() {
        if !d.paths.is_empty() || members.iter().any(|(m, _, _)| *m == d.name) {
            continue;
        }
        let key = match (&d.wwn, &d.serial) {
            (Some(w), _) => format!("WWN {w}"),
            (None, Some(s)) => format!("serial {s}"),
            (None, None) => continue,
        };
        groups.entry((key, d.size)).or_default().push(i);
    }
    for ((key, _), idx) in groups.into_iter().filter(|(_, v)| v.len() > 1) {
        let names: Vec<String> = idx.iter().map(|&i| disks[i].path.clone()).collect();
        for &i in &idx {
            // A disk in use keeps that reason; the others learn why too.
            if disks[i].in_use.is_none() {
                disks[i].in_use = Some(format!(
                    "one of {} paths to one LUN ({key}: {}) with no multipath device over them: \
                     never written (set up multipath and name its device with --disk)",
                    idx.len(),
                    names.join(", ")
                ));
            }
        }
    }
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
    let hw = disk_hardware(sys, name);
    let wwn = read_attr(&base, "wwid")
        .or_else(|| read_attr(&base, "device/wwid"))
        .or_else(|| {
            read_attr(&base, "dm/uuid").and_then(|u| u.strip_prefix("mpath-").map(str::to_string))
        });
    Ok(PresentDisk {
        name: name.to_string(),
        path: format!("/dev/{name}"),
        size: sectors * 512, // sysfs counts 512-byte units whatever the sector size
        logical_sector_size: logical,
        model: read_attr(&base, "device/model"),
        serial: serial(&base),
        wwn,
        hw_path: hardware_path(sys, name),
        table_id: None,
        transport: hw.transport,
        driver: hw.driver,
        controller: hw.controller,
        removable: read_attr(&base, "removable").as_deref() == Some("1"),
        in_use: None,
        paths: Vec::new(),
        contents: Contents::Unknown("not examined".to_string()),
        chosen_before: None,
    })
}

/// Where disk `name` hangs in the hardware: the canonical path of its
/// sysfs `device` link, relative to `sys` (none for loop and
/// device-mapper devices, which have no place in the hardware).
fn hardware_path(sys: &Path, name: &str) -> Option<String> {
    if name.starts_with("loop") || name.starts_with("dm-") {
        return None;
    }
    let root = std::fs::canonicalize(sys).ok()?;
    let device = std::fs::canonicalize(sys.join("block").join(name).join("device")).ok()?;
    let rel = device.strip_prefix(&root).ok()?;
    Some(rel.to_string_lossy().into_owned())
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

// -- what recovery booted from -------------------------------------------------

/// Where scripts/build-image puts the image's identity in the initrd; the
/// same text is the ISO's volume set identifier (`-volset`), so the disk
/// the image was written to (a CD, a USB stick, a virtual disk) is known by
/// what it holds, whatever its label.
pub const IMAGE_ID_FILE: &str = "/etc/rewind-image-id";

/// What the running recovery image knows about the medium it booted from.
#[derive(Debug, Clone, Default)]
pub struct BootMedium {
    /// The image's identity ([`IMAGE_ID_FILE`]); none outside the image.
    pub image_id: Option<String>,
    /// The kernel command line: a boot loader that booted the image from
    /// a file (GRUB loopback) names the device with `img_dev=`.
    pub cmdline: String,
}

impl BootMedium {
    /// The running system's: [`IMAGE_ID_FILE`] and /proc/cmdline.
    pub fn running() -> BootMedium {
        BootMedium {
            image_id: std::fs::read_to_string(IMAGE_ID_FILE)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            cmdline: std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
        }
    }
}

/// Mark the disks the image booted from as in use: a disk (or one of its
/// partitions) whose ISO 9660 volume set identifier is the image's
/// identity, and the disk holding the `img_dev=` device.
pub fn mark_boot_medium(sys: &Path, disks: &mut [PresentDisk], boot: &BootMedium) {
    let img_dev = boot
        .cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("img_dev="))
        .and_then(resolve_device)
        .and_then(|p| disk_of_node(sys, &p));
    for d in disks.iter_mut().filter(|d| d.in_use.is_none()) {
        if img_dev.as_deref() == Some(d.name.as_str()) {
            d.in_use = Some(
                "it holds the recovery image this machine booted from (img_dev= on the kernel \
                 command line)"
                    .to_string(),
            );
            continue;
        }
        let mut devices = vec![d.path.clone()];
        devices.extend(
            partition_names(sys, &d.name)
                .into_iter()
                .map(|p| format!("/dev/{p}")),
        );
        let by_identity = boot.image_id.as_ref().and_then(|id| {
            devices
                .iter()
                .find(|dev| iso_volume_set(Path::new(dev)).as_deref() == Some(id.as_str()))
                .map(|dev| format!("{dev}: ISO 9660 volume set {id}, this image's identity"))
        });
        // An image without an identity (or another build of it): its label.
        let by_label = || {
            holds_recovery_image(Path::new(&d.path))
                .then(|| format!("ISO 9660 volume {:?}", String::from_utf8_lossy(IMAGE_LABEL)))
        };
        if let Some(how) = by_identity.or_else(by_label) {
            d.in_use = Some(format!(
                "it holds the recovery image this machine booted from ({how})"
            ));
        }
    }
}

/// The volume label scripts/build-image gives the ISO.
const IMAGE_LABEL: &[u8] = b"REWIND";

/// Whether a disk starts like the recovery ISO: an ISO 9660 primary volume
/// descriptor (sector 16) whose volume identifier is REWIND.
pub fn holds_recovery_image(dev: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(dev) else {
        return false;
    };
    let mut pvd = [0u8; 72];
    if f.seek(SeekFrom::Start(16 * 2048)).is_err() || f.read_exact(&mut pvd).is_err() {
        return false;
    }
    is_recovery_pvd(&pvd)
}

fn is_recovery_pvd(pvd: &[u8; 72]) -> bool {
    pvd[0] == 1 && &pvd[1..6] == b"CD001" && pvd[40..72].trim_ascii_end() == IMAGE_LABEL
}

/// `UUID=`, `LABEL=`, `/dev/disk/by-uuid/...` or a device path, as a path.
fn resolve_device(spec: &str) -> Option<std::path::PathBuf> {
    let (flag, value) = if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        ("-U", u)
    } else if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        ("-L", l)
    } else {
        return Some(spec.into());
    };
    let out = crate::cmd::run("blkid", &[flag, value]).ok()?;
    Some(out.trim().into()).filter(|p: &std::path::PathBuf| !p.as_os_str().is_empty())
}

/// The volume set identifier of an ISO 9660 primary volume descriptor at
/// sector 16 of `dev`, trimmed; `None` when there is none.
pub fn iso_volume_set(dev: &Path) -> Option<String> {
    let mut f = std::fs::File::open(dev).ok()?;
    let mut pvd = [0u8; 2048];
    f.seek(SeekFrom::Start(16 * 2048)).ok()?;
    f.read_exact(&mut pvd).ok()?;
    volume_set_of(&pvd)
}

fn volume_set_of(pvd: &[u8; 2048]) -> Option<String> {
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    let s = String::from_utf8_lossy(pvd[190..318].trim_ascii()).into_owned();
    (!s.is_empty()).then_some(s)
}

// -- what is on a disk -------------------------------------------------------

/// `CAPTURED=PRESENT` pairs.
pub type Mapping = Vec<(String, String)>;

/// The present disks as the plan needs them: [`present_disks`] with the
/// disks named in `mapping` (paths resolved to kernel names), the boot
/// medium marked, and what each free disk holds. Returns the disks and the
/// mapping with every PRESENT side a `/dev/NAME` path.
pub fn survey(
    sys: &Path,
    proc: &Path,
    mapping: &[(String, String)],
    boot: &BootMedium,
) -> Result<(Vec<PresentDisk>, Mapping)> {
    let mut resolved = Vec::new();
    let mut extra = Vec::new();
    for (c, p) in mapping {
        let p = if p.starts_with('/') {
            let name = crate::probe::disks::disk_name(sys, Path::new(p))
                .with_context(|| format!("--disk {c}={p}"))?;
            extra.push(name.clone());
            format!("/dev/{name}")
        } else {
            p.clone()
        };
        resolved.push((c.clone(), p));
    }
    let mut disks = present_disks(sys, proc, &extra)?;
    mark_boot_medium(sys, &mut disks, boot);
    for d in disks.iter_mut() {
        (d.contents, d.table_id) = match &d.in_use {
            Some(_) => (Contents::Unknown("in use: not examined".to_string()), None),
            None => examine(sys, d),
        };
    }
    Ok((disks, resolved))
}

/// What disk `d` holds: blkid's signatures on the disk and each partition,
/// else any byte that is not zero in its first or last MiB; and the
/// identifier of its partition table, if it has one.
pub fn examine(sys: &Path, d: &PresentDisk) -> (Contents, Option<String>) {
    let mut what = Vec::new();
    let table_id = match blkid(&d.path) {
        Ok(Some(found)) => {
            what.push(found.text);
            found.table_id
        }
        Ok(None) => None,
        Err(e) => return (Contents::Unknown(format!("{e:#}")), None),
    };
    for part in partition_names(sys, &d.name) {
        let dev = format!("/dev/{part}");
        let size = read_attr(&sys.join("block").join(&d.name).join(&part), "size")
            .and_then(|s| s.parse::<u64>().ok())
            .map(|s| human_bytes(s * 512))
            .unwrap_or_default();
        match blkid(&dev) {
            Ok(Some(found)) => what.push(format!("{part} ({size}): {}", found.text)),
            Ok(None) => what.push(format!("{part} ({size}): no filesystem blkid knows")),
            Err(e) => what.push(format!("{part}: {e:#}")),
        }
    }
    if !what.is_empty() {
        return (Contents::Holds(what), table_id);
    }
    let contents = match nonzero_ends(Path::new(&d.path), d.size) {
        Ok(None) => Contents::Blank,
        Ok(Some(at)) => Contents::Holds(vec![format!(
            "data blkid does not recognise (a byte that is not zero at offset {at})"
        )]),
        Err(e) => Contents::Unknown(format!("{e:#}")),
    };
    (contents, None)
}

/// What blkid found on a device.
struct Probed {
    /// Its partition table or filesystem type, label and usage, as one line.
    text: String,
    /// `PTUUID`: the partition table's identifier.
    table_id: Option<String>,
}

/// `blkid -p` (low-level probing, no cache) of one device.
fn blkid(dev: &str) -> Result<Option<Probed>> {
    let (code, out) = crate::cmd::run_allowing("blkid", &["-p", "-o", "export", dev], &[2])?;
    if code == 2 {
        return Ok(None);
    }
    // On a partition blkid also reports the entry itself (PART_ENTRY_*):
    // that is the table's, not what the partition holds.
    let kv: BTreeMap<&str, &str> = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.starts_with("PART_ENTRY_") && *k != "DEVNAME")
        .collect();
    if kv.is_empty() {
        return Ok(None);
    }
    let mut parts = Vec::new();
    if let Some(pt) = kv.get("PTTYPE") {
        parts.push(format!("{pt} partition table"));
    }
    if let Some(t) = kv.get("TYPE") {
        parts.push(t.to_string());
    }
    if let Some(l) = kv.get("LABEL") {
        parts.push(format!("label {l:?}"));
    }
    if parts.is_empty() {
        parts.push(format!(
            "a signature ({})",
            kv.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    Ok(Some(Probed {
        text: parts.join(", "),
        table_id: kv.get("PTUUID").map(|u| u.to_ascii_lowercase()),
    }))
}

/// The offset of the first byte that is not zero in the first or last MiB
/// of the device at `path`, of `size` bytes.
pub fn nonzero_ends(path: &Path, size: u64) -> Result<Option<u64>> {
    const MIB: u64 = 1 << 20;
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("cannot open {} to look at it", path.display()))?;
    let mut buf = vec![0u8; MIB as usize];
    for start in [0, size.saturating_sub(MIB)] {
        let len = MIB.min(size.saturating_sub(start)) as usize;
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut buf[..len]))
            .with_context(|| format!("cannot read {} at offset {start}", path.display()))?;
        if let Some(i) = buf[..len].iter().position(|&b| b != 0) {
            return Ok(Some(start + i as u64));
        }
    }
    Ok(None)
}

/// The kernel names of a disk's partitions, sorted.
fn partition_names(sys: &Path, disk: &str) -> Vec<String> {
    let base = sys.join("block").join(disk);
    let mut v: Vec<String> = entries(&base)
        .into_iter()
        .filter(|p| base.join(p).join("partition").exists())
        .collect();
    v.sort();
    v
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
pub(crate) mod tests {
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

    #[test]
    fn the_recovery_iso_is_recognised() {
        let mut pvd = [b' '; 72];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..46].copy_from_slice(b"REWIND");
        assert!(is_recovery_pvd(&pvd));
        pvd[40..46].copy_from_slice(b"DEBIAN");
        assert!(!is_recovery_pvd(&pvd));
        let t = tempfile::NamedTempFile::new().unwrap();
        assert!(!holds_recovery_image(t.path()), "too short");
        let mut img = vec![0u8; 17 * 2048];
        pvd[40..46].copy_from_slice(b"REWIND");
        img[16 * 2048..16 * 2048 + 72].copy_from_slice(&pvd);
        std::fs::write(t.path(), &img).unwrap();
        assert!(holds_recovery_image(t.path()));
    }

    /// A fake /sys/block entry `name` whose device sits at `device_path`
    /// (under sys/devices), with `drivers` as (directory under devices,
    /// driver name) links.
    fn fake_disk(sys: &Path, name: &str, device_path: &str, drivers: &[(&str, &str)]) {
        let dev = sys.join("devices").join(device_path);
        let block = dev.join("block").join(name);
        std::fs::create_dir_all(&block).unwrap();
        std::fs::write(block.join("size"), "2048\n").unwrap();
        std::fs::create_dir_all(sys.join("block")).unwrap();
        std::os::unix::fs::symlink(&block, sys.join("block").join(name)).unwrap();
        std::os::unix::fs::symlink(&dev, block.join("device")).unwrap();
        for (dir, driver) in drivers {
            let d = sys.join("devices").join(dir);
            std::fs::create_dir_all(&d).unwrap();
            let target = sys.join("bus/drivers").join(driver);
            std::fs::create_dir_all(&target).unwrap();
            let _ = std::os::unix::fs::symlink(&target, d.join("driver"));
        }
    }

    #[test]
    fn driver_controller_and_transport_from_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        let pci = "pci0000:00";
        fake_disk(
            sys,
            "sda",
            &format!("{pci}/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"),
            &[
                (&format!("{pci}/0000:00:1f.2"), "ahci"),
                (
                    &format!("{pci}/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"),
                    "sd",
                ),
            ],
        );
        fake_disk(
            sys,
            "nvme0n1",
            &format!("{pci}/0000:00:05.0/nvme/nvme0"),
            &[(&format!("{pci}/0000:00:05.0"), "nvme")],
        );
        fake_disk(
            sys,
            "vda",
            &format!("{pci}/0000:00:04.0/virtio1"),
            &[
                (&format!("{pci}/0000:00:04.0"), "virtio-pci"),
                (&format!("{pci}/0000:00:04.0/virtio1"), "virtio_blk"),
            ],
        );
        let scsi = format!("{pci}/0000:00:06.0/virtio2/host2/target2:0:0/2:0:0:0");
        fake_disk(
            sys,
            "sdb",
            &scsi,
            &[
                (&format!("{pci}/0000:00:06.0/virtio2"), "virtio_scsi"),
                (&scsi, "sd"),
            ],
        );
        let usb = format!("{pci}/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0");
        fake_disk(
            sys,
            "sdc",
            &usb,
            &[
                (&format!("{pci}/0000:00:14.0/usb1/1-1/1-1:1.0"), "uas"),
                (&usb, "sd"),
            ],
        );
        let fc = format!("{pci}/0000:05:00.0/host7/rport-7:0-1/target7:0:1/7:0:1:0");
        fake_disk(
            sys,
            "sdd",
            &fc,
            &[(&format!("{pci}/0000:05:00.0"), "qla2xxx"), (&fc, "sd")],
        );
        let iscsi = "platform/host8/session1/target8:0:0/8:0:0:0";
        fake_disk(sys, "sde", iscsi, &[(iscsi, "sd")]);
        let sas = format!("{pci}/0000:03:00.0/host9/port-9:0/end_device-9:0/target9:0:0/9:0:0:0");
        fake_disk(
            sys,
            "sdf",
            &sas,
            &[(&format!("{pci}/0000:03:00.0"), "mpt3sas"), (&sas, "sd")],
        );
        let got = |name: &str| {
            let h = disk_hardware(sys, name);
            (
                h.driver.unwrap_or_default(),
                h.controller.unwrap_or_default(),
                h.transport.unwrap_or_default(),
            )
        };
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(got("sda"), s("sd", "ahci", "sata"));
        assert_eq!(got("nvme0n1"), s("nvme", "nvme", "nvme"));
        assert_eq!(got("vda"), s("virtio_blk", "virtio-pci", "virtio"));
        assert_eq!(got("sdb"), s("sd", "virtio_scsi", "scsi"));
        assert_eq!(got("sdc"), s("sd", "uas", "usb"));
        assert_eq!(got("sdd"), s("sd", "qla2xxx", "fc"));
        assert_eq!(got("sde"), s("sd", "", "iscsi"));
        assert_eq!(got("sdf"), s("sd", "mpt3sas", "sas"));
    }

    /// sdb and sdc are two paths of the multipath device dm-0; sdd and sde
    /// have one WWN and no multipath device; sdf and sdg share a serial but
    /// not a size (two slots of a card reader).
    #[test]
    fn paths_to_one_lun_are_one_disk() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let proc = t.path().join("proc");
        let write = |p: PathBuf, s: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        for (i, (name, wwid, serial, size)) in [
            ("sdb", "naa.600a", "", "2048"),
            ("sdc", "naa.600a", "", "2048"),
            ("sdd", "naa.5000c5", "", "2048"),
            ("sde", "naa.5000c5", "", "2048"),
            ("sdf", "", "CR-1", "2048"),
            ("sdg", "", "CR-1", "4096"),
        ]
        .into_iter()
        .enumerate()
        {
            let d = sys.join("devices").join(name);
            write(d.join("dev"), &format!("8:{}", i * 16));
            write(d.join("size"), size);
            if !wwid.is_empty() {
                write(d.join("device/wwid"), wwid);
            }
            if !serial.is_empty() {
                write(d.join("device/serial"), serial);
            }
            std::fs::create_dir_all(d.join("holders")).unwrap();
            std::fs::create_dir_all(sys.join("block")).unwrap();
            std::os::unix::fs::symlink(&d, sys.join("block").join(name)).unwrap();
        }
        let dm = sys.join("devices/dm-0");
        write(dm.join("dev"), "253:0");
        write(dm.join("size"), "2048");
        write(dm.join("dm/uuid"), "mpath-3600a");
        write(dm.join("dm/name"), "mpatha");
        write(dm.join("slaves/sdb"), "");
        write(dm.join("slaves/sdc"), "");
        write(sys.join("devices/sdb/holders/dm-0"), "");
        write(sys.join("devices/sdc/holders/dm-0"), "");
        std::os::unix::fs::symlink(&dm, sys.join("block/dm-0")).unwrap();
        write(
            proc.join("self/mountinfo"),
            "22 1 0:21 / /proc rw - proc proc rw\n",
        );
        write(proc.join("swaps"), "Filename\tType\tSize\tUsed\tPriority\n");

        let all = present_disks(&sys, &proc, &[]).unwrap();
        let by = |n: &str| all.iter().find(|d| d.name == n).unwrap();
        let mp = by("dm-0");
        assert_eq!(mp.path, "/dev/mapper/mpatha");
        assert_eq!(mp.paths, ["sdb", "sdc"]);
        assert_eq!(mp.transport.as_deref(), Some("multipath"));
        assert_eq!(mp.wwn.as_deref(), Some("3600a"));
        assert_eq!(mp.in_use, None);
        assert!(
            mp.named_only()
                .unwrap()
                .contains("multipath LUN (2 paths: sdb, sdc)")
        );
        for n in ["sdb", "sdc"] {
            assert_eq!(
                by(n).in_use.as_deref(),
                Some(
                    "one of 2 paths to the multipath LUN /dev/mapper/mpatha: written only through /dev/mapper/mpatha"
                ),
                "{n}"
            );
        }
        for n in ["sdd", "sde"] {
            let why = by(n).in_use.clone().unwrap_or_default();
            assert!(
                why.starts_with("one of 2 paths to one LUN (WWN naa.5000c5: /dev/sdd, /dev/sde) with no multipath device"),
                "{n}: {why}"
            );
        }
        assert_eq!(by("sdf").in_use, None);
        assert_eq!(by("sdg").in_use, None);
    }

    fn pvd(label: &str, volume_set: &str) -> Vec<u8> {
        let mut img = vec![0u8; 17 * 2048];
        let p = &mut img[16 * 2048..];
        p[0] = 1;
        p[1..6].copy_from_slice(b"CD001");
        p[40..72].fill(b' ');
        p[40..40 + label.len()].copy_from_slice(label.as_bytes());
        p[190..318].fill(b' ');
        p[190..190 + volume_set.len()].copy_from_slice(volume_set.as_bytes());
        img
    }

    #[test]
    fn the_boot_medium_is_known_by_the_images_identity() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        std::fs::create_dir_all(sys.join("block")).unwrap();
        let file = |name: &str, data: &[u8]| {
            let p = t.path().join(name);
            std::fs::write(&p, data).unwrap();
            PresentDisk {
                name: name.into(),
                path: p.display().to_string(),
                size: data.len() as u64,
                ..Default::default()
            }
        };
        let mut disks = vec![
            // This image written to a disk, relabelled: still its identity.
            file("vdb", &pvd("MYSTICK", "REWIND-IMAGE-0123ABCD")),
            // Another build of the image: its label.
            file("vdc", &pvd("REWIND", "REWIND-IMAGE-99999999")),
            // Another ISO, and a blank disk.
            file("vdd", &pvd("DEBIAN", "")),
            file("vde", &vec![0u8; 40960]),
        ];
        assert_eq!(
            iso_volume_set(Path::new(&disks[0].path)).as_deref(),
            Some("REWIND-IMAGE-0123ABCD")
        );
        let boot = BootMedium {
            image_id: Some("REWIND-IMAGE-0123ABCD".into()),
            cmdline: "console=ttyS0".into(),
        };
        mark_boot_medium(&sys, &mut disks, &boot);
        let why: Vec<String> = disks
            .iter()
            .map(|d| d.in_use.clone().unwrap_or_default())
            .collect();
        assert!(
            why[0].starts_with("it holds the recovery image this machine booted from (")
                && why[0].ends_with(
                    ": ISO 9660 volume set REWIND-IMAGE-0123ABCD, this image's identity)"
                ),
            "{why:?}"
        );
        assert!(why[1].ends_with("(ISO 9660 volume \"REWIND\")"), "{why:?}");
        assert_eq!(why[2], "");
        assert_eq!(why[3], "");
    }

    pub(crate) const GIB: u64 = 1 << 30;

    /// vda: 8 GiB, one GPT partition; vdb: 2 GiB, one GPT partition; no
    /// serial or WWN recorded (the captured disks are gone).
    pub(crate) fn two_disks() -> crate::manifest::Manifest {
        let xml = crate::layout::plan::tests::manifest_xml(
            r#"
  <disk name="vda" path="/dev/vda" size="8589934592" logical-sector-size="512" physical-sector-size="512">
    <gpt disk-guid="a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f" first-usable-lba="2048" last-usable-lba="16777182" entries="128">
      <partition number="1" first-lba="2048" last-lba="16777182" type-guid="0fc63daf-8483-4772-8e79-3d69d8477de4" guid="11111111-2222-4333-8444-555555555502" name="root" attributes="0"/>
    </gpt>
  </disk>
  <disk name="vdb" path="/dev/vdb" size="2147483648" logical-sector-size="512" physical-sector-size="512">
    <gpt disk-guid="a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e70" first-usable-lba="2048" last-usable-lba="4194270" entries="128">
      <partition number="1" first-lba="2048" last-lba="4194270" type-guid="0fc63daf-8483-4772-8e79-3d69d8477de4" guid="11111111-2222-4333-8444-555555555503" name="data" attributes="0"/>
    </gpt>
  </disk>"#,
            "",
        );
        crate::manifest::from_xml(&xml).unwrap()
    }

    /// A run of a recovery request cut while partitioning or formatting
    /// (before its restore wrote a resume journal) left its blank target
    /// half-made: the next boot's plan refused it as not blank, or chose
    /// another blank disk. With the claim's record of what the run chose,
    /// that disk may take exactly the captured disk it was chosen for
    /// again, and nothing else changes.
    #[test]
    fn a_disk_an_interrupted_run_chose_may_take_its_captured_disk_again() {
        use crate::layout::plan::{MatchedBy, map_disks};
        let m = two_disks();
        // sdb: the disk the first run chose for vda (blank then, by size;
        // another serial than the captured disk's), holding its new GPT now.
        let mut sdb = PresentDisk::bare("sdb", 8 * GIB);
        sdb.serial = Some("NEW-1".into());
        let choice = DiskChoice::of("vda", &sdb, Some("9A3F-TABLE")).unwrap();
        assert_eq!(
            (choice.hw_path.as_deref(), choice.table_id.as_deref()),
            (None, None),
            "known by its serial: nothing else is recorded"
        );
        let vdz = PresentDisk::bare("vdz", 8 * GIB);
        assert_eq!(
            DiskChoice::of("vda", &vdz, Some("9a3f")),
            None,
            "a disk without serial, WWN or place in the hardware cannot be known again"
        );
        let placed = PresentDisk {
            hw_path: Some("devices/pci0000:00/0000:00:05.0/virtio2".into()),
            ..vdz
        };
        assert_eq!(
            DiskChoice::of("vda", &placed, None),
            None,
            "nor one without a partition table to know it by"
        );
        sdb.contents = Contents::Holds(vec!["gpt partition table".into()]);
        let sdd = PresentDisk::bare("sdd", 2 * GIB);
        let present = vec![sdb.clone(), sdd.clone()];

        // Today's failure: refused as not blank.
        let e = format!(
            "{:#}",
            map_disks(&m.disks, &present, &[], false).unwrap_err()
        );
        assert!(e.contains("/dev/sdb (8.0 GiB): not blank"), "{e}");

        // With the claim's record: sdb for vda again; vdb as before.
        let mut marked = present.clone();
        let said = mark_chosen_before(&mut marked, std::slice::from_ref(&choice));
        assert_eq!(marked[0].chosen_before.as_deref(), Some("vda"));
        assert_eq!(marked[1].chosen_before, None);
        assert!(
            said[0]
                .starts_with("/dev/sdb (8.0 GiB, serial NEW-1) was chosen for captured disk vda"),
            "{said:?}"
        );
        assert_eq!(
            map_disks(&m.disks, &marked, &[], false).unwrap(),
            [(0, 0, MatchedBy::Size), (1, 1, MatchedBy::Size)]
        );
        // Preferred to another blank disk that would come first by name.
        let mut with_blank = vec![PresentDisk::bare("sda", 8 * GIB)];
        with_blank.extend(marked.iter().cloned());
        assert_eq!(
            map_disks(&m.disks, &with_blank, &[], false).unwrap(),
            [(0, 1, MatchedBy::Size), (1, 2, MatchedBy::Size)]
        );

        // Nothing else: recorded for another captured disk, the same
        // serial at another size, another serial, two disks matching, or
        // the disk in use now.
        let for_vdb = DiskChoice {
            captured: "vdb".into(),
            ..choice.clone()
        };
        let mut other = present.clone();
        mark_chosen_before(&mut other, &[for_vdb]);
        assert!(map_disks(&m.disks, &other, &[], false).is_err());
        for (serial, size) in [("NEW-1", 8 * GIB + 512), ("NEW-2", 8 * GIB)] {
            let mut d = sdb.clone();
            d.serial = Some(serial.into());
            d.size = size;
            let mut disks = vec![d, sdd.clone()];
            assert!(mark_chosen_before(&mut disks, std::slice::from_ref(&choice)).is_empty());
            assert_eq!(disks[0].chosen_before, None, "{serial} {size}");
        }
        let mut twice = vec![
            sdb.clone(),
            PresentDisk {
                name: "sdc".into(),
                path: "/dev/sdc".into(),
                ..sdb.clone()
            },
        ];
        let said = mark_chosen_before(&mut twice, std::slice::from_ref(&choice));
        assert!(twice.iter().all(|d| d.chosen_before.is_none()));
        assert!(said[0].contains("2 disks match"), "{said:?}");
        let mut busy = present.clone();
        busy[0].in_use = Some("/dev/sdb1 is mounted at /mnt".into());
        let said = mark_chosen_before(&mut busy, std::slice::from_ref(&choice));
        assert_eq!(busy[0].chosen_before, None);
        assert!(said[0].contains("in use now"), "{said:?}");
    }

    /// A disk without serial or WWN (a VM's virtio disk) is known again by
    /// its place in the machine's hardware, its size and the partition
    /// table the cut run wrote on it: not by its place alone (another disk
    /// put in that slot), not with another table or none (a blank disk is
    /// taken anyway), and not when it has a serial now.
    #[test]
    fn a_disk_without_serial_is_known_again_by_its_place_and_its_table() {
        let slot = "devices/pci0000:00/0000:00:05.0/virtio2";
        let guid = "5c1e0d6a-2b7f-4e11-9a3c-0123456789ab";
        let vdb = PresentDisk {
            hw_path: Some(slot.into()),
            ..PresentDisk::bare("vdb", 8 * GIB)
        };
        let choice = DiskChoice::of("vda", &vdb, Some(&guid.to_ascii_uppercase())).unwrap();
        assert_eq!(
            (choice.serial.as_deref(), choice.hw_path.as_deref()),
            (None, Some(slot))
        );
        assert_eq!(choice.table_id.as_deref(), Some(guid), "kept lower case");
        // As the next boot finds it: the table the cut run wrote.
        let written = PresentDisk {
            table_id: Some(guid.into()),
            contents: Contents::Holds(vec!["gpt partition table".into()]),
            ..vdb.clone()
        };
        let mut disks = vec![written.clone()];
        let said = mark_chosen_before(&mut disks, std::slice::from_ref(&choice));
        assert_eq!(disks[0].chosen_before.as_deref(), Some("vda"));
        assert!(
            said[0].starts_with(&format!(
                "/dev/vdb (8.0 GiB, no serial: at {slot}, holding partition table {guid}) was chosen"
            )),
            "{said:?}"
        );
        let not_it = [
            PresentDisk {
                table_id: Some("0badc0de-0000-4000-8000-000000000000".into()),
                ..written.clone()
            },
            PresentDisk {
                table_id: None,
                ..written.clone()
            },
            PresentDisk {
                hw_path: Some("devices/pci0000:00/0000:00:06.0/virtio3".into()),
                ..written.clone()
            },
            PresentDisk {
                size: 8 * GIB + 4096,
                ..written.clone()
            },
            PresentDisk {
                serial: Some("NEW-1".into()),
                ..written.clone()
            },
        ];
        for d in not_it {
            let mut disks = vec![d.clone()];
            assert!(mark_chosen_before(&mut disks, std::slice::from_ref(&choice)).is_empty());
            assert_eq!(disks[0].chosen_before, None, "{d:?}");
        }
    }

    #[test]
    fn zeros_at_both_ends_or_not() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let size = 3u64 << 20;
        t.as_file().set_len(size).unwrap();
        assert_eq!(nonzero_ends(t.path(), size).unwrap(), None);
        use std::os::unix::fs::FileExt;
        // A byte in the middle is not looked at; one in the last MiB is.
        t.as_file().write_all_at(b"x", 3 << 19).unwrap();
        assert_eq!(nonzero_ends(t.path(), size).unwrap(), None);
        t.as_file().write_all_at(b"x", size - 10).unwrap();
        assert_eq!(nonzero_ends(t.path(), size).unwrap(), Some(size - 10));
        t.as_file().write_all_at(b"x", 4096).unwrap();
        assert_eq!(nonzero_ends(t.path(), size).unwrap(), Some(4096));
    }
}
