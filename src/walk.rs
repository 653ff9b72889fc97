//! The read side of the data engine: walks one filesystem and describes every
//! path as an [`Entry`], without reading file contents itself.
//!
//! - Depth-first, a directory before its children, children sorted by their
//!   raw name bytes; paths are relative to the root (the root is the entry
//!   with an empty path) and kept as raw bytes.
//! - Never leaves the root's mount: a directory on which something else is
//!   mounted (its mount id differs from the root's, or, on kernels without
//!   `STATX_MNT_ID`, its device) is recorded as it is seen from the parent
//!   (that is, with the metadata and xattrs of the mounted root, which is what
//!   `lstat` shows), listed in [`WalkStats::mount_points`], and not descended
//!   into: restore then recreates an empty directory to mount on. A bind mount
//!   of another part of the same filesystem is a mount point too; an
//!   unmounted btrfs subvolume is not (it is part of the mount's tree) and is
//!   descended into.
//! - A bind mount of the walked filesystem onto the very directory it shows
//!   (same device, and its mountinfo root is the mount point's path within
//!   the filesystem: what systemd's `ProtectSystem=`/`ReadWritePaths=` make
//!   of `/usr` or `/etc` in a service's namespace) hides nothing and is
//!   descended into as if it were not there.
//! - Metadata comes from `statx` without following symlinks or triggering
//!   automounts; xattrs of every namespace are read with `l*xattr` (through
//!   `/proc/self/fd/DIR/NAME` so that deep trees do not hit `PATH_MAX`).
//! - Directories are read with `O_NOATIME`, and [`FileContent::open`] opens
//!   files with `O_NOATIME`, so a walk changes no atime — except a symlink's:
//!   the kernel updates it on `readlink`, which has no such flag.
//! - Threads read directories and inodes ahead of the walk, in walk order,
//!   several directories at once (`walk/ahead.rs`): on a cold cache the walk's own
//!   `getdents` and `statx` then find them cached.
//! - Regular files are not opened: the caller opens one through
//!   [`FileContent`] only if it needs its data.
//! - Given the entries of an earlier walk of the same tree ([`Earlier`], an
//!   incremental capture's parent tree, read alongside in the same order),
//!   an entry whose kind, inode, size, modification and change times are
//!   unchanged takes its xattrs and symlink target from there (changing
//!   either changes the change time), and a regular file its data regions
//!   and chunks, for the visitor to keep or replace. An unchanged entry
//!   then costs one `statx`; the visitor gets the earlier entry
//!   ([`FileContent::earlier`]), whose lists were moved, not copied, into
//!   the new one.
//! - The second and later paths of an inode with several links get
//!   `hardlink_to` (the first path) and the `extents` and `chunks` that the
//!   visitor left in the first path's entry, so a subset restore that does not
//!   include the first path can still write the content.
//! - [`Exclusions`] leave things out: a file or other non-directory that is
//!   excluded has no entry; an excluded directory keeps its entry (metadata,
//!   xattrs) but none of its children, so that restore recreates it empty and
//!   the services that expect it still start. A directory is excluded by a
//!   pattern, by the `nodump` attribute (`chattr +d`, read from `statx`'s
//!   `STATX_ATTR_NODUMP`, which is `FS_NODUMP_FL` without opening anything),
//!   or by holding a valid `CACHEDIR.TAG`; names in
//!   [`Exclusions::hidden_at_root`] have no entry at all (the capture's own
//!   snapshot directories).

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom, StatxAttributes, StatxFlags};
use rustix::io::Errno;

use crate::tree::{ChunkRef, Entry, Extent, Kind, Time, display_bytes};

mod ahead;

/// What a walk saw besides the entries.
#[derive(Debug, Default, Clone)]
pub struct WalkStats {
    /// Entries visited, the root included.
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    /// Entries that are later links to an inode already visited.
    pub hardlinks: u64,
    /// Sum of the sizes of regular files (each inode once).
    pub file_bytes: u64,
    /// Directories on which another mount sits: recorded, not descended into.
    pub mount_points: Vec<Vec<u8>>,
    /// Paths that vanished or changed type during the walk and were skipped.
    pub warnings: Vec<String>,
    /// Entries [`Exclusions`] left out (non-directories), and directories
    /// kept empty.
    pub excluded_entries: u64,
    pub emptied_dirs: u64,
}

/// What a walk leaves out; nothing by default. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    /// The walked root's path on the captured machine (`/`, `/home`): the
    /// walk may read a snapshot mounted elsewhere, patterns name the paths
    /// as the machine sees them.
    pub mount_point: Vec<u8>,
    /// [`crate::util::glob`] patterns: one starting with `/` is matched
    /// against the whole path (`/var/tmp/*`: `*` matches `/` too), any other
    /// against the name alone, at any depth (`*.pyc`, `node_modules`). A
    /// whole-path pattern that matches the mount point itself is not applied
    /// (a filesystem mounted at `/tmp/build` is captured whole despite
    /// `/tmp/*`: not capturing it is what `--only` is for).
    pub patterns: Vec<String>,
    /// Leave out directories holding a valid `CACHEDIR.TAG`
    /// (<https://bford.info/cachedir/>), keeping the directory itself.
    pub cachedir_tag: bool,
    /// Leave out files and directories with the `nodump` attribute.
    pub nodump: bool,
    /// Name patterns of the root's children that get no entry at all.
    pub hidden_at_root: Vec<String>,
}

