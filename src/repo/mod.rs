//! The content-addressed repository: chunks named by BLAKE3, compressed with
//! zstd, grouped into packs; snapshots are manifests whose filesystems point
//! at their file trees. Every blob is verified against its name when read.

pub mod backend;
pub mod check;
pub mod chunker;
pub mod forget;
mod index;
pub mod pack;
mod packer;
pub mod prefetch;
pub mod prune;

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};

use crate::manifest::{self, Manifest};
use crate::tree::{ChunkId, ChunkRef, EntryReader};
use backend::{Backend, LocalDir};
use pack::{BlobKind, PackEntry};

const CONFIG: &str = "config";
pub const CONFIG_TEXT: &str = "rewind repository 1\n";
/// Packs are closed at this size: big enough for sequential restore reads,
/// small enough that an interrupted capture loses little.
const PACK_TARGET: usize = 16 << 20;
const ZSTD_LEVEL: i32 = 3;

/// Where a blob lives.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub pack: u32,
    pub kind: BlobKind,
    pub offset: u64,
    pub stored_len: u32,
    pub plain_len: u32,
}

pub struct Repo {
    pub(crate) backend: Arc<dyn Backend>,
    packs: Vec<String>,
    index: index::ChunkIndex,
    /// Started on the first write.
    packer: Option<packer::Packer>,
    /// Blobs handed to the packer and not yet in a written pack (bounded by
    /// the packer's pipeline: packs are indexed as they are written).
    pending_ids: crate::tree::ChunkSet,
    pub stats: WriteStats,
}

/// A snapshot as [`Repo::snapshot_list`] lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub manifest: Manifest,
    /// When the server committed it (RFC 3339): a server's repository
    /// only, and only for snapshots it recorded a commit time for.
    pub committed: Option<String>,
}

/// What a capture added to the repository.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteStats {
    pub blobs_new: u64,
    pub blobs_dedup: u64,
    pub bytes_new_plain: u64,
    pub bytes_new_stored: u64,
    pub packs_written: u64,
}

impl Repo {
    /// Create a repository in `dir` (or open it if it exists).
    pub fn init(dir: &Path) -> Result<Repo> {
        let backend = LocalDir::new(dir);
        if !backend.exists(CONFIG)? {
            // Durably: `config` is fsynced in it, and a server's new
            // hosts/NAME/ must not vanish with a power cut.
            crate::util::fs::create_dir_durable(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            backend.put(CONFIG, CONFIG_TEXT.as_bytes())?;
        }
        Repo::open_backend(Arc::new(backend))
    }

    /// Open an existing repository in `dir`.
    pub fn open(dir: &Path) -> Result<Repo> {
        let backend = LocalDir::new(dir);
        if !backend.exists(CONFIG)? {
            bail!(
                "{} is not a rewind repository (no {CONFIG}); `rewind capture --repo {}` creates one",
                dir.display(),
                dir.display()
            );
        }
        Repo::open_backend(Arc::new(backend))
    }

    pub fn open_backend(backend: Arc<dyn Backend>) -> Result<Repo> {
        let config = backend.get(CONFIG)?;
        ensure!(
            config == CONFIG_TEXT.as_bytes(),
            "{}: unsupported repository version {:?}",
            backend.describe(),
            String::from_utf8_lossy(&config).trim()
        );
        let mut repo = Repo {
            backend,
            packs: Vec::new(),
            index: index::ChunkIndex::default(),
            packer: None,
            pending_ids: crate::tree::ChunkSet::default(),
            stats: WriteStats::default(),
        };
        repo.load_indexes()?;
        Ok(repo)
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    fn load_indexes(&mut self) -> Result<()> {
        let indexed: HashSet<String> = self
            .backend
            .list("index/")?
            .iter()
            .filter_map(|n| {
                n.strip_prefix("index/")?
                    .strip_suffix(".idx")
                    .map(str::to_string)
            })
            .collect();
        let mut index = index::Builder::default();
        for pack_name in self.backend.list("packs/")? {
            let Some(name) = pack_name
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".pack"))
            else {
                continue;
            };
            let entries = if indexed.contains(name) {
                let bytes = self.backend.get(&format!("index/{name}.idx"))?;
                pack::decode_index(&bytes)
                    .with_context(|| format!("index/{name}.idx is damaged"))?
            } else {
                // The capture was interrupted between the pack and its index.
                let entries = self.read_pack_trailer(&pack_name)?;
                self.backend
                    .put(&format!("index/{name}.idx"), &pack::encode_index(&entries))?;
                entries
            };
            let pack = self.packs.len() as u32;
            self.packs.push(name.to_string());
            index.add_pack(pack, &entries)?;
        }
        // One sort of everything (each pack's entries are dropped as they
        // are copied in), rather than a map grown pack by pack.
        self.index = index.finish();
        Ok(())
    }

