//! Partition tables written exactly: a GPT (through the `gpt` crate's
//! low-level writers, which produce sgdisk's bytes) or an MBR with its
//! extended boot records (written here: mbrman computes EBR offsets in 32
//! bits and would overwrite the first EBR for any logical past 4 GiB).
//!
//! Everything works on `Read + Write + Seek`, so it is tested on image files
//! and compared with `sfdisk --dump`.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::manifest::{Guid, MbrKind};

/// A GPT as it will be written to the target disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GptLayout {
    pub disk_guid: Guid,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    /// Entries in the partition entry array.
    pub entries: u32,
    /// Where the backup header goes: the last LBA of the target disk.
    pub backup_lba: u64,
    pub partitions: Vec<GptEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GptEntry {
    /// 1-based slot in the entry array.
    pub number: u32,
    pub first_lba: u64,
    pub last_lba: u64,
    pub type_guid: Guid,
    pub guid: Guid,
    pub name: String,
    pub attributes: u64,
}

/// An MBR as it will be written: primaries and the extended partition in
/// LBA 0, each logical in its own EBR at its captured LBA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MbrLayout {
    pub signature: u32,
    pub partitions: Vec<MbrEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MbrEntry {
    pub number: u32,
    pub kind: MbrKind,
    pub type_byte: u8,
    pub boot: bool,
    pub start_lba: u64,
    pub sectors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebr_lba: Option<u64>,
}

/// Size of one GPT partition entry; the only one rewind writes (and reads).
const ENTRY_SIZE: u32 = 128;

fn lb_size(sector_size: u32) -> Result<gpt::disk::LogicalBlockSize> {
    match sector_size {
        512 => Ok(gpt::disk::LogicalBlockSize::Lb512),
        4096 => Ok(gpt::disk::LogicalBlockSize::Lb4096),
        other => bail!("a GPT on {other}-byte sectors is not supported (512 and 4096 are)"),
    }
}

impl GptLayout {
    /// Sectors taken by one copy of the entry array.
    pub fn array_sectors(&self, sector_size: u32) -> u64 {
        (u64::from(self.entries) * u64::from(ENTRY_SIZE)).div_ceil(u64::from(sector_size))
    }

    /// Check that the table fits a disk of `sectors` sectors; the same
    /// check runs when planning, so bad input is refused before writing.
    pub fn check(&self, sectors: u64, sector_size: u32) -> Result<()> {
        lb_size(sector_size)?;
        let array = self.array_sectors(sector_size);
        ensure!(self.entries > 0, "a GPT needs at least one entry");
        ensure!(
            Some(self.backup_lba) == sectors.checked_sub(1),
            "backup header at LBA {} but the disk ends at LBA {}",
            self.backup_lba,
            sectors.saturating_sub(1)
        );
        ensure!(
            self.first_usable_lba >= array.saturating_add(2),
            "first usable LBA {} overlaps the primary entry array (LBA 2..{})",
            self.first_usable_lba,
            1 + array
        );
        ensure!(
            self.last_usable_lba.saturating_add(array) < self.backup_lba
                && self.first_usable_lba <= self.last_usable_lba,
            "last usable LBA {} overlaps the backup entry array (from LBA {})",
            self.last_usable_lba,
            self.backup_lba.saturating_sub(array)
        );
        for p in &self.partitions {
            ensure!(
                (1..=self.entries).contains(&p.number),
                "partition {} is outside the {}-entry array",
                p.number,
                self.entries
            );
            ensure!(
                self.first_usable_lba <= p.first_lba
                    && p.first_lba <= p.last_lba
                    && p.last_lba <= self.last_usable_lba,
                "partition {} (LBA {}..{}) is outside the usable LBAs {}..{}",
                p.number,
                p.first_lba,
                p.last_lba,
                self.first_usable_lba,
                self.last_usable_lba
            );
            ensure!(
                p.name.encode_utf16().count() <= 36,
                "partition {} name is longer than 36 UTF-16 units",
                p.number
            );
        }
        Ok(())
    }
}

