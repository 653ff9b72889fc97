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

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use anyhow::{Context, Result};

use crate::manifest::{Filesystem, FsData, Manifest, Mount, ReadMode, StackRef};
use crate::probe::{self, ProbeOptions};
use crate::progress::Progress;
use crate::repo::{Repo, TreeWriter, WriteStats, chunker};
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
    let mut probed = probe::probe(&opts.probe)?;
    // Snapshots that killed captures left are removed first; when there
    // were any the machine is probed again, so that none of them (a btrfs
    // snapshot subvolume, a snapshot LV) is described as the machine's own.
    let mut cleanup_warnings = Vec::new();
    if remove_leftover_snapshots(&probed.manifest, &mut cleanup_warnings) > 0 {
        probed = probe::probe(&opts.probe)?;
    }
    let mut warnings = probed.warnings;
    warnings.extend(cleanup_warnings);
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

/// Snapshots that earlier captures, killed, left behind. Returns how many
/// were removed.
fn remove_leftover_snapshots(m: &Manifest, warnings: &mut Vec<String>) -> usize {
    let btrfs_points: Vec<PathBuf> = m
        .filesystems
        .iter()
        .filter(|f| matches!(f.fs_type, crate::manifest::FsType::Btrfs(_)))
        .flat_map(|f| f.mounts.iter().map(|m| PathBuf::from(&m.point)))
        .collect();
    let lvm = !m.volume_groups.is_empty();
    let removed = snapshot::remove_leftovers(&btrfs_points, lvm, warnings);
    for gone in &removed {
        eprintln!("rewind: removed {gone}, a snapshot left by an earlier capture");
    }
    removed.len()
}

/// The other mounts of a btrfs whose subvolume lies outside the tree read
/// from `data_mount` (`@home` on /home beside `@` on /): each is read from
/// its own mount into its subvolume's `<data>`. By subvolume index, one
/// mount each (the first by mount point); a mount of a plain directory is
/// inside some subvolume's tree already.
fn subvolume_mounts(fs: &Filesystem) -> Vec<(usize, Mount)> {
    let Some(main) = data_mount(fs) else {
        return Vec::new();
    };
    let mut mounts: Vec<&Mount> = fs.mounts.iter().filter(|m| m.root != main.root).collect();
    mounts.sort_by(|a, b| a.point.cmp(&b.point));
    let mut out: Vec<(usize, Mount)> = Vec::new();
    for m in mounts {
        let Some(i) = fs
            .subvolumes
            .iter()
            .position(|s| m.root.trim_start_matches('/') == s.path)
        else {
            continue;
        };
        if !out.iter().any(|(j, _)| *j == i) {
            out.push((i, m.clone()));
        }
    }
    out
}

