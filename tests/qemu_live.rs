//! The recovery image in QEMU (TCG): rewind as PID 1 recovers a blank virtio
//! disk from a server on the host, and the host checks the disk against the
//! capture: partition table, blkid (UUIDs, labels, types), every file's
//! content and metadata (rsync and a stat dump as oracles).
//!
//! Needs root (loop devices) and REWIND_IMAGE=target/image (scripts/build-image);
//! skipped otherwise, failed instead with REWIND_REQUIRE_QEMU_TESTS=1. One VM
//! at a time. Every console goes to REWIND_QEMU_LOGS (default
//! target/qemu-logs/) for the post-mortem.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod qemu_util;
mod server_util;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    LoopDisk, Mounted, SfdiskDump, assert_same_tree, blkid_export, noise, sfdisk_dump, sh,
    stat_dump,
};
use qemu_util::{Boot, Image, Qemu, all_zero, stages};
use server_util::{ServerProc, printed_recovery_token, rewind_ok};

const HOST: &str = "qemu-src";
const DISK_MIB: u64 = 640;
/// The guest's NIC when no captured MAC is used.
const OTHER_MAC: &str = "52:54:00:ab:cd:ef";
/// Generous limits: TCG on a busy 2-core machine.
const BOOT: Duration = Duration::from_secs(180);
const RECOVERY: Duration = Duration::from_secs(900);

/// Every stage's name, in order, as the console spells it.
fn all_stages() -> Vec<&'static str> {
    rewind::stage::Stage::ALL.map(|s| s.as_str()).to_vec()
}

