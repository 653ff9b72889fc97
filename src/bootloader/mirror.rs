//! UEFI with the ESP mirrored on MD RAID1 (metadata 1.0, so that the
//! firmware reads each member as a plain FAT filesystem): the loader's
//! files are on every member (the array mirrors them), but a boot entry
//! names one partition, so when that disk fails the machine does not boot.
//! Every member gets an entry: for each captured entry naming one member,
//! a copy naming each other member that has none — the same load option
//! with its hard-drive device path node (partition number, start, size,
//! GUID) made the other member's, and the member named in its description.
//! Pure: the entries are written by efi.rs like the captured ones.
//!
//! The same node rewrite serves a disk recreated with another sector size
//! ([`at_recreated_offsets`]): the node counts the partition's start and
//! size in sectors, which a 4Kn disk counts 8 times fewer of.

use anyhow::{Context, Result, bail};

use crate::layout::plan::{Plan, Table};
use crate::manifest::{Efi, EfiEntry, FsType, Manifest, StackRef};

/// A partition of a mirrored ESP, as recreated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    reference: String,
    guid: String,
    number: u32,
    first_lba: u64,
    sectors: u64,
}

/// The recreated GPT partitions of each MD array holding a vfat filesystem.
fn esp_mirrors(m: &Manifest, plan: &Plan) -> Vec<Vec<Member>> {
    let mut out = Vec::new();
    for fs in &m.filesystems {
        let (Some(StackRef::Md(name)), FsType::Vfat(_)) = (&fs.volume, &fs.fs_type) else {
            continue;
        };
        let Some(a) = m.md_arrays.iter().find(|a| &a.name == name) else {
            continue;
        };
        let mut members = Vec::new();
        for mem in &a.members {
            let StackRef::Partition(disk, n) = &mem.device else {
                continue;
            };
            let Some(dp) = plan.disks.iter().find(|d| &d.captured == disk) else {
                continue;
            };
            let Table::Gpt(g) = &dp.table else { continue };
            let (Some(p), Some(v)) = (
                g.partitions.iter().find(|p| p.number == *n),
                dp.volumes.iter().find(|v| v.partition == Some(*n)),
            ) else {
                continue;
            };
            members.push(Member {
                reference: mem.device.to_string(),
                guid: p.guid.to_ascii_lowercase(),
                number: *n,
                first_lba: v.first_lba,
                sectors: v.sectors,
            });
        }
        if members.len() > 1 {
            out.push(members);
        }
    }
    out
}

/// The captured entries plus one per mirrored-ESP member that has none,
/// each added to BootOrder after the entry it copies; and a line for the
/// console per entry added.
pub fn with_member_entries(m: &Manifest, plan: &Plan, efi: &Efi) -> (Efi, Vec<String>) {
    let mut out = efi.clone();
    let mut notes = Vec::new();
    for members in esp_mirrors(m, plan) {
        for e in &efi.entries {
            let Some(guid) = e.partition_guid.as_ref().map(|g| g.to_ascii_lowercase()) else {
                continue;
            };
            if !members.iter().any(|x| x.guid == guid) {
                continue;
            }
            for other in members.iter().filter(|x| x.guid != guid) {
                let covered = out.entries.iter().any(|x| {
                    x.partition_guid.as_ref().map(|g| g.to_ascii_lowercase())
                        == Some(other.guid.clone())
                        && x.path.as_deref().map(str::to_ascii_lowercase)
                            == e.path.as_deref().map(str::to_ascii_lowercase)
                });
                if covered {
                    continue;
                }
                let description = format!("{} ({})", e.description, other.reference);
                let raw = match crate::util::hex::decode(&e.raw)
                    .context("not hex")
                    .and_then(|p| for_member(&p, &description, other))
                {
                    Ok(p) => crate::util::hex::encode(&p),
                    Err(err) => {
                        notes.push(format!(
                            "warning: Boot{} \"{}\" cannot be copied for {}: {err:#}",
                            e.number, e.description, other.reference
                        ));
                        continue;
                    }
                };
                let Some(number) = (0..=u16::MAX).map(|n| format!("{n:04X}")).find(|n| {
                    !out.entries.iter().any(|x| x.number.eq_ignore_ascii_case(n))
                        && !out.boot_order.iter().any(|x| x.eq_ignore_ascii_case(n))
                }) else {
                    continue;
                };
                if let Some(i) = out
                    .boot_order
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(&e.number))
                {
                    out.boot_order.insert(i + 1, number.clone());
                }
                notes.push(format!(
                    "Boot{} \"{}\" is on the mirrored ESP: {} gets its own entry, Boot{number} \"{description}\"",
                    e.number, e.description, other.reference
                ));
                let Ok(partition_guid) = other.guid.parse() else {
                    continue;
                };
                out.entries.push(EfiEntry {
                    number,
                    description,
                    active: e.active,
                    partition_guid: Some(partition_guid),
                    partition_number: Some(other.number),
                    path: e.path.clone(),
                    raw,
                });
            }
        }
    }
    (out, notes)
}

