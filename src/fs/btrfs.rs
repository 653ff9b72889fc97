//! btrfs: parameters from the primary superblock, made again with
//! mkfs.btrfs (same node and sector size; the device UUID cannot be set).
//! Subvolumes: read at capture ([`parse_subvolumes`]); made again on the
//! fresh filesystem with their captured ids, default and read-only flags
//! ([`recreate_subvolumes`], then [`seal_subvolumes`] once restored).

use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

use super::{Difference, Differences, MkfsTarget, argv, read_at};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BtrfsParams {
    #[serde(rename = "@node-size")]
    pub node_size: u32,
    #[serde(rename = "@sector-size")]
    pub sector_size: u32,
    /// Data block group profile across several devices (`raid1`, `single`,
    /// ...; `mkfs.btrfs -d`), when the filesystem spans several devices.
    #[serde(rename = "@data-profile", skip_serializing_if = "Option::is_none")]
    pub data_profile: Option<String>,
    /// Metadata profile (`mkfs.btrfs -m`), likewise.
    #[serde(rename = "@metadata-profile", skip_serializing_if = "Option::is_none")]
    pub metadata_profile: Option<String>,
}

/// The parameters of the btrfs filesystem on `dev`, from its superblock.
pub fn read_params(dev: &Path) -> Result<BtrfsParams> {
    let sb = read_at(dev, BTRFS_SUPER_OFFSET, BTRFS_SUPER_SIZE)?;
    parse_btrfs_super(&sb)
}

/// mkfs.btrfs with the captured UUID, label, node and sector size.
pub fn command(
    params: Option<&BtrfsParams>,
    t: &MkfsTarget,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut a = argv(&["mkfs.btrfs", "-q", "-f", "-U", t.uuid]);
    if let Some(l) = t.label {
        a.extend(argv(&["-L", l]));
    }
    if let Some(p) = params {
        a.extend([
            "-n".into(),
            p.node_size.to_string(),
            "-s".into(),
            p.sector_size.to_string(),
        ]);
        if let Some(profile) = &p.data_profile {
            a.extend(argv(&["-d", profile]));
        }
        if let Some(profile) = &p.metadata_profile {
            a.extend(argv(&["-m", profile]));
        }
    }
    a.push(t.device.into());
    notes.push(format!(
        "btrfs on {}: the device UUID (blkid UUID_SUB) is new; mkfs.btrfs cannot set it",
        t.device
    ));
    a
}

/// The node and sector size (the superblock does not record the profiles;
/// the block groups do, and the stack's verification reads them).
pub fn differences(want: &BtrfsParams, got: &BtrfsParams) -> Vec<Difference> {
    let mut d = Differences::default();
    d.cmp(
        "parameters",
        format!(
            "node size {}, sector size {}",
            want.node_size, want.sector_size
        ),
        format!(
            "node size {}, sector size {}",
            got.node_size, got.sector_size
        ),
    );
    d.0
}

/// Subvolumes of a mounted btrfs: `btrfs subvolume list -a` (all of them)
/// and `list -a -r` (the read-only ones), with the default subvolume's id
/// (`get-default`; 5, the top level, is none). `list -a` prints some paths
/// with a `<FS_TREE>/` prefix and others without, depending on where the
/// filesystem is mounted; both are paths from the top level.
pub fn parse_subvolumes(
    list: &str,
    read_only: &str,
    default_id: Option<u64>,
) -> Result<Vec<ListedSubvolume>> {
    let ro: Vec<u64> = parse_list(read_only)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut out: Vec<ListedSubvolume> = parse_list(list)?
        .into_iter()
        .map(|(id, path)| ListedSubvolume {
            id,
            read_only: ro.contains(&id),
            default: default_id == Some(id),
            path,
        })
        .collect();
    out.sort_by_key(|s| s.id);
    Ok(out)
}

/// A subvolume as btrfs-progs lists it (the manifest's `<subvolume>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSubvolume {
    pub id: u64,
    /// From the top level, without a leading slash.
    pub path: String,
    pub read_only: bool,
    pub default: bool,
}

/// Runs `btrfs ARGS` and returns its stdout (the real one is
/// [`crate::cmd::run`]; tests pass a fake).
pub type Runner<'a> = dyn FnMut(&[&str]) -> Result<String> + 'a;

