//! A filesystem tree as the repository stores it: one entry per inode-path, in
//! walk order (a directory before its children, names sorted bytewise), so
//! that restore can stream it and unchanged directories encode to unchanged
//! bytes (and deduplicate as chunks).

use std::io::{Read, Write};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// BLAKE3 of a chunk's plain content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

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

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Append one entry to a tree stream.
pub fn write_entry<W: Write>(out: &mut W, entry: &Entry) -> Result<()> {
    bincode::serde::encode_into_std_write(entry, out, config())
        .context("cannot encode a tree entry")?;
    Ok(())
}

/// Read the entries of a tree stream, one at a time.
pub struct EntryReader<R> {
    input: R,
}

impl<R: Read> EntryReader<R> {
    pub fn new(input: R) -> Self {
        EntryReader { input }
    }
}

impl<R: Read> Iterator for EntryReader<R> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        // Distinguish a clean end of stream from a truncated entry.
        let mut first = [0u8; 1];
        match self.input.read(&mut first) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e).context("cannot read the tree")),
        }
        let mut chained = std::io::Read::chain(&first[..], &mut self.input);
        Some(
            bincode::serde::decode_from_std_read(&mut chained, config())
                .context("corrupt tree entry"),
        )
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

    #[test]
    fn chunk_id_hex() {
        let id = ChunkId::of(b"abc");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
    }
}
