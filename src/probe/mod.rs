//! Read a running system into a [`Manifest`]: identity, disks and their
//! tables, filesystems with their mkfs parameters and mounts, swap, network,
//! boot loader and EFI entries.

pub mod btrfs;
pub mod disks;
pub mod efi;
pub mod fs;
pub mod initramfs;
pub mod net;
pub mod stack;
pub mod system;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::manifest::{
    Boot, Filesystem, Firmware, FsType, Manifest, Mount, SCHEMA_VERSION, Snapshot, StackRef, Swap,
};
use disks::FoundDisk;
use fs::MountInfo;

/// Where to read the system from, and what to cover.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The system's root (`/`): configuration files are read below it.
    pub root: PathBuf,
    pub proc: PathBuf,
    pub sys: PathBuf,
    /// Disks to capture (device paths); empty means every real disk.
    pub disks: Vec<PathBuf>,
    /// The host name the snapshot is filed under; the system's by default.
    pub host: Option<String>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            root: "/".into(),
            proc: "/proc".into(),
            sys: "/sys".into(),
            disks: Vec::new(),
            host: None,
        }
    }
}

/// A manifest and what the probe saw but could not record.
#[derive(Debug)]
pub struct Probed {
    pub manifest: Manifest,
    pub warnings: Vec<String>,
}

/// Where a filesystem or swap area found is: a disk (and partition) or a
/// block device of the stack.
enum Placement {
    Disk(String, Option<u32>),
    Volume(StackRef),
}

/// Filesystem types rewind recreates; anything else found is reported.
const KNOWN_FS: &[&str] = crate::fs::NAMES;

