//! Schema 2: the storage stack sample (docs/manifest.md's second example),
//! its round trip, and every stack validation error with its path.

use super::tests::sample;
use super::*;

const VG0_METADATA: &str = include_str!("../../tests/fixtures/stack/vg0.vg");

fn gpt_disk(name: &str, guid_tail: &str) -> Disk {
    Disk {
        name: name.into(),
        path: format!("/dev/{name}"),
        size: 8_589_934_592,
        logical_sector_size: 512,
        physical_sector_size: 512,
        model: None,
        serial: Some(format!("SN-{name}")),
        wwn: None,
        driver: None,
        controller: None,
        transport: None,
        gpt: Some(Gpt {
            disk_guid: format!("0a0b0c0d-0000-4000-8000-0000000000{guid_tail}")
                .as_str()
                .into(),
            first_usable_lba: 2048,
            last_usable_lba: 16_777_182,
            entries: 128,
            partitions: vec![
                GptPartition {
                    number: 1,
                    first_lba: 2048,
                    last_lba: 1_050_623,
                    type_guid: "a19d880f-05fc-4d3b-a006-743f0f84911e".into(),
                    guid: format!("1a1b1c1d-0000-4000-8000-0000000001{guid_tail}")
                        .as_str()
                        .into(),
                    name: "esp".into(),
                    attributes: 0,
                },
                GptPartition {
                    number: 2,
                    first_lba: 1_050_624,
                    last_lba: 16_775_167,
                    type_guid: "a19d880f-05fc-4d3b-a006-743f0f84911e".into(),
                    guid: format!("1a1b1c1d-0000-4000-8000-0000000002{guid_tail}")
                        .as_str()
                        .into(),
                    name: "raid".into(),
                    attributes: 0,
                },
            ],
        }),
        mbr: None,
        boot_code: None,
        boot_gap: None,
        raw: vec![],
    }
}

fn bare_disk(name: &str) -> Disk {
    Disk {
        name: name.into(),
        path: format!("/dev/{name}"),
        size: 4_294_967_296,
        logical_sector_size: 512,
        physical_sector_size: 4096,
        model: None,
        serial: Some(format!("SN-{name}")),
        wwn: None,
        driver: None,
        controller: None,
        transport: None,
        gpt: None,
        mbr: None,
        boot_code: None,
        boot_gap: None,
        raw: vec![],
    }
}

fn fs(volume: &str, fs_type: FsType, uuid: &str, point: &str) -> Filesystem {
    Filesystem {
        device: String::new(),
        disk: None,
        partition: None,
        volume: Some(volume.into()),
        fs_type,
        uuid: uuid.into(),
        label: None,
        mounts: vec![Mount {
            point: point.into(),
            options: "rw,relatime".into(),
            root: "/".into(),
        }],
        data: None,
        members: vec![],
        subvolumes: vec![],
    }
}

fn lv(name: &str, uuid: &str, lv_type: &str, size: u64) -> LogicalVolume {
    LogicalVolume {
        name: name.into(),
        uuid: uuid.into(),
        lv_type: lv_type.into(),
        size,
        stripes: None,
        stripe_size: None,
        pool: None,
        chunk_size: None,
        metadata_size: None,
        active: true,
        skip_activation: false,
        tags: vec![],
    }
}

const MIB: u64 = 1 << 20;

/// A change to the sample, the path its problem names, and words of the message.
type Case = (fn(&mut Manifest), &'static str, &'static str);
const GIB: u64 = 1 << 30;

