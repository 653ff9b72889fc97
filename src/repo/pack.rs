//! Pack files: many compressed blobs in one file, so that a million small
//! files do not become a million objects.
//!
//! ```text
//! "RWPACK01" | blob 0 (zstd) | blob 1 | ... | index | index length (u32 LE) | "RWINDX01"
//! index entry: id (32) | kind (1) | offset (u64 LE) | stored length (u32 LE) | plain length (u32 LE)
//! ```
//! The index is also written as `index/<pack>.idx` so that opening a
//! repository reads indexes, not packs; a pack whose .idx was lost in a crash
//! is re-indexed from its own trailer.
//!
//! Every number here comes from a file that may be damaged or made by a
//! hostile host: offsets and lengths are added and compared with checked
//! arithmetic ([`blob_range`], [`split_pack`], [`check_entries`]) and a
//! bad one is an error, never a panic or a wrapped-around offset.

use anyhow::{Context, Result, bail, ensure};

use crate::tree::ChunkId;

pub const PACK_MAGIC: &[u8; 8] = b"RWPACK01";
pub const INDEX_MAGIC: &[u8; 8] = b"RWINDX01";
const ENTRY_LEN: usize = 32 + 1 + 8 + 4 + 4;

/// The largest plain blob a valid pack holds: a chunk is at most
/// `chunker::MAX` (4 MiB); a tree stream's piece list is far smaller than
/// this. A larger `plain_len` is damage, refused before anything allocates
/// that much to decompress into.
pub const MAX_PLAIN_LEN: u32 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// File content.
    Data = 0,
    /// A piece of a tree stream.
    Tree = 1,
    /// The list of a tree stream's pieces.
    TreeList = 2,
}

impl BlobKind {
    fn from_u8(b: u8) -> Option<BlobKind> {
        Some(match b {
            0 => BlobKind::Data,
            1 => BlobKind::Tree,
            2 => BlobKind::TreeList,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    pub kind: BlobKind,
    pub offset: u64,
    pub stored_len: u32,
    pub plain_len: u32,
}

/// Builds one pack in memory.
pub struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> Self {
        PackBuilder {
            bytes: PACK_MAGIC.to_vec(),
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, id: ChunkId, kind: BlobKind, plain_len: u32, stored: &[u8]) {
        self.entries.push(PackEntry {
            id,
            kind,
            offset: self.bytes.len() as u64,
            stored_len: stored.len() as u32,
            plain_len,
        });
        self.bytes.extend_from_slice(stored);
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The finished pack, its name (BLAKE3 of its bytes) and its index bytes.
    pub fn finish(mut self) -> (String, Vec<u8>, Vec<u8>, Vec<PackEntry>) {
        let index = encode_index(&self.entries);
        self.bytes.extend_from_slice(&index[..index.len() - 12]);
        self.bytes.extend_from_slice(&index[index.len() - 12..]);
        let name = blake3::hash(&self.bytes).to_hex().to_string();
        (name, self.bytes, index, self.entries)
    }
}

/// Index bytes: entries, then their length and the index magic (the same
/// bytes end the pack).
pub fn encode_index(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN + 12);
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.push(e.kind as u8);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.plain_len.to_le_bytes());
    }
    out.extend_from_slice(&((entries.len() * ENTRY_LEN) as u32).to_le_bytes());
    out.extend_from_slice(INDEX_MAGIC);
    out
}

/// Parse index bytes (an .idx file, or the tail of a pack from
/// [`index_tail_len`]).
pub fn decode_index(bytes: &[u8]) -> Result<Vec<PackEntry>> {
    ensure!(
        bytes.len() >= 12 && &bytes[bytes.len() - 8..] == INDEX_MAGIC,
        "no index magic"
    );
    let n = le_u32(&bytes[bytes.len() - 12..bytes.len() - 8]) as usize;
    ensure!(
        n.is_multiple_of(ENTRY_LEN) && n.checked_add(12).is_some_and(|t| t <= bytes.len()),
        "index length {n} is inconsistent"
    );
    let body = &bytes[bytes.len() - 12 - n..bytes.len() - 12];
    let mut out = Vec::with_capacity(n / ENTRY_LEN);
    for e in body.chunks_exact(ENTRY_LEN) {
        let Some(kind) = BlobKind::from_u8(e[32]) else {
            bail!("unknown blob kind {}", e[32]);
        };
        out.push(PackEntry {
            id: ChunkId(e[..32].try_into().expect("a 32-byte slice")),
            kind,
            offset: u64::from_le_bytes(e[33..41].try_into().expect("an 8-byte slice")),
            stored_len: le_u32(&e[41..45]),
            plain_len: le_u32(&e[45..49]),
        });
    }
    Ok(out)
}

/// Given the last 12 bytes of a pack, how many bytes its trailer takes.
pub fn index_tail_len(last12: &[u8]) -> Result<usize> {
    ensure!(
        last12.len() == 12 && &last12[4..] == INDEX_MAGIC,
        "no index magic at the end of the pack"
    );
    (le_u32(&last12[..4]) as usize)
        .checked_add(12)
        .context("index length overflows")
}

/// Where a stored blob lies in its pack's bytes; `None` when the numbers
/// do not fit (a damaged index).
pub fn blob_range(offset: u64, stored_len: u32) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(stored_len).ok()?)?;
    Some(start..end)
}

