//! The discovery on a fake sysfs, with the tools answering from fixtures
//! of their real output.

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/stack")
            .join(name),
    )
    .unwrap()
}

fn fixture_text(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

struct FakeTools;

/// mdadm reports the array as an Intel IMSM volume.
struct FirmwareRaid;

impl StackTools for FirmwareRaid {
    fn run(&self, _argv: &[String]) -> Result<String> {
        Ok(fixture_text("md-imsm-volume.export"))
    }
    fn vgcfgbackup(&self, _vg: &str) -> Result<String> {
        unreachable!()
    }
    fn read_head(&self, _dev: &Path, _len: usize) -> Result<Vec<u8>> {
        unreachable!()
    }
    fn has_lvm(&self) -> bool {
        false
    }
}

#[test]
fn firmware_raid_is_refused_at_capture() {
    let t = fake_sys();
    let e = probe_stack(t.path(), &base(), &FirmwareRaid)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/dev/md127 is firmware RAID (external in container /dev/md/imsm0) on vda2, vdb2, vdc2: rewind cannot recreate it"),
        "{e}"
    );
}

impl StackTools for FakeTools {
    fn run(&self, argv: &[String]) -> Result<String> {
        Ok(match argv[0].as_str() {
            "mdadm" => {
                assert_eq!(argv[1..3], ["--detail", "--export"]);
                assert_eq!(argv[3], "/dev/md127");
                fixture_text("md-root.export")
            }
            "vgs" => fixture_text("lvm-vgs.json"),
            // The fixture's PV was a loop device; here it is the LUKS mapping.
            "pvs" => fixture_text("lvm-pvs.json").replace("/dev/loop0", "/dev/mapper/cryptroot"),
            "lvs" => fixture_text("lvm-lvs.json"),
            other => panic!("unexpected tool {other}"),
        })
    }
    fn vgcfgbackup(&self, vg: &str) -> Result<String> {
        assert_eq!(vg, "vg0");
        Ok(fixture_text("lvm-vg0-thin.vg"))
    }
    fn read_head(&self, dev: &Path, _len: usize) -> Result<Vec<u8>> {
        Ok(match dev.to_str().unwrap() {
            "/dev/md127" => fixture("luks2-header.bin"),
            "/dev/dm-4" => fixture("luks1-header.bin"),
            other => panic!("unexpected read of {other}"),
        })
    }
    fn has_lvm(&self) -> bool {
        true
    }
}

/// One entry of the fake /sys/class/block.
fn block(sys: &Path, name: &str, dev: &str, sectors: u64, slaves: &[&str]) -> PathBuf {
    let d = sys.join("class/block").join(name);
    std::fs::create_dir_all(d.join("slaves")).unwrap();
    std::fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
    std::fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
    for s in slaves {
        std::fs::create_dir_all(d.join("slaves").join(s)).unwrap();
    }
    d
}

fn dm(
    sys: &Path,
    name: &str,
    minor: u32,
    sectors: u64,
    slaves: &[&str],
    dm_name: &str,
    uuid: &str,
) {
    let d = block(sys, name, &format!("253:{minor}"), sectors, slaves);
    std::fs::create_dir_all(d.join("dm")).unwrap();
    std::fs::write(d.join("dm/name"), format!("{dm_name}\n")).unwrap();
    std::fs::write(d.join("dm/uuid"), format!("{uuid}\n")).unwrap();
}

/// vda/vdb/vdc partition 2 → md127 (RAID1 + spare) → LUKS2 cryptroot →
/// vg0 (root, swap, a thin pool with home, secret) → LUKS1 on secret;
/// and a multipath map on vdd, which rewind does not recreate.
fn fake_sys() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let sys = t.path();
    for (i, disk) in ["vda", "vdb", "vdc", "vdd"].iter().enumerate() {
        block(sys, disk, &format!("254:{}", i * 16), 16_777_216, &[]);
        block(
            sys,
            &format!("{disk}2"),
            &format!("254:{}", i * 16 + 2),
            15_724_544,
            &[],
        );
    }
    let md = block(sys, "md127", "9:127", 15_691_776, &["vda2", "vdb2", "vdc2"]);
    std::fs::create_dir_all(md.join("md/bitmap")).unwrap();
    std::fs::write(md.join("md/chunk_size"), "0\n").unwrap();
    std::fs::write(md.join("md/layout"), "0\n").unwrap();
    std::fs::write(md.join("md/bitmap/location"), "+8\n").unwrap();
    std::fs::create_dir_all(md.join("md/dev-vda2")).unwrap();
    std::fs::write(md.join("md/dev-vda2/offset"), "32768\n").unwrap();
    dm(
        sys,
        "dm-0",
        0,
        15_659_008,
        &["md127"],
        "cryptroot",
        "CRYPT-LUKS2-c0ffee0012344abc8def0123456789ab-cryptroot",
    );
    let vg = "WWzS2mFgfiscg5qBKffc6VgR6wCz4Fxk";
    for (n, lv, uuid) in [
        (1, "vg0-root", "t5J1qJd67JcZwyayIkon0B7Gq1t3dceA"),
        (2, "vg0-swap", "TzaLgbTWci5wYtzh4obPsjRZi2l5Xlk7"),
        (3, "vg0-home", "TS1bwpYiOuQOSBxu70GLNJGgf9K8L0Zc"),
        (4, "vg0-secret", "IVPQeHnFnAnORohOdai2RQ7Gs9dCrBSF"),
        (
            5,
            "vg0-pool-tpool",
            "myB4x6CTUUaJhQebxsAhwdZ6DfBTaFnG-tpool",
        ),
    ] {
        dm(
            sys,
            &format!("dm-{n}"),
            n,
            262_144,
            &["dm-0"],
            lv,
            &format!("LVM-{vg}{uuid}"),
        );
    }
    dm(
        sys,
        "dm-6",
        6,
        126_976,
        &["dm-4"],
        "secret",
        "CRYPT-LUKS1-5ec2e70012344abc8def0123456789ab-secret",
    );
    dm(
        sys,
        "dm-7",
        7,
        16_777_216,
        &["vdd"],
        "mpatha",
        "mpath-3600508b400105e210000900000490000",
    );
    t
}