/// Write `g` on a disk of `sectors` sectors: protective MBR (with the
/// captured boot code), both entry arrays, primary and backup headers.
pub fn write_gpt<D>(
    dev: &mut D,
    sectors: u64,
    sector_size: u32,
    g: &GptLayout,
    boot_code: Option<&[u8; 440]>,
) -> Result<()>
where
    D: Read + Write + Seek + std::fmt::Debug,
{
    g.check(sectors, sector_size)?;
    let lb = lb_size(sector_size)?;
    let last = sectors - 1;
    let array = g.array_sectors(sector_size);
    let backup_array = last - array;

    // LBA 0 and 1 start clean: the PMBR and header fill only part of them.
    write_at(dev, 0, &vec![0u8; 2 * sector_size as usize])?;
    let gpt_io = |e: std::io::Error| anyhow::anyhow!("cannot write the GPT entries: {e}");
    for start in [2, backup_array] {
        gpt::partition::Partition::write_zero_entries_to_device(
            dev,
            0,
            u64::from(g.entries),
            start,
            lb,
            ENTRY_SIZE,
        )
        .map_err(gpt_io)?;
        for p in &g.partitions {
            let entry = gpt::partition::Partition {
                part_type_guid: gpt::partition_types::Type {
                    guid: p.type_guid.uuid(),
                    os: gpt::partition_types::OperatingSystem::None,
                },
                part_guid: p.guid.uuid(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: p.attributes,
                name: p.name.clone(),
            };
            entry
                .write_to_device(dev, u64::from(p.number - 1), start, lb, ENTRY_SIZE)
                .map_err(gpt_io)?;
        }
    }
    // The headers checksum the arrays as written above.
    let mut header = gpt::header::Header {
        signature: "EFI PART".to_string(),
        revision: (1, 0),
        header_size_le: 92,
        crc32: 0,
        reserved: 0,
        current_lba: 1,
        backup_lba: last,
        first_usable: g.first_usable_lba,
        last_usable: g.last_usable_lba,
        disk_guid: g.disk_guid.uuid(),
        part_start: 2,
        num_parts: g.entries,
        part_size: ENTRY_SIZE,
        crc32_parts: 0,
    };
    header
        .write_primary(dev, lb)
        .map_err(|e| anyhow::anyhow!("cannot write the primary GPT header: {e}"))?;
    let mut backup = header.clone();
    backup.current_lba = last;
    backup.backup_lba = 1;
    backup.part_start = backup_array;
    backup
        .write_backup(dev, lb)
        .map_err(|e| anyhow::anyhow!("cannot write the backup GPT header at LBA {last}: {e}"))?;

    // The protective partition covers the disk from LBA 1, capped at 2^32-1.
    let mut pmbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(last).unwrap_or(u32::MAX));
    if let Some(code) = boot_code {
        pmbr.set_bootcode(*code);
    }
    pmbr.overwrite_lba0(dev)
        .map_err(|e| anyhow::anyhow!("cannot write the protective MBR: {e}"))?;
    dev.flush()?;
    Ok(())
}

impl MbrLayout {
    /// Check that the table fits a disk of `sectors` sectors and that every
    /// field fits its 32-bit slot.
    pub fn check(&self, sectors: u64) -> Result<()> {
        let limit = sectors.min(1 << 32);
        let extended: Vec<&MbrEntry> = self
            .partitions
            .iter()
            .filter(|p| p.kind == MbrKind::Extended)
            .collect();
        ensure!(extended.len() <= 1, "more than one extended partition");
        for p in &self.partitions {
            ensure!(
                p.sectors > 0
                    && p.start_lba > 0
                    && p.start_lba
                        .checked_add(p.sectors)
                        .is_some_and(|end| end <= limit),
                "partition {} (start {}, {} sectors) does not fit the disk's first {limit} sectors",
                p.number,
                p.start_lba,
                p.sectors
            );
            match p.kind {
                MbrKind::Primary | MbrKind::Extended => ensure!(
                    (1..=4).contains(&p.number),
                    "primary partition number {} is not 1-4",
                    p.number
                ),
                MbrKind::Logical => {
                    let ext = extended.first().with_context(|| {
                        format!("logical partition {} has no extended partition", p.number)
                    })?;
                    let ebr = p.ebr_lba.with_context(|| {
                        format!("logical partition {} has no EBR LBA", p.number)
                    })?;
                    ensure!(
                        ebr >= ext.start_lba
                            && ebr < p.start_lba
                            && p.start_lba.checked_add(p.sectors).is_some_and(|end| {
                                Some(end) <= ext.start_lba.checked_add(ext.sectors)
                            }),
                        "logical partition {} (EBR at {ebr}) is not inside the extended partition",
                        p.number
                    );
                }
            }
        }
        if let (Some(ext), Some(first)) = (extended.first(), self.logicals().first()) {
            ensure!(
                first.ebr_lba == Some(ext.start_lba),
                "the first EBR must be at the extended partition's start (LBA {})",
                ext.start_lba
            );
        }
        Ok(())
    }

