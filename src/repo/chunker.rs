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

/// Cut a stream, calling `on_chunk` for each piece in order.
pub fn for_each_chunk<R: Read>(
    reader: R,
    mut on_chunk: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    for chunk in fastcdc::v2020::StreamCDC::new(reader, MIN, AVG, MAX) {
        let chunk = chunk.context("cannot read the file's content")?;
        on_chunk(&chunk.data)?;
    }
    Ok(())
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
    }
}
