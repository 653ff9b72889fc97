//! Compression and pack writing on a background thread, so that reading,
//! chunking and hashing (the caller's thread) overlap with zstd, which runs
//! on every core.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
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

/// Packs written since the last flush, and what they hold.
#[derive(Default)]
pub(super) struct Written {
    pub packs: Vec<(String, Vec<PackEntry>)>,
    pub bytes_stored: u64,
}

enum Msg {
    Batch(Vec<Blob>),
    Flush(SyncSender<Result<Written>>),
}

pub(super) struct Packer {
    batch: Vec<Blob>,
    batch_bytes: usize,
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

impl Packer {
    pub(super) fn new(backend: Arc<dyn Backend>, pack_target: usize, level: i32) -> Packer {
        // Two batches in flight: enough to keep zstd busy, bounded memory.
        let (tx, rx) = sync_channel(2);
        let thread = std::thread::Builder::new()
            .name("rewind-packer".into())
            .spawn(move || run(rx, backend, pack_target, level))
            .expect("cannot start the packer thread");
        Packer {
            batch: Vec::new(),
            batch_bytes: 0,
            tx: Some(tx),
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

    /// Compress and write everything added so far; returns the packs written.
    pub(super) fn flush(&mut self) -> Result<Written> {
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

fn run(rx: Receiver<Msg>, backend: Arc<dyn Backend>, pack_target: usize, level: i32) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pack = PackBuilder::new();
    let mut written = Written::default();
    // The first error is kept and reported at the next flush.
    let mut failed: Option<anyhow::Error> = None;
    for msg in rx {
        match msg {
            Msg::Batch(batch) if failed.is_none() => {
                let result = compress_all(&batch, threads, level).and_then(|stored| {
                    for (blob, s) in batch.iter().zip(&stored) {
                        pack.add(blob.id, blob.kind, blob.data.len() as u32, s);
                        written.bytes_stored += s.len() as u64;
                        if pack.len() >= pack_target {
                            write_pack(&*backend, std::mem::take(&mut pack), &mut written)?;
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
                    None => write_pack(&*backend, std::mem::take(&mut pack), &mut written)
                        .map(|()| std::mem::take(&mut written)),
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

fn write_pack(backend: &dyn Backend, pack: PackBuilder, written: &mut Written) -> Result<()> {
    if pack.is_empty() {
        return Ok(());
    }
    let (name, bytes, index, entries) = pack.finish();
    backend.put(&super::Repo::pack_path(&name), &bytes)?;
    backend.put(&format!("index/{name}.idx"), &index)?;
    written.packs.push((name, entries));
    Ok(())
}
