//! A filesystem tree as the repository stores it: one entry per inode-path, in
//! walk order (a directory before its children, names sorted bytewise), so
//! that restore can stream it and unchanged directories encode to unchanged
//! bytes (and deduplicate as chunks).

use std::io::{Read, Write};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// BLAKE3 of a chunk's plain content.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

// The 32 bytes, without the length prefix the derived `Hash` writes, so
// that [`ChunkHasher`] sees them in one piece.
impl std::hash::Hash for ChunkId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

/// A map keyed by chunk ids, hashed by [`ChunkHasher`].
pub type ChunkMap<V> = std::collections::HashMap<ChunkId, V, ChunkHasher>;
/// A set of chunk ids, hashed by [`ChunkHasher`].
pub type ChunkSet = std::collections::HashSet<ChunkId, ChunkHasher>;

/// Hashes a [`ChunkId`] by taking 8 of its bytes: it is a BLAKE3 hash
/// already, uniform in every bit. SipHash over the 32 bytes was 7.6% of a
/// small-file restore's instructions (the read-ahead's maps). Which 8 bytes
/// is chosen once per process at random, so that content made to give ids
/// of the same few bits (cheap for the low bits of a known window) cannot
/// fill one bucket of a table. Anything but a chunk id hashed with it goes
/// through an FxHash-like mix.
#[derive(Clone, Copy, Debug)]
pub struct ChunkHasher {
    offset: usize,
}

impl Default for ChunkHasher {
    fn default() -> ChunkHasher {
        static OFFSET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let offset = *OFFSET.get_or_init(|| {
            use std::hash::BuildHasher;
            (std::collections::hash_map::RandomState::new().hash_one(0u8) % 25) as usize
        });
        ChunkHasher { offset }
    }
}

impl std::hash::BuildHasher for ChunkHasher {
    type Hasher = ChunkIdHash;
    fn build_hasher(&self) -> ChunkIdHash {
        ChunkIdHash {
            value: 0,
            offset: self.offset,
        }
    }
}

/// The hasher [`ChunkHasher`] builds.
pub struct ChunkIdHash {
    value: u64,
    offset: usize,
}