    fn read_pack_trailer(&self, pack_name: &str) -> Result<Vec<PackEntry>> {
        let bytes = self.backend.get(pack_name)?;
        ensure!(bytes.len() >= 20, "{pack_name} is truncated");
        let tail = pack::index_tail_len(&bytes[bytes.len() - 12..])
            .with_context(|| format!("{pack_name} has no index trailer"))?;
        ensure!(
            tail <= bytes.len(),
            "{pack_name}: index trailer longer than the pack"
        );
        pack::decode_index(&bytes[bytes.len() - tail..])
            .with_context(|| format!("{pack_name}: damaged index trailer"))
    }

    /// Index a pack the packer wrote: its blobs are no longer pending.
    fn add_written_pack(&mut self, name: String, entries: &[PackEntry]) -> Result<()> {
        let pack = self.packs.len() as u32;
        self.index.add_pack(pack, entries)?;
        self.packs.push(name);
        for e in entries {
            self.pending_ids.remove(&e.id);
        }
        self.stats.packs_written += 1;
        Ok(())
    }

    /// Index the packs written since the last call (the packer writes them
    /// in the background), so that the pending ids stay few.
    fn absorb_written_packs(&mut self) -> Result<()> {
        while let Some((name, entries)) = self.packer.as_ref().and_then(|p| p.try_written()) {
            self.add_written_pack(name, &entries)?;
        }
        Ok(())
    }

    pub(crate) fn pack_path(name: &str) -> String {
        format!("packs/{}/{name}.pack", &name[..2])
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.index.contains(id) || self.pending_ids.contains(id)
    }

    pub fn location(&self, id: &ChunkId) -> Option<Location> {
        self.index.get(id)
    }

    /// Store a blob unless the repository has it; returns its id.
    pub fn add_blob(&mut self, kind: BlobKind, data: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(data);
        if self.contains(&id) {
            self.stats.blobs_dedup += 1;
            return Ok(id);
        }
        self.add_new_blob(kind, id, data.to_vec())?;
        Ok(id)
    }

    /// Store a blob hashed elsewhere (`id` must be [`ChunkId::of`] `data`:
    /// a capture's reader threads hash what they read), without copying it.
    pub fn add_hashed_blob(&mut self, kind: BlobKind, id: ChunkId, data: Vec<u8>) -> Result<()> {
        debug_assert!(ChunkId::of(&data) == id);
        if self.contains(&id) {
            self.stats.blobs_dedup += 1;
            return Ok(());
        }
        self.add_new_blob(kind, id, data)
    }

    fn add_new_blob(&mut self, kind: BlobKind, id: ChunkId, data: Vec<u8>) -> Result<()> {
        let backend = self.backend.clone();
        let packer = self
            .packer
            .get_or_insert_with(|| packer::Packer::new(backend, PACK_TARGET, ZSTD_LEVEL));
        self.stats.blobs_new += 1;
        self.stats.bytes_new_plain += data.len() as u64;
        packer.add(packer::Blob { id, kind, data })?;
        self.pending_ids.insert(id);
        self.absorb_written_packs()
    }