/// A whole pack's bytes cut at its trailer: the end of the blobs (where the
/// index starts) and the index bytes, checked to lie after the magic.
pub fn split_pack(bytes: &[u8]) -> Result<(usize, &[u8])> {
    ensure!(
        bytes.len() >= PACK_MAGIC.len() + 12,
        "{} bytes is too short for a pack",
        bytes.len()
    );
    let tail = index_tail_len(&bytes[bytes.len() - 12..])?;
    let body_end = bytes
        .len()
        .checked_sub(tail)
        .filter(|&end| end >= PACK_MAGIC.len())
        .with_context(|| format!("index of {tail} bytes is longer than the pack"))?;
    Ok((body_end, &bytes[body_end..]))
}

/// Check a pack's entries against its blobs' end: each blob lies after the
/// magic and before the index, and its plain length is one a pack can hold.
pub fn check_entries(entries: &[PackEntry], body_end: usize) -> Result<()> {
    for e in entries {
        let range = blob_range(e.offset, e.stored_len);
        ensure!(
            range.is_some_and(|r| r.start >= PACK_MAGIC.len() && r.end <= body_end),
            "blob {} (offset {}, {} bytes) lies outside the pack's {body_end} bytes of blobs",
            e.id.to_hex(),
            e.offset,
            e.stored_len
        );
        ensure!(
            e.plain_len <= MAX_PLAIN_LEN,
            "blob {} claims {} plain bytes (at most {MAX_PLAIN_LEN})",
            e.id.to_hex(),
            e.plain_len
        );
    }
    Ok(())
}

/// A little-endian u32 from a slice the caller cut to 4 bytes.
fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("a 4-byte slice"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_index_round_trip() {
        let mut b = PackBuilder::new();
        b.add(ChunkId::of(b"a"), BlobKind::Data, 1, b"xx");
        b.add(ChunkId::of(b"b"), BlobKind::Tree, 7, b"yyy");
        let (name, pack, index, entries) = b.finish();
        assert_eq!(name.len(), 64);
        assert_eq!(&pack[..8], PACK_MAGIC);
        assert_eq!(decode_index(&index).unwrap(), entries);
        let tail = index_tail_len(&pack[pack.len() - 12..]).unwrap();
        assert_eq!(decode_index(&pack[pack.len() - tail..]).unwrap(), entries);
        assert_eq!(entries[1].offset, 10);
        assert_eq!(&pack[10..13], b"yyy");
    }

    #[test]
    fn damaged_index_is_refused() {
        let (_, _, mut index, _) = {
            let mut b = PackBuilder::new();
            b.add(ChunkId::of(b"a"), BlobKind::Data, 1, b"xx");
            b.finish()
        };
        let n = index.len();
        index[n - 1] ^= 1;
        assert!(decode_index(&index).is_err());
        assert!(decode_index(b"short").is_err());
    }

    /// Entries whose offset plus length wraps around, points into the
    /// magic or past the blobs, or claims a huge plain length are refused;
    /// truncated packs and trailers longer than the pack are errors.
    #[test]
    fn untrusted_numbers_are_checked() {
        let mut b = PackBuilder::new();
        b.add(ChunkId::of(b"a"), BlobKind::Data, 1, b"xx");
        let (_, pack, _, entries) = b.finish();
        let (body_end, index) = split_pack(&pack).unwrap();
        assert_eq!(body_end, 10);
        assert_eq!(decode_index(index).unwrap(), entries);
        check_entries(&entries, body_end).unwrap();
        let with = |f: &dyn Fn(&mut PackEntry)| {
            let mut e = entries[0];
            f(&mut e);
            check_entries(&[e], body_end)
        };
        assert!(with(&|e| e.offset = u64::MAX - 1).is_err(), "wraps around");
        assert!(with(&|e| e.offset = 2).is_err(), "inside the magic");
        assert!(
            with(&|e| e.stored_len = u32::MAX).is_err(),
            "past the blobs"
        );
        assert!(with(&|e| e.plain_len = u32::MAX).is_err(), "4 GiB plain");
        assert_eq!(blob_range(u64::MAX, u32::MAX), None);
        for cut in 0..pack.len() {
            let _ = split_pack(&pack[..cut]); // never panics
            let _ = split_pack(&pack[cut..]);
        }
        let mut long = pack.clone();
        let n = long.len();
        long[n - 12..n - 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(split_pack(&long).is_err());
        assert!(decode_index(&long).is_err());
    }
}