fn base() -> Vec<(String, StackRef, (u32, u32))> {
    let mut out = Vec::new();
    for (i, disk) in ["vda", "vdb", "vdc", "vdd"].iter().enumerate() {
        let i = i as u32;
        out.push((
            disk.to_string(),
            StackRef::Disk(disk.to_string()),
            (254, i * 16),
        ));
        out.push((
            format!("{disk}2"),
            StackRef::Partition(disk.to_string(), 2),
            (254, i * 16 + 2),
        ));
    }
    out
}

#[test]
fn the_whole_stack_is_found_bottom_up() {
    let t = fake_sys();
    let f = probe_stack(t.path(), &base(), &FakeTools).unwrap();
    assert_eq!(f.md_arrays.len(), 1);
    let a = &f.md_arrays[0];
    assert_eq!(
        (a.name.as_str(), a.size, a.bitmap.as_str()),
        ("root", 15_691_776 * 512, "internal")
    );
    assert_eq!(a.members.len(), 3);
    let names: Vec<(&str, String)> = f
        .luks
        .iter()
        .map(|l| (l.name.as_str(), l.on.to_string()))
        .collect();
    assert_eq!(
        names,
        [
            ("cryptroot", "md/root".into()),
            ("secret", "lv/vg0/secret".into())
        ]
    );
    assert_eq!(f.luks[0].size, 15_659_008 * 512);
    assert_eq!(f.luks[1].version, 1);
    assert_eq!(f.volume_groups.len(), 1);
    assert_eq!(
        f.volume_groups[0].pvs[0].device,
        StackRef::Luks("cryptroot".into())
    );
    // Where filesystems may be: not on what the stack itself uses.
    let vols: Vec<(String, &str, &str)> = f
        .volumes
        .iter()
        .map(|v| {
            (
                v.reference.to_string(),
                v.path.to_str().unwrap(),
                v.node.to_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        vols,
        [
            ("lv/vg0/home".into(), "/dev/mapper/vg0-home", "/dev/dm-3"),
            ("lv/vg0/root".into(), "/dev/mapper/vg0-root", "/dev/dm-1"),
            ("lv/vg0/swap".into(), "/dev/mapper/vg0-swap", "/dev/dm-2"),
            ("luks/secret".into(), "/dev/mapper/secret", "/dev/dm-6"),
        ]
    );
    for consumed in [(254, 2), (254, 18), (254, 34), (9, 127), (253, 0), (253, 4)] {
        assert!(f.consumed.contains(&consumed), "{consumed:?} not consumed");
    }
    assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
    assert!(
        f.warnings[0].contains("/dev/mapper/mpatha is a mpath device"),
        "{:?}",
        f.warnings
    );
    // And it all makes a valid manifest, once filesystems sit on it.
    let mut m = crate::manifest::tests::sample();
    m.schema = 2;
    m.md_arrays = f.md_arrays.clone();
    m.luks = f.luks.clone();
    m.volume_groups = f.volume_groups.clone();
    m.disks = ["vda", "vdb", "vdc"]
        .iter()
        .map(|n| {
            let mut d = m.disks[0].clone();
            d.name = n.to_string();
            d.raw.clear();
            d
        })
        .collect();
    m.filesystems.clear();
    m.swaps.clear();
    m.boot.efi = None;
    // vda's sample table has partition 2; the sample GPT's partition 2 is
    // the one the array uses.
    crate::manifest::validate(&m).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_layer_on_an_uncaptured_disk_is_left_out_with_a_warning() {
    let t = fake_sys();
    // vdc is not captured: the array (and all above it) is not recorded.
    let base: Vec<_> = base()
        .into_iter()
        .filter(|(n, _, _)| !n.starts_with("vdc"))
        .collect();
    let f = probe_stack(t.path(), &base, &FakeTools).unwrap();
    assert!(f.md_arrays.is_empty() && f.luks.is_empty() && f.volume_groups.is_empty());
    assert!(
        f.warnings
            .iter()
            .any(|w| w.contains("md127 is an MD array partly on devices that are not captured")),
        "{:?}",
        f.warnings
    );
}