    fn logicals(&self) -> Vec<&MbrEntry> {
        let mut l: Vec<&MbrEntry> = self
            .partitions
            .iter()
            .filter(|p| p.kind == MbrKind::Logical)
            .collect();
        l.sort_by_key(|p| p.number);
        l
    }
}

/// One 16-byte partition record; CHS left at 0 (Linux and every firmware
/// that boots from LBA ignore it, and it cannot describe LBAs past 8 GiB).
fn record(boot: bool, type_byte: u8, start: u64, sectors: u64) -> Result<[u8; 16]> {
    let start = u32::try_from(start).context("an MBR start LBA beyond 2^32")?;
    let sectors = u32::try_from(sectors).context("an MBR partition of 2^32 sectors or more")?;
    let mut r = [0u8; 16];
    r[0] = if boot { 0x80 } else { 0 };
    r[4] = type_byte;
    r[8..12].copy_from_slice(&start.to_le_bytes());
    r[12..16].copy_from_slice(&sectors.to_le_bytes());
    Ok(r)
}

/// Write `m` on a disk of `sectors` sectors: LBA 0 (boot code, disk
/// signature, four records) and the EBR chain at the captured LBAs. EBR
/// links use type 0x05 and span the next logical from its EBR, as sfdisk
/// writes them.
pub fn write_mbr<D: Write + Seek>(
    dev: &mut D,
    sectors: u64,
    sector_size: u32,
    m: &MbrLayout,
    boot_code: Option<&[u8; 440]>,
) -> Result<()> {
    m.check(sectors)?;
    let ss = u64::from(sector_size);
    let mut lba0 = vec![0u8; sector_size as usize];
    if let Some(code) = boot_code {
        lba0[..440].copy_from_slice(code);
    }
    lba0[440..444].copy_from_slice(&m.signature.to_le_bytes());
    for p in m.partitions.iter().filter(|p| p.kind != MbrKind::Logical) {
        let off = 446 + 16 * (p.number as usize - 1);
        lba0[off..off + 16].copy_from_slice(&record(p.boot, p.type_byte, p.start_lba, p.sectors)?);
    }
    lba0[510] = 0x55;
    lba0[511] = 0xaa;
    write_at(dev, 0, &lba0)?;

    let ext = m.partitions.iter().find(|p| p.kind == MbrKind::Extended);
    let logicals = m.logicals();
    if let Some(ext) = ext
        && logicals.is_empty()
    {
        // An empty extended partition still starts with a valid, empty EBR.
        let mut ebr = vec![0u8; sector_size as usize];
        ebr[510] = 0x55;
        ebr[511] = 0xaa;
        write_at(dev, ext.start_lba * ss, &ebr)?;
    }
    for (i, l) in logicals.iter().enumerate() {
        let ext = ext.context("logical partitions without an extended partition")?;
        let at = l.ebr_lba.context("logical partition without an EBR LBA")?;
        let mut ebr = vec![0u8; sector_size as usize];
        ebr[446..462].copy_from_slice(&record(l.boot, l.type_byte, l.start_lba - at, l.sectors)?);
        if let Some(next) = logicals.get(i + 1) {
            let next_at = next
                .ebr_lba
                .context("logical partition without an EBR LBA")?;
            let link = record(
                false,
                0x05,
                next_at - ext.start_lba,
                next.start_lba + next.sectors - next_at,
            )?;
            ebr[462..478].copy_from_slice(&link);
        }
        ebr[510] = 0x55;
        ebr[511] = 0xaa;
        // u64 all the way: an EBR past 4 GiB lands where it belongs.
        write_at(dev, at * ss, &ebr)?;
    }
    dev.flush()?;
    Ok(())
}

fn write_at<D: Write + Seek>(dev: &mut D, offset: u64, bytes: &[u8]) -> Result<()> {
    dev.seek(SeekFrom::Start(offset))?;
    dev.write_all(bytes)
        .with_context(|| format!("cannot write {} bytes at offset {offset}", bytes.len()))
}

/// Decode the manifest's boot code (880 hex digits).
pub fn boot_code_bytes(hex: &str) -> Result<[u8; 440]> {
    ensure!(
        hex.len() == 880 && hex.is_ascii(),
        "boot code is {} hex digits, expected 880 (440 bytes)",
        hex.len()
    );
    let mut out = [0u8; 440];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .with_context(|| format!("boot code byte {i} is not hex"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
