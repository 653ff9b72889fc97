//! Tier 2 (root): build two real disks on loop devices with chosen GUIDs,
//! UUIDs and labels, mount them, run `rewind capture --manifest-only`, and
//! check every recorded field against what the test created.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use common::*;
use rewind::manifest::{Manifest, MbrKind};

const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const LINUX_TYPE: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const SWAP_TYPE: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";

const GPT_DISK_GUID: &str = "a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f";
const PART_GUIDS: [&str; 4] = [
    "11111111-2222-4333-8444-555555555501",
    "11111111-2222-4333-8444-555555555502",
    "11111111-2222-4333-8444-555555555503",
    "11111111-2222-4333-8444-555555555504",
];
const ROOT_UUID: &str = "0a1b2c3d-1111-4222-8333-444455556666";
const DATA_UUID: &str = "5e6f7a8b-2222-4333-8444-555566667777";
const SWAP_UUID: &str = "deadbeef-0000-4000-8000-000000000001";
const MBR_EXT4_UUID: &str = "7a7a7a7a-1111-4222-8333-000000000001";
const MBR_EXT2_UUID: &str = "7a7a7a7a-1111-4222-8333-000000000005";
const MBR_SWAP_UUID: &str = "7a7a7a7a-1111-4222-8333-000000000006";

/// Absolute LBA of each EBR in the chain, read from the raw bytes (an oracle
/// independent of rewind's MBR reader).
fn ebr_chain(image: &std::path::Path, extended_start: u64) -> Vec<u64> {
    let bytes = std::fs::read(image).unwrap();
    let le32 = |o: usize| u64::from(u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()));
    let mut chain = vec![extended_start];
    loop {
        let ebr = (*chain.last().unwrap() * 512) as usize;
        let next = le32(ebr + 446 + 16 + 8); // second entry's start, relative to the extended
        if next == 0 {
            return chain;
        }
        chain.push(extended_start + next);
    }
}

