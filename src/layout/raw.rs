//! Regions restored byte for byte: partitions holding no filesystem rewind
//! knows (a BIOS boot partition with GRUB's core.img) and the MBR boot gap.
//! Where the bytes come from is behind [`RawSource`], so that the data
//! engine plugs in its snapshot reader; a directory of files is the simple
//! source the command line offers.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Which raw region of a captured disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawRegion {
    Partition(u32),
    /// The sectors between the MBR and the first partition.
    BootGap,
}

impl std::fmt::Display for RawRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawRegion::Partition(n) => write!(f, "partition {n}"),
            RawRegion::BootGap => f.write_str("boot gap"),
        }
    }
}

/// The saved bytes of a raw region of captured disk `disk` (its manifest
/// name), or `None` when the snapshot holds none (the region stays blank).
pub trait RawSource {
    fn open(&mut self, disk: &str, region: RawRegion) -> Result<Option<Box<dyn Read + '_>>>;
}

/// No saved bytes at all (a manifest-only snapshot).
pub struct NoRawData;

impl RawSource for NoRawData {
    fn open(&mut self, _: &str, _: RawRegion) -> Result<Option<Box<dyn Read + '_>>> {
        Ok(None)
    }
}

/// Files in a directory: `DISK.pN.raw` for partition N, `DISK.boot-gap.raw`
/// for the boot gap (for example saved with dd from the original disk).
pub struct RawDir(pub PathBuf);

impl RawDir {
    pub fn file_name(disk: &str, region: RawRegion) -> String {
        match region {
            RawRegion::Partition(n) => format!("{disk}.p{n}.raw"),
            RawRegion::BootGap => format!("{disk}.boot-gap.raw"),
        }
    }
}

impl RawSource for RawDir {
    fn open(&mut self, disk: &str, region: RawRegion) -> Result<Option<Box<dyn Read + '_>>> {
        let path = self.0.join(Self::file_name(disk, region));
        match File::open(&path) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot open {}", path.display())),
        }
    }
}

/// Copy `src` into `dst` at byte `offset`; it may hold at most `len` bytes
/// (more is an error: it belongs to a bigger region than the one planned).
/// Returns the bytes copied.
pub fn copy_region<W: Write + Seek>(
    src: &mut dyn Read,
    dst: &mut W,
    offset: u64,
    len: u64,
) -> Result<u64> {
    dst.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = src.read(&mut buf).context("cannot read the saved bytes")?;
        if n == 0 {
            return Ok(done);
        }
        if done + n as u64 > len {
            bail!("the saved bytes are longer than the {len}-byte region");
        }
        dst.write_all(&buf[..n])
            .with_context(|| format!("cannot write at offset {}", offset + done))?;
        done += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn copies_within_the_region_only() {
        let mut disk = Cursor::new(vec![0u8; 64]);
        let n = copy_region(&mut &b"abcd"[..], &mut disk, 8, 8).unwrap();
        assert_eq!(n, 4);
        assert_eq!(&disk.get_ref()[8..12], b"abcd");
        let err = copy_region(&mut &[1u8; 9][..], &mut disk, 8, 8).unwrap_err();
        assert!(format!("{err:#}").contains("longer than the 8-byte region"));
    }

    #[test]
    fn directory_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sda.p1.raw"), b"core").unwrap();
        let mut src = RawDir(dir.path().to_path_buf());
        let mut got = String::new();
        src.open("sda", RawRegion::Partition(1))
            .unwrap()
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "core");
        assert!(src.open("sda", RawRegion::BootGap).unwrap().is_none());
        assert!(NoRawData.open("sda", RawRegion::BootGap).unwrap().is_none());
    }
}
