//! Tier 2 (root): a layout captured on a disk of 512-byte sectors,
//! recreated by `rewind recreate` on a loop device with 4096-byte sectors
//! (`losetup -b 4096`, a 4Kn disk): every partition at its captured byte
//! offset, each filesystem made with a sector or block size the new disk
//! takes (vfat `-S 4096`, xfs 4 KiB sectors, ext4 4 KiB blocks where it
//! had 1 KiB ones) and mountable, and the btrfs subvolumes with their
//! captured ids (a gap included), default subvolume and, once sealed,
//! read-only flag. This host has no vfat driver: the ESP is made and its
//! boot sector read, not mounted.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const LAYOUT: &str = "label: gpt
start=2048, size=64MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
size=96MiB, type=L
size=640MiB, type=L
size=320MiB, type=L
size=64MiB, type=S
";

/// `sfdisk --dump` starts and sizes of `dev`, in bytes, by partition.
fn spans(dev: &str, sector: u64) -> Vec<(u32, u64, u64)> {
    sfdisk_dump(Path::new(dev))
        .partitions
        .iter()
        .map(|(n, f)| {
            (
                *n,
                f["start"].parse::<u64>().unwrap() * sector,
                f["size"].parse::<u64>().unwrap() * sector,
            )
        })
        .collect()
}

/// The subvolumes from the top level mounted at `top`: `ID N top level M
/// path P` lines, each path's ro flag, and the default.
fn subvolumes(top: &Path) -> String {
    let t = top.to_str().unwrap();
    let list = sh("btrfs", &["subvolume", "list", t]);
    let mut out = String::new();
    for l in list.lines() {
        let mut w: Vec<&str> = l.split_whitespace().collect();
        w.drain(2..4); // gen N
        out += &w.join(" ");
        out.push('\n');
    }
    for l in list.lines() {
        let p = l.rsplit(" path ").next().unwrap();
        let ro = sh(
            "btrfs",
            &["property", "get", "-ts", &format!("{t}/{p}"), "ro"],
        );
        out += &format!("{p} {}", ro.trim());
        out.push('\n');
    }
    let def = sh("btrfs", &["subvolume", "get-default", t]);
    out + def.split(" gen ").next().unwrap()
}

fn blkid(dev: &str, tag: &str) -> String {
    sh("blkid", &["-o", "value", "-s", tag, dev])
        .trim()
        .to_string()
}

