//! The write side of the data engine: writes a stream of tree entries (walk
//! order: a directory before its children) into a target directory, losing
//! nothing an [`Entry`] records.
//!
//! - Kinds: regular files (holes kept: data is written at its extents'
//!   offsets and a trailing hole is `ftruncate`d, zeros are never written),
//!   directories, symlinks, hard links, fifos, character and block devices
//!   and sockets (`mknod`).
//! - Metadata by number (never by name), per object in the order
//!   chown → chmod → xattrs → times, because chown clears setuid/setgid bits
//!   and file capabilities. A directory's metadata is applied at the end, in
//!   reverse stream order (children before parents), so that writing its
//!   children changes neither its times nor, through a default ACL, their
//!   ACLs, and a read-only directory can still be filled.
//! - The target is a root nothing escapes: a path that is absolute or has an
//!   empty, `.` or `..` component is refused, and every parent is opened
//!   component by component relative to the target with
//!   `O_NOFOLLOW|O_DIRECTORY`, so a path through a symlink (or a missing
//!   parent) is refused too; `hardlink_to` is held to the same rules, and a
//!   link's last component is never followed. A refused or failed entry is
//!   recorded with its path and the restore goes on; [`restore`] then fails
//!   with a summary ([`RestoreFailed`], which holds the stats).
//! - What is at a destination already: a file (or symlink, ...) is replaced
//!   (unlinked, then created); a directory is kept and gets the entry's
//!   metadata (xattrs it has that the entry lacks are removed).
//! - A file whose content cannot be restored (a chunk fails verification) is
//!   removed rather than left incomplete, and its path is reported.
//! - `only` restores some paths (and everything below those that are
//!   directories); their ancestor directories are created with their own
//!   metadata. A hard link whose first path is not among them is restored as
//!   a copy from the chunk list that the walk copies into later links.
//! - Regular files are written by a few writer threads at once (creating a
//!   file, writing it and setting its metadata are syscalls that wait on the
//!   filesystem; one thread left the disk and the other cores idle, most of
//!   all with many small files). Everything else (directories, links,
//!   specials, the path checks and opening the parents) stays on the
//!   caller's thread, in stream order; a file's parent directory is opened
//!   there and handed to the writer, so the no-escape rules are the same. An
//!   entry whose path, or whose hard link target, is a file still being
//!   written waits for the writers to finish first. Errors are reported in
//!   stream order whichever thread met them.
//! - A file's data extents are preallocated (`fallocate`) before its chunks
//!   are written, so the filesystem allocates each extent once.
//! - Resuming ([`Resume`], [`restore_resuming`]): an interrupted restore's
//!   journal names the files it wrote whole and made durable; a file whose
//!   journal record and on-disk inode both match is not written again.
//!   Everything else (directories' metadata, links, specials, files not
//!   recorded or not matching) is done as in a first restore.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use rustix::fs::{
    AtFlags, FallocateFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use crate::tree::{ChunkRef, Entry, Kind, Time, display_bytes};

/// Where restore gets file data from; the writer threads share it.
pub trait ChunkSource: Sync {
    /// The plain content of a chunk, verified against its hash (restore
    /// checks the length).
    fn fetch(&self, chunk: &ChunkRef) -> Result<Vec<u8>>;

    /// A chunk for entry `seq` of the stream (numbered from 1 in stream
    /// order): a read-ahead source knows from it which entry's chunk this is.
    fn fetch_for(&self, seq: u64, chunk: &ChunkRef) -> Result<Vec<u8>> {
        let _ = seq;
        self.fetch(chunk)
    }

    /// Entry `seq` is finished (restored, refused, failed or left out): it
    /// asks for no chunk any more. Called once per entry, by the thread that
    /// finished it, so that a read-ahead source can release what the
    /// finished entries did not use even while the engine waits.
    fn finished(&self, seq: u64) {
        let _ = seq;
    }
}