    /// Cut `reader` into content-defined chunks stored as data blobs: the
    /// chunk list and the bytes read (file contents, and the raw regions
    /// of disks).
    pub fn store_stream(
        &mut self,
        chunker: &mut chunker::StreamChunker,
        reader: impl Read,
    ) -> Result<(Vec<ChunkRef>, u64)> {
        let mut chunks = Vec::new();
        let mut total = 0u64;
        chunker.chunk(reader, |piece| {
            let id = self.add_blob(BlobKind::Data, piece)?;
            chunks.push(ChunkRef {
                id,
                len: piece.len() as u32,
            });
            total += piece.len() as u64;
            Ok(())
        })?;
        Ok((chunks, total))
    }

    /// Store a tree of one regular file, `name` (mode 0600, owned by
    /// root), whose content is `chunks` (`len` bytes): how raw regions of
    /// disks and LUKS headers are kept, so that they are chunked,
    /// deduplicated, checked and pruned like any file.
    pub fn add_one_file_tree(
        &mut self,
        name: &[u8],
        chunks: Vec<ChunkRef>,
        len: u64,
    ) -> Result<ChunkId> {
        let entry = crate::tree::Entry {
            path: name.to_vec(),
            kind: crate::tree::Kind::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            atime: crate::tree::Time::default(),
            mtime: crate::tree::Time::default(),
            ctime: crate::tree::Time::default(),
            ino: 0,
            size: len,
            rdev: 0,
            link_target: Vec::new(),
            hardlink_to: None,
            xattrs: Vec::new(),
            extents: vec![crate::tree::Extent { offset: 0, len }],
            chunks,
        };
        let mut stream = Vec::new();
        crate::tree::write_entry(&mut stream, &entry)?;
        self.add_tree(&stream)
    }

    /// Write every pending blob to packs and index them. Blobs are only
    /// referenced by a snapshot committed after this returns.
    pub fn flush(&mut self) -> Result<()> {
        let Some(packer) = self.packer.as_mut() else {
            return Ok(());
        };
        self.stats.bytes_new_stored += packer.flush()?;
        // Every pack is written and announced before the flush answers.
        self.absorb_written_packs()?;
        debug_assert!(self.pending_ids.is_empty());
        self.pending_ids.clear();
        Ok(())
    }

    /// Read a blob, decompress it and check it is what its name says.
    pub fn read_blob(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let loc = self
            .location(id)
            .with_context(|| format!("chunk {} is missing from the repository", id.to_hex()))?;
        let pack = Self::pack_path(&self.packs[loc.pack as usize]);
        read_located(&*self.backend, id, &pack, &loc)
    }

    /// Store a tree stream: cut it into chunks, store them and the list of
    /// them; the list's id names the tree.
    pub fn add_tree(&mut self, stream: &[u8]) -> Result<ChunkId> {
        let mut tree = TreeWriter::new();
        tree.write_bytes(self, stream)?;
        tree.finish(self)
    }

    /// The chunks a tree is made of.
    pub fn tree_pieces(&self, tree: &ChunkId) -> Result<Vec<ChunkRef>> {
        let list = self
            .read_blob(tree)
            .context("cannot read a tree's chunk list")?;
        let (refs, _): (Vec<ChunkRef>, _) =
            bincode::serde::decode_from_slice(&list, bincode::config::standard())
                .context("damaged tree list")?;
        Ok(refs)
    }

