//! Tier 3 (root, QEMU, REWIND_IMAGE): a recovery survives a power cut and a
//! long server outage without starting over (issue 15, point 4), on a
//! layout with both kinds of volume: plain partitions of a GPT disk (the
//! root filesystem, 200 MiB of files) and, on two other partitions of it,
//! MD RAID1 → LUKS2 → LVM with a thin pool, whose linear LV holds a
//! second restored filesystem (`/srv`).
//!
//! 1. The recovery image restores a captured machine onto a blank disk;
//!    at about 60% of its restore QEMU is killed (a power cut: what QEMU had
//!    not written to the disk file is lost, as a disk's cache would be).
//! 2. QEMU boots again on the same disk with the same token: the image
//!    claims the request again (the same machine: renewed), finds the layout
//!    already there and verified — the partition tables, then the storage
//!    stack *opened* layer by layer, each checked against the plan (the
//!    array assembled read-only by its UUID, the LUKS header and the
//!    escrowed key, the volume group's reports before activation) — skips
//!    partitioning and formatting, and restores only what its journals and
//!    the disk do not vouch for.
//! 3. As that restore starts, the server is stopped for several minutes
//!    (`REWIND_RESUME_OUTAGE_SECS`, 240 by default) — four times the
//!    image's own retry window, `rewind.retry=60` — and started again: the
//!    image waits (until the request expires) and completes.
//!
//! The host then checks the disk: partition table and every filesystem's
//! UUID as after the first boot's partitioning (the table, blkid), and the
//! restored trees exact against the source (rsync --checksum and a stat
//! dump) — the one on the LV read through the stack by hand, since this
//! host's kernel has no device-mapper: the mirror member's data past the
//! MD data offset and the LUKS header, decrypted (AES-XTS, the escrowed
//! key) at the LV's extents; the request succeeded and its report says it
//! resumed.
//!
//! The stacked manifest is the host's capture with the stack put in: the
//! `/srv` filesystem (captured on partition 4) moved onto `lv/qvg/root`,
//! partitions 4 and 5 made the array's members, the volume group lvm2's
//! own (tests/fixtures/stack/qemu-*, as `qemu_stack` uses it), the volume
//! key escrowed with the server; put as a newer snapshot of the host.
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
    LoopDisk, Mounted, assert_same_tree, blkid_export, noise, sfdisk_dump, sh, stat_dump,
};
use qemu_util::{Boot, Image, Qemu};
use rewind::manifest::StackRef;
use rewind::stack::lvm;
use server_util::{ServerProc, arm_for_guest, put_snapshot_xml, rewind_ok};

const HOST: &str = "qemu-resume";
const MIB: u64 = 1 << 20;
/// ESP 64 MiB, root 400 MiB, swap 32 MiB, two RAID members of 202 MiB.
const DISK_MIB: u64 = 904;
/// Partition 4's first sector (the first member of the array).
const MEMBER_START: u64 = 2048 + 131_072 + 819_200 + 65_536;
const MD_DATA_OFFSET: u64 = MIB;
const MD_SIZE: u64 = 200 * MIB;
const LUKS_OFFSET: u64 = 16 * MIB;
const LUKS_UUID: &str = "c0ffee00-1234-4abc-8def-0123456789ab";
/// `qvg/root`: extents 0-7 of the PV, after its 1 MiB label area.
const LV_PE_START: u64 = MIB;
const LV_SIZE: u64 = 32 * MIB;
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

/// `/srv`: small files and a few of 1 MiB, about 12 MiB.
fn fill_srv(root: &Path) -> u64 {
    let mut bytes = 0u64;
    for i in 0..400u64 {
        let len = if i % 40 == 0 {
            1 << 20
        } else {
            (i * 6151 % 12000) as usize
        };
        let data = noise(90_000 + i, len);
        bytes += data.len() as u64;
        let p = root.join(format!("data/d{}/f{i}", i % 13));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    bytes
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/stack")
            .join(name),
    )
    .unwrap()
}

/// The captured machine: ESP, root (ext4), swap, and partitions 4 and 5
/// (the array's members in the stacked manifest); partition 4 holds an
/// ext4 of the LV's size (32 MiB), captured as `/srv`.
fn source_disk(dir: &Path) -> LoopDisk {
    let disk = LoopDisk::new(
        dir,
        "source.img",
        DISK_MIB,
        "label: gpt\n\
         start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI\"\n\
         size=819200, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\"\n\
         size=65536, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name=\"swap\"\n\
         size=413696, type=A19D880F-05FC-4D3B-A006-743F0F84911E, name=\"raid-a\"\n\
         size=413696, type=A19D880F-05FC-4D3B-A006-743F0F84911E, name=\"raid-b\"\n",
    );
    sh("mkfs.vfat", &["-F", "32", "-n", "ESP", &disk.part(1)]);
    sh("mkfs.ext4", &["-q", "-L", "root", &disk.part(2)]);
    sh("mkswap", &["-L", "swap", &disk.part(3)]);
    sh("mkfs.ext4", &["-q", "-L", "srv", &disk.part(4), "32M"]);
    disk
}

