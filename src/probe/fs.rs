//! Filesystem facts: what blkid says a device holds, the mkfs parameters that
//! matter for each filesystem type, what is mounted where, and active swap.
//!
//! Every fact comes from a pure parser over text or bytes (tested on
//! fixtures); the thin functions around them only run a tool or read a device.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::cmd;
use crate::manifest::{BtrfsParams, ExtParams, VfatParams, XfsParams};

/// The mkfs parameters of one filesystem, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum FsParams {
    Ext(ExtParams),
    Xfs(XfsParams),
    Vfat(VfatParams),
    Btrfs(BtrfsParams),
    /// A type we record no parameters for (swap, unknown, ...).
    None,
}

/// Read the mkfs parameters of the filesystem on `dev`, whose type (as blkid
/// names it: `ext4`, `xfs`, `vfat`, `btrfs`, ...) is already known.
pub fn read_fs_params(dev: &Path, fs_type: &str) -> Result<FsParams> {
    let params = match fs_type {
        "ext2" | "ext3" | "ext4" => {
            let out = cmd::run("dumpe2fs", &["-h", dev_str(dev)?])?;
            FsParams::Ext(parse_dumpe2fs(&out)?)
        }
        // `xfs_db -r -c info` works on unmounted devices and image files,
        // where xfs_info (on older xfsprogs) wants a mount point.
        "xfs" => {
            let out = cmd::run("xfs_db", &["-r", "-c", "info", dev_str(dev)?])?;
            FsParams::Xfs(parse_xfs_info(&out)?)
        }
        "vfat" => {
            let sector = read_at(dev, 0, 512)?;
            FsParams::Vfat(fat_bpb(&sector)?.params)
        }
        "btrfs" => {
            let sb = read_at(dev, BTRFS_SUPER_OFFSET, BTRFS_SUPER_SIZE)?;
            FsParams::Btrfs(parse_btrfs_super(&sb)?)
        }
        _ => FsParams::None,
    };
    Ok(params)
}

fn dev_str(dev: &Path) -> Result<&str> {
    dev.to_str()
        .with_context(|| format!("device path {} is not UTF-8", dev.display()))
}

fn read_at(dev: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let f = File::open(dev).with_context(|| format!("cannot open {}", dev.display()))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).with_context(|| {
        format!(
            "cannot read {len} bytes at offset {offset} of {}",
            dev.display()
        )
    })?;
    Ok(buf)
}

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
// ext2/3/4

/// Parse the superblock summary of `dumpe2fs -h DEV`.
pub fn parse_dumpe2fs(text: &str) -> Result<ExtParams> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            // First occurrence wins: the superblock comes before the journal.
            fields.entry(k.trim()).or_insert(v.trim());
        }
    }
    let get = |key: &str| {
        fields
            .get(key)
            .copied()
            .with_context(|| format!("dumpe2fs output has no `{key}:` line"))
    };
    let num = |key: &str| -> Result<u64> {
        let v = get(key)?;
        v.parse()
            .with_context(|| format!("dumpe2fs `{key}:` is {v:?}, not a number"))
    };
    let small = |key: &str| -> Result<u32> {
        let n = num(key)?;
        u32::try_from(n).with_context(|| format!("dumpe2fs `{key}:` {n} is out of range"))
    };
    let features = match get("Filesystem features")? {
        "(none)" => Vec::new(),
        // needs_recovery and orphan_present are state (a mounted journal,
        // orphans pending), not choices mke2fs -O accepts.
        list => list
            .split_whitespace()
            .filter(|f| !matches!(*f, "needs_recovery" | "orphan_present"))
            .map(str::to_string)
            .collect(),
    };
    Ok(ExtParams {
        block_size: small("Block size")?,
        inode_size: small("Inode size")?,
        inode_count: num("Inode count")?,
        block_count: num("Block count")?,
        reserved_blocks: num("Reserved block count")?,
        features,
    })
}

// ---------------------------------------------------------------------------
// xfs

