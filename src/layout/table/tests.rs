//! Tables written to image files and checked three ways: byte for byte
//! against what sfdisk writes for the same layout, by `sfdisk --dump`, and
//! read back with the probe's reader (the capture side). sfdisk works on
//! image files without root.

use super::*;
use crate::probe::disks::{DiskTables as ReadTable, read_table};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;

fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    File::create(&p).unwrap().set_len(size).unwrap();
    p
}

/// sfdisk needs no root on image files, but lives in /usr/sbin, which a
/// user's PATH on Debian lacks.
fn sfdisk_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("sfdisk"))
        .find(|p| p.is_file())
        .expect("sfdisk (fdisk package) is needed for this test")
}

fn sfdisk(img: &Path, script: &str) {
    use std::io::Write as _;
    let mut child = Command::new(sfdisk_bin())
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sfdisk (fdisk package) is needed for this test");
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
}

/// `sfdisk --dump`, with the image's path made neutral.
fn dump(img: &Path) -> String {
    let out = Command::new(sfdisk_bin())
        .arg("--dump")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .replace(img.to_str().unwrap(), "IMG")
}

fn read_back(img: &Path) -> ReadTable {
    let size = std::fs::metadata(img).unwrap().len();
    read_table(&mut File::open(img).unwrap(), 512, size).unwrap()
}

fn open_rw(img: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(img).unwrap()
}

fn bytes(img: &Path, lba: u64, count: u64) -> Vec<u8> {
    let all = std::fs::read(img).unwrap();
    all[(lba * 512) as usize..((lba + count) * 512) as usize].to_vec()
}

/// The layout the probe reads from `img`, as the plan would pass it on.
fn gpt_layout_of(img: &Path) -> GptLayout {
    let g = read_back(img).gpt.expect("a GPT");
    let sectors = std::fs::metadata(img).unwrap().len() / 512;
    GptLayout {
        disk_guid: g.disk_guid,
        first_usable_lba: g.first_usable_lba,
        last_usable_lba: g.last_usable_lba,
        entries: g.entries,
        backup_lba: sectors - 1,
        partitions: g
            .partitions
            .into_iter()
            .map(|p| GptEntry {
                number: p.number,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                type_guid: p.type_guid,
                guid: p.guid,
                name: p.name,
                attributes: p.attributes,
            })
            .collect(),
    }
}

fn mbr_layout_of(img: &Path) -> MbrLayout {
    let m = read_back(img).mbr.expect("an MBR");
    MbrLayout {
        signature: m.signature.value(),
        partitions: m
            .partitions
            .into_iter()
            .map(|p| MbrEntry {
                number: p.number,
                kind: p.kind,
                type_byte: p.type_byte.value(),
                boot: p.boot,
                start_lba: p.start_lba,
                sectors: p.sectors,
                ebr_lba: p.ebr_lba,
            })
            .collect(),
    }
}

const GPT_SCRIPT: &str = "label: gpt\n\
    label-id: A0B1C2D3-E4F5-4607-8819-2A3B4C5D6E7F\n\
    first-lba: 2048\n\
    start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=11111111-2222-4333-8444-555555555501, name=\"EFI system\"\n\
    start=18432, size=2048, type=21686148-6449-6E6F-744E-656564454649, uuid=11111111-2222-4333-8444-555555555502, name=\"BIOS boot\"\n\
    start=20480, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=11111111-2222-4333-8444-555555555503, name=\"röot & <sys>\", attrs=\"RequiredPartition LegacyBIOSBootable GUID:60\"\n\
    7: start=43008, size=8192, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=11111111-2222-4333-8444-555555555507\n";

#[test]
fn gpt_is_byte_identical_to_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let orig = image(dir.path(), "orig.img", 64 * MIB);
    sfdisk(&orig, GPT_SCRIPT);
    let layout = gpt_layout_of(&orig);
    assert_eq!(
        layout
            .partitions
            .iter()
            .map(|p| p.number)
            .collect::<Vec<_>>(),
        [1, 2, 3, 7],
        "the gap before slot 7 is kept"
    );

    let copy = image(dir.path(), "copy.img", 64 * MIB);
    write_gpt(&mut open_rw(&copy), 64 * MIB / 512, 512, &layout, None).unwrap();
    assert_eq!(dump(&copy), dump(&orig));
    let sectors = 64 * MIB / 512;
    // Protective MBR, primary header and entries; backup entries and header.
    assert_eq!(
        bytes(&copy, 0, 34),
        bytes(&orig, 0, 34),
        "PMBR + primary GPT"
    );
    assert_eq!(
        bytes(&copy, sectors - 33, 33),
        bytes(&orig, sectors - 33, 33),
        "backup GPT"
    );
    assert_eq!(read_back(&copy), read_back(&orig));
}

