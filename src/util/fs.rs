//! Writing a file so that a reader, or a crash, sees the old content or
//! the whole new content, never a part.

use std::fs::Permissions;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory a path's file lives in (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A temporary name beside `path`, unique to this process and call, so
/// that concurrent writers of one file never share a temporary file.
pub fn temp_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    dir_of(path).join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Write `bytes` to `path` atomically and durably: a temporary file beside
/// it, fsync, rename over `path`, fsync of the directory (without it the
/// rename itself may not survive a power cut). Parent directories are
/// created durably ([`create_dir_durable`]). The file gets mode 0644.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| {
        f.set_permissions(Permissions::from_mode(0o644))?;
        f.write_all(bytes)
    })
}

/// [`write_atomic`] where `fill` writes the content and gives the file its
/// mode (and owner, xattrs) before it is renamed into place. The temporary
/// file is created with mode 0600, so that nothing is readable by others
/// before `fill` decides it may be (a key, a keyfile with a password).
pub fn write_atomic_with<T>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<T>,
) -> io::Result<T> {
    let dir = dir_of(path);
    create_dir_durable(dir)?;
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let value = fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Create `dir` and its missing parents so that they survive a power cut:
/// each new directory's entry is fsynced in its parent (a file fsynced in
/// a directory whose own entry was lost is lost with it).
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.is_dir() {
        missing.push(at);
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        sync_dir(dir_of(d))?;
    }
    Ok(())
}

/// fsync a directory, so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes of the files under `dir`, every level down (unreadable entries
/// count nothing): what a directory takes on disk, apparent sizes.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total: u64 = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total = total.saturating_add(m.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directories_are_created_durably() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("hosts/web1/packs/ab");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durable(&deep).unwrap(); // again: nothing to do
        write_atomic(&d.path().join("x/y/f"), b"1").unwrap();
        assert_eq!(std::fs::read(d.path().join("x/y/f")).unwrap(), b"1");
    }

    #[test]
    fn replaces_whole_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two, longer");
        let names: Vec<_> = std::fs::read_dir(d.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    }

    #[test]
    fn failed_fill_keeps_old_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"old").unwrap();
        let r = write_atomic_with(&p, |f| {
            f.write_all(b"partial")?;
            Err::<(), _>(io::Error::other("disk full"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn modes_are_0644_or_what_fill_sets() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("plain");
        write_atomic(&p, b"x").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let k = d.path().join("key");
        write_atomic_with(&k, |f| f.write_all(b"secret")).unwrap();
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn bare_file_name_is_in_current_directory() {
        assert_eq!(dir_of(Path::new("m.xml")), Path::new("."));
        assert!(temp_beside(Path::new("m.xml")).starts_with("."));
    }
}
