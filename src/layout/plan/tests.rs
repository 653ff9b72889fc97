//! The disk mapping and the plan, on fixtures: every rule of the mapping
//! (identity, same size, smallest fit, in use, explicit) and what the plan
//! derives from the manifest (grown tables, volumes, mounts).

use super::*;
use crate::layout::present::Contents;
use crate::manifest::from_xml;

const GIB: u64 = 1 << 30;

/// A minimal valid manifest around `disks` and `rest` (filesystems, swaps).
pub(crate) fn manifest_xml(disks: &str, rest: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest schema="1">
  <snapshot id="s1" host="web1" time="2026-11-25T06:00:00Z" tool="rewind 0.1.0"/>
  <system>
    <hostname>web1</hostname>
    <kernel release="6.1.0" arch="x86_64"/>
    <firmware>bios</firmware>
  </system>
  {disks}
  {rest}
</manifest>"#
    )
}

/// vda: 8 GiB GPT (ESP, root, BIOS boot, swap in slot 4), serial S-A.
/// vdb: 2 GiB MBR (xfs primary; extended with a btrfs and a swap logical),
/// boot code and a boot gap, WWN 0x5000b.
fn two_disks() -> Manifest {
    let code = format!("eb63{}", "90".repeat(438));
    let xml = manifest_xml(
        &format!(
            r#"
  <disk name="vda" path="/dev/vda" size="8589934592" logical-sector-size="512" physical-sector-size="512" serial="S-A" wwn="0x5000a">
    <gpt disk-guid="a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f" first-usable-lba="2048" last-usable-lba="16777182" entries="128">
      <partition number="1" first-lba="2048" last-lba="1050623" type-guid="c12a7328-f81f-11d2-ba4b-00a0c93ec93b" guid="11111111-2222-4333-8444-555555555501" name="EFI system" attributes="0"/>
      <partition number="2" first-lba="1050624" last-lba="12584959" type-guid="0fc63daf-8483-4772-8e79-3d69d8477de4" guid="11111111-2222-4333-8444-555555555502" name="root" attributes="1152921504606846976"/>
      <partition number="3" first-lba="12584960" last-lba="12587007" type-guid="21686148-6449-6e6f-744e-656564454649" guid="11111111-2222-4333-8444-555555555503" name="bios" attributes="0"/>
      <partition number="4" first-lba="12587008" last-lba="16777182" type-guid="0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" guid="11111111-2222-4333-8444-555555555504" name="swap" attributes="0"/>
    </gpt>
  </disk>
  <disk name="vdb" path="/dev/vdb" size="2147483648" logical-sector-size="512" physical-sector-size="512" wwn="0x5000b">
    <mbr signature="0x1a2b3c4d">
      <partition number="1" kind="primary" type="0x83" boot="true" start-lba="2048" sectors="1048576"/>
      <partition number="2" kind="extended" type="0x05" boot="false" start-lba="1050624" sectors="3143680"/>
      <partition number="5" kind="logical" type="0x83" boot="false" start-lba="1052672" sectors="1048576" ebr-lba="1050624"/>
      <partition number="6" kind="logical" type="0x82" boot="false" start-lba="2103296" sectors="2091008" ebr-lba="2101248"/>
    </mbr>
    <boot-code>{code}</boot-code>
    <boot-gap first-lba="1" last-lba="2047"/>
  </disk>"#
        ),
        r#"
  <filesystem device="/dev/vda1" disk="vda" partition="1" type="vfat" uuid="1234-ABCD" label="ESP">
    <vfat fat-size="32" sector-size="512" sectors-per-cluster="8" reserved-sectors="32" fat-count="2" root-entries="0"/>
    <mount point="/boot/efi" options="rw,relatime,fmask=0077,dmask=0077"/>
  </filesystem>
  <filesystem device="/dev/vda2" disk="vda" partition="2" type="ext4" uuid="0a1b2c3d-1111-4222-8333-444455556666" label="root">
    <ext block-size="4096" inode-size="256" inode-count="720896" block-count="1441792" reserved-blocks="72089" features="has_journal extent 64bit"/>
    <mount point="/" options="ro,relatime,errors=remount-ro"/>
  </filesystem>
  <filesystem device="/dev/vdb1" disk="vdb" partition="1" type="xfs" uuid="5e6f7a8b-2222-4333-8444-555566667777">
    <xfs block-size="4096" sector-size="512" inode-size="512" ag-count="4" log-blocks="16384" features="crc=1 reflink=1"/>
    <mount point="/srv/data" options="rw,noatime"/>
  </filesystem>
  <filesystem device="/dev/vdb5" disk="vdb" partition="5" type="btrfs" uuid="9a8b7c6d-3333-4444-8555-666677778888" label="home">
    <btrfs node-size="16384" sector-size="4096"/>
    <mount point="/home" options="rw,relatime,subvol=/@home" root="/@home"/>
  </filesystem>
  <swap device="/dev/vda4" disk="vda" partition="4" uuid="deadbeef-0000-4000-8000-000000000001" label="swap" active="true"/>
  <swap device="/dev/vdb6" disk="vdb" partition="6" uuid="deadbeef-0000-4000-8000-000000000002"/>"#,
    );
    from_xml(&xml).unwrap()
}

fn disk(name: &str, size: u64) -> PresentDisk {
    PresentDisk {
        name: name.into(),
        path: format!("/dev/{name}"),
        size,
        logical_sector_size: 512,
        model: None,
        serial: None,
        wwn: None,
        removable: false,
        in_use: None,
        ..Default::default()
    }
}

fn with_serial(mut d: PresentDisk, s: &str) -> PresentDisk {
    d.serial = Some(s.into());
    d
}

fn in_use(mut d: PresentDisk) -> PresentDisk {
    d.in_use = Some("/dev/sda2 is mounted at /".into());
    d
}

fn holding(mut d: PresentDisk, what: &[&str]) -> PresentDisk {
    d.contents = Contents::Holds(what.iter().map(|s| s.to_string()).collect());
    d
}

fn on(mut d: PresentDisk, transport: &str) -> PresentDisk {
    d.transport = Some(transport.into());
    d
}

fn opts() -> PlanOptions {
    PlanOptions {
        target_root: "/target".into(),
        ..PlanOptions::default()
    }
}

/// (captured, present, how) for each planned disk.
fn mapping(
    m: &Manifest,
    present: &[PresentDisk],
    explicit: &[(&str, &str)],
) -> Result<Vec<(String, String, MatchedBy)>> {
    let explicit: Vec<(String, String)> = explicit
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    Ok(map_disks(&m.disks, present, &explicit, false)?
        .into_iter()
        .map(|(c, p, by)| (m.disks[c].name.clone(), present[p].name.clone(), by))
        .collect())
}

fn pairs(v: &[(&str, &str, MatchedBy)]) -> Vec<(String, String, MatchedBy)> {
    v.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
        .collect()
}

fn err(r: Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.unwrap_err())
}

// -- the mapping, rule by rule -------------------------------------------------

