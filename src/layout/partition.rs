//! The partition stage for one disk: wipe old signatures, zero the ends of
//! the disk and of every new partition, write the table, and make the
//! kernel see the partitions.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use super::kernel::{self, Wanted};
use super::plan::{DiskPlan, Table};
use super::table::{self, boot_code_bytes};
use crate::cmd;
use crate::manifest::MbrKind;

const MIB: u64 = 1 << 20;

/// Open a disk for writing, exclusively: the kernel refuses (EBUSY) while
/// anything has it or one of its partitions mounted or claimed.
pub fn open_exclusive(path: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(path)
        .with_context(|| format!("cannot open {path} exclusively (is it in use?)"))
}

/// Partition one disk. Returns the partition device nodes.
pub fn partition_disk(dp: &DiskPlan, sys: &Path) -> Result<Vec<PathBuf>> {
    let path = dp.target.path.as_str();
    // Signatures first (the GPT backup at the end included), while no one
    // holds the disk; wipefs opens it exclusively itself.
    cmd::run("wipefs", &["-a", "-q", path])?;
    let mut disk = open_exclusive(path)?;
    let size = disk.seek(SeekFrom::End(0))?;
    ensure!(
        size == dp.target.size,
        "{path} is {size} bytes, but the plan was made for {} bytes",
        dp.target.size
    );
    write_layout(&mut disk, dp)?;
    disk.sync_all()
        .with_context(|| format!("cannot flush {path}"))?;
    kernel::sync_partitions(&disk, &dp.target.name, sys, &wanted(dp))
}

/// Zero and write the table: everything that goes through the whole-disk
/// device. Works on any seekable file, so it is tested on images.
pub fn write_layout<D>(disk: &mut D, dp: &DiskPlan) -> Result<()>
where
    D: std::io::Read + Write + Seek + std::fmt::Debug,
{
    let ss = u64::from(dp.sector_size);
    let size = dp.target.size;
    let sectors = size / ss;
    zero(disk, 0, MIB.min(size))?;
    zero(disk, size.saturating_sub(MIB), MIB.min(size))?;
    for v in &dp.volumes {
        let (start, len) = (v.first_lba * ss, v.sectors * ss);
        zero(disk, start, MIB.min(len))?;
        zero(disk, start + len.saturating_sub(MIB), MIB.min(len))?;
    }
    let code = dp.boot_code.as_deref().map(boot_code_bytes).transpose()?;
    match &dp.table {
        Table::Gpt(g) => table::write_gpt(disk, sectors, dp.sector_size, g, code.as_ref()),
        Table::Mbr(m) => table::write_mbr(disk, sectors, dp.sector_size, m, code.as_ref()),
        Table::None => {
            if let Some(code) = code {
                disk.seek(SeekFrom::Start(0))?;
                disk.write_all(&code)?;
            }
            Ok(())
        }
    }
    .with_context(|| format!("cannot write the partition table of {}", dp.target.path))
}

fn zero<D: Write + Seek>(disk: &mut D, offset: u64, len: u64) -> Result<()> {
    disk.seek(SeekFrom::Start(offset))?;
    disk.write_all(&vec![0u8; len as usize])
        .with_context(|| format!("cannot zero {len} bytes at offset {offset}"))
}

/// The partitions the kernel should show, as it would parse them itself:
/// an extended partition is a stub of 1 KiB (one sector on 4Kn disks), so
/// that nothing formats the container.
pub fn wanted(dp: &DiskPlan) -> Vec<Wanted> {
    let ss = u64::from(dp.sector_size);
    match &dp.table {
        Table::Gpt(g) => g
            .partitions
            .iter()
            .map(|p| Wanted {
                number: p.number,
                start: p.first_lba * ss,
                length: (p.last_lba - p.first_lba + 1) * ss,
            })
            .collect(),
        Table::Mbr(m) => m
            .partitions
            .iter()
            .map(|p| {
                let length = match p.kind {
                    MbrKind::Extended => (p.sectors * ss / 512).min((ss / 512).max(2)) * 512,
                    _ => p.sectors * ss,
                };
                Wanted {
                    number: p.number,
                    start: p.start_lba * ss,
                    length,
                }
            })
            .collect(),
        Table::None => Vec::new(),
    }
}
