//! A capture: probe the machine, back up each mounted filesystem into the
//! repository (incrementally against the host's previous snapshot), and
//! commit the manifest as the snapshot, last, so that an interrupted capture
//! leaves the repository as it was.
//!
//! Each filesystem is read from a snapshot where its storage allows one
//! ([`snapshot`]), between the admin's hooks ([`hooks`]), leaving out what
//! the configuration excludes ([`config`], [`crate::walk::Exclusions`]).
//! docs/capture.md is the admin's side of all this.

pub mod config;
pub mod hooks;
pub mod snapshot;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::manifest::{Filesystem, FsData, Manifest, Mount, ReadMode, StackRef};
use crate::probe::{self, ProbeOptions};
use crate::progress::Progress;
use crate::repo::{Repo, WriteStats, chunker};
use crate::tree::{self, ChunkRef, Entry, Extent, Kind};
use crate::walk;

use config::{Config, When};
use hooks::HookEnv;
use snapshot::SnapshotOptions;

#[derive(Debug, Clone, Default)]
pub struct CaptureOptions {
    pub probe: ProbeOptions,
    /// Back up only the filesystems mounted at these points (all if empty).
    pub only: Vec<PathBuf>,
    /// Show progress on stderr.
    pub progress: bool,
    /// Escrow LUKS volume keys with the server (`--escrow-luks-keys`).
    pub escrow: Option<crate::escrow::source::EscrowOptions>,
    /// Snapshots, or live reads.
    pub snapshots: SnapshotOptions,
    /// What every walk leaves out (`mount_point` is set per filesystem).
    pub exclude: walk::Exclusions,
    /// The hooks to run (the rest of the configuration is already merged
    /// into the other options).
    pub hooks: Config,
}

#[derive(Debug, Default)]
pub struct FsReport {
    pub mount_point: String,
    /// From a snapshot (which kind), or live.
    pub read: Option<ReadMode>,
    /// Entries the exclusions left out, and directories kept empty.
    pub excluded: u64,
    pub emptied_dirs: u64,
    pub entries: u64,
    pub bytes: u64,
    /// Files whose content was read.
    pub files_read: u64,
    /// Files unchanged since the parent snapshot, not read.
    pub files_reused: u64,
}

#[derive(Debug)]
pub struct CaptureReport {
    pub manifest: Manifest,
    pub filesystems: Vec<FsReport>,
    pub stored: WriteStats,
    pub warnings: Vec<String>,
}

/// Warnings of a live system that do not make a capture partial: a file
/// that changed or vanished while it was read is captured as it was, or
/// not at all because it no longer exists.
fn is_benign(warning: &str) -> bool {
    warning.contains("changed while it was read")
        || warning.ends_with(": vanished; skipped")
        || warning.contains(": vanished or changed")
}

impl CaptureReport {
    /// What `rewind capture --server` reports to the server after its
    /// commit: partial when anything was skipped or cannot be recreated.
    pub fn to_api(&self, started: &str, duration_secs: f64) -> crate::api::CaptureReport {
        let warnings: Vec<String> = self
            .warnings
            .iter()
            .filter(|w| !is_benign(w))
            .cloned()
            .collect();
        crate::api::CaptureReport {
            outcome: if warnings.is_empty() {
                crate::api::CaptureOutcome::Success
            } else {
                crate::api::CaptureOutcome::Partial
            },
            snapshot: Some(self.manifest.snapshot.id.clone()),
            started: started.to_string(),
            duration_secs,
            bytes: self.filesystems.iter().map(|f| f.bytes).sum(),
            bytes_stored: self.stored.bytes_new_stored,
            warnings,
            error: None,
        }
    }
}

/// The report of a capture that committed nothing.
pub fn failed_report(
    error: &anyhow::Error,
    started: &str,
    duration_secs: f64,
) -> crate::api::CaptureReport {
    crate::api::CaptureReport {
        outcome: crate::api::CaptureOutcome::Failed,
        snapshot: None,
        started: started.to_string(),
        duration_secs,
        bytes: 0,
        bytes_stored: 0,
        warnings: Vec::new(),
        error: Some(format!("{error:#}")),
    }
}

