//! Disks: identity from sysfs, partition tables read from the disk itself.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::manifest::{BootGap, Disk, Gpt, GptPartition, Mbr, MbrKind, MbrPartition};

/// A disk as found on the running system, with where its partitions are.
#[derive(Debug, Clone)]
pub struct FoundDisk {
    pub disk: Disk,
    /// Why the disk itself could not be read (a container or a device
    /// policy may forbid it); its table is then unknown.
    pub unreadable: Option<String>,
    /// major:minor of the whole disk.
    pub dev: (u32, u32),
    pub partitions: Vec<FoundPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPartition {
    pub number: u32,
    pub path: PathBuf,
    pub dev: (u32, u32),
}

/// What capture reads from a disk's first and last sectors: its partition
/// table (GPT or MBR), boot code and boot gap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskTables {
    pub gpt: Option<Gpt>,
    pub mbr: Option<Mbr>,
    pub boot_code: Option<String>,
    pub boot_gap: Option<BootGap>,
}

/// Names of the disks a capture covers by default: block devices backed by a
/// device (not loop, ram, zram or device-mapper), with media, that are not
/// optical drives or eMMC boot areas.
pub fn list_disks(sys: &Path) -> Result<Vec<String>> {
    let dir = sys.join("block");
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = entry.path();
        let is_real = base.join("device").exists();
        let is_optical = name.starts_with("sr");
        let is_mmc_area =
            name.starts_with("mmcblk") && (name.contains("boot") || name.contains("rpmb"));
        let size: u64 = read_attr(&base, "size")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if is_real && !is_optical && !is_mmc_area && size > 0 {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The kernel name of the disk at `path` (`/dev/sda`, a by-id link, `/dev/loop0`).
pub fn disk_name(sys: &Path, path: &Path) -> Result<String> {
    let real =
        std::fs::canonicalize(path).with_context(|| format!("no such disk: {}", path.display()))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !sys.join("block").join(&name).is_dir() {
        bail!(
            "{} is not a whole disk (no {}/block/{name}); name the disk, not a partition",
            path.display(),
            sys.display()
        );
    }
    Ok(name)
}

/// Read one disk: identity from sysfs, table from `/dev/NAME` (or `dev_path`).
pub fn probe_disk(sys: &Path, name: &str, dev_path: &Path) -> Result<FoundDisk> {
    let base = sys.join("block").join(name);
    let sectors: u64 = read_attr(&base, "size")
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("cannot read the size of {name} from {}", base.display()))?;
    let logical: u32 = read_attr(&base, "queue/logical_block_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let physical: u32 = read_attr(&base, "queue/physical_block_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(logical);
    let size = sectors.saturating_mul(512); // sysfs counts 512-byte units whatever the sector size
    let (table, unreadable) = match File::open(dev_path) {
        Ok(mut file) => {
            let table = read_table(&mut file, logical, size).with_context(|| {
                format!("cannot read the partition table of {}", dev_path.display())
            })?;
            (table, None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            (DiskTables::default(), Some(e.to_string()))
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot open {} to read its partition table",
                    dev_path.display()
                )
            });
        }
    };
    let hw = disk_hardware(sys, name);
    let disk = Disk {
        name: name.to_string(),
        path: dev_path.display().to_string(),
        size,
        logical_sector_size: logical,
        physical_sector_size: physical,
        model: read_attr(&base, "device/model"),
        serial: serial(&base),
        wwn: read_attr(&base, "wwid").or_else(|| read_attr(&base, "device/wwid")),
        driver: hw.driver,
        controller: hw.controller,
        transport: hw.transport,
        gpt: table.gpt,
        mbr: table.mbr,
        boot_code: table.boot_code,
        boot_gap: table.boot_gap,
        raw: Vec::new(),
    };
    Ok(FoundDisk {
        disk,
        unreadable,
        dev: read_dev(&base)?,
        partitions: partitions(&base)?,
    })
}

