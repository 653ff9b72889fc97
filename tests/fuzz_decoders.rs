//! Tier 1: fuzzing of every decoder that reads untrusted bytes (issue 16,
//! point 7), on the stable toolchain: `arbitrary`-driven inputs and
//! mutations of a committed corpus (tests/fuzz/corpus/TARGET/), each target
//! run for a time box. A decoder may refuse anything; it may not panic,
//! hang or allocate without bound. Structured targets check properties:
//! the partition-table writers never write outside the regions their
//! layout plans, and refuse (writing nothing) what does not fit.
//!
//! `REWIND_FUZZ_SECS` sets the box per target (default 1 s: the test
//! command's short pass); docs/security.md has a longer run's figures. A
//! panic saves its input under target/fuzz-crashes/ and fails the test
//! with that path; copy the input into the target's corpus once fixed.

#![allow(clippy::unwrap_used, unreachable_pub)]

#[path = "fuzz/targets.rs"]
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A small, fast generator (xorshift64*): reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit on the edges of the integer types decoders read.
const EDGES: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
];

/// One mutation of `input` (libFuzzer's usual ones, without coverage).
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    match rng.below(8) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = rng.next() as u8;
        }
        2 => {
            let i = rng.below(input.len() + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(i..i, bytes);
        }
        3 if !input.is_empty() => {
            let i = rng.below(input.len());
            let n = (1 + rng.below(16)).min(input.len() - i);
            input.drain(i..i + n);
        }
        4 if input.len() >= 8 => {
            // An edge value, little- or big-endian, 1 to 8 bytes wide.
            let v = EDGES[rng.below(EDGES.len())];
            let width = 1 + rng.below(8);
            let bytes = if rng.below(2) == 0 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let i = rng.below(input.len() - width + 1);
            input[i..i + width].copy_from_slice(&bytes[..width]);
        }
        5 if !corpus.is_empty() => {
            // Splice with another input.
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(input.len() + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        6 => input.truncate(rng.below(input.len() + 1)),
        _ => {
            // Text-level: an ASCII digit, quote, separator or a multi-byte char.
            let pieces: [&[u8]; 8] = [b"0", b"9", b"\"", b"=", b"-", b":", "é".as_bytes(), b" "];
            let i = rng.below(input.len() + 1);
            input.splice(i..i, pieces[rng.below(pieces.len())].iter().copied());
        }
    }
    input.truncate(1 << 16);
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target)
}

