//! Tier 3 (root, QEMU, REWIND_IMAGE): LVM snapshots, which need
//! device-mapper (not on the build host). In the recovery image, with
//! Debian's kernel and lvm2, a disk gets a VG with an ext4 LV and an XFS
//! thin LV; the image's own `rewind capture --repo` reads them from a classic
//! and a thin snapshot (an after-snapshot hook sees the snapshot LVs), which
//! are gone afterwards; a capture killed with SIGKILL while it holds its
//! snapshot leaves it behind, and the next capture removes it.
//!
//!     REWIND_IMAGE=target/image cargo test --test qemu_capture_snapshot -- --nocapture

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod qemu_util;

use std::path::PathBuf;
use std::time::Duration;

use qemu_util::{Boot, Image};

const MIB: u64 = 1 << 20;

const CAPTURE: &str =
    "rewind capture --repo /tmp/repo --disk /dev/vda --host qsnap --no-default-excludes";

#[test]
fn lvm_filesystems_are_captured_from_snapshots_that_are_always_removed() {
    let Some(img) =
        Image::get("lvm_filesystems_are_captured_from_snapshots_that_are_always_removed")
    else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let disk = dir.path().join("a.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(768 * MIB)
        .unwrap();
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("capture-snapshot.log");
    let started = std::time::Instant::now();
    let mut vm = qemu_util::Qemu::start(
        Boot::Direct(
            &img,
            "console=ttyS0,115200 rewind.action=shell rewind.done=poweroff rewind.onfail=poweroff"
                .into(),
        ),
        &[&disk],
        "52:54:00:ab:cd:e1",
        &log,
    );
    let t = vm.expect("emergency shell on /dev/ttyS0", Duration::from_secs(180));
    eprintln!("shell after {t:.1} s (log: {})", log.display());
    std::thread::sleep(Duration::from_secs(2));
    let long = Duration::from_secs(300);
    // The source machine's storage: an ext4 LV and an XFS thin LV.
    vm.run_ok(
        "modprobe dm-snapshot; modprobe dm-thin-pool; \
         lvm pvcreate -q /dev/vda && lvm vgcreate -q qvg /dev/vda && \
         lvm lvcreate -q -y -n root -L 64M qvg && \
         lvm lvcreate -q -y -L 400M -T qvg/pool && \
         lvm lvcreate -q -y -V 320M -T qvg/pool -n thin && \
         /usr/sbin/mkfs.ext4 -q /dev/mapper/qvg-root && /usr/sbin/mkfs.xfs -q /dev/mapper/qvg-thin && \
         mkdir -p /mnt/root /mnt/thin && mount -t ext4 /dev/mapper/qvg-root /mnt/root && \
         mount -t xfs /dev/mapper/qvg-thin /mnt/thin && \
         echo hello > /mnt/root/f && echo thin > /mnt/thin/g",
        long,
    );
    vm.run_ok(
        "mkdir -p /tmp/nohooks && printf '%s\\n' '[hooks]' 'dir = \"/tmp/nohooks\"' \
         '[[hook]]' 'when = \"after-snapshot\"' \
         'run = \"lvm lvs --noheadings -o lv_name qvg >> /tmp/during\"' > /tmp/c.toml",
        long,
    );
    let (out, status) = vm.run(
        &format!("{CAPTURE} --only /mnt/root --only /mnt/thin --config /tmp/c.toml"),
        long,
    );
    assert_eq!(status, 0, "{out}");
    assert!(
        out.contains("/mnt/root: ") && out.contains("read from an LVM snapshot"),
        "{out}"
    );
    assert!(out.contains("read from a thin LVM snapshot"), "{out}");
    let during = vm.run_ok("cat /tmp/during", long);
    assert!(during.contains("rewind-snap-"), "{during}");
    let after = vm.run_ok("lvm lvs --noheadings -o lv_name qvg", long);
    assert!(!after.contains("rewind-snap"), "{after}");
    let mounts = vm.run_ok("grep -c /run/rewind/snap /proc/mounts || true", long);
    assert_eq!(mounts.trim(), "0", "no snapshot stays mounted");
    let ls = vm.run_ok("rewind ls --repo /tmp/repo latest /mnt/thin", long);
    assert!(ls.contains('g'), "{ls}");

    // Killed while it holds its snapshot (an after-snapshot hook holds it).
    vm.run_ok(
        "printf '%s\\n' '[hooks]' 'dir = \"/tmp/nohooks\"' '[[hook]]' 'when = \"after-snapshot\"' \
         'run = \"echo $$ > /tmp/hooked; exec sleep 600\"' > /tmp/k.toml",
        long,
    );
    vm.run_ok(
        &format!("{CAPTURE} --only /mnt/root --config /tmp/k.toml > /tmp/k.log 2>&1 & echo $! > /tmp/k.pid"),
        long,
    );
    vm.run_ok(
        "i=0; while [ ! -s /tmp/hooked ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done; [ -s /tmp/hooked ]",
        long,
    );
    let pid = vm.run_ok("cat /tmp/k.pid", long).trim().to_string();
    let held = vm.run_ok("lvm lvs --noheadings -o lv_name qvg", long);
    assert!(held.contains(&format!("rewind-snap-{pid}-root")), "{held}");
    vm.run_ok(
        &format!("kill -9 {pid}; kill -9 $(cat /tmp/hooked); sleep 1"),
        long,
    );
    let left = vm.run_ok("lvm lvs --noheadings -o lv_name qvg", long);
    assert!(
        left.contains(&format!("rewind-snap-{pid}-root")),
        "left behind: {left}"
    );
    let (out, status) = vm.run(
        &format!("{CAPTURE} --only /mnt/root --config /tmp/c.toml"),
        long,
    );
    assert_eq!(status, 0, "{out}");
    assert!(
        out.contains(&format!("removed qvg/rewind-snap-{pid}-root")),
        "{out}"
    );
    let after = vm.run_ok("lvm lvs --noheadings -o lv_name qvg", long);
    assert!(!after.contains("rewind-snap"), "{after}");
    let mounts = vm.run_ok("grep -c /run/rewind/snap /proc/mounts || true", long);
    assert_eq!(mounts.trim(), "0");
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    vm.type_line("exit");
    vm.expect("starting another", Duration::from_secs(30));
    vm.type_line("poweroff");
    vm.expect("rewind: powering off", Duration::from_secs(60));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
}
