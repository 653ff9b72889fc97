//! Tier 1 (no root): a restore's reads through the real `rewind serve`
//! (TLS, a host token, the pin) on loopback. The read-ahead reads runs of
//! adjacent chunks of a pack with one ranged GET (a plain `Range` on the
//! pack's URL, which every server answers); these tests check what such a
//! read must keep: exact files from ranges spanning many chunks, a damaged
//! chunk inside a run found and named by its id, and a short answer (a
//! pack cut on the server) failing with the chunk it lost, not garbage.
//! And the server's bound on the bytes ranges hold (`--range-buffer`):
//! reads past it wait, one larger than it is still served.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rewind::repo::Repo;
use rewind::repo::pack::BlobKind;
use rewind::restore::RestoreOptions;
use rewind::tree::{ChunkId, ChunkRef, Entry, Extent, Kind, Time};
use server_util::*;

const HOST: &str = "ranges";

/// A host repository on the server's data directory: `files` files of
/// `chunks` chunks each (incompressible, 20 KiB to ~400 KiB, small and
/// large mixed so that runs hold both), all in one pack. Returns the
/// entries (the root first), each file's bytes, and every chunk with
/// where it is stored (offset, stored length).
struct Fixture {
    entries: Vec<Entry>,
    contents: Vec<Vec<u8>>,
    chunks: Vec<(ChunkId, u64, u32)>,
    pack: PathBuf,
}

fn fixture(data: &Path, files: u32, chunks: u32) -> Fixture {
    let dir = data.join("hosts").join(HOST);
    let mut repo = Repo::init(&dir).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut entries = vec![entry("", Kind::Dir, 0)];
    let mut contents = Vec::new();
    let mut ids = Vec::new();
    for f in 0..files {
        let mut refs = Vec::new();
        let mut bytes = Vec::new();
        for c in 0..chunks {
            let len = 20_000 + ((f * chunks + c) * 91_237) % 380_000;
            let piece: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let id = repo.add_blob(BlobKind::Data, &piece).unwrap();
            refs.push(ChunkRef { id, len });
            ids.push(id);
            bytes.extend_from_slice(&piece);
        }
        let mut e = entry(&format!("f{f}"), Kind::File, bytes.len() as u64);
        e.chunks = refs;
        entries.push(e);
        contents.push(bytes);
    }
    repo.flush().unwrap();
    let chunks = ids
        .iter()
        .map(|id| {
            let loc = repo.location(id).unwrap();
            (*id, loc.offset, loc.stored_len)
        })
        .collect();
    let mut packs = Vec::new();
    for sub in std::fs::read_dir(dir.join("packs")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "pack") {
                packs.push(p);
            }
        }
    }
    assert_eq!(packs.len(), 1, "the fixture fits one pack: {packs:?}");
    Fixture {
        entries,
        contents,
        chunks,
        pack: packs.remove(0),
    }
}

fn entry(path: &str, kind: Kind, size: u64) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        atime: Time::default(),
        mtime: Time::default(),
        ctime: Time::default(),
        ino: 1,
        size,
        rdev: 0,
        link_target: Vec::new(),
        hardlink_to: None,
        xattrs: Vec::new(),
        extents: if size > 0 {
            vec![Extent {
                offset: 0,
                len: size,
            }]
        } else {
            Vec::new()
        },
        chunks: Vec::new(),
    }
}

/// Restore the fixture's entries through the server into `target`.
fn restore_served(s: &ServerProc, fx: &Fixture, target: &Path) -> anyhow::Result<()> {
    let token = s.host_token(HOST);
    let backend = rewind::client::HttpBackend::new(Arc::new(s.client(&token)), HOST);
    let repo = Repo::open_backend(Arc::new(backend))?;
    std::fs::create_dir_all(target).unwrap();
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        only: Vec::new(),
    };
    rewind::repo::prefetch::restore(&repo, fx.entries.clone().into_iter().map(Ok), &opts)?;
    Ok(())
}

