//! Tier 3 (root, QEMU, REWIND_IMAGE): a recovery survives a power cut and a
//! long server outage without starting over (issue 15, point 4).
//!
//! 1. The recovery image restores a captured machine onto a blank disk;
//!    at about 60% of its restore QEMU is killed (a power cut: what QEMU had
//!    not written to the disk file is lost, as a disk's cache would be).
//! 2. QEMU boots again on the same disk with the same token: the image
//!    claims the request again (the same machine: renewed), finds the layout
//!    already there and verified, skips partitioning and formatting, and
//!    restores only what its journal and the disk do not vouch for.
//! 3. As that restore starts, the server is stopped for several minutes
//!    (`REWIND_RESUME_OUTAGE_SECS`, 240 by default) — four times the
//!    image's own retry window, `rewind.retry=60` — and started again: the
//!    image waits (until the request expires) and completes.
//!
//! The host then checks the disk: partition table and every filesystem's
//! UUID as after the first boot's partitioning (the table, blkid), and the
//! restored tree exact against the source (rsync --checksum and a stat
//! dump); the request succeeded and its report says it resumed.
//!
//!     REWIND_IMAGE=target/image cargo test --test qemu_resume -- --nocapture

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod qemu_util;
mod server_util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    LoopDisk, Mounted, assert_same_tree, blkid_export, esp_root_swap_disk, noise, sfdisk_dump, sh,
    stat_dump,
};
use qemu_util::{Boot, Image, Qemu};
use server_util::{ServerProc, arm_for_guest, rewind_ok};

const HOST: &str = "qemu-resume";
const DISK_MIB: u64 = 768;
const MAC: &str = "52:54:00:ab:cd:15";
const BOOT: Duration = Duration::from_secs(240);
const RECOVERY: Duration = Duration::from_secs(1200);

