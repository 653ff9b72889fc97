//! Tier 1: numbers from a manifest or a disk that would overflow (issue 16,
//! point 4) are refused with an error by the partition-table code, never a
//! panic (debug) or a wrapped-around offset (release builds keep overflow
//! checks on, Cargo.toml).

#![allow(clippy::unwrap_used, unreachable_pub)]

use std::io::Cursor;

use rewind::layout::table::{GptEntry, GptLayout, MbrEntry, MbrLayout};
use rewind::manifest::{Guid, MbrKind};

fn guid() -> Guid {
    "0a1b2c3d-1111-4222-8333-444455556666".parse().unwrap()
}

fn gpt(first: u64, last: u64, backup: u64, part: (u64, u64)) -> GptLayout {
    GptLayout {
        disk_guid: guid(),
        first_usable_lba: first,
        last_usable_lba: last,
        entries: 128,
        backup_lba: backup,
        partitions: vec![GptEntry {
            number: 1,
            first_lba: part.0,
            last_lba: part.1,
            type_guid: guid(),
            guid: guid(),
            name: String::new(),
            attributes: 0,
        }],
    }
}

#[test]
fn gpt_numbers_at_the_edges_are_refused() {
    let m = u64::MAX;
    for (sectors, g) in [
        (0, gpt(34, 100, 0, (34, 40))),
        (1, gpt(34, 100, 0, (34, 40))),
        (m, gpt(34, m, m - 1, (34, 40))),
        (m, gpt(m, m, m - 1, (m, m))),
        (40, gpt(34, 2, 39, (34, 40))),
    ] {
        assert!(g.check(sectors, 512).is_err(), "{sectors}: {g:?}");
        let mut disk = Cursor::new(vec![0u8; 4096]);
        assert!(rewind::layout::table::write_gpt(&mut disk, sectors, 512, &g, None).is_err());
    }
}

fn mbr(parts: &[(u32, MbrKind, u64, u64, Option<u64>)]) -> MbrLayout {
    MbrLayout {
        signature: 1,
        partitions: parts
            .iter()
            .map(|&(number, kind, start_lba, sectors, ebr_lba)| MbrEntry {
                number,
                kind,
                type_byte: 0x83,
                boot: false,
                start_lba,
                sectors,
                ebr_lba,
            })
            .collect(),
    }
}

#[test]
fn mbr_and_ebr_numbers_that_wrap_are_refused() {
    use MbrKind::*;
    let m = u64::MAX;
    for layout in [
        mbr(&[(1, Primary, m, 2, None)]),
        mbr(&[(1, Primary, 2, m, None)]),
        mbr(&[
            (1, Extended, 2048, 1 << 20, None),
            (5, Logical, m - 1, 10, Some(2048)),
        ]),
        mbr(&[
            (1, Extended, 2048, 1 << 20, None),
            (5, Logical, 4096, m, Some(2048)),
        ]),
    ] {
        assert!(layout.check(m).is_err(), "{layout:?}");
        let mut disk = Cursor::new(vec![0u8; 4096]);
        assert!(rewind::layout::table::write_mbr(&mut disk, m, 512, &layout, None).is_err());
    }
}

/// The readers take a disk's sizes from sysfs and its bytes from the disk:
/// a disk smaller than a sector, an odd sector size, a GPT header on a disk
/// of one sector are errors.
#[test]
fn table_readers_refuse_impossible_sizes() {
    let mut pmbr = vec![0u8; 4096];
    pmbr[446 + 4] = 0xee;
    pmbr[510] = 0x55;
    pmbr[511] = 0xaa;
    for (sector_size, size) in [
        (0, 4096),
        (100, 4096),
        (513, 4096),
        (512, 0),
        (512, 100),
        (4096, 512),
    ] {
        let r = rewind::probe::disks::read_table(&mut Cursor::new(pmbr.clone()), sector_size, size);
        assert!(r.is_err(), "sector {sector_size}, size {size}: {r:?}");
    }
}