/// Back up every mounted filesystem (those of `--only`), each from a
/// snapshot where one can be taken, and record its `<data>` (and its
/// separately mounted btrfs subvolumes' `<data>`).
fn back_up_filesystems(
    repo: &mut Repo,
    manifest: &mut Manifest,
    parent: Option<&Manifest>,
    opts: &CaptureOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<FsReport>> {
    let mut reports = Vec::new();
    for fs in manifest.filesystems.iter_mut() {
        let Some(mount) = data_mount(fs).cloned() else {
            warnings.push(format!(
                "no data for {} ({}): it is not mounted",
                fs.device, fs.fs_type
            ));
            continue;
        };
        let wanted =
            |m: &Mount| opts.only.is_empty() || opts.only.contains(&PathBuf::from(&m.point));
        let previous_fs = parent.and_then(|p| {
            p.filesystems
                .iter()
                .find(|f| f.uuid == fs.uuid && f.fs_type.same_kind(&fs.fs_type))
        });
        if wanted(&mount) {
            let previous = previous_fs
                .and_then(|f| f.data.as_ref())
                .map(|data| data.tree.id());
            let (data, report) = back_up_mount(repo, fs, &mount, previous.as_ref(), opts, warnings)
                .with_context(|| format!("cannot back up {}", mount.point))?;
            fs.data = Some(data);
            reports.push(report);
        }
        for (i, sub_mount) in subvolume_mounts(fs) {
            if !wanted(&sub_mount) {
                continue;
            }
            let path = fs.subvolumes[i].path.clone();
            let previous = previous_fs
                .and_then(|f| f.subvolumes.iter().find(|s| s.path == path))
                .and_then(|s| s.data.as_ref())
                .map(|data| data.tree.id());
            let (data, report) =
                back_up_mount(repo, fs, &sub_mount, previous.as_ref(), opts, warnings)
                    .with_context(|| {
                        format!("cannot back up {} (subvolume {path})", sub_mount.point)
                    })?;
            fs.subvolumes[i].data = Some(data);
            reports.push(report);
        }
    }
    Ok(reports)
}

/// One mount of a filesystem: its pre-snapshot hooks, its snapshot, its
/// post-snapshot hooks (after the snapshot is taken; after the read when it
/// is read live), the walk, and the snapshot removed.
fn back_up_mount(
    repo: &mut Repo,
    fs: &Filesystem,
    mount: &Mount,
    previous: Option<&tree::ChunkId>,
    opts: &CaptureOptions,
    warnings: &mut Vec<String>,
) -> Result<(FsData, FsReport)> {
    let point = Path::new(&mount.point);
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
    let backed = backup_tree_excluding(repo, &taken.root, &exclude, previous, warnings, &progress);
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
    let data = FsData {
        tree: tree_id.into(),
        from: mount.point.clone(),
        entries: report.entries,
        bytes: report.bytes,
        read: Some(read),
    };
    Ok((data, report))
}

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

/// Walk one filesystem, store new content, and store the tree; `previous`
/// is the tree of the same filesystem in the parent snapshot.
pub fn backup_tree(
    repo: &mut Repo,
    root: &Path,
    previous: Option<&tree::ChunkId>,
    warnings: &mut Vec<String>,
    progress: &Progress,
) -> Result<(tree::ChunkId, FsReport)> {
    let nothing = walk::Exclusions::default();
    backup_tree_excluding(repo, root, &nothing, previous, warnings, progress)
}

/// [`backup_tree`], leaving out what `exclude` names.
///
/// The walk runs on this thread, reading the parent's tree alongside it
/// ([`ParentTree`]); files whose content must be read are opened here and
/// read, cut and hashed by [`reader_threads`] threads at once (on a cold
/// cache a capture waits on the disk for each file: one reader left the
/// disk idle between requests); their entries wait in walk order until
/// their chunks are known ([`Pending`]), and the tree is stored as it is
/// written ([`TreeWriter`]). Memory does not grow with the number of files.
pub fn backup_tree_excluding(
    repo: &mut Repo,
    root: &Path,
    exclude: &walk::Exclusions,
    previous: Option<&tree::ChunkId>,
    warnings: &mut Vec<String>,
    progress: &Progress,
) -> Result<(tree::ChunkId, FsReport)> {
    let parent_entries = match previous {
        Some(tree) => Some(
            repo.tree_entries_detached(tree)
                .context("cannot read the parent snapshot's tree")?,
        ),
        None => None,
    };
    let readers = reader_threads();
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::channel::<ReadJob>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (data_tx, data_rx) = mpsc::sync_channel::<ReadData>(readers);
        for i in 0..readers {
            let (jobs, data) = (job_rx.clone(), data_tx.clone());
            std::thread::Builder::new()
                .name(format!("rewind-read-{i}"))
                .spawn_scoped(scope, move || read_files(&jobs, &data))
                .context("cannot start a reader thread")?;
        }
        drop(data_tx);
        // The parent's tree is read and decoded on a thread of its own, a
        // few batches ahead of the walk.
        let mut parent = match parent_entries {
            Some(entries) => {
                let (tx, rx) = mpsc::sync_channel(PARENT_BATCHES);
                std::thread::Builder::new()
                    .name("rewind-parent".into())
                    .spawn_scoped(scope, move || read_parent(entries, &tx))
                    .context("cannot start the thread reading the parent's tree")?;
                Some(ParentTree {
                    entries: Some(rx),
                    batch: Vec::new().into_iter(),
                    next: None,
                })
            }
            None => None,
        };
        let mut pending = Pending {
            repo,
            tree: TreeWriter::new(),
            queue: VecDeque::new(),
            first_seq: 0,
            reading: 0,
            links: HashMap::new(),
            jobs: job_tx,
            data: data_rx,
            report: FsReport {
                mount_point: root.display().to_string(),
                ..FsReport::default()
            },
            warnings: Vec::new(),
            progress,
        };
        let stats = walk::walk_since(
            root,
            exclude,
            parent.as_mut().map(|p| p as &mut dyn walk::Earlier),
            &mut |entry: &mut Entry, content: &walk::FileContent| pending.visit(entry, content),
        )?;
        pending.wait_all()?;
        let Pending {
            repo,
            tree,
            mut report,
            warnings: read_warnings,
            ..
        } = pending;
        warnings.extend(stats.warnings);
        warnings.extend(read_warnings);
        report.excluded = stats.excluded_entries;
        report.emptied_dirs = stats.emptied_dirs;
        let id = tree.finish(repo)?;
        Ok((id, report))
    })
}