#[test]
fn gpt_with_a_short_entry_array() {
    // 32 entries in 8 sectors, partitions from LBA 40: kept as they were.
    let dir = tempfile::tempdir().unwrap();
    let orig = image(dir.path(), "orig.img", 16 * MIB);
    sfdisk(
        &orig,
        "label: gpt\ntable-length: 32\nfirst-lba: 40\n\
         start=40, size=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
         32: start=4096, size=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    );
    let layout = gpt_layout_of(&orig);
    assert_eq!(layout.entries, 32);
    let copy = image(dir.path(), "copy.img", 16 * MIB);
    write_gpt(&mut open_rw(&copy), 16 * MIB / 512, 512, &layout, None).unwrap();
    assert_eq!(dump(&copy), dump(&orig));
    assert!(dump(&copy).contains("table-length: 32"));
    let sectors = 16 * MIB / 512;
    assert_eq!(bytes(&copy, 0, 10), bytes(&orig, 0, 10));
    assert_eq!(bytes(&copy, sectors - 9, 9), bytes(&orig, sectors - 9, 9));
}

#[test]
fn gpt_boot_code_and_bigger_disk() {
    let dir = tempfile::tempdir().unwrap();
    let orig = image(dir.path(), "orig.img", 64 * MIB);
    sfdisk(&orig, GPT_SCRIPT);
    let mut layout = gpt_layout_of(&orig);
    // Twice the size: backup header at the end of the actual disk, usable
    // area ending as far from it as before.
    let sectors = 128 * MIB / 512;
    layout.backup_lba = sectors - 1;
    layout.last_usable_lba += 64 * MIB / 512;
    let code: [u8; 440] = std::array::from_fn(|i| (i % 251) as u8 + 1);
    let copy = image(dir.path(), "copy.img", 128 * MIB);
    write_gpt(&mut open_rw(&copy), sectors, 512, &layout, Some(&code)).unwrap();

    let got = dump(&copy);
    let want = dump(&orig).replace("last-lba: 131038", &format!("last-lba: {}", sectors - 34));
    assert_eq!(got, want);
    let out = Command::new(sfdisk_bin())
        .arg("--verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let t = read_back(&copy);
    assert_eq!(t.boot_code, Some(crate::util::hex::encode(&code)));
    // The protective record spans the whole new disk from LBA 1.
    let lba0 = bytes(&copy, 0, 1);
    assert_eq!(lba0[446 + 4], 0xee);
    assert_eq!(&lba0[446 + 8..446 + 16], &[1, 0, 0, 0, 0xff, 0xff, 0x03, 0]);
}

#[test]
fn gpt_on_4096_byte_sectors_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "4k.img", 64 * MIB);
    let sectors = 64 * MIB / 4096;
    let layout = GptLayout {
        disk_guid: "a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f".into(),
        first_usable_lba: 256,
        last_usable_lba: sectors - 6,
        entries: 128,
        backup_lba: sectors - 1,
        partitions: vec![GptEntry {
            number: 2,
            first_lba: 256,
            last_lba: 4095,
            type_guid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
            guid: "11111111-2222-4333-8444-555555555502".into(),
            name: "data".into(),
            attributes: 1,
        }],
    };
    write_gpt(&mut open_rw(&img), sectors, 4096, &layout, None).unwrap();
    let g = read_table(&mut File::open(&img).unwrap(), 4096, 64 * MIB)
        .unwrap()
        .gpt
        .unwrap();
    assert_eq!(g.first_usable_lba, 256);
    assert_eq!(g.last_usable_lba, sectors - 6);
    assert_eq!(g.partitions.len(), 1);
    assert_eq!(
        (
            g.partitions[0].number,
            g.partitions[0].last_lba,
            g.partitions[0].attributes
        ),
        (2, 4095, 1)
    );
}

#[test]
fn gpt_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let orig = image(dir.path(), "orig.img", 64 * MIB);
    sfdisk(&orig, GPT_SCRIPT);
    let layout = gpt_layout_of(&orig);
    // The same table on a smaller disk: the backup would land mid-table.
    let small = image(dir.path(), "small.img", 32 * MIB);
    let before = std::fs::read(&small).unwrap();
    let e = write_gpt(&mut open_rw(&small), 32 * MIB / 512, 512, &layout, None).unwrap_err();
    assert!(
        format!("{e:#}").contains("backup header at LBA 131071 but the disk ends at LBA 65535"),
        "{e:#}"
    );
    assert_eq!(std::fs::read(&small).unwrap(), before, "nothing written");
    let mut bad = layout.clone();
    bad.partitions[3].last_lba = bad.last_usable_lba + 1;
    let e = bad.check(64 * MIB / 512, 512).unwrap_err();
    assert!(format!("{e:#}").contains("partition 7"), "{e:#}");
    let mut bad = layout.clone();
    bad.partitions[0].number = 129;
    assert!(bad.check(64 * MIB / 512, 512).is_err());
    let mut bad = layout;
    bad.first_usable_lba = 20;
    assert!(
        format!("{:#}", bad.check(64 * MIB / 512, 512).unwrap_err())
            .contains("primary entry array")
    );
}