impl std::hash::Hasher for ChunkIdHash {
    fn write(&mut self, bytes: &[u8]) {
        if self.value == 0
            && bytes.len() == 32
            && let Some(w) = bytes.get(self.offset..self.offset + 8)
        {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            self.value = u64::from_le_bytes(a);
            return;
        }
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.value = (self.value.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.value
    }
}

impl ChunkId {
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        crate::util::hex::encode(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<ChunkId> {
        crate::util::hex::decode(s)?.try_into().ok().map(ChunkId)
    }
}

impl std::fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// Seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// A piece of a file's content: `len` bytes whose BLAKE3 is `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// A region of a file that holds data; what lies between extents is a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the filesystem's root, raw bytes (names need not be
    /// UTF-8), components separated by `/`; empty for the root directory.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    /// Not restorable; kept to detect changed files on the next capture.
    pub ctime: Time,
    pub ino: u64,
    pub size: u64,
    /// Device number of a character or block device.
    pub rdev: u64,
    /// Target of a symlink, raw bytes.
    pub link_target: Vec<u8>,
    /// For the second and later paths of an inode with several links: the
    /// path of the first one, which restore hard-links to.
    pub hardlink_to: Option<Vec<u8>>,
    /// Extended attributes of every namespace (user, trusted, security,
    /// system.posix_acl_*), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data regions of a regular file, in order; the file's `size` may extend
    /// past the last one (a trailing hole).
    pub extents: Vec<Extent>,
    /// The file's data (the extents' bytes, concatenated), cut into chunks.
    pub chunks: Vec<ChunkRef>,
}

impl Entry {
    /// The path as text for messages (non-UTF-8 bytes escaped).
    pub fn display_path(&self) -> String {
        display_bytes(&self.path)
    }
}

pub fn display_bytes(p: &[u8]) -> String {
    if p.is_empty() {
        return "/".into();
    }
    p.utf8_chunks()
        .map(|c| {
            let mut s = c.valid().to_string();
            for b in c.invalid() {
                s.push_str(&format!("\\x{b:02x}"));
            }
            s
        })
        .collect()
}

// The encoding of an entry, the one every stored tree has: what bincode 2's
// standard configuration makes of `Entry` through serde. Integers (other
// than `u8`) are varints: below 251 one byte, else a marker byte (251, 252,
// 253 for 2, 4, 8 bytes) and the value little-endian; `i64` zigzag-encoded
// first. Byte strings and lists: a varint length, then the items. An
// `Option`: a byte 0 or 1, then the value. An enum: its variant's index as
// a varint. A `ChunkId`: its 32 bytes as they are. The fields in the order
// of the struct.
//
// Written and read by hand: through serde, a `ChunkId` was decoded as 32
// separate elements and each field went through a `Read` call; decoding
// the tree was 40% of a small-file restore's instructions. The bytes are
// the same (`codec_matches_bincode` checks it against bincode itself), so
// every tree written before reads as it did.

const U16_BYTE: u8 = 251;
const U32_BYTE: u8 = 252;
const U64_BYTE: u8 = 253;

/// An entry's encoding larger than this is taken for damage rather than
/// read whole into memory (a file of ~25 TiB in 1 MiB chunks is well below).
const MAX_ENTRY: usize = 1 << 30;

fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v <= 250 {
        out.push(v as u8);
    } else if v <= u64::from(u16::MAX) {
        out.push(U16_BYTE);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(U32_BYTE);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(U64_BYTE);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_varint(
        out,
        if v < 0 {
            !(v as u64) * 2 + 1
        } else {
            (v as u64) * 2
        },
    );
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_time(out: &mut Vec<u8>, t: Time) {
    put_i64(out, t.sec);
    put_varint(out, u64::from(t.nsec));
}

fn kind_index(k: Kind) -> u64 {
    match k {
        Kind::File => 0,
        Kind::Dir => 1,
        Kind::Symlink => 2,
        Kind::Fifo => 3,
        Kind::CharDevice => 4,
        Kind::BlockDevice => 5,
        Kind::Socket => 6,
    }
}

/// Append the encoding of one entry to `out`.
pub fn encode_entry(out: &mut Vec<u8>, e: &Entry) {
    put_bytes(out, &e.path);
    put_varint(out, kind_index(e.kind));
    put_varint(out, u64::from(e.mode));
    put_varint(out, u64::from(e.uid));
    put_varint(out, u64::from(e.gid));
    put_time(out, e.atime);
    put_time(out, e.mtime);
    put_time(out, e.ctime);
    put_varint(out, e.ino);
    put_varint(out, e.size);
    put_varint(out, e.rdev);
    put_bytes(out, &e.link_target);
    match &e.hardlink_to {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            put_bytes(out, p);
        }
    }
    put_varint(out, e.xattrs.len() as u64);
    for (k, v) in &e.xattrs {
        put_bytes(out, k);
        put_bytes(out, v);
    }
    put_varint(out, e.extents.len() as u64);
    for x in &e.extents {
        put_varint(out, x.offset);
        put_varint(out, x.len);
    }
    put_varint(out, e.chunks.len() as u64);
    for c in &e.chunks {
        out.extend_from_slice(&c.id.0);
        put_varint(out, u64::from(c.len));
    }
}

/// Append one entry to a tree stream.
pub fn write_entry<W: Write>(out: &mut W, entry: &Entry) -> Result<()> {
    let mut buf = Vec::with_capacity(256);
    encode_entry(&mut buf, entry);
    out.write_all(&buf).context("cannot write a tree entry")
}

/// Why an entry could not be decoded from the bytes at hand.
#[derive(Debug, PartialEq)]
enum Undecodable {
    /// The bytes end within the entry.
    Short,
    /// The bytes are not an entry.
    Invalid(&'static str),
}

/// A cursor over the bytes of one entry.
struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Undecodable> {
        let end = self.pos.checked_add(n).ok_or(Undecodable::Short)?;
        let b = self.input.get(self.pos..end).ok_or(Undecodable::Short)?;
        self.pos = end;
        Ok(b)
    }

    fn byte(&mut self) -> Result<u8, Undecodable> {
        Ok(self.take(1)?[0])
    }

