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

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

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

fn text(input: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(input)
}

// ---- decoders of bytes ----

#[test]
fn fuzz_manifest_xml_and_validation() {
    let sample = include_str!("../docs/manifest.md");
    let start = sample.find("```xml\n").unwrap() + 7;
    let end = start + sample[start..].find("```").unwrap();
    let xml = &sample[start..end];
    fuzz("manifest", &[xml.as_bytes()], |input| {
        if let Ok(m) = rewind::manifest::from_xml(&text(input)) {
            // What parses and validates writes back and reads again.
            let again = rewind::manifest::to_xml(&m).unwrap();
            rewind::manifest::from_xml(&again).unwrap();
        }
    });
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
    fuzz("tree", &[&seed], |input| {
        for e in rewind::tree::EntryReader::new(input).take(64) {
            if e.is_err() {
                break;
            }
        }
    });
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
    fuzz("pack", &[&pack, &index], |input| {
        use rewind::repo::pack;
        let _ = pack::decode_index(input);
        if input.len() >= 12 {
            let _ = pack::index_tail_len(&input[input.len() - 12..]);
        }
        if let Ok((body_end, index)) = pack::split_pack(input) {
            assert!(body_end <= input.len());
            if let Ok(entries) = pack::decode_index(index)
                && pack::check_entries(&entries, body_end).is_ok()
            {
                for e in entries {
                    let r = pack::blob_range(e.offset, e.stored_len).unwrap();
                    assert!(r.end <= body_end, "a checked entry lies inside");
                }
            }
        }
        let _ = rewind::server::files::verify_pack("00", input);
    });
}

#[test]
fn fuzz_rfc3339() {
    let seeds: [&[u8]; 4] = [
        b"2026-11-25T14:00:00Z",
        b"2026-11-25T14:00:00.123456+05:30",
        b"1970-01-01t00:00:00-00:00",
        b"9999-12-31T23:59:60Z",
    ];
    fuzz("rfc3339", &seeds, |input| {
        if let Some(secs) = rewind::time::parse_rfc3339(&text(input))
            && (0..253_402_300_800).contains(&secs)
        {
            // What parses formats and parses back to the same second (years
            // 1970-9999: an offset may carry 9999-12-31 into year 10000,
            // which RFC 3339's four digits cannot write).
            let again = rewind::time::format_utc(secs);
            assert_eq!(rewind::time::parse_rfc3339(&again), Some(secs), "{again}");
        }
    });
}

#[test]
fn fuzz_http_range() {
    let seeds: [&[u8]; 3] = [b"bytes=0-9", b"bytes=90-", b"bytes=18446744073709551615-"];
    fuzz("range", &seeds, |input| {
        let mut u = Unstructured::new(input);
        let size = u64::arbitrary(&mut u).unwrap_or(0);
        let header = text(u.take_rest());
        if let Some((start, end)) = rewind::server::range::parse_range(&header, size) {
            assert!(
                start <= end && end < size,
                "{header:?} of {size}: {start}-{end}"
            );
        }
    });
}

#[test]
fn fuzz_kernel_command_line() {
    let seeds: [&[u8]; 3] = [
        b"BOOT_IMAGE=/vmlinuz root=UUID=x ro quiet rewind.server=https://10.0.0.1:8443",
        b"rewind.ip=eth0:dhcp rewind.ip=10.0.0.5/24:10.0.0.1 rewind.token=\"a b\"",
        b"ip=192.168.1.2::192.168.1.1:255.255.255.0:host:eth0:none",
    ];
    fuzz("cmdline", &seeds, |input| {
        let line = text(input);
        let words = rewind::init::cmdline::split(&line);
        let _ = rewind::init::cmdline::parse(&line);
        for w in words {
            if let Some(v) = w.split_once('=').map(|(_, v)| v) {
                let _ = rewind::init::cmdline::parse_ip(v);
            }
        }
    });
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
    fuzz("tables", &seeds, |input| {
        let mut u = Unstructured::new(input);
        let sector: u32 = if bool::arbitrary(&mut u).unwrap_or(true) {
            512
        } else {
            4096
        };
        let rest = u.take_rest();
        // The claimed size may disagree with the bytes there are.
        let size =
            (rest.len() as u64).saturating_add(u64::from(rest.first().copied().unwrap_or(0)) * 512);
        let _ = rewind::probe::disks::read_table(&mut Cursor::new(rest), sector, size);
    });
}

// ---- the table writers stay inside their plan ----

/// A disk that records where it is written; reads give zeros.
#[derive(Debug)]
struct Recorder {
    size: u64,
    pos: u64,
    writes: Vec<(u64, u64)>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.size.saturating_sub(self.pos)) as usize;
        buf[..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.pos.checked_add(buf.len() as u64).unwrap();
        assert!(
            end <= self.size,
            "a write past the end of the disk: {}..{end}",
            self.pos
        );
        self.writes.push((self.pos, end));
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Recorder {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.size.checked_add_signed(d).unwrap(),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).unwrap(),
        };
        Ok(self.pos)
    }
}

fn inside(writes: &[(u64, u64)], regions: &[(u64, u64)]) -> Result<(), String> {
    for &(a, b) in writes {
        if !regions.iter().any(|&(s, e)| s <= a && b <= e) {
            return Err(format!("write {a}..{b} outside the planned {regions:?}"));
        }
    }
    Ok(())
}