/// What an earlier, interrupted restore into the same target left that can
/// be trusted (the recovery's journal, `recover::resume`). A file is skipped
/// only when both [`Resume::recorded`] and [`Resume::verified`] say so.
pub trait Resume: Sync {
    /// Whether the journal records `e` as written whole and made durable
    /// (no disk access: the read-ahead uses it to leave its chunks out).
    fn recorded(&self, e: &Entry) -> bool;
    /// Whether what is at `name` in `dir` is still the inode the journal
    /// recorded for `e`, unchanged since (then it is not written again).
    fn verified(&self, dir: BorrowedFd<'_>, name: &CStr, e: &Entry) -> bool;
    /// `e` was just written whole at `name` in `dir`: content, owner, mode,
    /// xattrs and times. The journal records it once it is durable.
    fn written(&self, dir: BorrowedFd<'_>, name: &CStr, e: &Entry);
}

/// Writer threads: `REWIND_RESTORE_WRITERS` (1 writes on the caller's
/// thread alone, as a baseline for docs/performance.md), else two per core,
/// at least 2 and at most 8 (the writers mostly wait on the filesystem).
fn writer_count() -> usize {
    if let Some(n) = std::env::var("REWIND_RESTORE_WRITERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return n.clamp(1, 64);
    }
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .clamp(2, 8)
}

/// Files at least this big get their extents preallocated.
const PREALLOCATE_FROM: u64 = 64 << 10;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The directory to restore into; it must exist.
    pub target: PathBuf,
    /// Restore only these paths (relative, as in the tree) and everything
    /// below those that are directories; empty restores everything.
    pub only: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreStats {
    /// Regular files written (hard links not included).
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Fifos, devices and sockets.
    pub specials: u64,
    /// File data written (holes not included).
    pub bytes: u64,
    /// Regular files an interrupted restore had written whole, verified and
    /// left as they were (resuming; not in `files`).
    pub resumed: u64,
    /// Their data bytes (not in `bytes`).
    pub resumed_bytes: u64,
    /// Entries refused or failed, each message naming its path.
    pub errors: Vec<String>,
    /// Things done differently from the entry that are not a loss (a hard
    /// link restored as a copy, an xattr a symlink cannot carry).
    pub warnings: Vec<String>,
}

/// The error [`restore`] returns when some entries could not be restored.
#[derive(Debug)]
pub struct RestoreFailed(pub RestoreStats);

impl std::fmt::Display for RestoreFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 20;
        let errors = &self.0.errors;
        write!(f, "{} entries could not be restored:", errors.len())?;
        for e in errors.iter().take(SHOWN) {
            write!(f, "\n  {e}")?;
        }
        if errors.len() > SHOWN {
            write!(f, "\n  ... and {} more", errors.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for RestoreFailed {}

/// Restore `entries` into `opts.target`; see the module documentation. An
/// error reading the entries themselves, or a full or read-only target, stops
/// the restore (after the metadata of the directories made so far).
pub fn restore(
    entries: impl Iterator<Item = Result<Entry>>,
    source: &dyn ChunkSource,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    restore_resuming(entries, source, opts, None)
}

/// [`restore`], skipping the files `resume` vouches for and telling it of
/// each file written whole.
pub fn restore_resuming(
    entries: impl Iterator<Item = Result<Entry>>,
    source: &dyn ChunkSource,
    opts: &RestoreOptions,
    resume: Option<&dyn Resume>,
) -> Result<RestoreStats> {
    let target = &opts.target;
    let root = rustix::fs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open the restore target {}", target.display()))?;
    let mut only = Vec::new();
    for p in &opts.only {
        let p = trim_slashes(p);
        if !p.is_empty() {
            check_path(p)
                .map_err(|why| anyhow!("cannot restore only {}: {why}", display_bytes(p)))?;
        }
        only.push(p.to_vec());
    }
    let root_inherits = inherits_acl(root.as_fd());
    let writers = writer_count();
    let (jobs, job_rx) = sync_channel::<FileJob>(writers);
    let job_rx = Mutex::new(job_rx);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (done_tx, done_rx) = channel();
        let jobs = if writers > 1 {
            for _ in 0..writers {
                let (job_rx, done_tx, stop) = (&job_rx, done_tx.clone(), &stop);
                s.spawn(move || writer_loop(source, resume, job_rx, &done_tx, stop));
            }
            Some(jobs)
        } else {
            None
        };
        drop(done_tx);
        let mut r = Restorer {
            source,
            resume,
            root: Arc::new(root),
            root_inherits,
            only,
            proc_fd: rustix::fs::stat("/proc/self/fd").is_ok(),
            target: target.clone(),
            stack: Vec::new(),
            dirs: Vec::new(),
            stats: RestoreStats::default(),
            errors: Vec::new(),
            xattr_path: Vec::new(),
            seen_dirs: HashSet::new(),
            jobs,
            done: done_rx,
            in_flight: BTreeMap::new(),
        };
        let mut fatal = None;
        for (seq, entry) in (1u64..).zip(entries) {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    fatal = Some(e.context("cannot read the tree to restore"));
                    break;
                }
            };
            if let Err(e) = r.entry(seq, entry) {
                fatal = Some(e);
                break;
            }
            if let Err(e) = r.collect(false) {
                fatal = Some(e);
                break;
            }
        }
        if fatal.is_some() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r.jobs = None; // the writers end when the queue is empty
        if let Err(e) = r.collect(true) {
            fatal.get_or_insert(e);
        }
        r.errors.sort_by_key(|(seq, _)| *seq);
        r.stats.errors = std::mem::take(&mut r.errors)
            .into_iter()
            .map(|(_, msg)| msg)
            .collect();
        r.finish_dirs();
        if let Some(e) = fatal {
            return Err(e);
        }
        if !r.stats.errors.is_empty() {
            return Err(RestoreFailed(std::mem::take(&mut r.stats)).into());
        }
        Ok(std::mem::take(&mut r.stats))
    })
}