fn logs_dir() -> PathBuf {
    let d = std::env::var_os("REWIND_QEMU_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/qemu-logs"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A captured machine: a GPT disk with vfat, ext4 (with xfs mounted inside)
/// and swap, a few thousand files, captured to a server on 127.0.0.1.
struct Source {
    dir: tempfile::TempDir,
    image: PathBuf,
    server: ServerProc,
    /// The table of the captured disk.
    table: SfdiskDump,
    /// blkid of each partition at capture time.
    blkid: BTreeMap<u32, BTreeMap<String, String>>,
    /// A MAC address of the captured machine (the guest borrows it to be
    /// identified), if the build machine has one.
    mac: Option<String>,
    /// Bytes of file data captured.
    bytes: u64,
}

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn fill_root(root: &Path) -> u64 {
    let mut bytes = 0u64;
    let mut put = |rel: &str, data: Vec<u8>| {
        bytes += data.len() as u64;
        write(&root.join(rel), &data);
    };
    put("etc/hostname", format!("{HOST}\n").into_bytes());
    put("etc/motd", b"recovered by rewind\n".to_vec());
    for i in 0..1500u64 {
        let len = (i * 7919 % 6000) as usize;
        put(
            &format!("usr/share/doc/pkg{}/file{i}.txt", i % 37),
            noise(i, len),
        );
    }
    for i in 0..6u64 {
        put(
            &format!("usr/bin/tool{i}"),
            noise(1000 + i, (1 + i as usize) << 20),
        );
    }
    // A file with holes: data at 0 and at 6 MiB, 10 MiB long.
    let sparse = root.join("var/lib/sparse.img");
    std::fs::create_dir_all(sparse.parent().unwrap()).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.write_all_at(&noise(7, 65536), 0).unwrap();
        f.write_all_at(&noise(8, 65536), 6 << 20).unwrap();
        f.set_len(10 << 20).unwrap();
        bytes += 2 * 65536;
    }
    std::os::unix::fs::symlink("../share/doc", root.join("usr/bin/doc-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("etc/dangling")).unwrap();
    std::fs::hard_link(root.join("etc/motd"), root.join("etc/motd.hardlink")).unwrap();
    nix::unistd::mkfifo(
        &root.join("var/lib/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    sh(
        "mknod",
        &[
            "-m",
            "600",
            root.join("var/lib/null").to_str().unwrap(),
            "c",
            "1",
            "3",
        ],
    );
    let home = root.join("home/ann");
    std::fs::create_dir_all(&home).unwrap();
    write(&home.join("notes.txt"), b"private\n");
    sh("chown", &["-R", "1000:1000", home.to_str().unwrap()]);
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let suid = root.join("usr/bin/tool0");
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    sh(
        "setfattr",
        &[
            "-n",
            "user.origin",
            "-v",
            "qemu-test",
            root.join("etc/motd").to_str().unwrap(),
        ],
    );
    sh(
        "setfacl",
        &[
            "-m",
            "u:1234:r",
            root.join("usr/bin/tool1").to_str().unwrap(),
        ],
    );
    bytes
}

fn fill_srv(srv: &Path) -> u64 {
    let mut bytes = 0;
    for i in 0..800u64 {
        let data = noise(5000 + i, (i * 104_729 % 9000) as usize);
        bytes += data.len() as u64;
        write(&srv.join(format!("www/site{}/page{i}.html", i % 20)), &data);
    }
    let big = noise(99, 5 << 20);
    bytes += big.len() as u64;
    write(&srv.join("backup/archive.bin"), &big);
    bytes
}

impl Source {
    /// A captured source disk on a plain-HTTP server.
    fn new(image_dir_hint: &str) -> Source {
        Self::with_server(image_dir_hint, false)
    }

    /// A captured source disk; `tls`: on a TLS server the image pins.
    fn with_server(image_dir_hint: &str, tls: bool) -> Source {
        Self::with_server_args(image_dir_hint, tls, &[])
    }

    /// [`Source::with_server`] with more `rewind serve` arguments.
    fn with_server_args(image_dir_hint: &str, tls: bool, serve_args: &[&str]) -> Source {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rewind-qemu-{image_dir_hint}-"))
            .tempdir_in("/var/tmp")
            .unwrap();
        let disk = LoopDisk::new(
            dir.path(),
            "source.img",
            DISK_MIB,
            "label: gpt\n\
             start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI\"\n\
             size=524288, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\"\n\
             size=614400, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"srv\"\n\
             type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name=\"swap\"\n",
        );
        sh("mkfs.vfat", &["-F", "32", "-n", "ESP", &disk.part(1)]);
        sh("mkfs.ext4", &["-q", "-L", "root", &disk.part(2)]);
        sh("mkfs.xfs", &["-q", "-f", "-L", "srv", &disk.part(3)]);
        sh("mkswap", &["-L", "swap", &disk.part(4)]);
        let root = dir.path().join("src");
        std::fs::create_dir_all(&root).unwrap();
        let mut bytes;
        let server;
        {
            let _root = Mounted::new(&disk.part(2), &root, &[]);
            bytes = fill_root(&root);
            let srv = root.join("srv");
            std::fs::create_dir_all(&srv).unwrap();
            let _srv = Mounted::new(&disk.part(3), &srv, &[]);
            bytes += fill_srv(&srv);
            sh("sync", &[]);
            server = ServerProc::start_with(
                &dir.path().join("server"),
                "127.0.0.1:0",
                tls,
                None,
                serve_args,
            );
            let token = server.host_token(HOST);
            rewind_ok(
                &server,
                &token,
                &["capture", "--host", HOST, "--disk", &disk.dev],
            );
        }
        let table = sfdisk_dump(&disk.image);
        let blkid = (1..=4).map(|n| (n, blkid_export(&disk.part(n)))).collect();
        drop(disk);
        let mut s = Source {
            image: dir.path().join("source.img"),
            dir,
            server,
            table,
            blkid,
            mac: None,
            bytes,
        };
        s.mac = s.captured_mac();
        s
    }

    fn captured_mac(&self) -> Option<String> {
        let snaps = self.server.data.join("hosts").join(HOST).join("snapshots");
        let file = std::fs::read_dir(snaps).ok()?.flatten().next()?.path();
        let m = rewind::manifest::from_xml(&std::fs::read_to_string(file).ok()?).ok()?;
        m.network
            .interfaces
            .iter()
            .filter_map(|i| i.mac.as_ref().map(|m| m.to_string()))
            .find(|mac| {
                mac != "00:00:00:00:00:00"
                    && u8::from_str_radix(&mac[..2], 16).is_ok_and(|b| b & 1 == 0)
            })
    }

    /// The server as the guest reaches it (QEMU's user network maps the
    /// host's 127.0.0.1 to 10.0.2.2).
    fn guest_url(&self) -> String {
        self.server.url.replace("127.0.0.1", "10.0.2.2")
    }

    fn blank_disk(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(DISK_MIB << 20).unwrap();
        p
    }

    /// Arm a recovery of the host; returns the recovery token. The guests
    /// are other machines than the build host that was captured: the
    /// request names them as an operator names replacement hardware (the
    /// guest's NIC, and the captured MAC some guests borrow).
    fn arm(&self) -> String {
        let mut args = vec!["request", HOST, "--machine"];
        let other = format!("mac={OTHER_MAC}");
        args.push(&other);
        let captured = self.mac.as_ref().map(|m| format!("mac={m}"));
        if let Some(c) = &captured {
            args.extend(["--machine", c.as_str()]);
        }
        let out = rewind_ok(&self.server, &self.server.admin, &args);
        printed_recovery_token(&out)
    }

    fn boot_token(&self) -> String {
        let out = rewind_ok(
            &self.server,
            &self.server.admin,
            &["token", "create", "--boot"],
        );
        out.lines()
            .find(|l| l.starts_with("rwd_"))
            .expect("no token printed")
            .to_string()
    }

    fn last_request(&self) -> serde_json::Value {
        let list = self
            .server
            .client(&self.server.admin)
            .get_json(&format!("/v1/requests?host={HOST}"))
            .unwrap();
        list.as_array().unwrap().last().cloned().unwrap()
    }

    /// The recovered disk is the captured one: table, blkid, every file.
    fn check_recovered(&self, disk: &Path) {
        let got = sfdisk_dump(disk);
        assert_eq!(got, self.table, "partition table differs");
        let target = LoopDisk::attach_partitioned(disk);
        for (n, want) in &self.blkid {
            let got = blkid_export(&target.part(*n));
            assert_eq!(&got, want, "blkid of partition {n} differs");
        }
        let source = LoopDisk::attach_partitioned(&self.image);
        let a = self.dir.path().join("cmp-src");
        let b = self.dir.path().join("cmp-dst");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let _ra = Mounted::new(&source.part(2), &a, &["ro,noatime"]);
        let _sa = Mounted::new(&source.part(3), &a.join("srv"), &["ro,noatime,nouuid"]);
        let _rb = Mounted::new(&target.part(2), &b, &["ro,noatime"]);
        let _sb = Mounted::new(&target.part(3), &b.join("srv"), &["ro,noatime,nouuid"]);
        assert_same_tree(&a, &b);
        let (da, db) = (stat_dump(&a), stat_dump(&b));
        assert!(
            da.len() > 2000,
            "the source tree is too small: {}",
            da.len()
        );
        let differing: Vec<String> = da
            .iter()
            .zip(&db)
            .filter(|(x, y)| x != y)
            .take(10)
            .map(|(x, y)| format!("  {x}\n  {y}"))
            .collect();
        assert!(
            da.len() == db.len() && differing.is_empty(),
            "stat dumps differ ({} vs {} entries):\n{}",
            da.len(),
            db.len(),
            differing.join("\n")
        );
    }
}

/// The image's settings; its servers here are plain HTTP (`ServerProc`
/// without TLS), which the image accepts only with `rewind.insecure=1`.
fn cmdline(extra: &str) -> String {
    format!(
        "console=ttyS0,115200 rewind.done=poweroff rewind.onfail=poweroff rewind.insecure=1 {extra}"
    )
}

/// Follow a recovery on the console from its fetch stage to its power-off;
/// returns the seconds from start to the fetch stage and to the end.
fn follow_recovery(vm: &mut Qemu) -> (f64, f64) {
    let fetch = vm.expect("rewind: == stage fetch ==", BOOT);
    follow_after_fetch(vm);
    (fetch, vm.elapsed().as_secs_f64())
}

/// From the fetch stage (seen) to the power-off.
fn follow_after_fetch(vm: &mut Qemu) {
    for s in ["plan", "partition", "format", "mount", "restore"] {
        vm.expect(&format!("rewind: == stage {s} =="), RECOVERY);
    }
    for s in ["configure", "bootloader", "finish"] {
        vm.expect(&format!("rewind: == stage {s} =="), RECOVERY);
    }
    vm.expect("rewind: powering off", Duration::from_secs(120));
    let status = vm.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "QEMU: {status}");
    let console = vm.console();
    let seen = stages(&console);
    let all = all_stages();
    let firsts: Vec<&str> = all
        .iter()
        .copied()
        .filter(|s| seen.iter().any(|x| x == s))
        .collect();
    assert_eq!(firsts, all, "stages seen: {seen:?}");
    let mut last = 0;
    for s in all {
        let i = seen.iter().rposition(|x| x == s).unwrap();
        assert!(i >= last, "stage {s} out of order: {seen:?}");
        last = i;
    }
    assert!(
        !console.contains("Kernel panic"),
        "kernel panic:\n{console}"
    );
    assert!(!console.contains("FAILED"));
}

#[test]
fn shell_on_request_then_poweroff() {
    let Some(img) = Image::get("shell_on_request_then_poweroff") else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let log = logs_dir().join("shell.log");
    let mut vm = Qemu::start(
        Boot::Direct(&img, cmdline("rewind.action=shell")),
        &[&disk],
        OTHER_MAC,
        &log,
    );
    let t = vm.expect("emergency shell on /dev/ttyS0", BOOT);
    eprintln!("shell after {t:.1} s");
    std::thread::sleep(Duration::from_secs(2));
    vm.type_line("echo marker-$((6*7)); ls /sys/block; cat /proc/1/comm");
    vm.expect("marker-42", Duration::from_secs(60));
    vm.expect("vda", Duration::from_secs(30));
    vm.type_line("modprobe fs-vfat && grep -c vfat /proc/filesystems");
    vm.expect("\n1", Duration::from_secs(60));
    vm.type_line("exit");
    vm.expect("starting another", Duration::from_secs(30));
    vm.type_line("poweroff");
    vm.expect("rewind: powering off", Duration::from_secs(60));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    assert!(!vm.console().contains("Kernel panic"));
}

#[test]
fn recovers_a_blank_disk_after_waiting_for_a_request() {
    let Some(img) = Image::get("recovers_a_blank_disk_after_waiting_for_a_request") else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let src = Source::new("wait");
    let Some(mac) = src.mac.clone() else {
        panic!("the captured manifest has no MAC address to identify the guest by");
    };
    let boot_token = src.boot_token();
    let disk = src.blank_disk("target.img");
    let log = logs_dir().join("wait-then-recover.log");
    let mut vm = Qemu::start(
        Boot::Direct(
            &img,
            cmdline(&format!(
                "rewind.server={} rewind.token={boot_token} rewind.poll=2",
                src.guest_url()
            )),
        ),
        &[&disk],
        &mac,
        &log,
    );
    let t_fetch = vm.expect("rewind: == stage fetch ==", BOOT);
    vm.expect(&format!("no recovery request is armed for {HOST}"), BOOT);
    // Nothing was written while waiting.
    std::thread::sleep(Duration::from_secs(5));
    assert!(all_zero(&disk), "the disk was written without a request");
    let waited = Instant::now();
    src.arm();
    vm.expect("rewind: == stage fetch ==", Duration::from_secs(60));
    vm.expect("recovery request req-", Duration::from_secs(60));
    follow_after_fetch(&mut vm);
    let total = vm.elapsed().as_secs_f64();
    eprintln!(
        "direct boot: fetch stage after {t_fetch:.1} s; recovery armed after waiting, \
         done {:.1} s later ({total:.1} s in all) for {} MiB of files",
        waited.elapsed().as_secs_f64(),
        src.bytes >> 20
    );
    src.check_recovered(&disk);
    let req = src.last_request();
    assert_eq!(req["state"], "succeeded", "{req}");
}

#[test]
fn failures_name_their_stage_and_leave_the_disk_alone() {
    let Some(img) = Image::get("failures_name_their_stage_and_leave_the_disk_alone") else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let src = Source::new("fail");
    let disk = src.blank_disk("target.img");

    // A wrong token: the fetch stage says so, nothing is written.
    let log = logs_dir().join("fail-token.log");
    let mut vm = Qemu::start(
        Boot::Direct(
            &img,
            cmdline(&format!(
                "rewind.server={} rewind.token=rwd_0000000000000000_00",
                src.guest_url()
            )),
        ),
        &[&disk],
        OTHER_MAC,
        &log,
    );
    vm.expect("recovery FAILED in stage fetch", BOOT);
    vm.expect("unknown or revoked token", Duration::from_secs(5));
    vm.expect("rewind: powering off", Duration::from_secs(60));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    assert!(all_zero(&disk));
    drop(vm);

    // An unreachable server.
    let log = logs_dir().join("fail-unreachable.log");
    let mut vm = Qemu::start(
        Boot::Direct(
            &img,
            cmdline("rewind.server=http://10.0.2.2:9 rewind.token=rwd_x rewind.retry=5"),
        ),
        &[&disk],
        OTHER_MAC,
        &log,
    );
    vm.expect("recovery FAILED in stage fetch", BOOT);
    vm.expect("did not answer", Duration::from_secs(5));
    assert!(vm.wait_exit(Duration::from_secs(120)).success());
    assert!(all_zero(&disk));
    drop(vm);

    // A damaged chunk: the restore stage fails, names the chunk, and the
    // server hears of it.
    let packs = src.server.data.join("hosts").join(HOST).join("packs");
    let mut damaged = 0;
    for sub in std::fs::read_dir(&packs).unwrap().flatten() {
        for p in std::fs::read_dir(sub.path()).unwrap().flatten() {
            let path = p.path();
            let len = std::fs::metadata(&path).unwrap().len();
            if len > 1 << 20 {
                use std::os::unix::fs::FileExt;
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.write_all_at(b"DAMAGE", len / 3).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0, "no pack to damage");
    let token = src.arm();
    let log = logs_dir().join("fail-chunk.log");
    let mut vm = Qemu::start(
        Boot::Direct(
            &img,
            cmdline(&format!(
                "rewind.server={} rewind.token={token}",
                src.guest_url()
            )),
        ),
        &[&disk],
        OTHER_MAC,
        &log,
    );
    vm.expect("rewind: == stage restore ==", RECOVERY);
    vm.expect("recovery FAILED in stage restore", RECOVERY);
    vm.expect(
        "the failure was reported to the server",
        Duration::from_secs(60),
    );
    assert!(vm.wait_exit(Duration::from_secs(120)).success());
    let console = vm.console();
    assert!(
        console.contains("damaged") || console.contains("does not decompress"),
        "the error does not name the damage:\n{console}"
    );
    let req = src.last_request();
    assert_eq!(req["state"], "failed", "{req}");
    assert!(
        req["result"]
            .as_str()
            .unwrap_or("")
            .starts_with("restore: "),
        "{req}"
    );
    // The disk is as the restore stage left it: partitioned and formatted.
    assert_eq!(sfdisk_dump(&disk), src.table);
}

#[test]
fn iso_recovers_under_seabios_and_ovmf() {
    let Some(img) = Image::get("iso_recovers_under_seabios_and_ovmf") else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let src = Source::new("iso");
    // OVMF with Secure Boot enforced and Microsoft's keys, as PCs ship:
    // the ISO's shim, GRUB and kernel are Debian's signed ones.
    for (firmware, uefi) in [("seabios", false), ("ovmf-secureboot", true)] {
        let token = src.arm();
        let iso = src.dir.path().join(format!("{firmware}.iso"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image");
        let out = std::process::Command::new(&script)
            .args(["--out", img.dir.to_str().unwrap(), "--iso-only", "--iso"])
            .arg(&iso)
            .args([
                "--cmdline",
                &format!(
                    "rewind.server={} rewind.token={token} rewind.done=poweroff rewind.onfail=poweroff {}",
                    src.guest_url(),
                    src.server.image_trust()
                ),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build-image --iso-only: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let disk = src.blank_disk(&format!("{firmware}.img"));
        let log = logs_dir().join(format!("iso-{firmware}.log"));
        let boot = if uefi {
            Boot::IsoUefiSecure(&iso)
        } else {
            Boot::IsoBios(&iso)
        };
        let mut vm = Qemu::start(boot, &[&disk], OTHER_MAC, &log);
        let (fetch, total) = follow_recovery(&mut vm);
        eprintln!(
            "ISO under {firmware}: fetch stage after {fetch:.1} s, powered off after {total:.1} s"
        );
        let expected = if uefi {
            "rewind: firmware: UEFI, Secure Boot on"
        } else {
            "rewind: firmware: BIOS"
        };
        assert!(
            vm.console().contains(expected),
            "the console does not say {expected:?} (log: {})",
            log.display()
        );
        src.check_recovered(&disk);
        assert_eq!(src.last_request()["state"], "succeeded");
    }
}

#[test]
fn pxe_boots_through_the_servers_ipxe_script() {
    let Some(img) = Image::get("pxe_boots_through_the_servers_ipxe_script") else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let src = Source::new("pxe");
    let Some(mac) = src.mac.clone() else {
        panic!("the captured manifest has no MAC address to identify the guest by");
    };
    // The PXE assets, as scripts/build-image leaves them in target/image/pxe/.
    let boot = src.server.data.join("boot");
    std::fs::copy(&img.kernel, boot.join("vmlinuz")).unwrap();
    std::fs::copy(&img.initrd, boot.join("initrd.img")).unwrap();
    std::fs::write(
        boot.join("cmdline"),
        format!(
            "console=ttyS0,115200 no_timer_check rewind.done=poweroff rewind.onfail=poweroff {}\n",
            src.server.image_trust()
        ),
    )
    .unwrap();
    let boot_token = src.boot_token();
    src.arm();
    // What a site's DHCP/TFTP would hand out: chain to the server.
    let tftp = src.dir.path().join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::write(
        tftp.join("rewind.ipxe"),
        format!(
            "#!ipxe\nchain {}/boot/ipxe?mac=${{net0/mac}}&token={boot_token}\n",
            src.guest_url()
        ),
    )
    .unwrap();
    let disk = src.blank_disk("target.img");
    let log = logs_dir().join("pxe.log");
    let pxe = Boot::Pxe {
        tftp: &tftp,
        bootfile: "rewind.ipxe",
    };
    let mut vm = Qemu::start(pxe, &[&disk], &mac, &log);
    vm.expect_on_wire(&format!("echo rewind: recovering {HOST}"), BOOT);
    // The kernel got its settings from the server's script.
    vm.expect("rewind.host=qemu-src", BOOT);
    let (fetch, total) = follow_recovery(&mut vm);
    eprintln!("PXE: fetch stage after {fetch:.1} s, powered off after {total:.1} s");
    drop(vm);
    src.check_recovered(&disk);
    assert_eq!(src.last_request()["state"], "succeeded");

    // Booted again, the machine is told there is nothing to recover: iPXE
    // exits and the firmware goes on to the next boot device.
    let log = logs_dir().join("pxe-after.log");
    let pxe = Boot::Pxe {
        tftp: &tftp,
        bootfile: "rewind.ipxe",
    };
    let mut vm = Qemu::start(pxe, &[&disk], &mac, &log);
    vm.expect_on_wire(
        &format!("echo rewind: no recovery is armed for {HOST}"),
        BOOT,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !vm.console().contains("Linux version"),
        "a recovered machine booted the recovery image again"
    );
}

/// PXE under UEFI Secure Boot (OVMF enforcing, Microsoft's keys, the
/// firmware's own PXE and no option ROM): the firmware loads Debian's
/// signed shim over TFTP, shim Debian's signed netboot GRUB, GRUB reads
/// `grub/grub.cfg`, asks for this machine's script by MAC and SMBIOS UUID,
/// and loads the signed kernel (verified through shim) and the initrd; the
/// image then recovers against the TLS API, pinned. Every file is what the
/// server's TFTP listener (`serve --boot-tftp`) answers; the guest reaches
/// them through QEMU's own TFTP server (its user network answers every
/// TFTP packet to 10.0.2.2 itself), so the test copies them there as a
/// site's TFTP mirror would, naming the script as GRUB asks for it.
#[test]
fn pxe_under_secure_boot_through_signed_shim_and_grub() {
    use qemu_util::{Disk, Firmware, Nic};
    let Some(img) = Image::get("pxe_under_secure_boot_through_signed_shim_and_grub") else {
        return;
    };
    let signed = img.dir.join("tftp-efi");
    assert!(
        signed.join("grubx64.efi").exists(),
        "no {}/grubx64.efi: rebuild the image (scripts/build-image)",
        signed.display()
    );
    let _vm_lock = qemu_util::one_vm();
    let tftp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tftp_addr = format!("127.0.0.1:{tftp_port}");
    let src = Source::with_server_args("pxe-sb", true, &["--boot-tftp", &tftp_addr]);
    let boot_token = src.boot_token();
    let boot = src.server.data.join("boot");
    for f in ["shimx64.efi", "grubx64.efi", "mmx64.efi"] {
        std::fs::copy(signed.join(f), boot.join(f)).unwrap();
    }
    std::fs::copy(&img.kernel, boot.join("vmlinuz")).unwrap();
    std::fs::copy(&img.initrd, boot.join("initrd.img")).unwrap();
    // No pin here: the server puts its own on the kernel line and in the
    // initrd it serves. The boot token, as a site gives it over TFTP.
    std::fs::write(
        boot.join("cmdline"),
        format!(
            "console=ttyS0,115200 no_timer_check rewind.done=poweroff rewind.onfail=poweroff \
             rewind.token={boot_token}\n"
        ),
    )
    .unwrap();
    src.arm();

    const UUID: &str = "5a1e0b0e-7e57-4c0d-9e5a-000000000014";
    let tftp = src.dir.path().join("tftp");
    std::fs::create_dir_all(tftp.join("grub")).unwrap();
    std::fs::create_dir_all(tftp.join("rewind")).unwrap();
    let t = Instant::now();
    for f in [
        "shimx64.efi",
        "grubx64.efi",
        "mmx64.efi",
        "grub/grub.cfg",
        "vmlinuz",
        "initrd.img",
    ] {
        let (bytes, size) = server_util::tftp_get(&tftp_addr, f).unwrap();
        assert_eq!(bytes.len() as u64, size, "{f}");
        std::fs::write(tftp.join(f), bytes).unwrap();
    }
    let (script, _) = server_util::tftp_get(
        &tftp_addr,
        &format!("rewind/grub?mac={OTHER_MAC}&uuid={UUID}"),
    )
    .unwrap();
    // The API as the guest reaches it (the host's 127.0.0.1 is its 10.0.2.2).
    let script = String::from_utf8(script)
        .unwrap()
        .replace("127.0.0.1", "10.0.2.2");
    assert!(
        script.contains(&format!("rewind: recovering {HOST}")),
        "{script}"
    );
    // As GRUB asks for it.
    std::fs::write(
        tftp.join(format!("rewind/grub?mac={OTHER_MAC}&uuid={UUID}")),
        &script,
    )
    .unwrap();
    eprintln!(
        "the TFTP tree from the server's TFTP listener in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let disk = src.blank_disk("target.img");
    let log = logs_dir().join("pxe-secureboot.log");
    let vars = log.with_extension("ovmf-vars.fd");
    qemu_util::fresh_secure_boot_vars(&vars);
    let t = Instant::now();
    let mut vm = Qemu::start_with_extra(
        Boot::Pxe {
            tftp: &tftp,
            bootfile: "shimx64.efi",
        },
        Firmware::UefiSecureBoot { vars: &vars },
        &[Disk {
            path: &disk,
            serial: None,
            bus: qemu_util::Bus::Virtio,
        }],
        Nic::virtio(OTHER_MAC),
        &log,
        &["-uuid", UUID],
    );
    // GRUB asks by the NIC's MAC and the SMBIOS UUID (as Linux spells it;
    // GRUB's console wraps the line at 80 columns). OVMF's start and its
    // PXE are slow under TCG on a loaded machine (122 s to GRUB's answer
    // once; nothing on the console for 180 s another time).
    vm.expect(
        &format!("rewind: asking the recovery server for mac={OTHER_MAC}"),
        BOOT * 2,
    );
    vm.expect(&format!("uuid={UUID}"), BOOT);
    let grub = vm.expect(&format!("rewind: recovering {HOST}"), BOOT);
    vm.expect("rewind: firmware: UEFI, Secure Boot on", BOOT);
    let (fetch, total) = follow_recovery(&mut vm);
    eprintln!(
        "PXE under Secure Boot: GRUB had the server's script after {grub:.1} s, fetch stage \
         after {fetch:.1} s, powered off after {total:.1} s ({:.1} s in all)",
        t.elapsed().as_secs_f64()
    );
    let console = vm.console();
    // The kernel line came from the server: its API (TLS), and its pin.
    let pin = src.server.pin.clone().unwrap();
    for want in [
        format!("rewind.server={} ", src.guest_url()),
        format!("rewind.pin={pin}"),
    ] {
        assert!(console.contains(&want), "the kernel line has no {want:?}");
    }
    drop(vm);
    src.check_recovered(&disk);
    assert_eq!(src.last_request()["state"], "succeeded");
}

/// Choosing disks unattended, in the live image: with the recovery ISO
/// written to a second virtual disk, a disk holding a filesystem and two
/// SCSI disks with one WWN (two paths to one LUN), every disk is big
/// enough and none may be chosen: the plan stage stops, names each disk
/// and why, and nothing is written. With `rewind.overwrite=any` the plan
/// takes the disk that is not blank, and still none of the others.
#[test]
fn the_plan_never_takes_the_boot_medium_a_lun_twice_or_a_used_disk() {
    use qemu_util::{Bus, Disk, Firmware, Nic};
    let Some(img) = Image::get("the_plan_never_takes_the_boot_medium_a_lun_twice_or_a_used_disk")
    else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let src = Source::new("choose");
    let iso = src.dir.path().join("iso-disk.img");
    std::fs::copy(img.dir.join("rewind.iso"), &iso).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&iso)
        .unwrap()
        .set_len(DISK_MIB << 20)
        .unwrap();
    let used = src.blank_disk("used.img");
    sh(
        "mkfs.ext4",
        &["-q", "-F", "-L", "old-data", used.to_str().unwrap()],
    );
    let lun_a = src.blank_disk("lun-a.img");
    let lun_b = src.blank_disk("lun-b.img");
    let files = [&iso, &used, &lun_a, &lun_b];
    let before: Vec<blake3::Hash> = files
        .iter()
        .map(|f| blake3::hash(&std::fs::read(f).unwrap()))
        .collect();
    let wwn = Some(0x5000_c500_a1b2_c3d4);
    let disks = [
        Disk {
            path: &iso,
            serial: None,
            bus: Bus::Virtio,
        },
        Disk {
            path: &used,
            serial: None,
            bus: Bus::Virtio,
        },
        Disk {
            path: &lun_a,
            serial: None,
            bus: Bus::Scsi(wwn),
        },
        Disk {
            path: &lun_b,
            serial: None,
            bus: Bus::Scsi(wwn),
        },
    ];

    let token = src.arm();
    let log = logs_dir().join("choose-refused.log");
    let t = Instant::now();
    let mut vm = Qemu::start_with(
        Boot::Direct(
            &img,
            cmdline(&format!(
                "rewind.server={} rewind.token={token}",
                src.guest_url()
            )),
        ),
        Firmware::Bios,
        &disks,
        Nic::virtio(OTHER_MAC),
        &log,
    );
    vm.expect("recovery FAILED in stage plan", BOOT);
    vm.expect("rewind: powering off", Duration::from_secs(60));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    let console = vm.console();
    eprintln!("refused in {:.1} s", t.elapsed().as_secs_f64());
    let image_id = std::fs::read_to_string(img.dir.join("image-id")).unwrap();
    for want in [
        format!(
            "/dev/vda (640.0 MiB): in use: it holds the recovery image this machine booted from \
             (/dev/vda: ISO 9660 volume set {}, this image's identity)",
            image_id.trim()
        ),
        "/dev/vdb (640.0 MiB): not blank (ext4, label \"old-data\") and not matched by serial or WWN"
            .to_string(),
        "/dev/sda (640.0 MiB): in use: one of 2 paths to one LUN (WWN ".to_string(),
        "/dev/sdb (640.0 MiB): in use: one of 2 paths to one LUN (WWN ".to_string(),
        ": /dev/sda, /dev/sdb) with no multipath device over them".to_string(),
    ] {
        assert!(console.contains(&want), "missing {want:?} in:\n{console}");
    }
    assert!(!console.contains("== stage partition =="));
    drop(vm);
    let after: Vec<blake3::Hash> = files
        .iter()
        .map(|f| blake3::hash(&std::fs::read(f).unwrap()))
        .collect();
    assert_eq!(before, after, "a disk was written");

    // With the switch the disk holding a filesystem may be taken; the plan
    // is shown and nothing written (rewind.action=plan).
    let token = src.arm();
    let log = logs_dir().join("choose-overwrite.log");
    let mut vm = Qemu::start_with(
        Boot::Direct(
            &img,
            cmdline(&format!(
                "rewind.server={} rewind.token={token} rewind.action=plan rewind.overwrite=any",
                src.guest_url()
            )),
        ),
        Firmware::Bios,
        &disks,
        Nic::virtio(OTHER_MAC),
        &log,
    );
    vm.expect("-> /dev/vdb (640.0 MiB): same size", BOOT);
    vm.expect("plan only (rewind.action=plan): nothing was written", BOOT);
    eprintln!("both boots in {:.1} s", t.elapsed().as_secs_f64());
    drop(vm);
    let after: Vec<blake3::Hash> = files
        .iter()
        .map(|f| blake3::hash(&std::fs::read(f).unwrap()))
        .collect();
    assert_eq!(before, after, "a disk was written by a plan");
}

/// A machine whose CMOS battery is dead (QEMU's RTC starts in 2001):
/// the image sets its clock from the pinned server (TLS: a pinned
/// connection needs no date check) before anything talks to the server or
/// writes a disk, the recreated filesystems get today's date, and the
/// hardware clock is written as the restored system keeps it (UTC: the
/// source has no /etc/adjtime) and read back right.
#[test]
fn a_dead_cmos_clock_is_set_from_the_pinned_server() {
    let Some(img) = Image::get("a_dead_cmos_clock_is_set_from_the_pinned_server") else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let src = Source::with_server("clock", true);
    assert!(src.guest_url().starts_with("https://"));
    let token = src.arm();
    let disk = src.blank_disk("clock.img");
    let log = logs_dir().join("clock-2001.log");
    let year = &rewind::time::now_utc()[..4];
    let mut vm = Qemu::start_extra(
        Boot::Direct(
            &img,
            cmdline(&format!(
                "rewind.server={} rewind.token={token} {}",
                src.guest_url(),
                src.server.image_trust()
            )),
        ),
        &[&disk],
        OTHER_MAC,
        &log,
        &["-rtc", "base=2001-01-01"],
    );
    vm.expect("clock set from the server: 2001-", BOOT);
    let (_, total) = follow_recovery(&mut vm);
    let console = vm.console();
    let set = console
        .lines()
        .find(|l| l.contains("clock set from the server"))
        .unwrap();
    assert!(set.contains(&format!("-> {year}-")), "{set}");
    let rtc = console
        .lines()
        .find(|l| l.contains("hardware clock written in UTC"))
        .unwrap_or_else(|| panic!("no hardware clock line:\n{console}"));
    assert!(rtc.contains(year), "the RTC reads back today: {rtc}");
    eprintln!("recovery with a 2001 clock: powered off after {total:.1} s; {set}; {rtc}");
    src.check_recovered(&disk);
    // The recreated filesystem was made today, not in 2001.
    let target = LoopDisk::attach_partitioned(&disk);
    let created = sh("dumpe2fs", &["-h", &target.part(2)]);
    let line = created
        .lines()
        .find(|l| l.starts_with("Filesystem created:"))
        .unwrap();
    assert!(line.trim_end().ends_with(year), "{line}");
}