/// The first bytes of a valid `CACHEDIR.TAG`.
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

impl Exclusions {
    /// These exclusions without the whole-path patterns that match the
    /// mount point itself.
    fn for_this_mount(&self) -> Exclusions {
        let mut x = self.clone();
        let point = x.mount_point.clone();
        x.patterns
            .retain(|p| !(p.starts_with('/') && crate::util::glob::matches(p.as_bytes(), &point)));
        x
    }

    fn is_empty(&self) -> bool {
        self.patterns.is_empty() && !self.cachedir_tag && !self.nodump
    }

    /// Whether a pattern excludes `path` (relative to the root; never the
    /// root itself) whose last component is `name`.
    pub fn matches(&self, path: &[u8], name: &[u8]) -> bool {
        self.matches_with(path, name, &mut Vec::new())
    }

    /// [`Exclusions::matches`], the whole path built in `full` (a buffer
    /// the walk reuses: no allocation per entry).
    fn matches_with(&self, path: &[u8], name: &[u8], full: &mut Vec<u8>) -> bool {
        if path.is_empty() || self.patterns.is_empty() {
            return false;
        }
        full.clear();
        full.extend_from_slice(
            self.mount_point
                .strip_suffix(b"/")
                .unwrap_or(&self.mount_point),
        );
        full.push(b'/');
        full.extend_from_slice(path);
        self.patterns.iter().any(|p| {
            if p.starts_with('/') {
                crate::util::glob::matches(p.as_bytes(), full)
            } else {
                crate::util::glob::matches(p.as_bytes(), name)
            }
        })
    }
}

/// Whether `dir` holds a `CACHEDIR.TAG` that starts with the signature.
fn has_cachedir_tag(dir: BorrowedFd<'_>) -> bool {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let Ok(fd) = rustix::fs::openat(dir, c"CACHEDIR.TAG", flags, Mode::empty()) else {
        return false;
    };
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    File::from(fd).read_exact_at(&mut head, 0).is_ok() && head == CACHEDIR_SIGNATURE
}

/// The error [`FileContent::open`] returns when the file was removed or
/// replaced since it was listed. When the visitor returns an error that
/// carries it (propagated with `?` or `.context()`), the walk skips the entry
/// with a warning instead of failing.
#[derive(Debug)]
pub struct Vanished(pub Vec<u8>);

impl std::fmt::Display for Vanished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} vanished or changed during the walk",
            display_bytes(&self.0)
        )
    }
}

impl std::error::Error for Vanished {}

/// The entries of an earlier walk of the same tree, read alongside a walk.
pub trait Earlier {
    /// The earlier entry at `path`, if there is one. Called with paths in
    /// walk order, each at most once, so an implementation can read a
    /// stored tree as a stream, skipping what is not asked for.
    fn take(&mut self, path: &[u8]) -> Result<Option<Entry>>;
}

/// Access to the data of the entry being visited; nothing is opened unless
/// [`FileContent::open`] is called.
pub struct FileContent<'a> {
    /// Parent directory and name of a regular file that is not a later link.
    file: Option<(BorrowedFd<'a>, &'a CStr)>,
    path: &'a [u8],
    ino: u64,
    size: u64,
    nlink: u32,
    earlier: Option<&'a Entry>,
}

impl FileContent<'_> {
    /// The entry at the same path in the earlier walk, when the object is
    /// unchanged since (same kind, inode, size, modification and change
    /// times). Its path, xattrs, symlink target and, for a regular file,
    /// extents and chunks were moved into the new entry: this one keeps
    /// only its other fields.
    pub fn earlier(&self) -> Option<&Entry> {
        self.earlier
    }

    /// The number of hard links to the object.
    pub fn links(&self) -> u32 {
        self.nlink
    }

    /// Whether [`FileContent::open`] can be called: a regular file, and not a
    /// later link to an inode already visited.
    pub fn is_readable(&self) -> bool {
        self.file.is_some()
    }

    /// Open the file (`O_RDONLY|O_NOFOLLOW|O_NOATIME`, without `O_NOATIME`
    /// where it is not permitted) and find its data regions below the size
    /// the walk recorded, with `SEEK_DATA`/`SEEK_HOLE`: a dense file is one
    /// extent `[0, size)`, a file of holes has none.
    pub fn open(&self) -> Result<(File, Vec<Extent>)> {
        let path = || display_bytes(self.path);
        let (dir, name) = self
            .file
            .ok_or_else(|| anyhow!("{}: not a regular file to read", path()))?;
        // O_NONBLOCK: should a fifo have replaced the file, do not hang on it.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(
            dir,
            name,
            flags | OFlags::NOATIME | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Err(Errno::PERM) => {
                rustix::fs::openat(dir, name, flags | OFlags::NONBLOCK, Mode::empty())
            }
            r => r,
        };
        let fd = match fd {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::NXIO) => {
                return Err(Vanished(self.path.to_vec()).into());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path())),
        };
        let st = rustix::fs::fstat(&fd).with_context(|| format!("cannot stat {}", path()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_ino != self.ino {
            return Err(Vanished(self.path.to_vec()).into());
        }
        // O_NONBLOCK stays: it does nothing on a regular file, and clearing
        // it with F_SETFL would clear O_NOATIME too.
        let file = File::from(fd);
        let extents = data_extents(&file, self.size)
            .with_context(|| format!("cannot find the data regions of {}", path()))?;
        Ok((file, extents))
    }
}