    /// A varint of at most `max_marker` (the marker of the widest form the
    /// type allows).
    fn varint(&mut self, max_marker: u8) -> Result<u64, Undecodable> {
        let first = self.byte()?;
        let v = match first {
            0..=250 => u64::from(first),
            U16_BYTE => u64::from(u16::from_le_bytes(self.array()?)),
            U32_BYTE if max_marker >= U32_BYTE => u64::from(u32::from_le_bytes(self.array()?)),
            U64_BYTE if max_marker >= U64_BYTE => u64::from_le_bytes(self.array()?),
            _ => return Err(Undecodable::Invalid("an integer out of range")),
        };
        Ok(v)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Undecodable> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, Undecodable> {
        Ok(self.varint(U32_BYTE)? as u32)
    }

    fn u64(&mut self) -> Result<u64, Undecodable> {
        self.varint(U64_BYTE)
    }

    fn i64(&mut self) -> Result<i64, Undecodable> {
        let z = self.u64()?;
        Ok(if z % 2 == 0 {
            (z / 2) as i64
        } else {
            !(z / 2) as i64
        })
    }

    /// A list's length, when its items (each at least `min_item` bytes)
    /// can all be in the entry.
    fn len(&mut self, min_item: usize) -> Result<usize, Undecodable> {
        let n = self.u64()?;
        if n.saturating_mul(min_item as u64) > MAX_ENTRY as u64 {
            return Err(Undecodable::Invalid("a length beyond any entry"));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, Undecodable> {
        let n = self.len(1)?;
        Ok(self.take(n)?.to_vec())
    }

    fn time(&mut self) -> Result<Time, Undecodable> {
        Ok(Time {
            sec: self.i64()?,
            nsec: self.u32()?,
        })
    }

    /// A list of `n` items; reserves no more than the bytes left can hold.
    fn list<T>(
        &mut self,
        min_item: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, Undecodable>,
    ) -> Result<Vec<T>, Undecodable> {
        let n = self.len(min_item)?;
        let fits = (self.input.len() - self.pos) / min_item;
        let mut out = Vec::with_capacity(n.min(fits));
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }

    fn entry(&mut self) -> Result<Entry, Undecodable> {
        Ok(Entry {
            path: self.bytes()?,
            kind: match self.u32()? {
                0 => Kind::File,
                1 => Kind::Dir,
                2 => Kind::Symlink,
                3 => Kind::Fifo,
                4 => Kind::CharDevice,
                5 => Kind::BlockDevice,
                6 => Kind::Socket,
                _ => return Err(Undecodable::Invalid("an unknown kind of entry")),
            },
            mode: self.u32()?,
            uid: self.u32()?,
            gid: self.u32()?,
            atime: self.time()?,
            mtime: self.time()?,
            ctime: self.time()?,
            ino: self.u64()?,
            size: self.u64()?,
            rdev: self.u64()?,
            link_target: self.bytes()?,
            hardlink_to: match self.byte()? {
                0 => None,
                1 => Some(self.bytes()?),
                _ => return Err(Undecodable::Invalid("a bad option tag")),
            },
            xattrs: self.list(2, |d| Ok((d.bytes()?, d.bytes()?)))?,
            extents: self.list(2, |d| {
                Ok(Extent {
                    offset: d.u64()?,
                    len: d.u64()?,
                })
            })?,
            chunks: self.list(33, |d| {
                Ok(ChunkRef {
                    id: ChunkId(d.array()?),
                    len: d.u32()?,
                })
            })?,
        })
    }
}

/// Decode the entry at the start of `input`; returns it and its length.
fn decode_entry(input: &[u8]) -> Result<(Entry, usize), Undecodable> {
    let mut d = Decoder { input, pos: 0 };
    let e = d.entry()?;
    Ok((e, d.pos))
}

/// Read the entries of a tree stream, one at a time, through a buffer.
pub struct EntryReader<R> {
    input: R,
    /// `buf[pos..end]` is read and not decoded yet.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// The input is read to its end.
    eof: bool,
    /// An error was returned: the stream ends there.
    failed: bool,
}

/// Bytes read from the input at a time, at least.
const READ_SIZE: usize = 256 << 10;

impl<R: Read> EntryReader<R> {
    pub fn new(input: R) -> Self {
        EntryReader {
            input,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            eof: false,
            failed: false,
        }
    }

    /// Read more of the input after what is buffered: at least as much as
    /// is buffered already (an entry longer than the buffer is decoded again
    /// after each fill: the buffer doubles, so that costs twice its length,
    /// not its square), at least [`READ_SIZE`], or up to the end.
    fn fill(&mut self) -> std::io::Result<()> {
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        let want = self.end.max(READ_SIZE);
        if self.buf.len() < self.end + want {
            // Zeroed once, when the buffer grows.
            self.buf.resize(self.end + want, 0);
        }
        let stop = self.end + want;
        while self.end < stop {
            match self.input.read(&mut self.buf[self.end..stop]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn next_entry(&mut self) -> Option<Result<Entry>> {
        loop {
            if self.pos == self.end {
                if self.eof {
                    return None;
                }
                if let Err(e) = self.fill() {
                    return Some(Err(e).context("cannot read the tree"));
                }
                continue;
            }
            match decode_entry(&self.buf[self.pos..self.end]) {
                Ok((entry, n)) => {
                    self.pos += n;
                    return Some(Ok(entry));
                }
                Err(Undecodable::Short) if self.eof => {
                    return Some(Err(anyhow::anyhow!(
                        "corrupt tree entry: the tree ends within it"
                    )));
                }
                Err(Undecodable::Short) if self.end - self.pos > MAX_ENTRY => {
                    return Some(Err(anyhow::anyhow!(
                        "corrupt tree entry: larger than {MAX_ENTRY} bytes"
                    )));
                }
                Err(Undecodable::Short) => {
                    if let Err(e) = self.fill() {
                        return Some(Err(e).context("cannot read the tree"));
                    }
                }
                Err(Undecodable::Invalid(what)) => {
                    return Some(Err(anyhow::anyhow!("corrupt tree entry: {what}")));
                }
            }
        }
    }
}

impl<R: Read> Iterator for EntryReader<R> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.failed {
            return None;
        }
        let next = self.next_entry();
        if matches!(next, Some(Err(_))) {
            self.failed = true;
        }
        next
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn file(path: &str, chunks: &[&[u8]]) -> Entry {
        let size: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        Entry {
            path: path.as_bytes().to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            atime: Time { sec: 1, nsec: 2 },
            mtime: Time { sec: 3, nsec: 4 },
            ctime: Time { sec: 5, nsec: 6 },
            ino: 42,
            size,
            rdev: 0,
            link_target: Vec::new(),
            hardlink_to: None,
            xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
            extents: vec![Extent {
                offset: 0,
                len: size,
            }],
            chunks: chunks
                .iter()
                .map(|c| ChunkRef {
                    id: ChunkId::of(c),
                    len: c.len() as u32,
                })
                .collect(),
        }
    }

    #[test]
    fn stream_round_trip() {
        let mut a = file("a", &[b"hello", b"world"]);
        a.path = b"caf\xe9".to_vec();
        let b = file("dir/b", &[]);
        let mut buf = Vec::new();
        write_entry(&mut buf, &a).unwrap();
        write_entry(&mut buf, &b).unwrap();
        let back: Vec<Entry> = EntryReader::new(&buf[..]).collect::<Result<_>>().unwrap();
        assert_eq!(back, [a.clone(), b]);
        assert_eq!(a.display_path(), "caf\\xe9");
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let mut buf = Vec::new();
        write_entry(&mut buf, &file("a", &[b"x"])).unwrap();
        buf.truncate(buf.len() - 3);
        let items: Vec<_> = EntryReader::new(&buf[..]).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }

    /// The encoding is bincode's through serde, byte for byte, both ways.
    #[test]
    fn codec_matches_bincode() {
        let big = |n: u64| {
            [
                0,
                1,
                250,
                251,
                0xffff,
                0x1_0000,
                u32::MAX as u64,
                1 << 40,
                u64::MAX,
            ][n as usize % 9]
        };
        let mut entries = vec![file("a", &[b"hello", b"world"]), file("", &[])];
        for i in 0..40u64 {
            let mut e = file(
                &format!("d/{}", "x".repeat(i as usize * 7)),
                &[b"c".as_slice(); 3],
            );
            e.kind = [
                Kind::File,
                Kind::Dir,
                Kind::Symlink,
                Kind::Fifo,
                Kind::CharDevice,
                Kind::BlockDevice,
                Kind::Socket,
            ][i as usize % 7];
            e.mode = big(i) as u32;
            e.uid = big(i + 1) as u32;
            e.gid = big(i + 2) as u32;
            e.atime = Time {
                sec: -(big(i) as i64),
                nsec: big(i + 3) as u32,
            };
            e.mtime = Time {
                sec: big(i + 4) as i64,
                nsec: 999_999_999,
            };
            e.ctime = Time {
                sec: i64::MIN + i as i64,
                nsec: 0,
            };
            e.ino = big(i + 5);
            e.size = big(i + 6);
            e.rdev = big(i + 7);
            e.link_target = vec![0xff; (i * 13) as usize];
            e.hardlink_to = (i % 2 == 0).then(|| b"first".to_vec());
            e.xattrs = (0..i % 4)
                .map(|k| (vec![b'k'; k as usize], vec![7; (k * 100) as usize]))
                .collect();
            e.extents = (0..i % 5)
                .map(|k| Extent {
                    offset: big(k),
                    len: big(k + i),
                })
                .collect();
            entries.push(e);
        }
        let config = bincode::config::standard();
        let mut stream = Vec::new();
        for e in &entries {
            let mine = {
                let mut b = Vec::new();
                encode_entry(&mut b, e);
                b
            };
            let theirs = bincode::serde::encode_to_vec(e, config).unwrap();
            assert_eq!(mine, theirs, "{e:?}");
            let (back, n) = decode_entry(&theirs).unwrap();
            assert_eq!((&back, n), (e, theirs.len()));
            let (back, _): (Entry, usize) =
                bincode::serde::decode_from_slice(&mine, config).unwrap();
            assert_eq!(&back, e);
            stream.extend_from_slice(&theirs);
        }
        // An entry longer than the reader's buffer (a big file's chunk list).
        let mut long = file("long", &[]);
        long.chunks = (0..20_000u32)
            .map(|i| ChunkRef {
                id: ChunkId::of(&i.to_le_bytes()),
                len: i,
            })
            .collect();
        encode_entry(&mut stream, &long);
        encode_entry(&mut stream, &entries[0]);
        entries.push(long);
        entries.push(entries[0].clone());
        // Read back through a reader that hands out a few bytes at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(7);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let back: Vec<Entry> = EntryReader::new(Trickle(&stream))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(back, entries);
    }

    #[test]
    fn damaged_entries_are_errors() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &file("a", &[b"x"]));
        // The kind: 1 byte of path length, 1 of path.
        buf[2] = 9;
        let items: Vec<_> = EntryReader::new(&buf[..]).collect();
        assert_eq!(items.len(), 1);
        assert!(format!("{:#}", items[0].as_ref().unwrap_err()).contains("unknown kind"));
        // A length of 2^60 bytes: refused, not allocated.
        let mut huge = vec![U64_BYTE];
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert_eq!(
            decode_entry(&huge).unwrap_err(),
            Undecodable::Invalid("a length beyond any entry")
        );
    }

    #[test]
    fn chunk_maps_hash_by_the_id() {
        use std::hash::BuildHasher;
        let h = ChunkHasher::default();
        let a = ChunkId::of(b"a");
        let o = h.offset;
        assert_eq!(
            h.hash_one(a),
            u64::from_le_bytes(a.0[o..o + 8].try_into().unwrap())
        );
        let mut m: ChunkMap<u32> = ChunkMap::default();
        for i in 0..1000u32 {
            m.insert(ChunkId::of(&i.to_le_bytes()), i);
        }
        assert!((0..1000u32).all(|i| m[&ChunkId::of(&i.to_le_bytes())] == i));
        // Other keys still hash (by a mix of their bytes).
        assert_ne!(h.hash_one((1u64, 2u64)), h.hash_one((2u64, 1u64)));
    }

    #[test]
    fn chunk_id_hex() {
        let id = ChunkId::of(b"abc");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
    }
}
