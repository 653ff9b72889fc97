//! Raw regions of a disk saved with a snapshot: the MBR boot gap (GRUB's
//! core.img on BIOS/MBR disks), a GPT BIOS boot partition, and other small
//! partitions holding nothing rewind recreates. Capture stores each as a
//! tree of one file entry (so chunking, packing, deduplication, check and
//! prune treat it like any file) and names it in the manifest with
//! `<raw region tree bytes>`; recovery reads it back through [`RepoRaw`],
//! a [`RawSource`] over the repository (local directory or server alike).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, Result, bail, ensure};

use crate::layout::raw::{RawRegion, RawSource};
use crate::manifest::{Disk, Manifest, RawData, RegionName, StackRef};
use crate::repo::{Repo, chunker};
use crate::tree::{ChunkId, ChunkRef, Extent, Kind};

/// GPT type of a BIOS boot partition (GRUB's core.img on a GPT disk).
pub const BIOS_BOOT_TYPE: &str = "21686148-6449-6e6f-744e-656564454649";

/// Unknown partitions up to this size are stored raw; bigger ones are not.
pub const SMALL_PARTITION: u64 = 64 << 20;

impl From<RawRegion> for RegionName {
    fn from(r: RawRegion) -> RegionName {
        match r {
            RawRegion::BootGap => RegionName::BootGap,
            RawRegion::Partition(n) => RegionName::Partition(n),
        }
    }
}

/// The regions of captured disk `d` whose bytes a capture stores, and a
/// warning for each region it leaves out.
pub fn regions_to_store(m: &Manifest, d: &Disk) -> (Vec<RegionName>, Vec<String>) {
    let mut regions = Vec::new();
    let mut warnings = Vec::new();
    if d.boot_gap.is_some() {
        regions.push(RegionName::BootGap);
    }
    // A member of a stack layer (MD array, LUKS volume, LVM PV, btrfs
    // device) is recreated with its layer: not raw bytes to store.
    let in_stack = |n: u32| {
        let here =
            |r: &StackRef| matches!(r, StackRef::Partition(disk, p) if *disk == d.name && *p == n);
        m.md_arrays
            .iter()
            .any(|a| a.members.iter().any(|mem| here(&mem.device)))
            || m.luks.iter().any(|l| here(&l.on))
            || m.volume_groups
                .iter()
                .any(|vg| vg.pvs.iter().any(|pv| here(&pv.device)))
            || m.filesystems
                .iter()
                .any(|f| f.members.iter().any(|b| here(&b.device)))
    };
    let known = |n: u32| {
        m.filesystems
            .iter()
            .any(|f| f.disk.as_deref() == Some(&d.name) && f.partition == Some(n))
            || m.swaps
                .iter()
                .any(|s| s.disk.as_deref() == Some(&d.name) && s.partition == Some(n))
            || in_stack(n)
    };
    let mut parts: Vec<(u32, bool)> = Vec::new();
    if let Some(g) = &d.gpt {
        parts.extend(
            g.partitions
                .iter()
                .map(|p| (p.number, p.type_guid.eq_ignore_ascii_case(BIOS_BOOT_TYPE))),
        );
    } else if let Some(mbr) = &d.mbr {
        parts.extend(
            mbr.partitions
                .iter()
                .filter(|p| p.kind != crate::manifest::MbrKind::Extended)
                .map(|p| (p.number, false)),
        );
    }
    for (n, bios_boot) in parts {
        if known(n) {
            continue;
        }
        let region = RegionName::Partition(n);
        let Some((_, len)) = d.region_extent(region) else {
            continue;
        };
        if bios_boot || len <= SMALL_PARTITION {
            regions.push(region);
        } else {
            warnings.push(format!(
                "not stored: partition {n} of {} ({}) holds nothing rewind recreates and is bigger than {}; it will be recreated empty",
                d.path,
                crate::util::size::human_bytes(len),
                crate::util::size::human_bytes(SMALL_PARTITION)
            ));
        }
    }
    (regions, warnings)
}