#[test]
fn a_disk_that_is_not_blank_needs_identity_a_name_or_the_switch() {
    let m = two_disks();
    let sdb = holding(
        disk("sdb", 8 * GIB),
        &[
            "gpt partition table",
            "sdb1 (8.0 GiB): ext4, label \"data\"",
        ],
    );
    let present = [sdb.clone(), disk("sdc", 2 * GIB)];
    // vda would fit sdb by size, but sdb holds a filesystem.
    let e = err(mapping(&m, &present, &[]));
    assert!(
        e.contains(
            "/dev/sdb (8.0 GiB): not blank (gpt partition table; sdb1 (8.0 GiB): ext4, label \"data\") \
             and not matched by serial or WWN: to overwrite it, name it with --disk vda=/dev/sdb \
             or allow any non-blank disk with --overwrite-non-blank (rewind.overwrite=any)"
        ),
        "{e}"
    );
    // The switch, a name or the captured serial make it a target.
    let by_switch = map_disks(&m.disks, &present, &[], true).unwrap();
    assert_eq!(
        by_switch,
        [(0, 0, MatchedBy::Size), (1, 1, MatchedBy::Size)]
    );
    assert_eq!(
        mapping(&m, &present, &[("vda", "/dev/sdb")]).unwrap(),
        pairs(&[("vda", "sdb", MatchedBy::Explicit)])
    );
    let present = [with_serial(sdb, "S-A"), disk("sdc", 2 * GIB)];
    assert_eq!(
        mapping(&m, &present, &[]).unwrap(),
        pairs(&[
            ("vda", "sdb", MatchedBy::Serial),
            ("vdb", "sdc", MatchedBy::Size)
        ])
    );
    // A disk whose contents could not be read counts as not blank.
    let mut unread = disk("sdb", 8 * GIB);
    unread.contents = Contents::Unknown("cannot open /dev/sdb".into());
    let e = err(mapping(&m, &[unread, disk("sdc", 2 * GIB)], &[]));
    assert!(
        e.contains("/dev/sdb (8.0 GiB): not blank (contents unknown (cannot open /dev/sdb))"),
        "{e}"
    );
    // The whole plan stops before anything: plan() carries the same error.
    let e = err(plan(&m, &present[1..], &opts()));
    assert!(e.contains("no disk for captured disk vda"), "{e}");
}

#[test]
fn san_and_multipath_disks_only_when_named() {
    let m = two_disks();
    let mut mpath = disk("dm-3", 8 * GIB);
    mpath.path = "/dev/mapper/mpatha".into();
    mpath.transport = Some("multipath".into());
    mpath.paths = vec!["sdx".into(), "sdy".into()];
    let present = [
        on(with_serial(disk("sdf", 8 * GIB), "S-A"), "fc"),
        on(disk("sdi", 8 * GIB), "iscsi"),
        mpath,
        disk("sdc", 2 * GIB),
    ];
    let e = err(mapping(&m, &present, &[]));
    // Not even the captured serial chooses a SAN LUN.
    assert!(
        e.contains("/dev/sdf (8.0 GiB): a Fibre Channel LUN, never chosen automatically (name it with --disk)"),
        "{e}"
    );
    assert!(
        e.contains("/dev/sdi (8.0 GiB): an iSCSI LUN, never chosen automatically"),
        "{e}"
    );
    assert!(
        e.contains("/dev/mapper/mpatha (8.0 GiB): a multipath LUN (2 paths: sdx, sdy), never chosen automatically"),
        "{e}"
    );
    for target in ["/dev/sdf", "/dev/sdi", "/dev/mapper/mpatha"] {
        let got = mapping(&m, &present, &[("vda", target)]).unwrap();
        assert_eq!(got.len(), 1, "{target}");
        assert_eq!(got[0].2, MatchedBy::Explicit);
    }
}

#[test]
fn paths_of_one_lun_are_never_written() {
    let m = two_disks();
    // What survey() makes of two paths to one LUN: both in use.
    let mut a = disk("sdb", 8 * GIB);
    a.in_use = Some("one of 2 paths to one LUN (WWN naa.5000c5: /dev/sdb, /dev/sdc) with no multipath device over them: never written (set up multipath and name its device with --disk)".into());
    let b = PresentDisk {
        name: "sdc".into(),
        path: "/dev/sdc".into(),
        ..a.clone()
    };
    let e = err(mapping(&m, &[a, b.clone()], &[("vda", "/dev/sdc")]));
    assert!(
        e.starts_with("--disk vda=/dev/sdc: /dev/sdc is in use (one of 2 paths to one LUN"),
        "{e}"
    );
}

#[test]
fn serial_first() {
    let m = two_disks();
    // sdc is the same size as vda, but sdd carries vda's serial.
    let present = [
        disk("sdc", 8 * GIB),
        with_serial(disk("sdd", 16 * GIB), "S-A"),
        disk("sde", 2 * GIB),
    ];
    assert_eq!(
        mapping(&m, &present, &[]).unwrap(),
        pairs(&[
            ("vda", "sdd", MatchedBy::Serial),
            ("vdb", "sde", MatchedBy::Size)
        ])
    );
}

#[test]
fn wwn_match() {
    let m = two_disks();
    let mut b = disk("sdz", 4 * GIB);
    b.wwn = Some("0x5000b".into());
    let present = [disk("sdy", 2 * GIB), b, disk("sdx", 8 * GIB)];
    assert_eq!(
        mapping(&m, &present, &[]).unwrap(),
        pairs(&[
            ("vda", "sdx", MatchedBy::Size),
            ("vdb", "sdz", MatchedBy::Wwn)
        ])
    );
}

#[test]
fn same_size_then_smallest_fit() {
    let m = two_disks();
    let present = [
        disk("sda", 16 * GIB),
        disk("sdb", 10 * GIB),
        disk("sdc", 2 * GIB),
        disk("sdd", 3 * GIB),
    ];
    assert_eq!(
        mapping(&m, &present, &[]).unwrap(),
        pairs(&[
            ("vda", "sdb", MatchedBy::SmallestFit),
            ("vdb", "sdc", MatchedBy::Size)
        ])
    );
}

#[test]
fn smallest_fit_serves_big_disks_first() {
    let m = two_disks();
    // Listed small-first: were vdb (2 GiB) placed first it would take the
    // 9 GiB disk, and vda (8 GiB) would fit nowhere.
    let present = [disk("sdb", 9 * GIB), disk("sdc", 3 * GIB)];
    assert_eq!(
        mapping(&m, &present, &[]).unwrap(),
        pairs(&[
            ("vda", "sdb", MatchedBy::SmallestFit),
            ("vdb", "sdc", MatchedBy::SmallestFit)
        ])
    );
    let present = [disk("sdb", 9 * GIB), disk("sdc", 30 * GIB)];
    assert_eq!(mapping(&m, &present, &[]).unwrap()[0].1, "sdb");
}

#[test]
fn duplicate_sizes_are_no_reason_to_stop() {
    let m = two_disks();
    let present = [
        disk("sdc", 8 * GIB),
        disk("sdb", 8 * GIB),
        disk("sdd", 2 * GIB),
        disk("sde", 2 * GIB),
    ];
    assert_eq!(
        mapping(&m, &present, &[]).unwrap(),
        pairs(&[
            ("vda", "sdb", MatchedBy::Size),
            ("vdb", "sdd", MatchedBy::Size)
        ])
    );
}

