//! The manifest model: a machine's configuration at one point in time.
//!
//! Field names map one-to-one onto the XML form (`@name` is an attribute, other
//! fields are child elements); docs/manifest.md documents every element.

use serde::{Deserialize, Serialize};

pub use super::ids::{Guid, MbrSignature, MbrType, Timestamp, TreeId};
pub use super::stack::*;
pub use crate::fs::{BtrfsParams, ExtParams, FsType, VfatParams, XfsParams};

/// The newest schema version this build writes and reads: 2 adds the
/// storage stack (`<md>`, `<luks>`, `<vg>`, `@volume`, btrfs members and
/// subvolumes). A manifest without a stack element is written as schema 1
/// ([`required_schema`]).
pub const SCHEMA_VERSION: u32 = 2;

/// Every schema version this build reads, oldest first.
pub const SCHEMA_VERSIONS: &[u32] = &[1, 2];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "manifest", deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "@schema")]
    pub schema: u32,
    pub snapshot: Snapshot,
    pub system: System,
    #[serde(default)]
    pub network: Network,
    #[serde(rename = "disk", default)]
    pub disks: Vec<Disk>,
    /// MD RAID arrays (schema 2).
    #[serde(rename = "md", default, skip_serializing_if = "Vec::is_empty")]
    pub md_arrays: Vec<MdArray>,
    /// LUKS volumes (schema 2).
    #[serde(rename = "luks", default, skip_serializing_if = "Vec::is_empty")]
    pub luks: Vec<Luks>,
    /// LVM volume groups (schema 2).
    #[serde(rename = "vg", default, skip_serializing_if = "Vec::is_empty")]
    pub volume_groups: Vec<VolumeGroup>,
    #[serde(rename = "filesystem", default)]
    pub filesystems: Vec<Filesystem>,
    #[serde(rename = "swap", default)]
    pub swaps: Vec<Swap>,
    #[serde(default)]
    pub boot: Boot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Unique id of the snapshot (assigned by capture).
    #[serde(rename = "@id")]
    pub id: String,
    /// The host name the snapshot is filed under on the server.
    #[serde(rename = "@host")]
    pub host: String,
    /// When the snapshot was taken, RFC 3339 in UTC (`2026-11-25T06:00:00Z`).
    #[serde(rename = "@time")]
    pub time: Timestamp,
    #[serde(rename = "@parent", skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The rewind version that wrote the manifest.
    #[serde(rename = "@tool")]
    pub tool: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub hostname: String,
    #[serde(rename = "machine-id", skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<OsRelease>,
    pub kernel: Kernel,
    pub firmware: Firmware,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The machine's firmware identity (SMBIOS/DMI), when it has a usable
    /// one: what a recovery claim is bound to by default, and how a
    /// recovery knows it runs on other hardware.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dmi: Option<Dmi>,
    /// How the system builds its initramfs, when it has a known tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<InitramfsConfig>,
}

/// The transports a disk's `transport` attribute may name.
pub const DISK_TRANSPORTS: &[&str] = &[
    "sata",
    "sas",
    "nvme",
    "usb",
    "fc",
    "iscsi",
    "virtio",
    "scsi",
    "mmc",
    "multipath",
    "loop",
];

/// The system's initramfs generator and the settings that decide which
/// drivers its images carry (a host-only image carries only the drivers of
/// the hardware it was built on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitramfsConfig {
    /// `initramfs-tools`, `dracut` or `mkinitcpio`.
    #[serde(rename = "@tool")]
    pub tool: String,
    /// initramfs-tools' `MODULES=` (`most`, `dep`, `list`, `netboot`), or
    /// mkinitcpio's `MODULES=(...)` as a space-separated list.
    #[serde(rename = "@modules", default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
    /// dracut's `hostonly=` (`yes`, `no`); for mkinitcpio, `yes` when its
    /// HOOKS has `autodetect`; for initramfs-tools, `yes` when MODULES=dep.
    #[serde(rename = "@hostonly", default, skip_serializing_if = "Option::is_none")]
    pub hostonly: Option<String>,
}

/// The initramfs generators [`InitramfsConfig::tool`] may name.
pub const INITRAMFS_TOOLS: &[&str] = &["initramfs-tools", "dracut", "mkinitcpio"];