pub fn probe(opts: &ProbeOptions) -> Result<Probed> {
    let mut warnings = Vec::new();
    let system = system::probe_system(&opts.root, &opts.proc, &opts.sys)
        .context("cannot read the system's identity")?;

    let names = if opts.disks.is_empty() {
        disks::list_disks(&opts.sys)?
    } else {
        opts.disks
            .iter()
            .map(|p| disks::disk_name(&opts.sys, p))
            .collect::<Result<_>>()?
    };
    let found: Vec<FoundDisk> = names
        .iter()
        .map(|name| disks::probe_disk(&opts.sys, name, &Path::new("/dev").join(name)))
        .collect::<Result<_>>()?;

    let mountinfo_path = opts.proc.join("self/mountinfo");
    let mountinfo = fs::parse_mountinfo(
        &std::fs::read_to_string(&mountinfo_path)
            .with_context(|| format!("cannot read {}", mountinfo_path.display()))?,
    )
    .with_context(|| format!("cannot parse {}", mountinfo_path.display()))?
    .into_iter()
    .filter(|m| !Path::new(&m.mount_point).starts_with(fs::SNAPSHOT_MOUNTS))
    .collect::<Vec<_>>();
    let active_swaps: Vec<(u32, u32)> = std::fs::read_to_string(opts.proc.join("swaps"))
        .map(|t| fs::parse_proc_swaps(&t))
        .unwrap_or_default()
        .iter()
        .filter_map(|p| block_dev(Path::new(p)))
        .collect();

    let mut filesystems = Vec::new();
    let mut swaps = Vec::new();
    let mut captured_devs = Vec::new();
    let mut found = found;
    found.retain(|disk| {
        let Some(why) = &disk.unreadable else { return true };
        let whole_disk_fs = mountinfo.iter().find(|mi| (mi.major, mi.minor) == disk.dev);
        match whole_disk_fs {
            Some(mi) if KNOWN_FS.contains(&mi.fs_type.as_str()) => {
                // The kernel mounts the whole disk, so it has no partition
                // table; the filesystem's identity comes from the mount.
                match from_mount(mi, &disk.disk) {
                    Some(fs) => {
                        warnings.push(format!(
                            "cannot read {} ({why}): its {} filesystem was recorded from the mount at {}, without mkfs parameters",
                            disk.disk.path, mi.fs_type, mi.mount_point
                        ));
                        filesystems.push(fs);
                        captured_devs.push(disk.dev);
                        true
                    }
                    None => false,
                }
            }
            _ => {
                warnings.push(format!(
                    "not captured: cannot read {} ({why}); run as root on the host itself",
                    disk.disk.path
                ));
                false
            }
        }
    });
    // The storage stack on the captured disks (MD, LUKS, LVM), found before
    // the filesystems so that its members are not reported as unknown.
    let base: Vec<(String, StackRef, (u32, u32))> = found
        .iter()
        .filter(|d| d.unreadable.is_none())
        .flat_map(|d| {
            let whole = (
                d.disk.name.clone(),
                StackRef::Disk(d.disk.name.clone()),
                d.dev,
            );
            let parts = d.partitions.iter().filter_map(|p| {
                let name = p.path.file_name()?.to_string_lossy().into_owned();
                Some((
                    name,
                    StackRef::Partition(d.disk.name.clone(), p.number),
                    p.dev,
                ))
            });
            std::iter::once(whole).chain(parts).collect::<Vec<_>>()
        })
        .collect();
    let stack = stack::probe_stack(&opts.sys, &base, &stack::SystemTools)
        .context("cannot read the storage stack (MD RAID, LUKS, LVM) on the captured disks")?;
    warnings.extend(stack.warnings.iter().cloned());

    let mut volumes: Vec<(Placement, PathBuf, PathBuf, (u32, u32))> = Vec::new();
    for disk in found.iter().filter(|d| d.unreadable.is_none()) {
        // A disk without a partition table may hold a filesystem itself.
        let has_table = disk.disk.gpt.is_some() || disk.disk.mbr.is_some();
        for p in &disk.partitions {
            let at = Placement::Disk(disk.disk.name.clone(), Some(p.number));
            volumes.push((at, p.path.clone(), p.path.clone(), p.dev));
        }
        if !has_table {
            let path: PathBuf = disk.disk.path.clone().into();
            let at = Placement::Disk(disk.disk.name.clone(), None);
            volumes.push((at, path.clone(), path, disk.dev));
        }
    }
    for v in &stack.volumes {
        let at = Placement::Volume(v.reference.clone());
        volumes.push((at, v.path.clone(), v.node.clone(), v.dev));
    }
    for (at, path, node, dev) in volumes {
        captured_devs.push(dev);
        if stack.consumed.contains(&dev) {
            continue;
        }
        let tags = fs::blkid(&node)?;
        let Some(fs_type) = tags.get("TYPE") else {
            continue;
        };
        let uuid = tags.get("UUID").cloned().unwrap_or_default();
        let label = tags.get("LABEL").cloned().filter(|l| !l.is_empty());
        let device = path.display().to_string();
        let (disk_name, partition, volume) = match at {
            Placement::Disk(d, p) => (Some(d), p, None),
            Placement::Volume(r) => (None, None, Some(r)),
        };
        if fs_type == "swap" {
            swaps.push(Swap {
                device,
                disk: disk_name,
                partition,
                volume,
                uuid,
                label,
                active: active_swaps.contains(&dev),
            });
            continue;
        }
        if !KNOWN_FS.contains(&fs_type.as_str()) {
            warnings.push(format!(
                "not captured: {device} holds {fs_type}, which rewind does not recreate yet"
            ));
            continue;
        }
        let Some(kind) = FsType::read(fs_type, &node)
            .with_context(|| format!("cannot read the {fs_type} parameters of {device}"))?
        else {
            continue;
        };
        filesystems.push(Filesystem {
            device: device.clone(),
            disk: disk_name,
            partition,
            volume,
            fs_type: kind,
            uuid,
            label,
            mounts: mounts_of(&mountinfo, dev, &node, fs_type),
            data: None,
            members: Vec::new(),
            subvolumes: Vec::new(),
        });
    }
    let run_btrfs = |args: &[&str]| crate::cmd::run("btrfs", args);
    warnings.extend(
        btrfs::complete(&mut filesystems, &run_btrfs)
            .context("cannot read the subvolumes and devices of a btrfs filesystem")?,
    );
    for mi in &mountinfo {
        let on_captured = captured_devs.contains(&(mi.major, mi.minor))
            || filesystems
                .iter()
                .any(|f| f.mounts.iter().any(|m| m.point == mi.mount_point));
        // With disks named explicitly, the others are left out on purpose.
        if opts.disks.is_empty() && mi.source.starts_with("/dev/") && mi.major != 0 && !on_captured
        {
            warnings.push(format!(
                "not captured: {} mounted at {} is not on a captured disk",
                mi.source, mi.mount_point
            ));
        }
    }

    let network = net::probe_network(&opts.root, &mut warnings)
        .context("cannot read the network configuration")?;
    let efi = match system.firmware {
        Firmware::Uefi => efi::probe_efi(&opts.sys.join("firmware/efi/efivars"))
            .context("cannot read the EFI boot entries")?,
        Firmware::Bios => None,
    };
    let time = crate::manifest::Timestamp::now();
    let host = opts.host.clone().unwrap_or_else(|| system.hostname.clone());
    let mut manifest = Manifest {
        schema: SCHEMA_VERSION,
        snapshot: Snapshot {
            id: format!("{}-{host}", time.replace(['-', ':'], "")),
            host,
            time,
            parent: None,
            tool: format!("rewind {}", env!("CARGO_PKG_VERSION")),
        },
        system,
        network,
        disks: found.into_iter().map(|d| d.disk).collect(),
        md_arrays: stack.md_arrays,
        luks: stack.luks,
        volume_groups: stack.volume_groups,
        filesystems,
        swaps,
        boot: Boot {
            loader: system::boot_loader(&opts.root),
            efi,
        },
    };
    manifest.schema = crate::manifest::required_schema(&manifest);
    crate::manifest::validate(&manifest).context(
        "the probe produced an invalid manifest (a rewind bug: please report it with this output)",
    )?;
    Ok(Probed { manifest, warnings })
}