#[test]
fn in_use_disks_are_never_chosen() {
    let m = two_disks();
    // The disk with vda's serial holds the running system.
    let present = [
        in_use(with_serial(disk("sda", 8 * GIB), "S-A")),
        disk("sdb", 8 * GIB),
        disk("sdc", 2 * GIB),
    ];
    let got = mapping(&m, &present, &[]).unwrap();
    assert_eq!(
        got,
        pairs(&[
            ("vda", "sdb", MatchedBy::Size),
            ("vdb", "sdc", MatchedBy::Size)
        ])
    );
    // With no free disk for vda, the error says why each disk was passed over.
    let present = [in_use(disk("sda", 8 * GIB)), disk("sdc", 2 * GIB)];
    let e = err(mapping(&m, &present, &[]));
    assert!(
        e.contains("no disk for captured disk vda (8.0 GiB, 8589934592 bytes"),
        "{e}"
    );
    assert!(
        e.contains("/dev/sda (8.0 GiB): in use: /dev/sda2 is mounted at /"),
        "{e}"
    );
    assert!(
        e.contains("/dev/sdc (2.0 GiB): taken by captured disk vdb"),
        "{e}"
    );
}

#[test]
fn removable_media_only_when_named() {
    let m = two_disks();
    // A USB stick (perhaps the boot medium) would be the smallest fit for vdb.
    let mut stick = disk("sdu", 4 * GIB);
    stick.removable = true;
    let present = [disk("sda", 8 * GIB), stick, disk("sdb", 16 * GIB)];
    assert_eq!(
        mapping(&m, &present, &[]).unwrap(),
        pairs(&[
            ("vda", "sda", MatchedBy::Size),
            ("vdb", "sdb", MatchedBy::SmallestFit)
        ])
    );
    let e = err(mapping(&m, &present[1..2], &[]));
    assert!(
        e.contains("/dev/sdu (4.0 GiB): removable media, never chosen automatically"),
        "{e}"
    );
    assert_eq!(
        mapping(&m, &present, &[("vdb", "/dev/sdu")]).unwrap(),
        pairs(&[("vdb", "sdu", MatchedBy::Explicit)])
    );
}

#[test]
fn too_small_is_refused_with_sizes() {
    let m = two_disks();
    let present = [disk("sdb", 4 * GIB), disk("sdc", 2 * GIB)];
    let e = err(mapping(&m, &present, &[]));
    assert!(
        e.contains("captured disk vda (8.0 GiB, 8589934592 bytes"),
        "{e}"
    );
    assert!(e.contains("/dev/sdb (4.0 GiB): it is too small"), "{e}");
    // And explicitly:
    let e = err(mapping(&m, &present, &[("vda", "/dev/sdb")]));
    assert_eq!(
        e,
        "captured disk vda (8.0 GiB, 8589934592 bytes) does not fit on /dev/sdb (4.0 GiB, 4294967296 bytes): it is too small"
    );
}

#[test]
fn sector_size_must_match() {
    let m = two_disks();
    let mut big = disk("sdb", 8 * GIB);
    big.logical_sector_size = 4096;
    let present = [big, disk("sdc", 2 * GIB)];
    let e = err(mapping(&m, &present, &[]));
    assert!(
        e.contains(
            "/dev/sdb (8.0 GiB): it has 4096-byte logical sectors, the captured disk 512-byte ones"
        ),
        "{e}"
    );
    let e = err(mapping(&m, &present, &[("vda", "/dev/sdb")]));
    assert!(e.contains("4096-byte logical sectors"), "{e}");
    // Why: vda's last partition ends 512 bytes short of a 4 KiB boundary.
    assert!(
        e.contains(
            "and partition 4 (LBA 12587008..16777182 of 512-byte sectors, bytes \
             6444548096..8589917696) does not start and end on a 4096-byte boundary"
        ),
        "{e}"
    );
}

// -- another sector size ---------------------------------------------------------

/// A UEFI machine on a 4 GiB disk of 512-byte sectors, as installers make
/// it (every partition on a MiB boundary): ESP, btrfs root with
/// subvolumes, ext4 /boot with 1 KiB blocks, swap.
pub(crate) fn uefi_512() -> Manifest {
    let xml = manifest_xml(
        r#"
  <disk name="vda" path="/dev/vda" size="4294967296" logical-sector-size="512" physical-sector-size="512" serial="SRC">
    <gpt disk-guid="a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f" first-usable-lba="34" last-usable-lba="8388574" entries="128">
      <partition number="1" first-lba="2048" last-lba="133119" type-guid="c12a7328-f81f-11d2-ba4b-00a0c93ec93b" guid="11111111-2222-4333-8444-555555555501" name="EFI System" attributes="0"/>
      <partition number="2" first-lba="133120" last-lba="329727" type-guid="0fc63daf-8483-4772-8e79-3d69d8477de4" guid="11111111-2222-4333-8444-555555555502" name="boot" attributes="0"/>
      <partition number="3" first-lba="329728" last-lba="7337983" type-guid="0fc63daf-8483-4772-8e79-3d69d8477de4" guid="11111111-2222-4333-8444-555555555503" name="root" attributes="0"/>
      <partition number="4" first-lba="7337984" last-lba="8386559" type-guid="0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" guid="11111111-2222-4333-8444-555555555504" name="swap" attributes="0"/>
    </gpt>
  </disk>"#,
        r#"
  <filesystem device="/dev/vda1" disk="vda" partition="1" type="vfat" uuid="1234-ABCD" label="ESP">
    <vfat fat-size="32" sector-size="512" sectors-per-cluster="1" reserved-sectors="32" fat-count="2" root-entries="0"/>
    <mount point="/boot/efi" options="rw,relatime,fmask=0077,dmask=0077"/>
  </filesystem>
  <filesystem device="/dev/vda2" disk="vda" partition="2" type="ext4" uuid="0a1b2c3d-1111-4222-8333-444455556666" label="boot">
    <ext block-size="1024" inode-size="256" inode-count="24576" block-count="98304" reserved-blocks="4915" features="has_journal extent"/>
    <mount point="/boot" options="rw,relatime"/>
  </filesystem>
  <filesystem device="/dev/vda3" disk="vda" partition="3" type="btrfs" uuid="9a8b7c6d-3333-4444-8555-666677778888" label="root">
    <btrfs node-size="16384" sector-size="4096"/>
    <mount point="/" options="rw,relatime,subvol=/@" root="/@"/>
  </filesystem>
  <swap device="/dev/vda4" disk="vda" partition="4" uuid="deadbeef-0000-4000-8000-000000000001" active="true"/>"#,
    );
    from_xml(&xml).unwrap()
}

pub(crate) fn four_kn(name: &str, size: u64) -> PresentDisk {
    let mut d = disk(name, size);
    d.logical_sector_size = 4096;
    d
}

