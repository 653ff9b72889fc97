//! Schema 2: the storage stack between the disks and the filesystems, as
//! a graph of block devices. Each layer is its own element (`<md>`,
//! `<luks>`, `<vg>`), and every block device it is built on is named by a
//! [`StackRef`] (`disk/vda/2`, `md/root`, `luks/cryptroot`, `lv/vg0/root`),
//! so any order real systems use — LVM on LUKS on MD, LUKS on an LV, a
//! filesystem on a whole disk — is the same few elements referring to each
//! other; the order of creation is computed from the references, not from
//! the order of the elements.
//!
//! Each layer carries what recreating it *exactly* needs (the UUIDs, the
//! names, the geometry the tools take as options, and for LVM the
//! `vgcfgbackup` text `vgcfgrestore` takes back), and a summary the plan
//! shows and the verification compares. docs/manifest.md documents every
//! element.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ids::TreeId;

/// One block device of the stack, by what it is rather than by its kernel
/// name (which changes from boot to boot and machine to machine).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackRef {
    /// `disk/vda`: a whole disk, by its `<disk name>`.
    Disk(String),
    /// `disk/vda/2`: partition 2 of that disk.
    Partition(String, u32),
    /// `md/root`: an MD array, by its `<md name>`.
    Md(String),
    /// `luks/cryptroot`: the opened mapping of a `<luks name>`.
    Luks(String),
    /// `lv/vg0/root`: a logical volume of a `<vg>`.
    Lv(String, String),
}

impl StackRef {
    /// The element kind this reference points at, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            StackRef::Disk(_) => "disk",
            StackRef::Partition(..) => "partition",
            StackRef::Md(_) => "MD array",
            StackRef::Luks(_) => "LUKS volume",
            StackRef::Lv(..) => "logical volume",
        }
    }
}

impl fmt::Display for StackRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackRef::Disk(d) => write!(f, "disk/{d}"),
            StackRef::Partition(d, n) => write!(f, "disk/{d}/{n}"),
            StackRef::Md(n) => write!(f, "md/{n}"),
            StackRef::Luks(n) => write!(f, "luks/{n}"),
            StackRef::Lv(vg, lv) => write!(f, "lv/{vg}/{lv}"),
        }
    }
}

impl FromStr for StackRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "\"{s}\" is not a block device reference (disk/NAME, disk/NAME/N, md/NAME, luks/NAME, lv/VG/LV)"
            )
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty() || p.trim() != *p) {
            return Err(bad());
        }
        Ok(match parts.as_slice() {
            ["disk", d] => StackRef::Disk((*d).into()),
            ["disk", d, n] => {
                let n: u32 = n
                    .parse()
                    .ok()
                    .filter(|k: &u32| *k > 0 && k.to_string() == *n)
                    .ok_or_else(bad)?;
                StackRef::Partition((*d).into(), n)
            }
            ["md", n] => StackRef::Md((*n).into()),
            ["luks", n] => StackRef::Luks((*n).into()),
            ["lv", vg, lv] => StackRef::Lv((*vg).into(), (*lv).into()),
            _ => return Err(bad()),
        })
    }
}

impl Serialize for StackRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StackRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Test fixtures write references as literals.
#[cfg(test)]
impl From<&str> for StackRef {
    fn from(s: &str) -> Self {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }
}

// ---------------------------------------------------------------------------
// MD RAID