#[test]
fn a_512_byte_layout_on_a_4kn_loop_disk() {
    if !root_or_skip("a_512_byte_layout_on_a_4kn_loop_disk") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = LoopDisk::new(dir.path(), "src.img", 1280, LAYOUT);
    sh("mkfs.fat", &["-F", "32", "-n", "ESP", &src.part(1)]);
    sh(
        "mkfs.ext4",
        &["-q", "-b", "1024", "-L", "boot", &src.part(2)],
    );
    sh("mkfs.btrfs", &["-q", "-f", "-L", "root", &src.part(3)]);
    sh(
        "mkfs.xfs",
        &["-q", "-f", "-s", "size=512", "-L", "srv", &src.part(4)],
    );
    sh("mkswap", &["-q", &src.part(5)]);
    // Subvolumes as an installer and a snapshot tool leave them.
    let top = dir.path().join("top");
    let before = {
        let _m = Mounted::new(&src.part(3), &top, &["subvolid=5"]);
        let t = top.to_str().unwrap();
        for s in ["@", "@home", "@old", "@snapshots"] {
            sh("btrfs", &["-q", "subvolume", "create", &format!("{t}/{s}")]);
        }
        sh(
            "btrfs",
            &["-q", "subvolume", "delete", &format!("{t}/@old")],
        );
        std::fs::write(top.join("@home/file"), "hello").unwrap();
        sh(
            "btrfs",
            &[
                "-q",
                "subvolume",
                "snapshot",
                "-r",
                &format!("{t}/@home"),
                &format!("{t}/@snapshots/home-1"),
            ],
        );
        sh("btrfs", &["subvolume", "set-default", &format!("{t}/@")]);
        subvolumes(&top)
    };
    assert!(
        before.contains("ID 260 top level 259 path @snapshots/home-1"),
        "{before}"
    );
    assert!(before.contains("@snapshots/home-1 ro=true"), "{before}");
    assert!(before.ends_with("ID 256"), "{before}");

    // The capture sees the btrfs mounted (its subvolumes are read there).
    let root = dir.path().join("root");
    let manifest = dir.path().join("manifest.xml");
    {
        let _r = Mounted::new(&src.part(3), &root, &["subvol=@"]);
        let _h = Mounted::new(&src.part(3), &root.join("home"), &["subvol=@home"]);
        let _b = Mounted::new(&src.part(2), &root.join("boot"), &[]);
        let _s = Mounted::new(&src.part(4), &root.join("srv"), &[]);
        let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args([
                "capture",
                "--manifest-only",
                "-o",
                manifest.to_str().unwrap(),
                "--disk",
                &src.dev,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "capture: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The source is lost (btrfs refuses to make a second filesystem with a
    // UUID it sees on another device).
    let src_spans = spans(&src.dev, 512);
    let src_uuids: Vec<String> = (1..=5).map(|n| blkid(&src.part(n), "UUID")).collect();
    sh("wipefs", &["-q", "-a", &src.part(3)]);

    // A blank 4Kn disk of the same size.
    let image = dir.path().join("target.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1280 << 20)
        .unwrap();
    let dev = sh(
        "losetup",
        &["-b", "4096", "--find", "--show", image.to_str().unwrap()],
    )
    .trim()
    .to_string();
    let target = LoopDisk { image, dev };
    let target_root = dir.path().join("target");
    std::fs::create_dir_all(&target_root).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["recreate", manifest.to_str().unwrap(), "--disk"])
        .arg(format!("{}={}", src.name(), target.dev))
        .args([
            "--target-root",
            target_root.to_str().unwrap(),
            "--skip-mount",
            "vfat",
            "--yes",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Whatever happens, nothing stays mounted under the target (the
    // filesystems are mounted at their captured points below it).
    unmount_below(&target_root);
    assert!(
        out.status.success(),
        "recreate:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sector size 512 -> 4096 bytes"), "{stdout}");
    let _ = Command::new("partx").args(["-a", &target.dev]).output();

    // Every partition at the same byte offsets and size.
    assert_eq!(spans(&target.dev, 4096), src_spans);
    for n in 1..=5 {
        assert_eq!(
            blkid(&target.part(n), "UUID"),
            src_uuids[n as usize - 1],
            "partition {n}"
        );
    }
    let esp = rewind::fs::vfat::read_params(Path::new(&target.part(1))).unwrap();
    assert_eq!((esp.sector_size, esp.fat_size), (4096, 32));
    let xfs = sh(
        "xfs_db",
        &["-r", "-c", "sb 0", "-c", "p sectsize", &target.part(4)],
    );
    assert_eq!(xfs.trim(), "sectsize = 4096");
    let ext = sh("dumpe2fs", &["-h", &target.part(2)]);
    assert!(
        ext.lines()
            .any(|l| l.starts_with("Block size:") && l.ends_with(" 4096")),
        "{ext}"
    );
    for (n, fs) in [(2, "ext4"), (4, "xfs")] {
        let m = Mounted::new(&target.part(n), &dir.path().join(format!("m{n}")), &[]);
        let t = sh("findmnt", &["-rno", "FSTYPE", m.point.to_str().unwrap()]);
        assert_eq!(t.trim(), fs);
    }

    // The subvolumes: ids, paths, default; read-only once sealed.
    let _m = Mounted::new(&target.part(3), &top, &["subvolid=5"]);
    let made = subvolumes(&top);
    assert_eq!(
        made,
        before.replace("@snapshots/home-1 ro=true", "@snapshots/home-1 ro=false"),
        "recreated before the restore"
    );
    let m = rewind::manifest::from_xml(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let fs = m.filesystems.iter().find(|f| f.fs_type == "btrfs").unwrap();
    let listed: Vec<rewind::fs::btrfs::ListedSubvolume> = fs
        .subvolumes
        .iter()
        .map(|s| rewind::fs::btrfs::ListedSubvolume {
            id: s.id,
            path: s.path.clone(),
            read_only: s.read_only,
            default: s.default,
        })
        .collect();
    rewind::fs::btrfs::seal_subvolumes(&top, &listed, &mut rewind::fs::btrfs::run_btrfs).unwrap();
    assert_eq!(subvolumes(&top), before);
}

/// Unmount everything mounted at or below `root`, deepest first.
fn unmount_below(root: &std::path::Path) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| std::path::Path::new(p).starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg(p).status();
    }
}