/// Boot code in LBA 0 is written back on a 4Kn disk too, but the plan says
/// that another loader than GRUB (which the bootloader stage reinstalls)
/// may count 512-byte sectors.
#[test]
fn boot_code_moved_to_another_sector_size_is_pointed_out() {
    let mut m = uefi_512();
    m.disks[0].boot_code = Some("eb63".to_string() + &"00".repeat(438));
    let shown = plan(&m, &[four_kn("nvme0n1", 5 * GIB)], &opts())
        .unwrap()
        .to_string();
    assert!(
        shown.contains(
            "note: that code was written for 512-byte sectors: GRUB's is reinstalled; \
             another boot loader's must be reinstalled on this 4096-byte-sector disk"
        ),
        "{shown}"
    );
    let same = plan(&m, &[disk("vdb", 5 * GIB)], &opts())
        .unwrap()
        .to_string();
    assert!(same.contains("boot code: the captured 440 bytes"), "{same}");
    assert!(!same.contains("written for 512-byte sectors"), "{same}");
}

#[test]
fn a_512_byte_disk_is_recreated_on_4kn_at_the_same_byte_offsets() {
    let m = uefi_512();
    let present = [four_kn("nvme0n1", 5 * GIB)];
    let p = plan(&m, &present, &opts()).unwrap();
    let d = &p.disks[0];
    assert_eq!((d.captured_sector_size, d.sector_size), (512, 4096));
    let Table::Gpt(g) = &d.table else {
        panic!("not a GPT: {:?}", d.table)
    };
    // 4 KiB sectors: the 128-entry array is 4 sectors; the backup header
    // at the end of the 5 GiB disk.
    assert_eq!(
        (g.first_usable_lba, g.last_usable_lba, g.backup_lba),
        (6, 1_310_714, 1_310_719)
    );
    let captured = captured_entries(&m);
    for (a, b) in captured.iter().zip(&g.partitions) {
        assert_eq!(
            a.first_lba * 512,
            b.first_lba * 4096,
            "partition {}",
            a.number
        );
        assert_eq!((a.last_lba + 1) * 512, (b.last_lba + 1) * 4096);
        assert_eq!(
            (&a.guid, &a.type_guid, &a.name),
            (&b.guid, &b.type_guid, &b.name)
        );
    }
    let spans: Vec<(u64, u64)> = d.volumes.iter().map(|v| (v.first_lba, v.sectors)).collect();
    assert_eq!(
        spans,
        [
            (256, 16_384),
            (16_640, 24_576),
            (41_216, 876_032),
            (917_248, 131_072)
        ]
    );
    let commands = |i: usize| match &d.volumes[i].content {
        Content::Filesystem { commands, .. } | Content::Swap { commands, .. } => {
            commands.iter().map(|c| argv_line(c)).collect::<Vec<_>>()
        }
        Content::Raw => vec![],
    };
    // vfat: 4 KiB sectors, one per cluster; the reserved area keeps its count.
    assert_eq!(
        commands(0),
        ["mkfs.fat -i 1234ABCD -n ESP -F 32 -S 4096 -s 1 -R 32 -f 2 /dev/nvme0n1p1"]
    );
    // ext4 with 1 KiB blocks: 4 KiB blocks, the same bytes.
    assert_eq!(
        commands(1)[0],
        "mke2fs -q -F -t ext4 -U 0a1b2c3d-1111-4222-8333-444455556666 -L boot -b 4096 -I 256 \
         -N 24576 -O none,has_journal,extent /dev/nvme0n1p2 24576"
    );
    assert_eq!(commands(1)[1], "tune2fs -r 1228 /dev/nvme0n1p2");
    // btrfs sectors are 4 KiB already; swap pages too.
    assert!(
        commands(2)[0].contains("-n 16384 -s 4096"),
        "{:?}",
        commands(2)
    );
    // What mkfs made is checked against the adapted parameters.
    let Content::Filesystem { captured, .. } = &d.volumes[0].content else {
        panic!()
    };
    assert_eq!(captured.fs_type.vfat().unwrap().sector_size, 4096);
    let text = p.to_string();
    assert!(
        text.contains(
            "  sector size 512 -> 4096 bytes: every partition at its captured byte offsets, LBAs rescaled"
        ),
        "{text}"
    );
    assert!(
        text.contains("    partition 1: LBA 256..16639 (64.0 MiB)"),
        "{text}"
    );
    for n in [
        "note: captured disk vda: 512-byte sectors recreated on 4096-byte sectors of /dev/nvme0n1",
        "note: vfat on /dev/nvme0n1p1: 4096-byte sectors (mkfs.fat -S 4096), clusters of 4096 bytes (were 512)",
        "note: ext4 on /dev/nvme0n1p2: 4096-byte blocks (were 1024)",
    ] {
        assert!(text.contains(n), "{n:?} missing:\n{text}");
    }
    // And back: the 4Kn layout onto 512-byte sectors gives the captured LBAs.
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["disks"][0]["captured-sector-size"], 512);
}

#[test]
fn a_4kn_disk_grown_ends_at_the_new_usable_area() {
    let m = uefi_512();
    let present = [four_kn("nvme0n1", 5 * GIB)];
    let p = plan(
        &m,
        &present,
        &PlanOptions {
            grow: true,
            ..opts()
        },
    )
    .unwrap();
    let d = &p.disks[0];
    let Table::Gpt(g) = &d.table else { panic!() };
    let last = g.partitions.iter().max_by_key(|p| p.last_lba).unwrap();
    // 1 GiB more: 262 144 sectors of 4 KiB, within the usable area.
    assert_eq!(last.last_lba, 1_048_319 + 262_144);
    assert!(last.last_lba <= g.last_usable_lba);
    assert_eq!(
        d.grown,
        Some(Grown {
            partition: 4,
            from_sectors: 131_072,
            to_sectors: 131_072 + 262_144
        })
    );
}

#[test]
fn mbr_onto_4kn_leaves_the_boot_gap_to_grub_install() {
    let mut m = two_disks();
    // Only vdb (MBR, boot code, boot gap); all of it on 4 KiB boundaries.
    m.disks.remove(0);
    m.filesystems.retain(|f| f.disk.as_deref() == Some("vdb"));
    m.swaps.retain(|s| s.disk.as_deref() == Some("vdb"));
    let present = [four_kn("sdb", 2 * GIB)];
    let p = plan(&m, &present, &opts()).unwrap();
    let d = &p.disks[0];
    let Table::Mbr(t) = &d.table else { panic!() };
    assert_eq!(
        t.partitions
            .iter()
            .map(|p| (p.number, p.start_lba, p.sectors, p.ebr_lba))
            .collect::<Vec<_>>(),
        [
            (1, 256, 131_072, None),
            (2, 131_328, 392_960, None),
            (5, 131_584, 131_072, Some(131_328)),
            (6, 262_912, 261_376, Some(262_656)),
        ]
    );
    assert_eq!(d.boot_gap, None);
    assert!(d.boot_code.is_some());
    assert!(
        p.notes.iter().any(|n| n
            == "captured disk vdb: its boot gap (BIOS GRUB's core.img) addresses the disk in \
                512-byte sectors: not copied; GRUB is reinstalled on /dev/sdb"),
        "{:?}",
        p.notes
    );
    // The xfs gets 4 KiB sectors.
    let Content::Filesystem { commands, .. } = &d.volumes[0].content else {
        panic!()
    };
    assert!(
        argv_line(&commands[0]).contains("-s size=4096"),
        "{commands:?}"
    );
}

