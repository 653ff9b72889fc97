//! The chunk index in memory: where every blob of the repository lives,
//! in 48 bytes a blob.
//!
//! It was a `HashMap<ChunkId, Location>`: 56-byte slots at a load factor
//! of 7/8 down to 7/16 after each doubling, so 64 to 128 bytes a blob, and
//! twice that while it grew. A million small files are a million blobs,
//! so the index alone was ~100 MB (docs/performance.md). Here the entries
//! are packed into sorted arrays searched by binary search: no per-entry
//! allocation, no empty slots. The index files on disk (`index/*.idx`,
//! one per pack) are unchanged; this is only how they are held.
//!
//! New packs (a capture's, as they are written) go to a small sorted
//! array merged into the big one when it reaches an eighth of it, so
//! that adding a pack costs a merge of the small array, not of the whole
//! index.

use anyhow::{Result, ensure};

use super::Location;
use super::pack::{BlobKind, PackEntry};
use crate::tree::ChunkId;

/// The kind is kept in the low two bits of the pack number.
const KIND_BITS: u32 = 2;
/// Packs an index can number (2^30).
const MAX_PACKS: u32 = u32::MAX >> KIND_BITS;
/// The small array is merged into the big one when it is this large, at
/// least.
const RECENT_MIN: usize = 1 << 16;

/// One blob: 48 bytes, no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    id: [u8; 32],
    pack_kind: u32,
    /// Packs are closed at 16 MiB: offsets fit in 32 bits (see `new`).
    offset: u32,
    stored_len: u32,
    plain_len: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 48);

impl Slot {
    fn new(pack: u32, e: &PackEntry) -> Result<Slot> {
        ensure!(pack <= MAX_PACKS, "more than {MAX_PACKS} packs");
        // An offset past 4 GiB is damage (rewind's packs close at 16 MiB):
        // kept as an empty blob at 4 GiB, which every read and `rewind
        // check` report as damaged, rather than refusing to open the
        // repository whose damage `check` is there to show.
        let (offset, stored_len, plain_len) = match u32::try_from(e.offset) {
            Ok(offset) => (offset, e.stored_len, e.plain_len),
            Err(_) => (u32::MAX, 0, 0),
        };
        Ok(Slot {
            id: e.id.0,
            pack_kind: pack << KIND_BITS | e.kind as u32,
            offset,
            stored_len,
            plain_len,
        })
    }

    fn pack(&self) -> u32 {
        self.pack_kind >> KIND_BITS
    }

    fn location(&self) -> Location {
        let kind = match self.pack_kind & ((1 << KIND_BITS) - 1) {
            0 => BlobKind::Data,
            1 => BlobKind::Tree,
            _ => BlobKind::TreeList,
        };
        Location {
            pack: self.pack(),
            kind,
            offset: u64::from(self.offset),
            stored_len: self.stored_len,
            plain_len: self.plain_len,
        }
    }
}

/// Every blob of the repository, by id; see the module's doc.
#[derive(Default)]
pub(crate) struct ChunkIndex {
    /// Sorted by id, one slot per id.
    main: Vec<Slot>,
    /// The same, for packs added since the last merge; searched first.
    recent: Vec<Slot>,
}

impl ChunkIndex {
    /// An index of `packs` (pack number, its entries), in one sort: how a
    /// repository is opened. A blob stored in several packs is found in
    /// the last of them, as before.
    #[cfg(test)]
    fn build(packs: impl IntoIterator<Item = (u32, Vec<PackEntry>)>) -> Result<Self> {
        let mut builder = Builder::default();
        for (pack, entries) in packs {
            builder.add_pack(pack, &entries)?;
        }
        Ok(builder.finish())
    }

    pub(crate) fn get(&self, id: &ChunkId) -> Option<Location> {
        find(&self.recent, id)
            .or_else(|| find(&self.main, id))
            .map(Slot::location)
    }

    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        find(&self.recent, id).is_some() || find(&self.main, id).is_some()
    }

    /// Add the entries of pack number `pack` (numbered after every pack
    /// already added: its blobs win over earlier copies).
    pub(crate) fn add_pack(&mut self, pack: u32, entries: &[PackEntry]) -> Result<()> {
        let mut new = entries
            .iter()
            .map(|e| Slot::new(pack, e))
            .collect::<Result<Vec<_>>>()?;
        sort_unique(&mut new);
        merge_into(&mut self.recent, &new);
        if self.recent.len() >= RECENT_MIN.max(self.main.len() / 8) {
            let recent = std::mem::take(&mut self.recent);
            merge_into(&mut self.main, &recent);
        }
        Ok(())
    }

    /// How many blobs.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.main.len() + self.recent.len()
            - self
                .recent
                .iter()
                .filter(|s| find(&self.main, &ChunkId(s.id)).is_some())
                .count()
    }

    /// Every blob with where it is, each once, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ChunkId, Location)> + '_ {
        self.recent
            .iter()
            .chain(
                self.main
                    .iter()
                    .filter(|s| find(&self.recent, &ChunkId(s.id)).is_none()),
            )
            .map(|s| (ChunkId(s.id), s.location()))
    }
}

