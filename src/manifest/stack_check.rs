//! Validation of the storage stack (schema 2): every reference resolves,
//! every block device holds one thing, the stack is not built on itself,
//! and each layer is one rewind can recreate exactly — firmware RAID,
//! cache and VDO volumes and the like are refused here by name, so that a
//! recovery never starts on a stack it would half-recreate.

use std::collections::{HashMap, HashSet};

use super::model::*;
use super::validate::Problem;

/// Every problem of the stack elements of `m`, and of the schema they need.
pub(super) fn check(m: &Manifest) -> Vec<Problem> {
    let mut c = StackChecker {
        m,
        problems: Vec::new(),
    };
    c.run();
    c.problems
}

struct StackChecker<'m> {
    m: &'m Manifest,
    problems: Vec<Problem>,
}

/// Who uses a block device: the element path, for "used twice" messages.
type Users = HashMap<StackRef, String>;

impl StackChecker<'_> {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn run(&mut self) {
        let m = self.m;
        if m.schema < 2 && required_schema(m) >= 2 {
            self.fail(
                "/manifest/@schema",
                "schema 1 has no storage stack (<md>, <luks>, <vg>, @volume, btrfs members, subvolumes and profiles) and no <data read>: this manifest needs schema=\"2\"",
            );
        }
        let mut users = Users::new();
        // The partitions and disks that filesystems and swap sit on directly.
        for (i, fs) in m.filesystems.iter().enumerate() {
            let p = format!("/manifest/filesystem[{}]", i + 1);
            if let Some(d) = &fs.disk {
                let r = direct_ref(d, fs.partition);
                let attr = direct_attr(fs.partition);
                self.use_device(&mut users, &p, attr, r, false);
            }
        }
        for (i, s) in m.swaps.iter().enumerate() {
            let p = format!("/manifest/swap[{}]", i + 1);
            if let Some(d) = &s.disk {
                let r = direct_ref(d, s.partition);
                let attr = direct_attr(s.partition);
                self.use_device(&mut users, &p, attr, r, false);
            }
        }
        let mut names = HashSet::new();
        for (i, a) in m.md_arrays.iter().enumerate() {
            let p = format!("/manifest/md[{}]", i + 1);
            if !names.insert(format!("md/{}", a.name)) {
                self.fail(format!("{p}/@name"), format!("md/{} listed twice", a.name));
            }
            self.md(&p, a, &mut users);
        }
        for (i, l) in m.luks.iter().enumerate() {
            let p = format!("/manifest/luks[{}]", i + 1);
            if !names.insert(format!("luks/{}", l.name)) {
                self.fail(
                    format!("{p}/@name"),
                    format!("luks/{} listed twice", l.name),
                );
            }
            self.luks(&p, l, &mut users);
        }
        let mut lvm_ids = HashSet::new();
        for (i, g) in m.volume_groups.iter().enumerate() {
            let p = format!("/manifest/vg[{}]", i + 1);
            if !names.insert(format!("vg/{}", g.name)) {
                self.fail(format!("{p}/@name"), format!("vg {} listed twice", g.name));
            }
            self.vg(&p, g, &mut users, &mut lvm_ids);
        }
        for (i, fs) in m.filesystems.iter().enumerate() {
            let p = format!("/manifest/filesystem[{}]", i + 1);
            self.filesystem(&p, fs, &mut users);
        }
        for (i, s) in m.swaps.iter().enumerate() {
            let p = format!("/manifest/swap[{}]", i + 1);
            if let Some(v) = &s.volume
                && self.stack_volume(&p, v)
            {
                if s.disk.is_some() || s.partition.is_some() {
                    self.fail(
                        format!("{p}/@volume"),
                        "a swap area is on a disk or on a volume, not both",
                    );
                }
                self.use_device(&mut users, &p, "@volume", v.clone(), true);
            }
        }
        if let Err(e) = creation_order(m) {
            self.fail("/manifest", e);
        }
    }

    /// Record that the element at `p` is built on `r`: it must exist and
    /// hold nothing else. `check_exists` is false for a filesystem's own
    /// disk and partition, which validate.rs already resolves.
    fn use_device(
        &mut self,
        users: &mut Users,
        element: &str,
        attr: &str,
        r: StackRef,
        check_exists: bool,
    ) {
        let p = format!("{element}/{attr}");
        if check_exists && !self.resolve(&p, &r) {
            return;
        }
        if let Some(other) = users.get(&r) {
            self.fail(
                p.to_string(),
                format!("{r} is already used by {other}: a block device holds one thing"),
            );
            return;
        }
        // A partitioned disk is used through its partitions, and a disk
        // used whole has none.
        match &r {
            StackRef::Disk(d) => {
                if let Some((other, who)) = users
                    .iter()
                    .find(|(k, _)| matches!(k, StackRef::Partition(pd, _) if pd == d))
                {
                    self.fail(
                        p.to_string(),
                        format!("{r} is used whole, but {other} is used by {who}"),
                    );
                }
            }
            StackRef::Partition(d, _) => {
                let whole = StackRef::Disk(d.clone());
                if let Some(who) = users.get(&whole) {
                    self.fail(
                        p.to_string(),
                        format!("{r} is on {whole}, which {who} uses whole"),
                    );
                }
            }
            _ => {}
        }
        users.insert(r, element.to_string());
    }

    /// Does `r` name a block device of the manifest? Fails at `p` otherwise.
    fn resolve(&mut self, p: &str, r: &StackRef) -> bool {
        let m = self.m;
        let problem = match r {
            StackRef::Disk(d) => match m.disks.iter().find(|x| &x.name == d) {
                None => Some(format!("no <disk name=\"{d}\"> in the manifest")),
                Some(x) if x.gpt.is_some() || x.mbr.is_some() => Some(format!(
                    "disk {d} is partitioned: name one of its partitions (disk/{d}/N)"
                )),
                Some(_) => None,
            },
            StackRef::Partition(d, n) => match m.disks.iter().find(|x| &x.name == d) {
                None => Some(format!("no <disk name=\"{d}\"> in the manifest")),
                Some(x) => {
                    let has = match (&x.gpt, &x.mbr) {
                        (Some(g), _) => g.partitions.iter().any(|q| q.number == *n),
                        (_, Some(t)) => t
                            .partitions
                            .iter()
                            .any(|q| q.number == *n && q.kind != MbrKind::Extended),
                        _ => false,
                    };
                    (!has).then(|| format!("disk {d} has no partition {n}"))
                }
            },
            StackRef::Md(n) => (!m.md_arrays.iter().any(|a| &a.name == n))
                .then(|| format!("no <md name=\"{n}\"> in the manifest")),
            StackRef::Luks(n) => (!m.luks.iter().any(|l| &l.name == n))
                .then(|| format!("no <luks name=\"{n}\"> in the manifest")),
            StackRef::Lv(vg, lv) => match m.volume_groups.iter().find(|g| &g.name == vg) {
                None => Some(format!("no <vg name=\"{vg}\"> in the manifest")),
                Some(g) => match g.lvs.iter().find(|l| &l.name == lv) {
                    None => Some(format!("volume group {vg} has no <lv name=\"{lv}\">")),
                    Some(l) if l.lv_type == "thin-pool" => Some(format!(
                        "{vg}/{lv} is a thin pool: it holds thin volumes, not data"
                    )),
                    Some(_) => None,
                },
            },
        };
        match problem {
            Some(why) => {
                self.fail(p, why);
                false
            }
            None => true,
        }
    }

    fn md(&mut self, p: &str, a: &MdArray, users: &mut Users) {
        check_name(self, &format!("{p}/@name"), &a.name, "an MD array");
        let meta = a.metadata.as_str();
        if meta == "imsm" || meta == "ddf" || meta.starts_with("external:") {
            self.fail(
                format!("{p}/@metadata"),
                format!(
                    "md/{} is firmware RAID ({meta}: Intel IMSM/VROC or DDF, set up in the firmware's RAID menu): rewind cannot recreate it; switch the disks to AHCI and use Linux software RAID (mdadm --metadata=1.2, or 1.0 for an ESP), or recover this machine by other means",
                    a.name
                ),
            );
            return;
        }
        if !MD_METADATA.contains(&meta) {
            self.fail(
                format!("{p}/@metadata"),
                format!(
                    "unknown MD metadata \"{meta}\" ({})",
                    MD_METADATA.join(", ")
                ),
            );
        }
        if !MD_LEVELS.contains(&a.level.as_str()) {
            self.fail(
                format!("{p}/@level"),
                format!(
                    "RAID level \"{}\" cannot be recreated ({})",
                    a.level,
                    MD_LEVELS.join(", ")
                ),
            );
        }
        if !is_md_uuid(&a.uuid) {
            self.fail(
                format!("{p}/@uuid"),
                format!(
                    "\"{}\" is not an MD array UUID (4 groups of 8 hex digits joined by ':')",
                    a.uuid
                ),
            );
        }
        if a.raid_devices == 0 {
            self.fail(format!("{p}/@raid-devices"), "an array needs members");
        }
        if a.size == 0 {
            self.fail(format!("{p}/@size"), "empty array");
        }
        let striped = matches!(
            a.level.as_str(),
            "raid0" | "raid4" | "raid5" | "raid6" | "raid10"
        );
        match a.chunk_size {
            None if striped => self.fail(
                format!("{p}/@chunk-size"),
                format!("a {} array needs its chunk size", a.level),
            ),
            Some(c) if !c.is_power_of_two() || c < 4096 => self.fail(
                format!("{p}/@chunk-size"),
                format!("{c} bytes is not a chunk size (a power of two, at least 4096)"),
            ),
            _ => {}
        }
        if a.bitmap != "none" && a.bitmap != "internal" {
            self.fail(
                format!("{p}/@bitmap"),
                format!(
                    "bitmap \"{}\" cannot be recreated (none, internal)",
                    a.bitmap
                ),
            );
        }
        let mut slots = HashSet::new();
        for (i, mem) in a.members.iter().enumerate() {
            let mp = format!("{p}/member[{}]", i + 1);
            match mem.slot() {
                Some(s) if s >= a.raid_devices => self.fail(
                    format!("{mp}/@role"),
                    format!("slot {s} is outside 0-{}", a.raid_devices.saturating_sub(1)),
                ),
                Some(s) if !slots.insert(s) => {
                    self.fail(format!("{mp}/@role"), format!("slot {s} listed twice"))
                }
                Some(_) => {}
                None if mem.role == "spare" => {}
                None => self.fail(
                    format!("{mp}/@role"),
                    format!("\"{}\" is neither a slot number nor `spare`", mem.role),
                ),
            }
            self.use_device(users, &mp, "@ref", mem.device.clone(), true);
        }
        if slots.is_empty() && a.raid_devices > 0 {
            self.fail(p.to_string(), format!("md/{} has no active member", a.name));
        }
    }

    fn luks(&mut self, p: &str, l: &Luks, users: &mut Users) {
        check_name(self, &format!("{p}/@name"), &l.name, "a LUKS mapping");
        if l.version != 1 && l.version != 2 {
            self.fail(
                format!("{p}/@version"),
                format!("LUKS version {} (1 or 2)", l.version),
            );
        }
        if l.label.is_some() && l.version == 1 {
            self.fail(format!("{p}/@label"), "LUKS1 has no label");
        }
        if l.key_size == 0 || !l.key_size.is_multiple_of(8) {
            self.fail(
                format!("{p}/@key-size"),
                format!("{} bits is not a key size", l.key_size),
            );
        }
        let ss = l.sector_size;
        if !(ss.is_power_of_two() && (512..=4096).contains(&ss)) || (l.version == 1 && ss != 512) {
            self.fail(
                format!("{p}/@sector-size"),
                format!("{ss} is not an encryption sector size (512-4096; LUKS1: 512)"),
            );
        }
        if l.data_offset == 0 || !l.data_offset.is_multiple_of(512) {
            self.fail(
                format!("{p}/@data-offset"),
                format!(
                    "{} bytes is not a data offset (a whole number of sectors after the header)",
                    l.data_offset
                ),
            );
        }
        if l.size == 0 {
            self.fail(format!("{p}/@size"), "empty LUKS volume");
        }
        if l.cipher.is_empty() {
            self.fail(format!("{p}/@cipher"), "empty cipher");
        }
        let max_slots = if l.version == 1 { 8 } else { 32 };
        let mut ids = HashSet::new();
        for (i, k) in l.keyslots.iter().enumerate() {
            let kp = format!("{p}/keyslot[{}]", i + 1);
            if k.id >= max_slots {
                self.fail(
                    format!("{kp}/@id"),
                    format!(
                        "LUKS{} keyslots are 0-{}, not {}",
                        l.version,
                        max_slots - 1,
                        k.id
                    ),
                );
            } else if !ids.insert(k.id) {
                self.fail(
                    format!("{kp}/@id"),
                    format!("keyslot {} listed twice", k.id),
                );
            }
        }
        if let Some(h) = &l.header
            && (h.bytes == 0 || h.bytes > l.data_offset)
        {
            self.fail(
                format!("{p}/header/@bytes"),
                format!(
                    "a {}-byte header does not fit before the data offset {}",
                    h.bytes, l.data_offset
                ),
            );
        }
        if let Some(e) = &l.escrow {
            if !ESCROW_KINDS.contains(&e.kind.as_str()) {
                self.fail(
                    format!("{p}/escrow/@kind"),
                    format!(
                        "unknown escrow kind \"{}\" ({})",
                        e.kind,
                        ESCROW_KINDS.join(", ")
                    ),
                );
            }
            if e.key_id.trim().is_empty() {
                self.fail(format!("{p}/escrow/@key-id"), "empty key id");
            }
        }
        self.use_device(users, p, "@on", l.on.clone(), true);
    }

    fn vg(&mut self, p: &str, g: &VolumeGroup, users: &mut Users, ids: &mut HashSet<String>) {
        check_lvm_name(self, &format!("{p}/@name"), &g.name);
        self.lvm_id(&format!("{p}/@uuid"), &g.uuid, ids);
        let es = g.extent_size;
        if es < 1024 || !es.is_power_of_two() {
            self.fail(
                format!("{p}/@extent-size"),
                format!("{es} bytes is not an extent size (a power of two, at least 1 KiB)"),
            );
        }
        if g.pvs.is_empty() {
            self.fail(
                p.to_string(),
                format!("volume group {} has no <pv>", g.name),
            );
        }
        let mut capacity = 0u64;
        for (i, pv) in g.pvs.iter().enumerate() {
            let pp = format!("{p}/pv[{}]", i + 1);
            self.lvm_id(&format!("{pp}/@uuid"), &pv.uuid, ids);
            let used = pv
                .extents
                .checked_mul(es)
                .and_then(|b| b.checked_add(pv.pe_start));
            if used.is_none_or(|u| u > pv.size) {
                self.fail(
                    format!("{pp}/@extents"),
                    format!(
                        "{} extents of {es} bytes from byte {} do not fit in the PV's {} bytes",
                        pv.extents, pv.pe_start, pv.size
                    ),
                );
            }
            capacity = capacity.saturating_add(pv.extents.saturating_mul(es));
            self.use_device(users, &pp, "@ref", pv.device.clone(), true);
            if let Some(uuid) = Some(&pv.uuid)
                && !g.metadata.contains(uuid.as_str())
            {
                self.fail(
                    format!("{pp}/@uuid"),
                    format!("PV {uuid} is not in the group's <metadata>"),
                );
            }
        }
        let mut names = HashSet::new();
        let mut allocated = 0u64;
        for (i, lv) in g.lvs.iter().enumerate() {
            let lp = format!("{p}/lv[{}]", i + 1);
            check_lvm_name(self, &format!("{lp}/@name"), &lv.name);
            if !names.insert(lv.name.as_str()) {
                self.fail(
                    format!("{lp}/@name"),
                    format!("LV {}/{} listed twice", g.name, lv.name),
                );
            }
            self.lvm_id(&format!("{lp}/@uuid"), &lv.uuid, ids);
            if !g.metadata.contains(lv.uuid.as_str()) {
                self.fail(
                    format!("{lp}/@uuid"),
                    format!("LV {} is not in the group's <metadata>", lv.uuid),
                );
            }
            self.lv(&lp, g, lv);
            allocated = allocated.saturating_add(match lv.lv_type.as_str() {
                "linear" | "striped" | "raid0" => lv.size,
                "thin-pool" => lv.size.saturating_add(lv.metadata_size.unwrap_or(0)),
                _ => 0,
            });
        }
        if es > 0 && allocated > capacity {
            self.fail(
                p.to_string(),
                format!(
                    "its LVs need at least {allocated} bytes, more than the {capacity} bytes of its PVs' extents"
                ),
            );
        }
        if g.metadata.trim().is_empty() {
            self.fail(
                format!("{p}/metadata"),
                "empty: the vgcfgbackup text is what vgcfgrestore takes back",
            );
        } else if !g.metadata.contains(g.uuid.as_str()) {
            self.fail(
                format!("{p}/metadata"),
                format!("is not the metadata of VG {} (its id is not in it)", g.uuid),
            );
        }
    }

    fn lv(&mut self, lp: &str, g: &VolumeGroup, lv: &LogicalVolume) {
        let t = lv.lv_type.as_str();
        if !LV_TYPES.contains(&t) {
            self.fail(
                format!("{lp}/@type"),
                format!(
                    "LV {}/{} is a {t} volume, which rewind cannot recreate ({}); convert it (lvconvert) or exclude it",
                    g.name,
                    lv.name,
                    LV_TYPES.join(", ")
                ),
            );
            return;
        }
        if lv.size == 0 {
            self.fail(format!("{lp}/@size"), "empty LV");
        } else if g.extent_size > 0 && !lv.size.is_multiple_of(g.extent_size) {
            self.fail(
                format!("{lp}/@size"),
                format!(
                    "{} bytes is not a whole number of {}-byte extents",
                    lv.size, g.extent_size
                ),
            );
        }
        match (t, &lv.pool) {
            ("thin", None) => self.fail(format!("{lp}/@pool"), "a thin volume needs its pool"),
            ("thin", Some(pool))
                if !g
                    .lvs
                    .iter()
                    .any(|x| &x.name == pool && x.lv_type == "thin-pool") =>
            {
                self.fail(
                    format!("{lp}/@pool"),
                    format!("volume group {} has no thin pool {pool}", g.name),
                );
            }
            ("thin", Some(_)) => {}
            (_, Some(_)) => self.fail(format!("{lp}/@pool"), "only thin volumes have a pool"),
            _ => {}
        }
        if t == "thin-pool" {
            match lv.chunk_size {
                Some(c) if c >= 65536 && c.is_multiple_of(65536) => {}
                Some(c) => self.fail(
                    format!("{lp}/@chunk-size"),
                    format!("{c} bytes is not a thin pool chunk size (a multiple of 64 KiB)"),
                ),
                None => self.fail(
                    format!("{lp}/@chunk-size"),
                    "a thin pool needs its chunk size",
                ),
            }
            if lv.metadata_size.is_none_or(|s| s == 0) {
                self.fail(
                    format!("{lp}/@metadata-size"),
                    "a thin pool needs its metadata LV's size",
                );
            }
        } else {
            if lv.chunk_size.is_some() {
                self.fail(
                    format!("{lp}/@chunk-size"),
                    "only thin pools have a chunk size",
                );
            }
            if lv.metadata_size.is_some() {
                self.fail(
                    format!("{lp}/@metadata-size"),
                    "only thin pools have a metadata LV",
                );
            }
        }
        if t == "striped" {
            if lv.stripes.is_none_or(|s| s < 2) {
                self.fail(
                    format!("{lp}/@stripes"),
                    "a striped LV has two stripes or more",
                );
            }
            if lv
                .stripe_size
                .is_none_or(|s| !s.is_power_of_two() || s < 4096)
            {
                self.fail(
                    format!("{lp}/@stripe-size"),
                    "a striped LV needs its stripe size (a power of two, at least 4096)",
                );
            }
        }
    }

    fn lvm_id(&mut self, p: &str, id: &str, seen: &mut HashSet<String>) {
        if !is_lvm_id(id) {
            self.fail(
                p.to_string(),
                format!("\"{id}\" is not an LVM id (32 characters in groups 6-4-4-4-4-4-6)"),
            );
        } else if !seen.insert(id.to_string()) {
            self.fail(p.to_string(), format!("LVM id {id} listed twice"));
        }
    }

    /// `@volume` names a device of the stack; a disk or partition is named
    /// by `@disk`/`@partition`, so that each has one spelling.
    fn stack_volume(&mut self, p: &str, v: &StackRef) -> bool {
        if matches!(v, StackRef::Disk(_) | StackRef::Partition(..)) {
            self.fail(
                format!("{p}/@volume"),
                format!("{v} is a disk or partition: name it with disk= and partition="),
            );
            return false;
        }
        true
    }

    fn filesystem(&mut self, p: &str, fs: &Filesystem, users: &mut Users) {
        if let Some(v) = &fs.volume
            && self.stack_volume(p, v)
        {
            if fs.disk.is_some() || fs.partition.is_some() {
                self.fail(
                    format!("{p}/@volume"),
                    "a filesystem is on a disk or on a volume, not both",
                );
            }
            self.use_device(users, p, "@volume", v.clone(), true);
        }
        let is_btrfs = matches!(fs.fs_type, FsType::Btrfs(_));
        if !is_btrfs && (!fs.members.is_empty() || !fs.subvolumes.is_empty()) {
            self.fail(
                p.to_string(),
                format!(
                    "only btrfs has <member> and <subvolume> elements, not {}",
                    fs.fs_type
                ),
            );
            return;
        }
        let mut devids = HashSet::new();
        for (i, mem) in fs.members.iter().enumerate() {
            let mp = format!("{p}/member[{}]", i + 1);
            if mem.devid < 2 || !devids.insert(mem.devid) {
                self.fail(
                    format!("{mp}/@devid"),
                    format!(
                        "devid {} is taken (the filesystem's own device is 1; each member has its own)",
                        mem.devid
                    ),
                );
            }
            self.use_device(users, &mp, "@ref", mem.device.clone(), true);
        }
        if let Some(params) = fs.fs_type.btrfs() {
            for (attr, profile) in [
                ("@data-profile", &params.data_profile),
                ("@metadata-profile", &params.metadata_profile),
            ] {
                if let Some(v) = profile
                    && !BTRFS_PROFILES.contains(&v.as_str())
                {
                    self.fail(
                        format!("{p}/btrfs/{attr}"),
                        format!(
                            "unknown btrfs profile \"{v}\" ({})",
                            BTRFS_PROFILES.join(", ")
                        ),
                    );
                }
            }
        }
        let mut ids = HashSet::new();
        let mut paths = HashSet::new();
        let mut defaults = 0;
        for (i, sv) in fs.subvolumes.iter().enumerate() {
            let sp = format!("{p}/subvolume[{}]", i + 1);
            if sv.id < 256 || !ids.insert(sv.id) {
                self.fail(
                    format!("{sp}/@id"),
                    format!(
                        "subvolume id {} is taken or below 256 (the first a subvolume gets)",
                        sv.id
                    ),
                );
            }
            let bad_path = sv.path.is_empty()
                || sv.path.starts_with('/')
                || sv
                    .path
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..");
            if bad_path {
                self.fail(
                    format!("{sp}/@path"),
                    format!(
                        "\"{}\" is not a path from the top level (`@home`, `@snapshots/1/snapshot`)",
                        sv.path
                    ),
                );
            } else if !paths.insert(sv.path.as_str()) {
                self.fail(
                    format!("{sp}/@path"),
                    format!("subvolume {} listed twice", sv.path),
                );
            }
            if sv.default {
                defaults += 1;
                if defaults > 1 {
                    self.fail(
                        format!("{sp}/@default"),
                        "a filesystem has one default subvolume",
                    );
                }
            }
        }
    }
}