#[test]
fn a_4kn_capture_goes_back_onto_512_byte_sectors() {
    let m = uefi_512();
    let p = plan(&m, &[four_kn("nvme0n1", 4 * GIB)], &opts()).unwrap();
    // Make a manifest of what the 4Kn disk holds, then plan it on 512.
    let mut k = m.clone();
    let Table::Gpt(g) = &p.disks[0].table else {
        panic!()
    };
    k.disks[0].logical_sector_size = 4096;
    let kg = k.disks[0].gpt.as_mut().unwrap();
    kg.first_usable_lba = g.first_usable_lba;
    kg.last_usable_lba = g.last_usable_lba;
    for (a, b) in kg.partitions.iter_mut().zip(&g.partitions) {
        (a.first_lba, a.last_lba) = (b.first_lba, b.last_lba);
    }
    let back = plan(&k, &[disk("vdz", 4 * GIB)], &opts()).unwrap();
    let Table::Gpt(bg) = &back.disks[0].table else {
        panic!()
    };
    assert_eq!(
        bg.partitions
            .iter()
            .map(|p| (p.first_lba, p.last_lba))
            .collect::<Vec<_>>(),
        captured_entries(&m)
            .iter()
            .map(|p| (p.first_lba, p.last_lba))
            .collect::<Vec<_>>()
    );
}

#[test]
fn nothing_fits() {
    let m = two_disks();
    let e = err(mapping(&m, &[], &[]));
    assert!(
        e.contains("vda") && e.contains("vdb") && e.contains("no disks found"),
        "{e}"
    );
    assert!(e.contains("--disk CAPTURED=/dev/DISK"), "{e}");
}

#[test]
fn explicit_mapping() {
    let m = two_disks();
    let present = [
        disk("sda", 8 * GIB),
        disk("loop3", 4 * GIB),
        with_serial(disk("sdq", 9 * GIB), "NEW-1"),
    ];
    // Only the mapped disk is planned, even though sda would take vda.
    assert_eq!(
        mapping(&m, &present, &[("vdb", "/dev/loop3")]).unwrap(),
        pairs(&[("vdb", "loop3", MatchedBy::Explicit)])
    );
    // By serial on both sides, and by captured path; listed in manifest order.
    assert_eq!(
        mapping(&m, &present, &[("/dev/vdb", "loop3"), ("S-A", "NEW-1")]).unwrap(),
        pairs(&[
            ("vda", "sdq", MatchedBy::Explicit),
            ("vdb", "loop3", MatchedBy::Explicit)
        ])
    );
    let e = err(mapping(&m, &present, &[("vdc", "/dev/sda")]));
    assert!(
        e.contains("the manifest has no disk named vdc (its disks: vda, vdb)"),
        "{e}"
    );
    let e = err(mapping(&m, &present, &[("vdb", "/dev/sdx")]));
    assert!(e.contains("no disk /dev/sdx"), "{e}");
    let e = err(mapping(
        &m,
        &present,
        &[("vda", "/dev/sdq"), ("vdb", "/dev/sdq")],
    ));
    assert!(e.contains("mapped twice"), "{e}");
    let e = err(mapping(
        &m,
        &present,
        &[("vdb", "/dev/sda"), ("vdb", "/dev/loop3")],
    ));
    assert!(e.contains("mapped twice"), "{e}");
}

#[test]
fn explicit_target_in_use_is_refused() {
    let m = two_disks();
    let present = [in_use(disk("loop3", 4 * GIB))];
    let e = err(mapping(&m, &present, &[("vdb", "/dev/loop3")]));
    assert!(
        e.contains("/dev/loop3 is in use (/dev/sda2 is mounted at /); refusing"),
        "{e}"
    );
}

// -- what the plan derives ------------------------------------------------------

#[test]
fn plan_lists_only_mapped_disks() {
    let m = two_disks();
    let present = [disk("sda", 8 * GIB), disk("loop3", 2 * GIB)];
    let mut o = opts();
    o.mapping = vec![("vdb".into(), "/dev/loop3".into())];
    let p = plan(&m, &present, &o).unwrap();
    assert_eq!(p.disks.len(), 1);
    assert_eq!(p.disks[0].target.path, "/dev/loop3");
    let text = p.to_string();
    assert!(
        !text.contains("/dev/sda") && !text.contains("vda"),
        "{text}"
    );
    // Only vdb's filesystems are mounted; / lives on vda and is not.
    let points: Vec<&str> = p.mounts.iter().map(|s| s.point.as_str()).collect();
    assert_eq!(points, ["/home", "/srv/data"]);
    let json = serde_json::to_string(&p).unwrap();
    assert!(
        !json.contains("/dev/sda") && !json.contains("\"vda\""),
        "{json}"
    );
}