/// `<md>`: a Linux software RAID array (`mdadm --detail --export`, sysfs
/// `md/`). Firmware RAID (Intel IMSM/VROC, DDF containers and the arrays
/// inside them) is recorded with its metadata name so that validation can
/// refuse it by name; rewind never half-recreates one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdArray {
    /// The name others refer to (`md/NAME`): the `/dev/md/NAME` link
    /// (`MD_DEVNAME`), or the kernel name (`md0`) when there is none.
    #[serde(rename = "@name")]
    pub name: String,
    /// Device path at capture time (`/dev/md127`).
    #[serde(rename = "@device")]
    pub device: String,
    /// The name in the superblock (`web1:root`, `MD_NAME`); metadata 0.90
    /// has none.
    #[serde(rename = "@array-name", skip_serializing_if = "Option::is_none")]
    pub array_name: Option<String>,
    /// Array UUID as mdadm prints it (`3b0c9e2a:5d1f4e6b:8a7c2d90:1e3f5a7b`).
    #[serde(rename = "@uuid")]
    pub uuid: String,
    /// `raid0`, `raid1`, `raid4`, `raid5`, `raid6`, `raid10`, `linear`.
    #[serde(rename = "@level")]
    pub level: String,
    /// Superblock format: `0.90`, `1.0` (at the end: what firmware reads
    /// on a mirrored ESP or /boot), `1.1`, `1.2`; `imsm`, `ddf` and
    /// `external:...` are firmware RAID and refused.
    #[serde(rename = "@metadata")]
    pub metadata: String,
    /// Active members the array is made of (`--raid-devices`).
    #[serde(rename = "@raid-devices")]
    pub raid_devices: u32,
    /// Array size in bytes (what sits on top of it sees).
    #[serde(rename = "@size")]
    pub size: u64,
    /// Chunk size in bytes (striped levels; absent for raid1 and linear).
    #[serde(rename = "@chunk-size", skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// Layout (`left-symmetric`, `n2`, ...), for raid5/6/10.
    #[serde(rename = "@layout", skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Write-intent bitmap: `none` or `internal`.
    #[serde(rename = "@bitmap", default = "no_bitmap")]
    pub bitmap: String,
    /// Where the data starts on each member, in bytes (metadata 1.x), so
    /// that the array is made with the same usable member size.
    #[serde(rename = "@data-offset", skip_serializing_if = "Option::is_none")]
    pub data_offset: Option<u64>,
    #[serde(rename = "member", default)]
    pub members: Vec<MdMember>,
}

fn no_bitmap() -> String {
    "none".to_string()
}

/// `<member>` of an array: a block device and its role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdMember {
    #[serde(rename = "@ref")]
    pub device: StackRef,
    /// Slot number (`0` ... raid-devices − 1) or `spare`.
    #[serde(rename = "@role")]
    pub role: String,
}

impl MdMember {
    /// The slot, or None for a spare (or a malformed role, refused by validation).
    pub fn slot(&self) -> Option<u32> {
        self.role.parse().ok()
    }
}

/// Metadata formats rewind recreates with `mdadm --create --metadata`.
pub const MD_METADATA: &[&str] = &["0.90", "1.0", "1.1", "1.2"];

/// RAID levels rewind recreates.
pub const MD_LEVELS: &[&str] = &[
    "linear", "raid0", "raid1", "raid4", "raid5", "raid6", "raid10",
];

// ---------------------------------------------------------------------------
// LUKS

/// `<luks>`: a LUKS1 or LUKS2 volume and its opened mapping. The header is
/// kept byte for byte (its `<header>` tree in the repository) and written
/// back with `cryptsetup luksHeaderRestore`, so the machine's own
/// passphrases, keyfiles and tokens keep working with the same volume key;
/// the fields are what `luksFormat` would need without it and what the
/// verification compares. No key is ever in the manifest: `<escrow>` names
/// a key the recovery server holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Luks {
    /// The mapping name (`/dev/mapper/NAME`, as crypttab names it); others
    /// refer to the opened volume as `luks/NAME`.
    #[serde(rename = "@name")]
    pub name: String,
    /// The block device the LUKS header is on.
    #[serde(rename = "@on")]
    pub on: StackRef,
    /// `1` or `2`.
    #[serde(rename = "@version")]
    pub version: u32,
    #[serde(rename = "@uuid")]
    pub uuid: super::Guid,
    /// LUKS2 only.
    #[serde(rename = "@label", skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `aes-xts-plain64`.
    #[serde(rename = "@cipher")]
    pub cipher: String,
    /// Volume key size in bits (512 for aes-xts with 256-bit AES).
    #[serde(rename = "@key-size")]
    pub key_size: u32,
    /// Encryption sector size in bytes (LUKS2; LUKS1 is always 512).
    #[serde(rename = "@sector-size", default = "sector_512")]
    pub sector_size: u32,
    /// Where the encrypted data starts, in bytes from the device start
    /// (the header's size).
    #[serde(rename = "@data-offset")]
    pub data_offset: u64,
    /// Size of the opened mapping in bytes.
    #[serde(rename = "@size")]
    pub size: u64,
    /// The digest's hash (`sha256`).
    #[serde(rename = "@hash", skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(rename = "keyslot", default)]
    pub keyslots: Vec<LuksKeyslot>,
    /// The header as captured (`cryptsetup luksHeaderBackup`), when the
    /// snapshot has data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<LuksHeader>,
    /// The key the recovery server holds for this volume, when escrow is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escrow: Option<LuksEscrow>,
}