/// The entries whose hard-drive node names a recreated partition at
/// another start or size in sectors than the plan's (a disk of another
/// sector size: same byte offsets, other LBAs) with that node rewritten;
/// and a line for the console per entry rewritten.
pub fn at_recreated_offsets(plan: &Plan, efi: &Efi) -> (Efi, Vec<String>) {
    let mut out = efi.clone();
    let mut notes = Vec::new();
    for dp in &plan.disks {
        if dp.captured_sector_size == dp.sector_size {
            continue;
        }
        let Table::Gpt(g) = &dp.table else { continue };
        for p in &g.partitions {
            let Some(v) = dp.volumes.iter().find(|v| v.partition == Some(p.number)) else {
                continue;
            };
            let member = Member {
                reference: v.device.clone(),
                guid: p.guid.to_ascii_lowercase(),
                number: p.number,
                first_lba: v.first_lba,
                sectors: v.sectors,
            };
            for e in out.entries.iter_mut().filter(|e| {
                e.partition_guid.as_ref().map(|g| g.to_ascii_lowercase())
                    == Some(member.guid.clone())
            }) {
                let rewritten = crate::util::hex::decode(&e.raw)
                    .context("not hex")
                    .and_then(|raw| for_member(&raw, &e.description, &member));
                match rewritten {
                    Ok(raw) => {
                        e.raw = crate::util::hex::encode(&raw);
                        notes.push(format!(
                            "Boot{} \"{}\": {} at {}-byte LBA {} ({} sectors), as recreated on {}-byte sectors",
                            e.number, e.description, member.reference, dp.sector_size,
                            member.first_lba, member.sectors, dp.sector_size
                        ));
                    }
                    Err(err) => notes.push(format!(
                        "warning: Boot{} \"{}\" keeps its captured offsets on {}: {err:#}",
                        e.number, e.description, member.reference
                    )),
                }
            }
        }
    }
    (out, notes)
}

