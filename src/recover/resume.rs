//! Resuming a recovery interrupted by a reset, a power cut or a long
//! network outage, instead of wiping the disks and starting over.
//!
//! Nothing an interrupted run might have left half-done is trusted:
//!
//! - **The layout** is resumed only when every disk's partition table
//!   (GPT: disk GUID, usable range, entry count, and each partition's
//!   number, first and last LBA, type, GUID, name and attributes; MBR: disk
//!   signature and each partition's kind, type, boot flag, start and size),
//!   the kernel's view of each partition (start and size in sysfs), and each
//!   filesystem's and swap area's type and UUID (blkid) are exactly the
//!   plan's.
//! - **A storage stack** (MD, LUKS, LVM) is opened instead of made, layer
//!   by layer in the plan's order, each checked against the plan before
//!   anything on it is trusted (`layout::stack_run::open`: the array
//!   assembled read-only by its UUID and read back; the LUKS header read
//!   back, then opened with the escrowed key, staged first as for a first
//!   run; the volume group's reports before it is activated). A layer that
//!   does not verify is made again in the format stage from its wiped
//!   devices, with every layer and filesystem on it (whose restore starts
//!   over), never repaired. A resume given up after all closes what it
//!   opened, so the disks can be recreated.
//! - **That the format stage finished** is known from the journals: a
//!   journal is created in a filesystem only by the restore, which writes
//!   every filesystem's journal before its first file, after every
//!   filesystem was made and mounted. Every filesystem the restore writes
//!   (but those on a layer made again) must hold a journal whose header names this host,
//!   snapshot, file tree and filesystem UUID: another snapshot's journal (a
//!   request re-armed to another point in time) or none (a run cut during
//!   partitioning or formatting) means no resume, and the disks are
//!   recreated: on the disks the cut run chose, which its claim records
//!   (`present::mark_chosen_before`), and otherwise only on a disk the plan
//!   may take as for any recovery (blank, matched by serial or WWN, or
//!   allowed).
//! - **A file** is skipped only when the journal records it and the inode at
//!   its path is still the recorded one: same inode number, same ctime
//!   (which no write, chmod, chown, xattr change or rename can leave as it
//!   was, and which user space cannot set), same size, a regular file. A
//!   record is written only after the file was written whole (content,
//!   owner, mode, xattrs, times) and `syncfs` made it durable; each record
//!   carries its own checksum, so a line torn by the cut is ignored and its
//!   file rewritten. A record also carries a digest of the tree entry (path,
//!   size, mode, owner, times, xattrs, extents, chunks): an entry that is
//!   not the recorded one is rewritten. Everything else (directories and
//!   their metadata, links, specials, unrecorded files) is restored again
//!   as in a first run, which replaces what is there.
//!
//! The journal is `/.rewind-resume.SNAPSHOT` at the root of each restored
//! filesystem; the finish stage removes it before unmounting.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, FileType};

use crate::escrow::staging::Staged;
use crate::layout::plan::{Content, Plan, Table};
use crate::layout::stack_run::SystemRunner;
use crate::layout::stack_run::open::{self, Opened};
use crate::manifest::{Filesystem, FsData, Manifest};
use crate::progress::Progress;
use crate::restore::Resume;
use crate::tree::{Entry, Kind};

const MAGIC: &str = "rewind-resume 1";

/// How often, at most, the journal makes the files written since durable.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// The journal's file name in a filesystem's root.
pub(super) fn journal_name(snapshot: &str) -> String {
    format!(".rewind-resume.{snapshot}")
}

/// The header naming what a journal is for.
fn header(m: &Manifest, fs: &Filesystem, data: &FsData) -> Result<String> {
    let tree = data.tree.id();
    Ok(format!(
        "{MAGIC} host={} snapshot={} tree={tree:?} fs={}",
        m.snapshot.host, m.snapshot.id, fs.uuid
    ))
}

/// A line with its checksum: `TEXT #CHECK`.
fn sealed(text: &str) -> String {
    format!("{text} #{}\n", line_check(text))
}

fn line_check(text: &str) -> String {
    crate::util::hex::encode(&blake3::hash(text.as_bytes()).as_bytes()[..8])
}