/// The real `btrfs` command.
pub fn run_btrfs(args: &[&str]) -> Result<String> {
    crate::cmd::run("btrfs", args)
}

/// Make `wanted` again on a fresh filesystem whose top level (id 5) is
/// mounted at `top`, in id order with the captured ids: btrfs gives a new
/// subvolume the next free id and never reuses one in a mount, so an id
/// that was free at capture (a deleted snapshot) is used up by creating and
/// deleting a subvolume until the next one is the captured id. Then the
/// default subvolume. Read-only flags come after the restore
/// ([`seal_subvolumes`]). Returns what could not be made as captured.
pub fn recreate_subvolumes(
    top: &Path,
    wanted: &[ListedSubvolume],
    run: &mut Runner<'_>,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut sorted: Vec<&ListedSubvolume> = wanted.iter().collect();
    sorted.sort_by_key(|s| s.id);
    let path_of = |s: &ListedSubvolume| top.join(s.path.trim_start_matches('/'));
    for s in &sorted {
        let path = path_of(s);
        let p = path.to_str().context("subvolume path is not UTF-8")?;
        if path.exists() {
            notes.push(format!(
                "btrfs subvolume {} (id {}): its path exists already (a directory made for \
                 another subvolume); left as a directory",
                s.path, s.id
            ));
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut id = create(p, run)?;
        // Every id below the captured one is used up; a bound on the loop
        // in case btrfs ever reused ids.
        let mut spent = 0u64;
        while id < s.id && spent < 1 << 16 {
            run(&["subvolume", "delete", p])
                .with_context(|| format!("cannot delete {p} (spending id {id})"))?;
            id = create(p, run)?;
            spent += 1;
        }
        if id != s.id {
            notes.push(format!(
                "btrfs subvolume {} was made with id {id}, captured {}: ids are never reused",
                s.path, s.id
            ));
        }
        if s.default {
            let top_str = top.to_str().context("mount path is not UTF-8")?;
            run(&["subvolume", "set-default", &id.to_string(), top_str])
                .with_context(|| format!("cannot make {} the default subvolume", s.path))?;
        }
    }
    Ok(notes)
}

/// `btrfs subvolume create PATH`, and the id it was given.
fn create(path: &str, run: &mut Runner<'_>) -> Result<u64> {
    run(&["subvolume", "create", path])?;
    let out = run(&["inspect-internal", "rootid", path])?;
    out.trim()
        .parse()
        .with_context(|| format!("btrfs inspect-internal rootid {path} said {:?}", out.trim()))
}

/// Set the read-only flag of each read-only subvolume of `wanted` (top
/// level mounted at `top`): after the restore, which writes into them.
pub fn seal_subvolumes(top: &Path, wanted: &[ListedSubvolume], run: &mut Runner<'_>) -> Result<()> {
    for s in wanted.iter().filter(|s| s.read_only) {
        let path = top.join(s.path.trim_start_matches('/'));
        let p = path.to_str().context("subvolume path is not UTF-8")?;
        run(&["property", "set", "-ts", p, "ro", "true"])
            .with_context(|| format!("cannot make btrfs subvolume {} read-only", s.path))?;
    }
    Ok(())
}

/// `ID 258 gen 7 top level 257 path <FS_TREE>/@snapshots/1/snapshot` lines.
fn parse_list(text: &str) -> Result<Vec<(u64, String)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let id = line
                .strip_prefix("ID ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("btrfs subvolume list line without an ID: {line:?}"))?;
            let path = line
                .split_once(" path ")
                .map(|(_, p)| p)
                .with_context(|| format!("btrfs subvolume list line without a path: {line:?}"))?;
            let path = path.strip_prefix("<FS_TREE>/").unwrap_or(path);
            Ok((id, path.to_string()))
        })
        .collect()
}