pub fn capture(repo: &mut Repo, opts: &CaptureOptions) -> Result<CaptureReport> {
    let probed = probe::probe(&opts.probe)?;
    let mut warnings = probed.warnings;
    let mut manifest = probed.manifest;
    let parent = repo
        .snapshots()?
        .into_iter()
        .rfind(|s| s.snapshot.host == manifest.snapshot.host);
    manifest.snapshot.parent = parent.as_ref().map(|p| p.snapshot.id.clone());
    let base_id = manifest.snapshot.id.clone();
    let mut n = 1;
    while repo.snapshot_exists(&manifest.snapshot.id)? {
        n += 1;
        manifest.snapshot.id = format!("{base_id}-{n}");
    }

    for want in &opts.only {
        let known = manifest
            .filesystems
            .iter()
            .any(|f| f.mounts.iter().any(|m| Path::new(&m.point) == want));
        anyhow::ensure!(
            known,
            "--only {}: no captured filesystem is mounted there (rewind capture --manifest-only shows what is)",
            want.display()
        );
    }

    remove_leftover_snapshots(&manifest, &mut warnings);
    // Boot gap, BIOS boot partition, small unknown partitions: byte for byte.
    crate::raw_regions::capture_raw_regions(repo, &mut manifest, &mut warnings);
    // LUKS headers: byte for byte, for luksHeaderRestore.
    capture_luks_headers(repo, &mut manifest, &mut warnings);
    crate::escrow::source::escrow_captured(&mut manifest, opts.escrow.as_ref(), &mut warnings);

    hooks::run_stage(
        &opts.hooks,
        When::BeforeCapture,
        &HookEnv::default(),
        &mut warnings,
    )
    .map_err(|e| {
        run_after_capture(opts, false, &mut Vec::new());
        e.context("the capture was not started")
    })?;
    let backed_up = back_up_filesystems(repo, &mut manifest, parent.as_ref(), opts, &mut warnings)
        .and_then(|reports| {
            // <data read> needs schema 2.
            manifest.schema = manifest
                .schema
                .max(crate::manifest::required_schema(&manifest));
            repo.commit_snapshot(&manifest)?;
            Ok(reports)
        });
    run_after_capture(opts, backed_up.is_ok(), &mut warnings);
    Ok(CaptureReport {
        manifest,
        filesystems: backed_up?,
        stored: repo.stats,
        warnings,
    })
}

fn run_after_capture(opts: &CaptureOptions, ok: bool, warnings: &mut Vec<String>) {
    let env = HookEnv {
        outcome: Some(if ok { "success" } else { "failed" }.into()),
        ..HookEnv::default()
    };
    // Post-hooks report failures as warnings; they never fail the capture.
    let _ = hooks::run_stage(&opts.hooks, When::AfterCapture, &env, warnings);
}

/// The mount a filesystem's data is read from: its root mount, or its first.
fn data_mount(fs: &Filesystem) -> Option<&Mount> {
    fs.mounts
        .iter()
        .find(|m| m.root == "/")
        .or(fs.mounts.first())
}

/// Snapshots that earlier captures, killed, left behind.
fn remove_leftover_snapshots(m: &Manifest, warnings: &mut Vec<String>) {
    let btrfs_points: Vec<PathBuf> = m
        .filesystems
        .iter()
        .filter(|f| matches!(f.fs_type, crate::manifest::FsType::Btrfs(_)))
        .flat_map(|f| f.mounts.iter().map(|m| PathBuf::from(&m.point)))
        .collect();
    let lvm = !m.volume_groups.is_empty();
    for gone in snapshot::remove_leftovers(&btrfs_points, lvm, warnings) {
        eprintln!("rewind: removed {gone}, a snapshot left by an earlier capture");
    }
}

