//! vfat (FAT12/16/32): parameters from the boot sector's BPB, made again
//! with mkfs.fat with the same geometry and volume id.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::{Difference, Differences, MkfsTarget, argv, read_at};

/// What mkfs.fat needs to make the same FAT filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfatParams {
    /// 12, 16 or 32.
    #[serde(rename = "@fat-size")]
    pub fat_size: u8,
    #[serde(rename = "@sector-size")]
    pub sector_size: u16,
    #[serde(rename = "@sectors-per-cluster")]
    pub sectors_per_cluster: u8,
    #[serde(rename = "@reserved-sectors")]
    pub reserved_sectors: u16,
    #[serde(rename = "@fat-count")]
    pub fat_count: u8,
    /// Root directory entries (0 on FAT32).
    #[serde(rename = "@root-entries")]
    pub root_entries: u16,
}

/// The parameters of the FAT filesystem on `dev`, from its boot sector.
pub fn read_params(dev: &Path) -> Result<VfatParams> {
    let sector = read_at(dev, 0, 512)?;
    Ok(fat_bpb(&sector)?.params)
}

/// A FAT volume id as blkid shows it: `ABCD-1234`.
pub fn is_volume_id(s: &str) -> bool {
    s.len() == 9
        && s.bytes().enumerate().all(|(i, c)| match i {
            4 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// mkfs.fat with the captured volume id, label and geometry.
pub fn command(params: Option<&VfatParams>, t: &MkfsTarget) -> Vec<String> {
    let volid = t.uuid.replace('-', "");
    let mut a = argv(&["mkfs.fat", "-i", &volid]);
    if let Some(l) = t.label {
        a.extend(argv(&["-n", l]));
    }
    if let Some(p) = params {
        a.extend([
            "-F".into(),
            p.fat_size.to_string(),
            "-S".into(),
            p.sector_size.to_string(),
            "-s".into(),
            p.sectors_per_cluster.to_string(),
            "-R".into(),
            p.reserved_sectors.to_string(),
            "-f".into(),
            p.fat_count.to_string(),
        ]);
        // FAT32 has no fixed root directory; mkfs.fat refuses -r 0.
        if p.root_entries > 0 {
            a.extend(["-r".into(), p.root_entries.to_string()]);
        }
    }
    a.push(t.device.into());
    a
}

/// All parameters at once.
pub fn differences(want: &VfatParams, got: &VfatParams) -> Vec<Difference> {
    let mut d = Differences::default();
    d.cmp("parameters", format!("{want:?}"), format!("{got:?}"));
    d.0
}

struct FatBpb {
    params: VfatParams,
    /// Volume serial and boot-sector label, when the extended BPB is there.
    volume_id: Option<u32>,
    label: Option<String>,
}

/// Parse a FAT boot sector (the first 512 bytes of the filesystem) into the
/// mkfs.fat parameters, the volume id as blkid prints it (`1234-ABCD`) and the
/// boot-sector label (`None` for mkfs.fat's `NO NAME`).
///
/// The label here is the boot-sector copy; blkid's `LABEL` comes from the
/// root directory entry, which Windows updates alone, so prefer blkid's.
pub fn parse_fat_boot_sector(sector: &[u8]) -> Result<(VfatParams, String, Option<String>)> {
    let bpb = fat_bpb(sector)?;
    let id = bpb
        .volume_id
        .context("FAT boot sector has no extended BPB, hence no volume id")?;
    let id = format!("{:04X}-{:04X}", id >> 16, id & 0xffff);
    Ok((bpb.params, id, bpb.label))
}

fn fat_bpb(s: &[u8]) -> Result<FatBpb> {
    ensure!(
        s.len() >= 512,
        "FAT boot sector is {} bytes, need 512",
        s.len()
    );
    ensure!(
        s[510] == 0x55 && s[511] == 0xaa,
        "no 0x55AA boot signature: not a FAT boot sector"
    );
    let u16_at = |o: usize| u16::from_le_bytes([s[o], s[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]);

    let bytes_per_sec = u16_at(11);
    let sec_per_clus = s[13];
    let reserved = u16_at(14);
    let num_fats = s[16];
    let root_entries = u16_at(17);
    let tot16 = u16_at(19);
    let fat_sz16 = u16_at(22);
    let tot32 = u32_at(32);
    let fat_sz32 = u32_at(36);

    ensure!(
        matches!(bytes_per_sec, 512 | 1024 | 2048 | 4096),
        "FAT bytes per sector {bytes_per_sec} is not 512..4096"
    );
    ensure!(
        sec_per_clus.is_power_of_two(),
        "FAT sectors per cluster {sec_per_clus} is not a power of two"
    );
    ensure!(reserved > 0, "FAT reserved sector count is 0");
    ensure!(num_fats > 0, "FAT count is 0");

    // Count of clusters, as in the Microsoft FAT specification.
    let fat_sz = if fat_sz16 != 0 {
        u64::from(fat_sz16)
    } else {
        u64::from(fat_sz32)
    };
    let total = if tot16 != 0 {
        u64::from(tot16)
    } else {
        u64::from(tot32)
    };
    let bps = u64::from(bytes_per_sec);
    let root_dir_sectors = (u64::from(root_entries) * 32).div_ceil(bps);
    let meta = u64::from(reserved) + u64::from(num_fats) * fat_sz + root_dir_sectors;
    let data = total.checked_sub(meta).with_context(|| {
        format!("FAT metadata ({meta} sectors) exceeds the volume ({total} sectors)")
    })?;
    let clusters = data / u64::from(sec_per_clus);

    let fat_size = if fat_sz16 == 0 {
        // A FAT32 BPB (BPB_FATSz16 = 0). mkfs.fat -F 32 makes these with
        // fewer than 65525 clusters too (with a warning), and Linux and
        // blkid still treat them as FAT32, so the layout decides here.
        ensure!(fat_sz32 != 0, "FAT size is 0 in both BPB fields");
        32
    } else if clusters < 4085 {
        12
    } else if clusters < 65525 {
        16
    } else {
        bail!("FAT12/16 BPB describes {clusters} clusters, too many for FAT16");
    };

    // Extended BPB: at 36 on FAT12/16, at 64 on FAT32. Signature 0x29 has
    // serial + label + type; 0x28 only the serial.
    let ext = if fat_size == 32 { 64 } else { 36 };
    let (volume_id, label) = match s[ext + 2] {
        0x29 => {
            let raw = &s[ext + 7..ext + 18];
            let text = String::from_utf8_lossy(raw);
            let text = text.trim_end_matches([' ', '\0']);
            let label = (!text.is_empty() && text != "NO NAME").then(|| text.to_string());
            (Some(u32_at(ext + 3)), label)
        }
        0x28 => (Some(u32_at(ext + 3)), None),
        _ => (None, None),
    };

    Ok(FatBpb {
        params: VfatParams {
            fat_size,
            sector_size: bytes_per_sec,
            sectors_per_cluster: sec_per_clus,
            reserved_sectors: reserved,
            fat_count: num_fats,
            root_entries,
        },
        volume_id,
        label,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{have, image, make};
    use super::super::{FsType, Tools};
    use super::*;

    #[test]
    fn fat32_esp_fixture() {
        let (p, id, label) = parse_fat_boot_sector(include_bytes!(
            "../../tests/fixtures/fs/fat32-esp.bootsector"
        ))
        .unwrap();
        assert_eq!(
            p,
            VfatParams {
                fat_size: 32,
                sector_size: 512,
                sectors_per_cluster: 1,
                reserved_sectors: 32,
                fat_count: 2,
                root_entries: 0,
            }
        );
        assert_eq!(id, "1234-ABCD");
        assert_eq!(label.as_deref(), Some("ESP"));
    }

    #[test]
    fn fat16_and_fat12_fixtures() {
        let (p, _, label) =
            parse_fat_boot_sector(include_bytes!("../../tests/fixtures/fs/fat16.bootsector"))
                .unwrap();
        assert_eq!(
            (p.fat_size, p.sectors_per_cluster, p.root_entries),
            (16, 4, 512)
        );
        assert_eq!(label, None, "NO NAME is no label");
        let (p, id, _) =
            parse_fat_boot_sector(include_bytes!("../../tests/fixtures/fs/fat12.bootsector"))
                .unwrap();
        assert_eq!(p.fat_size, 12);
        assert_eq!(id, "0BAD-F00D");
    }

    #[test]
    fn fat32_with_few_clusters_stays_fat32() {
        // mkfs.vfat -F 32 -s 8 on 40 MiB: ~10k clusters, FAT32 all the same.
        let (p, id, _) = parse_fat_boot_sector(include_bytes!(
            "../../tests/fixtures/fs/fat32-few-clusters.bootsector"
        ))
        .unwrap();
        assert_eq!((p.fat_size, p.sectors_per_cluster), (32, 8));
        assert_eq!(id, "5EED-0001");
    }

    #[test]
    fn fat_rejects_garbage() {
        let good = include_bytes!("../../tests/fixtures/fs/fat16.bootsector");
        let mut bad = *good;
        bad[511] = 0;
        assert!(format!("{:#}", parse_fat_boot_sector(&bad).unwrap_err()).contains("0x55AA"));
        assert!(parse_fat_boot_sector(&good[..100]).is_err());
        let mut bad = *good;
        bad[13] = 3; // sectors per cluster
        assert!(parse_fat_boot_sector(&bad).is_err());
        let mut bad = *good;
        bad[19] = 16; // total sectors smaller than the metadata
        bad[20] = 0;
        assert!(parse_fat_boot_sector(&bad).is_err());
        let mut bad = *good;
        bad[38] = 0; // no extended BPB: no volume id
        assert!(parse_fat_boot_sector(&bad).is_err());
        assert!(fat_bpb(&bad).is_ok(), "parameters are still readable");
    }

    #[test]
    fn vfat_real_images() {
        if !have("mkfs.vfat") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[&str], u64, u8); 3] = [
            (&["-F", "32", "-i", "1234ABCD", "-n", "ESP"], 64 << 20, 32),
            (&["-F", "16", "-i", "1234ABCD"], 32 << 20, 16),
            (&["-F", "12", "-i", "1234ABCD", "-n", "TINY"], 2 << 20, 12),
        ];
        for (i, (args, size, fat)) in cases.into_iter().enumerate() {
            let img = image(dir.path(), &format!("fat{i}.img"), size);
            let mut a = args.to_vec();
            a.push(img.to_str().unwrap());
            make("mkfs.vfat", &a);
            let (p, id, _) = parse_fat_boot_sector(&read_at(&img, 0, 512).unwrap()).unwrap();
            assert_eq!(p.fat_size, fat, "{args:?}");
            assert_eq!(id, "1234-ABCD");
            assert_eq!(
                FsType::read("vfat", &img).unwrap(),
                Some(FsType::Vfat(Some(p)))
            );
        }
    }

    #[test]
    fn vfat_commands() {
        let tools = Tools::default();
        let t = MkfsTarget {
            device: "/dev/sdb1",
            uuid: "1234-ABCD",
            label: Some("ESP"),
            grow: false,
            tools: &tools,
        };
        let fs = FsType::Vfat(Some(VfatParams {
            fat_size: 32,
            sector_size: 512,
            sectors_per_cluster: 1,
            reserved_sectors: 32,
            fat_count: 2,
            root_entries: 0,
        }));
        let c = fs.mkfs_commands(&t, &mut vec![]);
        assert_eq!(
            c[0].join(" "),
            "mkfs.fat -i 1234ABCD -n ESP -F 32 -S 512 -s 1 -R 32 -f 2 /dev/sdb1"
        );
        let t = MkfsTarget {
            uuid: "C0FF-EE01",
            label: None,
            ..t
        };
        let fs = FsType::Vfat(Some(VfatParams {
            fat_size: 16,
            sector_size: 512,
            sectors_per_cluster: 4,
            reserved_sectors: 4,
            fat_count: 2,
            root_entries: 512,
        }));
        let c = fs.mkfs_commands(&t, &mut vec![]);
        assert!(c[0].join(" ").ends_with("-f 2 -r 512 /dev/sdb1"), "{c:?}");
    }
}