/// The data regions of `file` below `size`, with `SEEK_DATA`/`SEEK_HOLE`; one
/// extent `[0, size)` where the filesystem cannot tell.
pub fn data_extents(file: &File, size: u64) -> std::io::Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(data) => data,
            // No data at or after pos: the rest is a hole (or the file shrank).
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) if pos == 0 => {
                return Ok(vec![Extent {
                    offset: 0,
                    len: size,
                }]);
            }
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(file, SeekFrom::Hole(data))?.min(size);
        out.push(Extent {
            offset: data,
            len: hole - data,
        });
        pos = hole;
    }
    Ok(out)
}

const READ_BUFFER: usize = 1 << 20;

thread_local! {
    static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Stream the data regions of `file` to `on_data`, in order, through a
/// buffer of 1 MiB reused across calls on the same thread. Returns the
/// number of bytes that could not be read because the file shrank meanwhile;
/// they are passed on as zeros so that the data still matches the extents.
pub fn read_extents(
    file: &File,
    extents: &[Extent],
    mut on_data: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut buf = BUFFER.take();
    if buf.len() < READ_BUFFER {
        buf = vec![0; READ_BUFFER];
    }
    let result = (|| {
        let mut missing = 0;
        for e in extents {
            let end = e.offset + e.len;
            let mut off = e.offset;
            while off < end {
                let want = (end - off).min(buf.len() as u64) as usize;
                let n = match file.read_at(&mut buf[..want], off) {
                    Ok(0) => {
                        buf[..want].fill(0);
                        missing += want as u64;
                        want
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot read at offset {off}"));
                    }
                };
                on_data(&buf[..n])?;
                off += n as u64;
            }
        }
        Ok(missing)
    })();
    BUFFER.set(buf);
    result
}

type Visit<'v> = dyn FnMut(&mut Entry, &FileContent) -> Result<()> + 'v;

/// Walk the filesystem tree at `root` (see the module documentation), calling
/// `visit` for each entry in order. The visitor may fill `extents` and
/// `chunks` (and change anything else) before the entry is kept; an error it
/// returns ends the walk, unless it carries [`Vanished`]. `root` itself may
/// be a symlink to a directory.
pub fn walk(root: &Path, visit: &mut Visit<'_>) -> Result<WalkStats> {
    walk_excluding(root, &Exclusions::default(), visit)
}

/// [`walk`], leaving out what `exclude` names.
pub fn walk_excluding(
    root: &Path,
    exclude: &Exclusions,
    visit: &mut Visit<'_>,
) -> Result<WalkStats> {
    walk_since(root, exclude, None, visit)
}

/// [`walk_excluding`], taking what is unchanged from `earlier`.
pub fn walk_since<'e>(
    root: &Path,
    exclude: &Exclusions,
    mut earlier: Option<&'e mut (dyn Earlier + 'e)>,
    visit: &mut Visit<'_>,
) -> Result<WalkStats> {
    let shown = || root.display().to_string();
    let exclude = &exclude.for_this_mount();
    let fd = open_dir(rustix::fs::CWD, root.as_os_str().as_bytes(), true)
        .with_context(|| format!("cannot open directory {}", shown()))?;
    let st = stat_fd(&fd).with_context(|| format!("cannot stat {}", shown()))?;
    let proc_fd = rustix::fs::stat("/proc/self/fd").is_ok();
    let walk_exclude =
        (!exclude.is_empty() || !exclude.hidden_at_root.is_empty()).then_some(exclude);
    let ahead_exclude =
        walk_exclude.filter(|x| !x.patterns.is_empty() || !x.hidden_at_root.is_empty());
    let mut w = Walker {
        visit,
        stats: WalkStats::default(),
        root: root.to_path_buf(),
        root_mount: st.mount,
        self_binds: HashMap::new(),
        proc_fd,
        links: HashMap::new(),
        path: Vec::new(),
        list_buf: vec![0; XATTR_MAX],
        value_buf: vec![0; XATTR_MAX],
        dirent_buf: Vec::with_capacity(32 << 10),
        xattr_path: Vec::new(),
        full_path: Vec::new(),
        exclude: walk_exclude,
        earlier: None,
        ahead: ahead::ReadAhead::start(
            &fd,
            st.ino,
            st.mount,
            ahead_exclude,
            if earlier.is_some() {
                ahead::METADATA
            } else {
                ahead::WITH_DATA
            },
        ),
    };
    let mut before = match earlier.as_deref_mut() {
        Some(e) => e.take(b"")?.filter(|e| st.unchanged_since(e)),
        None => None,
    };
    let xattrs = match before.as_mut() {
        Some(e) => std::mem::take(&mut e.xattrs),
        None => read_xattrs(XattrOf::Fd(fd.as_fd()), &mut w.list_buf, &mut w.value_buf)
            .with_context(|| format!("cannot read the xattrs of {}", shown()))?,
    };
    w.earlier = earlier;
    let mut entry = st.entry(Vec::new(), xattrs);
    let content = FileContent {
        file: None,
        path: b"",
        ino: st.ino,
        size: st.size,
        nlink: st.nlink,
        earlier: before.as_ref(),
    };
    (w.visit)(&mut entry, &content).with_context(|| format!("at {}", shown()))?;
    w.count(&entry);
    w.walk_dir(&fd, st.ino)?;
    Ok(w.stats)
}