/// `payload` (an EFI_LOAD_OPTION) with `description`, and its hard-drive
/// media node naming `member`.
fn for_member(payload: &[u8], description: &str, member: &Member) -> Result<Vec<u8>> {
    if payload.len() < 6 {
        bail!("a load option of {} bytes", payload.len());
    }
    let path_len = usize::from(u16::from_le_bytes([payload[4], payload[5]]));
    // The description: UTF-16LE up to and with its NUL.
    let mut at = 6;
    loop {
        let unit = payload
            .get(at..at + 2)
            .context("the description has no end")?;
        at += 2;
        if unit == [0, 0] {
            break;
        }
    }
    let mut path = payload
        .get(at..at + path_len)
        .context("the device path is cut short")?
        .to_vec();
    let optional = &payload[at + path_len..];
    let mut node = 0;
    let mut found = false;
    while node + 4 <= path.len() {
        let len = usize::from(u16::from_le_bytes([path[node + 2], path[node + 3]]));
        if len < 4 || node + len > path.len() {
            bail!("a malformed device path node at byte {node}");
        }
        // Media (4), hard drive (1), GPT signature.
        if path[node] == 4 && path[node + 1] == 1 && len == 42 && path[node + 41] == 2 {
            let guid: uuid::Uuid = member.guid.parse().context("the member's GUID")?;
            path[node + 4..node + 8].copy_from_slice(&member.number.to_le_bytes());
            path[node + 8..node + 16].copy_from_slice(&member.first_lba.to_le_bytes());
            path[node + 16..node + 24].copy_from_slice(&member.sectors.to_le_bytes());
            path[node + 24..node + 40].copy_from_slice(&guid.to_bytes_le());
            found = true;
        }
        if path[node] == 0x7f && path[node + 1] == 0xff {
            break;
        }
        node += len;
    }
    if !found {
        bail!("its device path names no GPT partition");
    }
    let mut out = payload[..4].to_vec();
    out.extend_from_slice(&payload[4..6]);
    for unit in description.encode_utf16().chain([0]) {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out.extend_from_slice(&path);
    out.extend_from_slice(optional);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::plan::{PlanOptions, plan};
    use crate::layout::present::PresentDisk;

    /// A load option for `\EFI\debian\grubx64.efi` on GPT partition
    /// `number` (`guid`, at `start` for `size` sectors).
    fn load_option(desc: &str, number: u32, start: u64, size: u64, guid: &str) -> Vec<u8> {
        let mut path = vec![4u8, 1, 42, 0];
        path.extend_from_slice(&number.to_le_bytes());
        path.extend_from_slice(&start.to_le_bytes());
        path.extend_from_slice(&size.to_le_bytes());
        path.extend_from_slice(&guid.parse::<uuid::Uuid>().unwrap().to_bytes_le());
        path.extend_from_slice(&[2, 2]);
        let file: Vec<u8> = "\\EFI\\debian\\grubx64.efi"
            .encode_utf16()
            .chain([0])
            .flat_map(|u| u.to_le_bytes())
            .collect();
        path.extend_from_slice(&[4, 4]);
        path.extend_from_slice(&((file.len() + 4) as u16).to_le_bytes());
        path.extend_from_slice(&file);
        path.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        let mut out = 1u32.to_le_bytes().to_vec();
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        for u in desc.encode_utf16().chain([0]) {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(&path);
        out
    }

    #[test]
    fn an_entry_on_a_disk_of_another_sector_size_names_the_new_lbas() {
        use crate::layout::plan::tests::{four_kn, uefi_512};
        let m = uefi_512();
        let guid = "11111111-2222-4333-8444-555555555501";
        let efi = Efi {
            boot_order: vec!["0003".into()],
            boot_current: None,
            entries: vec![EfiEntry {
                number: "0003".into(),
                description: "debian".into(),
                active: true,
                partition_guid: Some(guid.parse().unwrap()),
                partition_number: Some(1),
                path: Some("\\EFI\\debian\\grubx64.efi".into()),
                raw: crate::util::hex::encode(&load_option("debian", 1, 2048, 131_072, guid)),
            }],
        };
        let same = plan(
            &m,
            &[PresentDisk::bare("vda", 4 << 30)],
            &PlanOptions::default(),
        )
        .unwrap();
        let (out, notes) = at_recreated_offsets(&same, &efi);
        assert_eq!((out, notes.len()), (efi.clone(), 0));
        let p = plan(&m, &[four_kn("nvme0n1", 4 << 30)], &PlanOptions::default()).unwrap();
        let (out, notes) = at_recreated_offsets(&p, &efi);
        assert_eq!(
            out.entries[0].raw,
            crate::util::hex::encode(&load_option("debian", 1, 256, 16_384, guid))
        );
        assert_eq!(
            notes,
            [
                "Boot0003 \"debian\": /dev/nvme0n1p1 at 4096-byte LBA 256 (16384 sectors), as recreated on 4096-byte sectors"
            ]
        );
    }

    #[test]
    fn each_member_of_a_mirrored_esp_gets_an_entry() {
        let mut m = crate::manifest::stack_tests::sample_stack();
        m.luks[1].escrow = Some(crate::manifest::LuksEscrow {
            kind: "volume-key".into(),
            key_id: "web1-5ec2e700-1".into(),
        });
        let present: Vec<PresentDisk> = ["sda", "sdb", "sdc", "sdd"]
            .iter()
            .zip([8u64 << 30, 9 << 30, 4 << 30, 4 << 30])
            .map(|(n, size)| PresentDisk::bare(n, size))
            .collect();
        let p = plan(&m, &present, &PlanOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
        let mirrors = esp_mirrors(&m, &p);
        assert_eq!(mirrors.len(), 1);
        let [a, b] = &mirrors[0][..] else {
            panic!("{mirrors:?}")
        };
        assert_eq!(
            (a.reference.as_str(), b.reference.as_str()),
            ("disk/vda/1", "disk/vdb/1")
        );
        let raw = load_option("debian", a.number, a.first_lba, a.sectors, &a.guid);
        let efi = Efi {
            boot_order: vec!["0003".into(), "0000".into()],
            boot_current: None,
            entries: vec![EfiEntry {
                number: "0003".into(),
                description: "debian".into(),
                active: true,
                partition_guid: Some(a.guid.parse().unwrap()),
                partition_number: Some(a.number),
                path: Some("\\EFI\\debian\\grubx64.efi".into()),
                raw: crate::util::hex::encode(&raw),
            }],
        };
        let (out, notes) = with_member_entries(&m, &p, &efi);
        assert_eq!(out.entries.len(), 2, "{notes:?}");
        let copy = &out.entries[1];
        assert_eq!(copy.number, "0001");
        assert_eq!(copy.description, "debian (disk/vdb/1)");
        assert_eq!(
            copy.raw,
            crate::util::hex::encode(&load_option(
                "debian (disk/vdb/1)",
                b.number,
                b.first_lba,
                b.sectors,
                &b.guid
            ))
        );
        assert_eq!(out.boot_order, ["0003", "0001", "0000"]);
        assert!(
            notes[0].contains("disk/vdb/1 gets its own entry, Boot0001"),
            "{notes:?}"
        );
        // Run again on its own output: nothing more.
        let (again, notes) = with_member_entries(&m, &p, &out);
        assert_eq!(again.entries.len(), 2);
        assert!(notes.is_empty(), "{notes:?}");
    }
}