/// The on/off switches xfs_info/xfs_db print (xfsprogs libfrog/fsgeom.c, up to
/// 6.x). Kept as a list because 0/1 alone does not tell a switch from a
/// count (`agcount=1`, `sunit=0`, `attr=1` is a version).
const XFS_SWITCHES: &[&str] = &[
    "projid32bit",
    "crc",
    "finobt",
    "sparse",
    "rmapbt",
    "reflink",
    "bigtime",
    "inobtcount",
    "nrext64",
    "exchange",
    "metadir",
    "verity",
    "ascii-ci",
    "ftype",
    "parent",
    "lazy-count",
    "zoned",
];

/// Parse `xfs_db -r -c info DEV` (the xfs_info layout): lines of
/// `section =... key=value, key=value`, where a line with an empty section
/// name continues the one above. Switches not in the known list are ignored.
pub fn parse_xfs_info(text: &str) -> Result<XfsParams> {
    // (section, key) → value, first occurrence wins; features in output order.
    let mut values: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut features = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        let Some((label, rest)) = line.split_once('=') else {
            continue;
        };
        let label = label.trim();
        if !label.is_empty() {
            section = label.to_string();
        }
        for token in rest.split_whitespace() {
            let token = token.trim_end_matches(',');
            let Some((key, value)) = token.split_once('=') else {
                continue;
            };
            if XFS_SWITCHES.contains(&key) && (value == "0" || value == "1") {
                let f = format!("{key}={value}");
                if !features.contains(&f) {
                    features.push(f);
                }
            }
            values
                .entry((section.clone(), key.to_string()))
                .or_insert_with(|| value.to_string());
        }
    }
    ensure!(
        !section.is_empty(),
        "not xfs_info output (no `meta-data=` line)"
    );
    let num = |sec: &str, key: &str| -> Result<u64> {
        let v = values
            .get(&(sec.to_string(), key.to_string()))
            .with_context(|| format!("xfs info has no {key}= in its {sec} section"))?;
        v.parse()
            .with_context(|| format!("xfs info {sec} {key}={v} is not a number"))
    };
    let small = |sec: &str, key: &str| -> Result<u32> {
        let n = num(sec, key)?;
        u32::try_from(n).with_context(|| format!("xfs info {sec} {key}={n} is out of range"))
    };
    Ok(XfsParams {
        block_size: small("data", "bsize")?,
        sector_size: small("meta-data", "sectsz")?,
        inode_size: small("meta-data", "isize")?,
        ag_count: small("meta-data", "agcount")?,
        log_blocks: num("log", "blocks")?,
        features,
    })
}

// ---------------------------------------------------------------------------
// vfat

struct FatBpb {
    params: VfatParams,
    /// Volume serial and boot-sector label, when the extended BPB is there.
    volume_id: Option<u32>,
    label: Option<String>,
}

/// Parse a FAT boot sector (the first 512 bytes of the filesystem) into the
/// mkfs.fat parameters, the volume id as blkid prints it (`1234-ABCD`) and the
/// boot-sector label (`None` for mkfs.fat's `NO NAME`).
///
/// The label here is the boot-sector copy; blkid's `LABEL` comes from the
/// root directory entry, which Windows updates alone, so prefer blkid's.
pub fn parse_fat_boot_sector(sector: &[u8]) -> Result<(VfatParams, String, Option<String>)> {
    let bpb = fat_bpb(sector)?;
    let id = bpb
        .volume_id
        .context("FAT boot sector has no extended BPB, hence no volume id")?;
    let id = format!("{:04X}-{:04X}", id >> 16, id & 0xffff);
    Ok((bpb.params, id, bpb.label))
}

