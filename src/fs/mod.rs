//! The filesystem kinds rewind recreates, one module each: what its mkfs
//! parameters are, how they are read from a device (at capture, and again
//! after mkfs to check the result), and the commands that make it again.
//!
//! [`FsType`] holds a kind together with its parameters, so a filesystem
//! cannot carry another kind's parameters. Adding a kind means a module here
//! and a variant (with its match arms) in this file; the manifest, the probe
//! and the layout only go through [`FsType`].
//!
//! This module knows nothing of the manifest or the plan: it sits below both.

pub mod btrfs;
pub mod ext;
pub mod swap;
pub mod vfat;
pub mod xfs;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::de::MapAccess;
use serde::ser::SerializeStruct;

pub use btrfs::BtrfsParams;
pub use ext::ExtParams;
pub use vfat::VfatParams;
pub use xfs::XfsParams;

/// A filesystem's kind and, when they could be read at capture, the mkfs
/// parameters that make the same filesystem again.
#[derive(Debug, Clone, PartialEq)]
pub enum FsType {
    Ext2(Option<ExtParams>),
    Ext3(Option<ExtParams>),
    Ext4(Option<ExtParams>),
    Xfs(Option<XfsParams>),
    Vfat(Option<VfatParams>),
    Btrfs(Option<BtrfsParams>),
}

/// The kinds' names, as blkid, mount(8) and the manifest's `type` spell them.
pub const NAMES: &[&str] = &["ext2", "ext3", "ext4", "xfs", "vfat", "btrfs"];

/// The manifest elements that hold a kind's parameters (`<ext>` for all
/// three ext kinds). The manifest's `<filesystem>` field list names each
/// (a test there checks it).
pub const PARAMS_ELEMENTS: &[&str] = &["ext", "xfs", "vfat", "btrfs"];

impl FsType {
    /// The kind named `name`, without parameters; `None` for a kind rewind
    /// does not recreate (swap, reiserfs, ...).
    pub fn from_name(name: &str) -> Option<FsType> {
        Some(match name {
            "ext2" => FsType::Ext2(None),
            "ext3" => FsType::Ext3(None),
            "ext4" => FsType::Ext4(None),
            "xfs" => FsType::Xfs(None),
            "vfat" => FsType::Vfat(None),
            "btrfs" => FsType::Btrfs(None),
            _ => return None,
        })
    }

