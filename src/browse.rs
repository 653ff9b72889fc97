//! Looking into the repository: list snapshots, list a directory of a
//! snapshot, and find which snapshots hold a path.

use std::path::Path;

use crate::util::size::human_bytes;

use anyhow::{Context, Result};

use crate::manifest::{Filesystem, FsData, Manifest};
use crate::repo::Repo;
use crate::repo::check::join_path;
use crate::tree::{ChunkId, Entry, Kind};

/// The filesystem of a snapshot that holds `path` (longest mount point
/// prefix), and `path` relative to it as tree bytes.
pub fn locate<'m>(m: &'m Manifest, path: &str) -> Result<(&'m FsData, Vec<u8>)> {
    let mut best: Option<(&FsData, &str)> = None;
    for data in m.backed_up() {
        let mount = data.from.as_str();
        let inside = path == mount || mount == "/" || path.starts_with(&format!("{mount}/"));
        if inside && best.is_none_or(|(_, b)| mount.len() > b.len()) {
            best = Some((data, mount));
        }
    }
    let (data, mount) = best.with_context(|| {
        format!(
            "snapshot {} holds no backed-up filesystem containing {path}",
            m.snapshot.id
        )
    })?;
    let rel = path.strip_prefix(mount).unwrap_or("").trim_matches('/');
    Ok((data, rel.as_bytes().to_vec()))
}

pub fn tree_of(fs: &Filesystem) -> Result<ChunkId> {
    let data = fs
        .data
        .as_ref()
        .context("this filesystem has no data in the snapshot")?;
    Ok(data.tree.id())
}

/// `ls -l`-style line.
pub fn format_entry(e: &Entry, shown: &str) -> String {
    let kind = match e.kind {
        Kind::File => '-',
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::Fifo => 'p',
        Kind::CharDevice => 'c',
        Kind::BlockDevice => 'b',
        Kind::Socket => 's',
    };
    let m = e.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |x: u32, s: u32, lower: char, upper: char| match (m & x != 0, m & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    let perms: String = [
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect();
    let mut line = format!(
        "{kind}{perms} {:>6} {:>6} {:>12} {} {shown}",
        e.uid,
        e.gid,
        e.size,
        crate::time::format_utc(e.mtime.sec)
    );
    if e.kind == Kind::Symlink {
        line.push_str(&format!(
            " -> {}",
            crate::tree::display_bytes(&e.link_target)
        ));
    }
    if let Some(t) = &e.hardlink_to {
        line.push_str(&format!(
            " (hard link to {})",
            crate::tree::display_bytes(t)
        ));
    }
    line
}

/// An entry `ls` or `find` found: its line for people, its JSON for tools.
pub struct Listed<'a> {
    /// The snapshot it is in (`find` only).
    pub snapshot: Option<&'a str>,
    pub entry: &'a Entry,
    /// Its absolute path on the captured machine.
    pub path: String,
}

/// An entry in `ls --json` and `find --json` (a stable interface:
/// docs/api.md, "JSON output").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub path: String,
    /// `file`, `dir`, `symlink`, `fifo`, `char`, `block`, `socket`.
    pub kind: String,
    /// Permission bits, octal (`0644`, `4755`).
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// RFC 3339, UTC, with nanoseconds.
    pub mtime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink_to: Option<String>,
}

impl Listed<'_> {
    pub fn line(&self) -> String {
        let l = format_entry(self.entry, &self.path);
        match self.snapshot {
            Some(s) => format!("{s}  {l}"),
            None => l,
        }
    }

    pub fn json(&self) -> EntryJson {
        let e = self.entry;
        let kind = match e.kind {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::CharDevice => "char",
            Kind::BlockDevice => "block",
            Kind::Socket => "socket",
        };
        let secs = crate::time::format_utc(e.mtime.sec);
        EntryJson {
            snapshot: self.snapshot.map(str::to_string),
            path: self.path.clone(),
            kind: kind.into(),
            mode: format!("{:04o}", e.mode),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            mtime: format!("{}.{:09}Z", secs.trim_end_matches('Z'), e.mtime.nsec),
            link_target: (e.kind == Kind::Symlink)
                .then(|| crate::tree::display_bytes(&e.link_target)),
            hardlink_to: e.hardlink_to.as_deref().map(crate::tree::display_bytes),
        }
    }
}