fn sector_512() -> u32 {
    512
}

/// `<keyslot>`: one used keyslot, and what unlocks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuksKeyslot {
    /// Slot number (LUKS1 0–7, LUKS2 0–31).
    #[serde(rename = "@id")]
    pub id: u32,
    /// Key derivation (`argon2id`, `argon2i`, `pbkdf2`).
    #[serde(rename = "@pbkdf")]
    pub pbkdf: String,
    /// The LUKS2 token bound to the slot (`systemd-tpm2`, `systemd-fido2`,
    /// `systemd-recovery`, `clevis`), when there is one: a slot bound to
    /// a TPM2 or FIDO2 device needs re-enrolment after a recovery onto
    /// other hardware.
    #[serde(rename = "@token", skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl LuksKeyslot {
    /// Bound to a device of the machine (TPM2, FIDO2), so that it may not
    /// open the volume on other hardware.
    pub fn hardware_bound(&self) -> bool {
        matches!(
            self.token.as_deref(),
            Some("systemd-tpm2" | "systemd-fido2" | "clevis")
        )
    }
}

/// `<header>`: the saved LUKS header: a tree in the repository holding one
/// file whose content is the header, byte for byte (like `<raw>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuksHeader {
    #[serde(rename = "@tree")]
    pub tree: TreeId,
    /// The header's size (equal to the data offset).
    #[serde(rename = "@bytes")]
    pub bytes: u64,
}

/// `<escrow>`: a reference to a key escrowed with the recovery server,
/// never the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuksEscrow {
    /// `volume-key`: the volume key, read from the open mapping at capture.
    #[serde(rename = "@kind")]
    pub kind: String,
    /// The server's id of the escrowed key (opaque to the manifest).
    #[serde(rename = "@key-id")]
    pub key_id: String,
}

/// Escrow kinds this schema knows.
pub const ESCROW_KINDS: &[&str] = &["volume-key"];

// ---------------------------------------------------------------------------
// LVM

/// `<vg>`: an LVM volume group with its physical and logical volumes. The
/// `<metadata>` text is `vgcfgbackup`'s file, which `vgcfgrestore` takes
/// back whole (every LV UUID, segment, tag and flag); the attributes and
/// `<pv>`/`<lv>` summarise it for the plan and the verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeGroup {
    #[serde(rename = "@name")]
    pub name: String,
    /// LVM's id form: 32 characters in groups 6-4-4-4-4-4-6.
    #[serde(rename = "@uuid")]
    pub uuid: String,
    /// Physical extent size in bytes.
    #[serde(rename = "@extent-size")]
    pub extent_size: u64,
    #[serde(rename = "@tags", default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(rename = "pv", default)]
    pub pvs: Vec<PhysicalVolume>,
    #[serde(rename = "lv", default)]
    pub lvs: Vec<LogicalVolume>,
    /// The `vgcfgbackup -f FILE` text of this group.
    pub metadata: String,
}

/// `<pv>`: one physical volume of the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysicalVolume {
    #[serde(rename = "@ref")]
    pub device: StackRef,
    #[serde(rename = "@uuid")]
    pub uuid: String,
    /// The device's size in bytes as LVM saw it (`dev_size`).
    #[serde(rename = "@size")]
    pub size: u64,
    /// Where the first extent starts, in bytes (`pe_start`).
    #[serde(rename = "@pe-start")]
    pub pe_start: u64,
    /// Extents on this PV (`pv_pe_count`).
    #[serde(rename = "@extents")]
    pub extents: u64,
}