#[test]
fn ranges_spanning_many_chunks_restore_exactly_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fx = fixture(&data, 6, 8);
    let s = ServerProc::start(&data, true);
    let out = dir.path().join("out");
    restore_served(&s, &fx, &out).unwrap();
    for (i, want) in fx.contents.iter().enumerate() {
        let got = std::fs::read(out.join(format!("f{i}"))).unwrap();
        assert!(got == *want, "f{i} differs");
    }
    // Every stored byte went through the server's ranged reads.
    let stored: u64 = fx.chunks.iter().map(|c| u64::from(c.2)).sum();
    let sent = s.stat("bytes_sent");
    assert!(sent >= stored, "{sent} bytes sent for {stored} stored");
}

#[test]
fn a_damaged_chunk_inside_a_run_is_found_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fx = fixture(&data, 3, 8);
    // A chunk in the middle of the pack, with neighbours on both sides.
    let (id, offset, stored) = fx.chunks[fx.chunks.len() / 2];
    let mut pack = std::fs::read(&fx.pack).unwrap();
    pack[(offset + u64::from(stored) / 2) as usize] ^= 0x5a;
    std::fs::write(&fx.pack, &pack).unwrap();
    let s = ServerProc::start(&data, true);
    let e = restore_served(&s, &fx, &dir.path().join("out")).unwrap_err();
    let text = format!("{e:#}");
    eprintln!("restore error: {text}");
    assert!(text.contains(&id.to_hex()), "{text}");
    assert!(
        text.contains("damaged") || text.contains("does not decompress"),
        "{text}"
    );
    // Only that chunk's file failed: the files before it are exact.
    let first = std::fs::read(dir.path().join("out/f0")).unwrap();
    assert!(first == fx.contents[0]);
}

#[test]
fn a_short_answer_names_the_chunk_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fx = fixture(&data, 3, 8);
    // The pack is cut inside its third-last chunk: a run reaching past the
    // cut gets fewer bytes than it asked for.
    let (lost, offset, stored) = fx.chunks[fx.chunks.len() - 3];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&fx.pack)
        .unwrap();
    f.set_len(offset + u64::from(stored) / 2).unwrap();
    drop(f);
    let s = ServerProc::start(&data, true);
    let e = restore_served(&s, &fx, &dir.path().join("out")).unwrap_err();
    let text = format!("{e:#}");
    eprintln!("restore error: {text}");
    assert!(text.contains(&lost.to_hex()), "{text}");
    assert!(text.contains("shorter"), "{text}");
    // The files wholly before the cut are exact.
    let first = std::fs::read(dir.path().join("out/f0")).unwrap();
    assert!(first == fx.contents[0]);
}

/// With a range budget far smaller than one run (64 KiB against runs of
/// up to 4 MiB, eight reads in flight), every read still gets its answer:
/// a range larger than the budget takes all of it, the others wait for
/// it rather than fail, and the files are exact.
#[test]
fn reads_past_the_range_budget_wait_and_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fx = fixture(&data, 6, 8);
    let s = ServerProc::start_with(&data, "127.0.0.1:0", true, None, &["--range-buffer", "64K"]);
    let out = dir.path().join("out");
    restore_served(&s, &fx, &out).unwrap();
    for (i, want) in fx.contents.iter().enumerate() {
        let got = std::fs::read(out.join(format!("f{i}"))).unwrap();
        assert!(got == *want, "f{i} differs");
    }
    // Eight clients at once, each asking for the whole pack in one range.
    let token = s.host_token(HOST);
    let pack = std::fs::read(&fx.pack).unwrap();
    let name = format!(
        "packs/{}",
        fx.pack
            .strip_prefix(data.join("hosts").join(HOST).join("packs"))
            .unwrap()
            .to_str()
            .unwrap()
    );
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let backend = rewind::client::HttpBackend::new(Arc::new(s.client(&token)), HOST);
                use rewind::repo::backend::Backend;
                let got = backend.get_range(&name, 0, pack.len()).unwrap();
                assert!(got == pack);
            });
        }
    });
}
