//! Semantic checks that serde cannot express: identifiers kept as text well
//! formed, partitions inside their disk and not overlapping, references that
//! resolve. All problems are collected so that a hand-edited manifest is
//! fixed in one go. (GUIDs, MBR signatures and type bytes, and filesystem
//! kinds with their parameters, are checked as they are read: see ids.rs
//! and xml.rs.)

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use super::model::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Element path, `/manifest/disk[1]/gpt/partition[2]/@first-lba`.
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [p] => write!(f, "{}: {}", p.path, p.message),
            ps => {
                write!(f, "{} problems:", ps.len())?;
                for p in ps {
                    write!(f, "\n  {}: {}", p.path, p.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ManifestError {}

impl ManifestError {
    /// Does any problem concern this exact path?
    pub fn mentions(&self, path: &str) -> bool {
        self.problems.iter().any(|p| p.path == path)
    }
}

pub fn validate(m: &Manifest) -> Result<(), ManifestError> {
    let mut v = Checker::default();
    v.manifest(m);
    if v.problems.is_empty() {
        Ok(())
    } else {
        Err(ManifestError {
            problems: v.problems,
        })
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn guid(&mut self, path: String, value: &str) {
        if !is_guid(value) {
            self.fail(
                path,
                format!("malformed GUID \"{value}\" (expected 8-4-4-4-12 hex digits)"),
            );
        }
    }

    fn manifest(&mut self, m: &Manifest) {
        if !SCHEMA_VERSIONS.contains(&m.schema) {
            self.fail(
                "/manifest/@schema",
                format!("unsupported schema version {}", m.schema),
            );
        }
        self.snapshot(&m.snapshot);
        self.system(&m.system);
        self.network(&m.network);
        self.problems.extend(super::paths::problems(m));
        let mut names = HashSet::new();
        for (i, d) in m.disks.iter().enumerate() {
            let p = format!("/manifest/disk[{}]", i + 1);
            if !names.insert(d.name.as_str()) {
                self.fail(
                    format!("{p}/@name"),
                    format!("disk \"{}\" listed twice", d.name),
                );
            }
            self.disk(&p, d);
        }
        let mut points = HashSet::new();
        for (i, fs) in m.filesystems.iter().enumerate() {
            let p = format!("/manifest/filesystem[{}]", i + 1);
            self.filesystem(&p, fs, &m.disks);
            for (j, mnt) in fs.mounts.iter().enumerate() {
                let mp = format!("{p}/mount[{}]/@point", j + 1);
                if !mnt.point.starts_with('/') {
                    self.fail(mp, format!("mount point \"{}\" is not absolute", mnt.point));
                } else if !points.insert(mnt.point.as_str()) {
                    self.fail(mp, format!("mount point {} used twice", mnt.point));
                }
            }
        }
        for (i, s) in m.swaps.iter().enumerate() {
            let p = format!("/manifest/swap[{}]", i + 1);
            self.guid(format!("{p}/@uuid"), &s.uuid);
            self.placement(&p, s.disk.as_deref(), s.partition, &m.disks);
        }
        self.problems.extend(super::stack_check::check(m));
        if let Some(efi) = &m.boot.efi {
            if m.system.firmware != Firmware::Uefi {
                self.fail(
                    "/manifest/boot/efi",
                    "EFI boot entries on a system whose firmware is not uefi",
                );
            }
            self.efi(efi);
        }
    }

    fn snapshot(&mut self, s: &Snapshot) {
        if s.id.trim().is_empty() {
            self.fail("/manifest/snapshot/@id", "empty snapshot id");
        }
        if s.host.trim().is_empty() {
            self.fail("/manifest/snapshot/@host", "empty host name");
        }
    }

    fn system(&mut self, s: &System) {
        if !is_hostname(&s.hostname) {
            self.fail(
                "/manifest/system/hostname",
                format!("\"{}\" is not a valid host name", s.hostname),
            );
        }
        if let Some(id) = &s.machine_id
            && !(id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            self.fail(
                "/manifest/system/machine-id",
                format!("\"{id}\" is not 32 hex digits"),
            );
        }
        if s.kernel.release.is_empty() {
            self.fail("/manifest/system/kernel/@release", "empty kernel release");
        }
        if let Some(dmi) = &s.dmi {
            self.dmi(dmi);
        }
        if let Some(i) = &s.initramfs {
            self.initramfs(i);
        }
    }

    fn initramfs(&mut self, i: &InitramfsConfig) {
        let p = "/manifest/system/initramfs";
        if !INITRAMFS_TOOLS.contains(&i.tool.as_str()) {
            self.fail(
                format!("{p}/@tool"),
                format!("{:?} is not one of {}", i.tool, INITRAMFS_TOOLS.join(", ")),
            );
        }
        if let Some(m) = &i.modules
            && !m.split_whitespace().all(is_module_name)
        {
            self.fail(
                format!("{p}/@modules"),
                format!("{m:?} is not a list of module names or a MODULES= mode"),
            );
        }
        if let Some(h) = &i.hostonly
            && h != "yes"
            && h != "no"
        {
            self.fail(format!("{p}/@hostonly"), format!("{h:?} is not yes or no"));
        }
    }

    /// DMI strings are matched against what a booting machine reports, so
    /// they must be short printable text (no control characters to spoof a
    /// console line), and the UUID a UUID.
    fn dmi(&mut self, d: &Dmi) {
        let fields = [
            ("system-uuid", &d.system_uuid),
            ("serial", &d.serial),
            ("vendor", &d.vendor),
            ("product", &d.product),
        ];
        for (name, value) in fields {
            if let Some(v) = value
                && !is_dmi_text(v)
            {
                self.fail(
                    format!("/manifest/system/dmi/@{name}"),
                    format!("{v:?} is not 1 to 128 printable characters"),
                );
            }
        }
        if let Some(u) = &d.system_uuid
            && !is_guid(u)
        {
            self.fail(
                "/manifest/system/dmi/@system-uuid",
                format!("\"{u}\" is not a UUID"),
            );
        }
    }

    fn network(&mut self, n: &Network) {
        let mut names = HashSet::new();
        for (i, itf) in n.interfaces.iter().enumerate() {
            let p = format!("/manifest/network/interface[{}]", i + 1);
            if itf.name.is_empty() || itf.name.len() > 15 || itf.name.contains(['/', ' ']) {
                self.fail(
                    format!("{p}/@name"),
                    format!("invalid interface name \"{}\"", itf.name),
                );
            } else if !names.insert(itf.name.as_str()) {
                self.fail(
                    format!("{p}/@name"),
                    format!("interface {} listed twice", itf.name),
                );
            }
            for (j, a) in itf.addresses.iter().enumerate() {
                if parse_cidr(&a.cidr).is_none() {
                    self.fail(
                        format!("{p}/address[{}]/@cidr", j + 1),
                        format!("\"{}\" is not an address with prefix length", a.cidr),
                    );
                }
            }
        }
        for (i, r) in n.routes.iter().enumerate() {
            let p = format!("/manifest/network/route[{}]", i + 1);
            if r.destination != "default" && parse_cidr(&r.destination).is_none() {
                self.fail(
                    format!("{p}/@destination"),
                    format!("\"{}\" is neither `default` nor a network", r.destination),
                );
            }
            if let Some(gw) = &r.gateway
                && gw.parse::<IpAddr>().is_err()
            {
                self.fail(
                    format!("{p}/@gateway"),
                    format!("\"{gw}\" is not an IP address"),
                );
            }
        }
        for (i, ns) in n.dns.nameservers.iter().enumerate() {
            if ns.parse::<IpAddr>().is_err() {
                self.fail(
                    format!("/manifest/network/dns/nameserver[{}]", i + 1),
                    format!("\"{ns}\" is not an IP address"),
                );
            }
        }
    }

    fn disk(&mut self, p: &str, d: &Disk) {
        for (name, value) in [("driver", &d.driver), ("controller", &d.controller)] {
            if let Some(v) = value
                && !is_module_name(v)
            {
                self.fail(
                    format!("{p}/@{name}"),
                    format!("{v:?} is not a kernel driver name (1 to 64 of A-Z a-z 0-9 _ -)"),
                );
            }
        }
        if let Some(t) = &d.transport
            && !DISK_TRANSPORTS.contains(&t.as_str())
        {
            self.fail(
                format!("{p}/@transport"),
                format!("{t:?} is not one of {}", DISK_TRANSPORTS.join(", ")),
            );
        }
        let lss = u64::from(d.logical_sector_size);
        if !lss.is_power_of_two() || lss < 512 {
            self.fail(
                format!("{p}/@logical-sector-size"),
                format!("{lss} is not a sector size (512, 4096, ...)"),
            );
            return;
        }
        if d.physical_sector_size < d.logical_sector_size
            || !d.physical_sector_size.is_power_of_two()
        {
            self.fail(
                format!("{p}/@physical-sector-size"),
                format!(
                    "{} is not a power of two at least the logical sector size",
                    d.physical_sector_size
                ),
            );
        }
        if d.size == 0 || !d.size.is_multiple_of(lss) {
            self.fail(
                format!("{p}/@size"),
                format!(
                    "{} bytes is not a whole number of {lss}-byte sectors",
                    d.size
                ),
            );
            return;
        }
        let sectors = d.size / lss;
        if d.gpt.is_some() && d.mbr.is_some() {
            self.fail(p, "a disk has either a <gpt> or an <mbr> table, not both");
        }
        let mut used: Vec<(u64, u64, String)> = Vec::new();
        if let Some(g) = &d.gpt {
            used = self.gpt(&format!("{p}/gpt"), g, sectors);
        }
        if let Some(m) = &d.mbr {
            used = self.mbr(&format!("{p}/mbr"), m, sectors);
        }
        if let Some(code) = &d.boot_code
            && !(code.len() == 880 && code.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            self.fail(
                format!("{p}/boot-code"),
                "boot code must be exactly 440 bytes as 880 hex digits",
            );
        }
        if let Some(gap) = &d.boot_gap {
            let gp = format!("{p}/boot-gap");
            if gap.first_lba < 1 || gap.last_lba < gap.first_lba || gap.last_lba >= sectors {
                self.fail(
                    gp,
                    format!(
                        "LBAs {}-{} are not inside the disk after the MBR",
                        gap.first_lba, gap.last_lba
                    ),
                );
            } else if let Some((_, _, what)) = used
                .iter()
                .find(|(a, b, _)| *a <= gap.last_lba && gap.first_lba <= *b)
            {
                self.fail(gp, format!("overlaps {what}"));
            }
        }
        let mut regions = HashSet::new();
        for (i, r) in d.raw.iter().enumerate() {
            let rp = format!("{p}/raw[{}]", i + 1);
            let Some(region) = RegionName::parse(&r.region) else {
                self.fail(
                    format!("{rp}/@region"),
                    format!("\"{}\" is not a region (boot-gap, partition-N)", r.region),
                );
                continue;
            };
            if !regions.insert(region) {
                self.fail(format!("{rp}/@region"), format!("{region} stored twice"));
                continue;
            }
            match d.region_extent(region) {
                None => self.fail(
                    format!("{rp}/@region"),
                    match region {
                        RegionName::BootGap => "the disk has no <boot-gap>".to_string(),
                        RegionName::Partition(n) => format!("the disk has no partition {n}"),
                    },
                ),
                Some((_, len)) if len != r.bytes => self.fail(
                    format!("{rp}/@bytes"),
                    format!("{} bytes stored, but the {region} is {len} bytes", r.bytes),
                ),
                Some(_) => {}
            }
        }
    }

    /// Returns the extents the partitions occupy, for the boot-gap check.
    fn gpt(&mut self, p: &str, g: &Gpt, sectors: u64) -> Vec<(u64, u64, String)> {
        let last_lba = sectors - 1;
        if g.entries == 0 {
            self.fail(
                format!("{p}/@entries"),
                "a GPT needs at least one entry slot",
            );
        }
        if g.first_usable_lba < 2 || g.first_usable_lba > g.last_usable_lba {
            self.fail(
                format!("{p}/@first-usable-lba"),
                format!(
                    "usable range {}-{} is empty or overlaps the primary header",
                    g.first_usable_lba, g.last_usable_lba
                ),
            );
        }
        if g.last_usable_lba >= last_lba {
            self.fail(
                format!("{p}/@last-usable-lba"),
                format!(
                    "LBA {} leaves no room for the backup header before the disk's last LBA {last_lba}",
                    g.last_usable_lba
                ),
            );
        }
        let mut numbers = HashSet::new();
        let mut extents = Vec::new();
        for (i, part) in g.partitions.iter().enumerate() {
            let pp = format!("{p}/partition[{}]", i + 1);
            if part.number == 0 || part.number > g.entries {
                self.fail(
                    format!("{pp}/@number"),
                    format!(
                        "number {} is outside the entry array 1-{}",
                        part.number, g.entries
                    ),
                );
            } else if !numbers.insert(part.number) {
                self.fail(
                    format!("{pp}/@number"),
                    format!("partition {} listed twice", part.number),
                );
            }
            if part.name.encode_utf16().count() > 36 {
                self.fail(
                    format!("{pp}/@name"),
                    "GPT names hold at most 36 UTF-16 units",
                );
            }
            if part.first_lba > part.last_lba {
                self.fail(
                    format!("{pp}/@last-lba"),
                    format!(
                        "last LBA {} is before first LBA {}",
                        part.last_lba, part.first_lba
                    ),
                );
                continue;
            }
            if part.last_lba > last_lba {
                self.fail(
                    format!("{pp}/@last-lba"),
                    format!(
                        "partition {} ends at LBA {}, beyond the disk's last LBA {last_lba}",
                        part.number, part.last_lba
                    ),
                );
            } else if part.first_lba < g.first_usable_lba || part.last_lba > g.last_usable_lba {
                self.fail(
                    format!("{pp}/@first-lba"),
                    format!(
                        "partition {} ({}-{}) lies outside the usable LBAs {}-{}",
                        part.number,
                        part.first_lba,
                        part.last_lba,
                        g.first_usable_lba,
                        g.last_usable_lba
                    ),
                );
            }
            extents.push((
                part.first_lba,
                part.last_lba,
                format!("partition {}", part.number),
                pp,
            ));
        }
        self.overlaps(&extents);
        extents.into_iter().map(|(a, b, w, _)| (a, b, w)).collect()
    }

    fn mbr(&mut self, p: &str, m: &Mbr, sectors: u64) -> Vec<(u64, u64, String)> {
        let mut numbers = HashSet::new();
        let mut slots = Vec::new();
        let mut logicals = Vec::new();
        let mut extended: Option<(u64, u64)> = None;
        for (i, part) in m.partitions.iter().enumerate() {
            let pp = format!("{p}/partition[{}]", i + 1);
            if !numbers.insert(part.number) {
                self.fail(
                    format!("{pp}/@number"),
                    format!("partition {} listed twice", part.number),
                );
            }
            let slot_ok = match part.kind {
                MbrKind::Primary | MbrKind::Extended => (1..=4).contains(&part.number),
                MbrKind::Logical => part.number >= 5,
            };
            if !slot_ok {
                self.fail(
                    format!("{pp}/@number"),
                    format!(
                        "{:?} partition cannot be number {} (primary/extended 1-4, logical 5+)",
                        part.kind, part.number
                    )
                    .to_lowercase(),
                );
            }
            if part.sectors == 0 {
                self.fail(format!("{pp}/@sectors"), "empty partition");
                continue;
            }
            let end = part.start_lba + part.sectors - 1;
            if part.start_lba == 0 {
                self.fail(
                    format!("{pp}/@start-lba"),
                    "a partition cannot start at LBA 0 (the MBR)",
                );
            }
            if end >= sectors {
                self.fail(
                    format!("{pp}/@sectors"),
                    format!(
                        "partition {} ends at LBA {end}, beyond the disk's last LBA {}",
                        part.number,
                        sectors - 1
                    ),
                );
            } else if end > u64::from(u32::MAX) {
                self.fail(
                    format!("{pp}/@sectors"),
                    "MBR cannot address past 2^32 sectors",
                );
            }
            let extent = (
                part.start_lba,
                end,
                format!("partition {}", part.number),
                pp.clone(),
            );
            match part.kind {
                MbrKind::Extended => {
                    if extended.is_some() {
                        self.fail(pp.clone(), "more than one extended partition");
                    }
                    extended = Some((part.start_lba, end));
                    slots.push(extent);
                }
                MbrKind::Primary => slots.push(extent),
                MbrKind::Logical => {
                    match part.ebr_lba {
                        None => self.fail(
                            format!("{pp}/@ebr-lba"),
                            "a logical partition needs its EBR's LBA",
                        ),
                        Some(ebr) if ebr >= part.start_lba => self.fail(
                            format!("{pp}/@ebr-lba"),
                            format!(
                                "EBR at LBA {ebr} is not before the partition's start {}",
                                part.start_lba
                            ),
                        ),
                        // The EBR sector belongs to its logical partition's extent.
                        Some(ebr) => logicals.push((
                            ebr,
                            end,
                            format!("partition {}", part.number),
                            pp.clone(),
                        )),
                    }
                }
            }
            if part.kind != MbrKind::Logical && part.ebr_lba.is_some() {
                self.fail(
                    format!("{pp}/@ebr-lba"),
                    "only logical partitions have an EBR",
                );
            }
        }
        for (a, b, what, pp) in &logicals {
            match extended {
                None => self.fail(
                    pp.clone(),
                    format!("logical {what} without an extended partition"),
                ),
                Some((ea, eb)) if *a < ea || *b > eb => self.fail(
                    pp.clone(),
                    format!(
                        "logical {what} ({a}-{b}) lies outside the extended partition ({ea}-{eb})"
                    ),
                ),
                _ => {}
            }
        }
        self.overlaps(&slots);
        self.overlaps(&logicals);
        slots
            .into_iter()
            .chain(logicals)
            .map(|(a, b, w, _)| (a, b, w))
            .collect()
    }

    fn overlaps(&mut self, extents: &[(u64, u64, String, String)]) {
        let mut sorted: Vec<_> = extents.iter().collect();
        sorted.sort_by_key(|e| e.0);
        for pair in sorted.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.0 <= a.1 {
                self.fail(
                    b.3.clone(),
                    format!(
                        "{} ({}-{}) overlaps {} ({}-{})",
                        b.2, b.0, b.1, a.2, a.0, a.1
                    ),
                );
            }
        }
    }

    fn filesystem(&mut self, p: &str, fs: &Filesystem, disks: &[Disk]) {
        if !fs.fs_type.accepts_uuid(&fs.uuid) {
            self.fail(
                format!("{p}/@uuid"),
                format!("malformed {} UUID \"{}\"", fs.fs_type, fs.uuid),
            );
        }
        self.placement(p, fs.disk.as_deref(), fs.partition, disks);
        let read = fs.data.as_ref().and_then(|d| d.read);
        let fits = match read {
            None | Some(ReadMode::Live) => true,
            Some(ReadMode::BtrfsSnapshot) => matches!(fs.fs_type, FsType::Btrfs(_)),
            Some(ReadMode::LvmSnapshot | ReadMode::LvmThinSnapshot) => {
                matches!(fs.volume, Some(crate::manifest::StackRef::Lv(..)))
            }
        };
        if let Some(r) = read.filter(|_| !fits) {
            self.fail(
                format!("{p}/data/@read"),
                format!(
                    "the {} filesystem on {} cannot have been read from a {}",
                    fs.fs_type.name(),
                    fs.device,
                    r.name()
                ),
            );
        }
    }

    /// A filesystem or swap area names the disk and partition it lives on;
    /// both must exist in the manifest.
    fn placement(&mut self, p: &str, disk: Option<&str>, part: Option<u32>, disks: &[Disk]) {
        let Some(name) = disk else {
            if part.is_some() {
                self.fail(
                    format!("{p}/@partition"),
                    "a partition number without a disk",
                );
            }
            return;
        };
        let Some(d) = disks.iter().find(|d| d.name == name) else {
            self.fail(
                format!("{p}/@disk"),
                format!("no <disk name=\"{name}\"> in the manifest"),
            );
            return;
        };
        let numbers: Vec<u32> = match (&d.gpt, &d.mbr) {
            (Some(g), _) => g.partitions.iter().map(|p| p.number).collect(),
            (_, Some(m)) => m.partitions.iter().map(|p| p.number).collect(),
            _ => Vec::new(),
        };
        match part {
            Some(n) if !numbers.contains(&n) => self.fail(
                format!("{p}/@partition"),
                format!("disk {name} has no partition {n}"),
            ),
            None if d.gpt.is_some() || d.mbr.is_some() => self.fail(
                format!("{p}/@partition"),
                format!("disk {name} is partitioned: say which partition"),
            ),
            _ => {}
        }
    }

    fn efi(&mut self, efi: &Efi) {
        let p = "/manifest/boot/efi";
        for n in &efi.boot_order {
            if !is_boot_number(n) {
                self.fail(
                    format!("{p}/@boot-order"),
                    format!("\"{n}\" is not 4 hex digits"),
                );
            }
        }
        let mut numbers = HashSet::new();
        for (i, e) in efi.entries.iter().enumerate() {
            let ep = format!("{p}/entry[{}]", i + 1);
            if !is_boot_number(&e.number) {
                self.fail(
                    format!("{ep}/@number"),
                    format!("\"{}\" is not 4 hex digits", e.number),
                );
            } else if !numbers.insert(e.number.to_ascii_uppercase()) {
                self.fail(
                    format!("{ep}/@number"),
                    format!("Boot{} listed twice", e.number),
                );
            }
            if e.raw.len() % 2 != 0 || !e.raw.bytes().all(|c| c.is_ascii_hexdigit()) {
                self.fail(format!("{ep}/@raw"), "the load option must be hex bytes");
            }
        }
    }
}

pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A kernel module or driver name: 1 to 64 of A-Z a-z 0-9 `_` `-`.
pub(crate) fn is_module_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// 1 to 128 printable ASCII characters, not only spaces.
pub fn is_dmi_text(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes().all(|c| (0x20..0x7f).contains(&c))
        && !s.trim().is_empty()
}

fn is_boot_number(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

/// `192.0.2.1/24` → (address, prefix), with the prefix in range for the family.
pub(crate) fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((addr, prefix))
}