const MBR_SCRIPT: &str = "label: dos\n\
    label-id: 0x1a2b3c4d\n\
    start=2048, size=8192, type=83, bootable\n\
    start=10240, size=8192, type=ef\n\
    start=18432, size=100352, type=5\n\
    start=20480, size=8192, type=83\n\
    start=30720, size=16384, type=82\n\
    start=49152, size=69632, type=7\n";

/// Bytes of an MBR or EBR sector with each record's CHS fields blanked
/// (sfdisk computes them; rewind writes 0, as LBA-booting systems ignore them).
fn without_chs(sector: &[u8]) -> Vec<u8> {
    let mut s = sector.to_vec();
    for r in 0..4 {
        let o = 446 + 16 * r;
        for i in [1, 2, 3, 5, 6, 7] {
            s[o + i] = 0;
        }
    }
    s
}

#[test]
fn mbr_with_logicals_matches_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let orig = image(dir.path(), "orig.img", 64 * MIB);
    sfdisk(&orig, MBR_SCRIPT);
    let layout = mbr_layout_of(&orig);
    let code: [u8; 440] = std::array::from_fn(|i| (i * 7 % 256) as u8);
    {
        // The same boot code in the original, for the byte comparison.
        let mut f = open_rw(&orig);
        f.write_all(&code).unwrap();
    }
    let copy = image(dir.path(), "copy.img", 64 * MIB);
    write_mbr(
        &mut open_rw(&copy),
        64 * MIB / 512,
        512,
        &layout,
        Some(&code),
    )
    .unwrap();
    assert_eq!(dump(&copy), dump(&orig));
    assert_eq!(read_back(&copy), read_back(&orig));
    for lba in [0]
        .into_iter()
        .chain(layout.partitions.iter().filter_map(|p| p.ebr_lba))
    {
        assert_eq!(
            without_chs(&bytes(&copy, lba, 1)),
            without_chs(&bytes(&orig, lba, 1)),
            "sector {lba}"
        );
    }
}

#[test]
fn ebrs_beyond_4_gib_land_where_they_belong() {
    // mbrman computes EBR offsets in 32 bits: an EBR past 4 GiB overwrote
    // the first one. A sparse 8 GiB image costs nothing.
    let dir = tempfile::tempdir().unwrap();
    let size = 8 << 30;
    let sectors = size / 512;
    let layout = MbrLayout {
        signature: 0xdeadbeef,
        partitions: vec![
            MbrEntry {
                number: 1,
                kind: MbrKind::Primary,
                type_byte: 0x83,
                boot: false,
                start_lba: 2048,
                sectors: 2046,
                ebr_lba: None,
            },
            MbrEntry {
                number: 2,
                kind: MbrKind::Extended,
                type_byte: 0x0f,
                boot: false,
                start_lba: 4096,
                sectors: sectors - 4096,
                ebr_lba: None,
            },
            MbrEntry {
                number: 5,
                kind: MbrKind::Logical,
                type_byte: 0x83,
                boot: false,
                start_lba: 6144,
                sectors: 2048,
                ebr_lba: Some(4096),
            },
            MbrEntry {
                number: 6,
                kind: MbrKind::Logical,
                type_byte: 0x83,
                boot: true,
                start_lba: 5 * (1 << 21) + 2048,
                sectors: 2048,
                ebr_lba: Some(5 * (1 << 21)),
            },
            MbrEntry {
                number: 7,
                kind: MbrKind::Logical,
                type_byte: 0x82,
                boot: false,
                start_lba: 7 * (1 << 21) + 8,
                sectors: sectors - 7 * (1 << 21) - 8,
                ebr_lba: Some(7 * (1 << 21)),
            },
        ],
    };
    let img = image(dir.path(), "big.img", size);
    write_mbr(&mut open_rw(&img), sectors, 512, &layout, None).unwrap();
    assert_eq!(mbr_layout_of(&img), layout);
    let d = dump(&img);
    for want in [
        "IMG5 : start=        6144, size=        2048, type=83",
        "IMG6 : start=    10487808, size=        2048, type=83, bootable",
        "IMG7 : start=    14680072, size=     2097144, type=82",
    ] {
        assert!(d.contains(want), "{want:?} not in\n{d}");
    }
}

#[test]
fn mbr_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let orig = image(dir.path(), "orig.img", 64 * MIB);
    sfdisk(&orig, MBR_SCRIPT);
    let layout = mbr_layout_of(&orig);
    assert!(format!("{:#}", layout.check(32 * MIB / 512).unwrap_err()).contains("does not fit"));
    let mut bad = layout.clone();
    bad.partitions[3].ebr_lba = Some(18434); // not the extended's start
    assert!(format!("{:#}", bad.check(64 * MIB / 512).unwrap_err()).contains("first EBR"));
    let mut bad = layout;
    bad.partitions[0].start_lba = 1 << 32;
    assert!(bad.check(1 << 34).is_err(), "beyond the MBR's reach");
    assert!(boot_code_bytes("zz").is_err());
}