/// Store the raw regions of every disk of `m` (read from the disk's device
/// path) and record them in the manifest. A disk that cannot be opened
/// (EPERM in a container, say) is skipped with a warning.
pub fn capture_raw_regions(repo: &mut Repo, m: &mut Manifest, warnings: &mut Vec<String>) {
    for i in 0..m.disks.len() {
        let (regions, w) = regions_to_store(m, &m.disks[i]);
        warnings.extend(w);
        if regions.is_empty() {
            continue;
        }
        let d = &m.disks[i];
        let mut dev = match File::open(&d.path) {
            Ok(f) => f,
            Err(e) => {
                warnings.push(format!(
                    "raw regions of {} not stored ({}): cannot open it: {e}; they will be left blank on recovery",
                    d.path,
                    regions
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            }
        };
        let mut stored = Vec::new();
        for region in regions {
            let Some((offset, len)) = d.region_extent(region) else {
                continue;
            };
            match store_region(repo, &mut dev, region, offset, len) {
                Ok(tree) => stored.push(RawData {
                    region: region.to_string(),
                    tree: tree.into(),
                    bytes: len,
                }),
                Err(e) => warnings.push(format!(
                    "{region} of {} not stored: {e:#}; it will be left blank on recovery",
                    d.path
                )),
            }
        }
        m.disks[i].raw = stored;
    }
}

/// Read `len` bytes at `offset` of `dev` into the repository as a tree of
/// one file entry named after the region; returns the tree's id.
pub fn store_region<R: Read + Seek>(
    repo: &mut Repo,
    dev: &mut R,
    region: RegionName,
    offset: u64,
    len: u64,
) -> Result<ChunkId> {
    dev.seek(SeekFrom::Start(offset))
        .with_context(|| format!("cannot seek to byte {offset}"))?;
    let (chunks, total) = repo
        .store_stream(&mut chunker::StreamChunker::new(), dev.take(len))
        .with_context(|| format!("cannot read the {region} ({len} bytes at byte {offset})"))?;
    ensure!(
        total == len,
        "the {region} is {len} bytes but only {total} could be read"
    );
    repo.add_one_file_tree(&region.to_string().into_bytes(), chunks, len)
}

/// The raw regions a snapshot holds, read from its repository.
pub struct RepoRaw<'a> {
    pub repo: &'a Repo,
    pub manifest: &'a Manifest,
}

impl RawSource for RepoRaw<'_> {
    fn open(&mut self, disk: &str, region: RawRegion) -> Result<Option<Box<dyn Read + '_>>> {
        let Some(d) = self.manifest.disks.iter().find(|d| d.name == disk) else {
            return Ok(None);
        };
        let Some(raw) = d.raw_data(region.into()) else {
            return Ok(None);
        };
        open_region(self.repo, raw)
            .with_context(|| format!("cannot read the saved {region} of {disk}"))
            .map(Some)
    }
}

/// The bytes of a stored region, streamed and verified chunk by chunk.
pub fn open_region<'a>(repo: &'a Repo, raw: &RawData) -> Result<Box<dyn Read + 'a>> {
    let tree = raw.tree.id();
    let mut entries = repo.tree_entries(&tree)?;
    let entry = match entries.next() {
        Some(e) => e?,
        None => bail!("tree {} is empty", raw.tree),
    };
    ensure!(
        entry.kind == Kind::File && entry.size == raw.bytes,
        "tree {} holds {:?} of {} bytes, not the {}-byte region",
        raw.tree,
        entry.kind,
        entry.size,
        raw.bytes
    );
    Ok(Box::new(FileReader {
        repo,
        size: entry.size,
        extents: entry.extents,
        chunks: entry.chunks.into_iter(),
        pos: 0,
        buf: Vec::new(),
        buf_pos: 0,
    }))
}