/// A number near one of `anchors` (so that layouts often almost fit).
fn near(u: &mut Unstructured<'_>, anchors: &[u64]) -> arbitrary::Result<u64> {
    let base = anchors[usize::from(u8::arbitrary(u)?) % anchors.len()];
    let delta = i64::from(i8::arbitrary(u)?);
    Ok(if u8::arbitrary(u)? == 0 {
        u64::arbitrary(u)?
    } else {
        base.saturating_add_signed(delta)
    })
}

#[test]
fn fuzz_table_writers_stay_in_their_plan() {
    use rewind::layout::table::{GptEntry, GptLayout, MbrEntry, MbrLayout, write_gpt, write_mbr};
    use rewind::manifest::MbrKind;
    let guid: rewind::manifest::Guid = "0a1b2c3d-1111-4222-8333-444455556666".parse().unwrap();
    let seed = [7u8; 256];
    fuzz("writers", &[&seed], |input| {
        let mut u = Unstructured::new(input);
        let Ok(sectors) = near(&mut u, &[64, 2048, 1 << 20, 1 << 32]) else {
            return;
        };
        let sector: u32 = if bool::arbitrary(&mut u).unwrap_or(true) {
            512
        } else {
            4096
        };
        // A disk of no sectors is never a target (its size comes from the
        // kernel); MbrLayout::check does not refuse it (noted in issue 16's
        // report).
        let Some(size) = sectors.checked_mul(u64::from(sector)).filter(|&s| s > 0) else {
            return;
        };
        if bool::arbitrary(&mut u).unwrap_or(true) {
            let entries = [128u32, 4, 1, 0][usize::from(u8::arbitrary(&mut u).unwrap_or(0)) % 4];
            let anchors = [
                0,
                2,
                34,
                2048,
                sectors.saturating_sub(34),
                sectors.saturating_sub(1),
            ];
            let mut g = GptLayout {
                disk_guid: guid.clone(),
                first_usable_lba: near(&mut u, &anchors).unwrap_or(34),
                last_usable_lba: near(&mut u, &anchors).unwrap_or(0),
                entries,
                backup_lba: near(&mut u, &anchors).unwrap_or(0),
                partitions: Vec::new(),
            };
            for n in 0..u8::arbitrary(&mut u).unwrap_or(0) % 4 {
                g.partitions.push(GptEntry {
                    number: u32::from(n) + 1,
                    first_lba: near(&mut u, &anchors).unwrap_or(0),
                    last_lba: near(&mut u, &anchors).unwrap_or(0),
                    type_guid: guid.clone(),
                    guid: guid.clone(),
                    name: String::arbitrary(&mut u).unwrap_or_default(),
                    attributes: 0,
                });
            }
            let mut disk = Recorder {
                size,
                pos: 0,
                writes: Vec::new(),
            };
            let fits = g.check(sectors, sector).is_ok();
            let wrote = write_gpt(&mut disk, sectors, sector, &g, None);
            assert_eq!(fits, wrote.is_ok(), "{g:?}: {wrote:?}");
            if !fits {
                assert!(disk.writes.is_empty(), "wrote while refusing: {g:?}");
                return;
            }
            let ss = u64::from(sector);
            let array = g.array_sectors(sector);
            let last = sectors - 1;
            let plan = [
                (0, (2 + array) * ss),                  // PMBR, header, entries
                ((last - array) * ss, (last + 1) * ss), // backup entries, header
            ];
            inside(&disk.writes, &plan).unwrap();
        } else {
            let anchors = [1, 63, 2048, 4096, sectors.saturating_sub(1), 1 << 32];
            let mut m = MbrLayout {
                signature: 1,
                partitions: Vec::new(),
            };
            let count = u8::arbitrary(&mut u).unwrap_or(0) % 7;
            for i in 0..count {
                let kind = [MbrKind::Primary, MbrKind::Extended, MbrKind::Logical]
                    [usize::from(u8::arbitrary(&mut u).unwrap_or(0)) % 3];
                let number = if kind == MbrKind::Logical {
                    5 + u32::from(i)
                } else {
                    1 + u32::from(i) % 4
                };
                m.partitions.push(MbrEntry {
                    number,
                    kind,
                    type_byte: 0x83,
                    boot: false,
                    start_lba: near(&mut u, &anchors).unwrap_or(0),
                    sectors: near(&mut u, &anchors).unwrap_or(0),
                    ebr_lba: (kind == MbrKind::Logical)
                        .then(|| near(&mut u, &anchors).unwrap_or(0)),
                });
            }
            let mut disk = Recorder {
                size,
                pos: 0,
                writes: Vec::new(),
            };
            let fits = m.check(sectors).is_ok();
            let wrote = write_mbr(&mut disk, sectors, sector, &m, None);
            if !fits {
                assert!(wrote.is_err(), "{m:?}");
                assert!(disk.writes.is_empty(), "wrote while refusing: {m:?}");
                return;
            }
            if wrote.is_err() {
                return; // a record that does not fit 32 bits, refused while writing
            }
            let ss = u64::from(sector);
            let mut plan = vec![(0, ss)];
            for p in &m.partitions {
                let ebr = match p.kind {
                    MbrKind::Extended => p.start_lba,
                    MbrKind::Logical => p.ebr_lba.unwrap(),
                    MbrKind::Primary => continue,
                };
                plan.push((ebr * ss, (ebr + 1) * ss));
            }
            inside(&disk.writes, &plan).unwrap();
        }
    });
}
