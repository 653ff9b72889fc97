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

use anyhow::{Result, bail, ensure};

use crate::tree::ChunkId;

pub const PACK_MAGIC: &[u8; 8] = b"RWPACK01";
pub const INDEX_MAGIC: &[u8; 8] = b"RWINDX01";
const ENTRY_LEN: usize = 32 + 1 + 8 + 4 + 4;

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
        n.is_multiple_of(ENTRY_LEN) && n + 12 <= bytes.len(),
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
    Ok(le_u32(&last12[..4]) as usize + 12)
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
}
