//! Tier 3 (root, QEMU, REWIND_IMAGE): a recovery cut while formatting —
//! before its restore wrote any resume journal — is recreated at the next
//! boot on the disk its first run chose, although that disk is no longer
//! blank, and without `rewind.overwrite` (issue 15).
//!
//! The captured machine has two disks (loop devices, no serial): a GPT
//! system disk and an MBR data disk. The targets are two blank virtio
//! disks: one with a serial of its own, one without (a VM's virtio disk,
//! known again by its place in the hardware and the partition table the
//! cut run wrote on it), each chosen because it is blank. Before its first
//! write the image records both choices on its claim. QEMU is killed as
//! the format stage starts (the partition tables written). Booted again,
//! the image claims the request again (the same machine), learns from the
//! claim which disks its first run chose, takes both again, recreates the
//! layout and restores; the trees are exact.
//!
//!     REWIND_IMAGE=target/image cargo test --test qemu_resume_cut -- --nocapture

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod qemu_util;
mod server_util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    LoopDisk, Mounted, assert_same_tree, esp_root_swap_disk, noise, sfdisk_dump, sh, stat_dump,
};
use qemu_util::{Boot, Bus, Disk, Firmware, Nic, Qemu};
use server_util::{ServerProc, arm_for_guest, rewind_ok};

const HOST: &str = "qemu-cut";
const DISK_MIB: u64 = 768;
const DATA_MIB: u64 = 64;
const MAC: &str = "52:54:00:ab:cd:16";
const SERIAL: &str = "CUT-TARGET-1";
const BOOT: Duration = Duration::from_secs(240);
const RECOVERY: Duration = Duration::from_secs(1200);