/// SMBIOS/DMI identity as the kernel shows it in /sys/class/dmi/id.
/// Placeholder values vendors ship ("To Be Filled By O.E.M.", an all-zero
/// UUID) are left out when read, so that two machines never share an
/// identity by accident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Dmi {
    /// The system UUID, lowercase.
    #[serde(rename = "@system-uuid", skip_serializing_if = "Option::is_none")]
    pub system_uuid: Option<String>,
    #[serde(rename = "@serial", skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(rename = "@vendor", skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(rename = "@product", skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
}

impl Dmi {
    /// Whether it names a machine at all (a system UUID or a serial).
    pub fn identifies(&self) -> bool {
        self.system_uuid.is_some() || self.serial.is_some()
    }

    /// Whether `other` is the same machine: the same system UUID when both
    /// have one, else the same serial when both have one; never from
    /// vendor or product alone.
    pub fn same_machine(&self, other: &Dmi) -> bool {
        match (&self.system_uuid, &other.system_uuid) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => matches!((&self.serial, &other.serial), (Some(a), Some(b)) if a == b),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsRelease {
    #[serde(rename = "@id")]
    pub id: String,
    #[serde(rename = "@version-id", skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(rename = "@pretty-name", skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// `uname -r`
    #[serde(rename = "@release")]
    pub release: String,
    /// `uname -m`
    #[serde(rename = "@arch")]
    pub arch: String,
    /// /proc/cmdline of the running kernel.
    #[serde(rename = "@cmdline", skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(rename = "interface", default)]
    pub interfaces: Vec<Interface>,
    #[serde(rename = "route", default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    #[serde(rename = "@name")]
    pub name: String,
    /// Hardware address, lowercase colon-separated (`52:54:00:12:34:56`);
    /// a malformed one is refused while the XML is read.
    #[serde(rename = "@mac", skip_serializing_if = "Option::is_none")]
    pub mac: Option<crate::util::mac::Mac>,
    #[serde(rename = "@mtu")]
    pub mtu: u32,
    /// Kernel driver bound to the device (`virtio_net`, `e1000e`), when it has one.
    #[serde(rename = "@driver", skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(rename = "address", default)]
    pub addresses: Vec<Address>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressMethod {
    /// Configured by hand in the system's network configuration.
    Static,
    /// Leased from a DHCP server.
    Dhcp,
    /// IPv6 stateless autoconfiguration.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Address with prefix length: `192.0.2.10/24`, `2001:db8::10/64`.
    #[serde(rename = "@cidr")]
    pub cidr: String,
    #[serde(rename = "@method")]
    pub method: AddressMethod,
    /// Where the method was learnt: `ifupdown`, `networkd`, `networkmanager`,
    /// `netplan`, or `kernel` (from the address's lifetime alone).
    #[serde(rename = "@source")]
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `default` or a network in CIDR form.
    #[serde(rename = "@destination")]
    pub destination: String,
    #[serde(rename = "@gateway", skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(rename = "@interface", skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(rename = "@metric", skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(rename = "nameserver", default)]
    pub nameservers: Vec<String>,
    #[serde(rename = "search", default)]
    pub search: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Kernel name at capture time (`sda`, `nvme0n1`, `vda`).
    #[serde(rename = "@name")]
    pub name: String,
    #[serde(rename = "@path")]
    pub path: String,
    /// Size in bytes.
    #[serde(rename = "@size")]
    pub size: u64,
    #[serde(rename = "@logical-sector-size")]
    pub logical_sector_size: u32,
    #[serde(rename = "@physical-sector-size")]
    pub physical_sector_size: u32,
    #[serde(rename = "@model", skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(rename = "@serial", skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(rename = "@wwn", skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// The disk's kernel driver (`sd`, `virtio_blk`, `nvme`).
    #[serde(rename = "@driver", default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The driver of the controller it hangs on (`ahci`, `virtio_scsi`,
    /// `nvme`, `mpt3sas`, `uas`): what an initramfs must carry to find it.
    #[serde(
        rename = "@controller",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub controller: Option<String>,
    /// How it is attached: one of [`DISK_TRANSPORTS`].
    #[serde(
        rename = "@transport",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub transport: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpt: Option<Gpt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbr: Option<Mbr>,
    /// The first 440 bytes of LBA 0 (boot loader code), hex, when not all zero.
    #[serde(rename = "boot-code", skip_serializing_if = "Option::is_none")]
    pub boot_code: Option<String>,
    /// Sectors between the MBR and the first partition that hold data (GRUB's
    /// core.img on BIOS/MBR systems); their content is stored with the data.
    #[serde(rename = "boot-gap", skip_serializing_if = "Option::is_none")]
    pub boot_gap: Option<BootGap>,
    /// Raw regions whose bytes the snapshot holds (the boot gap, a BIOS boot
    /// partition, small partitions without a filesystem rewind knows).
    #[serde(rename = "raw", default, skip_serializing_if = "Vec::is_empty")]
    pub raw: Vec<RawData>,
}

/// The saved bytes of one raw region of a disk: a tree in the repository
/// holding one file entry whose content is the region, byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    /// `boot-gap`, or `partition-N` for partition N of the disk.
    #[serde(rename = "@region")]
    pub region: String,
    /// The tree's id (BLAKE3 of its chunk list), 64 hex digits.
    #[serde(rename = "@tree")]
    pub tree: TreeId,
    /// The region's size in bytes (all of it is stored).
    #[serde(rename = "@bytes")]
    pub bytes: u64,
}

/// A raw region of a disk, as `<raw region>` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionName {
    /// The sectors between the MBR and the first partition.
    BootGap,
    Partition(u32),
}

impl RegionName {
    pub fn parse(s: &str) -> Option<RegionName> {
        if s == "boot-gap" {
            return Some(RegionName::BootGap);
        }
        let n = s.strip_prefix("partition-")?;
        if n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok().filter(|&n| n > 0).map(RegionName::Partition)
    }
}

impl std::fmt::Display for RegionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionName::BootGap => f.write_str("boot-gap"),
            RegionName::Partition(n) => write!(f, "partition-{n}"),
        }
    }
}