fn fat_bpb(s: &[u8]) -> Result<FatBpb> {
    ensure!(
        s.len() >= 512,
        "FAT boot sector is {} bytes, need 512",
        s.len()
    );
    ensure!(
        s[510] == 0x55 && s[511] == 0xaa,
        "no 0x55AA boot signature: not a FAT boot sector"
    );
    let u16_at = |o: usize| u16::from_le_bytes([s[o], s[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]);

    let bytes_per_sec = u16_at(11);
    let sec_per_clus = s[13];
    let reserved = u16_at(14);
    let num_fats = s[16];
    let root_entries = u16_at(17);
    let tot16 = u16_at(19);
    let fat_sz16 = u16_at(22);
    let tot32 = u32_at(32);
    let fat_sz32 = u32_at(36);

    ensure!(
        matches!(bytes_per_sec, 512 | 1024 | 2048 | 4096),
        "FAT bytes per sector {bytes_per_sec} is not 512..4096"
    );
    ensure!(
        sec_per_clus.is_power_of_two(),
        "FAT sectors per cluster {sec_per_clus} is not a power of two"
    );
    ensure!(reserved > 0, "FAT reserved sector count is 0");
    ensure!(num_fats > 0, "FAT count is 0");

    // Count of clusters, as in the Microsoft FAT specification.
    let fat_sz = if fat_sz16 != 0 {
        u64::from(fat_sz16)
    } else {
        u64::from(fat_sz32)
    };
    let total = if tot16 != 0 {
        u64::from(tot16)
    } else {
        u64::from(tot32)
    };
    let bps = u64::from(bytes_per_sec);
    let root_dir_sectors = (u64::from(root_entries) * 32).div_ceil(bps);
    let meta = u64::from(reserved) + u64::from(num_fats) * fat_sz + root_dir_sectors;
    let data = total.checked_sub(meta).with_context(|| {
        format!("FAT metadata ({meta} sectors) exceeds the volume ({total} sectors)")
    })?;
    let clusters = data / u64::from(sec_per_clus);

    let fat_size = if fat_sz16 == 0 {
        // A FAT32 BPB (BPB_FATSz16 = 0). mkfs.fat -F 32 makes these with
        // fewer than 65525 clusters too (with a warning), and Linux and
        // blkid still treat them as FAT32, so the layout decides here.
        ensure!(fat_sz32 != 0, "FAT size is 0 in both BPB fields");
        32
    } else if clusters < 4085 {
        12
    } else if clusters < 65525 {
        16
    } else {
        bail!("FAT12/16 BPB describes {clusters} clusters, too many for FAT16");
    };

    // Extended BPB: at 36 on FAT12/16, at 64 on FAT32. Signature 0x29 has
    // serial + label + type; 0x28 only the serial.
    let ext = if fat_size == 32 { 64 } else { 36 };
    let (volume_id, label) = match s[ext + 2] {
        0x29 => {
            let raw = &s[ext + 7..ext + 18];
            let text = String::from_utf8_lossy(raw);
            let text = text.trim_end_matches([' ', '\0']);
            let label = (!text.is_empty() && text != "NO NAME").then(|| text.to_string());
            (Some(u32_at(ext + 3)), label)
        }
        0x28 => (Some(u32_at(ext + 3)), None),
        _ => (None, None),
    };

    Ok(FatBpb {
        params: VfatParams {
            fat_size,
            sector_size: bytes_per_sec,
            sectors_per_cluster: sec_per_clus,
            reserved_sectors: reserved,
            fat_count: num_fats,
            root_entries,
        },
        volume_id,
        label,
    })
}

// ---------------------------------------------------------------------------
// btrfs

/// Byte offset of the primary btrfs superblock.
pub const BTRFS_SUPER_OFFSET: u64 = 64 * 1024;
/// Size of a btrfs superblock.
pub const BTRFS_SUPER_SIZE: usize = 4096;
const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";
const BTRFS_CSUM_TYPE_CRC32C: u16 = 0;

/// Parse the primary btrfs superblock: `buf` is the 4096 bytes read at
/// [`BTRFS_SUPER_OFFSET`]. A crc32c checksum (the default) is verified; other
/// checksum types are not.
pub fn parse_btrfs_super(buf: &[u8]) -> Result<BtrfsParams> {
    ensure!(
        buf.len() >= BTRFS_SUPER_SIZE,
        "btrfs superblock is {} bytes, need {BTRFS_SUPER_SIZE}",
        buf.len()
    );
    ensure!(
        &buf[0x40..0x48] == BTRFS_MAGIC,
        "no btrfs magic _BHRfS_M at superblock offset 0x40"
    );
    let u16_at = |o: usize| u16::from_le_bytes([buf[o], buf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().expect("8 bytes"));

    // The primary copy records its own offset; anything else means we were
    // handed a mirror copy or the wrong bytes.
    let bytenr = u64_at(0x30);
    ensure!(
        bytenr == BTRFS_SUPER_OFFSET,
        "btrfs superblock says it lives at {bytenr}, not {BTRFS_SUPER_OFFSET}"
    );
    if u16_at(0xc4) == BTRFS_CSUM_TYPE_CRC32C {
        let want = u32_at(0);
        let got = crc32c(&buf[0x20..BTRFS_SUPER_SIZE]);
        ensure!(
            want == got,
            "btrfs superblock checksum mismatch (stored {want:#010x}, computed {got:#010x})"
        );
    }
    let sector_size = u32_at(0x90);
    let node_size = u32_at(0x94);
    ensure!(
        sector_size.is_power_of_two() && (512..=65536).contains(&sector_size),
        "btrfs sectorsize {sector_size} is implausible"
    );
    ensure!(
        node_size.is_power_of_two() && node_size >= sector_size && node_size <= 65536,
        "btrfs nodesize {node_size} is implausible (sectorsize {sector_size})"
    );
    Ok(BtrfsParams {
        node_size,
        sector_size,
    })
}

/// CRC-32C (Castagnoli), bitwise: only ever run over one 4 KiB superblock.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------
// mounts and swaps

/// One line of /proc/self/mountinfo. `root`, `mount_point` and `source` are
/// unescaped; the two option strings are kept as the kernel prints them
/// (octal escapes intact), since unescaping could turn a `\054` inside a
/// value into a separating comma, and fstab takes the same escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
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
    use std::path::PathBuf;
    use std::process::Command;

    /// Whether `tool` is on PATH (as the code under test will look for it;
    /// non-root users on Debian lack /usr/sbin and skip these tests).
    fn have(tool: &str) -> bool {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            eprintln!("note: {tool} not on PATH, skipping the real-image part of this test");
        }
        found
    }

    /// Run a mkfs-style tool, panicking with its output.
    fn make(tool: &str, args: &[&str]) {
        let out = Command::new(tool).args(args).output().unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {out:?}");
    }

    fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().set_len(size).unwrap();
        p
    }

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

    // -- ext ----------------------------------------------------------------

    #[test]
    fn dumpe2fs_ext4_fixture() {
        let p = parse_dumpe2fs(include_str!("../../tests/fixtures/fs/dumpe2fs-ext4.txt")).unwrap();
        assert_eq!(p.block_size, 4096);
        assert_eq!(p.inode_size, 256); // the line has a tab after the colon
        assert_eq!(p.inode_count, 16384);
        assert_eq!(p.block_count, 16384);
        assert_eq!(p.reserved_blocks, 819);
        assert_eq!(
            p.features.join(" "),
            "has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg \
             sparse_super large_file huge_file dir_nlink extra_isize metadata_csum"
        );
    }

    #[test]
    fn dumpe2fs_ext2_fixture() {
        let p = parse_dumpe2fs(include_str!("../../tests/fixtures/fs/dumpe2fs-ext2.txt")).unwrap();
        assert_eq!(p.block_size, 1024);
        assert_eq!(p.inode_size, 256);
        assert_eq!(p.inode_count, 4096);
        assert_eq!(p.block_count, 16384);
        assert_eq!(p.reserved_blocks, 819);
        assert!(!p.features.iter().any(|f| f == "has_journal"));
        assert!(p.features.iter().any(|f| f == "resize_inode"));
    }

    #[test]
    fn dumpe2fs_errors_name_the_field() {
        let err = parse_dumpe2fs("Block size: 4096\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("Filesystem features"),
            "{err:#}"
        );
        let text = include_str!("../../tests/fixtures/fs/dumpe2fs-ext4.txt")
            .replace("Inode count:              16384", "Inode count: lots");
        let err = parse_dumpe2fs(&text).unwrap_err();
        assert!(format!("{err:#}").contains("Inode count"), "{err:#}");
        let none = "Filesystem features:      (none)\nBlock size: 1024\nInode size: 128\n\
                    Inode count: 8\nBlock count: 64\nReserved block count: 3\n";
        assert!(parse_dumpe2fs(none).unwrap().features.is_empty());
    }

    #[test]
    fn ext4_real_image() {
        if !have("mkfs.ext4") || !have("dumpe2fs") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "ext4.img", 64 << 20);
        make(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-I",
                "256",
                "-L",
                "root",
                img.to_str().unwrap(),
            ],
        );
        let FsParams::Ext(p) = read_fs_params(&img, "ext4").unwrap() else {
            panic!("not ext");
        };
        assert_eq!(
            (p.block_size, p.inode_size, p.block_count),
            (4096, 256, 16384)
        );
        assert!(p.features.iter().any(|f| f == "extent"));
    }

    // -- xfs ----------------------------------------------------------------

    const XFS_V5_FEATURES: &str = "projid32bit=1 crc=1 finobt=1 sparse=1 rmapbt=0 reflink=1 \
                                   bigtime=1 inobtcount=1 nrext64=0 ascii-ci=0 ftype=1 lazy-count=1";

    #[test]
    fn xfs_info_fixture() {
        let p = parse_xfs_info(include_str!("../../tests/fixtures/fs/xfs_db-info.txt")).unwrap();
        assert_eq!(p.block_size, 4096);
        assert_eq!(p.sector_size, 512);
        assert_eq!(p.inode_size, 512);
        assert_eq!(p.ag_count, 4);
        assert_eq!(p.log_blocks, 16384);
        assert_eq!(p.features.join(" "), XFS_V5_FEATURES);
    }

    #[test]
    fn xfs_info_v4_fixture() {
        let p = parse_xfs_info(include_str!("../../tests/fixtures/fs/xfs_db-info-v4.txt")).unwrap();
        assert_eq!(
            (p.block_size, p.inode_size, p.log_blocks),
            (1024, 256, 65536)
        );
        assert!(p.features.contains(&"crc=0".to_string()));
    }

    /// The layout of newer xfsprogs (6.13+: exchange, metadir, parent, zoned
    /// lines), written by hand from libfrog/fsgeom.c's format string.
    #[test]
    fn xfs_info_newer_layout() {
        let text = "\
meta-data=/dev/nvme0n1p3         isize=512    agcount=16, agsize=1048576 blks
         =                       sectsz=4096  attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=1
         =                       reflink=1    bigtime=1 inobtcount=1 nrext64=1
         =                       exchange=1   metadir=0
data     =                       bsize=4096   blocks=16777216, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1, parent=0
log      =internal log           bsize=4096   blocks=16384, version=2
         =                       sectsz=4096  sunit=1 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
         =                       rgcount=0    rgsize=0 extents
         =                       zoned=0      start=0 reserved=0
";
        let p = parse_xfs_info(text).unwrap();
        assert_eq!((p.sector_size, p.ag_count, p.log_blocks), (4096, 16, 16384));
        let f = p.features.join(" ");
        for want in [
            "exchange=1",
            "metadir=0",
            "parent=0",
            "zoned=0",
            "nrext64=1",
        ] {
            assert!(f.contains(want), "{want} missing from {f}");
        }
        // Counts that happen to be 0 or 1 are not switches.
        assert!(!f.contains("sunit") && !f.contains("rtextents") && !f.contains("start"));
    }

    #[test]
    fn xfs_info_errors() {
        assert!(parse_xfs_info("").is_err());
        let text = include_str!("../../tests/fixtures/fs/xfs_db-info.txt")
            .replace("blocks=16384, version=2", "version=2");
        let err = parse_xfs_info(&text).unwrap_err();
        assert!(format!("{err:#}").contains("log section"), "{err:#}");
    }

    #[test]
    fn xfs_real_image() {
        if !have("mkfs.xfs") || !have("xfs_db") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "xfs.img", 320 << 20); // mkfs.xfs wants >= 300 MB
        make(
            "mkfs.xfs",
            &["-q", "-f", "-i", "size=1024", img.to_str().unwrap()],
        );
        let FsParams::Xfs(p) = read_fs_params(&img, "xfs").unwrap() else {
            panic!("not xfs");
        };
        assert_eq!((p.block_size, p.inode_size), (4096, 1024));
        assert!(p.features.contains(&"crc=1".to_string()));
        let err = read_fs_params(&image(dir.path(), "zero.img", 1 << 20), "xfs").unwrap_err();
        assert!(format!("{err:#}").contains("xfs_db -r -c info"), "{err:#}");
    }

    // -- vfat ---------------------------------------------------------------

    #[test]
    fn fat32_esp_fixture() {
        let (p, id, label) = parse_fat_boot_sector(include_bytes!(
            "../../tests/fixtures/fs/fat32-esp.bootsector"
        ))
        .unwrap();
        assert_eq!(
            p,
            VfatParams {
                fat_size: 32,
                sector_size: 512,
                sectors_per_cluster: 1,
                reserved_sectors: 32,
                fat_count: 2,
                root_entries: 0,
            }
        );
        assert_eq!(id, "1234-ABCD");
        assert_eq!(label.as_deref(), Some("ESP"));
    }

    #[test]
    fn fat16_and_fat12_fixtures() {
        let (p, _, label) =
            parse_fat_boot_sector(include_bytes!("../../tests/fixtures/fs/fat16.bootsector"))
                .unwrap();
        assert_eq!(
            (p.fat_size, p.sectors_per_cluster, p.root_entries),
            (16, 4, 512)
        );
        assert_eq!(label, None, "NO NAME is no label");
        let (p, id, _) =
            parse_fat_boot_sector(include_bytes!("../../tests/fixtures/fs/fat12.bootsector"))
                .unwrap();
        assert_eq!(p.fat_size, 12);
        assert_eq!(id, "0BAD-F00D");
    }

    #[test]
    fn fat32_with_few_clusters_stays_fat32() {
        // mkfs.vfat -F 32 -s 8 on 40 MiB: ~10k clusters, FAT32 all the same.
        let (p, id, _) = parse_fat_boot_sector(include_bytes!(
            "../../tests/fixtures/fs/fat32-few-clusters.bootsector"
        ))
        .unwrap();
        assert_eq!((p.fat_size, p.sectors_per_cluster), (32, 8));
        assert_eq!(id, "5EED-0001");
    }

    #[test]
    fn fat_rejects_garbage() {
        let good = include_bytes!("../../tests/fixtures/fs/fat16.bootsector");
        let mut bad = *good;
        bad[511] = 0;
        assert!(format!("{:#}", parse_fat_boot_sector(&bad).unwrap_err()).contains("0x55AA"));
        assert!(parse_fat_boot_sector(&good[..100]).is_err());
        let mut bad = *good;
        bad[13] = 3; // sectors per cluster
        assert!(parse_fat_boot_sector(&bad).is_err());
        let mut bad = *good;
        bad[19] = 16; // total sectors smaller than the metadata
        bad[20] = 0;
        assert!(parse_fat_boot_sector(&bad).is_err());
        let mut bad = *good;
        bad[38] = 0; // no extended BPB: no volume id
        assert!(parse_fat_boot_sector(&bad).is_err());
        assert!(fat_bpb(&bad).is_ok(), "parameters are still readable");
    }

    #[test]
    fn vfat_real_images() {
        if !have("mkfs.vfat") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[&str], u64, u8); 3] = [
            (&["-F", "32", "-i", "1234ABCD", "-n", "ESP"], 64 << 20, 32),
            (&["-F", "16", "-i", "1234ABCD"], 32 << 20, 16),
            (&["-F", "12", "-i", "1234ABCD", "-n", "TINY"], 2 << 20, 12),
        ];
        for (i, (args, size, fat)) in cases.into_iter().enumerate() {
            let img = image(dir.path(), &format!("fat{i}.img"), size);
            let mut a = args.to_vec();
            a.push(img.to_str().unwrap());
            make("mkfs.vfat", &a);
            let (p, id, _) = parse_fat_boot_sector(&read_at(&img, 0, 512).unwrap()).unwrap();
            assert_eq!(p.fat_size, fat, "{args:?}");
            assert_eq!(id, "1234-ABCD");
            assert_eq!(read_fs_params(&img, "vfat").unwrap(), FsParams::Vfat(p));
        }
    }

    // -- btrfs --------------------------------------------------------------

    fn btrfs_super(sector: u32, node: u32) -> Vec<u8> {
        let mut sb = vec![0u8; BTRFS_SUPER_SIZE];
        sb[0x20..0x30].copy_from_slice(&[0x74; 16]); // fsid
        sb[0x30..0x38].copy_from_slice(&BTRFS_SUPER_OFFSET.to_le_bytes());
        sb[0x40..0x48].copy_from_slice(BTRFS_MAGIC);
        sb[0x90..0x94].copy_from_slice(&sector.to_le_bytes());
        sb[0x94..0x98].copy_from_slice(&node.to_le_bytes());
        sb[0x98..0x9c].copy_from_slice(&node.to_le_bytes()); // leafsize
        let csum = crc32c(&sb[0x20..]);
        sb[0..4].copy_from_slice(&csum.to_le_bytes());
        sb
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn btrfs_constructed_superblock() {
        let p = parse_btrfs_super(&btrfs_super(4096, 16384)).unwrap();
        assert_eq!(
            p,
            BtrfsParams {
                node_size: 16384,
                sector_size: 4096
            }
        );
        let mut bad = btrfs_super(4096, 16384);
        bad[0x40] = b'x';
        assert!(format!("{:#}", parse_btrfs_super(&bad).unwrap_err()).contains("magic"));
        let mut bad = btrfs_super(4096, 16384);
        bad[0x100] ^= 1;
        assert!(format!("{:#}", parse_btrfs_super(&bad).unwrap_err()).contains("checksum"));
        assert!(parse_btrfs_super(&btrfs_super(4096, 2048)).is_err());
        assert!(parse_btrfs_super(&btrfs_super(3000, 16384)).is_err());
        assert!(parse_btrfs_super(&btrfs_super(4096, 16384)[..512]).is_err());
    }

    #[test]
    fn btrfs_real_image() {
        if !have("mkfs.btrfs") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "btrfs.img", 128 << 20);
        make(
            "mkfs.btrfs",
            &["-q", "-f", "-n", "32768", img.to_str().unwrap()],
        );
        assert_eq!(
            read_fs_params(&img, "btrfs").unwrap(),
            FsParams::Btrfs(BtrfsParams {
                node_size: 32768,
                sector_size: 4096
            })
        );
    }

    #[test]
    fn other_types_have_no_params_and_bad_devices_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing");
        assert_eq!(read_fs_params(&missing, "swap").unwrap(), FsParams::None);
        let err = read_fs_params(&missing, "btrfs").unwrap_err();
        assert!(format!("{err:#}").contains("nothing"), "{err:#}");
        let short = image(dir.path(), "short.img", 4096);
        let err = read_fs_params(&short, "btrfs").unwrap_err();
        assert!(format!("{err:#}").contains("offset 65536"), "{err:#}");
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