    /// `ext4`, `xfs`, ...: the name mkfs, mount and blkid use.
    pub fn name(&self) -> &'static str {
        match self {
            FsType::Ext2(_) => "ext2",
            FsType::Ext3(_) => "ext3",
            FsType::Ext4(_) => "ext4",
            FsType::Xfs(_) => "xfs",
            FsType::Vfat(_) => "vfat",
            FsType::Btrfs(_) => "btrfs",
        }
    }

    /// The manifest element holding this kind's parameters.
    pub fn params_element(&self) -> &'static str {
        match self {
            FsType::Ext2(_) | FsType::Ext3(_) | FsType::Ext4(_) => "ext",
            FsType::Xfs(_) => "xfs",
            FsType::Vfat(_) => "vfat",
            FsType::Btrfs(_) => "btrfs",
        }
    }

    pub fn has_params(&self) -> bool {
        match self {
            FsType::Ext2(p) | FsType::Ext3(p) | FsType::Ext4(p) => p.is_some(),
            FsType::Xfs(p) => p.is_some(),
            FsType::Vfat(p) => p.is_some(),
            FsType::Btrfs(p) => p.is_some(),
        }
    }

    /// Same kind, parameters aside.
    pub fn same_kind(&self, other: &FsType) -> bool {
        self.name() == other.name()
    }

    pub fn ext(&self) -> Option<&ExtParams> {
        match self {
            FsType::Ext2(p) | FsType::Ext3(p) | FsType::Ext4(p) => p.as_ref(),
            _ => None,
        }
    }

    pub fn xfs(&self) -> Option<&XfsParams> {
        match self {
            FsType::Xfs(p) => p.as_ref(),
            _ => None,
        }
    }

    pub fn vfat(&self) -> Option<&VfatParams> {
        match self {
            FsType::Vfat(p) => p.as_ref(),
            _ => None,
        }
    }

    pub fn btrfs(&self) -> Option<&BtrfsParams> {
        match self {
            FsType::Btrfs(p) => p.as_ref(),
            _ => None,
        }
    }

    /// Whether `uuid` is the filesystem identifier this kind has, as blkid
    /// shows it (a GUID; `ABCD-1234` for vfat).
    pub fn accepts_uuid(&self, uuid: &str) -> bool {
        match self {
            FsType::Vfat(_) => vfat::is_volume_id(uuid),
            _ => is_guid(uuid),
        }
    }

    /// The kind named `name` with its parameters read from `dev`; `None`
    /// for a kind rewind does not recreate.
    pub fn read(name: &str, dev: &Path) -> Result<Option<FsType>> {
        FsType::from_name(name)
            .map(|kind| kind.read_params(dev))
            .transpose()
    }

    /// This kind with the parameters of the filesystem on `dev` (which is
    /// of this kind).
    pub fn read_params(&self, dev: &Path) -> Result<FsType> {
        Ok(match self {
            FsType::Ext2(_) => FsType::Ext2(Some(ext::read_params(dev)?)),
            FsType::Ext3(_) => FsType::Ext3(Some(ext::read_params(dev)?)),
            FsType::Ext4(_) => FsType::Ext4(Some(ext::read_params(dev)?)),
            FsType::Xfs(_) => FsType::Xfs(Some(xfs::read_params(dev)?)),
            FsType::Vfat(_) => FsType::Vfat(Some(vfat::read_params(dev)?)),
            FsType::Btrfs(_) => FsType::Btrfs(Some(btrfs::read_params(dev)?)),
        })
    }

    /// The commands that make this filesystem on `target.device`: mkfs
    /// first, then any tuning mkfs cannot do itself, then (when
    /// `target.grow`) growing it to its partition. `notes` receives what
    /// cannot be reproduced exactly.
    pub fn mkfs_commands(&self, target: &MkfsTarget, notes: &mut Vec<String>) -> Vec<Vec<String>> {
        match self {
            FsType::Ext2(p) | FsType::Ext3(p) | FsType::Ext4(p) => {
                ext::commands(self.name(), p.as_ref(), target)
            }
            FsType::Xfs(p) => vec![xfs::command(p.as_ref(), target, notes)],
            FsType::Vfat(p) => vec![vfat::command(p.as_ref(), target)],
            FsType::Btrfs(p) => vec![btrfs::command(p.as_ref(), target, notes)],
        }
    }

    /// How `made` (read back from a fresh filesystem) differs from these
    /// captured parameters. Nothing when no parameters were captured; a
    /// grown filesystem's sizes are expected to differ.
    pub fn differences(&self, made: &FsType, grown: bool) -> Vec<Difference> {
        match self {
            FsType::Ext2(Some(want)) | FsType::Ext3(Some(want)) | FsType::Ext4(Some(want)) => made
                .ext()
                .map(|got| ext::differences(want, got, grown))
                .unwrap_or_default(),
            FsType::Xfs(Some(want)) => made
                .xfs()
                .map(|got| xfs::differences(want, got))
                .unwrap_or_default(),
            FsType::Vfat(Some(want)) => made
                .vfat()
                .map(|got| vfat::differences(want, got))
                .unwrap_or_default(),
            FsType::Btrfs(Some(want)) => made
                .btrfs()
                .map(|got| btrfs::differences(want, got))
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Read this kind's parameters element (the next value of `map`) into
    /// `self`: the manifest's deserializer calls it once it has checked that
    /// the element is this kind's.
    pub fn deserialize_params<'de, A: MapAccess<'de>>(
        &mut self,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match self {
            FsType::Ext2(p) | FsType::Ext3(p) | FsType::Ext4(p) => *p = Some(map.next_value()?),
            FsType::Xfs(p) => *p = Some(map.next_value()?),
            FsType::Vfat(p) => *p = Some(map.next_value()?),
            FsType::Btrfs(p) => *p = Some(map.next_value()?),
        }
        Ok(())
    }

    /// Write the parameters element, when there are parameters; skip the
    /// field otherwise.
    pub fn serialize_params<S: SerializeStruct>(&self, s: &mut S) -> Result<(), S::Error> {
        match self {
            FsType::Ext2(Some(p)) | FsType::Ext3(Some(p)) | FsType::Ext4(Some(p)) => {
                s.serialize_field("ext", p)
            }
            FsType::Xfs(Some(p)) => s.serialize_field("xfs", p),
            FsType::Vfat(Some(p)) => s.serialize_field("vfat", p),
            FsType::Btrfs(Some(p)) => s.serialize_field("btrfs", p),
            _ => s.skip_field(self.params_element()),
        }
    }
}

/// A kind compared with its name (`fs.fs_type == "vfat"`), parameters aside.
impl PartialEq<&str> for FsType {
    fn eq(&self, name: &&str) -> bool {
        self.name() == *name
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What every kind's mkfs is told besides its parameters.
#[derive(Debug, Clone, Copy)]
pub struct MkfsTarget<'a> {
    /// The device the filesystem is made on.
    pub device: &'a str,
    /// The captured filesystem UUID, as blkid shows it.
    pub uuid: &'a str,
    pub label: Option<&'a str>,
    /// Grow the filesystem to its (grown) partition after making it.
    pub grow: bool,
    pub tools: &'a Tools,
}

/// What this machine's mkfs tools can do, where it matters for the argv.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tools {
    /// `mkfs.xfs -V`; `None` when unknown (every switch is then passed).
    pub xfs_version: Option<(u32, u32, u32)>,
}

impl Tools {
    /// Ask the installed tools. A missing tool is not an error here: the
    /// preflight check reports it before anything is written.
    pub fn detect() -> Tools {
        Tools {
            xfs_version: xfs::installed_version(),
        }
    }
}

/// One parameter that mkfs made differently from the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub what: &'static str,
    pub want: String,
    pub got: String,
}