    /// The entries of a tree, streamed.
    pub fn tree_entries<'a>(&'a self, tree: &ChunkId) -> Result<EntryReader<impl Read + 'a>> {
        let pieces = self.tree_pieces(tree)?;
        Ok(EntryReader::new(BlobStream {
            repo: self,
            pieces: pieces.into_iter(),
            current: std::io::Cursor::new(Vec::new()),
        }))
    }

    /// The entries of a tree, streamed without borrowing the repository (a
    /// capture reads its parent's tree while it stores new blobs). Blobs
    /// stored after this call are not seen; the tree's are all there.
    pub fn tree_entries_detached(&self, tree: &ChunkId) -> Result<EntryReader<DetachedStream>> {
        let pieces = self
            .tree_pieces(tree)?
            .into_iter()
            .map(|p| {
                let loc = self.location(&p.id).with_context(|| {
                    format!("chunk {} is missing from the repository", p.id.to_hex())
                })?;
                Ok((p.id, Self::pack_path(&self.packs[loc.pack as usize]), loc))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EntryReader::new(DetachedStream {
            backend: self.backend.clone(),
            pieces: pieces.into_iter(),
            current: std::io::Cursor::new(Vec::new()),
        }))
    }

    /// Every snapshot, oldest first (see [`Repo::snapshot_list`]).
    pub fn snapshots(&self) -> Result<Vec<Manifest>> {
        Ok(self
            .snapshot_list()?
            .into_iter()
            .map(|l| l.manifest)
            .collect())
    }

    /// Every snapshot, oldest first, with its commit time when the store
    /// records one. A local directory orders by the snapshots' own times
    /// (then ids); a server's repository in the server's order
    /// ([`backend::Backend::snapshot_order`]: by its own commit times, so
    /// that `latest` here is the server's `latest`, whatever date a host
    /// wrote in a snapshot). A snapshot the server did not list (committed
    /// meanwhile) comes after those it did, by its own time.
    pub fn snapshot_list(&self) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        for name in self.backend.list("snapshots/")? {
            if !name.ends_with(".xml") {
                continue;
            }
            let text = String::from_utf8(self.backend.get(&name)?)
                .with_context(|| format!("{name} is not UTF-8"))?;
            out.push(Listed {
                manifest: manifest::from_xml(&text)
                    .with_context(|| format!("snapshot {name} is not a valid manifest"))?,
                committed: None,
            });
        }
        // Asked after the files were read: every snapshot read is in it
        // unless it was committed between the two listings.
        let order = self.backend.snapshot_order()?.unwrap_or_default();
        let place: std::collections::HashMap<&str, (usize, &Option<String>)> = order
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id.as_str(), (i, &o.committed)))
            .collect();
        let rank = |l: &Listed| {
            place
                .get(l.manifest.snapshot.id.as_str())
                .map_or(usize::MAX, |(i, _)| *i)
        };
        out.sort_by(|a, b| {
            (rank(a), &a.manifest.snapshot.time, &a.manifest.snapshot.id).cmp(&(
                rank(b),
                &b.manifest.snapshot.time,
                &b.manifest.snapshot.id,
            ))
        });
        for l in &mut out {
            if let Some((_, c)) = place.get(l.manifest.snapshot.id.as_str()) {
                l.committed = (*c).clone();
            }
        }
        Ok(out)
    }

    /// Find a snapshot by id, unique id prefix, or `latest` (of `host` if given).
    pub fn find_snapshot(&self, spec: &str, host: Option<&str>) -> Result<Manifest> {
        let all: Vec<Manifest> = self
            .snapshots()?
            .into_iter()
            .filter(|m| host.is_none_or(|h| m.snapshot.host == h))
            .collect();
        if spec == "latest" {
            return all
                .into_iter()
                .last()
                .context("the repository holds no snapshot yet");
        }
        if let Some(m) = all.iter().find(|m| m.snapshot.id == spec) {
            return Ok(m.clone());
        }
        let matches: Vec<&Manifest> = all
            .iter()
            .filter(|m| m.snapshot.id.starts_with(spec))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => bail!(
                "no snapshot {spec:?} in {} (`rewind snapshots` lists them)",
                self.describe()
            ),
            many => bail!(
                "{spec:?} matches {} snapshots ({}...): give more of the id",
                many.len(),
                many[0].snapshot.id
            ),
        }
    }

    /// Make a snapshot visible. Everything it references must be flushed.
    pub fn commit_snapshot(&mut self, m: &Manifest) -> Result<()> {
        self.flush()?;
        let xml = manifest::to_xml(m)?;
        self.backend
            .put(&format!("snapshots/{}.xml", m.snapshot.id), xml.as_bytes())
    }

    pub fn snapshot_exists(&self, id: &str) -> Result<bool> {
        self.backend.exists(&format!("snapshots/{id}.xml"))
    }

    /// Every blob with where it is, each once (for `check` and `prune`).
    pub fn all_blobs(&self) -> impl Iterator<Item = (ChunkId, Location)> + '_ {
        self.index.iter()
    }

    pub fn pack_name(&self, pack: u32) -> &str {
        &self.packs[pack as usize]
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }
}