/// `disk/NAME` or `disk/NAME/N` for a filesystem's own `@disk`/`@partition`.
fn direct_ref(disk: &str, partition: Option<u32>) -> StackRef {
    match partition {
        Some(n) => StackRef::Partition(disk.to_string(), n),
        None => StackRef::Disk(disk.to_string()),
    }
}

/// The attribute a filesystem's own placement is named by.
fn direct_attr(partition: Option<u32>) -> &'static str {
    if partition.is_some() {
        "@partition"
    } else {
        "@disk"
    }
}

/// btrfs block group profiles (`mkfs.btrfs -d/-m`).
const BTRFS_PROFILES: &[&str] = &[
    "single", "dup", "raid0", "raid1", "raid1c3", "raid1c4", "raid10", "raid5", "raid6",
];

/// An MD or device-mapper name: what /dev/md/NAME or /dev/mapper/NAME holds.
fn check_name(c: &mut StackChecker<'_>, p: &str, name: &str, what: &str) {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-:#@".contains(&b));
    if !ok {
        c.fail(
            p.to_string(),
            format!("\"{name}\" is not a name for {what} (letters, digits, + _ . - : # @)"),
        );
    }
}

/// A VG or LV name as LVM accepts it.
fn check_lvm_name(c: &mut StackChecker<'_>, p: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
    if !ok {
        c.fail(
            p.to_string(),
            format!(
                "\"{name}\" is not an LVM name (letters, digits, + _ . -, not starting with -)"
            ),
        );
    }
}

/// `xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx`, as mdadm prints array UUIDs.
pub(crate) fn is_md_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split(':').collect();
    groups.len() == 4
        && groups
            .iter()
            .all(|g| g.len() == 8 && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// LVM's id form: 32 characters of `[0-9A-Za-z!#]` in groups 6-4-4-4-4-4-6.
pub(crate) fn is_lvm_id(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [6, 4, 4, 4, 4, 4, 6];
    groups.len() == lens.len()
        && groups.iter().zip(lens).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'!' || b == b'#')
        })
}