/// Back up every mounted filesystem (those of `--only`), each from a
/// snapshot where one can be taken, and record its `<data>`.
fn back_up_filesystems(
    repo: &mut Repo,
    manifest: &mut Manifest,
    parent: Option<&Manifest>,
    opts: &CaptureOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<FsReport>> {
    let mut reports = Vec::new();
    for fs in manifest.filesystems.iter_mut() {
        let Some(mount) = data_mount(fs) else {
            warnings.push(format!(
                "no data for {} ({}): it is not mounted",
                fs.device, fs.fs_type
            ));
            continue;
        };
        let point = PathBuf::from(&mount.point);
        if !opts.only.is_empty() && !opts.only.contains(&point) {
            continue;
        }
        let previous = parent
            .and_then(|p| {
                p.filesystems
                    .iter()
                    .find(|f| f.uuid == fs.uuid && f.fs_type.same_kind(&fs.fs_type))
            })
            .and_then(|f| f.data.clone());
        let previous_files = match previous {
            Some(data) => load_files(repo, &data)?,
            None => HashMap::new(),
        };
        let report = back_up_filesystem(repo, fs, &point, &previous_files, opts, warnings)
            .with_context(|| format!("cannot back up {}", point.display()))?;
        reports.push(report);
    }
    Ok(reports)
}

/// One filesystem: its pre-snapshot hooks, its snapshot, its post-snapshot
/// hooks (after the snapshot is taken; after the read when it is read live),
/// the walk, and the snapshot removed.
fn back_up_filesystem(
    repo: &mut Repo,
    fs: &mut Filesystem,
    point: &Path,
    previous_files: &HashMap<Vec<u8>, Entry>,
    opts: &CaptureOptions,
    warnings: &mut Vec<String>,
) -> Result<FsReport> {
    let Some(mount) = data_mount(fs).cloned() else {
        anyhow::bail!("{} is not mounted", fs.device);
    };
    let mut env = HookEnv {
        mount_point: Some(mount.point.clone()),
        ..HookEnv::default()
    };
    if let Err(e) = hooks::run_stage(&opts.hooks, When::BeforeSnapshot, &env, warnings) {
        let _ = hooks::run_stage(&opts.hooks, When::AfterSnapshot, &env, warnings);
        return Err(e);
    }
    let read_only = mount.options.split(',').any(|o| o == "ro");
    let taken = snapshot::take(fs, point, read_only, &opts.snapshots, warnings);
    env.read = Some(taken.read.name().to_string());
    let live = taken.read == ReadMode::Live;
    if !live {
        let _ = hooks::run_stage(&opts.hooks, When::AfterSnapshot, &env, warnings);
    }
    let progress = if opts.progress {
        let from = if live {
            String::new()
        } else {
            format!(" (from its {})", taken.read.name())
        };
        Progress::new(format!("rewind: backing up {}{from}", mount.point), None)
    } else {
        Progress::quiet()
    };
    let exclude = walk::Exclusions {
        mount_point: mount.point.as_bytes().to_vec(),
        // The capture's own btrfs snapshots, under every btrfs mount.
        hidden_at_root: vec![format!("{}*", snapshot::BTRFS_PREFIX)],
        ..opts.exclude.clone()
    };
    let backed = backup_tree_excluding(
        repo,
        &taken.root,
        &exclude,
        previous_files,
        warnings,
        &progress,
    );
    progress.finish();
    if live {
        let _ = hooks::run_stage(&opts.hooks, When::AfterSnapshot, &env, warnings);
    }
    let read = taken.read;
    if let Err(e) = taken.remove() {
        warnings.push(format!("{e:#}"));
    }
    let (tree_id, mut report) = backed?;
    report.mount_point = mount.point.clone();
    report.read = Some(read);
    fs.data = Some(FsData {
        tree: tree_id.into(),
        from: mount.point.clone(),
        entries: report.entries,
        bytes: report.bytes,
        read: Some(read),
    });
    Ok(report)
}

/// The regular files of a previous tree, by path, for change detection.
/// The device a LUKS volume's header is on, as the running system names it.
fn luks_backing_path(m: &Manifest, on: &StackRef) -> Option<PathBuf> {
    Some(PathBuf::from(match on {
        StackRef::Disk(d) => m.disks.iter().find(|x| &x.name == d)?.path.clone(),
        StackRef::Partition(d, n) => {
            crate::layout::present::partition_path(&m.disks.iter().find(|x| &x.name == d)?.path, *n)
        }
        StackRef::Md(n) => m.md_arrays.iter().find(|a| &a.name == n)?.device.clone(),
        StackRef::Luks(n) => format!("/dev/mapper/{n}"),
        StackRef::Lv(..) => crate::layout::stack::device_path(on)?,
    }))
}

/// Store each LUKS volume's header — everything before its data, what
/// `cryptsetup luksHeaderBackup` saves — as a tree of one file, and record
/// it as the volume's `<header>`. A header that cannot be read is a warning:
/// recovery then needs a new header made with the escrowed key.
fn capture_luks_headers(repo: &mut Repo, m: &mut Manifest, warnings: &mut Vec<String>) {
    for i in 0..m.luks.len() {
        let (name, len) = (m.luks[i].name.clone(), m.luks[i].data_offset);
        let Some(path) = luks_backing_path(m, &m.luks[i].on) else {
            continue;
        };
        match store_luks_header(repo, &path, len) {
            Ok(tree) => {
                m.luks[i].header = Some(crate::manifest::LuksHeader {
                    tree: tree.into(),
                    bytes: len,
                })
            }
            Err(e) => warnings.push(format!(
                "the LUKS header of {name} on {} was not stored: {e:#}",
                path.display()
            )),
        }
    }
}

/// The first `len` bytes of `dev` as a tree of one file, `luks-header`.
pub fn store_luks_header(repo: &mut Repo, dev: &Path, len: u64) -> Result<crate::tree::ChunkId> {
    let file = File::open(dev).with_context(|| format!("cannot open {}", dev.display()))?;
    let mut magic = [0u8; 6];
    file.read_exact_at(&mut magic, 0)
        .with_context(|| format!("cannot read {}", dev.display()))?;
    anyhow::ensure!(
        &magic == b"LUKS\xba\xbe",
        "{} holds no LUKS header",
        dev.display()
    );
    let (chunks, total) = repo
        .store_stream(&mut chunker::StreamChunker::new(), file.take(len))
        .with_context(|| format!("cannot read {len} bytes of {}", dev.display()))?;
    anyhow::ensure!(
        total == len,
        "{} is {len} bytes of header but only {total} could be read",
        dev.display()
    );
    repo.add_one_file_tree(b"luks-header", chunks, len)
}

fn load_files(repo: &Repo, data: &FsData) -> Result<HashMap<Vec<u8>, Entry>> {
    let id = data.tree.id();
    let mut out = HashMap::new();
    for e in repo.tree_entries(&id)? {
        let e = e?;
        if e.kind == Kind::File && e.hardlink_to.is_none() {
            out.insert(e.path.clone(), e);
        }
    }
    Ok(out)
}

/// Walk one filesystem, store new content, and store the tree.
pub fn backup_tree(
    repo: &mut Repo,
    root: &Path,
    previous: &HashMap<Vec<u8>, Entry>,
    warnings: &mut Vec<String>,
    progress: &Progress,
) -> Result<(tree::ChunkId, FsReport)> {
    let nothing = walk::Exclusions::default();
    backup_tree_excluding(repo, root, &nothing, previous, warnings, progress)
}

/// [`backup_tree`], leaving out what `exclude` names.
pub fn backup_tree_excluding(
    repo: &mut Repo,
    root: &Path,
    exclude: &walk::Exclusions,
    previous: &HashMap<Vec<u8>, Entry>,
    warnings: &mut Vec<String>,
    progress: &Progress,
) -> Result<(tree::ChunkId, FsReport)> {
    let mut report = FsReport {
        mount_point: root.display().to_string(),
        ..FsReport::default()
    };
    let mut stream = Vec::new();
    let mut chunker = chunker::StreamChunker::new();
    let stats = walk::walk_excluding(
        root,
        exclude,
        &mut |entry: &mut Entry, content: &walk::FileContent| {
            if entry.kind == Kind::File && entry.hardlink_to.is_none() && entry.size > 0 {
                match previous.get(&entry.path) {
                    Some(prev)
                        if unchanged(prev, entry)
                            && prev.chunks.iter().all(|c| repo.contains(&c.id)) =>
                    {
                        entry.extents = prev.extents.clone();
                        entry.chunks = prev.chunks.clone();
                        report.files_reused += 1;
                    }
                    _ => {
                        let (file, extents) = content.open()?;
                        let (chunks, read) = store_content(repo, &mut chunker, &file, &extents)
                            .with_context(|| format!("cannot back up {}", entry.display_path()))?;
                        let expected: u64 = extents.iter().map(|e| e.len).sum();
                        entry.extents = extents;
                        if read != expected {
                            warnings.push(format!(
                                "{} changed while it was read; its backup holds what was read",
                                entry.display_path()
                            ));
                            trim_extents(&mut entry.extents, read);
                        }
                        entry.chunks = chunks;
                        report.files_read += 1;
                        progress.add(read, true);
                    }
                }
                report.bytes += entry.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>();
            }
            report.entries += 1;
            tree::write_entry(&mut stream, entry)
        },
    )?;
    warnings.extend(stats.warnings);
    report.excluded = stats.excluded_entries;
    report.emptied_dirs = stats.emptied_dirs;
    let id = repo.add_tree(&stream)?;
    Ok((id, report))
}

/// The change test of an incremental capture: same size, times and inode.
fn unchanged(prev: &Entry, now: &Entry) -> bool {
    prev.size == now.size
        && prev.mtime == now.mtime
        && prev.ctime == now.ctime
        && prev.ino == now.ino
}

fn store_content(
    repo: &mut Repo,
    chunker: &mut chunker::StreamChunker,
    file: &File,
    extents: &[Extent],
) -> Result<(Vec<ChunkRef>, u64)> {
    repo.store_stream(chunker, ExtentReader::new(file, extents))
}

/// Keep the extents covering the first `len` data bytes.
fn trim_extents(extents: &mut Vec<Extent>, mut len: u64) {
    extents.retain_mut(|e| {
        if len == 0 {
            return false;
        }
        e.len = e.len.min(len);
        len -= e.len;
        true
    });
}

/// The data regions of a file, read in order as one stream.
pub struct ExtentReader<'a> {
    file: &'a File,
    extents: &'a [Extent],
    index: usize,
    pos: u64,
}