impl Disk {
    /// The saved bytes of a region, when the snapshot holds them.
    pub fn raw_data(&self, region: RegionName) -> Option<&RawData> {
        self.raw
            .iter()
            .find(|r| RegionName::parse(&r.region) == Some(region))
    }

    /// A region's first byte and length on this disk, if the disk has it.
    pub fn region_extent(&self, region: RegionName) -> Option<(u64, u64)> {
        let ss = u64::from(self.logical_sector_size);
        let (first, sectors) = match region {
            RegionName::BootGap => {
                let g = self.boot_gap.as_ref()?;
                (g.first_lba, (g.last_lba + 1).checked_sub(g.first_lba)?)
            }
            RegionName::Partition(n) => match (&self.gpt, &self.mbr) {
                (Some(g), _) => {
                    let p = g.partitions.iter().find(|p| p.number == n)?;
                    (p.first_lba, (p.last_lba + 1).checked_sub(p.first_lba)?)
                }
                (_, Some(m)) => {
                    let p = m
                        .partitions
                        .iter()
                        .find(|p| p.number == n && p.kind != MbrKind::Extended)?;
                    (p.start_lba, p.sectors)
                }
                _ => return None,
            },
        };
        Some((first.checked_mul(ss)?, sectors.checked_mul(ss)?))
    }
}

impl Manifest {
    /// The data references of the filesystems this snapshot backed up.
    pub fn backed_up(&self) -> impl Iterator<Item = &FsData> {
        self.filesystems.iter().flat_map(Filesystem::data_trees)
    }

