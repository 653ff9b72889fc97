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
use rewind::layout::stack_run::{self, StackRunner, open};
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
    m.filesystems
        .push(root_ext4("qvg", "0a1b2c3d-1111-4222-8333-444455556666"));
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
    let mut vm = shell_with_key(
        &img,
        &[&disks[0], &disks[1]],
        "52:54:00:ab:cd:ef",
        "stack.log",
        "cryptroot",
    );
    // The key again for the opens below (the executor removes it).
    vm.run_ok(
        "cp /run/rewind/stack/cryptroot.key /tmp/cryptroot.key",
        Duration::from_secs(30),
    );
    let started = std::time::Instant::now();
    make_stack(&mut vm, &the_plan);
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
    resume_opens_or_makes_again(&mut vm, &the_plan);
    power_off(vm);
}

/// What a resume does with the stack just made, with the real tools: taken
/// down (as at a power cut), it is opened again layer by layer, each
/// verified against the plan, and nothing is made. Then one member of the
/// array is wiped: the array does not assemble whole, so it and the LUKS
/// volume and group on it are made again from wiped devices and read back,
/// and the filesystem on them made again.
fn resume_opens_or_makes_again(vm: &mut Qemu, the_plan: &rewind::layout::plan::Plan) {
    let started = std::time::Instant::now();
    let key_back = "cp /tmp/cryptroot.key /run/rewind/stack/cryptroot.key";
    assert!(stack_run::deactivate(the_plan, &mut Console(vm)).is_empty());
    vm.run_ok(key_back, Duration::from_secs(30));
    let opened = open::open(the_plan, &mut Console(vm));
    assert!(opened.whole(), "{opened:?}");
    let blkid = vm.run_ok(
        "blkid -o export /dev/mapper/qvg-root",
        Duration::from_secs(60),
    );
    assert!(
        blkid.contains("UUID=0a1b2c3d-1111-4222-8333-444455556666"),
        "{blkid}"
    );
    eprintln!(
        "stack opened and verified in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = std::time::Instant::now();
    assert!(stack_run::deactivate(the_plan, &mut Console(vm)).is_empty());
    vm.run_ok(
        "wipefs -a /dev/vdb >/dev/null && cp /tmp/cryptroot.key /run/rewind/stack/cryptroot.key",
        Duration::from_secs(30),
    );
    let opened = open::open(the_plan, &mut Console(vm));
    let remade: Vec<bool> = opened
        .layers
        .iter()
        .map(|l| matches!(l, open::Layer::Remade(_)))
        .collect();
    assert_eq!(remade, [true, true, true], "{opened:?}");
    eprintln!("with a member wiped: {opened:?}");
    open::remake(the_plan, &opened, &mut Console(vm)).unwrap_or_else(|e| panic!("{e:#}"));
    let mut console = Console(vm);
    for v in &the_plan.stack_volumes {
        if let Content::Filesystem { commands, .. } = &v.content {
            for c in commands {
                console.run(c).unwrap();
            }
        }
    }
    let detail = vm.run_ok(
        "mdadm --detail --export /dev/md/root",
        Duration::from_secs(60),
    );
    assert!(detail.contains("/dev/vdb"), "{detail}");
    let blkid = vm.run_ok(
        "blkid -o export /dev/mapper/qvg-root",
        Duration::from_secs(60),
    );
    assert!(
        blkid.contains("UUID=0a1b2c3d-1111-4222-8333-444455556666"),
        "{blkid}"
    );
    eprintln!(
        "member wiped: stack made again and verified in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

const GROW_CAPTURED: u64 = 128 * MIB;
const GROW_PRESENT: u64 = 192 * MIB;

/// One GPT disk of 128 MiB: partition 1 → LUKS2 (filling it) → VG gvg
/// with a linear `root` (ext4) at the PV's end. The VG is lvm2's own,
/// made on the build host on a device of the LUKS volume's size
/// (tests/fixtures/stack/qemu-gvg.vg, qemu-grow-*.json).
fn grow_manifest() -> rewind::manifest::Manifest {
    let last = GROW_CAPTURED / 512 - 34;
    let part = (last - 2048 + 1) * 512;
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest schema="2">
  <snapshot id="qemu-grow" host="qemu-grow" time="2026-11-30T12:00:00Z" tool="rewind test"/>
  <system>
    <hostname>qemu-grow</hostname>
    <kernel release="6.1.0" arch="x86_64"/>
    <firmware>bios</firmware>
  </system>
  <disk name="vda" path="/dev/vda" size="{GROW_CAPTURED}" logical-sector-size="512" physical-sector-size="512">
    <gpt disk-guid="6a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d" first-usable-lba="2048" last-usable-lba="{last}" entries="128">
      <partition number="1" first-lba="2048" last-lba="{last}" type-guid="ca7d7ccb-63ed-4c53-861c-1742536059cc" guid="6a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c01" name="crypt" attributes="0"/>
    </gpt>
  </disk>
  <luks name="cryptgrow" on="disk/vda/1" version="2" uuid="9e0f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b" cipher="aes-xts-plain64" key-size="512" sector-size="512" data-offset="{off}" size="{luks}" hash="sha256">
    <keyslot id="0" pbkdf="pbkdf2"/>
    <escrow kind="volume-key" key-id="qemu-grow-test"/>
  </luks>
</manifest>
"#,
        off = 16 * MIB,
        luks = part - 16 * MIB,
    );
    let mut m = from_xml(&xml).unwrap();
    let vg = lvm::to_element(
        "gvg",
        &lvm::parse_vgs(&fixture("qemu-grow-vgs.json")).unwrap(),
        &lvm::parse_pvs(&fixture("qemu-grow-pvs.json")).unwrap(),
        &lvm::parse_lvs(&fixture("qemu-grow-lvs.json")).unwrap(),
        &fixture("qemu-gvg.vg"),
        |_| Some(StackRef::Luks("cryptgrow".into())),
    )
    .unwrap();
    m.volume_groups.push(vg);
    m.filesystems
        .push(root_ext4("gvg", "6b7c8d9e-1111-4222-8333-444455556666"));
    validate(&m).unwrap_or_else(|e| panic!("{e}"));
    m
}

/// `--grow` onto a disk 64 MiB bigger: the plan's table written to the
/// image on the host, then in the live image rewind's stack executor opens
/// the LUKS volume on the grown partition, `pvresize`s and `lvextend`s
/// root onto the new extents, and verify reads back the grown sizes; the
/// ext4 made on root fills it.
#[test]
fn live_image_grows_partition_luks_lvm_onto_a_bigger_disk() {
    let Some(img) = Image::get("live_image_grows_partition_luks_lvm_onto_a_bigger_disk") else {
        return;
    };
    let m = grow_manifest();
    let present = vec![PresentDisk {
        name: "vda".into(),
        path: "/dev/vda".into(),
        size: GROW_PRESENT,
        logical_sector_size: 512,
        ..Default::default()
    }];
    let opts = PlanOptions {
        grow: true,
        ..PlanOptions::default()
    };
    let the_plan = plan(&m, &present, &opts).unwrap();
    eprintln!("{the_plan}");
    let vg = the_plan.stack.iter().find(|s| s.layer == "vg gvg").unwrap();
    let lines: Vec<String> = vg.commands.iter().map(|c| c.join(" ")).collect();
    // 27 extents at capture; (183483392 - 1 MiB) / 4 MiB = 43 now.
    assert!(
        lines.contains(&"lvextend --yes --extents +16 gvg/root /dev/mapper/cryptgrow".to_string()),
        "{lines:#?}"
    );

    let _vm_lock = qemu_util::one_vm();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let disk = dir.path().join("grow.img");
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&disk)
            .unwrap();
        f.set_len(GROW_PRESENT).unwrap();
        rewind::layout::partition::write_layout(&mut f, &the_plan.disks[0]).unwrap();
    }
    let mut vm = shell_with_key(
        &img,
        &[&disk],
        "52:54:00:ab:cd:f0",
        "stack-grow.log",
        "cryptgrow",
    );
    // Verify compares with the grown sizes the plan expects.
    make_stack(&mut vm, &the_plan);
    let sizes = vm.run_ok(
        "for d in /dev/vda1 /dev/mapper/cryptgrow /dev/mapper/gvg-root; do blockdev --getsize64 $d; done; \
         pvs --noheadings -o pv_pe_count /dev/mapper/cryptgrow; \
         dumpe2fs -h /dev/mapper/gvg-root 2>/dev/null | grep -E '^Block (count|size):'",
        Duration::from_secs(60),
    );
    eprintln!("{sizes}");
    let words: Vec<&str> = sizes.split_whitespace().collect();
    let part = (GROW_PRESENT / 512 - 34 - 2048 + 1) * 512;
    assert_eq!(words[0], part.to_string(), "{sizes}");
    assert_eq!(words[1], (part - 16 * MIB).to_string(), "{sizes}");
    assert_eq!(words[2], (164 * MIB).to_string(), "{sizes}");
    assert_eq!(words[3], "43", "{sizes}");
    let blocks: u64 = words[6].parse().unwrap();
    let block: u64 = words[9].parse().unwrap();
    assert_eq!(
        blocks * block,
        164 * MIB,
        "ext4 fills the grown LV: {sizes}"
    );
    power_off(vm);
}

