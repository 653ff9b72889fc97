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

/// The captured machine of the QEMU recovery tests: `source.img` in `dir`,
/// a GPT disk of `mib` MiB with an ESP (vfat, 64 MiB), root (ext4 "root",
/// 640 MiB) and swap, made with this host's mkfs; attached.
pub fn esp_root_swap_disk(dir: &Path, mib: u64) -> LoopDisk {
    let disk = LoopDisk::new(
        dir,
        "source.img",
        mib,
        "label: gpt\n\
         start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI\"\n\
         size=1310720, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\"\n\
         type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name=\"swap\"\n",
    );
    sh("mkfs.vfat", &["-F", "32", "-n", "ESP", &disk.part(1)]);
    sh("mkfs.ext4", &["-q", "-L", "root", &disk.part(2)]);
    sh("mkswap", &["-L", "swap", &disk.part(3)]);
    disk
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

impl LoopDisk {
    /// Attach an existing image (no partitioning, no partx): a blank or
    /// pre-made disk for a test to write on.
    pub fn attach(image: &Path) -> LoopDisk {
        let dev = sh(
            "losetup",
            &["--find", "--show", "-P", image.to_str().unwrap()],
        )
        .trim()
        .to_string();
        LoopDisk {
            image: image.to_path_buf(),
            dev,
        }
    }

    /// [`Self::attach`], with the partition nodes added (BLKPG: this
    /// kernel may have no partition-table parsers).
    pub fn attach_partitioned(image: &Path) -> LoopDisk {
        let disk = LoopDisk::attach(image);
        let _ = Command::new("partx").args(["-a", &disk.dev]).output();
        disk
    }
}

/// `sfdisk --dump` of an image or device, parsed: the header lines
/// (`label`, `label-id`, `first-lba`, ...; `device` left out) and each
/// partition's fields by number (`start`, `size`, `type`, `uuid`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfdiskDump {
    pub header: std::collections::BTreeMap<String, String>,
    pub partitions: std::collections::BTreeMap<u32, std::collections::BTreeMap<String, String>>,
}

pub fn sfdisk_dump(path: &Path) -> SfdiskDump {
    let text = sh("sfdisk", &["--dump", path.to_str().unwrap()]);
    let mut header = std::collections::BTreeMap::new();
    let mut partitions = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some((node, fields)) = line.split_once(" : ") {
            let digits: String = node
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let mut map = std::collections::BTreeMap::new();
            // Fields are `key=value` separated by ", " (quoted names in
            // tests hold no commas); a bare word is a flag (`bootable`).
            for f in fields.split(", ") {
                match f.split_once('=') {
                    Some((k, v)) => map.insert(k.trim().to_string(), v.trim().to_string()),
                    None => map.insert(f.trim().to_string(), String::new()),
                };
            }
            partitions.insert(digits.parse().unwrap(), map);
        } else if let Some((k, v)) = line.split_once(": ")
            && k != "device"
        {
            header.insert(k.to_string(), v.to_string());
        }
    }
    SfdiskDump { header, partitions }
}

/// `blkid -p -o export DEV` as a map, without the fields that name the
/// device itself (DEVNAME, PART_ENTRY_DISK). Empty when blkid finds nothing.
pub fn blkid_export(dev: &str) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| *k != "DEVNAME" && *k != "PART_ENTRY_DISK")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An ext4 filesystem on its own loop disk, mounted.
pub struct TestFs {
    pub mount: Mounted,
    pub disk: LoopDisk,
}

impl TestFs {
    pub fn new(dir: &Path, name: &str, size_mib: u64) -> TestFs {
        let disk = LoopDisk::new(
            dir,
            &format!("{name}.img"),
            size_mib,
            "label: gpt\nstart=2048, type=linux\n",
        );
        sh("mkfs.ext4", &["-q", "-F", &disk.part(1)]);
        let mount = Mounted::new(&disk.part(1), &dir.join(name), &[]);
        TestFs { mount, disk }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mount.point.join(rel)
    }

    pub fn point(&self) -> &str {
        self.mount.point.to_str().unwrap()
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

/// rsync's verdict (not rewind's): the two trees hold the same files with
/// the same content, owners, modes, times, links, xattrs and ACLs.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let out = sh(
        "rsync",
        &[
            "-aHAXS",
            "--checksum",
            "--dry-run",
            "--itemize-changes",
            "--numeric-ids",
            "--delete",
            &format!("{}/", expected.display()),
            &format!("{}/", actual.display()),
        ],
    );
    assert!(
        out.trim().is_empty(),
        "{} differs from {}:\n{out}",
        actual.display(),
        expected.display()
    );
}

/// Snapshot the live tree as a reference copy (cp -a keeps links, xattrs, times).
pub fn reference_copy(src: &Path, dst: &Path) {
    sh("cp", &["-a", src.to_str().unwrap(), dst.to_str().unwrap()]);
}

/// Deterministic pseudo-random bytes (xorshift), unique per seed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes a directory takes, by du.
pub fn du_bytes(p: &Path) -> u64 {
    sh("du", &["-sb", p.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every file below `dir`, except dot files (temporary files of a write).
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            out.push(p);
        }
    }
    out
}

/// Path, mode, owner, size (not of directories), mtime (ns), links, link
/// target: every entry.
pub fn stat_dump(root: &Path) -> Vec<String> {
    let out = sh(
        "sh",
        &[
            "-c",
            r#"cd "$1" && find . -printf '%p\t%M\t%U:%G\t%s\t%T@\t%n\t%l\n' | LC_ALL=C sort"#,
            "sh",
            root.to_str().unwrap(),
        ],
    );
    // A directory's size is the filesystem's business (xfs shrinks a
    // directory to the inode when it can), not the data's.
    out.lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split('\t').collect();
            if f.get(1).is_some_and(|m| m.starts_with('d')) {
                f[3] = "-";
            }
            f.join("\t")
        })
        .collect()
}
