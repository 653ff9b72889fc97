//! The btrfs + dracut + 4Kn drill (`uefi_btrfs_dracut_nvme_4kn`, issues 13
//! and 14): a UEFI source on virtio (512-byte sectors) with GPT, ESP and /
//! on btrfs with subvolumes (`@` for /, the default; `@home`; `@snapshots`
//! holding a read-only snapshot; an id gap left by a deleted subvolume),
//! whose initramfs is dracut's in host-only mode (virtio drivers only),
//! recovered onto an NVMe disk with 4096-byte sectors and an e1000 NIC.
//! The recovery must rescale the partition table to the same byte offsets,
//! make the ESP with 4 KiB sectors, recreate the subvolumes with their ids,
//! default and read-only flags, regenerate the initramfs with dracut (or
//! the NVMe disk is never found), and rewrite the boot entry's LBAs.
//!
//! drill.rs calls these at its steps when `Variant::btrfs` is set.

use std::time::Duration;

use crate::qemu_util::{Bus, Nic, Qemu};
use crate::{COMMAND, Report, script, system_running};

/// The source's root: the drills' root with dracut instead of
/// initramfs-tools, and btrfs-progs (cached in target/drill-cache).
pub fn root_tar(rep: &mut Report) -> std::path::PathBuf {
    let t = std::time::Instant::now();
    let tar = crate::repo_dir().join("target/drill-cache/root-dracut.tar");
    script(
        "build-source-root-dracut",
        &["--out", tar.to_str().unwrap()],
    );
    rep.step(
        "the Debian root with dracut and btrfs-progs (cached in target/drill-cache)",
        t,
    );
    tar
}

/// The recovery's hardware: an NVMe disk with 4096-byte sectors, an e1000.
pub fn hardware<'a>(rep: &mut Report, mac: &'a str) -> (Bus, Nic<'a>) {
    rep.fact(
        "hardware",
        "virtio disk (512-byte sectors) and NIC -> NVMe disk with 4096-byte sectors (4Kn), e1000 NIC",
    );
    (
        Bus::Nvme4Kn,
        Nic {
            mac,
            model: "e1000",
        },
    )
}

/// The btrfs as the machine reports it: every subvolume's id and path, its
/// read-only flag, and the default subvolume.
pub fn btrfs_state(vm: &mut Qemu) -> String {
    vm.run_ok(
        "d=$(findmnt -rno SOURCE / | sed 's/\\[.*//') && mkdir -p /run/top && \
         mount -o subvolid=5 \"$d\" /run/top && \
         btrfs subvolume list /run/top | sed 's/ gen [0-9]* / /' && \
         for p in $(btrfs subvolume list /run/top | sed 's/.* path //'); do \
           echo \"$p $(btrfs property get -ts /run/top/$p ro)\"; done && \
         btrfs subvolume get-default /run/top | sed 's/ gen [0-9]* / /'; umount /run/top",
        COMMAND,
    )
}

/// On the source before its first capture: its host-only initramfs, made
/// here where dracut sees this machine (virtio only), must not carry the
/// NVMe driver; the btrfs as it is.
pub fn prepare_source(vm: &mut Qemu, rep: &mut Report) -> String {
    let t = std::time::Instant::now();
    vm.run_ok(
        "dracut -q -f --hostonly --regenerate-all 2>&1 | tail -n 5",
        Duration::from_secs(900),
    );
    rep.step("dracut --hostonly --regenerate-all on the source", t);
    let modules = vm.run_ok(
        "lsinitrd /boot/initrd.img-$(uname -r) | grep -oE '[a-z0-9_-]+\\.ko' | sort -u | tr '\\n' ' '",
        COMMAND,
    );
    assert!(
        !modules.contains("nvme"),
        "the source's host-only initramfs carries nvme: {modules}"
    );
    assert!(
        modules.contains("virtio_blk") && modules.contains("btrfs"),
        "the source's host-only initramfs lacks virtio_blk or btrfs: {modules}"
    );
    rep.fact("source initramfs (dracut, host-only)", "no nvme module");
    system_running(vm);
    let state = btrfs_state(vm);
    eprintln!("drill: the source's btrfs:\n{state}");
    assert!(
        state.contains("@snapshots/home-1 ro=true")
            && state.contains("ID 256 top level 5 path @\n"),
        "not the btrfs make-source-disk made:\n{state}"
    );
    state
}

/// The recovery console: sectors rescaled in the plan, the ESP made with
/// 4 KiB sectors, dracut regenerated.
pub fn check_recovery(console: &str, rep: &mut Report) {
    for want in [
        "sector size 512 -> 4096 bytes",
        "mkfs.fat -i",
        "-S 4096",
        "rewind: initramfs (dracut): regenerated",
    ] {
        assert!(
            console.contains(want),
            "the recovery console lacks {want:?}"
        );
    }
    if let Some(l) = console.lines().find(|l| l.contains("mkfs.fat -i")) {
        rep.fact("ESP made with", l.trim());
    }
    // /home is the subvolume @home, beside @: its own tree, restored into
    // its own mount.
    let home = console
        .lines()
        .find_map(|l| l.split_once("rewind: /home: ").map(|(_, done)| done))
        .unwrap_or_else(|| panic!("the recovery console does not show /home (@home) restored"));
    rep.fact("@home restored (its own tree)", home.trim());
}

/// On the recovered machine: booted to `running`, the same subvolumes,
/// a 4Kn disk, an initramfs with the NVMe driver.
pub fn check_recovered(vm: &mut Qemu, rep: &mut Report, before: &str) {
    system_running(vm);
    assert_eq!(
        btrfs_state(vm),
        before,
        "the recovered btrfs subvolumes differ from the source's"
    );
    rep.fact(
        "btrfs compared",
        "subvolume ids, paths, ro flags, default subvolume: equal",
    );
    let sectors = vm.run_ok(
        "cat /sys/block/nvme0n1/queue/logical_block_size /sys/block/nvme0n1/queue/physical_block_size | tr '\\n' ' '",
        COMMAND,
    );
    assert_eq!(sectors.trim(), "4096 4096", "not a 4Kn disk");
    rep.fact("recovered disk sectors (logical, physical)", sectors.trim());
    let nvme = vm.run_ok(
        "lsinitrd /boot/initrd.img-$(uname -r) | grep -c 'nvme.*\\.ko' || true",
        COMMAND,
    );
    assert_ne!(nvme.trim(), "0", "the regenerated initramfs has no nvme");
}