fn budget() -> Duration {
    let secs: f64 = std::env::var("REWIND_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// Run `f` on the corpus, then on mutations and fresh random inputs until
/// the time box ends. Returns the number of executions.
fn fuzz(target: &str, seeds: &[&[u8]], f: impl Fn(&[u8])) -> u64 {
    let mut corpus: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    if let Ok(rd) = std::fs::read_dir(corpus_dir(target)) {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        corpus.extend(files.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    let seed = std::env::var("REWIND_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0000 ^ target.len() as u64);
    let mut rng = Rng(seed | 1);
    let run = |input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{target}-{}", blake3::hash(input).to_hex()));
            std::fs::write(&path, input).unwrap();
            panic!("{target}: a panic on the input saved at {}", path.display());
        }
    };
    let mut execs = 0u64;
    for input in &corpus {
        run(input);
        execs += 1;
    }
    let (started, budget) = (Instant::now(), budget());
    while started.elapsed() < budget {
        let mut input = if corpus.is_empty() || rng.below(8) == 0 {
            (0..rng.below(512)).map(|_| rng.next() as u8).collect()
        } else {
            corpus[rng.below(corpus.len())].clone()
        };
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input, &corpus);
        }
        run(&input);
        execs += 1;
    }
    eprintln!(
        "fuzz {target}: {execs} executions in {:.1}s, {} corpus inputs, no panic",
        started.elapsed().as_secs_f64(),
        corpus.len()
    );
    execs
}

// ---- decoders of bytes ----

#[test]
fn fuzz_manifest_xml_and_validation() {
    let sample = include_str!("../docs/manifest.md");
    let start = sample.find("```xml\n").unwrap() + 7;
    let end = start + sample[start..].find("```").unwrap();
    let xml = &sample[start..end];
    fuzz("manifest", &[xml.as_bytes()], targets::manifest);
}

#[test]
fn fuzz_tree_stream() {
    let mut seed = Vec::new();
    let entry = rewind::tree::Entry {
        path: b"etc/hostname".to_vec(),
        kind: rewind::tree::Kind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        atime: rewind::tree::Time { sec: 1, nsec: 2 },
        mtime: rewind::tree::Time { sec: 3, nsec: 4 },
        ctime: rewind::tree::Time { sec: 5, nsec: 6 },
        ino: 7,
        size: 6,
        rdev: 0,
        link_target: Vec::new(),
        hardlink_to: None,
        xattrs: vec![(b"user.x".to_vec(), b"y".to_vec())],
        extents: vec![rewind::tree::Extent { offset: 0, len: 6 }],
        chunks: Vec::new(),
    };
    rewind::tree::write_entry(&mut seed, &entry).unwrap();
    rewind::tree::write_entry(&mut seed, &entry).unwrap();
    fuzz("tree", &[&seed], targets::tree);
}

#[test]
fn fuzz_pack_index_and_trailer() {
    let mut b = rewind::repo::pack::PackBuilder::new();
    b.add(
        rewind::tree::ChunkId::of(b"a"),
        rewind::repo::pack::BlobKind::Data,
        1,
        b"xx",
    );
    b.add(
        rewind::tree::ChunkId::of(b"b"),
        rewind::repo::pack::BlobKind::Tree,
        3,
        b"yyy",
    );
    let (_, pack, index, _) = b.finish();
    fuzz("pack", &[&pack, &index], targets::pack);
}

#[test]
fn fuzz_rfc3339() {
    let seeds: [&[u8]; 4] = [
        b"2026-11-25T14:00:00Z",
        b"2026-11-25T14:00:00.123456+05:30",
        b"1970-01-01t00:00:00-00:00",
        b"9999-12-31T23:59:60Z",
    ];
    fuzz("rfc3339", &seeds, targets::rfc3339);
}

#[test]
fn fuzz_http_range() {
    let seeds: [&[u8]; 3] = [b"bytes=0-9", b"bytes=90-", b"bytes=18446744073709551615-"];
    fuzz("range", &seeds, targets::range);
}

#[test]
fn fuzz_kernel_command_line() {
    let seeds: [&[u8]; 3] = [
        b"BOOT_IMAGE=/vmlinuz root=UUID=x ro quiet rewind.server=https://10.0.0.1:8443",
        b"rewind.ip=eth0:dhcp rewind.ip=10.0.0.5/24:10.0.0.1 rewind.token=\"a b\"",
        b"ip=192.168.1.2::192.168.1.1:255.255.255.0:host:eth0:none",
    ];
    fuzz("cmdline", &seeds, targets::cmdline);
}

#[test]
fn fuzz_partition_table_readers() {
    // A GPT disk and an MBR disk with an extended partition, made by the
    // writers themselves.
    let mut seeds = Vec::new();
    for sector in [512u32, 4096] {
        let mut pmbr = vec![0u8; 8 * sector as usize];
        pmbr[446 + 4] = 0xee;
        pmbr[510] = 0x55;
        pmbr[511] = 0xaa;
        pmbr[sector as usize..sector as usize + 8].copy_from_slice(b"EFI PART");
        seeds.push(pmbr);
    }
    let mut mbr = vec![0u8; 4096];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&100u32.to_le_bytes());
    mbr[462 + 4] = 0x05;
    mbr[462 + 8..462 + 12].copy_from_slice(&4u32.to_le_bytes());
    mbr[462 + 12..462 + 16].copy_from_slice(&2u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    seeds.push(mbr);
    let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
    fuzz("tables", &seeds, targets::tables);
}

#[test]
fn fuzz_table_writers_stay_in_their_plan() {
    let seed = [7u8; 256];
    fuzz("writers", &[&seed], targets::writers);
}
