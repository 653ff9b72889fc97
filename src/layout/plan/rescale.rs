//! Another sector size: a layout captured on a disk with `from`-byte
//! logical sectors, placed on one with `to`-byte sectors (512 → 4Kn and
//! back). Every partition keeps its byte offsets, so an LBA is rescaled
//! only when its byte offset is a whole number of new sectors; otherwise
//! the plan refuses, naming the partition and the offset. The GPT's own
//! areas (header and entry array) are recomputed for the new size.
//!
//! [`super::plan`] calls [`check_disk`] when it chooses a disk (so a disk
//! that cannot take the layout is refused before anything is written,
//! with the offset that does not fit), then [`rescale_gpt`] or
//! [`rescale_mbr`], [`boot_gap`] and [`filesystem`] for each filesystem:
//! mkfs must be told the new sector size where it records one (vfat's
//! `-S`, xfs's `-s size=`; an ext block or btrfs sector smaller than the
//! new sector cannot be mounted). What holds sector numbers of the old size
//! is not copied: the boot gap (BIOS GRUB's core.img) is left out, and the
//! boot loader step reinstalls GRUB in a chroot
//! (`bootloader::grub::decide` sees the sector size change).

use anyhow::{Result, bail, ensure};

use crate::fs::FsType;
use crate::layout::table::{GptLayout, MbrLayout};
use crate::manifest::{BootGap, Disk};

/// The sector sizes a layout can be moved between (the ones a GPT can be
/// written with here, and the only ones disks have).
pub const SECTOR_SIZES: [u32; 2] = [512, 4096];

/// Why captured disk `d` cannot be recreated at its byte offsets on a disk
/// of `size` bytes with `to`-byte sectors; `Ok` when it can (or when the
/// sector size is the same).
pub fn check_disk(d: &Disk, to: u32, size: u64) -> Result<()> {
    let from = d.logical_sector_size;
    if from == to {
        return Ok(());
    }
    ensure!(
        SECTOR_SIZES.contains(&from) && SECTOR_SIZES.contains(&to),
        "a layout can be moved between 512- and 4096-byte sectors only"
    );
    let sectors = size / u64::from(to);
    if let Some(g) = &d.gpt {
        rescale_gpt(
            &super::gpt_layout(g, g.last_usable_lba, sectors),
            from,
            to,
            sectors,
        )?;
    } else if let Some(m) = &d.mbr {
        rescale_mbr(&super::mbr_layout(m), from, to)?;
    }
    Ok(())
}

/// The boot gap at the same byte offsets in `to`-byte sectors, or `None`
/// when the sector size changes: what it holds (BIOS GRUB's core.img)
/// addresses the disk in sectors of the old size, so GRUB is reinstalled
/// instead of copied.
pub fn boot_gap(gap: &BootGap, from: u32, to: u32) -> Option<BootGap> {
    (from == to).then(|| gap.clone())
}

/// `fs` with the parameters mkfs needs on a disk with `to`-byte sectors
/// (captured on `from`-byte ones), and a note for each change. Sizes in
/// bytes stay as they were where the new sector allows.
pub fn filesystem(fs: &FsType, from: u32, to: u32, device: &str) -> (FsType, Vec<String>) {
    let mut notes = Vec::new();
    let mut out = fs.clone();
    if from == to {
        return (out, notes);
    }
    let mut note = |what: String| notes.push(format!("{fs} on {device}: {what}"));
    match &mut out {
        FsType::Vfat(Some(p)) if u32::from(p.sector_size) != to => {
            // The cluster keeps its bytes when it can; the reserved area
            // and root directory keep their counts (FAT32 wants its boot
            // sector backup inside the reserved sectors).
            let cluster = u32::from(p.sector_size) * u32::from(p.sectors_per_cluster);
            let spc = (cluster / to).max(1);
            note(format!(
                "{}-byte sectors (mkfs.fat -S {to}), clusters of {} bytes (were {cluster})",
                to,
                spc * to
            ));
            p.sector_size = u16::try_from(to).unwrap_or(u16::MAX);
            p.sectors_per_cluster = u8::try_from(spc).unwrap_or(u8::MAX);
        }
        FsType::Xfs(Some(p)) if p.sector_size < to => {
            note(format!(
                "sector size {to} (was {}; mkfs.xfs -s size={to})",
                p.sector_size
            ));
            p.sector_size = to;
        }
        FsType::Ext2(Some(p)) | FsType::Ext3(Some(p)) | FsType::Ext4(Some(p))
            if p.block_size < to =>
        {
            let k = u64::from(to / p.block_size);
            note(format!(
                "{to}-byte blocks (were {}): a block cannot be smaller than a sector",
                p.block_size
            ));
            p.block_count /= k;
            p.reserved_blocks /= k;
            p.block_size = to;
        }
        FsType::Btrfs(Some(p)) if p.sector_size < to => {
            note(format!("sector size {to} (was {})", p.sector_size));
            p.sector_size = to;
            p.node_size = p.node_size.max(to);
        }
        _ => {}
    }
    (out, notes)
}