/// `<lv>`: one visible logical volume (hidden ones — thin pool data and
/// metadata, RAID images, the pool metadata spare — are in `<metadata>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalVolume {
    #[serde(rename = "@name")]
    pub name: String,
    #[serde(rename = "@uuid")]
    pub uuid: String,
    /// `linear`, `striped`, `mirror`, `raid0`, `raid1`, `raid4`, `raid5`,
    /// `raid6`, `raid10`, `thin-pool`, `thin`.
    #[serde(rename = "@type")]
    pub lv_type: String,
    /// Size in bytes (a thin volume: its virtual size).
    #[serde(rename = "@size")]
    pub size: u64,
    #[serde(rename = "@stripes", skip_serializing_if = "Option::is_none")]
    pub stripes: Option<u32>,
    #[serde(rename = "@stripe-size", skip_serializing_if = "Option::is_none")]
    pub stripe_size: Option<u64>,
    /// A thin volume's pool (an `<lv>` of type `thin-pool` in this group).
    #[serde(rename = "@pool", skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// A thin pool's chunk size in bytes.
    #[serde(rename = "@chunk-size", skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// A thin pool's metadata LV size in bytes.
    #[serde(rename = "@metadata-size", skip_serializing_if = "Option::is_none")]
    pub metadata_size: Option<u64>,
    /// Active at capture.
    #[serde(rename = "@active", default)]
    pub active: bool,
    /// The activation-skip flag (`lvcreate -k`).
    #[serde(rename = "@skip-activation", default, skip_serializing_if = "is_false")]
    pub skip_activation: bool,
    #[serde(rename = "@tags", default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// LV types rewind recreates (anything else — cache, VDO, snapshots,
/// integrity — is refused by name).
pub const LV_TYPES: &[&str] = &[
    "linear",
    "striped",
    "mirror",
    "raid0",
    "raid1",
    "raid4",
    "raid5",
    "raid6",
    "raid10",
    "thin-pool",
    "thin",
];

// ---------------------------------------------------------------------------
// btrfs beyond one device

/// `<member>` of a btrfs filesystem: a device it spans besides its own
/// `@disk`/`@volume` (`mkfs.btrfs` takes them all at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BtrfsMember {
    #[serde(rename = "@ref")]
    pub device: StackRef,
    /// The btrfs device id (`devid`); the filesystem's own device is 1.
    #[serde(rename = "@devid")]
    pub devid: u64,
}

/// `<subvolume>` of a btrfs filesystem (`btrfs subvolume list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subvolume {
    /// Subvolume id (256 and up).
    #[serde(rename = "@id")]
    pub id: u64,
    /// Path from the top level, without a leading slash (`@`, `@home`,
    /// `@snapshots/1/snapshot`).
    #[serde(rename = "@path")]
    pub path: String,
    #[serde(rename = "@read-only", default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// The filesystem's default subvolume (`btrfs subvolume get-default`).
    #[serde(rename = "@default", default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// The subvolume's files, when it was mounted outside the tree of the
    /// filesystem's own `<data>` (`@home` on /home beside `@` on /): read
    /// from that mount, restored into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<super::FsData>,
}

// ---------------------------------------------------------------------------

/// The schema a manifest needs: 1 while it has no stack element (so an
/// older rewind — a recovery image, a server — still reads the manifests
/// of plain machines), 2 otherwise.
pub fn required_schema(m: &super::Manifest) -> u32 {
    let stacked = !m.md_arrays.is_empty()
        || !m.luks.is_empty()
        || !m.volume_groups.is_empty()
        || m.filesystems
            .iter()
            .any(|f| f.volume.is_some() || !f.members.is_empty() || !f.subvolumes.is_empty())
        || m.filesystems
            .iter()
            .any(|f| f.data.as_ref().is_some_and(|d| d.read.is_some()))
        || m.swaps.iter().any(|s| s.volume.is_some())
        || m.filesystems
            .iter()
            .filter_map(|f| f.fs_type.btrfs())
            .any(|p| p.data_profile.is_some() || p.metadata_profile.is_some());
    if stacked { 2 } else { 1 }
}