/// A regular file for a writer thread: its parent is open already.
struct FileJob {
    seq: u64,
    entry: Entry,
    dir: Arc<OwnedFd>,
    inherits: bool,
}

/// What a writer did with a [`FileJob`]: the data bytes written.
struct FileDone {
    seq: u64,
    path: Vec<u8>,
    result: Result<u64>,
}

fn writer_loop(
    source: &dyn ChunkSource,
    resume: Option<&dyn Resume>,
    jobs: &Mutex<Receiver<FileJob>>,
    done: &Sender<FileDone>,
    stop: &std::sync::atomic::AtomicBool,
) {
    loop {
        let job = {
            let jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return, // no more files
            }
        };
        let result = if stop.load(std::sync::atomic::Ordering::Relaxed) {
            Err(anyhow!("not restored: the restore stopped"))
        } else {
            write_job(source, resume, &job)
        };
        source.finished(job.seq);
        let path = job.entry.path;
        if done
            .send(FileDone {
                seq: job.seq,
                path,
                result,
            })
            .is_err()
        {
            return;
        }
    }
}

fn write_job(source: &dyn ChunkSource, resume: Option<&dyn Resume>, job: &FileJob) -> Result<u64> {
    let (_, name) = split(&job.entry.path);
    let name = cstr(name);
    let at = At {
        dir: job.dir.as_fd(),
        name: &name,
        inherits: job.inherits,
    };
    let bytes = write_file(source, job.seq, &job.entry, &at)?;
    if let Some(r) = resume {
        r.written(at.dir, at.name, &job.entry);
    }
    Ok(bytes)
}

/// Errors after which going on is pointless.
fn is_fatal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Errno>()
            .is_some_and(|e| matches!(*e, Errno::NOSPC | Errno::DQUOT | Errno::ROFS))
            || c.downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error())
                .is_some_and(|n| {
                    matches!(
                        Errno::from_raw_os_error(n),
                        Errno::NOSPC | Errno::DQUOT | Errno::ROFS
                    )
                })
    })
}

fn trim_slashes(mut p: &[u8]) -> &[u8] {
    while let [b'/', rest @ ..] = p {
        p = rest;
    }
    while let [rest @ .., b'/'] = p {
        p = rest;
    }
    p
}

/// Why a (non-empty) tree path is refused, if it is.
fn check_path(p: &[u8]) -> std::result::Result<(), &'static str> {
    if p.starts_with(b"/") {
        return Err("refused: absolute path");
    }
    if p.contains(&0) {
        return Err("refused: NUL byte in the path");
    }
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" => return Err("refused: empty path component"),
            b"." => return Err("refused: `.` component"),
            b".." => return Err("refused: `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Split a checked path into its parent components and its name.
fn split(p: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut comps: Vec<&[u8]> = p.split(|&b| b == b'/').collect();
    let name = comps.pop().expect("split yields one item at least");
    (comps, name)
}

fn cstr(b: &[u8]) -> CString {
    CString::new(b).expect("paths were checked for NUL")
}

fn timespec(t: Time) -> Timespec {
    Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec.into(),
    }
}

fn times(e: &Entry) -> Timestamps {
    Timestamps {
        last_access: timespec(e.atime),
        last_modification: timespec(e.mtime),
    }
}

/// Whether objects created in `dir` inherit ACLs from its default ACL.
fn inherits_acl(dir: BorrowedFd<'_>) -> bool {
    rustix::fs::fgetxattr_query(dir, "system.posix_acl_default").is_ok()
}

/// How an entry relates to the paths to restore.
#[derive(PartialEq)]
enum Selected {
    Yes,
    /// A directory above a path to restore: made, with its metadata, but
    /// not its other children.
    Ancestor,
    No,
}

/// A directory whose metadata is applied at the end.
struct DirMeta {
    entry: Entry,
    /// It was there before: xattrs the entry lacks are removed.
    existed: bool,
    /// It may have inherited ACLs from a default ACL of its parent.
    inherited: bool,
}