/// A UEFI server installed the way the drills are: two disks,
/// the ESP mirrored on MD RAID1 with metadata 1.0, the rest an MD RAID1 →
/// LUKS2 → LVM (root, swap, a thin pool with /home, and a LUKS volume on
/// an LV), and a btrfs RAID1 across two whole disks with subvolumes.
pub(crate) fn sample_stack() -> Manifest {
    let mut m = sample();
    m.schema = 2;
    m.disks = vec![
        gpt_disk("vda", "01"),
        gpt_disk("vdb", "02"),
        bare_disk("vdc"),
        bare_disk("vdd"),
    ];
    m.md_arrays = vec![
        MdArray {
            name: "esp".into(),
            device: "/dev/md126".into(),
            array_name: Some("web1:esp".into()),
            uuid: "5d3c1e7a:90b2f4d6:1a2b3c4d:5e6f7a8b".into(),
            level: "raid1".into(),
            metadata: "1.0".into(),
            raid_devices: 2,
            size: 536_805_376,
            chunk_size: None,
            layout: None,
            bitmap: "none".into(),
            data_offset: None,
            members: vec![
                MdMember {
                    device: "disk/vda/1".into(),
                    role: "0".into(),
                },
                MdMember {
                    device: "disk/vdb/1".into(),
                    role: "1".into(),
                },
            ],
        },
        MdArray {
            name: "root".into(),
            device: "/dev/md127".into(),
            array_name: Some("web1:root".into()),
            uuid: "3b0c9e2a:5d1f4e6b:8a7c2d90:1e3f5a7b".into(),
            level: "raid1".into(),
            metadata: "1.2".into(),
            raid_devices: 2,
            size: 8_034_189_312,
            chunk_size: None,
            layout: None,
            bitmap: "internal".into(),
            data_offset: Some(16 * MIB),
            members: vec![
                MdMember {
                    device: "disk/vda/2".into(),
                    role: "0".into(),
                },
                MdMember {
                    device: "disk/vdb/2".into(),
                    role: "1".into(),
                },
            ],
        },
    ];
    let keyslots = vec![
        LuksKeyslot {
            id: 0,
            pbkdf: "argon2id".into(),
            token: None,
        },
        LuksKeyslot {
            id: 1,
            pbkdf: "pbkdf2".into(),
            token: Some("systemd-tpm2".into()),
        },
    ];
    m.luks = vec![
        Luks {
            name: "cryptroot".into(),
            on: "md/root".into(),
            version: 2,
            uuid: "c0ffee00-1234-4abc-8def-0123456789ab".into(),
            label: Some("root".into()),
            cipher: "aes-xts-plain64".into(),
            key_size: 512,
            sector_size: 512,
            data_offset: 16 * MIB,
            size: 8_017_412_096,
            hash: Some("sha256".into()),
            keyslots,
            header: Some(LuksHeader {
                tree: "7d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6".into(),
                bytes: 16 * MIB,
            }),
            escrow: Some(LuksEscrow {
                kind: "volume-key".into(),
                key_id: "web1-c0ffee00-1".into(),
            }),
        },
        Luks {
            name: "secret".into(),
            on: "lv/vg0/secret".into(),
            version: 1,
            uuid: "5ec2e700-1234-4abc-8def-0123456789ab".into(),
            label: None,
            cipher: "aes-xts-plain64".into(),
            key_size: 256,
            sector_size: 512,
            data_offset: 2 * MIB,
            size: 254 * MIB,
            hash: Some("sha256".into()),
            keyslots: vec![LuksKeyslot {
                id: 0,
                pbkdf: "pbkdf2".into(),
                token: None,
            }],
            header: None,
            escrow: None,
        },
    ];
    let mut pool = lv(
        "pool",
        "PooLlv-aB1c-D2eF-3gH4-iJ5k-L6mN-7oP8qR",
        "thin-pool",
        2 * GIB,
    );
    pool.chunk_size = Some(64 * 1024);
    pool.metadata_size = Some(4 * MIB);
    let mut home = lv(
        "home",
        "HoMeLv-aB1c-D2eF-3gH4-iJ5k-L6mN-7oP8qR",
        "thin",
        10 * GIB,
    );
    home.pool = Some("pool".into());
    let mut secret = lv(
        "secret",
        "SeCrLv-aB1c-D2eF-3gH4-iJ5k-L6mN-7oP8qR",
        "linear",
        256 * MIB,
    );
    secret.tags = vec!["backup".into()];
    m.volume_groups = vec![VolumeGroup {
        name: "vg0".into(),
        uuid: "pBx8Qe-3kYd-Wm2T-hZ7r-Lc1N-9vFs-Ja4uGo".into(),
        extent_size: 4 * MIB,
        tags: vec![],
        pvs: vec![PhysicalVolume {
            device: "luks/cryptroot".into(),
            uuid: "Tq5wEr-Yu7i-Op9a-Sd2f-Gh4j-Kl6z-Xc8vBn".into(),
            size: 8_017_399_808,
            pe_start: MIB,
            extents: 1911,
        }],
        lvs: vec![
            lv(
                "root",
                "R00tLv-aB1c-D2eF-3gH4-iJ5k-L6mN-7oP8qR",
                "linear",
                4 * GIB,
            ),
            lv(
                "swap",
                "SwApLv-aB1c-D2eF-3gH4-iJ5k-L6mN-7oP8qR",
                "linear",
                GIB,
            ),
            pool,
            home,
            secret,
        ],
        metadata: VG0_METADATA.into(),
    }];
    let ext4 = |inodes, blocks| {
        FsType::Ext4(Some(ExtParams {
            block_size: 4096,
            inode_size: 256,
            inode_count: inodes,
            block_count: blocks,
            reserved_blocks: blocks / 20,
            features: ["has_journal", "extent", "64bit", "metadata_csum"]
                .map(String::from)
                .to_vec(),
        }))
    };
    let mut esp = fs("md/esp", FsType::Vfat(None), "1234-ABCD", "/boot/efi");
    esp.device = "/dev/md126".into();
    let mut root = fs(
        "lv/vg0/root",
        ext4(262_144, 1_048_576),
        "0a1b2c3d-1111-4222-8333-444455556666",
        "/",
    );
    root.device = "/dev/mapper/vg0-root".into();
    let mut home_fs = fs(
        "lv/vg0/home",
        FsType::Xfs(None),
        "5e6f7a8b-2222-4333-8444-555566667777",
        "/home",
    );
    home_fs.device = "/dev/mapper/vg0-home".into();
    let mut vault = fs(
        "luks/secret",
        ext4(16_384, 65_024),
        "7a6b5c4d-3333-4444-8555-666677778888",
        "/srv/vault",
    );
    vault.device = "/dev/mapper/secret".into();
    let mut data = fs(
        "disk/vdc",
        FsType::Btrfs(Some(BtrfsParams {
            node_size: 16384,
            sector_size: 4096,
            data_profile: Some("raid1".into()),
            metadata_profile: Some("raid1".into()),
        })),
        "9a8b7c6d-3333-4444-8555-666677778888",
        "/srv/data",
    );
    data.device = "/dev/vdc".into();
    data.volume = None;
    data.disk = Some("vdc".into());
    data.label = Some("data".into());
    data.mounts[0].options = "rw,relatime,subvol=/@data".into();
    data.mounts[0].root = "/@data".into();
    data.members = vec![BtrfsMember {
        device: "disk/vdd".into(),
        devid: 2,
    }];
    data.subvolumes = vec![
        Subvolume {
            id: 256,
            path: "@data".into(),
            read_only: false,
            default: true,
            data: None,
        },
        Subvolume {
            id: 257,
            path: "@snapshots/1/snapshot".into(),
            read_only: true,
            default: false,
            data: None,
        },
    ];
    m.filesystems = vec![esp, root, home_fs, vault, data];
    m.swaps = vec![Swap {
        device: "/dev/mapper/vg0-swap".into(),
        disk: None,
        partition: None,
        volume: Some("lv/vg0/swap".into()),
        uuid: "deadbeef-0000-4000-8000-000000000001".into(),
        label: None,
        active: true,
    }];
    m.boot.efi = None;
    m
}