/// Collects packs' entries (each pack's can be dropped as soon as it is
/// added: 48 bytes a blob are all that is held) and sorts them once.
#[derive(Default)]
pub(crate) struct Builder {
    slots: Vec<Slot>,
}

impl Builder {
    pub(crate) fn add_pack(&mut self, pack: u32, entries: &[PackEntry]) -> Result<()> {
        self.slots.reserve(entries.len());
        for e in entries {
            self.slots.push(Slot::new(pack, e)?);
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> ChunkIndex {
        sort_unique(&mut self.slots);
        self.slots.shrink_to_fit();
        ChunkIndex {
            main: self.slots,
            recent: Vec::new(),
        }
    }
}

/// The first 8 bytes of an id as a number: ids sort by it first.
fn prefix(id: &[u8; 32]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&id[..8]);
    u64::from_be_bytes(a)
}

/// Interpolation steps before a binary search of what is left.
const GUESSES: usize = 8;

/// The slot of `id` in sorted `slots`. Ids are BLAKE3 hashes, uniform, so
/// a slot's position is nearly proportional to its first 8 bytes: the
/// first guess lands about sqrt(n)/2 slots away, and each next guess,
/// taken from the slot just read at the same density, closer still, in
/// the same pages. A binary search took log2(n) probes, most of them
/// cache and TLB misses in a large index (with a `memcmp` for each): 15%
/// of the CPU of an unchanged capture of 100,000 files
/// (docs/performance.md). At most [`GUESSES`] steps, each narrowing the
/// range, then a binary search of what is left: ids that are not uniform
/// cost little more than before.
fn find<'a>(slots: &'a [Slot], id: &ChunkId) -> Option<&'a Slot> {
    let key = prefix(&id.0);
    let cmp = |s: &Slot| prefix(&s.id).cmp(&key).then_with(|| s.id.cmp(&id.0));
    // The id is in slots[lo..hi] if anywhere.
    let (mut lo, mut hi) = (0, slots.len());
    if hi >= 16 {
        let (first, last) = (prefix(&slots[0].id), prefix(&slots[hi - 1].id));
        if key < first || key > last {
            return None;
        }
        // Slots per prefix unit: (hi - 1) / span.
        let span = u128::from(last - first).max(1);
        let per = (hi - 1) as u128;
        let slots_for = |d: u64| (u128::from(d) * per / span) as usize;
        let mut at = slots_for(key - first);
        for _ in 0..GUESSES {
            let here = prefix(&slots[at].id);
            match cmp(&slots[at]) {
                std::cmp::Ordering::Equal => return Some(&slots[at]),
                std::cmp::Ordering::Less => lo = at + 1,
                std::cmp::Ordering::Greater => hi = at,
            }
            if hi - lo < 16 {
                break;
            }
            let step = slots_for(here.abs_diff(key)).max(1);
            at = if here < key {
                at.saturating_add(step)
            } else {
                at.saturating_sub(step)
            }
            .clamp(lo, hi - 1);
        }
    }
    let rest = &slots[lo..hi];
    rest.binary_search_by(cmp).ok().map(|i| &rest[i])
}

/// Sort by id, keeping of equal ids the slot of the highest pack.
fn sort_unique(slots: &mut Vec<Slot>) {
    // In place (an unstable sort allocates nothing): at open, the index is
    // the largest thing in memory.
    slots.sort_unstable_by(|a, b| a.id.cmp(&b.id).then(b.pack().cmp(&a.pack())));
    slots.dedup_by(|later, first| later.id == first.id);
}

