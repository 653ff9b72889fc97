//! Restore with read-ahead: a feeder thread reads the tree and queues each
//! entry's chunks; fetcher threads (one per core) read, decompress and
//! verify them; the restore engine's writer threads write files while the
//! next chunks are being prepared. A bounded window keeps memory flat.
//!
//! Entries are numbered from 1 in stream order, here and in the restore
//! engine; a ready chunk is kept until the last entry that needs it takes
//! it, or until every entry up to that one is finished (the engine reports
//! each, [`ChunkSource::finished`], from whichever thread finished it): with
//! several writers, the entries being written are a range, not one, and
//! they finish out of order.
//!
//! Through a server each read is a request, so a fetcher takes a run of
//! queued chunks that lie next to each other in one pack (the feeder queues
//! them in tree order, which is the order a capture wrote them) and reads
//! the run with one ranged GET, then checks each chunk of it by its own id.

use std::collections::{BTreeSet, VecDeque};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, Result, anyhow};

use super::{Location, Repo};
use crate::progress::Progress;
use crate::restore::{ChunkSource, RestoreOptions, RestoreStats, Resume};
use crate::tree::{ChunkId, ChunkMap, ChunkRef, Entry};

/// Plain bytes prepared ahead of the writer at most.
const WINDOW: u64 = 64 << 20;
/// Stored bytes one read may cover when adjacent chunks are read together:
/// with eight reads in flight, half the window is on its way.
const RUN_BYTES: u64 = 4 << 20;

/// [`RUN_BYTES`], or `REWIND_RESTORE_RUN_BYTES` (a benchmark's knob; 0
/// reads every chunk alone, as before runs).
fn run_bytes() -> u64 {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RUN.get_or_init(|| {
        std::env::var("REWIND_RESTORE_RUN_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(RUN_BYTES)
    })
}

type Fetched = Result<Arc<Vec<u8>>, String>;

#[derive(Default)]
struct State {
    /// Chunks to fetch, in tree order (the last entry that needs each is in
    /// `pending`), with where they are stored when reads are coalesced.
    queue: VecDeque<(ChunkRef, Option<Location>)>,
    /// Queued or being fetched.
    pending: ChunkMap<u64>,
    ready: ChunkMap<(u64, Fetched)>,
    /// The ready chunks by the last entry that needs them, to release
    /// those of finished entries without a pass over all of `ready` (that
    /// pass, once per entry, was 8% of a restore's instructions).
    by_last: BTreeSet<(u64, ChunkId)>,
    /// Plain bytes queued, being fetched or ready.
    window: u64,
    /// Every entry before this one is finished; their chunks are dropped.
    current: u64,
    /// Entries after `current` already finished (writers finish out of
    /// order).
    finished: BTreeSet<u64>,
    /// Every chunk of the entries up to this one has been queued.
    queued_through: u64,
    feeding_done: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The writers wait here, for a chunk ready (or queued, or the end).
    changed: Condvar,
    /// The feeder waits here, for room in the window: with the writers on
    /// `changed`, every ready chunk woke the feeder and every release of
    /// room woke every writer, for nothing.
    room: Condvar,
    /// The fetchers wait here, for a queued chunk (or the end): with one
    /// condition for all, every ready chunk and every release woke every
    /// fetcher (eight with a server), and half of a served restore's
    /// samples were the scheduler's.
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Restore `entries` from `repo` with read-ahead; see [`crate::restore::restore`].
pub fn restore(
    repo: &Repo,
    entries: impl Iterator<Item = Result<Entry>> + Send,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    restore_with_progress(repo, entries, opts, &Progress::quiet())
}

/// [`restore`], counting the bytes handed to the writer in `progress`.
pub fn restore_with_progress(
    repo: &Repo,
    entries: impl Iterator<Item = Result<Entry>> + Send,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreStats> {
    restore_resuming(repo, entries, opts, progress, None)
}

/// [`restore_with_progress`] resuming an interrupted restore: the files
/// `resume` records are not read ahead (the engine still verifies each
/// on disk, and reads the chunks of one that does not verify).
pub fn restore_resuming(
    repo: &Repo,
    entries: impl Iterator<Item = Result<Entry>> + Send,
    opts: &RestoreOptions,
    progress: &Progress,
    resume: Option<&dyn Resume>,
) -> Result<RestoreStats> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            current: 1,
            ..State::default()
        }),
        changed: Condvar::new(),
        room: Condvar::new(),
        work: Condvar::new(),
    });
    let fetchers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(2)
        .max(repo.backend.read_parallelism());
    let (tx, rx) = sync_channel::<(u64, Result<Entry>)>(1024);
    std::thread::scope(|s| {
        let feeder = {
            let shared = shared.clone();
            s.spawn(move || feed(repo, entries, &shared, tx, resume))
        };
        for _ in 0..fetchers {
            let shared = shared.clone();
            s.spawn(move || fetch_loop(repo, &shared));
        }
        let source = Prefetched {
            repo,
            shared: &shared,
            progress,
        };
        // The feeder numbers entries as the engine does (from 1, in
        // order); the numbers need not travel with them.
        let ordered = rx.into_iter().map(|(_, entry)| entry);
        let result = crate::restore::restore_resuming(ordered, &source, opts, resume);
        {
            let mut st = shared.lock();
            st.stop = true;
            shared.changed.notify_all();
            shared.room.notify_all();
            shared.work.notify_all();
        }
        let _ = feeder.join();
        result
    })
}

