//! Shared helpers for the root tests on loop devices: every device attached
//! and every mount made is undone on drop, also when a test panics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Root tests run only as root. When REWIND_REQUIRE_ROOT_TESTS is set (the
/// test script sets it when run as root) a missing prerequisite fails instead.
pub fn root_or_skip(test: &str) -> bool {
    let is_root = nix::unistd::geteuid().is_root();
    if !is_root {
        assert!(
            std::env::var_os("REWIND_REQUIRE_ROOT_TESTS").is_none(),
            "{test} needs root"
        );
        eprintln!("skipped {test}: needs root (loop devices, mkfs, mount)");
    }
    is_root
}

/// Run a command; panic with its argv and stderr on failure. Returns stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command with `input` on its stdin.
pub fn sh_in(program: &str, args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "`{program} {}` failed on:\n{input}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sparse image file attached to a loop device, with partition nodes.
pub struct LoopDisk {
    pub image: PathBuf,
    pub dev: String,
}

impl LoopDisk {
    /// Create an image of `size_mib`, write `sfdisk_script` to it, attach it.
    pub fn new(dir: &Path, name: &str, size_mib: u64, sfdisk_script: &str) -> LoopDisk {
        let image = dir.join(name);
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        sh_in(
            "sfdisk",
            &[
                "--quiet",
                "--no-reread",
                "--no-tell-kernel",
                image.to_str().unwrap(),
            ],
            sfdisk_script,
        );
        let dev = sh(
            "losetup",
            &["--find", "--show", "-P", image.to_str().unwrap()],
        )
        .trim()
        .to_string();
        let disk = LoopDisk { image, dev };
        // This kernel may have no partition-table parsers: add the nodes
        // with BLKPG. Partitions the kernel already found are kept.
        let _ = Command::new("partx").args(["-a", &disk.dev]).output();
        disk
    }

    pub fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }

    pub fn name(&self) -> String {
        self.dev.trim_start_matches("/dev/").to_string()
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A mount undone on drop.
pub struct Mounted {
    pub point: PathBuf,
}

impl Mounted {
    pub fn new(dev: &str, point: &Path, options: &[&str]) -> Mounted {
        std::fs::create_dir_all(point).unwrap();
        let mut args = vec![dev, point.to_str().unwrap()];
        if !options.is_empty() {
            args.extend(["-o", options[0]]);
        }
        sh("mount", &args);
        Mounted {
            point: point.to_path_buf(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}