/// Read the blob `id` at `loc` in `pack`, decompress it and check it.
fn read_located(
    backend: &dyn Backend,
    id: &ChunkId,
    pack: &str,
    loc: &Location,
) -> Result<Vec<u8>> {
    let stored = backend
        .get_range(pack, loc.offset, loc.stored_len as usize)
        .with_context(|| format!("cannot read chunk {} from {pack}", id.to_hex()))?;
    unpack_located(id, pack, loc, &stored)
}

/// Decompress the stored bytes of blob `id` (at `loc` in `pack`) and check
/// them against its name: [`read_located`] after the read (a served
/// restore reads several adjacent blobs with one request, `prefetch`).
fn unpack_located(id: &ChunkId, pack: &str, loc: &Location, stored: &[u8]) -> Result<Vec<u8>> {
    let plain = decompress(stored, loc.plain_len as usize)
        .map_err(|e| anyhow::anyhow!("chunk {} in {pack} does not decompress: {e}", id.to_hex()))?;
    ensure!(
        plain.len() == loc.plain_len as usize && ChunkId::of(&plain) == *id,
        "chunk {} in {pack} is damaged (its content does not match its hash)",
        id.to_hex()
    );
    Ok(plain)
}

/// zstd-decompress a blob of at most `capacity` plain bytes, with this
/// thread's decompression context: `zstd::bulk::decompress` makes a new
/// one per call (`ZSTD_createDCtx`, 5% of a small-file restore's samples).
fn decompress(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    DCTX.with(|cell| {
        let mut cell = cell.borrow_mut();
        let dctx = match cell.as_mut() {
            Some(d) => d,
            None => cell.insert(zstd::bulk::Decompressor::new()?),
        };
        dctx.decompress(stored, capacity)
    })
}

/// A tree's blobs as one `Read`, located up front ([`Repo::tree_entries_detached`]).
pub struct DetachedStream {
    backend: Arc<dyn Backend>,
    pieces: std::vec::IntoIter<(ChunkId, String, Location)>,
    current: std::io::Cursor<Vec<u8>>,
}

impl Read for DetachedStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some((id, pack, loc)) = self.pieces.next() else {
                return Ok(0);
            };
            let data =
                read_located(&*self.backend, &id, &pack, &loc).map_err(std::io::Error::other)?;
            self.current = std::io::Cursor::new(data);
        }
    }
}

/// A tree stream stored as it is written, so that a tree of a million
/// entries is never held whole: the stream is cut where [`Repo::add_tree`]
/// would cut it whole (a cut never looks more than [`chunker::MAX`] bytes
/// ahead), so unchanged parts still deduplicate against earlier trees.
#[derive(Default)]
pub struct TreeWriter {
    buf: Vec<u8>,
    refs: Vec<ChunkRef>,
}

impl TreeWriter {
    pub fn new() -> TreeWriter {
        TreeWriter::default()
    }

    /// Append one entry.
    pub fn write_entry(&mut self, repo: &mut Repo, entry: &crate::tree::Entry) -> Result<()> {
        crate::tree::encode_entry(&mut self.buf, entry);
        self.cut_full(repo)
    }

    /// Append encoded entries.
    pub fn write_bytes(&mut self, repo: &mut Repo, bytes: &[u8]) -> Result<()> {
        for part in bytes.chunks(chunker::MAX) {
            self.buf.extend_from_slice(part);
            self.cut_full(repo)?;
        }
        Ok(())
    }