/// Give the entries directly under `path` (or the entry itself if it is
/// not a directory) to `out`; `None` when the snapshot has no such path.
pub fn ls(
    repo: &Repo,
    m: &Manifest,
    path: &str,
    out: &mut dyn FnMut(Listed<'_>),
) -> Result<Option<usize>> {
    let (data, rel) = locate(m, path)?;
    let from = &data.from;
    let mut n = 0;
    let mut found_dir = false;
    for e in repo.tree_entries(&data.tree.id())? {
        let e = e?;
        let is_child = if rel.is_empty() {
            !e.path.is_empty() && !e.path.contains(&b'/')
        } else {
            e.path
                .strip_prefix(rel.as_slice())
                .is_some_and(|r| r.first() == Some(&b'/') && !r[1..].contains(&b'/') && r.len() > 1)
        };
        if is_child || (e.path == rel && e.kind != Kind::Dir) {
            out(Listed {
                snapshot: None,
                entry: &e,
                path: join_path(from, &e.path),
            });
            n += 1;
        } else if e.path == rel {
            found_dir = true;
        }
    }
    // An empty directory exists too: only a missing path is an error.
    Ok(if n == 0 && found_dir {
        Some(0)
    } else {
        (n > 0).then_some(n)
    })
}

/// Which snapshots hold a path matching `pattern`: a pattern with a `/` is
/// matched against the whole path, one without against the name only.
pub fn find(
    repo: &Repo,
    pattern: &str,
    host: Option<&str>,
    out: &mut dyn FnMut(Listed<'_>),
) -> Result<usize> {
    let whole = pattern.contains('/');
    let mut n = 0;
    for m in repo.snapshots()? {
        if host.is_some_and(|h| m.snapshot.host != h) {
            continue;
        }
        for data in m.backed_up() {
            for e in repo.tree_entries(&data.tree.id())? {
                let e = e?;
                let full = join_path(&data.from, &e.path);
                let subject = if whole {
                    full.as_bytes()
                } else {
                    e.path.rsplit(|&b| b == b'/').next().unwrap_or(&[])
                };
                if crate::util::glob::matches(pattern.as_bytes(), subject) {
                    out(Listed {
                        snapshot: Some(&m.snapshot.id),
                        entry: &e,
                        path: full,
                    });
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

pub fn describe_snapshot(m: &Manifest) -> String {
    let (files, bytes) = m
        .backed_up()
        .fold((0, 0), |(n, b), d| (n + d.entries, b + d.bytes));
    let mounts: Vec<&str> = m.backed_up().map(|d| d.from.as_str()).collect();
    format!(
        "{:<32} {:<16} {}  {:>9} entries {:>10}  {}",
        m.snapshot.id,
        m.snapshot.host,
        m.snapshot.time,
        files,
        human_bytes(bytes),
        mounts.join(" ")
    )
}

/// A path given on the command line for a restore, relative to `mount`.
pub fn relative_to(mount: &str, path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let rel = if bytes.starts_with(b"/") {
        let m = mount.trim_end_matches('/').as_bytes();
        bytes
            .strip_prefix(m)
            .filter(|r| r.is_empty() || r[0] == b'/')
            .with_context(|| format!("{} is not under {mount}", path.display()))?
    } else {
        bytes
    };
    Ok(rel
        .trim_ascii_start()
        .strip_prefix(b"/")
        .unwrap_or(rel)
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative_to("/srv", Path::new("/srv/a/b")).unwrap(), b"a/b");
        assert_eq!(
            relative_to("/", Path::new("/etc/hosts")).unwrap(),
            b"etc/hosts"
        );
        assert_eq!(relative_to("/srv", Path::new("a/b")).unwrap(), b"a/b");
        assert!(relative_to("/srv", Path::new("/srvx/a")).is_err());
    }
}