/// The text of a sealed line, `None` when torn or damaged.
fn unseal(line: &str) -> Option<&str> {
    let (text, sum) = line.rsplit_once(" #")?;
    (line_check(text) == sum).then_some(text)
}

/// What identifies a tree entry's content and metadata.
fn digest(e: &Entry) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&(e.path.len() as u64).to_le_bytes());
    h.update(&e.path);
    for n in [
        u64::from(e.mode),
        u64::from(e.uid),
        u64::from(e.gid),
        e.size,
        e.mtime.sec as u64,
        u64::from(e.mtime.nsec),
        e.atime.sec as u64,
        u64::from(e.atime.nsec),
    ] {
        h.update(&n.to_le_bytes());
    }
    for (k, v) in &e.xattrs {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k);
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    for x in &e.extents {
        h.update(&x.offset.to_le_bytes());
        h.update(&x.len.to_le_bytes());
    }
    for c in &e.chunks {
        h.update(format!("{:?}", c.id).as_bytes());
        h.update(&c.len.to_le_bytes());
    }
    crate::util::hex::encode(&h.finalize().as_bytes()[..16])
}

/// The inode a record vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inode {
    ino: u64,
    ctime_sec: i64,
    ctime_nsec: i64,
    size: u64,
}

fn inode_at(dir: BorrowedFd<'_>, name: &CStr) -> Option<Inode> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    Some(Inode {
        ino: st.st_ino,
        ctime_sec: st.st_ctime,
        ctime_nsec: st.st_ctime_nsec as i64,
        size: st.st_size as u64,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    digest: String,
    inode: Inode,
}

fn record_line(path: &[u8], r: &Record) -> String {
    sealed(&format!(
        "{} {} {} {} {} {}",
        crate::util::hex::encode(path),
        r.digest,
        r.inode.ino,
        r.inode.ctime_sec,
        r.inode.ctime_nsec,
        r.inode.size
    ))
}

fn parse_record(line: &str) -> Option<(Vec<u8>, Record)> {
    let text = unseal(line)?;
    let f: Vec<&str> = text.split(' ').collect();
    let [path, digest, ino, cs, cn, size] = f.as_slice() else {
        return None;
    };
    Some((
        crate::util::hex::decode(path)?,
        Record {
            digest: (*digest).to_string(),
            inode: Inode {
                ino: ino.parse().ok()?,
                ctime_sec: cs.parse().ok()?,
                ctime_nsec: cn.parse().ok()?,
                size: size.parse().ok()?,
            },
        },
    ))
}

/// The records of a journal's text whose header is `want`; `None` when it
/// is for something else (or has no sound header).
fn parse_journal(text: &str, want: &str) -> Option<HashMap<Vec<u8>, Record>> {
    let mut lines = text.split('\n');
    if unseal(lines.next()?)? != want {
        return None;
    }
    // A later record of a path wins (a file rewritten after a resume).
    Some(lines.filter_map(parse_record).collect())
}

struct Pending {
    file: File,
    lines: Vec<String>,
    last_flush: Instant,
}

/// The journal of one filesystem's restore: what an earlier run recorded,
/// and the records of this run, made durable in batches.
pub(super) struct Journal {
    /// The filesystem's root (for `syncfs`).
    root: File,
    earlier: HashMap<Vec<u8>, Record>,
    pending: Mutex<Pending>,
    progress: Option<Arc<Progress>>,
    verified: AtomicU64,
    failed: Mutex<Option<String>>,
}