/// How many files a capture reads at once: `REWIND_CAPTURE_READERS`, or
/// two per core, 4 to 8.
pub fn reader_threads() -> usize {
    if let Some(n) = std::env::var("REWIND_CAPTURE_READERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return n.clamp(1, 64);
    }
    std::thread::available_parallelism()
        .map_or(4, |n| n.get() * 2)
        .clamp(4, 8)
}

/// Files being read at most, and entries waiting in walk order at most,
/// before the walk waits for the readers.
const MAX_READING: usize = 64;
const MAX_WAITING: usize = 16 << 10;
/// A reader hands over what it read in pieces of about this size.
const HANDOVER_BYTES: usize = 2 << 20;

/// Batches of the parent's entries decoded ahead of the walk, and their size.
const PARENT_BATCHES: usize = 8;
const PARENT_BATCH: usize = 1024;

/// A batch of the parent's entries, or why the tree could not be read.
type ParentBatch = Result<Vec<Entry>, String>;

/// The thread reading the parent's tree: decode it in batches until its end,
/// an error, or the walk no longer listens.
fn read_parent<R: Read>(entries: tree::EntryReader<R>, tx: &mpsc::SyncSender<ParentBatch>) {
    let mut batch = Vec::with_capacity(PARENT_BATCH);
    for e in entries {
        match e {
            Ok(e) => batch.push(e),
            Err(e) => {
                let _ = tx.send(Err(format!("{e:#}")));
                return;
            }
        }
        if batch.len() == PARENT_BATCH
            && tx
                .send(Ok(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(PARENT_BATCH),
                )))
                .is_err()
        {
            return;
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}

/// The parent snapshot's tree, read alongside the walk in the same order.
struct ParentTree {
    /// Batches from [`read_parent`]; None once read to the end.
    entries: Option<mpsc::Receiver<ParentBatch>>,
    batch: std::vec::IntoIter<Entry>,
    /// The next entry not yet asked for.
    next: Option<Entry>,
}

impl ParentTree {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(e) = self.batch.next() {
                return Ok(Some(e));
            }
            let Some(rx) = &self.entries else {
                return Ok(None);
            };
            match rx.recv() {
                Ok(Ok(batch)) => self.batch = batch.into_iter(),
                Ok(Err(e)) => {
                    self.entries = None;
                    anyhow::bail!("cannot read the parent snapshot's tree: {e}");
                }
                // The end.
                Err(_) => self.entries = None,
            }
        }
    }
}

impl walk::Earlier for ParentTree {
    fn take(&mut self, path: &[u8]) -> Result<Option<Entry>> {
        loop {
            let next = match self.next.take() {
                Some(e) => e,
                None => match self.next_entry()? {
                    Some(e) => e,
                    None => return Ok(None),
                },
            };
            match walk_order(&next.path, path) {
                // Gone since: skip it.
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(Some(next)),
                std::cmp::Ordering::Greater => {
                    self.next = Some(next);
                    return Ok(None);
                }
            }
        }
    }
}

/// The order of a walk: a directory before its children, siblings by their
/// raw name bytes (component by component, so `a/x` comes before `a-b`).
fn walk_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// A file for a reader thread: its entry's number in walk order, the open
/// file and its data regions.
struct ReadJob {
    seq: u64,
    file: File,
    extents: Vec<Extent>,
}

/// What a reader read of a file: chunks with their ids, and at the end the
/// number of bytes read (or why it could not be read).
struct ReadData {
    seq: u64,
    chunks: Vec<(ChunkRef, Vec<u8>)>,
    done: Option<Result<u64>>,
}

