//! Files of the examined system under a root directory. Paths are absolute
//! on the examined system (`/etc/resolv.conf`) and resolved inside the root,
//! following symlinks there: /etc/resolv.conf is usually an absolute symlink
//! into /run, which must lead to the restored or mounted tree, never to the
//! running system's own file.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

/// Symlinks followed while resolving one path before giving up (a loop).
const MAX_SYMLINK_HOPS: usize = 40;

/// Map an absolute path on the examined system to the host path under
/// `root`, following symlinks inside `root`; `..` stops at the root.
///
/// Past [`MAX_SYMLINK_HOPS`] (a loop, or a chain made to be long) the
/// answer is a path that every system call refuses (it holds a NUL byte):
/// falling back to the link itself would let the running system's kernel
/// follow it, out of the root (a restored `/etc/x` → `/etc/shadow`).
/// [`try_resolve_in_root`] says so as an error.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    try_resolve_in_root(root, path).unwrap_or_else(|_| {
        use std::os::unix::ffi::OsStrExt;
        root.join(std::ffi::OsStr::from_bytes(b"symlink loop\0"))
    })
}

/// [`resolve_in_root`], failing past the hop limit.
pub(crate) fn try_resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    if root == Path::new("/") {
        return Ok(path.to_path_buf());
    }
    let mut resolved = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = components(path);
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let host = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match fs::read_link(&host) {
            Ok(_) if hops == MAX_SYMLINK_HOPS => anyhow::bail!(
                "{}: more than {MAX_SYMLINK_HOPS} symlinks to follow inside {} (a loop?)",
                path.display(),
                root.display()
            ),
            Ok(target) => {
                hops += 1;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved.strip_prefix("/").unwrap_or(&resolved)))
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The text of `path` (absolute on the examined system); `None` when absent.
pub(crate) fn read_optional(root: &Path, path: &Path) -> Result<Option<String>> {
    let host = try_resolve_in_root(root, path)?;
    match fs::read(&host) {
        // Configuration files are text; a stray non-UTF-8 byte (a comment in
        // Latin-1) must not make the whole probe fail.
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", host.display())),
    }
}

/// Names in directory `dir` (absolute on the examined system), sorted; empty
/// when it does not exist.
pub(crate) fn list_dir(root: &Path, dir: &Path) -> Result<Vec<String>> {
    let host = try_resolve_in_root(root, dir)?;
    let entries = match fs::read_dir(&host) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", host.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", host.display()))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Files ending in `suffix` in `dirs`, in file-name order; for a name present
/// in several directories only the one in the earliest directory counts.
pub(crate) fn list_config_files(root: &Path, dirs: &[&str], suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files = BTreeMap::new();
    for dir in dirs {
        for name in list_dir(root, Path::new(dir))? {
            if name.ends_with(suffix) {
                files
                    .entry(name.clone())
                    .or_insert_with(|| Path::new(dir).join(&name));
            }
        }
    }
    Ok(files.into_values().collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::netconf::testing::write;

    #[test]
    fn symlinks_and_dotdot_stay_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "/run/real.conf", "inside\n");
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/run/real.conf", root.join("etc/abs.conf")).unwrap();
        symlink("../run/real.conf", root.join("etc/rel.conf")).unwrap();
        symlink("../../../../run/real.conf", root.join("etc/deep.conf")).unwrap();
        for link in ["/etc/abs.conf", "/etc/rel.conf", "/etc/deep.conf"] {
            assert_eq!(
                resolve_in_root(root, Path::new(link)),
                root.join("run/real.conf"),
                "{link}"
            );
            assert_eq!(
                read_optional(root, Path::new(link)).unwrap().as_deref(),
                Some("inside\n")
            );
        }
        assert_eq!(
            resolve_in_root(root, Path::new("/../../etc/passwd")),
            root.join("etc/passwd")
        );
        // A symlink loop ends, inside the root.
        symlink("/etc/loop", root.join("etc/loop")).unwrap();
        assert!(resolve_in_root(root, Path::new("/etc/loop")).starts_with(root));
        assert_eq!(read_optional(root, Path::new("/etc/none")).unwrap(), None);
    }

    /// A chain one hop longer than the limit whose last link names a file
    /// of the running system: resolution fails, and nothing reads the
    /// running system's file (the old fallback returned the link itself,
    /// which the kernel then followed out of the root).
    #[test]
    fn past_the_hop_limit_resolution_fails() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        fs::write(&secret, "the running system's\n").unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        for i in 0..=MAX_SYMLINK_HOPS {
            symlink(format!("/etc/l{}", i + 1), root.join(format!("etc/l{i}"))).unwrap();
        }
        // The last link points at an absolute path of the running system.
        symlink(&secret, root.join(format!("etc/l{}", MAX_SYMLINK_HOPS + 1))).unwrap();
        let e = try_resolve_in_root(root, Path::new("/etc/l0")).unwrap_err();
        assert!(e.to_string().contains("more than 40 symlinks"), "{e}");
        assert!(read_optional(root, Path::new("/etc/l0")).is_err());
        let host = resolve_in_root(root, Path::new("/etc/l0"));
        assert!(fs::read(&host).is_err(), "{}", host.display());
        assert!(!host.exists());
        // Exactly the limit is followed: l1 → … → l41, now a file inside.
        fs::remove_file(root.join(format!("etc/l{}", MAX_SYMLINK_HOPS + 1))).unwrap();
        fs::write(
            root.join(format!("etc/l{}", MAX_SYMLINK_HOPS + 1)),
            "inside",
        )
        .unwrap();
        assert_eq!(
            read_optional(root, Path::new("/etc/l1"))
                .unwrap()
                .as_deref(),
            Some("inside")
        );
    }

    #[test]
    fn config_files_shadow_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "/etc/netplan/50-cloud.yaml", "");
        write(root, "/lib/netplan/50-cloud.yaml", "");
        write(root, "/lib/netplan/10-base.yaml", "");
        write(root, "/lib/netplan/README", "");
        let files = list_config_files(root, &["/etc/netplan", "/lib/netplan"], ".yaml").unwrap();
        assert_eq!(
            files,
            [
                PathBuf::from("/lib/netplan/10-base.yaml"),
                PathBuf::from("/etc/netplan/50-cloud.yaml")
            ]
        );
        assert!(list_dir(root, Path::new("/nope")).unwrap().is_empty());
    }
}