fn stack_xml() -> String {
    to_xml(&sample_stack()).unwrap()
}

/// Validate a changed sample, expecting `path` among the problems.
fn refused_at(m: &Manifest, path: &str, words: &str) {
    let e = validate(m).expect_err("manifest accepted");
    let hit = e
        .problems
        .iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no problem at {path}: {e}"));
    assert!(
        hit.message.contains(words),
        "{path}: \"{}\" lacks \"{words}\"",
        hit.message
    );
}

#[test]
fn stack_sample_is_valid_and_round_trips() {
    let m = sample_stack();
    validate(&m).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(required_schema(&m), 2);
    let xml = stack_xml();
    assert!(xml.contains("<manifest schema=\"2\">"), "{xml}");
    let back = from_xml(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!(back, m);
    assert_eq!(to_xml(&back).unwrap(), xml);
    // The vgcfgbackup text comes back byte for byte, tabs and newlines included.
    assert_eq!(back.volume_groups[0].metadata, VG0_METADATA);
}

/// A btrfs subvolume mounted beside the filesystem's own tree (`@home` on
/// /home beside `@` on /) carries its own `<data>`: written, read back,
/// and counted among the snapshot's trees (prune and check keep it).
#[test]
fn a_subvolume_mounted_apart_has_its_own_data() {
    let mut m = sample_stack();
    let trees = m.trees().len();
    let btrfs = m
        .filesystems
        .iter_mut()
        .find(|f| !f.subvolumes.is_empty())
        .unwrap();
    btrfs.mounts.push(Mount {
        point: "/srv/snap".into(),
        options: "ro,relatime,subvol=/@snapshots/1/snapshot".into(),
        root: "/@snapshots/1/snapshot".into(),
    });
    btrfs.subvolumes[1].data = Some(FsData {
        tree: "cd".repeat(32).parse().unwrap(),
        from: "/srv/snap".into(),
        entries: 3,
        bytes: 12,
        read: Some(ReadMode::Live),
    });
    validate(&m).unwrap_or_else(|e| panic!("{e}"));
    let xml = to_xml(&m).unwrap();
    assert!(
        xml.contains("read-only=\"true\">\n      <data tree=\"cdcd"),
        "{xml}"
    );
    assert_eq!(from_xml(&xml).unwrap(), m);
    assert_eq!(m.trees().len(), trees + 1);
    assert!(m.backed_up().any(|d| d.from == "/srv/snap"));
}

#[test]
fn stack_example_in_docs_is_the_sample() {
    let doc = include_str!("../../docs/manifest.md");
    let xml = stack_xml();
    assert!(
        doc.contains(xml.trim()),
        "docs/manifest.md's stack example differs from the sample; paste:\n{xml}"
    );
}

#[test]
fn plain_manifests_stay_schema_1() {
    assert_eq!(required_schema(&sample()), 1);
    // A schema-2 manifest without a stack is read as it is.
    let mut m = sample();
    m.schema = 2;
    let xml = to_xml(&m).unwrap();
    assert_eq!(from_xml(&xml).unwrap(), m);
    // A stack element needs schema 2.
    let mut m = sample_stack();
    m.schema = 1;
    refused_at(&m, "/manifest/@schema", "needs schema=\"2\"");
}

#[test]
fn creation_order_follows_the_references() {
    let m = sample_stack();
    let order: Vec<String> = creation_order(&m)
        .unwrap()
        .iter()
        .map(|l| l.describe(&m))
        .collect();
    assert_eq!(
        order,
        [
            "md/esp",
            "md/root",
            "luks/cryptroot",
            "vg vg0",
            "luks/secret"
        ]
    );
}

#[test]
fn a_stack_built_on_itself_is_refused() {
    let mut m = sample_stack();
    // cryptroot on an LV of the group whose PV is cryptroot.
    m.luks[0].on = "lv/vg0/root".into();
    m.filesystems
        .retain(|f| f.volume != Some("lv/vg0/root".into()));
    let e = validate(&m).unwrap_err();
    assert!(
        e.problems.iter().any(|p| p.path == "/manifest"
            && p.message.contains("built on itself")
            && p.message
                .contains("luks/cryptroot → vg vg0 → luks/cryptroot")),
        "{e}"
    );
}

#[test]
fn firmware_raid_is_refused_by_name() {
    for meta in ["imsm", "ddf", "external:/md127/0"] {
        let mut m = sample_stack();
        m.md_arrays[1].metadata = meta.into();
        refused_at(&m, "/manifest/md[2]/@metadata", "firmware RAID");
    }
}

#[test]
fn references_must_resolve_and_devices_hold_one_thing() {
    let cases: Vec<Case> = vec![
        (
            |m| m.md_arrays[0].members[1].device = "disk/vdz/1".into(),
            "/manifest/md[1]/member[2]/@ref",
            "no <disk name=\"vdz\">",
        ),
        (
            |m| m.md_arrays[0].members[1].device = "disk/vdb/9".into(),
            "/manifest/md[1]/member[2]/@ref",
            "has no partition 9",
        ),
        (
            |m| m.md_arrays[0].members[1].device = "disk/vdb".into(),
            "/manifest/md[1]/member[2]/@ref",
            "is partitioned",
        ),
        (
            |m| m.md_arrays[0].members[1].device = "disk/vda/2".into(),
            "/manifest/md[2]/member[1]/@ref",
            "already used by /manifest/md[1]/member[2]",
        ),
        (
            |m| m.luks[0].on = "md/nothing".into(),
            "/manifest/luks[1]/@on",
            "no <md name=\"nothing\">",
        ),
        (
            |m| m.volume_groups[0].pvs[0].device = "luks/nothing".into(),
            "/manifest/vg[1]/pv[1]/@ref",
            "no <luks name=\"nothing\">",
        ),
        (
            |m| m.swaps[0].volume = Some("lv/vg0/pool".into()),
            "/manifest/swap[1]/@volume",
            "is a thin pool",
        ),
        (
            |m| m.swaps[0].volume = Some("lv/vg1/swap".into()),
            "/manifest/swap[1]/@volume",
            "no <vg name=\"vg1\">",
        ),
        (
            |m| m.filesystems[1].volume = Some("lv/vg0/nope".into()),
            "/manifest/filesystem[2]/@volume",
            "has no <lv name=\"nope\">",
        ),
        (
            |m| m.filesystems[2].volume = Some("lv/vg0/root".into()),
            "/manifest/filesystem[3]/@volume",
            "already used by /manifest/filesystem[2]",
        ),
        (
            |m| m.filesystems[1].disk = Some("vda".into()),
            "/manifest/filesystem[2]/@volume",
            "not both",
        ),
        (
            |m| m.swaps[0].volume = Some("disk/vdc".into()),
            "/manifest/swap[1]/@volume",
            "name it with disk= and partition=",
        ),
        (
            |m| m.filesystems[4].members[0].device = "disk/vdc".into(),
            "/manifest/filesystem[5]/member[1]/@ref",
            "already used by",
        ),
    ];
    for (change, path, words) in cases {
        let mut m = sample_stack();
        change(&mut m);
        refused_at(&m, path, words);
    }
}

#[test]
fn every_layer_check_names_its_path() {
    let cases: Vec<Case> = vec![
        // MD
        (
            |m| m.md_arrays[0].name = "a/b".into(),
            "/manifest/md[1]/@name",
            "not a name",
        ),
        (
            |m| m.md_arrays[1].name = "esp".into(),
            "/manifest/md[2]/@name",
            "listed twice",
        ),
        (
            |m| m.md_arrays[0].level = "raid7".into(),
            "/manifest/md[1]/@level",
            "raid7",
        ),
        (
            |m| m.md_arrays[0].metadata = "2.0".into(),
            "/manifest/md[1]/@metadata",
            "unknown MD metadata",
        ),
        (
            |m| m.md_arrays[0].uuid = "3b0c9e2a-5d1f".into(),
            "/manifest/md[1]/@uuid",
            "not an MD array UUID",
        ),
        (
            |m| m.md_arrays[0].raid_devices = 0,
            "/manifest/md[1]/@raid-devices",
            "needs members",
        ),
        (
            |m| m.md_arrays[0].size = 0,
            "/manifest/md[1]/@size",
            "empty",
        ),
        (
            |m| m.md_arrays[0].level = "raid0".into(),
            "/manifest/md[1]/@chunk-size",
            "needs its chunk size",
        ),
        (
            |m| m.md_arrays[0].chunk_size = Some(1000),
            "/manifest/md[1]/@chunk-size",
            "not a chunk size",
        ),
        (
            |m| m.md_arrays[0].bitmap = "/var/bitmap".into(),
            "/manifest/md[1]/@bitmap",
            "cannot be recreated",
        ),
        (
            |m| m.md_arrays[0].members[1].role = "2".into(),
            "/manifest/md[1]/member[2]/@role",
            "outside 0-1",
        ),
        (
            |m| m.md_arrays[0].members[1].role = "0".into(),
            "/manifest/md[1]/member[2]/@role",
            "listed twice",
        ),
        (
            |m| m.md_arrays[0].members[1].role = "faulty".into(),
            "/manifest/md[1]/member[2]/@role",
            "neither",
        ),
        (
            |m| {
                for x in &mut m.md_arrays[0].members {
                    x.role = "spare".into();
                }
            },
            "/manifest/md[1]",
            "no active member",
        ),
        // LUKS
        (
            |m| m.luks[0].name = "".into(),
            "/manifest/luks[1]/@name",
            "not a name",
        ),
        (
            |m| m.luks[1].name = "cryptroot".into(),
            "/manifest/luks[2]/@name",
            "listed twice",
        ),
        (
            |m| m.luks[0].version = 3,
            "/manifest/luks[1]/@version",
            "1 or 2",
        ),
        (
            |m| m.luks[1].label = Some("x".into()),
            "/manifest/luks[2]/@label",
            "LUKS1 has no label",
        ),
        (
            |m| m.luks[0].key_size = 500,
            "/manifest/luks[1]/@key-size",
            "not a key size",
        ),
        (
            |m| m.luks[1].sector_size = 4096,
            "/manifest/luks[2]/@sector-size",
            "LUKS1: 512",
        ),
        (
            |m| m.luks[0].sector_size = 8192,
            "/manifest/luks[1]/@sector-size",
            "512-4096",
        ),
        (
            |m| m.luks[0].data_offset = 1000,
            "/manifest/luks[1]/@data-offset",
            "not a data offset",
        ),
        (|m| m.luks[0].size = 0, "/manifest/luks[1]/@size", "empty"),
        (
            |m| m.luks[0].cipher = "".into(),
            "/manifest/luks[1]/@cipher",
            "empty",
        ),
        (
            |m| m.luks[1].keyslots[0].id = 8,
            "/manifest/luks[2]/keyslot[1]/@id",
            "0-7",
        ),
        (
            |m| m.luks[0].keyslots[1].id = 0,
            "/manifest/luks[1]/keyslot[2]/@id",
            "listed twice",
        ),
        (
            |m| {
                if let Some(h) = &mut m.luks[0].header {
                    h.bytes = 32 * MIB
                }
            },
            "/manifest/luks[1]/header/@bytes",
            "does not fit",
        ),
        (
            |m| {
                if let Some(e) = &mut m.luks[0].escrow {
                    e.kind = "passphrase".into()
                }
            },
            "/manifest/luks[1]/escrow/@kind",
            "unknown escrow kind",
        ),
        (
            |m| {
                if let Some(e) = &mut m.luks[0].escrow {
                    e.key_id = " ".into()
                }
            },
            "/manifest/luks[1]/escrow/@key-id",
            "empty",
        ),
        // LVM
        (
            |m| m.volume_groups[0].name = "-vg".into(),
            "/manifest/vg[1]/@name",
            "not an LVM name",
        ),
        (
            |m| m.volume_groups[0].uuid = "abc".into(),
            "/manifest/vg[1]/@uuid",
            "not an LVM id",
        ),
        (
            |m| m.volume_groups[0].uuid = "Zz9zZz-3kYd-Wm2T-hZ7r-Lc1N-9vFs-Ja4uGo".into(),
            "/manifest/vg[1]/metadata",
            "is not the metadata of VG",
        ),
        (
            |m| m.volume_groups[0].extent_size = 3 * MIB,
            "/manifest/vg[1]/@extent-size",
            "not an extent size",
        ),
        (
            |m| m.volume_groups[0].pvs.clear(),
            "/manifest/vg[1]",
            "has no <pv>",
        ),
        (
            |m| m.volume_groups[0].pvs[0].extents = 5000,
            "/manifest/vg[1]/pv[1]/@extents",
            "do not fit",
        ),
        (
            |m| m.volume_groups[0].pvs[0].uuid = "Aa5wEr-Yu7i-Op9a-Sd2f-Gh4j-Kl6z-Xc8vBn".into(),
            "/manifest/vg[1]/pv[1]/@uuid",
            "not in the group's <metadata>",
        ),
        (
            |m| m.volume_groups[0].lvs[1].uuid = m.volume_groups[0].lvs[0].uuid.clone(),
            "/manifest/vg[1]/lv[2]/@uuid",
            "listed twice",
        ),
        (
            |m| m.volume_groups[0].lvs[1].name = "root".into(),
            "/manifest/vg[1]/lv[2]/@name",
            "listed twice",
        ),
        (
            |m| m.volume_groups[0].lvs[0].lv_type = "cache".into(),
            "/manifest/vg[1]/lv[1]/@type",
            "is a cache volume, which rewind cannot recreate",
        ),
        (
            |m| m.volume_groups[0].lvs[0].size = 4 * GIB + 512,
            "/manifest/vg[1]/lv[1]/@size",
            "whole number of",
        ),
        (
            |m| m.volume_groups[0].lvs[0].size = 40 * GIB,
            "/manifest/vg[1]",
            "more than the",
        ),
        (
            |m| m.volume_groups[0].lvs[3].pool = None,
            "/manifest/vg[1]/lv[4]/@pool",
            "needs its pool",
        ),
        (
            |m| m.volume_groups[0].lvs[3].pool = Some("root".into()),
            "/manifest/vg[1]/lv[4]/@pool",
            "no thin pool root",
        ),
        (
            |m| m.volume_groups[0].lvs[0].pool = Some("pool".into()),
            "/manifest/vg[1]/lv[1]/@pool",
            "only thin volumes",
        ),
        (
            |m| m.volume_groups[0].lvs[2].chunk_size = None,
            "/manifest/vg[1]/lv[3]/@chunk-size",
            "needs its chunk size",
        ),
        (
            |m| m.volume_groups[0].lvs[2].chunk_size = Some(4096),
            "/manifest/vg[1]/lv[3]/@chunk-size",
            "64 KiB",
        ),
        (
            |m| m.volume_groups[0].lvs[2].metadata_size = None,
            "/manifest/vg[1]/lv[3]/@metadata-size",
            "metadata LV",
        ),
        (
            |m| m.volume_groups[0].lvs[0].chunk_size = Some(65536),
            "/manifest/vg[1]/lv[1]/@chunk-size",
            "only thin pools",
        ),
        (
            |m| m.volume_groups[0].lvs[0].lv_type = "striped".into(),
            "/manifest/vg[1]/lv[1]/@stripes",
            "two stripes",
        ),
        (
            |m| m.volume_groups[0].metadata = "\n".into(),
            "/manifest/vg[1]/metadata",
            "empty",
        ),
        // btrfs
        (
            |m| m.filesystems[4].members[0].devid = 1,
            "/manifest/filesystem[5]/member[1]/@devid",
            "devid 1 is taken",
        ),
        (
            |m| m.filesystems[4].subvolumes[1].id = 256,
            "/manifest/filesystem[5]/subvolume[2]/@id",
            "taken",
        ),
        (
            |m| m.filesystems[4].subvolumes[1].path = "/@x".into(),
            "/manifest/filesystem[5]/subvolume[2]/@path",
            "not a path",
        ),
        (
            |m| m.filesystems[4].subvolumes[1].path = "a/../b".into(),
            "/manifest/filesystem[5]/subvolume[2]/@path",
            "not a path",
        ),
        (
            |m| m.filesystems[4].subvolumes[1].path = "@data".into(),
            "/manifest/filesystem[5]/subvolume[2]/@path",
            "listed twice",
        ),
        (
            |m| m.filesystems[4].subvolumes[1].default = true,
            "/manifest/filesystem[5]/subvolume[2]/@default",
            "one default",
        ),
        (
            |m| m.filesystems[1].subvolumes = m.filesystems[4].subvolumes.clone(),
            "/manifest/filesystem[2]",
            "only btrfs",
        ),
        (
            |m| {
                if let FsType::Btrfs(Some(p)) = &mut m.filesystems[4].fs_type {
                    p.data_profile = Some("raid7".into())
                }
            },
            "/manifest/filesystem[5]/btrfs/@data-profile",
            "unknown btrfs profile",
        ),
    ];
    for (change, path, words) in cases {
        let mut m = sample_stack();
        change(&mut m);
        refused_at(&m, path, words);
    }
}

#[test]
fn stack_values_read_from_xml_name_their_paths() {
    let xml = stack_xml().replace("on=\"md/root\"", "on=\"/dev/md127\"");
    let e = from_xml(&xml).unwrap_err();
    assert!(e.mentions("/manifest/luks[1]/@on"), "{e}");
    assert!(
        e.to_string().contains("not a block device reference"),
        "{e}"
    );
    let xml = stack_xml().replace("volume=\"lv/vg0/swap\"", "volume=\"lvm:swap\"");
    let e = from_xml(&xml).unwrap_err();
    assert!(e.mentions("/manifest/swap[1]/@volume"), "{e}");
    let xml = stack_xml().replace("volume=\"lv/vg0/root\"", "volume=\"root\"");
    let e = from_xml(&xml).unwrap_err();
    assert!(e.mentions("/manifest/filesystem[2]/@volume"), "{e}");
    let xml = stack_xml().replacen(
        "<member ref=\"disk/vda/1\"",
        "<member colour=\"red\" ref=\"disk/vda/1\"",
        1,
    );
    let e = from_xml(&xml).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
}