/// Whether fetchers read runs of adjacent chunks with one read: for a
/// backend that wants reads in flight (a server, where each read is a
/// request); a local pack is read chunk by chunk, as before.
fn coalesces(repo: &Repo) -> bool {
    repo.backend.read_parallelism() > 1 && run_bytes() > 0
}

fn feed(
    repo: &Repo,
    entries: impl Iterator<Item = Result<Entry>>,
    shared: &Shared,
    tx: std::sync::mpsc::SyncSender<(u64, Result<Entry>)>,
    resume: Option<&dyn Resume>,
) {
    let coalesce = coalesces(repo);
    for (seq, entry) in (1u64..).zip(entries) {
        // The entry goes to the writer first: a file bigger than the window
        // can only be read ahead while the writer consumes its first chunks.
        let chunks = match &entry {
            Ok(e) if resume.is_some_and(|r| r.recorded(e)) => Vec::new(),
            Ok(e) => e.chunks.clone(),
            Err(_) => Vec::new(),
        };
        if tx.send((seq, entry)).is_err() {
            break; // the restore stopped
        }
        for c in &chunks {
            // Looked up outside the lock: the fetchers wait on it.
            let loc = if coalesce { repo.location(&c.id) } else { None };
            let mut st = shared.lock();
            if let Some(last) = st.pending.get_mut(&c.id) {
                *last = seq;
                continue;
            }
            if let Some((last, _)) = st.ready.get_mut(&c.id) {
                let before = std::mem::replace(last, seq);
                st.by_last.remove(&(before, c.id));
                st.by_last.insert((seq, c.id));
                continue;
            }
            while st.window + u64::from(c.len) > WINDOW && st.window > 0 && !st.stop {
                st = shared.room.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stop {
                return;
            }
            st.window += u64::from(c.len);
            st.pending.insert(c.id, seq);
            st.queue.push_back((*c, loc));
            shared.work.notify_one();
        }
        let mut st = shared.lock();
        st.queued_through = seq;
        shared.changed.notify_all();
    }
    let mut st = shared.lock();
    st.feeding_done = true;
    shared.changed.notify_all();
    shared.work.notify_all();
}

fn fetch_loop(repo: &Repo, shared: &Shared) {
    loop {
        let run = {
            let mut st = shared.lock();
            loop {
                if st.stop {
                    return;
                }
                if let Some(first) = st.queue.pop_front() {
                    let mut run = vec![first];
                    while let Some(next) = st.queue.front()
                        && follows(&run, next)
                    {
                        run.extend(st.queue.pop_front());
                    }
                    break run;
                }
                if st.feeding_done {
                    return;
                }
                st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        if let [(chunk, _)] = run[..] {
            let data = repo.fetch_verified(&chunk);
            ready(shared, &chunk, data);
            continue;
        }
        match read_run(repo, &run) {
            Ok(stored) => {
                let start = run[0].1.map_or(0, |l| l.offset);
                for (chunk, loc) in &run {
                    let data = loc
                        .context("not located")
                        .and_then(|loc| unpack_run_chunk(repo, chunk, &loc, &stored, start));
                    ready(shared, chunk, data);
                }
            }
            // The run could not be read as one (a short answer, a server
            // error): each chunk alone, so that each failure names its chunk.
            Err(run_error) => {
                for (chunk, _) in &run {
                    let data = repo.fetch_verified(chunk).with_context(|| {
                        format!("read alone after the read of its run failed ({run_error:#})")
                    });
                    ready(shared, chunk, data);
                }
            }
        }
    }
}

/// Whether queued chunk `next` is stored right after the last chunk of
/// `run`, in the same pack, and the run stays under [`run_bytes`].
fn follows(run: &[(ChunkRef, Option<Location>)], next: &(ChunkRef, Option<Location>)) -> bool {
    let (Some(first), Some(last), Some(loc)) = (run[0].1, run[run.len() - 1].1, next.1) else {
        return false;
    };
    let end = last.offset + u64::from(last.stored_len);
    loc.pack == last.pack
        && loc.offset == end
        && end + u64::from(loc.stored_len) - first.offset <= run_bytes()
}

/// The stored bytes of a run of adjacent chunks, with one read.
fn read_run(repo: &Repo, run: &[(ChunkRef, Option<Location>)]) -> Result<Vec<u8>> {
    let (Some(first), Some(last)) = (run[0].1, run[run.len() - 1].1) else {
        anyhow::bail!("a run of chunks not located");
    };
    let len = last.offset + u64::from(last.stored_len) - first.offset;
    let pack = Repo::pack_path(&repo.packs[first.pack as usize]);
    repo.backend.get_range(&pack, first.offset, len as usize)
}

/// One chunk of a run read by [`read_run`] (starting at byte `start` of
/// its pack), decompressed and checked against its id as
/// [`Repo::fetch_verified`] checks it.
fn unpack_run_chunk(
    repo: &Repo,
    chunk: &ChunkRef,
    loc: &Location,
    stored: &[u8],
    start: u64,
) -> Result<Vec<u8>> {
    let pack = Repo::pack_path(&repo.packs[loc.pack as usize]);
    let from = (loc.offset - start) as usize;
    let bytes = stored
        .get(from..from + loc.stored_len as usize)
        .with_context(|| format!("{pack} ends before chunk {}", chunk.id.to_hex()))?;
    let data = super::unpack_located(&chunk.id, &pack, loc, bytes)?;
    anyhow::ensure!(
        data.len() == chunk.len as usize,
        "chunk {} has the wrong length",
        chunk.id.to_hex()
    );
    Ok(data)
}

/// A fetched chunk (or why it could not be had) becomes ready for the
/// entries that need it.
fn ready(shared: &Shared, chunk: &ChunkRef, data: Result<Vec<u8>>) {
    let data = data.map(Arc::new).map_err(|e| format!("{e:#}"));
    let mut st = shared.lock();
    let last = st.pending.remove(&chunk.id).unwrap_or(0);
    if last < st.current {
        // Nobody will ask for it any more.
        st.window -= u64::from(chunk.len);
        shared.room.notify_one();
    } else {
        st.ready.insert(chunk.id, (last, data));
        st.by_last.insert((last, chunk.id));
        shared.changed.notify_all();
    }
}

struct Prefetched<'a> {
    repo: &'a Repo,
    shared: &'a Shared,
    progress: &'a Progress,
}

impl ChunkSource for Prefetched<'_> {
    fn fetch(&self, chunk: &ChunkRef) -> Result<Vec<u8>> {
        let data = self.repo.fetch_verified(chunk)?;
        self.progress.add(data.len() as u64, false);
        Ok(data)
    }

    fn fetch_for(&self, seq: u64, chunk: &ChunkRef) -> Result<Vec<u8>> {
        let data = self.fetch_ahead(seq, chunk)?;
        self.progress.add(data.len() as u64, false);
        Ok(data)
    }

    fn finished(&self, seq: u64) {
        let mut st = self.shared.lock();
        if seq < st.current {
            return;
        }
        st.finished.insert(seq);
        let before = st.current;
        loop {
            let at = st.current;
            if !st.finished.remove(&at) {
                break;
            }
            st.current += 1;
        }
        if st.current == before {
            return;
        }
        let seq = st.current;
        // Whatever earlier entries did not use (refused entries, a subset
        // restore, a file that failed) is released here.
        let mut freed = 0;
        while let Some(&(last, id)) = st.by_last.first()
            && last < seq
        {
            st.by_last.pop_first();
            if let Some((_, data)) = st.ready.remove(&id) {
                freed += data.as_ref().map_or(0, |d| d.len() as u64);
            }
        }
        if freed > 0 {
            st.window -= freed;
            self.shared.room.notify_one();
        }
    }
}

impl Prefetched<'_> {
    /// Chunk `chunk` for entry `seq`.
    fn fetch_ahead(&self, seq: u64, chunk: &ChunkRef) -> Result<Vec<u8>> {
        let mut st = self.shared.lock();
        loop {
            if let Some((last, data)) = st.ready.get(&chunk.id) {
                let data = data.clone();
                if *last <= seq {
                    // No later entry needs it: hand it over.
                    let last = *last;
                    st.by_last.remove(&(last, chunk.id));
                    st.ready.remove(&chunk.id);
                    st.window -= u64::from(chunk.len);
                    self.shared.room.notify_one();
                }
                drop(st);
                return match data {
                    Ok(d) => Ok(Arc::try_unwrap(d).unwrap_or_else(|d| (*d).clone())),
                    Err(e) => Err(anyhow!(e)),
                };
            }
            let queued = st.queued_through >= seq || st.feeding_done;
            if !st.pending.contains_key(&chunk.id) && queued {
                // Not read ahead (a hard link's content restored from an
                // earlier entry, a chunk a parallel writer took first): read
                // it now.
                drop(st);
                return self.repo.fetch_verified(chunk);
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::BlobKind;
    use crate::tree::{Extent, Kind, Time};

    /// A file bigger than the read-ahead window, and the same chunks used
    /// again by a second file: neither may stall the restore.
    #[test]
    fn files_bigger_than_the_window_restore() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repo::init(&dir.path().join("repo")).unwrap();
        let mut chunks = Vec::new();
        let mut expected = Vec::new();
        for i in 0..80u32 {
            let data: Vec<u8> = (0..1u32 << 20)
                .map(|j| (j.wrapping_mul(i + 7) >> 3) as u8)
                .collect();
            let id = repo.add_blob(BlobKind::Data, &data).unwrap();
            chunks.push(ChunkRef {
                id,
                len: data.len() as u32,
            });
            expected.extend_from_slice(&data);
        }
        repo.flush().unwrap();
        let size = expected.len() as u64;
        let file = |name: &str| Entry {
            chunks: chunks.clone(),
            ..test_file(name, size)
        };
        let mut root = file("");
        root.kind = Kind::Dir;
        root.mode = 0o755;
        root.size = 0;
        root.extents.clear();
        root.chunks.clear();
        let entries = vec![root, file("a"), file("b")];
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        let opts = RestoreOptions {
            target: target.clone(),
            only: Vec::new(),
        };
        let progress = Progress::quiet();
        let stats =
            restore_with_progress(&repo, entries.into_iter().map(Ok), &opts, &progress).unwrap();
        assert_eq!(stats.files, 2);
        assert_eq!(progress.bytes(), 2 * size);
        assert!(std::fs::read(target.join("a")).unwrap() == expected);
        assert!(std::fs::read(target.join("b")).unwrap() == expected);
    }

    /// A subset restore with several writers: the chunks of the files left
    /// out (more than the window) are released as entries finish, while
    /// the engine may be waiting, so the restore neither stalls nor holds
    /// them; the selected files are exact.
    #[test]
    fn subset_restore_with_writers_releases_unused_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repo::init(&dir.path().join("repo")).unwrap();
        let file = |name: &str| Entry {
            path: name.as_bytes().to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            ino: 1,
            size: 0,
            rdev: 0,
            link_target: Vec::new(),
            hardlink_to: None,
            xattrs: Vec::new(),
            extents: Vec::new(),
            chunks: Vec::new(),
        };
        let mut root = file("");
        root.kind = Kind::Dir;
        root.mode = 0o755;
        let mut entries = vec![root];
        let mut contents = Vec::new();
        for i in 0..40u32 {
            let data: Vec<u8> = (0..(2u32 << 20) + i)
                .map(|j| (j.wrapping_mul(2 * i + 3) >> 5) as u8 ^ i as u8)
                .collect();
            let id = repo.add_blob(BlobKind::Data, &data).unwrap();
            let mut e = file(&format!("f{i}"));
            e.size = data.len() as u64;
            e.extents = vec![Extent {
                offset: 0,
                len: e.size,
            }];
            e.chunks = vec![ChunkRef {
                id,
                len: data.len() as u32,
            }];
            entries.push(e);
            contents.push(data);
        }
        repo.flush().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        let opts = RestoreOptions {
            target: target.clone(),
            only: vec![b"f38".to_vec(), b"f39".to_vec()],
        };
        let stats = restore(&repo, entries.into_iter().map(Ok), &opts).unwrap();
        assert_eq!(stats.files, 2);
        assert!(std::fs::read(target.join("f38")).unwrap() == contents[38]);
        assert!(std::fs::read(target.join("f39")).unwrap() == contents[39]);
        assert!(!target.join("f0").exists());
    }

    /// A local directory that counts its ranged reads and, like a server,
    /// asks for reads in flight: the fetchers then read runs of adjacent
    /// chunks with one read each.
    struct Counting {
        dir: crate::repo::backend::LocalDir,
        ranges: std::sync::atomic::AtomicUsize,
    }

    impl crate::repo::backend::Backend for Counting {
        fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
            self.dir.put(name, bytes)
        }
        fn get(&self, name: &str) -> Result<Vec<u8>> {
            self.dir.get(name)
        }
        fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            self.ranges
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.dir.get_range(name, offset, len)
        }
        fn list(&self, prefix: &str) -> Result<Vec<String>> {
            self.dir.list(prefix)
        }
        fn exists(&self, name: &str) -> Result<bool> {
            self.dir.exists(name)
        }
        fn remove(&self, name: &str) -> Result<()> {
            self.dir.remove(name)
        }
        fn describe(&self) -> String {
            "counting".into()
        }
        fn read_parallelism(&self) -> usize {
            8
        }
    }

    /// Adjacent chunks of a pack are read together (far fewer reads than
    /// chunks, none over [`RUN_BYTES`] plus one chunk), and every file is
    /// exact.
    #[test]
    fn adjacent_chunks_are_read_with_one_read_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let mut repo = Repo::init(&root).unwrap();
        let mut entries = Vec::new();
        let mut contents = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunks = 0;
        for f in 0..6u32 {
            let mut refs = Vec::new();
            let mut data = Vec::new();
            for c in 0..8u32 {
                // 40 KiB to 600 KiB of incompressible bytes.
                let len = 40_000 + ((f * 8 + c) * 77_777) % 560_000;
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
                data.extend_from_slice(&piece);
                chunks += 1;
            }
            let mut e = test_file(&format!("f{f}"), data.len() as u64);
            e.chunks = refs;
            entries.push(e);
            contents.push(data);
        }
        repo.flush().unwrap();
        drop(repo);
        let backend = Arc::new(Counting {
            dir: crate::repo::backend::LocalDir::new(&root),
            ranges: Default::default(),
        });
        let repo = Repo::open_backend(backend.clone()).unwrap();
        let mut root_entry = test_file("", 0);
        root_entry.kind = Kind::Dir;
        root_entry.mode = 0o755;
        root_entry.extents.clear();
        entries.insert(0, root_entry);
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        let opts = RestoreOptions {
            target: target.clone(),
            only: Vec::new(),
        };
        let before = backend.ranges.load(std::sync::atomic::Ordering::Relaxed);
        let stats = restore(&repo, entries.into_iter().map(Ok), &opts).unwrap();
        let reads = backend.ranges.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert_eq!(stats.files, 6);
        for (f, data) in contents.iter().enumerate() {
            assert!(std::fs::read(target.join(format!("f{f}"))).unwrap() == *data);
        }
        // 48 chunks, ~14 MiB: a few runs of up to 4 MiB (how many depends on
        // how far ahead the feeder is when a fetcher takes one).
        assert!(reads < chunks / 2, "{reads} reads for {chunks} chunks");
    }

    fn test_file(name: &str, size: u64) -> Entry {
        Entry {
            path: name.as_bytes().to_vec(),
            kind: Kind::File,
            mode: 0o644,
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
            extents: vec![Extent {
                offset: 0,
                len: size,
            }],
            chunks: Vec::new(),
        }
    }
}