#[test]
fn exact_plan_on_same_size_disks() {
    let m = two_disks();
    let present = [disk("sdb", 8 * GIB), disk("sdc", 2 * GIB)];
    let p = plan(&m, &present, &opts()).unwrap();
    let a = &p.disks[0];
    let Table::Gpt(g) = &a.table else {
        panic!("gpt")
    };
    let captured = m.disks[0].gpt.as_ref().unwrap();
    assert_eq!(g.last_usable_lba, captured.last_usable_lba);
    assert_eq!(g.backup_lba, 16777215);
    assert_eq!(g.partitions.len(), 4);
    assert_eq!(a.grown, None);
    // Volumes: ESP, root, raw BIOS boot, swap, on the target's nodes.
    let kinds: Vec<(&str, &str)> = a
        .volumes
        .iter()
        .map(|v| {
            let k = match &v.content {
                Content::Filesystem { fs_type, .. } => fs_type.as_str(),
                Content::Swap { .. } => "swap",
                Content::Raw => "raw",
            };
            (v.device.as_str(), k)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("/dev/sdb1", "vfat"),
            ("/dev/sdb2", "ext4"),
            ("/dev/sdb3", "raw"),
            ("/dev/sdb4", "swap")
        ]
    );
    // MBR: the extended container is no volume; logicals are.
    let b = &p.disks[1];
    let Table::Mbr(t) = &b.table else {
        panic!("mbr")
    };
    assert_eq!(t.signature, 0x1a2b3c4d);
    assert_eq!(t.partitions[1].type_byte, 0x05);
    let devs: Vec<&str> = b.volumes.iter().map(|v| v.device.as_str()).collect();
    assert_eq!(devs, ["/dev/sdc1", "/dev/sdc5", "/dev/sdc6"]);
    assert_eq!(
        b.boot_gap.as_ref().map(|g| (g.first_lba, g.last_lba)),
        Some((1, 2047))
    );
    let Content::Filesystem { subvolumes, .. } = &b.volumes[1].content else {
        panic!()
    };
    assert_eq!(subvolumes, &["/@home"]);

    // Mounts: parents first, under the target root, `ro` made `rw`.
    let m: Vec<(&str, &str, &str)> = p
        .mounts
        .iter()
        .map(|s| (s.device.as_str(), s.target.as_str(), s.options.as_str()))
        .collect();
    assert_eq!(
        m,
        [
            ("/dev/sdb2", "/target", "rw,relatime,errors=remount-ro"),
            ("/dev/sdc5", "/target/home", "rw,relatime,subvol=/@home"),
            (
                "/dev/sdb1",
                "/target/boot/efi",
                "rw,relatime,fmask=0077,dmask=0077"
            ),
            ("/dev/sdc1", "/target/srv/data", "rw,noatime"),
        ]
    );

    // The text lists every action.
    let text = p.to_string();
    for want in [
        "disk vda (8.0 GiB) -> /dev/sdb (8.0 GiB): same size",
        "wipe /dev/sdb",
        "gpt disk-guid a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f, 128 entries, usable LBA 2048..16777182, backup header at LBA 16777215",
        "partition 4: LBA 12587008..16777182",
        "mkfs.fat -i 1234ABCD -n ESP -F 32 -S 512 -s 8 -R 32 -f 2 /dev/sdb1",
        "mke2fs -q -F -t ext4 -U 0a1b2c3d-1111-4222-8333-444455556666 -L root",
        "raw /dev/sdb3 (1.0 MiB)",
        "mkswap -U deadbeef-0000-4000-8000-000000000001 -L swap /dev/sdb4",
        "mbr signature 0x1a2b3c4d",
        "partition 6 logical: start 2103296, 2091008 sectors (1021.0 MiB), type 0x82, EBR at LBA 2101248",
        "boot code: the captured 440 bytes",
        "raw boot gap LBA 1..2047",
        "btrfs subvolume create /@home",
        "/dev/sdc5 on /target/home (btrfs, rw,relatime,subvol=/@home)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn bigger_disk_keeps_the_layout_unless_grown() {
    let m = two_disks();
    let present = [disk("sdb", 16 * GIB), disk("sdc", 4 * GIB)];
    let delta = 8 * GIB / 512;
    let p = plan(&m, &present, &opts()).unwrap();
    let Table::Gpt(g) = &p.disks[0].table else {
        panic!()
    };
    let captured = m.disks[0].gpt.as_ref().unwrap();
    assert_eq!(
        g.backup_lba,
        2 * 16777216 - 1,
        "backup at the end of the actual disk"
    );
    assert_eq!(g.last_usable_lba, captured.last_usable_lba + delta);
    assert_eq!(g.partitions[3].last_lba, 16777182, "not grown");
    assert_eq!(p.disks[0].grown, None);

    let mut o = opts();
    o.grow = true;
    let p = plan(&m, &present, &o).unwrap();
    let Table::Gpt(g) = &p.disks[0].table else {
        panic!()
    };
    assert_eq!(g.partitions[3].last_lba, 16777182 + delta);
    assert_eq!(g.partitions[3].last_lba, g.last_usable_lba);
    assert_eq!(
        g.partitions[..3],
        captured_entries(&m)[..3],
        "others untouched"
    );
    assert_eq!(
        p.disks[0].grown,
        Some(Grown {
            partition: 4,
            from_sectors: 4190175,
            to_sectors: 4190175 + delta
        })
    );
    // MBR: the last logical grows, and the extended partition around it.
    let Table::Mbr(t) = &p.disks[1].table else {
        panic!()
    };
    let mdelta = 2 * GIB / 512;
    assert_eq!(t.partitions[1].sectors, 3143680 + mdelta);
    assert_eq!(t.partitions[3].sectors, 2091008 + mdelta);
    assert_eq!(t.partitions[0].sectors, 1048576);
    let mut o = opts();
    o.grow = true;
    let present = [disk("sdb", 16 * GIB), disk("sdc", 2 * GIB)];
    let p = plan(&m, &present, &o).unwrap();
    assert_eq!(p.disks[1].grown, None, "same size: nothing to grow");
}

fn captured_entries(m: &Manifest) -> Vec<GptEntry> {
    m.disks[0]
        .gpt
        .as_ref()
        .unwrap()
        .partitions
        .iter()
        .map(|p| GptEntry {
            number: p.number,
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            type_guid: p.type_guid.clone(),
            guid: p.guid.clone(),
            name: p.name.clone(),
            attributes: p.attributes,
        })
        .collect()
}

#[test]
fn grown_ext_root_is_resized() {
    // Root last on the disk, then grown: mke2fs at the captured size, then resize2fs.
    let xml = manifest_xml(
        r#"<disk name="sda" path="/dev/sda" size="1073741824" logical-sector-size="512" physical-sector-size="512">
    <gpt disk-guid="a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f" first-usable-lba="2048" last-usable-lba="2097118" entries="128">
      <partition number="1" first-lba="2048" last-lba="2097118" type-guid="0fc63daf-8483-4772-8e79-3d69d8477de4" guid="11111111-2222-4333-8444-555555555502" name="" attributes="0"/>
    </gpt>
  </disk>"#,
        r#"<filesystem device="/dev/sda1" disk="sda" partition="1" type="ext4" uuid="0a1b2c3d-1111-4222-8333-444455556666">
    <ext block-size="4096" inode-size="256" inode-count="65536" block-count="261883" reserved-blocks="13094" features="has_journal extent"/>
  </filesystem>"#,
    );
    let m = from_xml(&xml).unwrap();
    let mut o = opts();
    o.grow = true;
    let p = plan(&m, &[disk("sdb", 2 * GIB)], &o).unwrap();
    let Content::Filesystem {
        commands, grown, ..
    } = &p.disks[0].volumes[0].content
    else {
        panic!()
    };
    assert!(grown);
    assert_eq!(commands.last().unwrap().join(" "), "resize2fs /dev/sdb1");
    assert!(p.mounts.is_empty(), "it had no mount point");
}

#[test]
fn whole_disk_filesystem_and_skipped_mounts() {
    let xml = manifest_xml(
        r#"<disk name="sdz" path="/dev/sdz" size="1073741824" logical-sector-size="512" physical-sector-size="512"/>"#,
        r#"<filesystem device="/dev/sdz" disk="sdz" type="vfat" uuid="0BAD-F00D" label="SHARED">
    <mount point="/shared" options="rw"/>
  </filesystem>"#,
    );
    let m = from_xml(&xml).unwrap();
    let mut o = opts();
    o.skip_mount = vec!["vfat".into()];
    let p = plan(&m, &[disk("loop0", GIB)], &o).unwrap();
    let d = &p.disks[0];
    assert!(matches!(d.table, Table::None));
    assert_eq!(d.volumes.len(), 1);
    assert_eq!(d.volumes[0].device, "/dev/loop0");
    let Content::Filesystem { commands, .. } = &d.volumes[0].content else {
        panic!()
    };
    assert_eq!(
        commands[0].join(" "),
        "mkfs.fat -i 0BADF00D -n SHARED /dev/loop0"
    );
    assert_eq!(
        p.mounts[0].skipped.as_deref(),
        Some("vfat is in --skip-mount")
    );
    assert!(
        p.to_string()
            .contains("/dev/loop0 on /target/shared: not mounted (vfat is in --skip-mount)")
    );
}

#[test]
fn json_plan_is_complete() {
    let m = two_disks();
    let p = plan(&m, &[disk("sdb", 8 * GIB), disk("sdc", 2 * GIB)], &opts()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(v["disks"][0]["matched-by"], "size");
    assert_eq!(v["disks"][0]["table"]["type"], "gpt");
    assert_eq!(v["disks"][0]["table"]["partitions"][3]["number"], 4);
    assert_eq!(v["disks"][1]["table"]["partitions"][3]["ebr-lba"], 2101248);
    assert_eq!(v["disks"][0]["volumes"][2]["content"]["kind"], "raw");
    assert_eq!(
        v["disks"][0]["volumes"][1]["content"]["commands"][0][0],
        "mke2fs"
    );
    assert_eq!(v["mounts"][0]["target"], "/target");
}

// -- mount options and order (moved from mount.rs with the rules) --

#[test]
fn options_for_recovery() {
    assert_eq!(
        recovery_options("ro,relatime,errors=remount-ro", "ext4", "/"),
        "rw,relatime,errors=remount-ro"
    );
    assert_eq!(
        recovery_options(
            "rw,noatime,nofail,x-systemd.automount,subvolid=257,subvol=/@home,compress=zstd:3",
            "btrfs",
            "/@home"
        ),
        "rw,noatime,compress=zstd:3,subvol=/@home"
    );
    assert_eq!(recovery_options("", "xfs", "/"), "rw");
    assert_eq!(
        recovery_options("rw,relatime,fmask=0077,dmask=0077", "vfat", "/"),
        "rw,relatime,fmask=0077,dmask=0077"
    );
}

#[test]
fn parents_first() {
    let mut v = vec!["/boot/efi", "/home", "/", "/boot", "/srv/data/x"];
    v.sort_by_key(|p| order_key(p));
    assert_eq!(v, ["/", "/boot", "/home", "/boot/efi", "/srv/data/x"]);
}

/// sda: 2 GiB MBR as the BIOS drill's source: ext4 / (1536 MiB, 500 MiB of
/// files), an extended partition with xfs /home (320 MiB) and swap.
fn drill_like(root_bytes: u64) -> Manifest {
    let xml = manifest_xml(
        r#"<disk name="sda" path="/dev/sda" size="2147483648" logical-sector-size="512" physical-sector-size="512" serial="SRC">
    <mbr signature="0x1a2b3c4d">
      <partition number="1" kind="primary" type="0x83" boot="true" start-lba="2048" sectors="3145728"/>
      <partition number="2" kind="extended" type="0x05" boot="false" start-lba="3147776" sectors="1046528"/>
      <partition number="5" kind="logical" type="0x83" boot="false" start-lba="3149824" sectors="655360" ebr-lba="3147776"/>
      <partition number="6" kind="logical" type="0x82" boot="false" start-lba="3807232" sectors="387072" ebr-lba="3805184"/>
    </mbr>
    <boot-gap first-lba="1" last-lba="2047"/>
  </disk>"#,
        &format!(
            r#"<filesystem device="/dev/sda1" disk="sda" partition="1" type="ext4" uuid="0a1b2c3d-1111-4222-8333-444455556666">
    <ext block-size="4096" inode-size="256" inode-count="98304" block-count="393216" reserved-blocks="19660" features="has_journal extent 64bit"/>
    <mount point="/" options="rw,relatime"/>
    <data tree="5b8c1d0e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e" from="/" entries="9000" bytes="{root_bytes}"/>
  </filesystem>
  <filesystem device="/dev/sda5" disk="sda" partition="5" type="xfs" uuid="5e6f7a8b-2222-4333-8444-555566667777">
    <xfs block-size="4096" sector-size="512" inode-size="512" ag-count="4" log-blocks="16384" features="crc=1"/>
    <mount point="/home" options="rw,relatime"/>
    <data tree="6b8c1d0e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e" from="/home" entries="100" bytes="10485760"/>
  </filesystem>
  <swap device="/dev/sda6" disk="sda" partition="6" uuid="deadbeef-0000-4000-8000-000000000001"/>"#
        ),
    );
    from_xml(&xml).unwrap()
}

const MIB: u64 = 1 << 20;

fn shrinking() -> PlanOptions {
    PlanOptions {
        shrink: true,
        ..opts()
    }
}

#[test]
fn the_headroom_rule() {
    let m = drill_like(500 * MIB);
    // ext4: (500 MiB + 9000 × 4 KiB) × 1.25 + 64 MiB + 98304 × 256 bytes of
    // inode tables, rounded up to a MiB.
    let files = 500 * MIB + 9000 * 4096;
    let want = (files + files / 4 + 64 * MIB + 98304 * 256).div_ceil(MIB) * MIB;
    assert_eq!(shrink::fs_minimum(&m.filesystems[0]).unwrap().0, want);
    assert_eq!(want, 757 * MIB);
    // xfs: its floor (300 MiB) above 10 MiB of files, the 64 MiB log and
    // the 64 MiB.
    assert_eq!(shrink::fs_minimum(&m.filesystems[1]).unwrap().0, 300 * MIB);
    // The disk: 1 MiB + 757 + (EBR MiB) 300 + (EBR MiB) 189 MiB of swap.
    assert_eq!(shrink::minimum(&m, &m.disks[0]).0, 1249 * MIB);
    // No data in the snapshot: not shrunk.
    let mut fs = m.filesystems[0].clone();
    fs.data = None;
    assert_eq!(shrink::fs_minimum(&fs), None);
}

#[test]
fn smaller_disk_only_with_shrink() {
    let m = drill_like(500 * MIB);
    let present = [disk("vdb", 1433 * MIB)];
    let e = err(plan(&m, &present, &opts()));
    assert!(
        e.contains("/dev/vdb (1.4 GiB): it is too small") && e.contains("--shrink"),
        "{e}"
    );
    let p = plan(&m, &present, &shrinking()).unwrap();
    assert_eq!(p.disks[0].matched_by, MatchedBy::Shrunk);
    // A disk that fits as captured is preferred to a shrunk one.
    let both = [disk("vdb", 1433 * MIB), disk("vdc", 2 * GIB)];
    let p2 = plan(&m, &both, &shrinking()).unwrap();
    assert_eq!(p2.disks[0].target.name, "vdc");
    assert!(p2.disks[0].shrunk.is_none());
}

#[test]
fn mbr_shrunk_keeps_order_numbers_alignment_and_the_logicals() {
    let m = drill_like(500 * MIB);
    let sectors = 1433 * MIB / 512;
    let p = plan(&m, &[disk("vdb", 1433 * MIB)], &shrinking()).unwrap();
    let d = &p.disks[0];
    let Table::Mbr(t) = &d.table else { panic!() };
    t.check(sectors).unwrap();
    let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 5, 6]);
    let (root, ext, home, swap) = (
        &t.partitions[0],
        &t.partitions[1],
        &t.partitions[2],
        &t.partitions[3],
    );
    assert_eq!(
        root.start_lba, 2048,
        "the first partition and the boot gap stay"
    );
    for p in &t.partitions {
        assert_eq!(p.start_lba % 2048, 0, "partition {} aligned", p.number);
    }
    assert!(root.sectors < 3145728 && root.sectors >= 757 * 2048);
    assert!(home.sectors <= 655360 && home.sectors >= 300 * 2048);
    assert_eq!(swap.sectors, 387072, "swap keeps its size");
    // Each logical's EBR a MiB before it, as captured; the container from
    // the first EBR to the end of the last logical.
    assert_eq!(home.ebr_lba, Some(home.start_lba - 2048));
    assert_eq!(swap.ebr_lba, Some(swap.start_lba - 2048));
    assert_eq!(ext.start_lba, home.start_lba - 2048);
    assert_eq!(ext.start_lba, root.start_lba + root.sectors);
    assert_eq!(ext.start_lba + ext.sectors, swap.start_lba + swap.sectors);
    // The spare room is used: less than 2 MiB is left at the end.
    assert!(sectors - (swap.start_lba + swap.sectors) < 2 * 2048);
    // The filesystems are made for their new sizes.
    let Content::Filesystem {
        commands, grown, ..
    } = &d.volumes[0].content
    else {
        panic!()
    };
    assert!(grown, "sizes differ from the capture by plan");
    let blocks = root.sectors * 512 / 4096;
    let mkfs = commands[0].join(" ");
    assert!(mkfs.ends_with(&format!("/dev/vdb1 {blocks}")), "{mkfs}");
    assert!(
        !commands.iter().any(|c| c[0] == "resize2fs"),
        "made at its size, not resized"
    );
    let reserved = 19660 * blocks / 393216;
    assert_eq!(
        commands[1].join(" "),
        format!("tune2fs -r {reserved} /dev/vdb1")
    );
    // The plan shows the new layout.
    let text = p.to_string();
    assert!(
        text.contains(
            "shrink (--shrink): the captured layout needs 2.0 GiB, this disk has 1.4 GiB"
        ),
        "{text}"
    );
    assert!(
        text.contains("partition 1 (ext4 /): shrunk 1.5 GiB -> "),
        "{text}"
    );
    assert!(
        text.contains("partition 6 (swap): 189.0 MiB, moved from LBA 3807232"),
        "{text}"
    );
    assert!(text.contains("at least 1.2 GiB with headroom"), "{text}");
    // And in JSON.
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["disks"][0]["shrunk"]["minimum-bytes"], 1249 * MIB);
    assert_eq!(json["disks"][0]["matched-by"], "shrunk");
}