/// Merge sorted, unique `new` into sorted, unique `into`, in place from
/// the back (no second copy of `into`); `new` wins on equal ids.
fn merge_into(into: &mut Vec<Slot>, new: &[Slot]) {
    if new.is_empty() {
        return;
    }
    let old_len = into.len();
    let dups = new
        .iter()
        .filter(|s| find(&into[..old_len], &ChunkId(s.id)).is_some())
        .count();
    let Some(&filler) = new.first() else { return };
    into.resize(old_len + new.len() - dups, filler);
    // Walk both from their ends, writing the larger id at the back.
    let (mut i, mut j, mut w) = (old_len, new.len(), into.len());
    while j > 0 {
        let n = new[j - 1];
        if i > 0 && into[i - 1].id >= n.id {
            if into[i - 1].id == n.id {
                i -= 1; // replaced by the newer copy below
                continue;
            }
            w -= 1;
            into[w] = into[i - 1];
            i -= 1;
        } else {
            w -= 1;
            into[w] = n;
            j -= 1;
        }
    }
    debug_assert_eq!(w, i);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> PackEntry {
        PackEntry {
            id: ChunkId::of(&n.to_le_bytes()),
            kind: [BlobKind::Data, BlobKind::Tree, BlobKind::TreeList][n as usize % 3],
            offset: 8 + u64::from(n) * 10,
            stored_len: n,
            plain_len: n * 2,
        }
    }

    /// The index answers as the map it replaced, through builds, merges of
    /// the small array and copies of a blob in several packs (the last
    /// pack's wins).
    #[test]
    fn answers_as_a_map() {
        let mut map = std::collections::HashMap::new();
        let packs: Vec<(u32, Vec<PackEntry>)> = (0..5)
            .map(|p| (p, (p * 300..p * 300 + 400).map(entry).collect()))
            .collect();
        let mut index = ChunkIndex::build(packs.clone()).unwrap();
        for (p, entries) in &packs {
            for e in entries {
                map.insert(e.id, (*p, *e));
            }
        }
        // Packs added one by one, overlapping each other and the built
        // ones, enough to merge the small array into the big one.
        for p in 5..40u32 {
            let entries: Vec<PackEntry> = (p * 3000 - 14_000..p * 3000).map(entry).collect();
            index.add_pack(p, &entries).unwrap();
            for e in &entries {
                map.insert(e.id, (p, *e));
            }
        }
        assert!(!index.main.is_empty() && index.main.len() > 50_000);
        assert_eq!(index.len(), map.len());
        for (id, (p, e)) in &map {
            let loc = index.get(id).unwrap();
            assert_eq!(
                (
                    loc.pack,
                    loc.kind,
                    loc.offset,
                    loc.stored_len,
                    loc.plain_len
                ),
                (*p, e.kind, e.offset, e.stored_len, e.plain_len)
            );
        }
        let mut seen: Vec<ChunkId> = index.iter().map(|(id, _)| id).collect();
        assert_eq!(seen.len(), map.len());
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), map.len());
        assert!(!index.contains(&ChunkId::of(b"absent")));
        assert!(index.get(&ChunkId::of(b"absent")).is_none());
    }

    /// The interpolation search finds every id and no other, on hashes
    /// (uniform) and on ids that are not: clustered, sharing their first
    /// 8 bytes, at the ends of the range.
    #[test]
    fn finds_ids_uniform_or_not() {
        let slot = |id: [u8; 32]| Slot {
            id,
            pack_kind: 0,
            offset: 0,
            stored_len: 0,
            plain_len: 0,
        };
        let hashed: Vec<[u8; 32]> = (0..5000u32)
            .map(|n| ChunkId::of(&n.to_le_bytes()).0)
            .collect();
        let clustered: Vec<[u8; 32]> = (0..3000u32)
            .map(|n| {
                let mut id = [0u8; 32];
                // Most ids in a tiny part of the range, a few far away,
                // many with the same first 8 bytes.
                let high: u64 = match n % 100 {
                    0 => u64::MAX - u64::from(n),
                    1 => u64::from(n),
                    _ => 1 << 40 | u64::from(n % 37),
                };
                id[..8].copy_from_slice(&high.to_be_bytes());
                id[8..12].copy_from_slice(&n.to_be_bytes());
                id
            })
            .collect();
        for ids in [hashed, clustered] {
            let mut slots: Vec<Slot> = ids.iter().map(|&id| slot(id)).collect();
            sort_unique(&mut slots);
            for n in [0, 1, 2, 15, 16, 17, 100, slots.len()] {
                let part = &slots[..n.min(slots.len())];
                for s in part {
                    assert_eq!(find(part, &ChunkId(s.id)).map(|f| f.id), Some(s.id));
                }
            }
            for s in &slots {
                // Absent ids next to present ones: the last byte changed.
                let mut near = s.id;
                near[31] ^= 1;
                let expect = slots.iter().any(|t| t.id == near);
                assert_eq!(find(&slots, &ChunkId(near)).is_some(), expect);
            }
            assert!(find(&slots, &ChunkId([0; 32])).is_none());
            assert!(find(&slots, &ChunkId([0xff; 32])).is_none());
        }
    }

    /// A damaged index entry with an offset past 4 GiB does not stop the
    /// repository from opening: the blob reads as damaged.
    #[test]
    fn an_offset_past_4_gib_reads_as_damage() {
        let mut e = entry(1);
        e.offset = 1 << 32;
        let index = ChunkIndex::build([(0, vec![e])]).unwrap();
        let loc = index.get(&e.id).unwrap();
        assert_eq!((loc.offset, loc.stored_len), (u64::from(u32::MAX), 0));
        assert!(
            super::super::pack::check_entries(
                &[PackEntry {
                    offset: loc.offset,
                    stored_len: loc.stored_len,
                    ..e
                }],
                16 << 20
            )
            .is_err()
        );
    }
}
