//! Content-defined chunking (FastCDC): an insertion early in a file moves
//! only the chunks around it, so the rest deduplicates.

use std::io::Read;

use anyhow::{Context, Result};

/// ~1 MiB average: big enough that per-chunk costs vanish on restore, small
/// enough that an edit re-stores little.
pub const MIN: usize = 256 << 10;
pub const AVG: usize = 1 << 20;
pub const MAX: usize = 4 << 20;

/// Cut an in-memory buffer (a tree stream).
pub fn chunks_of(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    fastcdc::v2020::FastCDC::new(data, MIN, AVG, MAX)
        .map(move |c| &data[c.offset..c.offset + c.length])
}

/// The length of the chunk at the start of `data` (at most [`MAX`] bytes
/// of it are looked at): the cut [`chunks_of`] makes there.
pub fn cut(data: &[u8]) -> usize {
    let (mask_s, mask_l) = fastcdc::v2020::select_masks(AVG, fastcdc::v2020::Normalization::Level1);
    let data = &data[..data.len().min(MAX)];
    let (_, cut) = fastcdc::v2020::cut(
        data,
        MIN,
        AVG,
        MAX,
        mask_s,
        mask_l,
        mask_s << 1,
        mask_l << 1,
    );
    cut
}

/// Cuts streams with one reused window buffer: FastCDC's own stream reader
/// allocates and zeroes a 4 MiB buffer per stream, which dominates the cost
/// of backing up many small files.
pub struct StreamChunker {
    window: Vec<u8>,
    masks: (u64, u64),
}

impl Default for StreamChunker {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamChunker {
    pub fn new() -> Self {
        StreamChunker {
            window: Vec::new(),
            masks: fastcdc::v2020::select_masks(AVG, fastcdc::v2020::Normalization::Level1),
        }
    }

    /// Cut `reader`'s bytes, calling `on_chunk` for each piece in order. The
    /// cut points are FastCDC's: a cut never looks further than MAX bytes.
    pub fn chunk<R: Read>(
        &mut self,
        mut reader: R,
        mut on_chunk: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        if self.window.len() < MAX {
            self.window.resize(MAX, 0);
        }
        let (mask_s, mask_l) = self.masks;
        let mut filled = 0;
        let mut eof = false;
        loop {
            while filled < MAX && !eof {
                match reader.read(&mut self.window[filled..MAX]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("cannot read the file's content"),
                }
            }
            if filled == 0 {
                return Ok(());
            }
            let (_, cut) = fastcdc::v2020::cut(
                &self.window[..filled],
                MIN,
                AVG,
                MAX,
                mask_s,
                mask_l,
                mask_s << 1,
                mask_l << 1,
            );
            on_chunk(&self.window[..cut])?;
            self.window.copy_within(cut..filled, 0);
            filled -= cut;
        }
    }
}

/// Cut a stream once (tests and one-offs; captures reuse a [`StreamChunker`]).
pub fn for_each_chunk<R: Read>(reader: R, on_chunk: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    StreamChunker::new().chunk(reader, on_chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insertion_moves_few_chunks() {
        let mut data = vec![0u8; 8 << 20];
        let mut x = 0x12345678u32;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let before: Vec<_> = chunks_of(&data).map(crate::tree::ChunkId::of).collect();
        let mut edited = data.clone();
        edited.splice(100..100, b"inserted".iter().copied());
        let after: Vec<_> = chunks_of(&edited).map(crate::tree::ChunkId::of).collect();
        let shared = after.iter().filter(|c| before.contains(c)).count();
        assert!(before.len() >= 4, "{} chunks", before.len());
        assert!(
            shared >= before.len() - 2,
            "{shared} of {} shared",
            before.len()
        );
        // Streams and buffers cut the same way.
        let mut streamed = Vec::new();
        for_each_chunk(&data[..], |c| {
            streamed.push(crate::tree::ChunkId::of(c));
            Ok(())
        })
        .unwrap();
        assert_eq!(streamed, before);
        // A reader that returns little at a time cuts the same way.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(1000).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut trickled = Vec::new();
        let mut chunker = StreamChunker::new();
        for _ in 0..2 {
            trickled.clear();
            chunker
                .chunk(Trickle(&data), |c| {
                    trickled.push(crate::tree::ChunkId::of(c));
                    Ok(())
                })
                .unwrap();
            assert_eq!(trickled, before);
        }
        // Small inputs are one chunk.
        let mut n = 0;
        chunker
            .chunk(&b"tiny"[..], |c| {
                assert_eq!(c, b"tiny");
                n += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 1);
    }
}
