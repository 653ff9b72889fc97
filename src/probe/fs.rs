//! Filesystem facts: what blkid says a device holds, what is mounted where,
//! and active swap. The mkfs parameters of each filesystem kind are read by
//! that kind's module in [`crate::fs`].
//!
//! Every fact comes from a pure parser over text or bytes (tested on
//! fixtures); the thin functions around them only run a tool or read a device.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::cmd;
use crate::fs::dev_str;

// ---------------------------------------------------------------------------
// blkid

/// Parse `blkid -p -o export DEV`: `KEY=value` lines. blkid backslash-escapes
/// shell-unsafe characters in values (`LABEL=my\ disk`); those are undone.
pub fn parse_blkid_export(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let mut out = String::with_capacity(value.len());
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            // A trailing lone backslash stays as it is.
            if c == '\\'
                && let Some(next) = chars.next()
            {
                out.push(next);
                continue;
            }
            out.push(c);
        }
        map.entry(key.trim().to_string()).or_insert(out);
    }
    map
}

/// Low-level probe of `dev` (`-p`: reads the device, never the blkid cache,
/// which can be stale). An empty map when blkid recognises nothing.
pub fn blkid(dev: &Path) -> Result<BTreeMap<String, String>> {
    let args = ["-p", "-o", "export", dev_str(dev)?];
    // blkid exits 2 ("nothing found") also for a missing or unreadable
    // device; open it first so that those are errors, not empty results.
    File::open(dev).with_context(|| format!("cannot open {}", dev.display()))?;
    // Exit 2: nothing found. Exit 8: several signatures (e.g. an old
    // filesystem's magic left beside a new one); guessing would be wrong.
    let (code, out) = cmd::run_allowing("blkid", &args, &[2, 8])?;
    match code {
        2 => Ok(BTreeMap::new()),
        8 => bail!(
            "`{}` found ambivalent signatures on {} (wipefs -n {} lists them)",
            cmd::display_argv("blkid", &args),
            dev.display(),
            dev.display()
        ),
        _ => Ok(parse_blkid_export(&out)),
    }
}

// ---------------------------------------------------------------------------
// mounts and swaps

/// Where captures mount the LVM snapshots they read from (one directory per
/// capture's pid). Nothing mounted below it is one of the machine's own
/// filesystems: the probe leaves such mounts out, so a snapshot left
/// mounted by a killed capture is never taken for another mount of the
/// filesystem it copies (it has the same UUID).
pub const SNAPSHOT_MOUNTS: &str = "/run/rewind/snap";

/// One line of /proc/self/mountinfo. `root`, `mount_point` and `source` are
/// unescaped; the two option strings are kept as the kernel prints them
/// (octal escapes intact), since unescaping could turn a `\054` inside a
/// value into a separating comma, and fstab takes the same escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount's id (what `statx`'s `STATX_MNT_ID` reports).
    pub id: u64,
    pub major: u32,
    pub minor: u32,
    /// The mounted subtree of the filesystem (`/` for all of it; `/@home`
    /// for a btrfs subvolume, the source directory of a bind mount).
    pub root: String,
    pub mount_point: String,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub mount_options: String,
    pub fs_type: String,
    pub source: String,
    /// Per-superblock options (`rw,errors=remount-ro`).
    pub super_options: String,
}

/// Parse /proc/self/mountinfo (proc(5)):
/// `id parent major:minor root mount-point options [optional...] - type source super-options`.
/// Fields are separated by exactly one space (the kernel escapes spaces in
/// values), so an empty source stays an empty field.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mi = parse_mountinfo_line(line)
            .with_context(|| format!("mountinfo line {}: {line:?}", n + 1))?;
        out.push(mi);
    }
    Ok(out)
}