/// LBA `lba` of `from`-byte sectors as an LBA of `to`-byte sectors, when
/// its byte offset is a whole number of them.
pub fn rescale_lba(lba: u64, from: u32, to: u32) -> Option<u64> {
    let bytes = lba.checked_mul(u64::from(from))?;
    bytes
        .is_multiple_of(u64::from(to))
        .then(|| bytes / u64::from(to))
}

/// Sectors of `to` bytes holding the GPT entry array.
fn entry_sectors(entries: u32, to: u32) -> u64 {
    (u64::from(entries) * 128).div_ceil(u64::from(to))
}

/// `layout` rescaled for a disk of `target_sectors` sectors of `to` bytes.
pub fn rescale_gpt(
    layout: &GptLayout,
    from: u32,
    to: u32,
    target_sectors: u64,
) -> Result<GptLayout> {
    let array = entry_sectors(layout.entries, to);
    // LBA 0 (protective MBR), LBA 1 (header), then the entry array.
    let min_first = 2 + array;
    let first_usable = rescale_lba(layout.first_usable_lba, from, to)
        .unwrap_or_else(|| (layout.first_usable_lba * u64::from(from)).div_ceil(u64::from(to)))
        .max(min_first);
    ensure!(
        target_sectors > first_usable + array + 2,
        "a disk of {target_sectors} {to}-byte sectors is too small for a GPT"
    );
    let last_usable = target_sectors - 2 - array;
    let mut out = layout.clone();
    out.first_usable_lba = first_usable;
    out.last_usable_lba = last_usable;
    out.backup_lba = target_sectors - 1;
    for p in out.partitions.iter_mut() {
        let (Some(first), Some(end)) = (
            rescale_lba(p.first_lba, from, to),
            rescale_lba(p.last_lba + 1, from, to),
        ) else {
            bail!(
                "partition {} (LBA {}..{} of {from}-byte sectors, bytes {}..{}) does not start \
                 and end on a {to}-byte boundary: it cannot be placed on a disk with {to}-byte \
                 sectors at the same offsets",
                p.number,
                p.first_lba,
                p.last_lba,
                p.first_lba * u64::from(from),
                (p.last_lba + 1) * u64::from(from)
            );
        };
        ensure!(
            first >= first_usable && end - 1 <= last_usable,
            "partition {} would lie at {to}-byte LBA {first}..{} outside the usable area \
             {first_usable}..{last_usable} of the GPT",
            p.number,
            end - 1
        );
        p.first_lba = first;
        p.last_lba = end - 1;
    }
    Ok(out)
}