impl Journal {
    /// Open the journal in `target` (a mounted filesystem's root): with
    /// `resume`, keep the records of a journal made for the same header;
    /// otherwise (or when there is none) start a new one.
    pub(super) fn open(
        target: &Path,
        m: &Manifest,
        fs: &Filesystem,
        data: &FsData,
        resume: bool,
        progress: Option<Arc<Progress>>,
    ) -> Result<Journal> {
        let want = header(m, fs, data)?;
        let path = target.join(journal_name(&m.snapshot.id));
        let root =
            File::open(target).with_context(|| format!("cannot open {}", target.display()))?;
        let earlier = if resume {
            match std::fs::read_to_string(&path) {
                Ok(text) => parse_journal(&text, &want).unwrap_or_default(),
                Err(_) => HashMap::new(),
            }
        } else {
            HashMap::new()
        };
        let file = if earlier.is_empty() {
            let mut f =
                File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            f.write_all(sealed(&want).as_bytes())?;
            f
        } else {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            // A torn last line must not swallow the next record.
            let len = f.metadata()?.len();
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(len.saturating_sub(1)))?;
            if f.read(&mut last)? == 1 && last[0] != b'\n' {
                f.write_all(b"\n")?;
            }
            f
        };
        file.sync_all()
            .with_context(|| format!("cannot sync {}", path.display()))?;
        root.sync_all()
            .with_context(|| format!("cannot sync {}", target.display()))?;
        Ok(Journal {
            root,
            earlier,
            pending: Mutex::new(Pending {
                file,
                lines: Vec::new(),
                last_flush: Instant::now(),
            }),
            progress,
            verified: AtomicU64::new(0),
            failed: Mutex::new(None),
        })
    }

    /// Count the bytes of the files verified in `progress`.
    pub(super) fn set_progress(&mut self, progress: Arc<Progress>) {
        self.progress = Some(progress);
    }

    /// Files an earlier run recorded.
    pub(super) fn earlier(&self) -> usize {
        self.earlier.len()
    }

    /// Make the files written so far durable, then record them.
    pub(super) fn flush(&self) -> Result<()> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.flush_locked(&mut p)?;
        if let Some(why) = self.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bail!("{why}");
        }
        Ok(())
    }

    fn flush_locked(&self, p: &mut Pending) -> Result<()> {
        p.last_flush = Instant::now();
        if p.lines.is_empty() {
            return Ok(());
        }
        // Every file whose record is pending was written before it was
        // queued: after this, its content and inode are on the disk.
        rustix::fs::syncfs(self.root.as_fd()).context("syncfs of the restored filesystem")?;
        let text: String = p.lines.drain(..).collect();
        p.file
            .write_all(text.as_bytes())
            .context("cannot write the resume journal")?;
        p.file
            .sync_data()
            .context("cannot sync the resume journal")?;
        Ok(())
    }
}

impl Resume for Journal {
    fn recorded(&self, e: &Entry) -> bool {
        e.kind == Kind::File
            && e.hardlink_to.is_none()
            && self
                .earlier
                .get(&e.path)
                .is_some_and(|r| r.digest == digest(e))
    }

    fn verified(&self, dir: BorrowedFd<'_>, name: &CStr, e: &Entry) -> bool {
        let Some(r) = self.earlier.get(&e.path) else {
            return false;
        };
        let ok = inode_at(dir, name) == Some(r.inode) && r.inode.size == e.size;
        if ok {
            self.verified.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = &self.progress {
                p.add(e.extents.iter().map(|x| x.len).sum(), false);
            }
        }
        ok
    }

    fn written(&self, dir: BorrowedFd<'_>, name: &CStr, e: &Entry) {
        let Some(inode) = inode_at(dir, name) else {
            return;
        };
        let line = record_line(
            &e.path,
            &Record {
                digest: digest(e),
                inode,
            },
        );
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.lines.push(line);
        if p.last_flush.elapsed() >= FLUSH_EVERY
            && let Err(err) = self.flush_locked(&mut p)
        {
            // Not the restore's failure: only what a resume could skip.
            let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert(format!("{err:#}"));
        }
    }
}

/// Remove the journals of `m` from the mounted filesystems of `plan`.
pub(super) fn remove_journals(m: &Manifest, plan: &Plan) {
    let name = journal_name(&m.snapshot.id);
    for step in plan.mounts.iter().filter(|s| s.skipped.is_none()) {
        let dir = PathBuf::from(&step.target);
        let p = dir.join(&name);
        if !p.exists() {
            continue;
        }
        // The root's times as the restore set them: the removal must not
        // change what the recovered system sees.
        let before = rustix::fs::stat(&dir).ok();
        let _ = std::fs::remove_file(&p);
        if let Some(st) = before {
            let times = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            let _ = rustix::fs::utimensat(rustix::fs::CWD, &dir, &times, AtFlags::empty());
        }
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
    }
}