/// The partition device nodes the kernel knows for a disk, by number.
fn partitions(base: &Path) -> Result<Vec<FoundPartition>> {
    let mut parts = Vec::new();
    for entry in
        std::fs::read_dir(base).with_context(|| format!("cannot list {}", base.display()))?
    {
        let entry = entry?;
        let p = entry.path();
        let Some(number) = read_attr(&p, "partition").and_then(|s| s.parse().ok()) else {
            continue;
        };
        parts.push(FoundPartition {
            number,
            path: Path::new("/dev").join(entry.file_name()),
            dev: read_dev(&p)?,
        });
    }
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

fn serial(base: &Path) -> Option<String> {
    read_attr(base, "serial")
        .or_else(|| read_attr(base, "device/serial"))
        .or_else(|| {
            // SCSI/SATA: the Unit Serial Number VPD page (0x80), serial from byte 4.
            let page = std::fs::read(base.join("device/vpd_pg80")).ok()?;
            let s = String::from_utf8_lossy(page.get(4..)?)
                .trim_matches(['\0', ' '])
                .to_string();
            (!s.is_empty()).then_some(s)
        })
}

/// A sysfs attribute, trimmed; `None` when absent or empty.
pub fn read_attr(base: &Path, attr: &str) -> Option<String> {
    let s = std::fs::read_to_string(base.join(attr)).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// major:minor from a sysfs `dev` attribute.
pub fn read_dev(base: &Path) -> Result<(u32, u32)> {
    let text = read_attr(base, "dev").with_context(|| format!("no {}/dev", base.display()))?;
    parse_dev(&text).with_context(|| format!("malformed {}/dev: {text}", base.display()))
}

pub fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Read the partition table of a disk (or disk image) of `size` bytes.
pub fn read_table<D: Read + Seek>(dev: &mut D, sector_size: u32, size: u64) -> Result<DiskTables> {
    if !(512..=65536).contains(&sector_size) || !sector_size.is_power_of_two() {
        bail!("unsupported logical sector size {sector_size}");
    }
    let ss = u64::from(sector_size);
    let mut lba0 = vec![0u8; sector_size as usize];
    dev.seek(SeekFrom::Start(0))?;
    dev.read_exact(&mut lba0).context("cannot read LBA 0")?;
    let mut table = DiskTables {
        boot_code: lba0[..440]
            .iter()
            .any(|&b| b != 0)
            .then(|| crate::util::hex::encode(&lba0[..440])),
        ..DiskTables::default()
    };
    if lba0[510..512] != [0x55, 0xaa] {
        return Ok(table); // no MBR, hence no table: a whole-disk filesystem or blank
    }
    // A protective MBR (type 0xEE) announces a GPT.
    let is_protective = (0..4).any(|i| lba0[446 + i * 16 + 4] == 0xee);
    if is_protective {
        table.gpt = Some(read_gpt(dev, sector_size, size)?);
        return Ok(table);
    }
    // mbrman panics on a used record starting at LBA 0 (found by
    // tests/fuzz_decoders.rs): refuse it first.
    for i in 0..4 {
        let rec = &lba0[446 + i * 16..462 + i * 16];
        if rec[4] != 0 && rec[8..12] == [0, 0, 0, 0] {
            bail!("invalid MBR: partition {} starts at LBA 0", i + 1);
        }
    }
    let mbr = mbrman::MBR::read_from(dev, sector_size)
        .map_err(|e| anyhow::anyhow!("invalid MBR: {e}"))?;
    let parsed = mbr_model(&mbr);
    // BIOS GRUB embeds core.img between the MBR and the first partition.
    if let Some(first) = parsed.partitions.iter().map(|p| p.start_lba).min()
        && first > 1
    {
        let gap_end = (first - 1).min((size / ss).saturating_sub(1));
        let len = ((gap_end * ss) as usize).min(32 << 20);
        let mut buf = vec![0u8; len];
        dev.seek(SeekFrom::Start(ss))?;
        dev.read_exact(&mut buf)
            .context("cannot read the sectors after the MBR")?;
        if buf.iter().any(|&b| b != 0) {
            table.boot_gap = Some(BootGap {
                first_lba: 1,
                last_lba: gap_end,
            });
        }
    }
    table.mbr = Some(parsed);
    Ok(table)
}

fn read_gpt<D: Read + Seek>(dev: &mut D, sector_size: u32, size: u64) -> Result<Gpt> {
    use gpt::disk::LogicalBlockSize;
    let lb = match sector_size {
        512 => LogicalBlockSize::Lb512,
        4096 => LogicalBlockSize::Lb4096,
        other => bail!("unsupported logical sector size {other} for GPT"),
    };
    dev.seek(SeekFrom::Start(0))?;
    let header = gpt::header::read_header_from_arbitrary_device(dev, lb)
        .map_err(|e| anyhow::anyhow!("primary GPT header: {e}"))?;
    // gpt's reader asserts on any other entry size; refuse instead of panicking.
    if header.part_size != 128 {
        bail!(
            "GPT entries of {} bytes are not supported (only 128)",
            header.part_size
        );
    }
    let last_lba = (size / u64::from(sector_size))
        .checked_sub(1)
        .context("the disk is smaller than one sector")?;
    if header.last_usable >= last_lba {
        bail!(
            "GPT says its last usable LBA is {}, but the disk ends at LBA {last_lba}",
            header.last_usable
        );
    }
    let parts = gpt::partition::file_read_partitions(dev, &header, lb)
        .map_err(|e| anyhow::anyhow!("GPT partition entries: {e}"))?;
    Ok(Gpt {
        disk_guid: header.disk_guid.into(),
        first_usable_lba: header.first_usable,
        last_usable_lba: header.last_usable,
        entries: header.num_parts,
        partitions: parts
            .iter()
            .map(|(&number, p)| GptPartition {
                number,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                type_guid: p.part_type_guid.guid.into(),
                guid: p.part_guid.into(),
                name: p.name.clone(),
                attributes: p.flags,
            })
            .collect(),
    })
}

fn mbr_model(mbr: &mbrman::MBR) -> Mbr {
    let mut partitions = Vec::new();
    for (i, p) in mbr.header.iter() {
        if p.is_unused() {
            continue;
        }
        partitions.push(MbrPartition {
            number: i as u32,
            kind: if p.is_extended() {
                MbrKind::Extended
            } else {
                MbrKind::Primary
            },
            type_byte: p.sys.into(),
            boot: p.is_active(),
            start_lba: u64::from(p.starting_lba),
            sectors: u64::from(p.sectors),
            ebr_lba: None,
        });
    }
    // Linux numbers logicals from 5 in chain order, counting only used entries.
    let used = mbr
        .logical_partitions
        .iter()
        .filter(|l| l.partition.is_used());
    for (i, l) in used.enumerate() {
        partitions.push(MbrPartition {
            number: 5 + i as u32,
            kind: MbrKind::Logical,
            type_byte: l.partition.sys.into(),
            boot: l.partition.is_active(),
            start_lba: u64::from(l.partition.starting_lba),
            sectors: u64::from(l.partition.sectors),
            ebr_lba: Some(u64::from(l.absolute_ebr_lba)),
        });
    }
    Mbr {
        signature: u32::from_le_bytes(mbr.header.disk_signature).into(),
        partitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Partition an image file with sfdisk (no root needed) and read it back.
    fn table_of(script: &str, size_mib: u64) -> DiskTables {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let f = File::create(&img).unwrap();
        f.set_len(size_mib << 20).unwrap();
        drop(f);
        let mut child = Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&img)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sfdisk (fdisk package) is needed for this test");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "sfdisk failed on:\n{script}"
        );
        let mut f = File::open(&img).unwrap();
        read_table(&mut f, 512, size_mib << 20).unwrap()
    }

    #[test]
    fn reads_gpt_exactly() {
        let t = table_of(
            "label: gpt\n\
             label-id: A0B1C2D3-E4F5-4607-8819-2A3B4C5D6E7F\n\
             first-lba: 2048\n\
             start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=11111111-2222-4333-8444-555555555501, name=\"EFI system\"\n\
             start=18432, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=11111111-2222-4333-8444-555555555502, name=root, attrs=\"LegacyBIOSBootable GUID:60\"\n\
             4: start=40960, size=8192, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=11111111-2222-4333-8444-555555555504\n",
            32,
        );
        let g = t.gpt.expect("gpt");
        assert!(t.mbr.is_none());
        assert_eq!(g.disk_guid, "a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f");
        assert_eq!(g.first_usable_lba, 2048);
        assert_eq!(g.last_usable_lba, (32 << 11) - 34);
        assert_eq!(g.entries, 128);
        let numbers: Vec<u32> = g.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 4]);
        let root = &g.partitions[1];
        assert_eq!((root.first_lba, root.last_lba), (18432, 18432 + 20480 - 1));
        assert_eq!(root.type_guid, "0fc63daf-8483-4772-8e79-3d69d8477de4");
        assert_eq!(root.guid, "11111111-2222-4333-8444-555555555502");
        assert_eq!(root.name, "root");
        assert_eq!(root.attributes, (1 << 2) | (1 << 60));
        assert_eq!(g.partitions[0].name, "EFI system");
    }

    #[test]
    fn reads_mbr_with_logicals_exactly() {
        let t = table_of(
            "label: dos\n\
             label-id: 0x1a2b3c4d\n\
             start=2048, size=8192, type=83, bootable\n\
             start=10240, size=8192, type=7\n\
             start=18432, size=40960, type=5\n\
             start=20480, size=8192, type=83\n\
             start=30720, size=16384, type=82\n",
            32,
        );
        assert!(t.gpt.is_none());
        let m = t.mbr.expect("mbr");
        assert_eq!(m.signature, "0x1a2b3c4d");
        let got: Vec<_> = m
            .partitions
            .iter()
            .map(|p| {
                (
                    p.number,
                    p.kind,
                    p.type_byte.as_str(),
                    p.boot,
                    p.start_lba,
                    p.sectors,
                    p.ebr_lba,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, MbrKind::Primary, "0x83", true, 2048, 8192, None),
                (2, MbrKind::Primary, "0x07", false, 10240, 8192, None),
                (3, MbrKind::Extended, "0x05", false, 18432, 40960, None),
                (5, MbrKind::Logical, "0x83", false, 20480, 8192, Some(18432)),
                (
                    6,
                    MbrKind::Logical,
                    "0x82",
                    false,
                    30720,
                    16384,
                    Some(30720 - 2048)
                ),
            ]
        );
        assert_eq!(t.boot_code, None);
        assert_eq!(t.boot_gap, None);
    }

    #[test]
    fn boot_code_and_gap_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let mut child = Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&img)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\nstart=2048, type=83\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[0] = 0xeb;
        bytes[1] = 0x63;
        bytes[512 * 5] = 0x52; // "core.img" in the gap
        std::fs::write(&img, &bytes).unwrap();
        let t = read_table(&mut File::open(&img).unwrap(), 512, 8 << 20).unwrap();
        let code = t.boot_code.unwrap();
        assert_eq!(code.len(), 880);
        assert!(code.starts_with("eb63"));
        assert_eq!(
            t.boot_gap,
            Some(BootGap {
                first_lba: 1,
                last_lba: 2047
            })
        );
    }

    #[test]
    fn blank_disk_has_no_table() {
        let mut c = std::io::Cursor::new(vec![0u8; 1 << 20]);
        assert_eq!(
            read_table(&mut c, 512, 1 << 20).unwrap(),
            DiskTables::default()
        );
    }

    #[test]
    fn sysfs_listing_skips_virtual_devices() {
        let sys = tempfile::tempdir().unwrap();
        let mk = |name: &str, size: &str, device: bool| {
            let d = sys.path().join("block").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("size"), size).unwrap();
            std::fs::write(d.join("dev"), "8:0\n").unwrap();
            if device {
                std::fs::create_dir(d.join("device")).unwrap();
            }
        };
        mk("sda", "1000\n", true);
        mk("nvme0n1", "2000\n", true);
        mk("loop0", "1000\n", false);
        mk("sr0", "1000\n", true);
        mk("sdb", "0\n", true); // card reader without a card
        mk("mmcblk0boot0", "100\n", true);
        assert_eq!(list_disks(sys.path()).unwrap(), ["nvme0n1", "sda"]);
    }

    #[test]
    fn sysfs_identity_and_partitions() {
        let sys = tempfile::tempdir().unwrap();
        let d = sys.path().join("block/sda");
        for (attr, val) in [
            ("size", "65536\n"),
            ("dev", "8:0\n"),
            ("queue/logical_block_size", "512\n"),
            ("queue/physical_block_size", "4096\n"),
            ("device/model", "Samsung SSD 870 \n"),
            ("device/wwid", "naa.5002538e40a1b2c3\n"),
            ("sda1/partition", "1\n"),
            ("sda1/dev", "8:1\n"),
            ("sda2/partition", "2\n"),
            ("sda2/dev", "8:2\n"),
        ] {
            let p = d.join(attr);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, val).unwrap();
        }
        let mut pg80 = vec![0u8, 0x80, 0, 12];
        pg80.extend_from_slice(b"S5Y1NX0R1234");
        std::fs::write(d.join("device/vpd_pg80"), pg80).unwrap();
        let img = sys.path().join("img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let found = probe_disk(sys.path(), "sda", &img).unwrap();
        assert_eq!(found.disk.size, 65536 * 512);
        assert_eq!(found.disk.physical_sector_size, 4096);
        assert_eq!(found.disk.model.as_deref(), Some("Samsung SSD 870"));
        assert_eq!(found.disk.serial.as_deref(), Some("S5Y1NX0R1234"));
        assert_eq!(found.disk.wwn.as_deref(), Some("naa.5002538e40a1b2c3"));
        assert_eq!(found.dev, (8, 0));
        assert_eq!(
            found.partitions,
            [
                FoundPartition {
                    number: 1,
                    path: "/dev/sda1".into(),
                    dev: (8, 1)
                },
                FoundPartition {
                    number: 2,
                    path: "/dev/sda2".into(),
                    dev: (8, 2)
                },
            ]
        );
    }
}