impl<'a> ExtentReader<'a> {
    pub fn new(file: &'a File, extents: &'a [Extent]) -> Self {
        ExtentReader {
            file,
            extents,
            index: 0,
            pos: 0,
        }
    }
}

impl Read for ExtentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(e) = self.extents.get(self.index) {
            let left = e.len - self.pos;
            if left == 0 {
                self.index += 1;
                self.pos = 0;
                continue;
            }
            let want = buf.len().min(left as usize);
            let n = self.file.read_at(&mut buf[..want], e.offset + self.pos)?;
            if n == 0 {
                // The file shrank: its remaining extents are gone.
                self.index = self.extents.len();
                return Ok(0);
            }
            self.pos += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_luks_header_is_stored_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repo::init(&dir.path().join("repo")).unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stack/luks2-header.bin");
        let header = std::fs::read(&fixture).unwrap();
        let tree = store_luks_header(&mut repo, &fixture, header.len() as u64).unwrap();
        repo.flush().unwrap();
        let raw = crate::manifest::RawData {
            region: "luks-header".into(),
            tree: tree.into(),
            bytes: header.len() as u64,
        };
        let mut back = Vec::new();
        crate::raw_regions::open_region(&repo, &raw)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, header);
        // Not a LUKS device: refused, naming it.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, [0u8; 8192]).unwrap();
        let e = store_luks_header(&mut repo, &plain, 4096).unwrap_err();
        assert!(e.to_string().ends_with("plain holds no LUKS header"), "{e}");
        // Longer than the device: refused.
        let e = store_luks_header(&mut repo, &fixture, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("only 16384 could be read"), "{e}");
    }

    #[test]
    fn extent_reader_reads_regions_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789abcdef").unwrap();
        let f = File::open(&p).unwrap();
        let extents = [Extent { offset: 2, len: 3 }, Extent { offset: 10, len: 4 }];
        let mut out = Vec::new();
        ExtentReader::new(&f, &extents)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"234abcd");
        // Past the end of a file that shrank.
        let extents = [Extent {
            offset: 14,
            len: 10,
        }];
        let mut out = Vec::new();
        ExtentReader::new(&f, &extents)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"ef");
    }

    #[test]
    fn benign_warnings_do_not_make_a_capture_partial() {
        assert!(is_benign(
            "/var/log/syslog changed while it was read; its backup holds what was read"
        ));
        assert!(is_benign("/tmp/x: vanished; skipped"));
        assert!(!is_benign("/srv/x: unknown file type; skipped"));
        assert!(!is_benign(
            "no data for /dev/vg0/data (xfs): it is not mounted"
        ));
        assert!(!is_benign("/dev/md0: RAID is not recorded"));
    }

    #[test]
    fn trimming_extents() {
        let mut e = vec![Extent { offset: 0, len: 4 }, Extent { offset: 8, len: 4 }];
        trim_extents(&mut e, 6);
        assert_eq!(
            e,
            [Extent { offset: 0, len: 4 }, Extent { offset: 8, len: 2 }]
        );
    }
}