#[test]
fn a_smaller_disk_whose_data_does_not_fit_is_refused_with_the_numbers() {
    let m = drill_like(500 * MIB);
    let present = [disk("vdb", 1200 * MIB)];
    let e = err(plan(&m, &present, &shrinking()));
    assert!(e.contains("no disk for captured disk sda (2.0 GiB"), "{e}");
    assert!(
        e.contains(&format!(
            "/dev/vdb (1.2 GiB): it is too small even shrunk (--shrink): the data needs a disk \
             of at least 1.2 GiB ({} bytes), this one has 1.2 GiB ({} bytes)",
            1249 * MIB,
            1200 * MIB
        )),
        "{e}"
    );
    assert!(
        e.contains("partition 1 (ext4 /): at least 757.0 MiB (500.0 MiB of files in 9000 entries"),
        "{e}"
    );
    assert!(
        e.contains("partition 6 (swap): 189.0 MiB as captured"),
        "{e}"
    );
    // Named explicitly: the same numbers.
    let o = PlanOptions {
        mapping: vec![("sda".into(), "/dev/vdb".into())],
        ..shrinking()
    };
    let e = err(plan(&m, &present, &o));
    assert!(
        e.starts_with(
            "captured disk sda (2.0 GiB, 2147483648 bytes) does not fit on /dev/vdb (1.2 GiB, \
             1258291200 bytes): it is too small even shrunk"
        ),
        "{e}"
    );
    // More files than the disk holds, whatever the layout.
    let big = drill_like(1400 * MIB);
    let e = err(plan(&big, &[disk("vdb", 1433 * MIB)], &shrinking()));
    assert!(e.contains("it is too small even shrunk"), "{e}");
}