fn logs_dir() -> PathBuf {
    let d = std::env::var_os("REWIND_QEMU_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/qemu-logs"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A root filesystem of about 200 MiB: big files (so that 60% of the
/// restore lasts long enough to be caught) and many small ones.
fn fill(root: &Path) -> u64 {
    let mut bytes = 0u64;
    let mut put = |rel: &str, data: Vec<u8>| {
        bytes += data.len() as u64;
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    put("etc/hostname", format!("{HOST}\n").into_bytes());
    for i in 0..180u64 {
        put(
            &format!("var/lib/blobs/b{}/blob{i}.bin", i % 9),
            noise(70_000 + i, (1 << 20) + (i as usize * 4099) % 65536),
        );
    }
    for i in 0..1200u64 {
        put(
            &format!("usr/share/doc/pkg{}/file{i}.txt", i % 31),
            noise(i, (i * 7919 % 9000) as usize),
        );
    }
    std::fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.link")).unwrap();
    std::os::unix::fs::symlink("../share/doc", root.join("usr/share/doc-link")).unwrap();
    bytes
}

/// How far the restore is, in percent, as the image reported it to the
/// server (the console's progress line is redrawn in place: the test's
/// console reader sees it only at its end).
fn restore_percent(server: &ServerProc) -> Option<u64> {
    let list = server
        .client(&server.admin)
        .get_json(&format!("/v1/requests?host={HOST}"))
        .ok()?;
    let p = &list.as_array()?.last()?["progress"];
    if p["stage"] != "restore" {
        return None;
    }
    let (done, total) = (p["bytes_done"].as_u64()?, p["bytes_total"].as_u64()?);
    (total > 0).then(|| done * 100 / total)
}

#[test]
fn a_recovery_resumes_after_a_power_cut_and_waits_out_a_server_outage() {
    let Some(img) =
        Image::get("a_recovery_resumes_after_a_power_cut_and_waits_out_a_server_outage")
    else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let outage = Duration::from_secs(
        std::env::var("REWIND_RESUME_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(240),
    );
    let dir = tempfile::Builder::new()
        .prefix("rewind-qemu-resume-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let t0 = Instant::now();

    // The captured machine.
    let disk = esp_root_swap_disk(dir.path(), DISK_MIB);
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut server;
    let bytes;
    {
        let _m = Mounted::new(&disk.part(2), &src, &[]);
        bytes = fill(&src);
        sh("sync", &[]);
        server = ServerProc::start(&dir.path().join("server"), false);
        let token = server.host_token(HOST);
        rewind_ok(
            &server,
            &token,
            &["capture", "--host", HOST, "--disk", &disk.dev],
        );
    }
    let source_table = sfdisk_dump(&disk.image);
    let source_blkid: Vec<_> = (1..=3).map(|n| blkid_export(&disk.part(n))).collect();
    drop(disk);
    eprintln!(
        "captured {} MiB of files in {:.0} s",
        bytes >> 20,
        t0.elapsed().as_secs_f64()
    );

    // Armed for this guest (its NIC), with its recovery token.
    let cmdline = arm_for_guest(&server, HOST, MAC);
    let target = dir.path().join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(DISK_MIB << 20)
        .unwrap();

    // 1. Cut at about 60% of the restore.
    let log1 = logs_dir().join("resume-1-cut.log");
    let mut vm = Qemu::start(Boot::Direct(&img, cmdline.clone()), &[&target], MAC, &log1);
    vm.expect("rewind: == stage partition ==", BOOT);
    vm.expect("rewind: == stage restore ==", RECOVERY);
    let restore_from = vm.console().len();
    let restore_started = Instant::now();
    let cut_at = loop {
        let c = vm.console();
        if let Some(p) = restore_percent(&server)
            && p >= 60
        {
            break p;
        }
        assert!(
            !c[restore_from..].contains("== stage configure =="),
            "the restore ended before 60% was seen:\n{}",
            &c[restore_from..]
        );
        assert!(
            restore_started.elapsed() < RECOVERY,
            "no 60% in the restore"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    vm.kill();
    let first_run = vm.console();
    assert!(
        !first_run.contains("rewind: resuming:"),
        "the first run resumed"
    );
    eprintln!(
        "power cut at {cut_at}% of the restore, {:.0} s into it ({:.0} s into the boot)",
        restore_started.elapsed().as_secs_f64(),
        vm.elapsed().as_secs_f64()
    );
    drop(vm);
    // The layout the first run made (the captured one).
    let after_cut = sfdisk_dump(&target);
    assert_eq!(after_cut, source_table, "the first run's partition table");

    // 2. The same machine boots again: it resumes.
    let log2 = logs_dir().join("resume-2-resumed.log");
    let mut vm = Qemu::start(Boot::Direct(&img, cmdline), &[&target], MAC, &log2);
    let t_boot2 = Instant::now();
    vm.expect("the claim is renewed", BOOT);
    vm.expect(
        "an unreachable server is waited for until the request expires",
        RECOVERY,
    );
    vm.expect("resuming: layout verified, ", RECOVERY);
    vm.expect("rewind: == stage partition ==", RECOVERY);
    vm.expect("resuming: partitioning skipped", RECOVERY);
    vm.expect("resuming: formatting skipped", RECOVERY);
    vm.expect("rewind: == stage restore ==", RECOVERY);

    // 3. The server goes away as the restore starts, for longer than the
    // image's retry window, and comes back.
    server.kill();
    let down = Instant::now();
    eprintln!("server stopped for {} s", outage.as_secs());
    while down.elapsed() < outage {
        std::thread::sleep(Duration::from_secs(5));
        let c = vm.console();
        assert!(
            !c.contains("FAILED") && !c.contains("powering off"),
            "the recovery gave up while the server was away:\n{}",
            &c[c.len().saturating_sub(3000)..]
        );
    }
    server.restart();
    eprintln!("server back after {:.0} s", down.elapsed().as_secs_f64());
    for s in ["configure", "bootloader", "finish"] {
        vm.expect(&format!("rewind: == stage {s} =="), RECOVERY);
    }
    vm.expect("rewind: powering off", Duration::from_secs(300));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    let second = vm.console();
    assert!(!second.contains("FAILED"), "{second}");
    assert!(!second.contains("Kernel panic"));
    assert!(
        !second.contains("table written"),
        "the resumed run partitioned again"
    );
    let recorded: u64 = second
        .split("resuming: layout verified, ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let kept: u64 = second
        .split("recorded files verified and kept")
        .next()
        .and_then(|t| t.rsplit(": ").next())
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        recorded > 0 && kept > 0 && kept <= recorded,
        "{recorded} {kept}"
    );
    eprintln!(
        "resumed: {recorded} files recorded, {kept} verified and kept; second boot {:.0} s",
        t_boot2.elapsed().as_secs_f64()
    );

    // The disk: the layout as made by the first run, the tree exact.
    assert_eq!(sfdisk_dump(&target), source_table, "partition table");
    let t = LoopDisk::attach_partitioned(&target);
    for (i, want) in source_blkid.iter().enumerate() {
        let n = i as u32 + 1;
        assert_eq!(&blkid_export(&t.part(n)), want, "blkid of partition {n}");
    }
    let s = LoopDisk::attach_partitioned(&dir.path().join("source.img"));
    let (a, b) = (dir.path().join("cmp-src"), dir.path().join("cmp-dst"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let _ma = Mounted::new(&s.part(2), &a, &["ro,noatime"]);
    let _mb = Mounted::new(&t.part(2), &b, &["ro,noatime"]);
    assert_same_tree(&a, &b);
    let (da, db) = (stat_dump(&a), stat_dump(&b));
    assert!(da.len() > 1000);
    assert_eq!(da, db, "stat dumps differ");

    let list = server
        .client(&server.admin)
        .get_json(&format!("/v1/requests?host={HOST}"))
        .unwrap();
    let req = list.as_array().unwrap().last().cloned().unwrap();
    assert_eq!(req["state"], "succeeded", "{req}");
    assert!(
        req.to_string().contains("resumed an interrupted recovery"),
        "the report does not say it resumed: {req}"
    );
    eprintln!("done in {:.0} s in all", t0.elapsed().as_secs_f64());
}