struct Restorer<'s> {
    source: &'s dyn ChunkSource,
    resume: Option<&'s dyn Resume>,
    root: Arc<OwnedFd>,
    root_inherits: bool,
    only: Vec<Vec<u8>>,
    proc_fd: bool,
    target: PathBuf,
    /// Open directories from the root down to the last parent used, each
    /// with its name and whether its children inherit ACLs.
    stack: Vec<(Vec<u8>, Arc<OwnedFd>, bool)>,
    dirs: Vec<DirMeta>,
    stats: RestoreStats,
    /// Entry errors with the entry's number, sorted at the end.
    errors: Vec<(u64, String)>,
    xattr_path: Vec<u8>,
    /// Directories made or kept in this restore, to report duplicates.
    seen_dirs: HashSet<Vec<u8>>,
    /// The writers' queue (none: files are written on this thread).
    jobs: Option<SyncSender<FileJob>>,
    done: Receiver<FileDone>,
    /// Files handed to the writers and not done yet, by entry number.
    in_flight: BTreeMap<u64, Vec<u8>>,
}

/// Where an object is: its parent directory and its name there.
struct At<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    /// Whether it may have inherited ACLs on creation.
    inherits: bool,
}

impl<'s> Restorer<'s> {
    fn selected(&self, e: &Entry) -> Selected {
        if self.only.is_empty() {
            return Selected::Yes;
        }
        let p = &e.path;
        let below = |a: &[u8], b: &[u8]| {
            a.is_empty() || (b.len() > a.len() && b.starts_with(a) && b[a.len()] == b'/')
        };
        if self.only.iter().any(|s| s == p || below(s, p)) {
            Selected::Yes
        } else if e.kind == Kind::Dir && self.only.iter().any(|s| below(p, s)) {
            Selected::Ancestor
        } else {
            Selected::No
        }
    }