fn parse_mountinfo_line(line: &str) -> Result<MountInfo> {
    let f: Vec<&str> = line.split(' ').collect();
    ensure!(f.len() >= 10, "{} fields, need at least 10", f.len());
    // Optional fields (shared:N, master:N, ...) run up to a lone `-`.
    let sep = f[6..]
        .iter()
        .position(|x| *x == "-")
        .map(|p| p + 6)
        .context("no `-` separator after the optional fields")?;
    ensure!(
        f.len() >= sep + 4,
        "fewer than 3 fields after the `-` separator"
    );
    let (major, minor) = f[2]
        .split_once(':')
        .context("device field is not major:minor")?;
    Ok(MountInfo {
        id: f[0].parse().context("bad mount id")?,
        major: major.parse().context("bad major number")?,
        minor: minor.parse().context("bad minor number")?,
        root: unescape_octal(f[3]),
        mount_point: unescape_octal(f[4]),
        mount_options: f[5].to_string(),
        fs_type: f[sep + 1].to_string(),
        source: unescape_octal(f[sep + 2]),
        // Anything past the super options would be a future field: ignore.
        super_options: f[sep + 3].to_string(),
    })
}

/// Undo the kernel's `\NNN` octal escapes (`\040` space, `\011` tab,
/// `\012` newline, `\134` backslash); other backslashes stay literal.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The options an fstab line needs to mount `mi` the same way again.
///
/// Rule: all per-mount options in their order (they include exactly one of
/// `rw`/`ro`), then the per-superblock options not already present, minus:
/// - `rw`/`ro` (the per-mount flag is the one fstab means);
/// - kernel state that is not a choice, or would be wrong on a freshly made
///   filesystem: `seclabel` (SELinux labelling support), xfs `attr2`
///   (always shown, deprecated and removed from newer kernels), btrfs
///   `subvolid=` (ids change when the filesystem is recreated; `subvol=`
///   names the subvolume), `space_cache`/`space_cache=vN` (on-disk format
///   state; v1 is refused on a free-space-tree filesystem) and `ssd`,
///   `discard=async` (chosen by the kernel from the device).
pub fn fstab_options(mi: &MountInfo) -> String {
    let mut out: Vec<&str> = Vec::new();
    for o in mi.mount_options.split(',') {
        if !o.is_empty() && !out.contains(&o) {
            out.push(o);
        }
    }
    for o in mi.super_options.split(',') {
        if o.is_empty() || o == "rw" || o == "ro" || is_kernel_state(o) || out.contains(&o) {
            continue;
        }
        out.push(o);
    }
    out.join(",")
}

fn is_kernel_state(opt: &str) -> bool {
    matches!(
        opt,
        "seclabel" | "attr2" | "space_cache" | "ssd" | "discard=async"
    ) || opt.starts_with("subvolid=")
        || opt.starts_with("space_cache=")
}

