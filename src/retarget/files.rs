//! The restored root's files as the rewriters see them: absolute paths of
//! the restored system resolved inside the root, text loaded once and edited
//! in memory by every step, then each changed file written once, atomically.

use std::collections::BTreeMap;
use std::fs::{self, File, Permissions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::io::Errno;

use super::{Change, ChangeKind};
use crate::netconf::root::{list_dir, resolve_in_root};

/// One file the rewriters looked at.
struct Entry {
    /// Relative to the root, after symlinks.
    rel: PathBuf,
    /// `None`: absent (or not usable), `current` may create it.
    original: Option<String>,
    current: Option<String>,
}

pub(super) struct Workspace<'a> {
    root: &'a Path,
    /// By host path, so two names of one file (symlinks) are one entry.
    files: BTreeMap<PathBuf, Entry>,
    changes: Vec<Change>,
    /// Files renamed at commit: host path, new host path, why.
    asides: Vec<(PathBuf, PathBuf, String)>,
}

impl<'a> Workspace<'a> {
    pub(super) fn new(root: &'a Path) -> Self {
        Workspace {
            root,
            files: BTreeMap::new(),
            changes: Vec::new(),
            asides: Vec::new(),
        }
    }

    pub(super) fn root(&self) -> &'a Path {
        self.root
    }

    /// The host path of `abs` (absolute on the restored system).
    fn host(&self, abs: &Path) -> PathBuf {
        resolve_in_root(self.root, abs)
    }

    fn rel(&self, host: &Path) -> PathBuf {
        host.strip_prefix(self.root).unwrap_or(host).to_path_buf()
    }

    /// Regular files in directory `abs` (sorted by name) whose name ends in
    /// `suffix`, as absolute paths of the restored system.
    pub(super) fn list(&self, abs: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
        Ok(list_dir(self.root, abs)?
            .into_iter()
            .filter(|n| n.ends_with(suffix) && !n.starts_with('.'))
            .map(|n| abs.join(n))
            .filter(|p| self.host(p).is_file())
            .collect())
    }

    /// Whether `abs` exists under the root (following symlinks inside it).
    pub(super) fn exists(&self, abs: &Path) -> bool {
        self.host(abs).exists()
    }

    /// The current text of `abs`; `None` when absent, not a regular file
    /// (a `/dev/null` mask), or not UTF-8 (left alone with a warning).
    pub(super) fn text(&mut self, abs: &Path) -> Result<Option<String>> {
        let host = self.host(abs);
        if !self.files.contains_key(&host) {
            let original = self.load(&host)?;
            let rel = self.rel(&host);
            self.files.insert(
                host.clone(),
                Entry {
                    rel,
                    current: original.clone(),
                    original,
                },
            );
        }
        Ok(self.files[&host].current.clone())
    }

    fn load(&mut self, host: &Path) -> Result<Option<String>> {
        match fs::metadata(host) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", host.display())),
        }
        let bytes = fs::read(host).with_context(|| format!("cannot read {}", host.display()))?;
        match String::from_utf8(bytes) {
            Ok(s) => Ok(Some(s)),
            Err(_) => {
                self.changes.push(Change {
                    file: self.rel(host),
                    what: "not UTF-8 text: left alone".to_string(),
                    kind: ChangeKind::Warning,
                });
                Ok(None)
            }
        }
    }

    /// Replace the text of `abs` (read before with [`Self::text`], or new),
    /// recording one change per line of `whats`.
    pub(super) fn set(&mut self, abs: &Path, text: String, whats: Vec<String>) {
        let host = self.host(abs);
        let rel = self.rel(&host);
        let entry = self.files.entry(host).or_insert_with(|| Entry {
            rel: rel.clone(),
            original: None,
            current: None,
        });
        let kind = if entry.original.is_some() {
            ChangeKind::Edited
        } else {
            ChangeKind::Created
        };
        entry.current = Some(text);
        self.changes.extend(whats.into_iter().map(|what| Change {
            file: rel.clone(),
            what,
            kind,
        }));
    }

    /// Record a warning about `abs`.
    pub(super) fn warn(&mut self, abs: &Path, what: String) {
        let file = self.rel(&self.host(abs));
        self.changes.push(Change {
            file,
            what,
            kind: ChangeKind::Warning,
        });
    }

    /// Rename `abs` to its name with `suffix` appended at commit (kept for
    /// the operator, out of the way of what reads `abs`), recording `what`.
    pub(super) fn move_aside(&mut self, abs: &Path, suffix: &str, what: String) {
        let host = self.host(abs);
        let mut to = host.clone().into_os_string();
        to.push(suffix);
        self.asides.push((host, PathBuf::from(to), what));
    }

    /// Write every file whose text changed; the changes, in the order made.
    pub(super) fn commit(mut self) -> Result<Vec<Change>> {
        let mut unchanged = Vec::new();
        for (host, entry) in &self.files {
            match &entry.current {
                Some(text) if entry.original.as_ref() != Some(text) => {
                    if let Some(w) = write_atomic(host, text.as_bytes())? {
                        self.changes.push(Change {
                            file: entry.rel.clone(),
                            what: w,
                            kind: ChangeKind::Warning,
                        });
                    }
                }
                _ => unchanged.push(entry.rel.clone()),
            }
        }
        // Edits that undid each other wrote nothing and are not reported.
        self.changes
            .retain(|c| c.kind == ChangeKind::Warning || !unchanged.contains(&c.file));
        for (from, to, what) in std::mem::take(&mut self.asides) {
            fs::rename(&from, &to)
                .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
            self.changes.push(Change {
                file: self.rel(&from),
                what,
                kind: ChangeKind::Edited,
            });
        }
        Ok(self.changes)
    }
}

/// Replace `path` by a file holding `data`: written beside it, given the
/// old file's owner, mode and xattrs (SELinux labels, ACLs), synced, then
/// renamed over it, so a crash leaves the old or the new file, never half of
/// one. A new file gets mode 0644. Returns a warning when xattrs could not
/// all be copied.
fn write_atomic(path: &Path, data: &[u8]) -> Result<Option<String>> {
    let old = match fs::symlink_metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    // The temporary file stays 0600 until it has the old file's owner and
    // mode: a keyfile's secrets are never readable by others on the way.
    crate::util::fs::write_atomic_with(path, |f| {
        f.write_all(data)?;
        Ok(match &old {
            Some(m) => {
                std::os::unix::fs::fchown(&*f, Some(m.uid()), Some(m.gid()))?;
                f.set_permissions(Permissions::from_mode(m.mode() & 0o7777))?;
                copy_xattrs(path, f)
                    .err()
                    .map(|e| format!("extended attributes not all kept: {e}"))
            }
            None => {
                f.set_permissions(Permissions::from_mode(0o644))?;
                None
            }
        })
    })
    .with_context(|| format!("cannot replace {}", path.display()))
}

fn copy_xattrs(from: &Path, to: &File) -> rustix::io::Result<()> {
    let mut list = vec![0u8; 64 * 1024];
    let mut value = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(from, &mut list[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        match rustix::fs::lgetxattr(from, name, &mut value[..]) {
            Ok(len) => rustix::fs::fsetxattr(
                to.as_fd(),
                name,
                &value[..len],
                rustix::fs::XattrFlags::empty(),
            )?,
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