    /// Store the chunks whose cut is known: while a whole window is buffered.
    fn cut_full(&mut self, repo: &mut Repo) -> Result<()> {
        let mut start = 0;
        while self.buf.len() - start >= chunker::MAX {
            start += self.store_one(repo, start)?;
        }
        self.buf.drain(..start);
        Ok(())
    }

    /// Store the chunk starting at `start`; returns its length.
    fn store_one(&mut self, repo: &mut Repo, start: usize) -> Result<usize> {
        let end = self.buf.len().min(start + chunker::MAX);
        let len = chunker::cut(&self.buf[start..end]);
        let piece = &self.buf[start..start + len];
        let id = repo.add_blob(BlobKind::Tree, piece)?;
        self.refs.push(ChunkRef {
            id,
            len: len as u32,
        });
        Ok(len)
    }

    /// Store the rest and the list of chunks, whose id names the tree.
    pub fn finish(mut self, repo: &mut Repo) -> Result<ChunkId> {
        let mut start = 0;
        while start < self.buf.len() {
            start += self.store_one(repo, start)?;
        }
        let list = bincode::serde::encode_to_vec(&self.refs, bincode::config::standard())?;
        repo.add_blob(BlobKind::TreeList, &list)
    }
}

/// Concatenated blobs as one `Read`.
struct BlobStream<'a, I> {
    repo: &'a Repo,
    pieces: I,
    current: std::io::Cursor<Vec<u8>>,
}

impl<I: Iterator<Item = ChunkRef>> Read for BlobStream<'_, I> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(piece) = self.pieces.next() else {
                return Ok(0);
            };
            let data = self
                .repo
                .read_blob(&piece.id)
                .map_err(std::io::Error::other)?;
            self.current = std::io::Cursor::new(data);
        }
    }
}

/// Restore's view of the repository.
impl crate::restore::ChunkSource for Repo {
    fn fetch(&self, chunk: &ChunkRef) -> Result<Vec<u8>> {
        self.fetch_verified(chunk)
    }
}

impl Repo {
    /// A file chunk, verified against its hash and its expected length.
    pub fn fetch_verified(&self, chunk: &ChunkRef) -> Result<Vec<u8>> {
        let data = self.read_blob(&chunk.id)?;
        ensure!(
            data.len() == chunk.len as usize,
            "chunk {} has the wrong length",
            chunk.id.to_hex()
        );
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree written piece by piece is cut, and named, as the whole stream
    /// was before trees were streamed: unchanged trees keep deduplicating.
    #[test]
    fn a_streamed_tree_is_cut_as_the_whole_stream() {
        let mut stream = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        while stream.len() < 13 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            stream.push(x as u8);
        }
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repo::init(dir.path()).unwrap();
        // The cuts of the whole stream, as add_tree made them before.
        let mut refs = Vec::new();
        for piece in chunker::chunks_of(&stream) {
            let id = repo.add_blob(BlobKind::Tree, piece).unwrap();
            refs.push(ChunkRef {
                id,
                len: piece.len() as u32,
            });
        }
        assert!(refs.len() > 5, "{} chunks", refs.len());
        let list = bincode::serde::encode_to_vec(&refs, bincode::config::standard()).unwrap();
        let whole = ChunkId::of(&list);
        assert_eq!(repo.add_tree(&stream).unwrap(), whole);
        // Fed in uneven pieces.
        let mut tree = TreeWriter::new();
        let mut rest = &stream[..];
        let mut n = 1;
        while !rest.is_empty() {
            let take = rest.len().min(n * 7919 % (3 << 20) + 1);
            tree.write_bytes(&mut repo, &rest[..take]).unwrap();
            rest = &rest[take..];
            n += 1;
        }
        assert_eq!(tree.finish(&mut repo).unwrap(), whole);
        // Nothing new was stored: every piece deduplicated.
        assert_eq!(repo.stats.blobs_new as usize, refs.len() + 1);
        // Read back detached, the stream is whole.
        repo.flush().unwrap();
        let pieces = repo.tree_pieces(&whole).unwrap();
        assert_eq!(pieces, refs);
    }
}