const XATTR_MAX: usize = 64 << 10; // XATTR_SIZE_MAX and XATTR_LIST_MAX

/// What `statx` told about one path.
#[derive(Clone)]
struct Meta {
    kind: Option<Kind>,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    atime: Time,
    mtime: Time,
    ctime: Time,
    ino: u64,
    size: u64,
    rdev: u64,
    /// Mount id, or the device number where statx cannot tell it.
    mount: (bool, u64),
    dev: u64,
    /// The `nodump` attribute (`chattr +d`), where statx reports it.
    nodump: bool,
}

impl Meta {
    /// Whether `e` describes this object as it is now (see [`Earlier`]).
    fn unchanged_since(&self, e: &Entry) -> bool {
        self.kind == Some(e.kind)
            && self.ino == e.ino
            && self.size == e.size
            && self.mtime == e.mtime
            && self.ctime == e.ctime
    }

    fn entry(&self, path: Vec<u8>, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Entry {
        Entry {
            path,
            kind: self.kind.unwrap_or(Kind::File),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            ino: self.ino,
            size: self.size,
            rdev: self.rdev,
            link_target: Vec::new(),
            hardlink_to: None,
            xattrs,
            extents: Vec::new(),
            chunks: Vec::new(),
        }
    }
}

fn kind_of(mode: u32) -> Option<Kind> {
    Some(match FileType::from_raw_mode(mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::Fifo => Kind::Fifo,
        FileType::CharacterDevice => Kind::CharDevice,
        FileType::BlockDevice => Kind::BlockDevice,
        FileType::Socket => Kind::Socket,
        _ => return None,
    })
}

fn stat_at(dir: BorrowedFd<'_>, name: &CStr, flags: AtFlags) -> rustix::io::Result<Meta> {
    let flags = flags | AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
    match rustix::fs::statx(
        dir,
        name,
        flags,
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    ) {
        Ok(s) => {
            let t = |t: rustix::fs::StatxTimestamp| Time {
                sec: t.tv_sec,
                nsec: t.tv_nsec,
            };
            let dev = rustix::fs::makedev(s.stx_dev_major, s.stx_dev_minor);
            let has_mnt = s.stx_mask & StatxFlags::MNT_ID.bits() != 0;
            let mode = u32::from(s.stx_mode);
            let nodump = s.stx_attributes_mask.contains(StatxAttributes::NODUMP)
                && s.stx_attributes.contains(StatxAttributes::NODUMP);
            Ok(Meta {
                nodump,
                kind: kind_of(mode),
                mode: mode & 0o7777,
                nlink: s.stx_nlink,
                uid: s.stx_uid,
                gid: s.stx_gid,
                atime: t(s.stx_atime),
                mtime: t(s.stx_mtime),
                ctime: t(s.stx_ctime),
                ino: s.stx_ino,
                size: s.stx_size,
                rdev: rustix::fs::makedev(s.stx_rdev_major, s.stx_rdev_minor),
                mount: if has_mnt {
                    (true, s.stx_mnt_id)
                } else {
                    (false, dev)
                },
                dev,
            })
        }
        // Kernels before 4.11.
        Err(Errno::NOSYS) => {
            let s = rustix::fs::statat(dir, name, flags)?;
            let mode = s.st_mode;
            let nsec = |n: i64| n as u32;
            Ok(Meta {
                kind: kind_of(mode),
                mode: mode & 0o7777,
                nlink: s.st_nlink as u32,
                uid: s.st_uid,
                gid: s.st_gid,
                atime: Time {
                    sec: s.st_atime,
                    nsec: nsec(s.st_atime_nsec as i64),
                },
                mtime: Time {
                    sec: s.st_mtime,
                    nsec: nsec(s.st_mtime_nsec as i64),
                },
                ctime: Time {
                    sec: s.st_ctime,
                    nsec: nsec(s.st_ctime_nsec as i64),
                },
                ino: s.st_ino,
                size: s.st_size as u64,
                rdev: s.st_rdev,
                mount: (false, s.st_dev),
                dev: s.st_dev,
                nodump: false,
            })
        }
        Err(e) => Err(e),
    }
}

fn stat_fd(fd: &OwnedFd) -> rustix::io::Result<Meta> {
    stat_at(fd.as_fd(), c"", AtFlags::EMPTY_PATH)
}

/// Open a directory for reading without following a symlink at its name
/// (unless `follow`) and without updating its atime where permitted.
fn open_dir(dir: BorrowedFd<'_>, name: &[u8], follow: bool) -> rustix::io::Result<OwnedFd> {
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        r => r,
    }
}