fn logs_dir() -> PathBuf {
    let d = std::env::var_os("REWIND_QEMU_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/qemu-logs"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_recovery_cut_while_formatting_is_recreated_on_the_disk_it_chose() {
    let Some(img) =
        qemu_util::Image::get("a_recovery_cut_while_formatting_is_recreated_on_the_disk_it_chose")
    else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let dir = tempfile::Builder::new()
        .prefix("rewind-qemu-cut-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let t0 = Instant::now();

    // The captured machine, on two disks without serial.
    let disk = esp_root_swap_disk(dir.path(), DISK_MIB);
    let data = LoopDisk::new(
        dir.path(),
        "data.img",
        DATA_MIB,
        "label: dos\nstart=2048, type=83\n",
    );
    sh("mkfs.ext4", &["-q", "-L", "data", &data.part(1)]);
    let src = dir.path().join("src");
    let src_data = src.join("srv/data");
    std::fs::create_dir_all(&src).unwrap();
    let server;
    {
        let _m = Mounted::new(&disk.part(2), &src, &[]);
        std::fs::create_dir_all(&src_data).unwrap();
        let _d = Mounted::new(&data.part(1), &src_data, &[]);
        for i in 0..8u64 {
            std::fs::write(src_data.join(format!("d{i}.bin")), noise(100 + i, 300_000)).unwrap();
        }
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/hostname"), format!("{HOST}\n")).unwrap();
        for i in 0..40u64 {
            let p = src.join(format!("var/lib/data/f{i}.bin"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, noise(i, 100_000 + i as usize * 997)).unwrap();
        }
        sh("sync", &[]);
        server = ServerProc::start(&dir.path().join("server"), false);
        let token = server.host_token(HOST);
        rewind_ok(
            &server,
            &token,
            &[
                "capture", "--host", HOST, "--disk", &disk.dev, "--disk", &data.dev,
            ],
        );
    }
    let source_table = sfdisk_dump(&disk.image);
    let data_table = sfdisk_dump(&data.image);
    drop(disk);
    drop(data);

    let cmdline = arm_for_guest(&server, HOST, MAC);
    let target = dir.path().join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(DISK_MIB << 20)
        .unwrap();
    let target_data = dir.path().join("target-data.img");
    std::fs::File::create(&target_data)
        .unwrap()
        .set_len(DATA_MIB << 20)
        .unwrap();
    let disks = [
        Disk {
            path: &target,
            serial: Some(SERIAL),
            bus: Bus::Virtio,
        },
        Disk {
            path: &target_data,
            serial: None,
            bus: Bus::Virtio,
        },
    ];

    // 1. Cut as the format stage starts: the table is written, no journal.
    let log1 = logs_dir().join("resume-cut-1.log");
    let mut vm = Qemu::start_with(
        Boot::Direct(&img, cmdline.clone()),
        Firmware::Bios,
        &disks,
        Nic::virtio(MAC),
        &log1,
    );
    vm.expect("rewind: == stage format ==", RECOVERY);
    vm.kill();
    let first = vm.console();
    assert!(first.contains("/dev/vda"), "{first}");
    drop(vm);
    assert_eq!(
        sfdisk_dump(&target),
        source_table,
        "the first run wrote its table: the disk is not blank"
    );
    assert_eq!(sfdisk_dump(&target_data), data_table, "and the data disk's");
    let req = last_request(&server);
    let recorded = &req["claim"]["disks"];
    assert_eq!(
        recorded[0]["serial"], SERIAL,
        "the choices recorded on the claim: {req}"
    );
    // The disk without serial: by its place and the MBR signature written.
    assert!(recorded[1]["serial"].is_null(), "{req}");
    let place = recorded[1]["hw_path"].as_str().unwrap_or_default();
    assert!(place.starts_with("devices/pci"), "{req}");
    let signature = sh("sfdisk", &["--disk-id", target_data.to_str().unwrap()]);
    let signature = signature.trim().trim_start_matches("0x");
    assert_eq!(recorded[1]["table_id"], signature, "{req}");

    // 2. The same machine boots again, without rewind.overwrite.
    let log2 = logs_dir().join("resume-cut-2.log");
    let mut vm = Qemu::start_with(
        Boot::Direct(&img, cmdline),
        Firmware::Bios,
        &disks,
        Nic::virtio(MAC),
        &log2,
    );
    vm.expect("the claim is renewed", BOOT);
    vm.expect("was chosen for captured disk loop", RECOVERY);
    vm.expect("no serial: at devices/pci", RECOVERY);
    for s in ["partition", "format", "restore", "configure", "finish"] {
        vm.expect(&format!("rewind: == stage {s} =="), RECOVERY);
    }
    vm.expect("rewind: powering off", Duration::from_secs(300));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    let second = vm.console();
    assert!(!second.contains("FAILED"), "{second}");
    assert!(
        !second.contains("not matched by serial or WWN"),
        "the plan refused the disk: {second}"
    );
    assert_eq!(last_request(&server)["state"], "succeeded");

    // The tree is the captured one.
    assert_eq!(sfdisk_dump(&target), source_table, "partition table");
    assert_eq!(
        sfdisk_dump(&target_data),
        data_table,
        "data partition table"
    );
    let t = LoopDisk::attach_partitioned(&target);
    let s = LoopDisk::attach_partitioned(&dir.path().join("source.img"));
    let (a, b) = (dir.path().join("cmp-src"), dir.path().join("cmp-dst"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let _ma = Mounted::new(&s.part(2), &a, &["ro,noatime"]);
    let _mb = Mounted::new(&t.part(2), &b, &["ro,noatime"]);
    // Each with its data disk mounted where the machine mounts it: the
    // tree as the machine sees it (the mount point's own directory in the
    // root filesystem, hidden under the mount, is not compared).
    let sd = LoopDisk::attach_partitioned(&dir.path().join("data.img"));
    let td = LoopDisk::attach_partitioned(&target_data);
    let _mc = Mounted::new(&sd.part(1), &a.join("srv/data"), &["ro,noatime"]);
    let _md = Mounted::new(&td.part(1), &b.join("srv/data"), &["ro,noatime"]);
    assert_same_tree(&a, &b);
    assert_eq!(stat_dump(&a), stat_dump(&b), "stat dumps differ");
    eprintln!("done in {:.0} s in all", t0.elapsed().as_secs_f64());
}

fn last_request(server: &ServerProc) -> serde_json::Value {
    let list = server
        .client(&server.admin)
        .get_json(&format!("/v1/requests?host={HOST}"))
        .unwrap();
    list.as_array().unwrap().last().cloned().unwrap()
}