/// A reader thread: read, cut and hash files until there are no more jobs
/// or nobody listens.
fn read_files(jobs: &Mutex<mpsc::Receiver<ReadJob>>, data: &mpsc::SyncSender<ReadData>) {
    let mut chunker = chunker::StreamChunker::new();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let mut chunks = Vec::new();
        let mut held = 0;
        let mut total = 0u64;
        let result = chunker.chunk(ExtentReader::new(&job.file, &job.extents), |piece| {
            let chunk = ChunkRef {
                id: tree::ChunkId::of(piece),
                len: piece.len() as u32,
            };
            chunks.push((chunk, piece.to_vec()));
            held += piece.len();
            total += piece.len() as u64;
            if held >= HANDOVER_BYTES {
                held = 0;
                let part = ReadData {
                    seq: job.seq,
                    chunks: std::mem::take(&mut chunks),
                    done: None,
                };
                data.send(part)
                    .map_err(|_| anyhow::anyhow!("the capture stopped"))?;
            }
            Ok(())
        });
        let last = ReadData {
            seq: job.seq,
            chunks,
            done: Some(result.map(|()| total)),
        };
        if data.send(last).is_err() {
            return;
        }
    }
}

/// One entry waiting for its turn to be written to the tree.
struct Waiting {
    entry: Entry,
    /// Its content is being read.
    reading: bool,
    /// Hard links to it (a first path whose chunks later links copy).
    links: u32,
}

/// The entries of a walk on their way to the tree, in walk order, while
/// the readers read the files among them.
struct Pending<'a> {
    repo: &'a mut Repo,
    tree: TreeWriter,
    /// Entries not written yet; the first is number `first_seq`.
    queue: VecDeque<Waiting>,
    first_seq: u64,
    /// Files being read.
    reading: usize,
    /// The extents and chunks of first paths of inodes with several links,
    /// which later links copy (read by a reader, they were not known when
    /// the walk reached the later link).
    links: HashMap<Vec<u8>, (Vec<Extent>, Vec<ChunkRef>)>,
    jobs: mpsc::Sender<ReadJob>,
    data: mpsc::Receiver<ReadData>,
    report: FsReport,
    warnings: Vec<String>,
    progress: &'a Progress,
}

impl Pending<'_> {
    /// The walk's visitor.
    fn visit(&mut self, entry: &mut Entry, content: &walk::FileContent) -> Result<()> {
        let mut read = None;
        if entry.kind == Kind::File && entry.hardlink_to.is_none() && entry.size > 0 {
            match content.earlier() {
                // The walk moved the earlier entry's extents and chunks
                // into this one.
                Some(prev)
                    if unchanged(prev, entry)
                        && entry.chunks.iter().all(|c| self.repo.contains(&c.id)) =>
                {
                    self.report.files_reused += 1;
                }
                _ => {
                    // Opened here: a file that vanished is skipped by the walk.
                    let (file, extents) = content.open()?;
                    entry.extents = extents.clone();
                    entry.chunks.clear();
                    read = Some(ReadJob {
                        seq: self.first_seq + self.queue.len() as u64,
                        file,
                        extents,
                    });
                }
            }
        }
        self.report.entries += 1;
        // The walk keeps the first path of an inode with several links
        // (for the later ones): copied then; else moved.
        let entry = if content.links() > 1 {
            entry.clone()
        } else {
            take_entry(entry)
        };
        self.queue.push_back(Waiting {
            entry,
            reading: read.is_some(),
            links: content.links(),
        });
        if let Some(job) = read {
            self.jobs
                .send(job)
                .map_err(|_| anyhow::anyhow!("the reader threads stopped"))?;
            self.reading += 1;
        }
        // Take what the readers have read, without waiting, then wait
        // while too much is in flight.
        while let Ok(data) = self.data.try_recv() {
            self.received(data)?;
        }
        self.write_ready()?;
        while self.reading >= MAX_READING || self.queue.len() >= MAX_WAITING {
            self.wait_one()?;
        }
        Ok(())
    }

    /// Wait for the next piece read, and write what is ready.
    fn wait_one(&mut self) -> Result<()> {
        let data = self
            .data
            .recv()
            .map_err(|_| anyhow::anyhow!("the reader threads stopped"))?;
        self.received(data)?;
        self.write_ready()
    }

    /// Wait for every file being read and write every entry.
    fn wait_all(&mut self) -> Result<()> {
        self.write_ready()?;
        while !self.queue.is_empty() {
            self.wait_one()?;
        }
        Ok(())
    }

    fn received(&mut self, data: ReadData) -> Result<()> {
        let index = (data.seq - self.first_seq) as usize;
        for (chunk, bytes) in data.chunks {
            self.progress.add(bytes.len() as u64, true);
            self.repo
                .add_hashed_blob(crate::repo::pack::BlobKind::Data, chunk.id, bytes)?;
            self.queue[index].entry.chunks.push(chunk);
        }
        let Some(done) = data.done else {
            return Ok(());
        };
        self.reading -= 1;
        let waiting = &mut self.queue[index];
        waiting.reading = false;
        let entry = &mut waiting.entry;
        let read = done.with_context(|| format!("cannot back up {}", entry.display_path()))?;
        let expected: u64 = entry.extents.iter().map(|e| e.len).sum();
        if read != expected {
            self.warnings.push(format!(
                "{} changed while it was read; its backup holds what was read",
                entry.display_path()
            ));
            trim_extents(&mut entry.extents, read);
        }
        self.report.files_read += 1;
        Ok(())
    }

    /// Write the entries at the front of the queue whose content is known.
    fn write_ready(&mut self) -> Result<()> {
        while self.queue.front().is_some_and(|w| !w.reading) {
            let Some(Waiting {
                mut entry, links, ..
            }) = self.queue.pop_front()
            else {
                break;
            };
            self.first_seq += 1;
            if entry.kind == Kind::File {
                match &entry.hardlink_to {
                    Some(first) => {
                        if let Some((extents, chunks)) = self.links.get(first) {
                            entry.extents = extents.clone();
                            entry.chunks = chunks.clone();
                        }
                    }
                    None => {
                        self.report.bytes +=
                            entry.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>();
                        if links > 1 {
                            self.links.insert(
                                entry.path.clone(),
                                (entry.extents.clone(), entry.chunks.clone()),
                            );
                        }
                    }
                }
            }
            self.tree.write_entry(self.repo, &entry)?;
        }
        Ok(())
    }
}

