//! Compression and pack writing on a background thread, so that reading,
//! chunking and hashing (the caller's thread) overlap with zstd, which runs
//! on every core.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};

use super::backend::Backend;
use super::pack::{BlobKind, PackBuilder, PackEntry};
use crate::tree::ChunkId;

/// Blobs are handed over in batches of about this many plain bytes.
const BATCH_BYTES: usize = 4 << 20;

pub(super) struct Blob {
    pub id: ChunkId,
    pub kind: BlobKind,
    pub data: Vec<u8>,
}

/// A pack written, and what it holds: announced as soon as it is on disk,
/// so that the caller indexes it then rather than holding the ids of every
/// new blob until the flush.
pub(super) type WrittenPack = (String, Vec<PackEntry>);

enum Msg {
    Batch(Vec<Blob>),
    /// Answered with the stored bytes written since the last flush.
    Flush(SyncSender<Result<u64>>),
}

pub(super) struct Packer {
    batch: Vec<Blob>,
    batch_bytes: usize,
    tx: Option<SyncSender<Msg>>,
    /// In a mutex only so that `Repo` stays `Sync` (restore shares it).
    written: std::sync::Mutex<Receiver<WrittenPack>>,
    thread: Option<JoinHandle<()>>,
}

impl Packer {
    pub(super) fn new(backend: Arc<dyn Backend>, pack_target: usize, level: i32) -> Packer {
        // Two batches in flight: enough to keep zstd busy, bounded memory.
        let (tx, rx) = sync_channel(2);
        // Unbounded, but drained at every blob added: a pack or two.
        let (written_tx, written) = channel();
        let thread = std::thread::Builder::new()
            .name("rewind-packer".into())
            .spawn(move || run(rx, written_tx, backend, pack_target, level))
            .expect("cannot start the packer thread");
        Packer {
            batch: Vec::new(),
            batch_bytes: 0,
            tx: Some(tx),
            written: std::sync::Mutex::new(written),
            thread: Some(thread),
        }
    }

    pub(super) fn add(&mut self, blob: Blob) -> Result<()> {
        self.batch_bytes += blob.data.len();
        self.batch.push(blob);
        if self.batch_bytes >= BATCH_BYTES {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.tx().send(Msg::Batch(batch)).map_err(|_| self.dead())
    }

    /// A pack written since the last call, if any.
    pub(super) fn try_written(&self) -> Option<WrittenPack> {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.try_recv().ok()
    }

    /// Compress and write everything added so far; returns the stored
    /// bytes written since the last flush. Every pack written is announced
    /// ([`Packer::try_written`]) before this returns.
    pub(super) fn flush(&mut self) -> Result<u64> {
        self.send_batch()?;
        let (reply_tx, reply_rx) = sync_channel(1);
        self.tx()
            .send(Msg::Flush(reply_tx))
            .map_err(|_| self.dead())?;
        reply_rx.recv().map_err(|_| self.dead())?
    }

    fn tx(&self) -> &SyncSender<Msg> {
        self.tx.as_ref().expect("packer used after shutdown")
    }

    fn dead(&self) -> anyhow::Error {
        anyhow!("the pack writer stopped unexpectedly")
    }
}

impl Drop for Packer {
    fn drop(&mut self) {
        // Unflushed blobs are dropped: nothing references them yet.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    rx: Receiver<Msg>,
    written: Sender<WrittenPack>,
    backend: Arc<dyn Backend>,
    pack_target: usize,
    level: i32,
) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pack = PackBuilder::new();
    let mut bytes_stored = 0u64;
    // The first error is kept and reported at the next flush.
    let mut failed: Option<anyhow::Error> = None;
    for msg in rx {
        match msg {
            Msg::Batch(batch) if failed.is_none() => {
                let result = compress_all(&batch, threads, level).and_then(|stored| {
                    for (blob, s) in batch.iter().zip(&stored) {
                        pack.add(blob.id, blob.kind, blob.data.len() as u32, s);
                        bytes_stored += s.len() as u64;
                        if pack.len() >= pack_target {
                            write_pack(&*backend, std::mem::take(&mut pack), &written)?;
                        }
                    }
                    Ok(())
                });
                failed = result.err();
            }
            Msg::Batch(_) => {}
            Msg::Flush(reply) => {
                let result = match failed.take() {
                    Some(e) => Err(e),
                    None => write_pack(&*backend, std::mem::take(&mut pack), &written)
                        .map(|()| std::mem::take(&mut bytes_stored)),
                };
                let _ = reply.send(result);
            }
        }
    }
}

/// Compress a batch on `threads` threads, keeping the order.
fn compress_all(batch: &[Blob], threads: usize, level: i32) -> Result<Vec<Vec<u8>>> {
    let per_thread = batch.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = batch
            .chunks(per_thread)
            .map(|part| {
                s.spawn(move || -> Result<Vec<Vec<u8>>> {
                    let mut z = zstd::bulk::Compressor::new(level)?;
                    part.iter()
                        .map(|b| z.compress(&b.data).context("zstd compression failed"))
                        .collect()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for w in workers {
            out.extend(
                w.join()
                    .map_err(|_| anyhow!("a compression thread panicked"))??,
            );
        }
        Ok(out)
    })
}

fn write_pack(
    backend: &dyn Backend,
    pack: PackBuilder,
    written: &Sender<WrittenPack>,
) -> Result<()> {
    if pack.is_empty() {
        return Ok(());
    }
    let (name, bytes, index, entries) = pack.finish();
    backend.put(&super::Repo::pack_path(&name), &bytes)?;
    backend.put(&format!("index/{name}.idx"), &index)?;
    // The receiver is gone only when the packer is being dropped.
    let _ = written.send((name, entries));
    Ok(())
}
