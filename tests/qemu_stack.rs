//! Tier 3 (root, QEMU, REWIND_IMAGE): the live image makes an MD RAID1 →
//! LUKS2 → LVM stack (a thin pool included) from a manifest on two blank
//! virtual disks, with Debian's kernel, and the result is read back and
//! compared with the manifest: rewind's own plan, executor
//! (`layout::stack_run::run`) and verification (`stack_run::verify`),
//! driven from the host through the image's emergency shell.
//!
//!     REWIND_IMAGE=target/image cargo test --test qemu_stack -- --nocapture

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod qemu_util;

use std::path::PathBuf;
use std::time::Duration;

use qemu_util::{Boot, Console, Image, Qemu};
use rewind::layout::plan::{Content, PlanOptions, plan};
use rewind::layout::present::PresentDisk;
use rewind::layout::stack_run::{self, StackRunner};
use rewind::manifest::{Filesystem, FsType, Mount, StackRef, from_xml, validate};
use rewind::stack::lvm;

const MIB: u64 = 1 << 20;
const DISK: u64 = 256 * MIB;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/stack")
            .join(name),
    )
    .unwrap()
}

/// Two whole disks → md/root (RAID1) → luks/cryptroot → qvg (root, a thin
/// pool with home), ext4 on root. The VG is one lvm2 made on the build
/// host (tests/fixtures/stack/qemu-*).
fn manifest() -> rewind::manifest::Manifest {
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest schema="2">
  <snapshot id="qemu-stack" host="qemu-stack" time="2026-11-30T12:00:00Z" tool="rewind test"/>
  <system>
    <hostname>qemu-stack</hostname>
    <kernel release="6.1.0" arch="x86_64"/>
    <firmware>bios</firmware>
  </system>
  <disk name="vda" path="/dev/vda" size="{DISK}" logical-sector-size="512" physical-sector-size="512"/>
  <disk name="vdb" path="/dev/vdb" size="{DISK}" logical-sector-size="512" physical-sector-size="512"/>
  <md name="root" device="/dev/md127" array-name="qemu:root" uuid="1b2c3d4e:5f607182:93a4b5c6:d7e8f901" level="raid1" metadata="1.2" raid-devices="2" size="{md}" bitmap="internal" data-offset="{mib}">
    <member ref="disk/vda" role="0"/>
    <member ref="disk/vdb" role="1"/>
  </md>
  <luks name="cryptroot" on="md/root" version="2" uuid="c0ffee00-1234-4abc-8def-0123456789ab" cipher="aes-xts-plain64" key-size="512" sector-size="512" data-offset="{off}" size="{luks}" hash="sha256">
    <keyslot id="0" pbkdf="pbkdf2"/>
    <escrow kind="volume-key" key-id="qemu-stack-test"/>
  </luks>
</manifest>
"#,
        md = 200 * MIB,
        mib = MIB,
        off = 16 * MIB,
        luks = 184 * MIB,
    );
    let mut m = from_xml(&xml).unwrap();
    let vg = lvm::to_element(
        "qvg",
        &lvm::parse_vgs(&fixture("qemu-vgs.json")).unwrap(),
        &lvm::parse_pvs(&fixture("qemu-pvs.json")).unwrap(),
        &lvm::parse_lvs(&fixture("qemu-lvs.json")).unwrap(),
        &fixture("qemu-qvg.vg"),
        |_| Some(StackRef::Luks("cryptroot".into())),
    )
    .unwrap();
    m.volume_groups.push(vg);
    m.filesystems.push(Filesystem {
        device: "/dev/mapper/qvg-root".into(),
        disk: None,
        partition: None,
        volume: Some(StackRef::Lv("qvg".into(), "root".into())),
        fs_type: FsType::Ext4(None),
        uuid: "0a1b2c3d-1111-4222-8333-444455556666".into(),
        label: None,
        mounts: vec![Mount {
            point: "/".into(),
            options: "rw".into(),
            root: "/".into(),
        }],
        data: None,
        members: vec![],
        subvolumes: vec![],
    });
    validate(&m).unwrap_or_else(|e| panic!("{e}"));
    m
}

#[test]
fn live_image_makes_raid1_luks_lvm_from_a_manifest() {
    let Some(img) = Image::get("live_image_makes_raid1_luks_lvm_from_a_manifest") else {
        return;
    };
    let m = manifest();
    let present: Vec<PresentDisk> = ["vda", "vdb"]
        .iter()
        .map(|n| PresentDisk {
            name: n.to_string(),
            path: format!("/dev/{n}"),
            size: DISK,
            logical_sector_size: 512,
            model: None,
            serial: None,
            wwn: None,
            removable: false,
            in_use: None,
            ..Default::default()
        })
        .collect();
    let the_plan = plan(&m, &present, &PlanOptions::default()).unwrap();
    eprintln!("{the_plan}");
    assert_eq!(the_plan.stack.len(), 3);

    let _vm_lock = qemu_util::one_vm();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let disks: Vec<PathBuf> = ["a.img", "b.img"]
        .iter()
        .map(|n| {
            let p = dir.path().join(n);
            std::fs::File::create(&p).unwrap().set_len(DISK).unwrap();
            p
        })
        .collect();
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("stack.log");
    let mut vm = Qemu::start(
        Boot::Direct(
            &img,
            "console=ttyS0,115200 rewind.action=shell rewind.done=poweroff rewind.onfail=poweroff"
                .into(),
        ),
        &[&disks[0], &disks[1]],
        "52:54:00:ab:cd:ef",
        &log,
    );
    let t = vm.expect("emergency shell on /dev/ttyS0", Duration::from_secs(180));
    eprintln!("shell after {t:.1} s (log: {})", log.display());
    std::thread::sleep(Duration::from_secs(2));
    // The escrowed volume key, as recovery will have fetched it.
    vm.run_ok(
        "mkdir -p /run/rewind/stack && head -c 64 /dev/urandom > /run/rewind/stack/cryptroot.key",
        Duration::from_secs(30),
    );
    let started = std::time::Instant::now();
    {
        let mut console = Console(&mut vm);
        stack_run::run(&the_plan, &mut console).unwrap_or_else(|e| panic!("{e:#}"));
        stack_run::verify(&the_plan, &mut console).unwrap_or_else(|e| panic!("{e:#}"));
        // And the filesystem on top, with its UUID.
        for v in &the_plan.stack_volumes {
            if let Content::Filesystem { commands, .. } = &v.content {
                for c in commands {
                    console.run(c).unwrap();
                }
            }
        }
    }
    eprintln!(
        "stack made and verified in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let blkid = vm.run_ok(
        "blkid -o export /dev/mapper/qvg-root",
        Duration::from_secs(60),
    );
    assert!(
        blkid.contains("UUID=0a1b2c3d-1111-4222-8333-444455556666"),
        "{blkid}"
    );
    let thin = vm.run_ok(
        "lvs --noheadings -o lv_name,lv_attr qvg 2>/dev/null",
        Duration::from_secs(60),
    );
    assert!(thin.contains("home") && thin.contains("pool"), "{thin}");
    vm.type_line("exit");
    vm.expect("starting another", Duration::from_secs(30));
    vm.type_line("poweroff");
    vm.expect("rewind: powering off", Duration::from_secs(60));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
}