    /// Every tree the snapshot references, with what it is (for prune,
    /// check and the server's commit check): filesystems' data, then raw
    /// regions, then LUKS headers.
    pub fn trees(&self) -> Vec<(String, &str)> {
        let mut out: Vec<(String, &str)> = self
            .backed_up()
            .map(|d| (d.from.clone(), d.tree.as_str()))
            .collect();
        for d in &self.disks {
            for r in &d.raw {
                out.push((format!("{} {}", d.name, r.region), r.tree.as_str()));
            }
        }
        for l in &self.luks {
            if let Some(h) = &l.header {
                out.push((format!("luks/{} header", l.name), h.tree.as_str()));
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootGap {
    #[serde(rename = "@first-lba")]
    pub first_lba: u64,
    #[serde(rename = "@last-lba")]
    pub last_lba: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpt {
    #[serde(rename = "@disk-guid")]
    pub disk_guid: Guid,
    #[serde(rename = "@first-usable-lba")]
    pub first_usable_lba: u64,
    #[serde(rename = "@last-usable-lba")]
    pub last_usable_lba: u64,
    /// Number of entries in the partition entry array (usually 128).
    #[serde(rename = "@entries")]
    pub entries: u32,
    #[serde(rename = "partition", default)]
    pub partitions: Vec<GptPartition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptPartition {
    /// 1-based index in the entry array (the `N` of `/dev/sdaN`).
    #[serde(rename = "@number")]
    pub number: u32,
    #[serde(rename = "@first-lba")]
    pub first_lba: u64,
    #[serde(rename = "@last-lba")]
    pub last_lba: u64,
    #[serde(rename = "@type-guid")]
    pub type_guid: Guid,
    #[serde(rename = "@guid")]
    pub guid: Guid,
    #[serde(rename = "@name", default)]
    pub name: String,
    /// The 64 attribute bits (bit 0 required, bit 2 legacy BIOS bootable, ...).
    #[serde(rename = "@attributes", default)]
    pub attributes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mbr {
    /// Disk signature at offset 440, as 8 hex digits (`0x1a2b3c4d`).
    #[serde(rename = "@signature")]
    pub signature: MbrSignature,
    #[serde(rename = "partition", default)]
    pub partitions: Vec<MbrPartition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MbrKind {
    Primary,
    Extended,
    Logical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MbrPartition {
    /// 1–4 for primary and extended slots, 5 and up for logicals in chain order.
    #[serde(rename = "@number")]
    pub number: u32,
    #[serde(rename = "@kind")]
    pub kind: MbrKind,
    /// Partition type byte, `0x83`.
    #[serde(rename = "@type")]
    pub type_byte: MbrType,
    #[serde(rename = "@boot", default)]
    pub boot: bool,
    /// Absolute first sector.
    #[serde(rename = "@start-lba")]
    pub start_lba: u64,
    #[serde(rename = "@sectors")]
    pub sectors: u64,
    /// For a logical partition: absolute sector of its extended boot record.
    #[serde(rename = "@ebr-lba", skip_serializing_if = "Option::is_none")]
    pub ebr_lba: Option<u64>,
}

/// A filesystem: `<filesystem type="...">` with its kind's parameters
/// element (`<ext>`, `<xfs>`, ...) inside. Its serde form is written by hand
/// in xml.rs, since the kind decides which parameters element it may have.
#[derive(Debug, Clone, PartialEq)]
pub struct Filesystem {
    /// Device path at capture time (`/dev/sda2`).
    pub device: String,
    /// The disk (by `name`) holding it, and its partition number (absent for a
    /// filesystem on a whole disk).
    pub disk: Option<String>,
    pub partition: Option<u32>,
    /// Or the stack's block device it is on (`lv/vg0/root`; schema 2).
    pub volume: Option<StackRef>,
    /// The kind (`type`: `ext2`, `ext3`, `ext4`, `xfs`, `vfat`, `btrfs`)
    /// and its mkfs parameters (the `<ext>`, `<xfs>`, `<vfat>` or `<btrfs>`
    /// element), when capture could read them.
    pub fs_type: FsType,
    /// The filesystem UUID as blkid shows it (vfat: `ABCD-1234`).
    pub uuid: String,
    pub label: Option<String>,
    pub mounts: Vec<Mount>,
    /// The filesystem's files in the repository, when the snapshot has data.
    pub data: Option<FsData>,
    /// btrfs: the other devices it spans (schema 2).
    pub members: Vec<BtrfsMember>,
    /// btrfs: its subvolumes (schema 2).
    pub subvolumes: Vec<Subvolume>,
}

impl Filesystem {
    /// Every file tree of this filesystem in the snapshot: its `<data>`,
    /// then those of btrfs subvolumes mounted outside it (each restored
    /// into its own mount point, `from`).
    pub fn data_trees(&self) -> impl Iterator<Item = &FsData> {
        self.data
            .iter()
            .chain(self.subvolumes.iter().filter_map(|s| s.data.as_ref()))
    }
}

/// A reference to a filesystem's file tree in the repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsData {
    /// The tree's id (BLAKE3 of its chunk list), 64 hex digits.
    #[serde(rename = "@tree")]
    pub tree: TreeId,
    /// The mount point that was backed up.
    #[serde(rename = "@from")]
    pub from: String,
    /// Entries (files, directories, links, ...) in the tree.
    #[serde(rename = "@entries")]
    pub entries: u64,
    /// Bytes of file content (apparent size, holes excluded).
    #[serde(rename = "@bytes")]
    pub bytes: u64,
    /// How the files were read: from a snapshot of which kind, or live
    /// (schema 2; absent in older captures).
    #[serde(rename = "@read", default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadMode>,
}

/// How a capture read a filesystem's files (`<data read>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// Read while in use: files may come from different instants.
    Live,
    /// From a read-only btrfs snapshot.
    BtrfsSnapshot,
    /// From a classic LVM snapshot of its logical volume.
    LvmSnapshot,
    /// From a thin LVM snapshot of its thin volume.
    LvmThinSnapshot,
}

impl ReadMode {
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Live => "live",
            ReadMode::BtrfsSnapshot => "btrfs-snapshot",
            ReadMode::LvmSnapshot => "lvm-snapshot",
            ReadMode::LvmThinSnapshot => "lvm-thin-snapshot",
        }
    }

    /// How a capture's summary says it (`, read live`).
    pub fn describe(self) -> &'static str {
        match self {
            ReadMode::Live => ", read live",
            ReadMode::BtrfsSnapshot => ", read from a btrfs snapshot",
            ReadMode::LvmSnapshot => ", read from an LVM snapshot",
            ReadMode::LvmThinSnapshot => ", read from a thin LVM snapshot",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Mount point, absolute.
    #[serde(rename = "@point")]
    pub point: String,
    /// Options as in fstab (`rw,relatime`), per-mount and per-superblock merged.
    #[serde(rename = "@options")]
    pub options: String,
    /// The mounted subtree of the filesystem (btrfs subvolumes, bind mounts); `/` for all of it.
    #[serde(
        rename = "@root",
        default = "root_dir",
        skip_serializing_if = "is_root_dir"
    )]
    pub root: String,
}

fn root_dir() -> String {
    "/".to_string()
}

fn is_root_dir(s: &str) -> bool {
    s == "/"
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swap {
    #[serde(rename = "@device")]
    pub device: String,
    #[serde(rename = "@disk", skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    #[serde(rename = "@partition", skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Or the stack's block device it is on (`lv/vg0/swap`; schema 2).
    #[serde(rename = "@volume", skip_serializing_if = "Option::is_none")]
    pub volume: Option<StackRef>,
    #[serde(rename = "@uuid")]
    pub uuid: String,
    #[serde(rename = "@label", skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// In use at capture time (listed in /proc/swaps).
    #[serde(rename = "@active", default)]
    pub active: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// The boot loader found on the system (`grub`), if any.
    #[serde(rename = "@loader", skip_serializing_if = "Option::is_none")]
    pub loader: Option<String>,
    /// UEFI NVRAM boot configuration (present when the firmware is UEFI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub efi: Option<Efi>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Efi {
    /// BootOrder, as 4-hex-digit entry numbers (`0001 0000`).
    #[serde(rename = "@boot-order", default)]
    pub boot_order: Vec<String>,
    #[serde(rename = "@boot-current", skip_serializing_if = "Option::is_none")]
    pub boot_current: Option<String>,
    #[serde(rename = "entry", default)]
    pub entries: Vec<EfiEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfiEntry {
    /// The `XXXX` of `BootXXXX`, 4 uppercase hex digits.
    #[serde(rename = "@number")]
    pub number: String,
    #[serde(rename = "@description")]
    pub description: String,
    #[serde(rename = "@active")]
    pub active: bool,
    /// The GPT partition (by unique GUID) and its number that the entry boots from.
    #[serde(rename = "@partition-guid", skip_serializing_if = "Option::is_none")]
    pub partition_guid: Option<Guid>,
    #[serde(rename = "@partition", skip_serializing_if = "Option::is_none")]
    pub partition_number: Option<u32>,
    /// The loader's path on that partition, with backslashes (`\EFI\debian\shimx64.efi`).
    #[serde(rename = "@path", skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The whole EFI_LOAD_OPTION, hex, so that entries rewind cannot decode
    /// (network boot, vendor paths) are recreated byte for byte.
    #[serde(rename = "@raw")]
    pub raw: String,
}
