//! Tier 2 (root): raw boot regions survive capture and recreation. A
//! BIOS/MBR disk with boot code and a boot gap of known bytes, and a GPT
//! disk with a BIOS boot partition and a small partition without a
//! filesystem, are captured into a local repository with `rewind capture
//! --repo`; blank disks are then recreated from the snapshot through the
//! repository (the code path of the live recovery: plan, then
//! `recreate` with the repository as the raw source), and the bytes compared.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use common::*;
use rewind::layout::{self, format::Tools, plan, present};
use rewind::manifest::RegionName;
use rewind::raw_regions::RepoRaw;
use rewind::repo::Repo;

const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";

fn write_at(dev: &str, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn read_at(dev: &str, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(dev).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

fn blank(dir: &Path, name: &str, mib: u64) -> LoopDisk {
    let img = dir.join(name);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    LoopDisk::attach(&img)
}

/// Unmount everything under the target root, also when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = layout::mount::unmount_below(&self.0);
        }
    }
}

#[test]
fn boot_code_gap_and_bios_boot_partition_are_restored_byte_for_byte() {
    if !root_or_skip("boot_code_gap_and_bios_boot_partition_are_restored_byte_for_byte") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // --- a BIOS/MBR disk: GRUB-like boot code and core.img in the gap
    let mbr = LoopDisk::new(
        dir,
        "mbr.img",
        48,
        "label: dos\nlabel-id: 0x0badcafe\nstart=2048, type=83, bootable\n",
    );
    let code = noise(1, 440);
    let gap = noise(2, 2047 * 512);
    write_at(&mbr.dev, 0, &code);
    write_at(&mbr.dev, 512, &gap);
    sh("mkfs.ext4", &["-q", "-F", &mbr.part(1)]);

    // --- a GPT disk: BIOS boot partition, a small raw partition, ext4
    let gpt = LoopDisk::new(
        dir,
        "gpt.img",
        48,
        &format!(
            "label: gpt\nstart=2048, size=2048, type={BIOS_BOOT}\nstart=4096, size=4096, type=linux\nstart=8192, type=linux\n"
        ),
    );
    let gpt_code = noise(3, 440);
    let bios_boot = noise(4, 2048 * 512);
    let small = noise(5, 4096 * 512);
    write_at(&gpt.dev, 0, &gpt_code);
    write_at(&gpt.dev, 2048 * 512, &bios_boot);
    write_at(&gpt.dev, 4096 * 512, &small);
    sh("mkfs.ext4", &["-q", "-F", &gpt.part(3)]);

    let m1 = Mounted::new(&mbr.part(1), &dir.join("m1"), &[]);
    let m2 = Mounted::new(&gpt.part(3), &dir.join("m2"), &[]);
    std::fs::write(m1.point.join("hello"), b"mbr").unwrap();
    std::fs::write(m2.point.join("hello"), b"gpt").unwrap();

    // --- capture through the command line
    let repo_dir = dir.join("repo");
    let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args([
            "capture",
            "--repo",
            repo_dir.to_str().unwrap(),
            "--disk",
            &mbr.dev,
            "--disk",
            &gpt.dev,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "capture failed:\n{text}");
    drop(m1);
    drop(m2);

    let repo = Repo::open(&repo_dir).unwrap();
    let m = repo.find_snapshot("latest", None).unwrap();
    let md = m.disks.iter().find(|d| d.name == mbr.name()).unwrap();
    let gd = m.disks.iter().find(|d| d.name == gpt.name()).unwrap();
    let region = |d: &rewind::manifest::Disk, r| d.raw_data(r).map(|r| r.bytes);
    assert_eq!(region(md, RegionName::BootGap), Some(2047 * 512), "{md:?}");
    assert_eq!(region(gd, RegionName::Partition(1)), Some(2048 * 512));
    assert_eq!(region(gd, RegionName::Partition(2)), Some(4096 * 512));
    assert_eq!(
        region(gd, RegionName::Partition(3)),
        None,
        "ext4 is not raw"
    );
    assert_eq!(gd.raw.len(), 2);

    // --- recreate on blank disks, as the live recovery does
    let b1 = blank(dir, "b1.img", 48);
    let b2 = blank(dir, "b2.img", 48);
    let sys = Path::new("/sys");
    let present = present::present_disks(sys, Path::new("/proc"), &[b1.name(), b2.name()]).unwrap();
    let target = dir.join("target");
    let _unmount = Unmount(target.clone());
    let the_plan = plan::plan(
        &m,
        &present,
        &plan::PlanOptions {
            mapping: vec![
                (md.name.clone(), b1.dev.clone()),
                (gd.name.clone(), b2.dev.clone()),
            ],
            target_root: target.clone(),
            tools: Tools::detect(),
            ..plan::PlanOptions::default()
        },
    )
    .unwrap();
    let mut raw = RepoRaw {
        repo: &repo,
        manifest: &m,
    };
    layout::recreate(&the_plan, &mut raw, sys).unwrap();
    layout::mount::unmount_below(&target).unwrap();

    assert_eq!(read_at(&b1.dev, 0, 440), code, "MBR boot code");
    assert_eq!(read_at(&b1.dev, 440, 4), 0x0badcafe_u32.to_le_bytes());
    assert!(read_at(&b1.dev, 512, gap.len()) == gap, "boot gap");
    assert_eq!(
        read_at(&b2.dev, 0, 440),
        gpt_code,
        "GPT protective MBR's boot code"
    );
    assert!(
        read_at(&b2.dev, 2048 * 512, bios_boot.len()) == bios_boot,
        "BIOS boot partition"
    );
    assert!(
        read_at(&b2.dev, 4096 * 512, small.len()) == small,
        "small raw partition"
    );

    // The GRUB step has nothing to reinstall: everything came back as it was.
    let decision = rewind::bootloader::grub::decide(&m, &the_plan);
    assert!(decision.bios.is_empty(), "{decision:?}");
}
