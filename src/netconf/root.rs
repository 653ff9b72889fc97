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
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new("/") {
        return path.to_path_buf();
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
            Ok(target) if hops < MAX_SYMLINK_HOPS => {
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
    root.join(resolved.strip_prefix("/").unwrap_or(&resolved))
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
    let host = resolve_in_root(root, path);
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
    let host = resolve_in_root(root, dir);
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