/// Where xattrs are read from.
#[derive(Clone, Copy)]
enum XattrOf<'a> {
    Fd(BorrowedFd<'a>),
    /// A path whose last component is not followed.
    Path(&'a CStr),
}

/// All xattrs of an object, sorted by name; none where the filesystem has
/// no xattr support.
fn read_xattrs(
    of: XattrOf<'_>,
    list: &mut [u8],
    value: &mut [u8],
) -> rustix::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let n = match of {
        XattrOf::Fd(fd) => rustix::fs::flistxattr(fd, &mut *list),
        XattrOf::Path(p) => rustix::fs::llistxattr(p, &mut *list),
    };
    let n = match n {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let got = match of {
            XattrOf::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut *value),
            XattrOf::Path(p) => rustix::fs::lgetxattr(p, name, &mut *value),
        };
        match got {
            Ok(len) => out.push((name.to_vec(), value[..len].to_vec())),
            // Removed since it was listed.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

struct LinkInfo {
    path: Vec<u8>,
    extents: Vec<Extent>,
    chunks: Vec<ChunkRef>,
}

struct Walker<'v, 'w, 'e> {
    visit: &'w mut Visit<'v>,
    stats: WalkStats,
    root: PathBuf,
    root_mount: (bool, u64),
    /// Other mount ids seen, and whether each is a bind of the walked
    /// filesystem onto its own path ([`is_self_bind`]).
    self_binds: HashMap<u64, bool>,
    /// Whether /proc/self/fd can name objects for the xattr calls.
    proc_fd: bool,
    /// First path of every inode with several links seen so far.
    links: HashMap<(u64, u64), LinkInfo>,
    /// Path of the directory being read, then of the current entry.
    path: Vec<u8>,
    list_buf: Vec<u8>,
    value_buf: Vec<u8>,
    dirent_buf: Vec<u8>,
    xattr_path: Vec<u8>,
    /// The whole path on the machine, for the exclusion patterns.
    full_path: Vec<u8>,
    /// None when nothing is excluded: no per-entry work.
    exclude: Option<&'w Exclusions>,
    earlier: Option<&'e mut (dyn Earlier + 'e)>,
    /// Threads reading directories and inodes ahead of the walk.
    ahead: ahead::ReadAhead,
}