/// A verified resumable recovery: the plan whose layout is on the disks,
/// how many files the journals record, and what became of each layer of
/// its storage stack (opened, or to be made again).
pub(super) struct Resumable {
    pub plan: Plan,
    pub recorded: usize,
    pub stack: Opened,
    /// The LUKS keys staged to open the stack (and to make again the
    /// layers that did not open); removed when dropped.
    pub staged: Option<Staged>,
}

/// Whether `plan`'s layout is on the disks and every filesystem it restores
/// holds a journal of `m` (see the module documentation). A storage stack
/// is opened layer by layer, each checked against the plan (its LUKS keys
/// staged by `stage_keys` first); a layer that does not check out is left
/// to be made again, with what is on it. `Err` says why not, for the
/// console; then nothing of the stack is left open.
pub(super) fn check(
    m: &Manifest,
    plan: Plan,
    stage_keys: &dyn Fn(&Plan) -> Result<Staged>,
) -> std::result::Result<Resumable, String> {
    verify_layout(&plan)?;
    let mut staged = None;
    let mut opened = Opened::default();
    if !plan.stack.is_empty() {
        staged = Some(
            stage_keys(&plan)
                .map_err(|e| format!("cannot stage the keys to open the storage stack: {e:#}"))?,
        );
        println!("rewind: resuming: opening the storage stack the plan describes, layer by layer");
        opened = open::open(&plan, &mut SystemRunner);
    }
    match check_filesystems(m, &plan, &opened) {
        Ok(recorded) => Ok(Resumable {
            plan,
            recorded,
            stack: opened,
            staged,
        }),
        Err(why) => {
            open::close(&plan, &opened, &mut SystemRunner);
            Err(why)
        }
    }
}

/// The filesystems on the stack's kept layers are the planned ones
/// (blkid), and every restored filesystem that is kept holds a journal of
/// `m`: how many files they record. Filesystems on layers made again are
/// made again too, and their restore starts over.
fn check_filesystems(
    m: &Manifest,
    plan: &Plan,
    opened: &Opened,
) -> std::result::Result<usize, String> {
    let remade = opened.remade_refs(plan);
    let mut remade_devices = Vec::new();
    for v in &plan.stack_volumes {
        if remade.contains(&v.reference) {
            remade_devices.push(v.device.as_str());
            continue;
        }
        verify_content(&v.device, &v.content)
            .map_err(|e| format!("{} ({}): {e:#}", v.device, v.reference))?;
    }
    let mut recorded = 0;
    let mut any = false;
    for (fs, data) in m
        .filesystems
        .iter()
        .flat_map(|fs| fs.data_trees().map(move |d| (fs, d)))
    {
        let Some(step) = plan
            .mounts
            .iter()
            .find(|s| s.point == data.from && s.skipped.is_none())
        else {
            continue;
        };
        if remade_devices.contains(&step.device.as_str()) {
            continue;
        }
        any = true;
        let want = header(m, fs, data).map_err(|e| format!("{e:#}"))?;
        let text = read_journal(&step.device, &step.fs_type, &step.options, &m.snapshot.id)
            .map_err(|e| format!("{}: {e:#}", step.device))?;
        let Some(text) = text else {
            return Err(format!(
                "{} holds no journal of snapshot {}",
                step.device, m.snapshot.id
            ));
        };
        let records = parse_journal(&text, &want).ok_or_else(|| {
            format!(
                "the journal on {} is not for this snapshot and filesystem",
                step.device
            )
        })?;
        recorded += records.len();
    }
    if !any {
        return Err(if remade_devices.is_empty() {
            "the snapshot restores no files".into()
        } else {
            "no restored filesystem is kept: every one is on a layer made again".into()
        });
    }
    Ok(recorded)
}

