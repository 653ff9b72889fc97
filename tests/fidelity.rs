//! Fidelity of the data engine's two filesystem ends: a tree with every kind
//! of object is walked, its file data cut into chunks held in memory, and
//! restored to a fresh directory; the result is compared with oracles that
//! are not rewind's code (rsync, getfattr, getfacl, stat). Also: restore of
//! hostile trees cannot write outside its target, and subset restores.
//! Root only (chown, mknod, trusted.* and security.* xattrs).

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Result, anyhow, ensure};
use rewind::restore::{ChunkSource, RestoreFailed, RestoreOptions, RestoreStats, restore};
use rewind::tree::{ChunkId, ChunkRef, Entry, Extent, Kind, Time};
use rewind::walk::{WalkStats, data_extents, read_extents, walk};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

use common::{root_or_skip, sh};

/// File data is cut in fixed pieces here; the real chunker is content-defined.
const PIECE: usize = 64 << 10;

/// Chunks in memory, verified by hash on fetch like the repository's.
#[derive(Default)]
struct MemSource {
    chunks: Mutex<HashMap<ChunkId, Vec<u8>>>,
}

impl MemSource {
    fn put(&self, data: Vec<u8>) -> ChunkRef {
        let id = ChunkId::of(&data);
        let len = data.len() as u32;
        self.chunks.lock().unwrap().insert(id, data);
        ChunkRef { id, len }
    }
}

impl ChunkSource for MemSource {
    fn fetch(&self, chunk: &ChunkRef) -> Result<Vec<u8>> {
        let data = self
            .chunks
            .lock()
            .unwrap()
            .get(&chunk.id)
            .cloned()
            .ok_or_else(|| anyhow!("no chunk {:?}", chunk.id))?;
        ensure!(
            ChunkId::of(&data) == chunk.id,
            "chunk {:?} does not match its hash",
            chunk.id
        );
        Ok(data)
    }
}

/// Walk `root`, reading every file's data into `source`.
fn capture(root: &Path, source: &MemSource) -> (Vec<Entry>, WalkStats) {
    let mut entries = Vec::new();
    let stats = walk(root, &mut |e, content| {
        if content.is_readable() {
            let (file, extents) = content.open()?;
            let mut pending = Vec::new();
            let mut chunks = Vec::new();
            let missing = read_extents(&file, &extents, |data| {
                pending.extend_from_slice(data);
                while pending.len() >= PIECE {
                    let rest = pending.split_off(PIECE);
                    chunks.push(source.put(std::mem::replace(&mut pending, rest)));
                }
                Ok(())
            })?;
            assert_eq!(missing, 0, "{} shrank", e.display_path());
            if !pending.is_empty() {
                chunks.push(source.put(pending));
            }
            e.extents = extents;
            e.chunks = chunks;
        }
        entries.push(e.clone());
        Ok(())
    })
    .unwrap();
    (entries, stats)
}