/// Collects [`Difference`]s: a field is recorded only when it differs.
#[derive(Default)]
struct Differences(Vec<Difference>);

impl Differences {
    fn cmp(&mut self, what: &'static str, want: impl ToString, got: impl ToString) {
        let (want, got) = (want.to_string(), got.to_string());
        if want != got {
            self.0.push(Difference { what, want, got });
        }
    }
}

/// 8-4-4-4-12 hex digits.
fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// A device path as a tool argument.
pub(crate) fn dev_str(dev: &Path) -> Result<&str> {
    dev.to_str()
        .with_context(|| format!("device path {} is not UTF-8", dev.display()))
}

/// `len` bytes at `offset` of `dev` (a superblock, a boot sector).
pub(crate) fn read_at(dev: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
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

/// Helpers for the kinds' tests on real images.
#[cfg(test)]
pub(crate) mod test_images {
    use std::fs::File;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Whether `tool` is on PATH (as the code under test will look for it;
    /// non-root users on Debian lack /usr/sbin and skip these tests).
    pub(crate) fn have(tool: &str) -> bool {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            eprintln!("note: {tool} not on PATH, skipping the real-image part of this test");
        }
        found
    }

    /// Run a mkfs-style tool, panicking with its output.
    pub(crate) fn make(tool: &str, args: &[&str]) {
        let out = Command::new(tool).args(args).output().unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {out:?}");
    }

    pub(crate) fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().set_len(size).unwrap();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::test_images::image;
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in NAMES {
            let kind = FsType::from_name(name).unwrap();
            assert_eq!(kind.name(), *name);
            assert!(!kind.has_params());
            assert!(PARAMS_ELEMENTS.contains(&kind.params_element()));
        }
        assert_eq!(FsType::from_name("swap"), None);
        assert_eq!(FsType::from_name("reiserfs"), None);
    }

    #[test]
    fn other_types_have_no_params_and_bad_devices_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing");
        assert_eq!(FsType::read("swap", &missing).unwrap(), None);
        let err = FsType::read("btrfs", &missing).unwrap_err();
        assert!(format!("{err:#}").contains("nothing"), "{err:#}");
        let short = image(dir.path(), "short.img", 4096);
        let err = FsType::read("btrfs", &short).unwrap_err();
        assert!(format!("{err:#}").contains("offset 65536"), "{err:#}");
    }
}