#[test]
fn probe_records_what_was_created() {
    if !root_or_skip("probe_records_what_was_created") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // Disk A: GPT, UEFI-style.
    let gpt = LoopDisk::new(
        dir.path(),
        "gpt.img",
        800,
        &format!(
            "label: gpt\nlabel-id: {GPT_DISK_GUID}\nfirst-lba: 2048\n\
             start=2048, size=204800, type={ESP_TYPE}, uuid={}, name=\"EFI System\"\n\
             start=206848, size=409600, type={LINUX_TYPE}, uuid={}, name=root, attrs=\"GUID:59\"\n\
             start=616448, size=684032, type={LINUX_TYPE}, uuid={}, name=data\n\
             start=1300480, size=131072, type={SWAP_TYPE}, uuid={}, name=swap\n",
            PART_GUIDS[0], PART_GUIDS[1], PART_GUIDS[2], PART_GUIDS[3]
        ),
    );
    sh(
        "mkfs.vfat",
        &[
            "-F",
            "32",
            "-s",
            "1",
            "-R",
            "32",
            "-i",
            "1234ABCD",
            "-n",
            "ESP",
            &gpt.part(1),
        ],
    );
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-I",
            "256",
            "-U",
            ROOT_UUID,
            "-L",
            "root",
            "-O",
            "^metadata_csum",
            &gpt.part(2),
        ],
    );
    sh(
        "mkfs.xfs",
        &[
            "-q",
            "-f",
            "-b",
            "size=4096",
            "-i",
            "size=512",
            "-d",
            "agcount=4",
            "-m",
            &format!("uuid={DATA_UUID},crc=1,reflink=1"),
            "-L",
            "data",
            &gpt.part(3),
        ],
    );
    sh("mkswap", &["-U", SWAP_UUID, "-L", "swap", &gpt.part(4)]);

    // Disk B: MBR with two primaries and two logicals in an extended partition.
    let mbr = LoopDisk::new(
        dir.path(),
        "mbr.img",
        256,
        "label: dos\nlabel-id: 0x1a2b3c4d\n\
         start=2048, size=131072, type=83, bootable\n\
         start=133120, size=65536, type=e\n\
         start=198656, size=325632, type=5\n\
         start=200704, size=131072, type=83\n\
         start=333824, size=190464, type=82\n",
    );
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "1024",
            "-I",
            "128",
            "-U",
            MBR_EXT4_UUID,
            "-L",
            "boot",
            &mbr.part(1),
        ],
    );
    sh(
        "mkfs.vfat",
        &["-F", "16", "-i", "C0FFEE01", "-n", "SHARED", &mbr.part(2)],
    );
    sh(
        "mkfs.ext2",
        &[
            "-q",
            "-F",
            "-U",
            MBR_EXT2_UUID,
            "-L",
            "scratch",
            &mbr.part(5),
        ],
    );
    sh("mkswap", &["-U", MBR_SWAP_UUID, &mbr.part(6)]);

    // Mounted where they would be (vfat is left unmounted: this host's kernel lacks it).
    let m_root = Mounted::new(&gpt.part(2), &dir.path().join("root"), &[]);
    let m_data = Mounted::new(&gpt.part(3), &dir.path().join("root/srv"), &["noatime"]);
    let m_boot = Mounted::new(&mbr.part(1), &dir.path().join("boot"), &["ro,nodev"]);

    let out_file = dir.path().join("manifest.xml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args([
            "capture",
            "--manifest-only",
            "--host",
            "drill-host",
            "--disk",
            &gpt.dev,
            "--disk",
            &mbr.dev,
            "-o",
        ])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "capture failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Shown when the test fails (or with --nocapture).
    eprintln!("{}", std::fs::read_to_string(&out_file).unwrap());
    let m: Manifest = rewind::manifest::load(&out_file).unwrap();

    assert_eq!(m.snapshot.host, "drill-host");
    assert_eq!(m.disks.len(), 2, "only the two disks named were captured");

    // --- Disk A
    let a = &m.disks[0];
    assert_eq!(a.name, gpt.name());
    assert_eq!(a.path, gpt.dev);
    assert_eq!(a.size, 800 << 20);
    assert_eq!(a.logical_sector_size, 512);
    assert!(a.mbr.is_none());
    let g = a.gpt.as_ref().expect("disk A has a GPT");
    assert_eq!(g.disk_guid, GPT_DISK_GUID);
    assert_eq!(g.first_usable_lba, 2048);
    assert_eq!(g.last_usable_lba, (800u64 << 11) - 34);
    assert_eq!(g.entries, 128);
    let expect_parts = [
        (1, 2048, 204800, ESP_TYPE, "EFI System", 0u64),
        (2, 206848, 409600, LINUX_TYPE, "root", 1 << 59),
        (3, 616448, 684032, LINUX_TYPE, "data", 0),
        (4, 1300480, 131072, SWAP_TYPE, "swap", 0),
    ];
    assert_eq!(g.partitions.len(), 4);
    for (p, (n, start, size, ty, name, attrs)) in g.partitions.iter().zip(expect_parts) {
        assert_eq!(p.number, n);
        assert_eq!(
            (p.first_lba, p.last_lba),
            (start, start + size - 1),
            "partition {n}"
        );
        assert_eq!(p.type_guid, ty, "partition {n}");
        assert_eq!(p.guid, PART_GUIDS[n as usize - 1], "partition {n}");
        assert_eq!(p.name, name, "partition {n}");
        assert_eq!(p.attributes, attrs, "partition {n}");
    }

    // --- Disk B
    let b = &m.disks[1];
    assert_eq!(b.name, mbr.name());
    assert_eq!(b.size, 256 << 20);
    assert!(b.gpt.is_none());
    let t = b.mbr.as_ref().expect("disk B has an MBR");
    assert_eq!(t.signature, "0x1a2b3c4d");
    let ebrs = ebr_chain(&mbr.image, 198656);
    assert_eq!(ebrs.len(), 2);
    let got: Vec<_> = t
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
            (1, MbrKind::Primary, "0x83", true, 2048, 131072, None),
            (2, MbrKind::Primary, "0x0e", false, 133120, 65536, None),
            (3, MbrKind::Extended, "0x05", false, 198656, 325632, None),
            (
                5,
                MbrKind::Logical,
                "0x83",
                false,
                200704,
                131072,
                Some(ebrs[0])
            ),
            (
                6,
                MbrKind::Logical,
                "0x82",
                false,
                333824,
                190464,
                Some(ebrs[1])
            ),
        ]
    );
    assert_eq!(b.boot_code, None, "sfdisk writes no boot code");

    // --- Filesystems, in disk and partition order.
    let fs: Vec<_> = m
        .filesystems
        .iter()
        .map(|f| {
            (
                f.device.as_str(),
                f.fs_type.name(),
                f.uuid.as_str(),
                f.label.as_deref(),
            )
        })
        .collect();
    let (p1, p2, p3) = (gpt.part(1), gpt.part(2), gpt.part(3));
    let (q1, q2, q5) = (mbr.part(1), mbr.part(2), mbr.part(5));
    assert_eq!(
        fs,
        [
            (p1.as_str(), "vfat", "1234-ABCD", Some("ESP")),
            (p2.as_str(), "ext4", ROOT_UUID, Some("root")),
            (p3.as_str(), "xfs", DATA_UUID, Some("data")),
            (q1.as_str(), "ext4", MBR_EXT4_UUID, Some("boot")),
            (q2.as_str(), "vfat", "C0FF-EE01", Some("SHARED")),
            (q5.as_str(), "ext2", MBR_EXT2_UUID, Some("scratch")),
        ]
    );
    let placement: Vec<_> = m
        .filesystems
        .iter()
        .map(|f| (f.disk.clone().unwrap(), f.partition.unwrap()))
        .collect();
    assert_eq!(
        placement,
        [
            (gpt.name(), 1),
            (gpt.name(), 2),
            (gpt.name(), 3),
            (mbr.name(), 1),
            (mbr.name(), 2),
            (mbr.name(), 5)
        ]
    );

    let esp = m.filesystems[0].fs_type.vfat().expect("vfat parameters");
    assert_eq!(
        (
            esp.fat_size,
            esp.sector_size,
            esp.sectors_per_cluster,
            esp.reserved_sectors,
            esp.fat_count,
            esp.root_entries
        ),
        (32, 512, 1, 32, 2, 0)
    );
    assert_eq!(m.filesystems[4].fs_type.vfat().unwrap().fat_size, 16);

    let root = m.filesystems[1].fs_type.ext().expect("ext parameters");
    assert_eq!((root.block_size, root.inode_size), (4096, 256));
    assert_eq!(root.block_count, 409600 * 512 / 4096);
    for f in ["has_journal", "extent", "dir_index"] {
        assert!(
            root.features.iter().any(|x| x == f),
            "{f} in {:?}",
            root.features
        );
    }
    assert!(
        !root.features.iter().any(|x| x == "metadata_csum"),
        "made with ^metadata_csum"
    );
    let boot = m.filesystems[3].fs_type.ext().unwrap();
    assert_eq!((boot.block_size, boot.inode_size), (1024, 128));
    let scratch = m.filesystems[5].fs_type.ext().unwrap();
    assert!(
        !scratch.features.iter().any(|x| x == "has_journal"),
        "ext2 has no journal"
    );

    let data = m.filesystems[2].fs_type.xfs().expect("xfs parameters");
    assert_eq!(
        (data.block_size, data.inode_size, data.ag_count),
        (4096, 512, 4)
    );
    for f in ["crc=1", "reflink=1"] {
        assert!(
            data.features.iter().any(|x| x == f),
            "{f} in {:?}",
            data.features
        );
    }

    // Mounts, with the options they were made with.
    let mounts = |i: usize| -> Vec<(String, String)> {
        m.filesystems[i]
            .mounts
            .iter()
            .map(|x| (x.point.clone(), x.options.clone()))
            .collect()
    };
    let opt_has = |opts: &str, o: &str| opts.split(',').any(|x| x == o);
    let r = mounts(1);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, m_root.point.to_str().unwrap());
    assert!(opt_has(&r[0].1, "rw"), "{}", r[0].1);
    let d = mounts(2);
    assert_eq!(d[0].0, m_data.point.to_str().unwrap());
    assert!(opt_has(&d[0].1, "noatime"), "{}", d[0].1);
    let bt = mounts(3);
    assert_eq!(bt[0].0, m_boot.point.to_str().unwrap());
    assert!(
        opt_has(&bt[0].1, "ro") && opt_has(&bt[0].1, "nodev"),
        "{}",
        bt[0].1
    );
    for unmounted in [0, 4, 5] {
        assert!(
            mounts(unmounted).is_empty(),
            "filesystem {unmounted} was not mounted"
        );
    }

    // Swap areas (not activated: the test does not touch the host's swap).
    let sw: Vec<_> = m
        .swaps
        .iter()
        .map(|s| {
            (
                s.device.clone(),
                s.uuid.as_str(),
                s.label.as_deref(),
                s.partition,
                s.active,
            )
        })
        .collect();
    assert_eq!(
        sw,
        [
            (gpt.part(4), SWAP_UUID, Some("swap"), Some(4), false),
            (mbr.part(6), MBR_SWAP_UUID, None, Some(6), false),
        ]
    );

    drop((m_data, m_root, m_boot));
}