fn at(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

fn write(root: &Path, rel: &[u8], data: &[u8]) -> PathBuf {
    let p = at(root, rel);
    fs::write(&p, data).unwrap();
    p
}

fn mkdir(root: &Path, rel: &[u8], mode: u32) -> PathBuf {
    let p = at(root, rel);
    fs::create_dir(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn run(program: &str, args: &[&OsStr]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setfattr(p: &Path, name: &str, value: &str) {
    run(
        "setfattr",
        &[
            "-h".as_ref(),
            "-n".as_ref(),
            name.as_ref(),
            "-v".as_ref(),
            value.as_ref(),
            p.as_os_str(),
        ],
    );
}

const MIB: u64 = 1 << 20;

/// A tree with every kind of object the data engine must keep.
fn build_tree(src: &Path) {
    write(src, b"plain.txt", b"hello, world\n");
    write(src, b"empty", b"");
    write(
        src,
        b"large.bin",
        &pseudo_random(5 * MIB as usize + 12345, 1),
    );
    // Holes at the start, in the middle and at the end.
    let f = fs::File::create(at(src, b"sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&pseudo_random(128 << 10, 2), MIB).unwrap();
    f.write_all_at(&pseudo_random((64 << 10) + 5, 3), 3 * MIB)
        .unwrap();
    f.set_len(8 * MIB).unwrap();
    drop(f);
    let f = fs::File::create(at(src, b"all-hole")).unwrap();
    f.set_len(10 * MIB).unwrap();
    drop(f);
    // Data up to the end, a hole before it.
    let f = fs::File::create(at(src, b"sparse-tail-data")).unwrap();
    f.write_all_at(b"end", 2 * MIB).unwrap();
    drop(f);

    // Directories with unusual modes.
    mkdir(src, b"dir700", 0o700);
    mkdir(src, b"dir700/nested", 0o755);
    mkdir(src, b"dir700/nested/deeper", 0o500);
    write(src, b"dir700/nested/file", b"nested\n");
    let sticky = mkdir(src, b"sticky", 0o1777);
    write(src, b"sticky/in-sticky", b"x");
    let sgid_dir = mkdir(src, b"sgid-dir", 0o2775);
    write(src, b"sgid-dir/f", b"y");
    lchown(&sgid_dir, 0, 54321);
    chmod(&sgid_dir, 0o2775);
    chmod(&sticky, 0o1777);
    mkdir(src, b"empty-dir", 0o755);

    // Mode bits on files, set after the owner (chown clears setuid).
    let suid = write(src, b"suid", b"#!/bin/sh\n");
    lchown(&suid, 12345, 54321);
    chmod(&suid, 0o4755);
    let sgid = write(src, b"sgid", b"g");
    chmod(&sgid, 0o2711);
    chmod(&write(src, b"all-bits", b"a"), 0o7777);
    chmod(&write(src, b"no-bits", b"n"), 0o000);

    // Owners without passwd entries.
    lchown(&write(src, b"owned", b"o"), 12345, 54321);
    let od = mkdir(src, b"owned-dir", 0o750);
    write(src, b"owned-dir/inner", b"i");
    lchown(&od, 23456, 65432);

    // Symlinks.
    mkdir(src, b"links", 0o755);
    std::os::unix::fs::symlink("/etc/passwd", at(src, b"links/abs")).unwrap();
    std::os::unix::fs::symlink("../plain.txt", at(src, b"links/rel")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", at(src, b"links/dangling")).unwrap();
    let owned_link = at(src, b"links/owned");
    std::os::unix::fs::symlink("plain.txt", &owned_link).unwrap();
    lchown(&owned_link, 34567, 45678);
    setfattr(&at(src, b"links/rel"), "trusted.on-symlink", "s");
    // A second link to a symlink.
    fs::hard_link(at(src, b"links/rel"), at(src, b"links/rel-hardlink")).unwrap();

    // Three links to one file across directories.
    mkdir(src, b"hl", 0o755);
    mkdir(src, b"hl/sub", 0o755);
    mkdir(src, b"other", 0o711);
    write(src, b"hl/a", &pseudo_random(200_000, 4));
    fs::hard_link(at(src, b"hl/a"), at(src, b"hl/sub/b")).unwrap();
    fs::hard_link(at(src, b"hl/a"), at(src, b"other/c")).unwrap();

    // Special files.
    mkdir(src, b"dev", 0o755);
    run("mkfifo", &[at(src, b"dev/fifo").as_os_str()]);
    lchown(&at(src, b"dev/fifo"), 1, 2);
    chmod(&at(src, b"dev/fifo"), 0o620);
    fs::hard_link(at(src, b"dev/fifo"), at(src, b"dev/fifo-hardlink")).unwrap();
    let null = at(src, b"dev/null");
    run(
        "mknod",
        &[null.as_os_str(), "c".as_ref(), "1".as_ref(), "3".as_ref()],
    );
    chmod(&null, 0o666);
    setfattr(&null, "trusted.on-device", "d");
    let loop200 = at(src, b"dev/loop200");
    run(
        "mknod",
        &[
            loop200.as_os_str(),
            "b".as_ref(),
            "7".as_ref(),
            "200".as_ref(),
        ],
    );
    lchown(&loop200, 0, 6);
    chmod(&loop200, 0o660);
    let big = at(src, b"dev/big-numbers");
    run(
        "mknod",
        &[
            big.as_os_str(),
            "c".as_ref(),
            "4095".as_ref(),
            "1048575".as_ref(),
        ],
    );
    drop(std::os::unix::net::UnixListener::bind(at(src, b"dev/socket")).unwrap());

    // Extended attributes of every namespace.
    let x = write(src, b"xattrs", b"with xattrs");
    setfattr(&x, "user.plain", "value");
    setfattr(&x, "user.binary", "0x00ff10fe");
    setfattr(&x, "user.empty", "");
    setfattr(&x, "trusted.t", "trusted value");
    setfattr(&x, "security.selinux", "system_u:object_r:etc_t:s0");
    let xd = mkdir(src, b"xattr-dir", 0o755);
    setfattr(&xd, "user.on-dir", "d");
    setfattr(&xd, "security.selinux", "system_u:object_r:var_t:s0");
    let cap = write(src, b"cap", b"\x7fELF pretend");
    lchown(&cap, 0, 0);
    chmod(&cap, 0o750);
    run(
        "setcap",
        &["cap_net_raw,cap_net_admin+ep".as_ref(), cap.as_os_str()],
    );
    let big_value = "v".repeat(3000);
    setfattr(&write(src, b"big-xattr", b"b"), "user.big", &big_value);

    // POSIX ACLs, a default ACL inherited by what is made below it.
    let acl = write(src, b"acl-file", b"acl");
    run(
        "setfacl",
        &[
            "-m".as_ref(),
            "u:12345:rwx,g:54321:r-x,u:0:r".as_ref(),
            acl.as_os_str(),
        ],
    );
    let acl_dir = mkdir(src, b"acl-dir", 0o750);
    run(
        "setfacl",
        &[
            "-m".as_ref(),
            "u:12345:rwx,g:54321:rx".as_ref(),
            "-d".as_ref(),
            "-m".as_ref(),
            "u:23456:rwx,g::rx,o::-".as_ref(),
            acl_dir.as_os_str(),
        ],
    );
    write(src, b"acl-dir/inherited", b"inherits the default ACL");
    fs::create_dir(at(src, b"acl-dir/subdir")).unwrap();
    run("mkfifo", &[at(src, b"acl-dir/fifo").as_os_str()]);

    // Names.
    write(src, b"caf\xe9", b"latin-1 name");
    mkdir(src, b"d\xff\xfe", 0o755);
    write(src, b"d\xff\xfe/x\x80y", b"non-UTF-8 all the way");
    rustix::fs::lsetxattr(
        at(src, b"caf\xe9").as_path(),
        "user.name",
        b"caf\xe9",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    write(src, b"new\nline", b"newline");
    write(src, b"with space ", b"space");
    write(src, b" leading space", b"space");
    write(src, b"tab\tname", b"tab");
    write(src, b"-dash", b"dash");
    write(src, &[b'n'; 255], b"longest name");
    write(src, "unicode-\u{e9}\u{1f600}".as_bytes(), b"utf-8");

    // Times, in nanoseconds; directories after their contents.
    let mut i = 0;
    set_times(src, &mut i);
    let stamp = |p: &[u8], a: i64, m: i64| {
        let ts = Timestamps {
            last_access: Timespec {
                tv_sec: a,
                tv_nsec: 1,
            },
            last_modification: Timespec {
                tv_sec: m,
                tv_nsec: 999_999_999,
            },
        };
        rustix::fs::utimensat(CWD, at(src, p).as_path(), &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    };
    write(src, b"old", b"before 1970");
    write(src, b"future", b"after 2038");
    stamp(b"old", -315_619_200, -315_619_199);
    stamp(b"future", 4_102_444_800, 4_102_444_801);
    // The root last (writing "old" and "future" changed it).
    stamp(b"", 1_234_567_890, 1_234_567_891);
}

/// Set distinct atimes and mtimes with nanoseconds on everything below `p`,
/// children before their directory. Atimes are older than mtimes and than a
/// day, so that relatime would update them on any read.
fn set_times(p: &Path, i: &mut i64) {
    let md = fs::symlink_metadata(p).unwrap();
    if md.is_dir() {
        let mut children: Vec<PathBuf> = fs::read_dir(p)
            .unwrap()
            .map(|d| d.unwrap().path())
            .collect();
        children.sort();
        for c in children {
            set_times(&c, i);
        }
    }
    *i += 1;
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: 1_400_000_000 + *i * 7,
            tv_nsec: (123_456_789 + *i * 1_000) % 1_000_000_000,
        },
        last_modification: Timespec {
            tv_sec: 1_500_000_000 + *i * 11,
            tv_nsec: 987_654_321 - *i,
        },
    };
    rustix::fs::utimensat(CWD, p, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// One record per path: name, raw mode, owner, size, atime and mtime (ns),
/// link count, device numbers. Paths relative to the root. Listing reads
/// directories, which updates their atimes: it looks through a noatime
/// bind mount.
fn stat_dump(root: &Path) -> Vec<String> {
    let view = root.with_extension("noatime-view");
    fs::create_dir(&view).unwrap();
    let v = view.to_str().unwrap();
    sh("mount", &["--bind", root.to_str().unwrap(), v]);
    let mounted = common::Mounted {
        point: view.clone(),
    };
    sh("mount", &["-o", "remount,bind,noatime", v]);
    let script = r#"cd "$1" && find . -print0 | LC_ALL=C sort -z | xargs -0 stat --printf '%n\t%f\t%u\t%g\t%s\t%x\t%y\t%h\t%t:%T\0'"#;
    let out = Command::new("sh")
        .args(["-c", script, "sh", v])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    drop(mounted);
    fs::remove_dir(&view).unwrap();
    assert!(
        out.status.success(),
        "stat dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

/// Blocks of a tool's recursive dump ("# file: PATH" headers), with the root
/// prefix replaced and sorted (the tools list directories in readdir order).
fn blocks(out: &str, root: &Path) -> Vec<String> {
    let root = root.to_str().unwrap();
    let mut blocks: Vec<String> = out
        .split("\n\n")
        .map(|b| b.trim().replace(root, "ROOT"))
        .filter(|b| !b.is_empty())
        .collect();
    blocks.sort();
    blocks
}

fn getfattr_dump(root: &Path) -> Vec<String> {
    let r = root.to_str().unwrap();
    blocks(
        &sh(
            "getfattr",
            &[
                "-R",
                "-P",
                "-h",
                "-d",
                "-m",
                "-",
                "-e",
                "hex",
                "--absolute-names",
                r,
            ],
        ),
        root,
    )
}

fn getfacl_dump(root: &Path) -> Vec<String> {
    let r = root.to_str().unwrap();
    blocks(
        &sh("getfacl", &["-R", "-P", "-n", "--absolute-names", r]),
        root,
    )
}

fn rsync_differences(src: &Path, dst: &Path) -> String {
    let s = format!("{}/", src.display());
    let d = format!("{}/", dst.display());
    sh(
        "rsync",
        &[
            "-aHAXS",
            "--checksum",
            "--dry-run",
            "--itemize-changes",
            "--numeric-ids",
            &s,
            &d,
        ],
    )
}

fn blocks_of(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().blocks()
}

fn restore_all(entries: &[Entry], source: &MemSource, target: &Path) -> Result<RestoreStats> {
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        only: Vec::new(),
    };
    restore(entries.iter().cloned().map(Ok), source, &opts)
}

#[test]
fn walk_and_restore_lose_nothing() {
    if !root_or_skip("walk_and_restore_lose_nothing") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    build_tree(&src);

    // Before anything reads the source.
    let before = stat_dump(&src);
    let source = MemSource::default();
    let (entries, stats) = capture(&src, &source);
    let after_walk = stat_dump(&src);

    // The walk changed no atime, except a symlink's (readlink updates it
    // and has no O_NOATIME).
    assert_eq!(before.len(), after_walk.len());
    for (b, a) in before.iter().zip(&after_walk) {
        if b != a {
            let fields: Vec<&str> = b.rsplitn(9, '\t').collect();
            assert!(
                fields[7].starts_with("a1"),
                "the walk changed a non-symlink:\n{b}\n{a}"
            );
        }
    }

    // Walk order: the root first, a directory before its children, siblings
    // by raw bytes, that is: sorted by component lists.
    assert!(entries[0].path.is_empty() && entries[0].kind == Kind::Dir);
    let comps = |e: &Entry| {
        e.path
            .split(|&b| b == b'/')
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
    };
    for w in entries.windows(2) {
        assert!(
            comps(&w[0]) < comps(&w[1]),
            "{} before {}",
            w[0].display_path(),
            w[1].display_path()
        );
    }
    assert_eq!(entries.len(), before.len(), "one entry per path");
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    assert_eq!(stats.hardlinks, 4); // hl/sub/b, other/c, links/rel-hardlink, dev/fifo-hardlink
    assert!(stats.mount_points.is_empty());
    let by_path: HashMap<&[u8], &Entry> = entries.iter().map(|e| (e.path.as_slice(), e)).collect();
    let c = by_path[&b"other/c"[..]];
    assert_eq!(c.hardlink_to.as_deref(), Some(&b"hl/a"[..]));
    assert_eq!(
        c.chunks,
        by_path[&b"hl/a"[..]].chunks,
        "later links carry the chunk list"
    );
    let sparse = by_path[&b"sparse"[..]];
    assert_eq!(
        sparse.extents,
        [
            Extent {
                offset: MIB,
                len: 128 << 10
            },
            Extent {
                offset: 3 * MIB,
                // Whole 4 KiB blocks: the data's last block is data to its end.
                len: (64 << 10) + 4096
            }
        ]
    );
    assert!(by_path[&b"all-hole"[..]].extents.is_empty());
    assert_eq!(
        by_path[&b"large.bin"[..]].extents,
        [Extent {
            offset: 0,
            len: 5 * MIB + 12345
        }]
    );
    assert_eq!(by_path[&b"dev/big-numbers"[..]].kind, Kind::CharDevice);
    assert_eq!(
        by_path[&b"links/dangling"[..]].link_target,
        b"nowhere/at/all"
    );
    assert_eq!(
        by_path[&b"old"[..]].mtime,
        Time {
            sec: -315_619_199,
            nsec: 999_999_999
        }
    );
    let x = by_path[&b"xattrs"[..]];
    let names: Vec<&[u8]> = x.xattrs.iter().map(|(n, _)| n.as_slice()).collect();
    assert_eq!(
        names,
        [
            &b"security.selinux"[..],
            b"trusted.t",
            b"user.binary",
            b"user.empty",
            b"user.plain"
        ]
    );

    let stats = restore_all(&entries, &source, &dst).unwrap();
    assert!(
        stats.errors.is_empty() && stats.warnings.is_empty(),
        "{stats:?}"
    );
    assert_eq!(stats.hardlinks, 4);

    // Owners, modes, ns times, sizes, link counts, device numbers: equal to
    // the source before it was read. Taken before anything reads the copy.
    let restored = stat_dump(&dst);
    assert_eq!(before.len(), restored.len());
    for (b, r) in before.iter().zip(&restored) {
        assert_eq!(b, r, "stat differs");
    }

    // Holes stay holes: the same data regions, no more blocks.
    for name in [&b"sparse"[..], b"all-hole", b"sparse-tail-data"] {
        let (s, d) = (at(&src, name), at(&dst, name));
        let ext = |p: &Path| {
            let f = fs::File::open(p).unwrap();
            data_extents(&f, f.metadata().unwrap().len()).unwrap()
        };
        assert_eq!(ext(&s), ext(&d), "{}", s.display());
        assert!(
            blocks_of(&d) <= blocks_of(&s) + 8,
            "{}: {} blocks, source {}",
            d.display(),
            blocks_of(&d),
            blocks_of(&s)
        );
    }
    assert_eq!(blocks_of(&at(&dst, b"all-hole")), 0);

    // Content, owners, modes, links, devices, times, ACLs and xattrs by rsync.
    let diff = rsync_differences(&src, &dst);
    assert!(diff.is_empty(), "rsync sees differences:\n{diff}");
    // Every xattr of every namespace (rsync -X skips some of security.*).
    assert_eq!(getfattr_dump(&src), getfattr_dump(&dst));
    assert_eq!(getfacl_dump(&src), getfacl_dump(&dst));
    assert_eq!(
        sh("getcap", &[at(&dst, b"cap").to_str().unwrap()])
            .split_whitespace()
            .nth(1),
        Some("cap_net_admin,cap_net_raw=ep")
    );

    // Restoring again over the restored tree replaces files, keeps
    // directories, and leaves the same result.
    let stats = restore_all(&entries, &source, &dst).unwrap();
    assert!(stats.errors.is_empty(), "{stats:?}");
    let diff = rsync_differences(&src, &dst);
    assert!(diff.is_empty(), "after a second restore:\n{diff}");
}

#[test]
fn walk_stays_on_its_filesystem() {
    if !root_or_skip("walk_stays_on_its_filesystem") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    write(src, b"a", b"a");
    let mnt = mkdir(src, b"mnt", 0o755);
    sh(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "mode=0750",
            "tmpfs",
            mnt.to_str().unwrap(),
        ],
    );
    let _mounted = common::Mounted { point: mnt.clone() };
    write(src, b"mnt/inside", b"not here");
    write(src, b"z", b"z");
    let source = MemSource::default();
    let (entries, stats) = capture(src, &source);
    let paths: Vec<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths, [&b""[..], b"a", b"mnt", b"z"]);
    assert_eq!(stats.mount_points, [b"mnt".to_vec()]);
    // The mount point as lstat sees it: the mounted root.
    assert_eq!(entries[2].mode, 0o750);
}

#[test]
fn hostile_trees_stay_inside_the_target() {
    if !root_or_skip("hostile_trees_stay_inside_the_target") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let outside = tmp.path().join("outside");
    fs::create_dir(&target).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"untouched").unwrap();
    let abs = tmp.path().join("abs-dir");
    // A symlink already at a destination is replaced, not written through.
    std::os::unix::fs::symlink(outside.join("victim"), target.join("ok")).unwrap();

    let source = MemSource::default();
    let file = |path: &[u8], data: &[u8]| {
        let chunks = vec![source.put(data.to_vec())];
        entry(path, Kind::File, data.len() as u64, chunks)
    };
    let mut link = entry(b"link", Kind::Symlink, 0, Vec::new());
    link.link_target = outside.as_os_str().as_bytes().to_vec();
    let hardlink = |path: &[u8], to: &[u8]| {
        let mut e = entry(path, Kind::File, 0, Vec::new());
        e.hardlink_to = Some(to.to_vec());
        e
    };
    let mut abs_path = abs.as_os_str().as_bytes().to_vec();
    abs_path.extend_from_slice(b"/x");
    let entries = vec![
        entry(b"", Kind::Dir, 0, Vec::new()),
        file(b"ok", b"fine"),
        file(b"../escape", b"out"),
        file(&abs_path, b"out"),
        file(b"a/../../x", b"out"),
        link,
        file(b"link/victim", b"overwritten"),
        file(b"link/file", b"out"),
        entry(b"link/sub", Kind::Dir, 0, Vec::new()),
        hardlink(b"hl-out", b"../outside/victim"),
        hardlink(b"hl-abs", outside.join("victim").as_os_str().as_bytes()),
        hardlink(b"hl-through-link", b"link/victim"),
        file(b"./dot", b"x"),
        file(b"a//b", b"x"),
        file(b"trailing/", b"x"),
        file(b"nul\0byte", b"x"),
        file(b"missing-parent/f", b"x"),
        entry(b"good", Kind::Dir, 0, Vec::new()),
        file(b"good/file", b"legitimate"),
        hardlink(b"good/hl", b"good/file"),
    ];
    let refused: Vec<String> = [
        &b"../escape"[..],
        &abs_path,
        b"a/../../x",
        b"link/victim",
        b"link/file",
        b"link/sub",
        b"hl-out",
        b"hl-abs",
        b"hl-through-link",
        b"./dot",
        b"a//b",
        b"trailing/",
        b"nul\0byte",
        b"missing-parent/f",
    ]
    .iter()
    .map(|p| rewind::tree::display_bytes(p))
    .collect();

    let opts = RestoreOptions {
        target: target.clone(),
        only: Vec::new(),
    };
    let err = restore(entries.into_iter().map(Ok), &source, &opts).unwrap_err();
    let failed = err
        .downcast_ref::<RestoreFailed>()
        .expect("a RestoreFailed summary");
    let stats = &failed.0;
    for p in &refused {
        assert!(
            stats
                .errors
                .iter()
                .any(|e| e.starts_with(&format!("{p}: "))),
            "no error for {p}: {:#?}",
            stats.errors
        );
    }
    assert_eq!(stats.errors.len(), refused.len(), "{:#?}", stats.errors);
    let summary = format!("{err}");
    assert!(
        summary.contains("link/file") && summary.contains("../escape"),
        "{summary}"
    );

    // Nothing outside the target changed.
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"untouched");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    assert!(!tmp.path().join("escape").exists());
    assert!(!tmp.path().join("x").exists());
    assert!(!abs.exists());
    // The legitimate entries are there.
    assert_eq!(fs::read(target.join("ok")).unwrap(), b"fine");
    assert!(fs::symlink_metadata(target.join("ok")).unwrap().is_file());
    assert_eq!(fs::read(target.join("good/file")).unwrap(), b"legitimate");
    assert_eq!(
        fs::metadata(target.join("good/hl")).unwrap().ino(),
        fs::metadata(target.join("good/file")).unwrap().ino()
    );
    assert_eq!(fs::read_link(target.join("link")).unwrap(), outside);
    let mut names: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["good", "link", "ok"]);
}

#[test]
fn a_corrupt_chunk_fails_its_file_only() {
    if !root_or_skip("a_corrupt_chunk_fails_its_file_only") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let source = MemSource::default();
    let good = source.put(b"good".to_vec());
    let mut bad = source.put(b"will be corrupted".to_vec());
    // The length the tree records differs from what the store holds.
    bad.len += 1;
    let entries = vec![
        entry(b"", Kind::Dir, 0, Vec::new()),
        entry(b"bad", Kind::File, u64::from(bad.len), vec![bad]),
        entry(b"good", Kind::File, 4, vec![good]),
    ];
    let opts = RestoreOptions {
        target: tmp.path().to_path_buf(),
        only: Vec::new(),
    };
    let err = restore(entries.into_iter().map(Ok), &source, &opts).unwrap_err();
    let stats = &err.downcast_ref::<RestoreFailed>().unwrap().0;
    assert_eq!(stats.errors.len(), 1);
    assert!(stats.errors[0].starts_with("bad: "), "{:?}", stats.errors);
    assert!(
        !tmp.path().join("bad").exists(),
        "an incomplete file is removed"
    );
    assert_eq!(fs::read(tmp.path().join("good")).unwrap(), b"good");
}

fn entry(path: &[u8], kind: Kind, size: u64, chunks: Vec<ChunkRef>) -> Entry {
    let extents = if size > 0 {
        vec![Extent {
            offset: 0,
            len: size,
        }]
    } else {
        Vec::new()
    };
    Entry {
        path: path.to_vec(),
        kind,
        mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        atime: Time {
            sec: 1_600_000_000,
            nsec: 1,
        },
        mtime: Time {
            sec: 1_600_000_000,
            nsec: 2,
        },
        ctime: Time::default(),
        ino: 0,
        size,
        rdev: 0,
        link_target: Vec::new(),
        hardlink_to: None,
        xattrs: Vec::new(),
        extents,
        chunks,
    }
}

#[test]
fn subset_restore() {
    if !root_or_skip("subset_restore") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let source = MemSource::default();
    let (entries, _) = capture(&src, &source);

    // A directory and a later link whose first path is not restored.
    let dst = tmp.path().join("one");
    fs::create_dir(&dst).unwrap();
    let opts = RestoreOptions {
        target: dst.clone(),
        only: vec![b"dir700".to_vec(), b"/other/c".to_vec()],
    };
    let stats = restore(entries.iter().cloned().map(Ok), &source, &opts).unwrap();
    assert_eq!(stats.warnings.len(), 1, "{:?}", stats.warnings);
    assert!(stats.warnings[0].contains("restored as a copy"));
    let found = sh(
        "sh",
        &[
            "-c",
            &format!("cd {} && find . | LC_ALL=C sort", dst.display()),
        ],
    );
    assert_eq!(
        found,
        ".\n./dir700\n./dir700/nested\n./dir700/nested/deeper\n./dir700/nested/file\n./other\n./other/c\n"
    );
    assert_eq!(
        fs::read(dst.join("other/c")).unwrap(),
        fs::read(src.join("hl/a")).unwrap()
    );
    assert_eq!(fs::metadata(dst.join("other/c")).unwrap().nlink(), 1);
    // Ancestors get their own metadata.
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode();
    assert_eq!(mode(&dst.join("other")), mode(&src.join("other")));
    assert_eq!(mode(&dst), mode(&src));
    let diff = sh(
        "rsync",
        &[
            "-aHAXS",
            "--checksum",
            "--dry-run",
            "--itemize-changes",
            "--numeric-ids",
            &format!("{}/dir700/", src.display()),
            &format!("{}/dir700/", dst.display()),
        ],
    );
    assert!(diff.is_empty(), "{diff}");

    // A directory holding all the links of a group: linked, not copied.
    let dst = tmp.path().join("two");
    fs::create_dir(&dst).unwrap();
    let opts = RestoreOptions {
        target: dst.clone(),
        only: vec![b"hl".to_vec()],
    };
    let stats = restore(entries.iter().cloned().map(Ok), &source, &opts).unwrap();
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    assert_eq!((stats.files, stats.hardlinks), (1, 1));
    let a = fs::metadata(dst.join("hl/a")).unwrap();
    assert_eq!(a.ino(), fs::metadata(dst.join("hl/sub/b")).unwrap().ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn a_target_with_a_default_acl_adds_nothing() {
    if !root_or_skip("a_target_with_a_default_acl_adds_nothing") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path();
    // What was there: a default ACL, a user xattr, a file in the way.
    sh(
        "setfacl",
        &["-d", "-m", "u:12345:rwx", target.to_str().unwrap()],
    );
    setfattr(target, "user.stale", "x");
    fs::write(target.join("f"), b"old").unwrap();
    let source = MemSource::default();
    let data = b"new".to_vec();
    let chunks = vec![source.put(data.clone())];
    let mut sym = entry(b"d/sym", Kind::Symlink, 0, Vec::new());
    sym.link_target = b"../f".to_vec();
    let entries = vec![
        entry(b"", Kind::Dir, 0, Vec::new()),
        entry(b"d", Kind::Dir, 0, Vec::new()),
        entry(b"d/fifo", Kind::Fifo, 0, Vec::new()),
        sym,
        entry(b"f", Kind::File, 3, chunks),
    ];
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        only: Vec::new(),
    };
    restore(entries.into_iter().map(Ok), &source, &opts).unwrap();
    assert_eq!(fs::read(target.join("f")).unwrap(), b"new");
    // No ACL and no xattr anywhere: the entries have none.
    let dump = sh(
        "getfattr",
        &[
            "-R",
            "-P",
            "-h",
            "-d",
            "-m",
            "-",
            "--absolute-names",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(dump, "", "{dump}");
    assert_eq!(
        fs::metadata(target.join("d/fifo")).unwrap().mode() & 0o7777,
        0o644
    );
}

/// Restore speed of one large file, data from memory: `cargo test --release
/// --test fidelity restore_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn restore_throughput() {
    if !root_or_skip("restore_throughput") {
        return;
    }
    const SIZE: u64 = 2 << 30;
    let tmp = tempfile::tempdir().unwrap();
    let source = MemSource::default();
    let distinct: Vec<ChunkRef> = (0..16)
        .map(|i| source.put(pseudo_random(MIB as usize, i + 1)))
        .collect();
    let chunks: Vec<ChunkRef> = (0..SIZE / MIB).map(|i| distinct[i as usize % 16]).collect();
    let entries = vec![
        entry(b"", Kind::Dir, 0, Vec::new()),
        entry(b"big", Kind::File, SIZE, chunks),
    ];
    let opts = RestoreOptions {
        target: tmp.path().to_path_buf(),
        only: Vec::new(),
    };
    let start = std::time::Instant::now();
    for c in &entries[1].chunks {
        std::hint::black_box(source.fetch(c).unwrap());
    }
    println!(
        "fetching alone: {:.0} MB/s",
        SIZE as f64 / start.elapsed().as_secs_f64() / 1e6
    );
    sh("sync", &[]);
    let start = std::time::Instant::now();
    let stats = restore(entries.into_iter().map(Ok), &source, &opts).unwrap();
    let written = start.elapsed();
    sh("sync", &[]);
    let synced = start.elapsed();
    let mbs = |d: std::time::Duration| stats.bytes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "restored {} MB: {:.0} MB/s written, {:.0} MB/s with sync",
        stats.bytes / 1_000_000,
        mbs(written),
        mbs(synced)
    );
}

#[test]
fn paths_vanishing_during_the_walk_are_skipped() {
    // No root needed.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for name in ["a", "b", "c", "d"] {
        fs::write(root.join(name), name).unwrap();
    }
    fs::create_dir(root.join("e")).unwrap();
    fs::write(root.join("e/inner"), b"x").unwrap();
    let mut seen = Vec::new();
    let stats = walk(root, &mut |e, content| {
        match e.path.as_slice() {
            // Remove the next entries before the walk gets to them.
            b"a" => {
                fs::remove_file(root.join("b")).unwrap();
                fs::remove_dir_all(root.join("e")).unwrap();
            }
            // Removed between its listing and its reading.
            b"c" => {
                fs::remove_file(root.join("c")).unwrap();
                content.open()?;
            }
            // Replaced by another file.
            b"d" => {
                fs::remove_file(root.join("d")).unwrap();
                fs::write(root.join("d"), b"new").unwrap();
                content.open().map_err(|e| e.context("while reading"))?;
            }
            _ => {}
        }
        seen.push(e.path.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, [b"".to_vec(), b"a".to_vec()]);
    assert_eq!(stats.warnings.len(), 4, "{:?}", stats.warnings);
    for (w, p) in stats.warnings.iter().zip(["b", "c", "d", "e"]) {
        assert!(w.starts_with(&format!("{p}: ")), "{w}");
    }
}

/// The same tree through the whole pipeline: `rewind capture` of a
/// filesystem on a loop device into a repository (real chunker, packs,
/// zstd), then `rewind restore` — compared with the same oracles.
#[test]
fn capture_and_restore_through_the_repository_lose_nothing() {
    if !root_or_skip("capture_and_restore_through_the_repository_lose_nothing") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let disk = common::LoopDisk::new(
        tmp.path(),
        "fs.img",
        128,
        "label: gpt\nstart=2048, type=linux\n",
    );
    // 4 KiB blocks: the tree has a 3000-byte xattr, more than a 1 KiB block holds.
    sh("mkfs.ext4", &["-q", "-F", "-b", "4096", &disk.part(1)]);
    let src = tmp.path().join("src");
    let mounted = common::Mounted::new(&disk.part(1), &src, &[]);
    build_tree(&src);
    let before = stat_dump(&src);

    let repo = tmp.path().join("repo");
    let rewind = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rewind {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rewind(&[
        "capture",
        "--repo",
        repo.to_str().unwrap(),
        "--disk",
        &disk.dev,
    ]);
    let dst = tmp.path().join("dst");
    rewind(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        "latest",
        "--fs",
        src.to_str().unwrap(),
        "--target",
        dst.to_str().unwrap(),
    ]);

    // A directory's size is its filesystem's business (lost+found is made
    // big by mke2fs), not something a restore sets: mask it.
    let dir_size_masked = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| {
                let mut f: Vec<&str> = l.split('\t').collect();
                if f[1].starts_with('4') {
                    f[4] = "-";
                }
                f.join("\t")
            })
            .collect()
    };
    let (before, restored) = (dir_size_masked(before), dir_size_masked(stat_dump(&dst)));
    assert_eq!(before.len(), restored.len());
    for (b, r) in before.iter().zip(&restored) {
        assert_eq!(b, r, "stat differs");
    }
    let diff = rsync_differences(&src, &dst);
    assert!(diff.is_empty(), "rsync sees differences:\n{diff}");
    assert_eq!(getfattr_dump(&src), getfattr_dump(&dst));
    assert_eq!(getfacl_dump(&src), getfacl_dump(&dst));
    drop(mounted);
}