/// The captured manifest with the storage stack put in (see the module
/// documentation); `key_id` is the escrowed volume key's.
fn stacked(captured: &str, disk: &str, srv_point: &str, key_id: &str) -> String {
    let stack_xml = format!(
        r#"  <md name="root" device="/dev/md127" array-name="qemu:root" uuid="1b2c3d4e:5f607182:93a4b5c6:d7e8f901" level="raid1" metadata="1.2" raid-devices="2" size="{MD_SIZE}" bitmap="internal" data-offset="{MD_DATA_OFFSET}">
    <member ref="disk/{disk}/4" role="0"/>
    <member ref="disk/{disk}/5" role="1"/>
  </md>
  <luks name="cryptroot" on="md/root" version="2" uuid="{LUKS_UUID}" cipher="aes-xts-plain64" key-size="512" sector-size="512" data-offset="{LUKS_OFFSET}" size="{luks}" hash="sha256">
    <keyslot id="0" pbkdf="pbkdf2"/>
    <escrow kind="volume-key" key-id="{key_id}"/>
  </luks>
"#,
        luks = MD_SIZE - LUKS_OFFSET,
    );
    // The array and the LUKS volume read from the capture's text without
    // partition 4's filesystem, with them before the filesystems (the
    // schema's element order); then put into the capture's manifest.
    let srv_at = captured
        .find(&format!("<filesystem device=\"/dev/{disk}p4\""))
        .expect("no filesystem on partition 4 captured");
    let srv_end =
        srv_at + captured[srv_at..].find("</filesystem>").unwrap() + "</filesystem>".len();
    let at = captured
        .find("<filesystem")
        .expect("no filesystem captured");
    let text = format!(
        "{}{stack_xml}  {}{}",
        &captured[..at],
        &captured[at..srv_at],
        &captured[srv_end..]
    )
    .replacen("schema=\"1\"", "schema=\"2\"", 1);
    let s = rewind::manifest::from_xml(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let mut m = rewind::manifest::from_xml(captured).unwrap();
    m.schema = 2;
    m.snapshot.id = "stacked".into();
    m.md_arrays = s.md_arrays;
    m.luks = s.luks;
    m.volume_groups = vec![
        lvm::to_element(
            "qvg",
            &lvm::parse_vgs(&fixture("qemu-vgs.json")).unwrap(),
            &lvm::parse_pvs(&fixture("qemu-pvs.json")).unwrap(),
            &lvm::parse_lvs(&fixture("qemu-lvs.json")).unwrap(),
            &fixture("qemu-qvg.vg"),
            |_| Some(StackRef::Luks("cryptroot".into())),
        )
        .unwrap(),
    ];
    let srv = m
        .filesystems
        .iter_mut()
        .find(|f| f.mounts.iter().any(|mp| mp.point == srv_point))
        .unwrap_or_else(|| panic!("no {srv_point} in the capture"));
    srv.device = "/dev/mapper/qvg-root".into();
    srv.disk = None;
    srv.partition = None;
    srv.volume = Some(StackRef::Lv("qvg".into(), "root".into()));
    rewind::manifest::validate(&m).unwrap_or_else(|e| panic!("{e}"));
    rewind::manifest::to_xml(&m).unwrap()
}

/// The newest manifest the server holds of `host` (its XML file).
fn captured_manifest(data: &Path) -> String {
    let out = sh(
        "find",
        &[
            data.to_str().unwrap(),
            "-name",
            "*.xml",
            "-path",
            &format!("*{HOST}*"),
        ],
    );
    let path = out
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no manifest in {}", data.display()));
    std::fs::read_to_string(path).unwrap()
}

/// The LV `qvg/root` of the recovered disk, read through the stack by
/// hand into `out`: member 1's data (past the MD data offset and the LUKS
/// header) decrypted with AES-XTS-plain64 (512-byte sectors, numbered from
/// the LUKS data segment) at the LV's extents.
fn read_lv_by_hand(target: &Path, key: &[u8], out: &Path) {
    let script = r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = bytes.fromhex(sys.argv[1]); at = int(sys.argv[3]); sector = int(sys.argv[4]); n = int(sys.argv[5])
with open(sys.argv[2], "rb") as f, open(sys.argv[6], "wb") as o:
    f.seek(at)
    for i in range(n):
        d = Cipher(algorithms.AES(key), modes.XTS((sector + i).to_bytes(16, "little"))).decryptor()
        o.write(d.update(f.read(512)) + d.finalize())
"#;
    let at = MEMBER_START * 512 + MD_DATA_OFFSET + LUKS_OFFSET + LV_PE_START;
    sh(
        "python3",
        &[
            "-c",
            script,
            &rewind::util::hex::encode(key),
            target.to_str().unwrap(),
            &at.to_string(),
            &(LV_PE_START / 512).to_string(),
            &(LV_SIZE / 512).to_string(),
            out.to_str().unwrap(),
        ],
    );
}

/// What a run's console says in its format stage (the plan printed
/// before names every command, run or not).
fn format_stage(console: &str) -> &str {
    let from = console
        .find("rewind: == stage format ==")
        .expect("no format stage");
    let to = console[from..]
        .find("rewind: == stage mount ==")
        .map_or(console.len(), |n| from + n);
    &console[from..to]
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
    let disk = source_disk(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Beside the root's mount, not in it: a mount point's directory in
    // the parent filesystem is not restored (the restore writes through
    // the mount), so its times would differ from the source's.
    let srv = dir.path().join("srv");
    let key_file = dir.path().join("master.key");
    let server_args = [
        "--key-file",
        key_file.to_str().unwrap(),
        "--create-key-file",
    ];
    let mut server;
    let bytes;
    {
        let _m = Mounted::new(&disk.part(2), &src, &[]);
        let mut b = fill(&src);
        std::fs::create_dir_all(&srv).unwrap();
        let _s = Mounted::new(&disk.part(4), &srv, &[]);
        b += fill_srv(&srv);
        bytes = b;
        sh("sync", &[]);
        server = ServerProc::start_with(
            &dir.path().join("server"),
            "127.0.0.1:0",
            false,
            None,
            &server_args,
        );
        let token = server.host_token(HOST);
        rewind_ok(
            &server,
            &token,
            &["capture", "--host", HOST, "--disk", &disk.dev],
        );
        // The stack: the volume key escrowed, the stacked manifest put as
        // the host's newest snapshot.
        let key = noise(4242, 64);
        let escrowed = server
            .client(&token)
            .escrow_key(
                HOST,
                &rewind::api::EscrowKey {
                    volume_uuid: LUKS_UUID.into(),
                    name: "cryptroot".into(),
                    kind: "volume-key".into(),
                    key: rewind::util::hex::encode(&key),
                },
            )
            .unwrap();
        let xml = stacked(
            &captured_manifest(&server.data),
            &disk.name(),
            srv.to_str().unwrap(),
            &escrowed.key_id,
        );
        let (st, body) = put_snapshot_xml(&server, &token, HOST, "stacked", xml);
        assert!(st.is_success(), "{st} {body}");
        std::fs::write(dir.path().join("volume.key"), &key).unwrap();
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
    // The first run made the stack (and the filesystem on it).
    let format1 = format_stage(&first_run);
    for made in ["mdadm --create", "cryptsetup luksFormat", "vgcfgrestore"] {
        assert!(format1.contains(made), "the first run did not run {made}");
    }
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
    // The stack opened, layer by layer, each verified against the plan.
    for layer in ["md/root", "luks/cryptroot", "vg qvg"] {
        vm.expect(
            &format!("{layer}: verified against the plan and opened"),
            RECOVERY,
        );
    }
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
    // Started again as before (the escrow's key file too).
    server.kill();
    server = ServerProc::start_with(
        &server.data.clone(),
        &server.addr.clone(),
        false,
        Some(&server.admin.clone()),
        &server_args,
    );
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
    for made in [
        "mdadm --create",
        "luksFormat",
        "luksHeaderRestore",
        "pvcreate",
        "vgcfgrestore",
        "lvcreate",
        "mkfs",
        "wipefs",
    ] {
        assert!(
            !format_stage(&second).contains(made),
            "the resumed run made something again ({made})"
        );
    }
    assert!(
        !second.contains("made again"),
        "a layer of the stack was made again"
    );
    assert!(
        second.contains("mdadm --assemble /dev/md/root --readonly --uuid"),
        "the array was not assembled read-only by its UUID"
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
    // /srv, on the LV, read through the stack by hand.
    let lv = dir.path().join("lv.img");
    let key = std::fs::read(dir.path().join("volume.key")).unwrap();
    read_lv_by_hand(&target, &key, &lv);
    let l = LoopDisk::attach(&lv);
    let (c, d) = (
        dir.path().join("cmp-srv-src"),
        dir.path().join("cmp-srv-dst"),
    );
    std::fs::create_dir_all(&c).unwrap();
    std::fs::create_dir_all(&d).unwrap();
    let _mc = Mounted::new(&s.part(4), &c, &["ro,noatime"]);
    let _md = Mounted::new(&l.dev, &d, &["ro,noatime"]);
    assert_same_tree(&c, &d);
    let (dc, dd) = (stat_dump(&c), stat_dump(&d));
    assert!(dc.len() > 400, "{}", dc.len());
    assert_eq!(dc, dd, "stat dumps of /srv differ");

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