/// ext4 on `VG/root`, mounted at /.
fn root_ext4(vg: &str, uuid: &str) -> Filesystem {
    Filesystem {
        device: format!("/dev/mapper/{vg}-root"),
        disk: None,
        partition: None,
        volume: Some(StackRef::Lv(vg.into(), "root".into())),
        fs_type: FsType::Ext4(None),
        uuid: uuid.into(),
        label: None,
        mounts: vec![Mount {
            point: "/".into(),
            options: "rw".into(),
            root: "/".into(),
        }],
        data: None,
        members: vec![],
        subvolumes: vec![],
    }
}

/// The live image booted to its emergency shell on `disks`, with a random
/// volume key where recovery puts the escrowed key of LUKS volume `luks`.
fn shell_with_key(
    img: &Image,
    disks: &[&std::path::Path],
    mac: &str,
    log: &str,
    luks: &str,
) -> Qemu {
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join(log);
    let mut vm = Qemu::start(
        Boot::Direct(
            img,
            "console=ttyS0,115200 rewind.action=shell rewind.done=poweroff rewind.onfail=poweroff"
                .into(),
        ),
        disks,
        mac,
        &log,
    );
    let t = vm.expect("emergency shell on /dev/ttyS0", Duration::from_secs(180));
    eprintln!("shell after {t:.1} s (log: {})", log.display());
    std::thread::sleep(Duration::from_secs(2));
    vm.run_ok(
        &format!(
            "mkdir -p /run/rewind/stack && head -c 64 /dev/urandom > /run/rewind/stack/{luks}.key"
        ),
        Duration::from_secs(30),
    );
    vm
}

/// rewind's stack executor and read-back on the plan, then the
/// filesystems on top (with their UUIDs), through the image's shell.
fn make_stack(vm: &mut Qemu, the_plan: &rewind::layout::plan::Plan) {
    let mut console = Console(vm);
    stack_run::run(the_plan, &mut console).unwrap_or_else(|e| panic!("{e:#}"));
    stack_run::verify(the_plan, &mut console).unwrap_or_else(|e| panic!("{e:#}"));
    for v in &the_plan.stack_volumes {
        if let Content::Filesystem { commands, .. } = &v.content {
            for c in commands {
                console.run(c).unwrap();
            }
        }
    }
}

fn power_off(mut vm: Qemu) {
    vm.type_line("exit");
    vm.expect("starting another", Duration::from_secs(30));
    vm.type_line("poweroff");
    vm.expect("rewind: powering off", Duration::from_secs(60));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
}