/// A file entry's content: its extents' bytes from its chunks, zeros in the holes.
struct FileReader<'a> {
    repo: &'a Repo,
    size: u64,
    extents: Vec<Extent>,
    chunks: std::vec::IntoIter<ChunkRef>,
    pos: u64,
    buf: Vec<u8>,
    buf_pos: usize,
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let in_extent = self
            .extents
            .iter()
            .find(|e| e.offset <= self.pos && self.pos < e.offset + e.len);
        let n = match in_extent {
            None => {
                let next = self
                    .extents
                    .iter()
                    .map(|e| e.offset)
                    .filter(|&o| o > self.pos)
                    .min()
                    .unwrap_or(self.size);
                let n = out.len().min((next - self.pos) as usize);
                out[..n].fill(0);
                n
            }
            Some(e) => {
                if self.buf_pos == self.buf.len() {
                    let Some(c) = self.chunks.next() else {
                        return Err(std::io::Error::other("the chunk list ends early"));
                    };
                    self.buf = self
                        .repo
                        .fetch_verified(&c)
                        .map_err(std::io::Error::other)?;
                    self.buf_pos = 0;
                }
                let left_in_extent = (e.offset + e.len - self.pos) as usize;
                let n = out
                    .len()
                    .min(left_in_extent)
                    .min(self.buf.len() - self.buf_pos);
                out[..n].copy_from_slice(&self.buf[self.buf_pos..self.buf_pos + n]);
                self.buf_pos += n;
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{BootGap, Gpt, GptPartition};

    fn disk() -> Disk {
        Disk {
            name: "sda".into(),
            path: "/dev/sda".into(),
            size: 1 << 30,
            logical_sector_size: 512,
            physical_sector_size: 512,
            model: None,
            serial: None,
            wwn: None,
            driver: None,
            controller: None,
            transport: None,
            gpt: Some(Gpt {
                disk_guid: "a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f".into(),
                first_usable_lba: 34,
                last_usable_lba: (1 << 21) - 34,
                entries: 128,
                partitions: vec![
                    part(1, 2048, 4095, BIOS_BOOT_TYPE),
                    part(2, 4096, 8191, "0fc63daf-8483-4772-8e79-3d69d8477de4"),
                    part(
                        3,
                        8192,
                        8192 + (65 << 11) - 1,
                        "0fc63daf-8483-4772-8e79-3d69d8477de4",
                    ),
                    part(4, 300_000, 400_000, "0fc63daf-8483-4772-8e79-3d69d8477de4"),
                ],
            }),
            mbr: None,
            boot_code: None,
            boot_gap: None,
            raw: Vec::new(),
        }
    }

    fn part(number: u32, first_lba: u64, last_lba: u64, ty: &str) -> GptPartition {
        GptPartition {
            number,
            first_lba,
            last_lba,
            type_guid: ty.into(),
            guid: format!("11111111-2222-4333-8444-55555555550{number}")
                .as_str()
                .into(),
            name: String::new(),
            attributes: 0,
        }
    }

    #[test]
    fn which_regions_are_stored() {
        let mut m = crate::manifest::tests::sample();
        let d = disk();
        m.disks = vec![d.clone()];
        m.filesystems.truncate(1);
        m.filesystems[0].disk = Some("sda".into());
        m.filesystems[0].partition = Some(4);
        m.swaps.clear();
        let (regions, warnings) = regions_to_store(&m, &d);
        // 1: BIOS boot; 2: small unknown; 3: 65 MiB unknown (warned); 4: ext4.
        assert_eq!(
            regions,
            [RegionName::Partition(1), RegionName::Partition(2)]
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("partition 3 of /dev/sda"),
            "{warnings:?}"
        );
    }

    #[test]
    fn members_of_a_stack_layer_are_neither_stored_nor_warned_about() {
        let mut m = crate::manifest::stack_tests::sample_stack();
        let d = disk();
        m.disks = vec![d.clone()];
        m.filesystems.retain(|f| f.disk.is_none());
        m.swaps.retain(|s| s.disk.is_none());
        // Partitions 2 (small) and 3 (65 MiB) of sda: an MD array's members.
        m.md_arrays[0].members[0].device = StackRef::Partition("sda".into(), 2);
        m.md_arrays[0].members[1].device = StackRef::Partition("sda".into(), 3);
        let (regions, warnings) = regions_to_store(&m, &d);
        assert!(!regions.contains(&RegionName::Partition(2)), "{regions:?}");
        assert!(
            !warnings.iter().any(|w| w.contains("partition 3 ")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_region_round_trips_through_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repo::init(dir.path()).unwrap();
        let mut image: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        image[2_000_000..2_600_000].fill(0);
        let mut dev = std::io::Cursor::new(image.clone());
        let tree = store_region(
            &mut repo,
            &mut dev,
            RegionName::BootGap,
            512,
            2_999_000 - 512,
        )
        .unwrap();
        repo.flush().unwrap();
        let mut d = disk();
        d.gpt = None;
        d.mbr = Some(crate::manifest::Mbr {
            signature: "0x01020304".into(),
            partitions: Vec::new(),
        });
        d.boot_gap = Some(BootGap {
            first_lba: 1,
            last_lba: 2_999_000 / 512 - 1,
        });
        d.raw = vec![RawData {
            region: "boot-gap".into(),
            tree: tree.into(),
            bytes: 2_999_000 - 512,
        }];
        let mut m = crate::manifest::tests::sample();
        m.disks = vec![d];
        let mut src = RepoRaw {
            repo: &repo,
            manifest: &m,
        };
        let mut back = Vec::new();
        src.open("sda", RawRegion::BootGap)
            .unwrap()
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, image[512..2_999_000]);
        assert!(src.open("sda", RawRegion::Partition(1)).unwrap().is_none());
        assert!(src.open("sdz", RawRegion::BootGap).unwrap().is_none());
    }

    #[test]
    fn a_disk_that_cannot_be_opened_is_skipped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repo::init(dir.path()).unwrap();
        let mut m = crate::manifest::tests::sample();
        let mut d = disk();
        d.path = dir.path().join("no-such-disk").display().to_string();
        m.disks = vec![d];
        m.filesystems.clear();
        m.swaps.clear();
        let mut warnings = Vec::new();
        capture_raw_regions(&mut repo, &mut m, &mut warnings);
        assert!(m.disks[0].raw.is_empty());
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("no-such-disk") && w.contains("partition-1")),
            "{warnings:?}"
        );
    }

    #[test]
    fn holes_read_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(dir.path()).unwrap();
        let mut r = FileReader {
            repo: &repo,
            size: 10,
            extents: Vec::new(),
            chunks: Vec::new().into_iter(),
            pos: 0,
            buf: Vec::new(),
            buf_pos: 0,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, [0u8; 10]);
    }
}