/// How a disk is attached, read from where its sysfs device sits: the
/// kernel driver of the disk itself, the driver of the controller it hangs
/// on, and the transport between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskHardware {
    /// The disk's driver: `sd`, `virtio_blk`, `nvme`, `mmcblk`.
    pub driver: Option<String>,
    /// The controller's driver: `ahci`, `virtio_scsi`, `nvme`, `mpt3sas`,
    /// `uas`, `usb-storage`, `qla2xxx`, `virtio_pci`.
    pub controller: Option<String>,
    /// `sata`, `sas`, `nvme`, `usb`, `fc`, `iscsi`, `virtio`, `scsi`,
    /// `mmc`, `multipath` (a dm-multipath device), `loop`.
    pub transport: Option<String>,
}

/// The driver, controller and transport of disk `name` (a /sys/block entry).
pub fn disk_hardware(sys: &Path, name: &str) -> DiskHardware {
    let base = sys.join("block").join(name);
    if name.starts_with("dm-") {
        let multipath = read_attr(&base, "dm/uuid").is_some_and(|u| u.starts_with("mpath-"));
        return DiskHardware {
            driver: Some("device-mapper".into()),
            controller: multipath.then(|| "dm-multipath".into()),
            transport: multipath.then(|| "multipath".into()),
        };
    }
    if name.starts_with("loop") {
        return DiskHardware {
            driver: Some("loop".into()),
            controller: None,
            transport: Some("loop".into()),
        };
    }
    let sys = std::fs::canonicalize(sys).unwrap_or_else(|_| sys.to_path_buf());
    let sys = sys.as_path();
    let device = match std::fs::canonicalize(base.join("device")) {
        Ok(d) => d,
        Err(_) => return DiskHardware::default(),
    };
    let driver_of = |dir: &Path| -> Option<String> {
        let link = std::fs::read_link(dir.join("driver")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    };
    let own = driver_of(&device);
    // The first ancestor with a driver is the controller (for an NVMe
    // namespace, `device` is the controller's class device: its parent).
    let controller = device.ancestors().skip(1).find_map(|a| {
        if a == sys || !a.starts_with(sys) {
            return None;
        }
        driver_of(a)
    });
    let path = device.to_string_lossy();
    let has = |part: &str| path.split('/').any(|c| c.starts_with(part));
    let transport = if name.starts_with("nvme") || has("nvme") {
        "nvme"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if has("usb") {
        "usb"
    } else if has("rport-") {
        "fc"
    } else if has("session") {
        "iscsi"
    } else if has("end_device-") || has("expander-") || has("phy-") {
        "sas"
    } else if has("ata") {
        "sata"
    } else if has("virtio") && !has("host") {
        "virtio"
    } else if has("host") {
        "scsi"
    } else {
        return DiskHardware {
            driver: own.clone(),
            controller,
            transport: None,
        };
    };
    DiskHardware {
        driver: own.or_else(|| (transport == "nvme").then(|| "nvme".to_string())),
        controller,
        transport: Some(transport.into()),
    }
}
