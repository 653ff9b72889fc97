//! The fuzz targets: what each decoder of untrusted bytes must survive,
//! shared by the stable harness (tests/fuzz_decoders.rs: corpus, mutations,
//! a time box) and the coverage-guided cargo-fuzz targets (fuzz/, nightly).
//! A decoder may refuse anything; it may not panic, hang or allocate
//! without bound. The structured targets check properties too.

// Each cargo-fuzz binary uses one target.
#![allow(dead_code)]

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use arbitrary::{Arbitrary, Unstructured};

fn text(input: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(input)
}

/// The manifest: XML and validation; what parses writes back and reads again.
pub fn manifest(input: &[u8]) {
    if let Ok(m) = rewind::manifest::from_xml(&text(input)) {
        // What parses and validates writes back and reads again.
        let again = rewind::manifest::to_xml(&m).unwrap();
        rewind::manifest::from_xml(&again).unwrap();
    }
}

/// The tree stream of a snapshot.
pub fn tree(input: &[u8]) {
    for e in rewind::tree::EntryReader::new(input).take(64) {
        if e.is_err() {
            break;
        }
    }
}

/// A pack's index and trailer; a checked entry lies inside its pack.
pub fn pack(input: &[u8]) {
    use rewind::repo::pack;
    let _ = pack::decode_index(input);
    if input.len() >= 12 {
        let _ = pack::index_tail_len(&input[input.len() - 12..]);
    }
    if let Ok((body_end, index)) = pack::split_pack(input) {
        assert!(body_end <= input.len());
        if let Ok(entries) = pack::decode_index(index)
            && pack::check_entries(&entries, body_end).is_ok()
        {
            for e in entries {
                let r = pack::blob_range(e.offset, e.stored_len).unwrap();
                assert!(r.end <= body_end, "a checked entry lies inside");
            }
        }
    }
    let _ = rewind::server::files::verify_pack("00", input);
}

/// RFC 3339 times; what parses formats back to the same second.
pub fn rfc3339(input: &[u8]) {
    if let Some(secs) = rewind::time::parse_rfc3339(&text(input))
        && (0..253_402_300_800).contains(&secs)
    {
        // What parses formats and parses back to the same second (years
        // 1970-9999: an offset may carry 9999-12-31 into year 10000,
        // which RFC 3339's four digits cannot write).
        let again = rewind::time::format_utc(secs);
        assert_eq!(rewind::time::parse_rfc3339(&again), Some(secs), "{again}");
    }
}

/// HTTP Range headers; a range lies inside the file.
pub fn range(input: &[u8]) {
    let mut u = Unstructured::new(input);
    let size = u64::arbitrary(&mut u).unwrap_or(0);
    let header = text(u.take_rest());
    if let Some((start, end)) = rewind::server::range::parse_range(&header, size) {
        assert!(
            start <= end && end < size,
            "{header:?} of {size}: {start}-{end}"
        );
    }
}

/// The kernel command line and its `ip=` values.
pub fn cmdline(input: &[u8]) {
    let line = text(input);
    let words = rewind::init::cmdline::split(&line);
    let _ = rewind::init::cmdline::parse(&line);
    for w in words {
        if let Some(v) = w.split_once('=').map(|(_, v)| v) {
            let _ = rewind::init::cmdline::parse_ip(v);
        }
    }
}

/// The partition-table readers (GPT, MBR, EBR chains).
pub fn tables(input: &[u8]) {
    let mut u = Unstructured::new(input);
    let sector: u32 = if bool::arbitrary(&mut u).unwrap_or(true) {
        512
    } else {
        4096
    };
    let rest = u.take_rest();
    // The claimed size may disagree with the bytes there are.
    let size =
        (rest.len() as u64).saturating_add(u64::from(rest.first().copied().unwrap_or(0)) * 512);
    let _ = rewind::probe::disks::read_table(&mut Cursor::new(rest), sector, size);
}

// ---- the table writers stay inside their plan ----

/// A disk that records where it is written; reads give zeros.
#[derive(Debug)]
struct Recorder {
    size: u64,
    pos: u64,
    writes: Vec<(u64, u64)>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.size.saturating_sub(self.pos)) as usize;
        buf[..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.pos.checked_add(buf.len() as u64).unwrap();
        assert!(
            end <= self.size,
            "a write past the end of the disk: {}..{end}",
            self.pos
        );
        self.writes.push((self.pos, end));
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Recorder {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.size.checked_add_signed(d).unwrap(),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).unwrap(),
        };
        Ok(self.pos)
    }
}

fn inside(writes: &[(u64, u64)], regions: &[(u64, u64)]) -> Result<(), String> {
    for &(a, b) in writes {
        if !regions.iter().any(|&(s, e)| s <= a && b <= e) {
            return Err(format!("write {a}..{b} outside the planned {regions:?}"));
        }
    }
    Ok(())
}

/// A number near one of `anchors` (so that layouts often almost fit).
fn near(u: &mut Unstructured<'_>, anchors: &[u64]) -> arbitrary::Result<u64> {
    let base = anchors[usize::from(u8::arbitrary(u)?) % anchors.len()];
    let delta = i64::from(i8::arbitrary(u)?);
    Ok(if u8::arbitrary(u)? == 0 {
        u64::arbitrary(u)?
    } else {
        base.saturating_add_signed(delta)
    })
}