/// Active swap areas from /proc/swaps: the Filename column, unescaped.
/// Files as well as partitions are listed; the caller tells them apart.
pub fn parse_proc_swaps(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with("Filename"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| {
            let name = unescape_octal(name);
            // A swap file deleted while active shows as `path (deleted)`.
            match name.strip_suffix(" (deleted)") {
                Some(p) => p.to_string(),
                None => name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::test_images::{have, image, make};

    // -- blkid --------------------------------------------------------------

    #[test]
    fn blkid_export_is_parsed_and_unescaped() {
        let text = "DEVNAME=/dev/sda1\nLABEL_FATBOOT=ESP\nLABEL=my\\ disk\\$1\nUUID=1234-ABCD\n\
                    VERSION=FAT32\nBLOCK_SIZE=512\nTYPE=vfat\nUSAGE=filesystem\n\
                    PART_ENTRY_NAME=EFI\\ System\\ Partition\n";
        let m = parse_blkid_export(text);
        assert_eq!(m["TYPE"], "vfat");
        assert_eq!(m["UUID"], "1234-ABCD");
        assert_eq!(m["LABEL"], "my disk$1");
        assert_eq!(m["PART_ENTRY_NAME"], "EFI System Partition");
        assert!(parse_blkid_export("").is_empty());
    }

    #[test]
    fn blkid_on_real_images() {
        if !have("blkid") || !have("mkfs.vfat") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let empty = image(dir.path(), "empty.img", 1 << 20);
        assert!(blkid(&empty).unwrap().is_empty(), "exit 2 is no error");
        let fat = image(dir.path(), "fat.img", 64 << 20);
        make(
            "mkfs.vfat",
            &[
                "-F",
                "32",
                "-i",
                "1234ABCD",
                "-n",
                "ESP",
                fat.to_str().unwrap(),
            ],
        );
        let m = blkid(&fat).unwrap();
        assert_eq!(m["TYPE"], "vfat");
        assert_eq!(m["UUID"], "1234-ABCD");
        assert_eq!(m["LABEL"], "ESP");
        let err = blkid(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
    }

    // -- mounts -------------------------------------------------------------

    const MOUNTINFO: &str = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
23 22 8:1 / /boot/efi rw,relatime shared:2 - vfat /dev/sda1 rw,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=mixed,utf8,errors=remount-ro
24 22 0:30 /@home /home rw,noatime shared:3 master:1 - btrfs /dev/sda3 rw,ssd,discard=async,space_cache=v2,subvolid=257,subvol=/@home
25 22 8:17 / /srv/my\\040data rw,nosuid,nodev,relatime - xfs /dev/sdb1 rw,seclabel,attr2,inode64,logbufs=8,logbsize=32k,noquota
26 22 0:31 / /run/empty rw - tmpfs  rw,size=1024k
27 22 8:2 /srv/a\\134b /mnt/bind ro,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
";

    #[test]
    fn mountinfo_is_parsed() {
        let m = parse_mountinfo(MOUNTINFO).unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(
            m[0],
            MountInfo {
                id: 22,
                major: 8,
                minor: 2,
                root: "/".into(),
                mount_point: "/".into(),
                mount_options: "rw,relatime".into(),
                fs_type: "ext4".into(),
                source: "/dev/sda2".into(),
                super_options: "rw,errors=remount-ro".into(),
            }
        );
        assert_eq!(
            (m[2].root.as_str(), m[2].fs_type.as_str()),
            ("/@home", "btrfs")
        );
        assert_eq!(m[2].major, 0);
        assert_eq!(m[3].mount_point, "/srv/my data");
        assert_eq!(m[3].minor, 17);
        assert_eq!(m[4].source, "", "empty source keeps its field");
        assert_eq!(m[4].super_options, "rw,size=1024k");
        assert_eq!(m[5].root, r"/srv/a\b");
    }

    #[test]
    fn mountinfo_errors_name_the_line() {
        let err =
            parse_mountinfo("22 1 8:2 / / rw,relatime shared:1 ext4 /dev/sda2 rw x\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("line 1") && msg.contains("separator"), "{msg}");
        assert!(parse_mountinfo("22 1 8-2 / / rw - ext4 /dev/sda2 rw\n").is_err());
        assert!(parse_mountinfo("22 1 8:2 / / rw - ext4 /dev/sda2\n").is_err());
        assert!(parse_mountinfo("\n").unwrap().is_empty());
    }

    #[test]
    fn own_mountinfo_parses() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let m = parse_mountinfo(&text).unwrap();
        assert!(m.iter().any(|mi| mi.mount_point == "/"));
    }

    #[test]
    fn fstab_options_rule() {
        let m = parse_mountinfo(MOUNTINFO).unwrap();
        let opts: Vec<String> = m.iter().map(fstab_options).collect();
        assert_eq!(opts[0], "rw,relatime,errors=remount-ro");
        assert_eq!(
            opts[1],
            "rw,relatime,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=mixed,utf8,errors=remount-ro"
        );
        assert_eq!(opts[2], "rw,noatime,subvol=/@home");
        assert_eq!(
            opts[3],
            "rw,nosuid,nodev,relatime,inode64,logbufs=8,logbsize=32k,noquota"
        );
        assert_eq!(opts[4], "rw,size=1024k");
        // A read-only bind of a read-write filesystem: the mount's `ro` wins.
        assert_eq!(opts[5], "ro,relatime,errors=remount-ro");
    }

    #[test]
    fn unescape_leaves_odd_backslashes() {
        assert_eq!(unescape_octal(r"a\040b\011c\012d"), "a b\tc\nd");
        assert_eq!(unescape_octal(r"x\9y\04"), r"x\9y\04");
        assert_eq!(unescape_octal(r"\777"), r"\777", "not a byte");
    }

    #[test]
    fn proc_swaps() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/sda3                               partition\t999420\t\t0\t\t-2\n\
                    /swap\\040file                           file\t\t102396\t\t0\t\t-3\n\
                    /old\\040(deleted)                       file\t\t102396\t\t0\t\t-4\n";
        assert_eq!(
            parse_proc_swaps(text),
            vec!["/dev/sda3", "/swap file", "/old"]
        );
        assert!(parse_proc_swaps("Filename\tType\tSize\tUsed\tPriority\n").is_empty());
    }
}