/// `btrfs subvolume get-default`: `ID 256 gen 7 top level 5 path @data`, or
/// `ID 5 (FS_TREE)` for the top level (no default subvolume).
pub fn parse_get_default(text: &str) -> Result<Option<u64>> {
    let id: u64 = text
        .trim()
        .strip_prefix("ID ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("btrfs subvolume get-default said {:?}", text.trim()))?;
    Ok((id != 5).then_some(id))
}

/// `btrfs filesystem show --raw`: each device's id and path.
pub fn parse_devices(text: &str) -> Result<Vec<(u64, String)>> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("devid"))
        .map(|rest| {
            let id = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("btrfs filesystem show: devid in {rest:?}"))?;
            let path = rest
                .split_once(" path ")
                .map(|(_, p)| p.trim().to_string())
                .with_context(|| format!("btrfs filesystem show: path in {rest:?}"))?;
            Ok((id, path))
        })
        .collect()
}

/// `btrfs filesystem df --raw`: the data and metadata profiles, lowercase
/// as mkfs.btrfs takes them (`Data, RAID1: ...` → `raid1`).
pub fn parse_profiles(text: &str) -> (Option<String>, Option<String>) {
    let profile = |kind: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(kind)?.strip_prefix(", ")?;
            Some(rest.split(':').next()?.trim().to_ascii_lowercase())
        })
    };
    (profile("Data"), profile("Metadata"))
}

/// Byte offset of the primary btrfs superblock.
pub const BTRFS_SUPER_OFFSET: u64 = 64 * 1024;
/// Size of a btrfs superblock.
pub const BTRFS_SUPER_SIZE: usize = 4096;
const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";
const BTRFS_CSUM_TYPE_CRC32C: u16 = 0;