impl Walker<'_, '_, '_> {
    fn shown(&self) -> String {
        display_bytes(&self.path)
    }

    fn warn(&mut self, what: &str) {
        let msg = format!("{}: {what}; skipped", self.shown());
        self.stats.warnings.push(msg);
    }

    fn count(&mut self, e: &Entry) {
        self.ahead.walked();
        self.stats.entries += 1;
        match e.kind {
            Kind::Dir => self.stats.dirs += 1,
            Kind::File if e.hardlink_to.is_none() => {
                self.stats.files += 1;
                self.stats.file_bytes += e.size;
            }
            _ => {}
        }
        if e.hardlink_to.is_some() {
            self.stats.hardlinks += 1;
        }
    }

    /// The sorted names in a directory.
    fn read_names(&mut self, dir: &OwnedFd) -> Result<Vec<CString>> {
        let mut names = Vec::new();
        let mut it = rustix::fs::RawDir::new(dir, self.dirent_buf.spare_capacity_mut());
        while let Some(e) = it.next() {
            let e =
                e.with_context(|| format!("cannot read directory {}", display_bytes(&self.path)))?;
            let name = e.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable_by(|a, b| a.to_bytes().cmp(b.to_bytes()));
        Ok(names)
    }

    /// A path that names `name` in `dir` for the l*xattr calls.
    fn xattr_path(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> CString {
        use std::os::fd::AsRawFd;
        let p = &mut self.xattr_path;
        p.clear();
        if self.proc_fd {
            p.extend_from_slice(format!("/proc/self/fd/{}/", dir.as_raw_fd()).as_bytes());
            p.extend_from_slice(name.to_bytes());
        } else {
            p.extend_from_slice(self.root.as_os_str().as_bytes());
            p.push(b'/');
            p.extend_from_slice(&self.path);
        }
        CString::new(p.as_slice()).expect("no NUL in a path")
    }

    /// The earlier entry at the current path, if it is unchanged.
    fn earlier(&mut self, meta: &Meta) -> Result<Option<Entry>> {
        let Some(e) = self.earlier.as_deref_mut() else {
            return Ok(None);
        };
        Ok(e.take(&self.path)?.filter(|e| meta.unchanged_since(e)))
    }

    /// Whether an entry (not the root) is excluded by a pattern or `nodump`.
    fn is_excluded(&mut self, name: &CStr, meta: &Meta) -> bool {
        self.exclude.is_some_and(|x| {
            (x.nodump && meta.nodump)
                || x.matches_with(&self.path, name.to_bytes(), &mut self.full_path)
        })
    }

    /// Walk the children of the directory at `self.path`, open as `dir`
    /// (inode `ino`): as the read-ahead threads listed and `statx`ed them
    /// when they did, else listed and `statx`ed here.
    fn walk_dir(&mut self, dir: &OwnedFd, ino: u64) -> Result<()> {
        let listed = self.ahead.take_dir(&self.path, ino);
        let names: Arc<[CString]> = match &listed {
            Some(l) => l.names.clone(),
            None => self.read_names(dir)?.into(),
        };
        let base = self.path.len();
        // Names in `hidden_at_root`: no entry at all.
        let hide: &[String] = match self.exclude {
            Some(x) if base == 0 => &x.hidden_at_root,
            _ => &[],
        };
        let hidden = |n: &[u8]| {
            hide.iter()
                .any(|p| crate::util::glob::matches(p.as_bytes(), n))
        };
        if let Some(x) = self.exclude
            && base > 0
            && x.cachedir_tag
            && names.iter().any(|n| n.as_c_str() == c"CACHEDIR.TAG")
            && has_cachedir_tag(dir.as_fd())
        {
            self.stats.emptied_dirs += 1;
            return Ok(());
        }
        for (i, name) in names.iter().enumerate() {
            if hidden(name.to_bytes()) {
                continue;
            }
            self.path.truncate(base);
            if base > 0 {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(name.to_bytes());
            let known = listed.as_ref().and_then(|l| l.meta(i));
            self.child(dir, name, known)?;
        }
        self.path.truncate(base);
        Ok(())
    }

    /// One child of `dir`; `known` is its `statx` if the read-ahead took it.
    fn child(&mut self, dir: &OwnedFd, name: &CStr, known: Option<Meta>) -> Result<()> {
        let meta = match known.map_or_else(|| stat_at(dir.as_fd(), name, AtFlags::empty()), Ok) {
            Ok(m) => m,
            Err(Errno::NOENT) => {
                self.warn("vanished");
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", self.shown())),
        };
        let Some(kind) = meta.kind else {
            self.warn("unknown file type");
            return Ok(());
        };
        if kind == Kind::Dir {
            return self.child_dir(dir, name, meta);
        }
        if self.is_excluded(name, &meta) {
            self.stats.excluded_entries += 1;
            return Ok(());
        }
        let mut before = self.earlier(&meta)?;
        let xattrs = match before.as_mut() {
            Some(e) => Ok(std::mem::take(&mut e.xattrs)),
            None => {
                let xpath = self.xattr_path(dir.as_fd(), name);
                read_xattrs(
                    XattrOf::Path(&xpath),
                    &mut self.list_buf,
                    &mut self.value_buf,
                )
            }
        };
        let xattrs = match xattrs {
            Ok(x) => x,
            Err(Errno::NOENT) => {
                self.warn("vanished");
                return Ok(());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the xattrs of {}", self.shown()));
            }
        };
        let mut entry = match before.as_mut() {
            // What the earlier entry has, moved rather than copied: its
            // path (the same), and a file's data regions and chunks.
            Some(e) => {
                let mut entry = meta.entry(std::mem::take(&mut e.path), xattrs);
                if kind == Kind::File {
                    entry.extents = std::mem::take(&mut e.extents);
                    entry.chunks = std::mem::take(&mut e.chunks);
                }
                entry
            }
            None => meta.entry(self.path.clone(), xattrs),
        };
        if kind == Kind::Symlink
            && let Some(e) = before.as_mut()
        {
            entry.link_target = std::mem::take(&mut e.link_target);
        } else if kind == Kind::Symlink {
            entry.link_target = match rustix::fs::readlinkat(dir, name, Vec::new()) {
                Ok(t) => t.into_bytes(),
                Err(Errno::NOENT | Errno::INVAL) => {
                    self.warn("vanished or changed type");
                    return Ok(());
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read symlink {}", self.shown()));
                }
            };
        }
        let key = (meta.dev, meta.ino);
        let mut readable = kind == Kind::File;
        if meta.nlink > 1
            && let Some(first) = self.links.get(&key)
        {
            entry.hardlink_to = Some(first.path.clone());
            entry.extents = first.extents.clone();
            entry.chunks = first.chunks.clone();
            readable = false;
        }
        let file = readable.then_some((dir.as_fd(), name));
        if !self.visited(&mut entry, file, &meta, before.as_ref())? {
            return Ok(());
        }
        if meta.nlink > 1 && entry.hardlink_to.is_none() {
            let info = LinkInfo {
                path: entry.path.clone(),
                extents: entry.extents.clone(),
                chunks: entry.chunks.clone(),
            };
            self.links.insert(key, info);
        }
        Ok(())
    }

    /// Call the visitor on the entry at `self.path`; false when it found
    /// the entry vanished.
    fn visited(
        &mut self,
        entry: &mut Entry,
        file: Option<(BorrowedFd<'_>, &CStr)>,
        meta: &Meta,
        earlier: Option<&Entry>,
    ) -> Result<bool> {
        let content = FileContent {
            file,
            path: &self.path,
            ino: meta.ino,
            size: meta.size,
            nlink: meta.nlink,
            earlier,
        };
        let visited = (self.visit)(entry, &content);
        match visited {
            Ok(()) => {
                self.count(entry);
                Ok(true)
            }
            Err(e) if e.downcast_ref::<Vanished>().is_some() => {
                self.warn("vanished or changed during the walk");
                Ok(false)
            }
            Err(e) => Err(e.context(format!("at {}", self.shown()))),
        }
    }

    /// Whether a directory on `mount` is part of the walked tree: on the
    /// root's mount, or on a bind of the same filesystem onto its own path.
    fn in_tree(&mut self, mount: (bool, u64)) -> bool {
        if mount == self.root_mount {
            return true;
        }
        let ((true, id), (true, root_id)) = (mount, self.root_mount) else {
            return false;
        };
        *self
            .self_binds
            .entry(id)
            .or_insert_with(|| is_self_bind(id, root_id))
    }

    fn child_dir(&mut self, dir: &OwnedFd, name: &CStr, meta: Meta) -> Result<()> {
        if !self.in_tree(meta.mount) {
            // A mount point: record it as seen, do not descend.
            let xpath = self.xattr_path(dir.as_fd(), name);
            let xattrs = read_xattrs(
                XattrOf::Path(&xpath),
                &mut self.list_buf,
                &mut self.value_buf,
            )
            .with_context(|| format!("cannot read the xattrs of {}", self.shown()))?;
            let mut entry = meta.entry(self.path.clone(), xattrs);
            if self.visited(&mut entry, None, &meta, None)? {
                self.stats.mount_points.push(self.path.clone());
            }
            return Ok(());
        }
        let fd = match open_dir(dir.as_fd(), name.to_bytes(), false) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {
                self.warn("vanished or changed type");
                return Ok(());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open directory {}", self.shown()));
            }
        };
        // Metadata of what was opened, in case it changed since the listing.
        let meta = stat_fd(&fd).with_context(|| format!("cannot stat {}", self.shown()))?;
        if !self.in_tree(meta.mount) {
            self.warn("became a mount point during the walk");
            return Ok(());
        }
        let mut before = self.earlier(&meta)?;
        let xattrs = match before.as_mut() {
            Some(e) => std::mem::take(&mut e.xattrs),
            None => read_xattrs(
                XattrOf::Fd(fd.as_fd()),
                &mut self.list_buf,
                &mut self.value_buf,
            )
            .with_context(|| format!("cannot read the xattrs of {}", self.shown()))?,
        };
        let path = match before.as_mut() {
            Some(e) => std::mem::take(&mut e.path),
            None => self.path.clone(),
        };
        let mut entry = meta.entry(path, xattrs);
        if self.is_excluded(name, &meta) {
            // Kept, empty: restore recreates it with its metadata.
            if self.visited(&mut entry, None, &meta, before.as_ref())? {
                self.stats.emptied_dirs += 1;
            }
        } else if self.visited(&mut entry, None, &meta, before.as_ref())? {
            self.walk_dir(&fd, meta.ino)?;
        }
        Ok(())
    }
}

/// Whether mount `id` is a bind mount of the filesystem of mount `root_id`
/// onto the directory it shows anyway: the same device, and a mountinfo
/// root that is the mount point's path within the filesystem (the root
/// mount's root joined with the mount point relative to the root mount's).
/// False when mountinfo cannot be read or does not list both.
fn is_self_bind(id: u64, root_id: u64) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Ok(mounts) = crate::probe::fs::parse_mountinfo(&text) else {
        return false;
    };
    let find = |id| mounts.iter().find(|m| m.id == id);
    let (Some(m), Some(root)) = (find(id), find(root_id)) else {
        return false;
    };
    is_bind_onto_itself(m, root)
}

/// [`is_self_bind`] on two parsed mountinfo lines.
fn is_bind_onto_itself(
    m: &crate::probe::fs::MountInfo,
    root: &crate::probe::fs::MountInfo,
) -> bool {
    if (m.major, m.minor) != (root.major, root.minor) {
        return false;
    }
    let Ok(below) = Path::new(&m.mount_point).strip_prefix(&root.mount_point) else {
        return false;
    };
    Path::new(&m.root) == Path::new(&root.root).join(below)
}

/// `root` joined with a walk path, for messages and tests.
pub fn join(root: &Path, path: &[u8]) -> PathBuf {
    if path.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(mount_point: &str) -> Exclusions {
        Exclusions {
            mount_point: mount_point.as_bytes().to_vec(),
            patterns: [
                "/tmp/*",
                "/var/tmp/*",
                "/var/cache/apt/archives/*.deb",
                "*.pyc",
            ]
            .map(String::from)
            .to_vec(),
            ..Exclusions::default()
        }
    }

    #[test]
    fn binds_onto_their_own_path_are_part_of_the_tree() {
        let text = "\
22 1 8:2 / / rw - ext4 /dev/sda2 rw
30 22 8:2 /usr /usr ro - ext4 /dev/sda2 rw
31 22 8:2 /srv /mnt/srv rw - ext4 /dev/sda2 rw
32 22 8:3 /home /home rw - ext4 /dev/sda3 rw
40 1 8:2 /var /var rw - ext4 /dev/sda2 rw
41 40 8:2 /var/lib /var/lib rw - ext4 /dev/sda2 rw
50 1 0:40 /@ / rw - btrfs /dev/sdb1 rw
51 50 0:40 /@home /home rw - btrfs /dev/sdb1 rw
52 50 0:40 /@/srv /srv rw - btrfs /dev/sdb1 rw
";
        let m = crate::probe::fs::parse_mountinfo(text).unwrap();
        let by = |id| m.iter().find(|x| x.id == id).unwrap();
        // /usr bound onto itself (ProtectSystem=): descended into.
        assert!(is_bind_onto_itself(by(30), by(22)));
        // Another directory of the same filesystem: a mount point.
        assert!(!is_bind_onto_itself(by(31), by(22)));
        // Another filesystem at its own path: a mount point.
        assert!(!is_bind_onto_itself(by(32), by(22)));
        // Walking /var (itself a self-bind): /var/lib onto itself.
        assert!(is_bind_onto_itself(by(41), by(40)));
        // btrfs: another subvolume is a mount point, the same one's
        // directory bound onto itself is not.
        assert!(!is_bind_onto_itself(by(51), by(50)));
        assert!(is_bind_onto_itself(by(52), by(50)));
    }

    #[test]
    fn patterns_match_the_path_on_the_machine_or_the_name() {
        let root = defaults("/");
        assert!(root.matches(b"tmp/x", b"x"));
        assert!(root.matches(
            b"var/cache/apt/archives/bash_5.2_amd64.deb",
            b"bash_5.2_amd64.deb"
        ));
        assert!(!root.matches(b"var/cache/apt/archives/lock", b"lock"));
        assert!(
            !root.matches(b"tmp", b"tmp"),
            "the directory itself is kept"
        );
        assert!(root.matches(b"srv/app/m.pyc", b"m.pyc"));
        assert!(!root.matches(b"", b""), "never the root");
        // The same patterns on the filesystem mounted at /var.
        let var = defaults("/var");
        assert!(var.matches(b"tmp/x", b"x"));
        assert!(!var.matches(b"lib/tmp/x", b"x"));
        // A filesystem mounted below /tmp: /tmp/* is not applied inside it.
        let below = defaults("/tmp/build").for_this_mount();
        assert!(!below.matches(b"x", b"x"));
        assert!(below.matches(b"m.pyc", b"m.pyc"));
    }

    #[test]
    fn excluded_directories_are_kept_empty_and_hidden_names_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for f in [
            "a/keep",
            "a/drop.pyc",
            "cache/blob",
            "cache/sub/x",
            "skip/y",
            ".rewind-snap-7/z",
        ] {
            std::fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
            std::fs::write(p.join(f), b"x").unwrap();
        }
        std::fs::write(p.join("cache/CACHEDIR.TAG"), CACHEDIR_SIGNATURE).unwrap();
        let x = Exclusions {
            mount_point: b"/srv".to_vec(),
            patterns: vec!["/srv/skip".into(), "*.pyc".into()],
            cachedir_tag: true,
            hidden_at_root: vec![".rewind-snap-*".into()],
            ..Exclusions::default()
        };
        let mut paths = Vec::new();
        let stats = walk_excluding(p, &x, &mut |e: &mut Entry, _: &FileContent| {
            paths.push(String::from_utf8(e.path.clone()).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(paths, ["", "a", "a/keep", "cache", "skip"]);
        assert_eq!((stats.excluded_entries, stats.emptied_dirs), (1, 2));
    }
}