    fn path_selected(&self, p: &[u8]) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|s| {
                s == p
                    || s.is_empty()
                    || (p.len() > s.len() && p.starts_with(s) && p[s.len()] == b'/')
            })
    }

    /// Restore one entry, or hand it to a writer. Its error is recorded
    /// with its path; only a fatal one is returned.
    fn entry(&mut self, seq: u64, e: Entry) -> Result<()> {
        if !self.in_flight.is_empty() {
            let busy = |p: &[u8]| self.in_flight.values().any(|f| f == p);
            if busy(&e.path) || e.hardlink_to.as_deref().is_some_and(busy) {
                // Its path, or the file it links to, is being written.
                self.collect(true)?;
            }
        }
        match self.prepare(seq, &e) {
            Ok(None) => {
                self.source.finished(seq);
                Ok(())
            }
            Ok(Some((dir, inherits))) => {
                let job = FileJob {
                    seq,
                    entry: e,
                    dir,
                    inherits,
                };
                match &self.jobs {
                    Some(jobs) => {
                        self.in_flight.insert(seq, job.entry.path.clone());
                        jobs.send(job)
                            .map_err(|_| anyhow!("the restore's writer threads stopped"))
                    }
                    None => {
                        let result = write_job(self.source, self.resume, &job);
                        self.source.finished(seq);
                        self.file_done(FileDone {
                            seq,
                            path: job.entry.path,
                            result,
                        })
                    }
                }
            }
            Err(err) => {
                self.source.finished(seq);
                self.failed(seq, &e.path, err)
            }
        }
    }

    /// Record an entry's error; a fatal one is returned.
    fn failed(&mut self, seq: u64, path: &[u8], err: anyhow::Error) -> Result<()> {
        if is_fatal(&err) {
            return Err(err.context(format!("cannot restore {}", display_bytes(path))));
        }
        self.errors
            .push((seq, format!("{}: {err:#}", display_bytes(path))));
        Ok(())
    }

    fn file_done(&mut self, done: FileDone) -> Result<()> {
        self.in_flight.remove(&done.seq);
        match done.result {
            Ok(bytes) => {
                self.stats.files += 1;
                self.stats.bytes += bytes;
                Ok(())
            }
            Err(err) => self.failed(done.seq, &done.path, err),
        }
    }

    /// Take the writers' results (all of them, waiting, with `all`). The
    /// first fatal error is returned after the wait.
    fn collect(&mut self, all: bool) -> Result<()> {
        let mut fatal = None;
        loop {
            let done = if all && !self.in_flight.is_empty() {
                match self.done.recv() {
                    Ok(d) => d,
                    Err(_) => break,
                }
            } else {
                match self.done.try_recv() {
                    Ok(d) => d,
                    Err(_) => break,
                }
            };
            if let Err(e) = self.file_done(done) {
                fatal.get_or_insert(e);
                if !all {
                    break;
                }
            }
        }
        fatal.map_or(Ok(()), Err)
    }

    /// Check an entry and open its parents; restore it unless it is a
    /// regular file, which is returned with where it goes.
    fn prepare(&mut self, seq: u64, e: &Entry) -> Result<Option<(Arc<OwnedFd>, bool)>> {
        if self.selected(e) == Selected::No {
            return Ok(None);
        }
        if e.path.is_empty() {
            if e.kind != Kind::Dir {
                bail!("refused: the root entry is not a directory");
            }
            self.dirs.push(DirMeta {
                entry: e.clone(),
                existed: true,
                inherited: false,
            });
            self.stats.dirs += 1;
            return Ok(None);
        }
        check_path(&e.path).map_err(|why| anyhow!(why))?;
        if let Some(to) = &e.hardlink_to {
            check_path(to).map_err(|why| anyhow!("hard link to {}: {why}", display_bytes(to)))?;
        }
        let (parents, name) = split(&e.path);
        self.open_parents(&parents)?;
        let (dir, inherits) = match self.stack.last() {
            Some((_, fd, inh)) => (Arc::clone(fd), *inh),
            None => (Arc::clone(&self.root), self.root_inherits),
        };
        let name = cstr(name);
        let at = At {
            dir: dir.as_fd(),
            name: &name,
            inherits,
        };
        match e.kind {
            Kind::Dir if e.hardlink_to.is_some() => {
                Err(anyhow!("corrupt entry: a hard-linked directory"))
            }
            _ if e.hardlink_to.is_some() => self.hardlink(seq, e, &at),
            Kind::File => {
                if let Some(r) = self.resume
                    && r.recorded(e)
                    && r.verified(at.dir, at.name, e)
                {
                    self.stats.resumed += 1;
                    self.stats.resumed_bytes += e.extents.iter().map(|x| x.len).sum::<u64>();
                    return Ok(None);
                }
                return Ok(Some((dir, inherits)));
            }
            Kind::Dir => self.make_dir(e, &at),
            Kind::Symlink => self.symlink(e, &at),
            Kind::Fifo | Kind::CharDevice | Kind::BlockDevice | Kind::Socket => {
                self.special(e, &at)
            }
        }
        .map(|()| None)
    }

    /// Make the stack hold the open directories `comps`, opening each one
    /// relative to its parent without following symlinks.
    fn open_parents(&mut self, comps: &[&[u8]]) -> Result<()> {
        let common = self
            .stack
            .iter()
            .zip(comps)
            .take_while(|((n, _, _), c)| n == *c)
            .count();
        self.stack.truncate(common);
        for (i, c) in comps.iter().enumerate().skip(common) {
            let (parent, inh) = match self.stack.last() {
                Some((_, fd, inh)) => (fd.as_fd(), *inh),
                None => (self.root.as_fd(), self.root_inherits),
            };
            let fd = open_dir_nofollow(parent, c).map_err(|e| {
                let shown = display_bytes(&comps[..=i].join(&b'/'));
                match e {
                    Errno::LOOP | Errno::NOTDIR => {
                        anyhow!("refused: parent {shown} is a symlink or not a directory")
                    }
                    Errno::NOENT => anyhow!("parent directory {shown} does not exist"),
                    e => anyhow!("cannot open directory {shown}: {e}"),
                }
            })?;
            // A directory made in this restore has no default ACL yet; one
            // that was there may have.
            let inherits = inh || inherits_acl(fd.as_fd());
            self.stack.push((c.to_vec(), Arc::new(fd), inherits));
        }
        Ok(())
    }

    fn make_dir(&mut self, e: &Entry, at: &At<'_>) -> Result<()> {
        let mut existed = false;
        match rustix::fs::mkdirat(at.dir, at.name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(at.dir, at.name, AtFlags::SYMLINK_NOFOLLOW)
                    .context("cannot stat what is in the way")?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    existed = !self.seen_dirs.contains(&e.path);
                } else {
                    remove_existing(at)?;
                    rustix::fs::mkdirat(at.dir, at.name, Mode::from_raw_mode(0o700))
                        .context("cannot create directory")?;
                }
            }
            Err(e) => return Err(e).context("cannot create directory"),
        }
        self.seen_dirs.insert(e.path.clone());
        self.dirs.push(DirMeta {
            entry: e.clone(),
            existed,
            inherited: at.inherits,
        });
        self.stats.dirs += 1;
        Ok(())
    }

    /// A later path of an inode: a hard link to its first path, or where
    /// that is not restored, a copy made from the entry itself.
    fn hardlink(&mut self, seq: u64, e: &Entry, at: &At<'_>) -> Result<()> {
        let to = e.hardlink_to.as_deref().expect("a later link");
        if self.path_selected(to) {
            match self.link(e, to, at) {
                Ok(()) => {
                    self.stats.hardlinks += 1;
                    return Ok(());
                }
                Err(LinkError::Missing) => {}
                Err(LinkError::Other(err)) => return Err(err),
            }
        }
        self.stats.warnings.push(format!(
            "{}: restored as a copy: its link target {} is not restored",
            e.display_path(),
            display_bytes(to)
        ));
        match e.kind {
            Kind::File => {
                let bytes = write_file(self.source, seq, e, at)?;
                self.stats.files += 1;
                self.stats.bytes += bytes;
                Ok(())
            }
            Kind::Symlink => self.symlink(e, at),
            _ => self.special(e, at),
        }
    }

    /// Hard-link `at` to the already restored path `to`.
    fn link(&mut self, e: &Entry, to: &[u8], at: &At<'_>) -> std::result::Result<(), LinkError> {
        let (parents, name) = split(to);
        let mut dir: Option<OwnedFd> = None;
        for (i, c) in parents.iter().enumerate() {
            let parent = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
            dir = Some(open_dir_nofollow(parent, c).map_err(|err| {
                let shown = display_bytes(&parents[..=i].join(&b'/'));
                match err {
                    Errno::NOENT => LinkError::Missing,
                    Errno::LOOP | Errno::NOTDIR => LinkError::Other(anyhow!(
                        "refused: hard link target {}: parent {shown} is a symlink or not a directory",
                        display_bytes(to)
                    )),
                    err => LinkError::Other(anyhow!("cannot open directory {shown}: {err}")),
                }
            })?);
        }
        let tdir = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
        let tname = cstr(name);
        let make = || rustix::fs::linkat(tdir, &tname, at.dir, at.name, AtFlags::empty());
        let r = match make() {
            Err(Errno::EXIST) => {
                remove_existing(at).map_err(LinkError::Other)?;
                make()
            }
            r => r,
        };
        match r {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => Err(LinkError::Missing),
            Err(err) => Err(LinkError::Other(anyhow!(err).context(format!(
                "cannot hard-link {} to {}",
                e.display_path(),
                display_bytes(to)
            )))),
        }
    }

    fn symlink(&mut self, e: &Entry, at: &At<'_>) -> Result<()> {
        let target = OsStr::from_bytes(&e.link_target);
        if e.link_target.contains(&0) || e.link_target.is_empty() {
            bail!("corrupt entry: invalid symlink target");
        }
        create(e, at, || rustix::fs::symlinkat(target, at.dir, at.name))?;
        rustix::fs::chownat(
            at.dir,
            at.name,
            Some(uid(e)),
            Some(gid(e)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .context("cannot chown")?;
        let path = self.xattr_path(e, at);
        let refused = set_xattrs(XattrOn::Path(&path), e, false, true)?;
        for name in refused {
            self.stats.warnings.push(format!(
                "{}: xattr {} not set: not supported on a symlink here",
                e.display_path(),
                display_bytes(&name)
            ));
        }
        rustix::fs::utimensat(at.dir, at.name, &times(e), AtFlags::SYMLINK_NOFOLLOW)
            .context("cannot set times")?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn special(&mut self, e: &Entry, at: &At<'_>) -> Result<()> {
        let (ft, dev) = match e.kind {
            Kind::Fifo => (FileType::Fifo, 0),
            Kind::CharDevice => (FileType::CharacterDevice, e.rdev),
            Kind::BlockDevice => (FileType::BlockDevice, e.rdev),
            _ => (FileType::Socket, 0),
        };
        create(e, at, || {
            rustix::fs::mknodat(at.dir, at.name, ft, Mode::from_raw_mode(0o600), dev)
        })?;
        rustix::fs::chownat(
            at.dir,
            at.name,
            Some(uid(e)),
            Some(gid(e)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .context("cannot chown")?;
        // Just made in a directory opened without following symlinks: the
        // name is the node (chmod has no no-follow variant before Linux 6.6).
        rustix::fs::chmodat(
            at.dir,
            at.name,
            Mode::from_raw_mode(e.mode & 0o7777),
            AtFlags::empty(),
        )
        .context("cannot chmod")?;
        let path = self.xattr_path(e, at);
        set_xattrs(XattrOn::Path(&path), e, at.inherits, false)?;
        rustix::fs::utimensat(at.dir, at.name, &times(e), AtFlags::SYMLINK_NOFOLLOW)
            .context("cannot set times")?;
        self.stats.specials += 1;
        Ok(())
    }

    /// A path naming the object for the l*xattr calls, which have no *at
    /// variant before Linux 6.13: through /proc/self/fd and the verified
    /// parent where /proc is mounted.
    fn xattr_path(&mut self, e: &Entry, at: &At<'_>) -> CString {
        let p = &mut self.xattr_path;
        p.clear();
        if self.proc_fd {
            p.extend_from_slice(format!("/proc/self/fd/{}/", at.dir.as_raw_fd()).as_bytes());
            p.extend_from_slice(at.name.to_bytes());
        } else {
            p.extend_from_slice(self.target.as_os_str().as_bytes());
            p.push(b'/');
            p.extend_from_slice(&e.path);
        }
        cstr(p)
    }

    /// Apply the directories' metadata, children before parents.
    fn finish_dirs(&mut self) {
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter().rev() {
            if let Err(err) = self.dir_meta(d) {
                self.stats
                    .errors
                    .push(format!("{}: {err:#}", d.entry.display_path()));
            }
        }
        self.stack.clear();
    }

    fn dir_meta(&mut self, d: &DirMeta) -> Result<()> {
        let e = &d.entry;
        let fd = if e.path.is_empty() {
            rustix::io::dup(&*self.root).context("cannot dup the target")?
        } else {
            let (parents, name) = split(&e.path);
            self.open_parents(&parents)?;
            let parent = self
                .stack
                .last()
                .map_or(self.root.as_fd(), |(_, fd, _)| fd.as_fd());
            open_dir_nofollow(parent, name).context("cannot open the directory")?
        };
        rustix::fs::fchown(&fd, Some(uid(e)), Some(gid(e))).context("cannot chown")?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(e.mode & 0o7777)).context("cannot chmod")?;
        if d.existed {
            remove_other_xattrs(fd.as_fd(), e)?;
        }
        set_xattrs(XattrOn::Fd(fd.as_fd()), e, d.inherited, false)?;
        rustix::fs::futimens(&fd, &times(e)).context("cannot set times")?;
        Ok(())
    }
}

/// Create an object with `make`; something already at its name (other
/// than a directory) is removed first.
fn create(e: &Entry, at: &At<'_>, mut make: impl FnMut() -> rustix::io::Result<()>) -> Result<()> {
    match make() {
        Err(Errno::EXIST) => {
            remove_existing(at)?;
            make().with_context(|| format!("cannot create {}", e.display_path()))
        }
        r => r.with_context(|| format!("cannot create {}", e.display_path())),
    }
}

/// Create a regular file at `at` and write it whole: content, then owner,
/// mode, xattrs and times. Returns the data bytes written; a file whose
/// content cannot be written is removed.
fn write_file(source: &dyn ChunkSource, seq: u64, e: &Entry, at: &At<'_>) -> Result<u64> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = None;
    create(e, at, || {
        fd = Some(rustix::fs::openat(
            at.dir,
            at.name,
            flags,
            Mode::from_raw_mode(0o600),
        )?);
        Ok(())
    })?;
    let file = File::from(fd.context("the file was not created")?);
    let bytes = match write_content(source, seq, e, &file) {
        Ok(n) => n,
        Err(err) => {
            drop(file);
            let _ = rustix::fs::unlinkat(at.dir, at.name, AtFlags::empty());
            return Err(err);
        }
    };
    rustix::fs::fchown(&file, Some(uid(e)), Some(gid(e))).context("cannot chown")?;
    rustix::fs::fchmod(&file, Mode::from_raw_mode(e.mode & 0o7777)).context("cannot chmod")?;
    set_xattrs(XattrOn::Fd(file.as_fd()), e, at.inherits, false)?;
    rustix::fs::futimens(&file, &times(e)).context("cannot set times")?;
    Ok(bytes)
}

/// Write a file's chunks at its extents' offsets (holes stay holes); the
/// data bytes written.
fn write_content(source: &dyn ChunkSource, seq: u64, e: &Entry, file: &File) -> Result<u64> {
    let data_len: u64 = e.extents.iter().map(|x| x.len).sum();
    let chunk_len: u64 = e.chunks.iter().map(|c| u64::from(c.len)).sum();
    if data_len != chunk_len {
        bail!("corrupt entry: its extents hold {data_len} bytes, its chunks {chunk_len}");
    }
    let mut end = 0;
    for x in &e.extents {
        if x.offset < end || x.offset.checked_add(x.len).is_none_or(|xe| xe > e.size) {
            bail!("corrupt entry: extents out of order or past the size");
        }
        end = x.offset + x.len;
    }
    if data_len >= PREALLOCATE_FROM {
        preallocate(file, e)?;
    }
    let mut written = 0;
    let mut extents = e.extents.iter().filter(|x| x.len > 0);
    let mut cur = extents.next().copied();
    let mut done_in_cur = 0u64;
    for chunk in &e.chunks {
        let data = source
            .fetch_for(seq, chunk)
            .with_context(|| format!("chunk {:?}", chunk.id))?;
        if data.len() != chunk.len as usize {
            bail!(
                "chunk {:?} holds {} bytes, the tree says {}",
                chunk.id,
                data.len(),
                chunk.len
            );
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let x = cur.context("corrupt entry: more data than extents")?;
            let n = rest.len().min((x.len - done_in_cur) as usize);
            file.write_all_at(&rest[..n], x.offset + done_in_cur)
                .context("cannot write")?;
            rest = &rest[n..];
            done_in_cur += n as u64;
            written += n as u64;
            if done_in_cur == x.len {
                cur = extents.next().copied();
                done_in_cur = 0;
            }
        }
    }
    if end < e.size {
        file.set_len(e.size).context("cannot set the size")?;
    }
    Ok(written)
}

/// Allocate a file's data extents before writing them: the filesystem
/// places each extent once instead of growing it chunk by chunk, and a full
/// disk shows before any data is written. Holes are left out. A filesystem
/// without `fallocate` is written as it comes.
fn preallocate(file: &File, e: &Entry) -> Result<()> {
    for x in e.extents.iter().filter(|x| x.len > 0) {
        match rustix::fs::fallocate(file, FallocateFlags::KEEP_SIZE, x.offset, x.len) {
            Ok(()) => {}
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => return Ok(()),
            Err(err) => return Err(err).context("cannot allocate the file's space"),
        }
    }
    Ok(())
}

enum LinkError {
    /// The link target is not there: restore a copy.
    Missing,
    Other(anyhow::Error),
}

fn uid(e: &Entry) -> Uid {
    Uid::from_raw(e.uid)
}

fn gid(e: &Entry) -> Gid {
    Gid::from_raw(e.gid)
}

fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty())
}

/// Remove a non-directory (or an empty directory) in the way.
fn remove_existing(at: &At<'_>) -> Result<()> {
    match rustix::fs::unlinkat(at.dir, at.name, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => {
            rustix::fs::unlinkat(at.dir, at.name, AtFlags::REMOVEDIR)
                .map_err(|e| anyhow!("a directory is in the way and cannot be removed: {e}"))
        }
        Err(e) => Err(e).context("cannot remove what is in the way"),
    }
}

#[derive(Clone, Copy)]
enum XattrOn<'a> {
    Fd(BorrowedFd<'a>),
    /// A path whose last component is not followed.
    Path(&'a CStr),
}

const ACL_XATTRS: [&[u8]; 2] = [b"system.posix_acl_access", b"system.posix_acl_default"];

/// Set the entry's xattrs. Where `inherited`, ACLs the object got from its
/// parent's default ACL that the entry lacks are removed. With `lenient`
/// (symlinks), xattrs the filesystem refuses are returned instead of failing.
fn set_xattrs(on: XattrOn<'_>, e: &Entry, inherited: bool, lenient: bool) -> Result<Vec<Vec<u8>>> {
    let mut refused = Vec::new();
    for (name, value) in &e.xattrs {
        let r = match on {
            XattrOn::Fd(fd) => {
                rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty())
            }
            XattrOn::Path(p) => {
                rustix::fs::lsetxattr(p, name.as_slice(), value, XattrFlags::empty())
            }
        };
        match r {
            Ok(()) => {}
            Err(Errno::PERM | Errno::NOTSUP) if lenient => refused.push(name.clone()),
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("cannot set xattr {}", display_bytes(name)));
            }
        }
    }
    if inherited {
        for acl in ACL_XATTRS {
            if e.xattrs.iter().any(|(n, _)| n == acl) {
                continue;
            }
            let r = match on {
                XattrOn::Fd(fd) => rustix::fs::fremovexattr(fd, acl),
                XattrOn::Path(p) => rustix::fs::lremovexattr(p, acl),
            };
            match r {
                Ok(()) | Err(Errno::NODATA | Errno::NOTSUP) => {}
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("cannot remove the inherited {}", display_bytes(acl))
                    });
                }
            }
        }
    }
    Ok(refused)
}

/// Remove the xattrs of a kept directory that the entry does not have.
fn remove_other_xattrs(fd: BorrowedFd<'_>, e: &Entry) -> Result<()> {
    let mut list = vec![0u8; 64 << 10];
    let n = match rustix::fs::flistxattr(fd, &mut list[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(err) => return Err(err).context("cannot list xattrs"),
    };
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if e.xattrs.iter().any(|(n, _)| n == name) {
            continue;
        }
        match rustix::fs::fremovexattr(fd, name) {
            Ok(()) | Err(Errno::NODATA) => {}
            // A label the running LSM insists on (SELinux) stays.
            Err(Errno::PERM | Errno::ACCESS | Errno::NOTSUP) if name.starts_with(b"security.") => {}
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("cannot remove xattr {}", display_bytes(name)));
            }
        }
    }
    Ok(())
}
