//! Making the kernel see a freshly written partition table: BLKRRPART
//! (the kernel parses the table itself), then BLKPG to add any partition
//! it did not create and drop any it should not have (a kernel without
//! that table parser, as on the build host), then a bounded wait for the
//! device nodes that devtmpfs creates.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::libc::{c_char, c_int, c_void};

use crate::probe::disks::{parse_dev, read_attr};

nix::ioctl_none!(blkrrpart, 0x12, 95);

#[repr(C)]
struct BlkpgIoctlArg {
    op: c_int,
    flags: c_int,
    datalen: c_int,
    data: *mut c_void,
}

#[repr(C)]
struct BlkpgPartition {
    /// Bytes.
    start: i64,
    /// Bytes.
    length: i64,
    pno: c_int,
    devname: [c_char; 64],
    volname: [c_char; 64],
}

nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);

const BLKPG_ADD_PARTITION: c_int = 1;
const BLKPG_DEL_PARTITION: c_int = 2;

/// A partition the kernel should know, in bytes from the disk's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub number: u32,
    pub start: u64,
    pub length: u64,
}

/// A partition the kernel knows, from sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    name: String,
    wanted: Wanted,
    dev: Option<(u32, u32)>,
}

/// How long a busy disk is retried, and how long device nodes are awaited.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const RETRIES: u32 = 20;
const NODE_WAIT: Duration = Duration::from_secs(10);

#[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
fn blkpg_op(disk: &File, op: c_int, w: &Wanted) -> nix::Result<()> {
    let mut part = BlkpgPartition {
        start: w.start as i64,
        length: w.length as i64,
        pno: w.number as c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` points at a valid blkpg_partition for the whole call.
    unsafe { blkpg(disk.as_raw_fd(), &arg) }.map(drop)
}

/// Retry `f` while the kernel says the device is busy (udev or a prober
/// may hold it for a moment after a write).
fn retry_busy(mut f: impl FnMut() -> nix::Result<()>) -> nix::Result<()> {
    let mut tries = 0;
    loop {
        match f() {
            Err(Errno::EBUSY) if tries < RETRIES => {
                tries += 1;
                std::thread::sleep(RETRY_PAUSE);
            }
            other => return other,
        }
    }
}

/// Bring the kernel's partitions of disk `name` (open as `disk`) in line
/// with `wanted`, then wait for their device nodes. Returns the node paths.
#[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
pub(super) fn sync_partitions(
    disk: &File,
    name: &str,
    sys: &Path,
    wanted: &[Wanted],
) -> Result<Vec<PathBuf>> {
    // SAFETY: BLKRRPART takes no argument.
    let reread = retry_busy(|| unsafe { blkrrpart(disk.as_raw_fd()) }.map(drop));
    let base = sys.join("block").join(name);
    for k in known(&base)? {
        if !wanted.contains(&k.wanted) {
            retry_busy(|| blkpg_op(disk, BLKPG_DEL_PARTITION, &k.wanted)).with_context(|| {
                format!(
                    "cannot remove stale partition {} from the kernel's view of {name} (is it in use?)",
                    k.name
                )
            })?;
        }
    }
    let present = known(&base)?;
    for w in wanted {
        if present.iter().any(|k| k.wanted == *w) {
            continue;
        }
        retry_busy(|| blkpg_op(disk, BLKPG_ADD_PARTITION, w)).with_context(|| {
            let why = match &reread {
                Ok(()) => String::new(),
                Err(e) => format!(" (BLKRRPART said: {e})"),
            };
            format!(
                "the kernel refused to add partition {} of {name} (BLKPG){why}; a loop device needs `losetup -P`",
                w.number
            )
        })?;
    }
    wait_for_nodes(&base, wanted)
}

/// Partitions of the disk at sysfs `base` (sizes in 512-byte units there).
fn known(base: &Path) -> Result<Vec<Known>> {
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(base).with_context(|| format!("cannot list {}", base.display()))?
    {
        let p = entry?.path();
        let Some(number) = read_attr(&p, "partition").and_then(|s| s.parse().ok()) else {
            continue;
        };
        let num = |attr: &str| -> Result<u64> {
            read_attr(&p, attr)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("no {}/{attr}", p.display()))
        };
        out.push(Known {
            name: p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            wanted: Wanted {
                number,
                start: num("start")? * 512,
                length: num("size")? * 512,
            },
            dev: read_attr(&p, "dev").and_then(|s| parse_dev(&s)),
        });
    }
    Ok(out)
}

/// Wait until every wanted partition has a block device node in /dev with
/// the device number sysfs gives it.
fn wait_for_nodes(base: &Path, wanted: &[Wanted]) -> Result<Vec<PathBuf>> {
    let deadline = Instant::now() + NODE_WAIT;
    loop {
        let now = known(base)?;
        let mut nodes = Vec::new();
        let mut missing = Vec::new();
        for w in wanted {
            let k = now.iter().find(|k| k.wanted == *w);
            let node = k.map(|k| Path::new("/dev").join(&k.name));
            let ready = match (k, &node) {
                (Some(k), Some(node)) => std::fs::metadata(node).is_ok_and(|m| {
                    m.file_type().is_block_device()
                        && Some((
                            nix::sys::stat::major(m.rdev()) as u32,
                            nix::sys::stat::minor(m.rdev()) as u32,
                        )) == k.dev
                }),
                _ => false,
            };
            match (ready, node) {
                (true, Some(n)) => nodes.push(n),
                (_, n) => missing.push(
                    n.map(|n| n.display().to_string())
                        .unwrap_or_else(|| format!("partition {}", w.number)),
                ),
            }
        }
        if missing.is_empty() {
            return Ok(nodes);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not appear within {} s (is devtmpfs mounted on /dev?)",
                missing.join(", "),
                NODE_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