/// The entry's lists moved out, its other fields copied: what the walk
/// still reads of it after the visit (kind, size, hard link) stays.
fn take_entry(e: &mut Entry) -> Entry {
    Entry {
        path: std::mem::take(&mut e.path),
        link_target: std::mem::take(&mut e.link_target),
        hardlink_to: e.hardlink_to.clone(),
        xattrs: std::mem::take(&mut e.xattrs),
        extents: std::mem::take(&mut e.extents),
        chunks: std::mem::take(&mut e.chunks),
        ..*e
    }
}

/// The change test of an incremental capture: same size, times and inode.
fn unchanged(prev: &Entry, now: &Entry) -> bool {
    prev.size == now.size
        && prev.mtime == now.mtime
        && prev.ctime == now.ctime
        && prev.ino == now.ino
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

    /// `@home` on /home beside `@` on / is read from /home, once; a
    /// directory of `@` mounted elsewhere is in /'s tree already.
    #[test]
    fn subvolumes_mounted_apart_are_read_from_their_mounts() {
        let mut fs = crate::manifest::tests::sample().filesystems[0].clone();
        let mount = |point: &str, root: &str| Mount {
            point: point.into(),
            options: format!("rw,subvol={root}"),
            root: root.into(),
        };
        fs.mounts = vec![
            mount("/home2", "/@home"),
            mount("/", "/@"),
            mount("/srv", "/@/srv"),
            mount("/home", "/@home"),
        ];
        let sub = |id, path: &str| crate::manifest::Subvolume {
            id,
            path: path.into(),
            read_only: false,
            default: false,
            data: None,
        };
        fs.subvolumes = vec![sub(256, "@"), sub(257, "@home"), sub(258, "@snapshots")];
        // No mount has root "/": the first mount is the filesystem's own.
        assert_eq!(data_mount(&fs).unwrap().point, "/home2");
        fs.mounts.remove(0);
        assert_eq!(data_mount(&fs).unwrap().point, "/");
        fs.mounts.push(mount("/home2", "/@home"));
        let apart: Vec<(usize, String)> = subvolume_mounts(&fs)
            .into_iter()
            .map(|(i, m)| (i, m.point))
            .collect();
        assert_eq!(apart, [(1, "/home".to_string())]);
    }

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
    fn the_parent_tree_is_read_in_walk_order() {
        use walk::Earlier;
        let paths = ["", "a", "a/x", "a/x/deep", "a-b", "b", "c/y"];
        assert!(
            paths
                .windows(2)
                .all(|w| walk_order(w[0].as_bytes(), w[1].as_bytes()).is_lt())
        );
        let mut stream = Vec::new();
        for p in paths {
            tree::write_entry(&mut stream, &tree::tests::file(p, &[b"x"])).unwrap();
        }
        let (tx, rx) = mpsc::sync_channel(PARENT_BATCHES);
        read_parent(tree::EntryReader::new(&stream[..]), &tx);
        drop(tx);
        let mut parent = ParentTree {
            entries: Some(rx),
            batch: Vec::new().into_iter(),
            next: None,
        };
        let mut take = |p: &str| parent.take(p.as_bytes()).unwrap().map(|e| e.path);
        assert_eq!(take(""), Some(b"".to_vec()));
        // Not in the parent: nothing, and nothing skipped.
        assert_eq!(take("0"), None);
        assert_eq!(take("a"), Some(b"a".to_vec()));
        // Gone since (a/x, a/x/deep): skipped.
        assert_eq!(take("a-b"), Some(b"a-b".to_vec()));
        assert_eq!(take("c"), None);
        assert_eq!(take("c/y"), Some(b"c/y".to_vec()));
        assert_eq!(take("d"), None);
    }

    /// The incremental path (the parent's tree read alongside, the tree read
    /// ahead by threads) still sees every change: a file rewritten in place
    /// at the same size in a directory whose times were set back, a rename
    /// within a directory, an edit deep in a directory of many files.
    #[test]
    fn changes_in_unchanged_looking_directories_are_captured() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in 0..12 {
            let sub = root.join(format!("box{d:02}/cur"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..150 {
                std::fs::write(sub.join(format!("m{f:03}")), format!("message {d} {f}\n")).unwrap();
            }
        }
        let mut repo = Repo::init(&dir.path().join("repo")).unwrap();
        let mut warnings = Vec::new();
        let quiet = Progress::quiet();
        let (first, report) = backup_tree(&mut repo, &root, None, &mut warnings, &quiet).unwrap();
        assert_eq!(report.files_read, 12 * 150);
        repo.flush().unwrap();

        // Same size, same directory times (set back after the write).
        let cur = root.join("box03/cur");
        let times = std::fs::metadata(&cur).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(cur.join("m007"), b"MESSAGE 3 7\n").unwrap();
        let set_back = std::fs::FileTimes::new()
            .set_accessed(
                std::time::UNIX_EPOCH
                    + std::time::Duration::new(times.atime() as u64, times.atime_nsec() as u32),
            )
            .set_modified(
                std::time::UNIX_EPOCH
                    + std::time::Duration::new(times.mtime() as u64, times.mtime_nsec() as u32),
            );
        std::fs::File::open(&cur)
            .unwrap()
            .set_times(set_back)
            .unwrap();
        assert_eq!(
            std::fs::metadata(&cur).unwrap().mtime_nsec(),
            times.mtime_nsec()
        );
        // A rename within a directory, an edit deep down.
        std::fs::rename(
            root.join("box05/cur/m010"),
            root.join("box05/cur/m010-renamed"),
        )
        .unwrap();
        std::fs::write(root.join("box11/cur/m149"), b"the last one, longer now\n").unwrap();

        let (second, report) =
            backup_tree(&mut repo, &root, Some(&first), &mut warnings, &quiet).unwrap();
        repo.flush().unwrap();
        assert_eq!(report.files_read, 3, "{report:?}");
        assert_eq!(report.files_reused, 12 * 150 - 3);
        assert!(warnings.is_empty(), "{warnings:?}");
        let entries: Vec<Entry> = repo
            .tree_entries(&second)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let content = |path: &str| {
            let e = entries.iter().find(|e| e.path == path.as_bytes()).unwrap();
            let mut out = Vec::new();
            for c in &e.chunks {
                out.extend(repo.read_blob(&c.id).unwrap());
            }
            out
        };
        assert_eq!(content("box03/cur/m007"), b"MESSAGE 3 7\n");
        assert_eq!(content("box05/cur/m010-renamed"), b"message 5 10\n");
        assert!(!entries.iter().any(|e| e.path == b"box05/cur/m010"));
        assert_eq!(content("box11/cur/m149"), b"the last one, longer now\n");
        assert_eq!(content("box00/cur/m000"), b"message 0 0\n");
        assert_eq!(entries.len(), 1 + 12 * 2 + 12 * 150);
    }

    /// An unchanged capture (the parent's entries moved into the new
    /// ones, files not read) stores the very tree a capture without a
    /// parent makes of the same files, byte for byte: directories, a
    /// hard-linked pair, xattrs, an empty and a sparse file.
    #[test]
    fn an_unchanged_capture_stores_the_tree_a_full_one_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in 0..4 {
            let sub = root.join(format!("d{d}/sub"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..40 {
                std::fs::write(sub.join(format!("f{f:02}")), format!("file {d} {f}\n")).unwrap();
            }
        }
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::hard_link(root.join("d1/sub/f07"), root.join("d2/link")).unwrap();
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(1 << 20).unwrap();
        sparse.write_all_at(b"middle", 512 << 10).unwrap();
        rustix::fs::setxattr(
            root.join("d0/sub/f03").as_path(),
            "user.tag",
            b"value",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let mut repo = Repo::init(&dir.path().join("repo")).unwrap();
        let mut warnings = Vec::new();
        let quiet = Progress::quiet();
        let (first, _) = backup_tree(&mut repo, &root, None, &mut warnings, &quiet).unwrap();
        repo.flush().unwrap();
        let (unchanged, report) =
            backup_tree(&mut repo, &root, Some(&first), &mut warnings, &quiet).unwrap();
        repo.flush().unwrap();
        assert_eq!(report.files_read, 0, "{report:?}");
        assert_eq!(report.files_reused, 4 * 40 + 1);
        let (full, report) = backup_tree(&mut repo, &root, None, &mut warnings, &quiet).unwrap();
        assert_eq!(report.files_read, 4 * 40 + 1);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(unchanged, full);
        assert_eq!(unchanged, first);
        let entries: Vec<Entry> = repo
            .tree_entries(&unchanged)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let find = |p: &str| entries.iter().find(|e| e.path == p.as_bytes()).unwrap();
        assert_eq!(
            find("d0/sub/f03").xattrs,
            [(b"user.tag".to_vec(), b"value".to_vec())]
        );
        assert_eq!(
            find("d2/link").hardlink_to.as_deref(),
            Some(&b"d1/sub/f07"[..])
        );
        assert_eq!(find("d2/link").chunks, find("d1/sub/f07").chunks);
    }

    /// A change that leaves size and times alone but moves the change time
    /// (a mode, an owner, an xattr) makes the capture read the entry again
    /// and record what it is now.
    #[test]
    fn an_entry_whose_change_time_alone_moved_is_read_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("box")).unwrap();
        for f in 0..20 {
            std::fs::write(root.join(format!("box/m{f:02}")), format!("message {f}\n")).unwrap();
        }
        let mut repo = Repo::init(&dir.path().join("repo")).unwrap();
        let mut warnings = Vec::new();
        let quiet = Progress::quiet();
        let (first, _) = backup_tree(&mut repo, &root, None, &mut warnings, &quiet).unwrap();
        repo.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // The same mode again: only the change time moves.
        let same = root.join("box/m04");
        let mode = std::fs::metadata(&same).unwrap().permissions();
        std::fs::set_permissions(&same, mode).unwrap();
        // Another mode, an xattr.
        let chmod = root.join("box/m09");
        std::fs::set_permissions(&chmod, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tagged = root.join("box/m15");
        rustix::fs::setxattr(
            tagged.as_path(),
            "user.seen",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let (second, report) =
            backup_tree(&mut repo, &root, Some(&first), &mut warnings, &quiet).unwrap();
        repo.flush().unwrap();
        assert_eq!(report.files_read, 3, "{report:?}");
        assert_eq!(report.files_reused, 17);
        assert!(warnings.is_empty(), "{warnings:?}");
        let entries: Vec<Entry> = repo
            .tree_entries(&second)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let find = |p: &str| entries.iter().find(|e| e.path == p.as_bytes()).unwrap();
        assert_eq!(find("box/m09").mode, 0o600);
        assert_eq!(
            find("box/m15").xattrs,
            [(b"user.seen".to_vec(), b"1".to_vec())]
        );
        for e in &entries {
            if e.kind == Kind::File {
                let mut data = Vec::new();
                for c in &e.chunks {
                    data.extend(repo.read_blob(&c.id).unwrap());
                }
                let n = &e.path[e.path.len() - 2..];
                let n: u32 = std::str::from_utf8(n).unwrap().parse().unwrap();
                assert_eq!(data, format!("message {n}\n").as_bytes());
            }
        }
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