/// `layout` rescaled: every start, length and EBR LBA.
pub fn rescale_mbr(layout: &MbrLayout, from: u32, to: u32) -> Result<MbrLayout> {
    let mut out = layout.clone();
    for p in out.partitions.iter_mut() {
        let scaled = (
            rescale_lba(p.start_lba, from, to),
            rescale_lba(p.sectors, from, to),
            p.ebr_lba.map(|e| rescale_lba(e, from, to)),
        );
        match scaled {
            (Some(start), Some(sectors), None) => {
                (p.start_lba, p.sectors) = (start, sectors);
            }
            (Some(start), Some(sectors), Some(Some(ebr))) => {
                (p.start_lba, p.sectors, p.ebr_lba) = (start, sectors, Some(ebr));
            }
            _ => bail!(
                "MBR partition {} (start {}, {} sectors of {from} bytes{}) does not lie on \
                 {to}-byte boundaries: it cannot be placed on a disk with {to}-byte sectors at \
                 the same offsets",
                p.number,
                p.start_lba,
                p.sectors,
                p.ebr_lba
                    .map(|e| format!(", EBR at LBA {e}"))
                    .unwrap_or_default()
            ),
        }
        ensure!(
            p.start_lba + p.sectors <= 1 << 32,
            "MBR partition {} would end beyond the MBR's 2^32-sector reach",
            p.number
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::table::{GptEntry, MbrEntry};
    use crate::manifest::MbrKind;

    fn entry(number: u32, first_lba: u64, last_lba: u64) -> GptEntry {
        GptEntry {
            number,
            first_lba,
            last_lba,
            type_guid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
            guid: format!("11111111-2222-4333-8444-5555555555{number:02}")
                .as_str()
                .into(),
            name: format!("p{number}"),
            attributes: 0,
        }
    }

    fn gpt(parts: Vec<GptEntry>, first: u64, last: u64, backup: u64) -> GptLayout {
        GptLayout {
            disk_guid: "a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f".into(),
            first_usable_lba: first,
            last_usable_lba: last,
            entries: 128,
            backup_lba: backup,
            partitions: parts,
        }
    }

    #[test]
    fn lbas_keep_their_byte_offsets() {
        assert_eq!(rescale_lba(2048, 512, 4096), Some(256));
        assert_eq!(rescale_lba(2049, 512, 4096), None);
        assert_eq!(rescale_lba(256, 4096, 512), Some(2048));
        assert_eq!(rescale_lba(u64::MAX, 4096, 512), None);
    }

    /// An 8 GiB 512-byte disk (1 MiB-aligned partitions) onto an 8 GiB 4Kn
    /// disk, and back.
    #[test]
    fn a_512_byte_gpt_onto_4kn_and_back() {
        let disk_sectors_512 = 16_777_216;
        let captured = gpt(
            vec![entry(1, 2048, 1_050_623), entry(2, 1_050_624, 16_775_167)],
            34,
            disk_sectors_512 - 34,
            disk_sectors_512 - 1,
        );
        let k = rescale_gpt(&captured, 512, 4096, disk_sectors_512 / 8).unwrap();
        // 128 entries of 128 bytes are 4 sectors of 4 KiB: usable from LBA 6.
        assert_eq!(k.first_usable_lba, 6);
        assert_eq!(k.last_usable_lba, 2_097_152 - 6);
        assert_eq!(k.backup_lba, 2_097_151);
        let spans: Vec<(u64, u64)> = k
            .partitions
            .iter()
            .map(|p| (p.first_lba, p.last_lba))
            .collect();
        assert_eq!(spans, [(256, 131_327), (131_328, 2_096_895)]);
        for (a, b) in captured.partitions.iter().zip(&k.partitions) {
            assert_eq!(a.first_lba * 512, b.first_lba * 4096);
            assert_eq!((a.last_lba + 1) * 512, (b.last_lba + 1) * 4096);
            assert_eq!((&a.guid, &a.name), (&b.guid, &b.name));
        }
        let back = rescale_gpt(&k, 4096, 512, disk_sectors_512).unwrap();
        assert_eq!(back.partitions, captured.partitions);
        assert_eq!(back.first_usable_lba, 48); // 6 sectors of 4 KiB
        assert_eq!(back.last_usable_lba, disk_sectors_512 - 34);
    }

    #[test]
    fn an_unaligned_partition_is_refused_with_its_offsets() {
        // The old fdisk default: partition 1 at sector 63.
        let captured = gpt(vec![entry(1, 63, 2_047_999)], 34, 4_194_270, 4_194_303);
        let e = format!(
            "{:#}",
            rescale_gpt(&captured, 512, 4096, 524_288).unwrap_err()
        );
        assert_eq!(
            e,
            "partition 1 (LBA 63..2047999 of 512-byte sectors, bytes 32256..1048576000) does \
             not start and end on a 4096-byte boundary: it cannot be placed on a disk with \
             4096-byte sectors at the same offsets"
        );
        // A partition ending in the last 512-byte sectors of a disk falls
        // into the 4Kn GPT's backup area.
        let captured = gpt(vec![entry(1, 2048, 4_194_270)], 34, 4_194_270, 4_194_303);
        let e = format!(
            "{:#}",
            rescale_gpt(&captured, 512, 4096, 524_288).unwrap_err()
        );
        assert!(
            e.contains("does not start and end on a 4096-byte boundary"),
            "{e}"
        );
        // Aligned, but reaching into the 4Kn GPT's backup entry array.
        let captured = gpt(vec![entry(1, 2048, 4_194_271)], 34, 4_194_271, 4_194_303);
        let e = format!(
            "{:#}",
            rescale_gpt(&captured, 512, 4096, 524_288).unwrap_err()
        );
        assert_eq!(
            e,
            "partition 1 would lie at 4096-byte LBA 256..524283 outside the usable area \
             6..524282 of the GPT"
        );
        let captured = gpt(vec![entry(1, 2048, 4_194_263)], 34, 4_194_270, 4_194_303);
        assert!(rescale_gpt(&captured, 512, 4096, 524_288).is_ok());
    }

    #[test]
    fn mbr_starts_lengths_and_ebrs() {
        let mbr = MbrLayout {
            signature: 0x1a2b3c4d,
            partitions: vec![
                MbrEntry {
                    number: 1,
                    kind: MbrKind::Primary,
                    type_byte: 0x83,
                    boot: true,
                    start_lba: 2048,
                    sectors: 1_048_576,
                    ebr_lba: None,
                },
                MbrEntry {
                    number: 5,
                    kind: MbrKind::Logical,
                    type_byte: 0x83,
                    boot: false,
                    start_lba: 1_052_672,
                    sectors: 1_048_576,
                    ebr_lba: Some(1_050_624),
                },
            ],
        };
        let k = rescale_mbr(&mbr, 512, 4096).unwrap();
        assert_eq!(
            k.partitions
                .iter()
                .map(|p| (p.start_lba, p.sectors, p.ebr_lba))
                .collect::<Vec<_>>(),
            [(256, 131_072, None), (131_584, 131_072, Some(131_328))]
        );
        assert_eq!(rescale_mbr(&k, 4096, 512).unwrap(), mbr);
        let mut odd = mbr.clone();
        odd.partitions[1].ebr_lba = Some(1_050_625);
        let e = format!("{:#}", rescale_mbr(&odd, 512, 4096).unwrap_err());
        assert!(e.starts_with("MBR partition 5 (start 1052672, 1048576 sectors of 512 bytes, EBR at LBA 1050625) does not lie on 4096-byte boundaries"), "{e}");
    }
}