/// The partition-table writers write only inside the regions their layout plans, and refuse (writing nothing) what does not fit.
pub fn writers(input: &[u8]) {
    use rewind::layout::table::{GptEntry, GptLayout, MbrEntry, MbrLayout, write_gpt, write_mbr};
    use rewind::manifest::MbrKind;
    let guid: rewind::manifest::Guid = "0a1b2c3d-1111-4222-8333-444455556666".parse().unwrap();
    let mut u = Unstructured::new(input);
    let Ok(sectors) = near(&mut u, &[64, 2048, 1 << 20, 1 << 32]) else {
        return;
    };
    let sector: u32 = if bool::arbitrary(&mut u).unwrap_or(true) {
        512
    } else {
        4096
    };
    // A disk of no sectors is never a target (its size comes from the
    // kernel); MbrLayout::check does not refuse it (noted in issue 16's
    // report).
    let Some(size) = sectors.checked_mul(u64::from(sector)).filter(|&s| s > 0) else {
        return;
    };
    if bool::arbitrary(&mut u).unwrap_or(true) {
        let entries = [128u32, 4, 1, 0][usize::from(u8::arbitrary(&mut u).unwrap_or(0)) % 4];
        let anchors = [
            0,
            2,
            34,
            2048,
            sectors.saturating_sub(34),
            sectors.saturating_sub(1),
        ];
        let mut g = GptLayout {
            disk_guid: guid.clone(),
            first_usable_lba: near(&mut u, &anchors).unwrap_or(34),
            last_usable_lba: near(&mut u, &anchors).unwrap_or(0),
            entries,
            backup_lba: near(&mut u, &anchors).unwrap_or(0),
            partitions: Vec::new(),
        };
        for n in 0..u8::arbitrary(&mut u).unwrap_or(0) % 4 {
            g.partitions.push(GptEntry {
                number: u32::from(n) + 1,
                first_lba: near(&mut u, &anchors).unwrap_or(0),
                last_lba: near(&mut u, &anchors).unwrap_or(0),
                type_guid: guid.clone(),
                guid: guid.clone(),
                name: String::arbitrary(&mut u).unwrap_or_default(),
                attributes: 0,
            });
        }
        let mut disk = Recorder {
            size,
            pos: 0,
            writes: Vec::new(),
        };
        let fits = g.check(sectors, sector).is_ok();
        let wrote = write_gpt(&mut disk, sectors, sector, &g, None);
        assert_eq!(fits, wrote.is_ok(), "{g:?}: {wrote:?}");
        if !fits {
            assert!(disk.writes.is_empty(), "wrote while refusing: {g:?}");
            return;
        }
        let ss = u64::from(sector);
        let array = g.array_sectors(sector);
        let last = sectors - 1;
        let plan = [
            (0, (2 + array) * ss),                  // PMBR, header, entries
            ((last - array) * ss, (last + 1) * ss), // backup entries, header
        ];
        inside(&disk.writes, &plan).unwrap();
    } else {
        let anchors = [1, 63, 2048, 4096, sectors.saturating_sub(1), 1 << 32];
        let mut m = MbrLayout {
            signature: 1,
            partitions: Vec::new(),
        };
        let count = u8::arbitrary(&mut u).unwrap_or(0) % 7;
        for i in 0..count {
            let kind = [MbrKind::Primary, MbrKind::Extended, MbrKind::Logical]
                [usize::from(u8::arbitrary(&mut u).unwrap_or(0)) % 3];
            let number = if kind == MbrKind::Logical {
                5 + u32::from(i)
            } else {
                1 + u32::from(i) % 4
            };
            m.partitions.push(MbrEntry {
                number,
                kind,
                type_byte: 0x83,
                boot: false,
                start_lba: near(&mut u, &anchors).unwrap_or(0),
                sectors: near(&mut u, &anchors).unwrap_or(0),
                ebr_lba: (kind == MbrKind::Logical).then(|| near(&mut u, &anchors).unwrap_or(0)),
            });
        }
        let mut disk = Recorder {
            size,
            pos: 0,
            writes: Vec::new(),
        };
        let fits = m.check(sectors).is_ok();
        let wrote = write_mbr(&mut disk, sectors, sector, &m, None);
        if !fits {
            assert!(wrote.is_err(), "{m:?}");
            assert!(disk.writes.is_empty(), "wrote while refusing: {m:?}");
            return;
        }
        if wrote.is_err() {
            return; // a record that does not fit 32 bits, refused while writing
        }
        let ss = u64::from(sector);
        let mut plan = vec![(0, ss)];
        for p in &m.partitions {
            let ebr = match p.kind {
                MbrKind::Extended => p.start_lba,
                MbrKind::Logical => p.ebr_lba.unwrap(),
                MbrKind::Primary => continue,
            };
            plan.push((ebr * ss, (ebr + 1) * ss));
        }
        inside(&disk.writes, &plan).unwrap();
    }
}