#[test]
fn gpt_shrunk_keeps_raw_partitions_in_place_and_the_backup_at_the_end() {
    // ESP (no data: moved or kept), BIOS boot (raw: kept), root (shrinks), swap.
    let xml = manifest_xml(
        r#"<disk name="sda" path="/dev/sda" size="4294967296" logical-sector-size="512" physical-sector-size="512">
    <gpt disk-guid="a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f" first-usable-lba="2048" last-usable-lba="8388574" entries="128">
      <partition number="1" first-lba="2048" last-lba="133119" type-guid="c12a7328-f81f-11d2-ba4b-00a0c93ec93b" guid="11111111-2222-4333-8444-555555555501" name="EFI" attributes="0"/>
      <partition number="2" first-lba="133120" last-lba="135167" type-guid="21686148-6449-6e6f-744e-656564454649" guid="11111111-2222-4333-8444-555555555502" name="bios" attributes="0"/>
      <partition number="3" first-lba="135168" last-lba="7340031" type-guid="0fc63daf-8483-4772-8e79-3d69d8477de4" guid="11111111-2222-4333-8444-555555555503" name="root" attributes="0"/>
      <partition number="4" first-lba="7340032" last-lba="8388574" type-guid="0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" guid="11111111-2222-4333-8444-555555555504" name="swap" attributes="0"/>
    </gpt>
  </disk>"#,
        r#"<filesystem device="/dev/sda1" disk="sda" partition="1" type="vfat" uuid="1234-ABCD">
    <mount point="/boot/efi" options="rw"/>
    <data tree="4b8c1d0e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e" from="/boot/efi" entries="10" bytes="4194304"/>
  </filesystem>
  <filesystem device="/dev/sda3" disk="sda" partition="3" type="btrfs" uuid="0a1b2c3d-1111-4222-8333-444455556666">
    <mount point="/" options="rw"/>
    <data tree="5b8c1d0e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e" from="/" entries="1000" bytes="1073741824"/>
  </filesystem>
  <swap device="/dev/sda4" disk="sda" partition="4" uuid="deadbeef-0000-4000-8000-000000000001"/>"#,
    );
    let m = from_xml(&xml).unwrap();
    let size = 3 * GIB;
    let sectors = size / 512;
    let p = plan(&m, &[disk("vdb", size)], &shrinking()).unwrap();
    let Table::Gpt(g) = &p.disks[0].table else {
        panic!()
    };
    g.check(sectors, 512).unwrap();
    assert_eq!(g.backup_lba, sectors - 1);
    assert_eq!(g.last_usable_lba, sectors - 34);
    let before = captured_entries(&m);
    assert_eq!(g.partitions[0], before[0], "the ESP stays first");
    assert_eq!(
        g.partitions[1], before[1],
        "the BIOS boot partition never moves"
    );
    let (root, swap) = (&g.partitions[2], &g.partitions[3]);
    assert_eq!(root.first_lba, 135168);
    assert!(root.last_lba < before[2].last_lba);
    assert_eq!(
        swap.last_lba - swap.first_lba,
        before[3].last_lba - before[3].first_lba
    );
    assert_eq!(swap.first_lba % 2048, 0);
    assert_eq!(swap.first_lba, root.last_lba + 1);
    assert!(swap.last_lba <= g.last_usable_lba);
    assert_eq!(
        p.disks[0].volumes[2].sectors,
        root.last_lba - root.first_lba + 1
    );

    // A raw partition beyond the new end: refused, saying it stays in place.
    let mut m2 = m.clone();
    m2.filesystems.truncate(1);
    let e = err(plan(&m2, &[disk("vdb", size)], &shrinking()));
    assert!(
        e.contains("partition 3 (raw)") && e.contains("in its place"),
        "{e}"
    );
}