/// Parse the primary btrfs superblock: `buf` is the 4096 bytes read at
/// [`BTRFS_SUPER_OFFSET`]. A crc32c checksum (the default) is verified; other
/// checksum types are not.
pub fn parse_btrfs_super(buf: &[u8]) -> Result<BtrfsParams> {
    ensure!(
        buf.len() >= BTRFS_SUPER_SIZE,
        "btrfs superblock is {} bytes, need {BTRFS_SUPER_SIZE}",
        buf.len()
    );
    ensure!(
        &buf[0x40..0x48] == BTRFS_MAGIC,
        "no btrfs magic _BHRfS_M at superblock offset 0x40"
    );
    let u16_at = |o: usize| u16::from_le_bytes([buf[o], buf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().expect("8 bytes"));

    // The primary copy records its own offset; anything else means we were
    // handed a mirror copy or the wrong bytes.
    let bytenr = u64_at(0x30);
    ensure!(
        bytenr == BTRFS_SUPER_OFFSET,
        "btrfs superblock says it lives at {bytenr}, not {BTRFS_SUPER_OFFSET}"
    );
    if u16_at(0xc4) == BTRFS_CSUM_TYPE_CRC32C {
        let want = u32_at(0);
        let got = crc32c(&buf[0x20..BTRFS_SUPER_SIZE]);
        ensure!(
            want == got,
            "btrfs superblock checksum mismatch (stored {want:#010x}, computed {got:#010x})"
        );
    }
    let sector_size = u32_at(0x90);
    let node_size = u32_at(0x94);
    ensure!(
        sector_size.is_power_of_two() && (512..=65536).contains(&sector_size),
        "btrfs sectorsize {sector_size} is implausible"
    );
    ensure!(
        node_size.is_power_of_two() && node_size >= sector_size && node_size <= 65536,
        "btrfs nodesize {node_size} is implausible (sectorsize {sector_size})"
    );
    Ok(BtrfsParams {
        node_size,
        sector_size,
        data_profile: None,
        metadata_profile: None,
    })
}

/// CRC-32C (Castagnoli), bitwise: only ever run over one 4 KiB superblock.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{have, image, make};
    use super::super::{FsType, Tools};
    use super::*;

    fn btrfs_super(sector: u32, node: u32) -> Vec<u8> {
        let mut sb = vec![0u8; BTRFS_SUPER_SIZE];
        sb[0x20..0x30].copy_from_slice(&[0x74; 16]); // fsid
        sb[0x30..0x38].copy_from_slice(&BTRFS_SUPER_OFFSET.to_le_bytes());
        sb[0x40..0x48].copy_from_slice(BTRFS_MAGIC);
        sb[0x90..0x94].copy_from_slice(&sector.to_le_bytes());
        sb[0x94..0x98].copy_from_slice(&node.to_le_bytes());
        sb[0x98..0x9c].copy_from_slice(&node.to_le_bytes()); // leafsize
        let csum = crc32c(&sb[0x20..]);
        sb[0..4].copy_from_slice(&csum.to_le_bytes());
        sb
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn btrfs_constructed_superblock() {
        let p = parse_btrfs_super(&btrfs_super(4096, 16384)).unwrap();
        assert_eq!(
            p,
            BtrfsParams {
                node_size: 16384,
                sector_size: 4096,
                data_profile: None,
                metadata_profile: None,
            }
        );
        let mut bad = btrfs_super(4096, 16384);
        bad[0x40] = b'x';
        assert!(format!("{:#}", parse_btrfs_super(&bad).unwrap_err()).contains("magic"));
        let mut bad = btrfs_super(4096, 16384);
        bad[0x100] ^= 1;
        assert!(format!("{:#}", parse_btrfs_super(&bad).unwrap_err()).contains("checksum"));
        assert!(parse_btrfs_super(&btrfs_super(4096, 2048)).is_err());
        assert!(parse_btrfs_super(&btrfs_super(3000, 16384)).is_err());
        assert!(parse_btrfs_super(&btrfs_super(4096, 16384)[..512]).is_err());
    }

    #[test]
    fn btrfs_real_image() {
        if !have("mkfs.btrfs") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "btrfs.img", 128 << 20);
        make(
            "mkfs.btrfs",
            &["-q", "-f", "-n", "32768", img.to_str().unwrap()],
        );
        assert_eq!(
            FsType::read("btrfs", &img).unwrap(),
            Some(FsType::Btrfs(Some(BtrfsParams {
                node_size: 32768,
                sector_size: 4096,
                data_profile: None,
                metadata_profile: None,
            })))
        );
    }

    #[test]
    fn btrfs_command() {
        let tools = Tools::default();
        let t = MkfsTarget {
            device: "/dev/sdb5",
            uuid: "9a8b7c6d-3333-4444-8555-666677778888",
            label: Some("home"),
            grow: false,
            tools: &tools,
        };
        let fs = FsType::Btrfs(Some(BtrfsParams {
            node_size: 16384,
            sector_size: 4096,
            data_profile: None,
            metadata_profile: None,
        }));
        let mut notes = vec![];
        let c = fs.mkfs_commands(&t, &mut notes);
        assert_eq!(
            c[0].join(" "),
            "mkfs.btrfs -q -f -U 9a8b7c6d-3333-4444-8555-666677778888 -L home -n 16384 -s 4096 /dev/sdb5"
        );
        assert_eq!(notes.len(), 1);
    }

    fn stack_fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/stack")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn subvolumes_devices_and_profiles_of_a_real_btrfs() {
        let default = parse_get_default(&stack_fixture("btrfs-get-default.txt")).unwrap();
        assert_eq!(default, Some(256));
        assert_eq!(parse_get_default("ID 5 (FS_TREE)\n").unwrap(), None);
        let ro = stack_fixture("btrfs-list-a-r.txt");
        // The same subvolumes, whether mounted at the default subvolume or the top.
        for list in ["btrfs-list-a.txt", "btrfs-list-a-top.txt"] {
            let subs = parse_subvolumes(&stack_fixture(list), &ro, default).unwrap();
            let got: Vec<(u64, &str, bool, bool)> = subs
                .iter()
                .map(|s| (s.id, s.path.as_str(), s.read_only, s.default))
                .collect();
            assert_eq!(
                got,
                [
                    (256, "@data", false, true),
                    (257, "@snapshots", false, false),
                    (258, "@snapshots/1/snapshot", true, false),
                    (259, "@data/nested", false, false),
                ],
                "{list}"
            );
        }
        let devs = parse_devices(&stack_fixture("btrfs-show.txt")).unwrap();
        assert_eq!(
            devs,
            [(1, "/dev/loop2".to_string()), (2, "/dev/loop3".to_string())]
        );
        assert_eq!(
            parse_profiles(&stack_fixture("btrfs-df.txt")),
            (Some("raid1".into()), Some("raid1".into()))
        );
        assert!(parse_list("garbage").is_err());
    }
}