/// The mounts of the filesystem on `dev`. Matched by device number, or by
/// source path for btrfs, whose mounts carry an anonymous device number.
/// Bind mounts of a subtree are left out (they are mounts of a directory,
/// not of the filesystem), except btrfs subvolumes.
fn mounts_of(mountinfo: &[MountInfo], dev: (u32, u32), path: &Path, fs_type: &str) -> Vec<Mount> {
    let canonical = std::fs::canonicalize(path).ok();
    let mut mounts: Vec<Mount> = Vec::new();
    for mi in mountinfo {
        let same_dev = (mi.major, mi.minor) == dev;
        let same_source = canonical.is_some()
            && std::fs::canonicalize(&mi.source).ok() == canonical
            && mi.fs_type == fs_type;
        if !(same_dev || same_source) || (mi.root != "/" && fs_type != "btrfs") {
            continue;
        }
        // A later mount on the same point hides the earlier one.
        mounts.retain(|m| m.point != mi.mount_point);
        mounts.push(Mount {
            point: mi.mount_point.clone(),
            options: fs::fstab_options(mi),
            root: mi.root.clone(),
        });
    }
    mounts
}

/// A mounted filesystem's identity from the kernel (FS_IOC_GETFSUUID and
/// FS_IOC_GETFSLABEL on its mount point), for when its device cannot be read.
#[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
fn from_mount(mi: &MountInfo, disk: &crate::manifest::Disk) -> Option<Filesystem> {
    #[repr(C)]
    struct FsUuid2 {
        len: u8,
        uuid: [u8; 16],
    }
    nix::ioctl_read!(fs_ioc_getfsuuid, 0x15, 0, FsUuid2);
    nix::ioctl_read!(fs_ioc_getfslabel, 0x94, 49, [u8; 256]);
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(&mi.mount_point).ok()?;
    let mut id = FsUuid2 {
        len: 16,
        uuid: [0; 16],
    };
    // SAFETY: the kernel writes at most size_of::<FsUuid2>() bytes into `id`.
    unsafe { fs_ioc_getfsuuid(dir.as_raw_fd(), &mut id) }.ok()?;
    if id.len != 16 {
        return None;
    }
    let h = crate::util::hex::encode(&id.uuid);
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    let mut label = [0u8; 256];
    // SAFETY: FS_IOC_GETFSLABEL writes at most FSLABEL_MAX (256) bytes.
    let label = match unsafe { fs_ioc_getfslabel(dir.as_raw_fd(), &mut label) } {
        Ok(_) => {
            let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
            Some(String::from_utf8_lossy(&label[..end]).into_owned()).filter(|l| !l.is_empty())
        }
        Err(_) => None,
    };
    Some(Filesystem {
        device: disk.path.clone(),
        disk: Some(disk.name.clone()),
        partition: None,
        volume: None,
        fs_type: FsType::from_name(&mi.fs_type)?,
        uuid,
        label,
        mounts: vec![Mount {
            point: mi.mount_point.clone(),
            options: fs::fstab_options(mi),
            root: mi.root.clone(),
        }],
        data: None,
        members: Vec::new(),
        subvolumes: Vec::new(),
    })
}

/// major:minor of a block device node; `None` for anything else (swap files).
fn block_dev(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).ok()?;
    meta.file_type().is_block_device().then(|| {
        let rdev = meta.rdev();
        (
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
        )
    })
}