/// One layer of the stack, by its index in the manifest's list of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    Md(usize),
    Luks(usize),
    Vg(usize),
}

impl Layer {
    /// How the layer is referred to in messages (`md/root`, `luks/cryptroot`, `vg vg0`).
    pub fn describe(&self, m: &super::Manifest) -> String {
        match *self {
            Layer::Md(i) => format!("md/{}", m.md_arrays[i].name),
            Layer::Luks(i) => format!("luks/{}", m.luks[i].name),
            Layer::Vg(i) => format!("vg {}", m.volume_groups[i].name),
        }
    }

    /// The block devices this layer is built on.
    pub fn needs<'m>(&self, m: &'m super::Manifest) -> Vec<&'m StackRef> {
        match *self {
            Layer::Md(i) => m.md_arrays[i].members.iter().map(|x| &x.device).collect(),
            Layer::Luks(i) => vec![&m.luks[i].on],
            Layer::Vg(i) => m.volume_groups[i].pvs.iter().map(|x| &x.device).collect(),
        }
    }
}

/// The layer that makes a block device (None for disks and partitions,
/// and for a reference to nothing).
pub fn producer(m: &super::Manifest, r: &StackRef) -> Option<Layer> {
    match r {
        StackRef::Disk(_) | StackRef::Partition(..) => None,
        StackRef::Md(n) => m.md_arrays.iter().position(|a| &a.name == n).map(Layer::Md),
        StackRef::Luks(n) => m.luks.iter().position(|l| &l.name == n).map(Layer::Luks),
        StackRef::Lv(vg, _) => m
            .volume_groups
            .iter()
            .position(|g| &g.name == vg)
            .map(Layer::Vg),
    }
}

/// Every layer in an order that makes each after what it is built on (for
/// equal standing, MD arrays, then LUKS volumes, then volume groups, each in
/// manifest order). Fails on a cycle, naming it.
pub fn creation_order(m: &super::Manifest) -> Result<Vec<Layer>, String> {
    let all: Vec<Layer> = (0..m.md_arrays.len())
        .map(Layer::Md)
        .chain((0..m.luks.len()).map(Layer::Luks))
        .chain((0..m.volume_groups.len()).map(Layer::Vg))
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        m: &super::Manifest,
        layer: Layer,
        marks: &mut std::collections::HashMap<Layer, Mark>,
        path: &mut Vec<Layer>,
        out: &mut Vec<Layer>,
    ) -> Result<(), String> {
        match marks.get(&layer).copied().unwrap_or(Mark::New) {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let start = path.iter().position(|l| *l == layer).unwrap_or(0);
                let cycle: Vec<String> = path[start..]
                    .iter()
                    .chain(std::iter::once(&layer))
                    .map(|l| l.describe(m))
                    .collect();
                return Err(format!(
                    "the stack is built on itself: {}",
                    cycle.join(" → ")
                ));
            }
            Mark::New => {}
        }
        marks.insert(layer, Mark::Visiting);
        path.push(layer);
        for r in layer.needs(m) {
            if let Some(dep) = producer(m, r) {
                visit(m, dep, marks, path, out)?;
            }
        }
        path.pop();
        marks.insert(layer, Mark::Done);
        out.push(layer);
        Ok(())
    }
    let mut marks = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(all.len());
    for layer in all {
        visit(m, layer, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_malformed_ones_are_refused() {
        for s in [
            "disk/vda",
            "disk/nvme0n1/12",
            "md/root",
            "luks/cryptroot",
            "lv/vg0/root",
        ] {
            let r: StackRef = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
        }
        assert_eq!(
            "disk/sda/2".parse::<StackRef>().unwrap(),
            StackRef::Partition("sda".into(), 2)
        );
        for bad in [
            "",
            "vda",
            "disk/",
            "disk/vda/0",
            "disk/vda/02",
            "disk/vda/x",
            "disk/vda/1/2",
            "lv/vg0",
            "md//x",
            "zfs/tank",
            "/dev/sda1",
            "luks/ a",
        ] {
            let e = bad.parse::<StackRef>().unwrap_err();
            assert!(e.contains("not a block device reference"), "{bad}: {e}");
        }
    }
}