/// Read a journal from a filesystem mounted read-only for the look.
fn read_journal(
    device: &str,
    fs_type: &str,
    options: &str,
    snapshot: &str,
) -> Result<Option<String>> {
    let dir = PathBuf::from(format!("/run/rewind/resume-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let opts = if options.is_empty() {
        "ro".to_string()
    } else {
        format!("{options},ro")
    };
    crate::layout::mount::mount_one(device, &dir, fs_type, &opts)
        .with_context(|| format!("cannot mount {device} read-only to look for a journal"))?;
    let text = std::fs::read_to_string(dir.join(journal_name(snapshot))).ok();
    let unmounted = crate::layout::mount::unmount_one(&dir);
    let _ = std::fs::remove_dir(&dir);
    unmounted?;
    Ok(text)
}

/// Every disk of the plan is partitioned, and every volume formatted, as
/// the plan says.
fn verify_layout(plan: &Plan) -> std::result::Result<(), String> {
    for d in &plan.disks {
        verify_disk(d).map_err(|e| format!("{}: {e:#}", d.target.path))?;
    }
    Ok(())
}

fn verify_disk(d: &crate::layout::plan::DiskPlan) -> Result<()> {
    let mut f = File::open(&d.target.path).context("cannot open")?;
    let size = f.seek(SeekFrom::End(0))?;
    let found = crate::probe::disks::read_table(&mut f, d.sector_size, size)?;
    match &d.table {
        Table::Gpt(want) => {
            let got = found.gpt.context("no GPT")?;
            if got.disk_guid != want.disk_guid
                || got.first_usable_lba != want.first_usable_lba
                || got.last_usable_lba != want.last_usable_lba
                || got.entries != want.entries
                || got.partitions.len() != want.partitions.len()
            {
                bail!("the GPT is not the planned one");
            }
            for w in &want.partitions {
                let same = got.partitions.iter().any(|g| {
                    g.number == w.number
                        && g.first_lba == w.first_lba
                        && g.last_lba == w.last_lba
                        && g.type_guid == w.type_guid
                        && g.guid == w.guid
                        && g.name == w.name
                        && g.attributes == w.attributes
                });
                if !same {
                    bail!("GPT partition {} is not the planned one", w.number);
                }
            }
        }
        Table::Mbr(want) => {
            let got = found.mbr.context("no MBR")?;
            let mut lba0 = [0u8; 512];
            f.seek(SeekFrom::Start(0))?;
            f.read_exact(&mut lba0)?;
            let sig = u32::from_le_bytes([lba0[440], lba0[441], lba0[442], lba0[443]]);
            if sig != want.signature || got.partitions.len() != want.partitions.len() {
                bail!("the MBR is not the planned one");
            }
            for w in &want.partitions {
                let same = got.partitions.iter().any(|g| {
                    g.number == w.number
                        && g.kind == w.kind
                        && g.type_byte.value() == w.type_byte
                        && g.boot == w.boot
                        && g.start_lba == w.start_lba
                        && g.sectors == w.sectors
                });
                if !same {
                    bail!("MBR partition {} is not the planned one", w.number);
                }
            }
        }
        Table::None => {
            if found.gpt.is_some() || found.mbr.is_some() {
                bail!("a partition table where none is planned");
            }
        }
    }
    for v in &d.volumes {
        verify_volume(d, v).with_context(|| v.device.clone())?;
    }
    Ok(())
}

fn verify_volume(d: &crate::layout::plan::DiskPlan, v: &crate::layout::plan::Volume) -> Result<()> {
    if v.partition.is_some() {
        // The kernel's view of the partition, in 512-byte units.
        let name = Path::new(&v.device)
            .file_name()
            .context("no device name")?
            .to_string_lossy()
            .into_owned();
        let sys = Path::new("/sys/class/block").join(&name);
        let read =
            |a: &str| -> Option<u64> { crate::probe::disks::read_attr(&sys, a)?.parse().ok() };
        let per = u64::from(d.sector_size / 512);
        if read("start") != Some(v.first_lba * per) || read("size") != Some(v.sectors * per) {
            bail!("the kernel does not see the planned partition (start, size)");
        }
    }
    verify_content(&v.device, &v.content)
}

/// The filesystem or swap area on `device` is the planned one: its type
/// and UUID as blkid reads them.
fn verify_content(device: &str, content: &Content) -> Result<()> {
    let (want_type, want_uuid) = match content {
        Content::Filesystem { fs_type, uuid, .. } => (fs_type.as_str(), uuid),
        Content::Swap { uuid, .. } => ("swap", uuid),
        Content::Raw => return Ok(()),
    };
    let tags = crate::probe::fs::blkid(Path::new(device))?;
    let got_type = tags.get("TYPE").map_or("", String::as_str);
    let got_uuid = tags.get("UUID").map_or("", String::as_str);
    if got_type != want_type || !got_uuid.eq_ignore_ascii_case(want_uuid) {
        bail!(
            "holds {} UUID {}, the plan {want_type} UUID {want_uuid}",
            if got_type.is_empty() {
                "nothing"
            } else {
                got_type
            },
            if got_uuid.is_empty() { "-" } else { got_uuid },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_or_foreign_journal_vouches_for_nothing() {
        let want = "rewind-resume 1 host=h snapshot=s1 tree=t fs=u";
        let r = Record {
            digest: "d".into(),
            inode: Inode {
                ino: 12,
                ctime_sec: 1_700_000_000,
                ctime_nsec: 5,
                size: 42,
            },
        };
        let mut text = sealed(want);
        text.push_str(&record_line(b"etc/a", &r));
        text.push_str(&record_line(b"etc/b", &r));
        let full = parse_journal(&text, want).unwrap();
        assert_eq!(full.len(), 2);
        assert_eq!(full[&b"etc/a".to_vec()], r);
        // The cut tore the last record: it is not trusted.
        let torn = &text[..text.len() - 5];
        assert_eq!(parse_journal(torn, want).unwrap().len(), 1);
        // A flipped byte in a record.
        let damaged = text.replacen(" 42 #", " 43 #", 1);
        assert_eq!(parse_journal(&damaged, want).unwrap().len(), 1);
        // Another snapshot's journal: nothing at all.
        assert!(parse_journal(&text, "rewind-resume 1 host=h snapshot=s2 tree=t fs=u").is_none());
    }

    /// A file written and journaled, then changed behind the journal's
    /// back (content rewritten with the same size, or its mode changed):
    /// it is no longer vouched for.
    #[test]
    fn a_file_changed_after_its_record_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::manifest::from_xml(&crate::layout::plan::tests::manifest_xml(
            r#"<disk name="sda" path="/dev/sda" size="1073741824" logical-sector-size="512" physical-sector-size="512"/>"#,
            r#"<filesystem device="/dev/sda" disk="sda" type="ext4" uuid="0d6f8a3e-5c55-4f4e-9d7c-2b1f0a9e8c11"/>"#,
        ))
        .unwrap();
        let mut fs = m.filesystems[0].clone();
        fs.data = Some(crate::manifest::FsData {
            tree: "ab".repeat(32).parse().unwrap(),
            from: "/".into(),
            entries: 1,
            bytes: 3,
            read: None,
        });
        let t = crate::tree::Time { sec: 1, nsec: 0 };
        let entry = Entry {
            path: b"f".to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: t,
            mtime: t,
            ctime: t,
            ino: 1,
            size: 3,
            rdev: 0,
            link_target: Vec::new(),
            hardlink_to: None,
            xattrs: Vec::new(),
            extents: Vec::new(),
            chunks: Vec::new(),
        };
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        let root = File::open(dir.path()).unwrap();
        let name = c"f";
        {
            let j =
                Journal::open(dir.path(), &m, &fs, fs.data.as_ref().unwrap(), false, None).unwrap();
            j.written(root.as_fd(), name, &entry);
            j.flush().unwrap();
        }
        let j = Journal::open(dir.path(), &m, &fs, fs.data.as_ref().unwrap(), true, None).unwrap();
        assert_eq!(j.earlier(), 1);
        assert!(j.recorded(&entry));
        assert!(j.verified(root.as_fd(), name, &entry));
        // Another entry at the same path (another tree): not recorded.
        let other = Entry {
            mode: 0o600,
            ..entry.clone()
        };
        assert!(!j.recorded(&other));
        // Changed on disk: the ctime moves.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.path().join("f"), b"xyz").unwrap();
        assert!(!j.verified(root.as_fd(), name, &entry));
        // A journal opened without resuming starts over.
        let fresh =
            Journal::open(dir.path(), &m, &fs, fs.data.as_ref().unwrap(), false, None).unwrap();
        assert_eq!(fresh.earlier(), 0);
    }
}
