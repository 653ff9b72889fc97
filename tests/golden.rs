//! Formats that stay readable: fixtures written by an earlier build of
//! rewind, committed under tests/fixtures/golden/, that every later build
//! must read. A change to the tree encoding, the pack format or the
//! manifest that breaks these tests needs a version bump and a reader for
//! the old version, not a new fixture.
//!
//! - `repo-v1/`: a repository ("rewind repository 1") holding one snapshot
//!   of a small tree, written by `write_golden_repository` below (run it
//!   with `REWIND_WRITE_GOLDEN=1 cargo test --test golden -- --ignored`
//!   only to add a fixture for a new format version). `repo-v1.listing`
//!   is what its tree held: kind, mode, size, link target and BLAKE3 of
//!   each entry's content.
//! - `manifest-schema1.xml`: the complete schema-1 manifest of
//!   docs/manifest.md as of the first release.
//!
//! (The recovery image's API calls are kept the same way under
//! tests/fixtures/api/.)

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rewind::repo::Repo;
use rewind::tree::Kind;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name)
}

/// The golden repository copied to a temporary directory: opening a
/// repository may write (it re-indexes a pack whose index is missing), and
/// the committed fixture must stay as it was written.
fn repo_copy() -> (tempfile::TempDir, Repo) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(golden("repo-v1"))
        .arg(dir.path().join("repo"))
        .status()
        .unwrap();
    assert!(status.success());
    let repo = Repo::open(&dir.path().join("repo")).unwrap();
    (dir, repo)
}

/// One line per tree entry: what a restore of it must reproduce.
fn listing(repo: &Repo, tree: &str) -> String {
    let id = rewind::tree::ChunkId::from_hex(tree).expect("tree id is hex");
    let mut out = String::new();
    for e in repo.tree_entries(&id).unwrap() {
        let e = e.unwrap();
        let mut content = blake3::Hasher::new();
        for c in &e.chunks {
            content.update(&repo.fetch_verified(c).unwrap());
        }
        let kind = match e.kind {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            _ => "other",
        };
        let path = String::from_utf8_lossy(&e.path);
        let target = String::from_utf8_lossy(&e.link_target);
        let link = e
            .hardlink_to
            .as_ref()
            .map(|p| format!(" hardlink-to={}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let xattrs: Vec<String> = e
            .xattrs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect();
        writeln!(
            out,
            "{kind} {path:?} mode={:o} size={} mtime={}.{:09} target={target:?}{link} xattrs=[{}] chunks={} data={}",
            e.mode,
            e.size,
            e.mtime.sec,
            e.mtime.nsec,
            xattrs.join(","),
            e.chunks.len(),
            &content.finalize().to_hex()[..16],
        )
        .unwrap();
    }
    out
}

#[test]
fn repository_v1_is_readable() {
    let (_dir, repo) = repo_copy();
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 1, "the golden repository holds one snapshot");
    let m = &snaps[0];
    assert_eq!(m.snapshot.host, "golden");
    let data = m.filesystems[0]
        .data
        .as_ref()
        .expect("the root has a data reference");
    let want = std::fs::read_to_string(golden("repo-v1.listing")).unwrap();
    assert_eq!(listing(&repo, &data.tree), want);
    assert_eq!(data.entries as usize, want.lines().count());

    // Every pack and chunk verifies.
    let report = rewind::repo::check::check(&repo, |_, _| {}).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        std::fs::read_to_string(golden("repo-v1/config")).unwrap(),
        "rewind repository 1\n"
    );
}

#[test]
fn manifest_schema1_is_readable() {
    let text = std::fs::read_to_string(golden("manifest-schema1.xml")).unwrap();
    let m = rewind::manifest::from_xml(&text).unwrap();
    assert_eq!(m.schema, 1);
    assert_eq!(m.snapshot.host, "web1");
    assert_eq!(m.disks.len(), 2);
    assert_eq!(m.filesystems.len(), 4);
    assert_eq!(m.swaps.len(), 2);
    // While schema 1 is what rewind writes, it writes it back unchanged.
    assert_eq!(rewind::manifest::to_xml(&m).unwrap(), text);
}

/// Writes tests/fixtures/golden/repo-v1 and its listing. Run once per new
/// repository format version, never to "fix" a failing reader.
#[test]
#[ignore]
fn write_golden_repository() {
    if std::env::var_os("REWIND_WRITE_GOLDEN").is_none() {
        return;
    }
    use std::os::unix::fs::{PermissionsExt, symlink};
    let src = tempfile::tempdir().unwrap();
    let root = src.path();
    let f = |p: &str, data: &[u8], mode: u32| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    f("etc/hostname", b"golden\n", 0o644);
    f("etc/empty", b"", 0o600);
    f("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o4755);
    // Several chunks (FastCDC averages 1 MiB): a reproducible 3 MiB of
    // one random bit per byte, so that it compresses and the fixture stays
    // small while chunk boundaries stay content-defined.
    let mut big = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while big.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.push(if x & 1 == 0 { b'a' } else { b'b' });
    }
    f("var/lib/big.bin", &big, 0o640);
    symlink("../etc/hostname", root.join("usr/hostname-link")).unwrap();
    std::fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.bak")).unwrap();
    xattr_set(&root.join("etc/hostname"), "user.golden", "yes");

    let out = golden("repo-v1");
    assert!(
        !out.exists(),
        "{} exists: a fixture is never rewritten",
        out.display()
    );
    let mut repo = Repo::init(&out).unwrap();
    let mut warnings = Vec::new();
    let (tree, report) = rewind::capture::backup_tree(
        &mut repo,
        root,
        None,
        &mut warnings,
        &rewind::progress::Progress::quiet(),
    )
    .unwrap();
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest schema="1">
  <snapshot id="20261130T120000Z-golden" host="golden" time="2026-11-30T12:00:00Z" tool="rewind 0.1.0"/>
  <system>
    <hostname>golden</hostname>
    <kernel release="6.1.0-27-amd64" arch="x86_64"/>
    <firmware>bios</firmware>
  </system>
  <network/>
  <filesystem device="/dev/vda1" type="ext4" uuid="0a1b2c3d-1111-4222-8333-444455556666">
    <mount point="/" options="rw"/>
    <data tree="{}" from="/" entries="{}" bytes="{}"/>
  </filesystem>
</manifest>
"#,
        tree.to_hex(),
        report.entries,
        report.bytes
    );
    let m = rewind::manifest::from_xml(&xml).unwrap();
    repo.commit_snapshot(&m).unwrap();
    std::fs::write(golden("repo-v1.listing"), listing(&repo, &tree.to_hex())).unwrap();
}

fn xattr_set(path: &Path, name: &str, value: &str) {
    let status = std::process::Command::new("setfattr")
        .args(["-n", name, "-v", value])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "setfattr on {}", path.display());
}
