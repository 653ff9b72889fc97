//! Round trips and every validation error, on a complete sample manifest.

use super::*;

/// A manifest using every element: a UEFI machine with a GPT disk and an
/// MBR disk with logical partitions.
pub(crate) fn sample() -> Manifest {
    Manifest {
        schema: 1,
        snapshot: Snapshot {
            id: "20261125T060000Z-web1".into(),
            host: "web1".into(),
            time: "2026-11-25T06:00:00Z".into(),
            parent: Some("20261124T060000Z-web1".into()),
            tool: "rewind 0.1.0".into(),
        },
        system: System {
            hostname: "web1.example.com".into(),
            machine_id: Some("4f3c2b1a00112233445566778899aabb".into()),
            os: Some(OsRelease {
                id: "debian".into(),
                version_id: Some("12".into()),
                pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
            }),
            kernel: Kernel {
                release: "6.1.0-27-amd64".into(),
                arch: "x86_64".into(),
                cmdline: Some("BOOT_IMAGE=/vmlinuz-6.1.0-27-amd64 root=UUID=0a1b2c3d-1111-4222-8333-444455556666 ro quiet".into()),
            },
            firmware: Firmware::Uefi,
            timezone: Some("Europe/Paris".into()),
            dmi: Some(Dmi {
                system_uuid: Some("4c4c4544-0042-3510-8051-b7c04f4e4a31".into()),
                serial: Some("CZ1234567".into()),
                vendor: Some("Dell Inc.".into()),
                product: None,
            }),
            initramfs: Some(InitramfsConfig {
                tool: "dracut".into(),
                modules: Some("nvme ahci".into()),
                hostonly: Some("yes".into()),
            }),
        },
        network: Network {
            interfaces: vec![Interface {
                name: "enp1s0".into(),
                mac: Some("52:54:00:12:34:56".parse().unwrap()),
                mtu: 1500,
                driver: Some("virtio_net".into()),
                addresses: vec![
                    Address {
                        cidr: "192.0.2.10/24".into(),
                        method: AddressMethod::Static,
                        source: "ifupdown".into(),
                    },
                    Address {
                        cidr: "2001:db8::10/64".into(),
                        method: AddressMethod::Auto,
                        source: "kernel".into(),
                    },
                ],
            }],
            routes: vec![
                Route {
                    destination: "default".into(),
                    gateway: Some("192.0.2.1".into()),
                    interface: Some("enp1s0".into()),
                    metric: Some(100),
                },
                Route {
                    destination: "198.51.100.0/24".into(),
                    gateway: None,
                    interface: Some("enp1s0".into()),
                    metric: None,
                },
            ],
            dns: Dns {
                nameservers: vec!["192.0.2.53".into(), "2001:db8::53".into()],
                search: vec!["example.com".into()],
            },
        },
        disks: vec![
            Disk {
                name: "vda".into(),
                path: "/dev/vda".into(),
                size: 8 << 30,
                logical_sector_size: 512,
                physical_sector_size: 4096,
                model: Some("QEMU HARDDISK".into()),
                serial: Some("rewind-0001".into()),
                wwn: Some("0x5000c500a1b2c3d4".into()),
                driver: Some("virtio_blk".into()),
                controller: Some("virtio-pci".into()),
                transport: Some("virtio".into()),
                gpt: Some(Gpt {
                    disk_guid: "a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f".into(),
                    first_usable_lba: 2048,
                    last_usable_lba: 16_777_182,
                    entries: 128,
                    partitions: vec![
                        GptPartition {
                            number: 1,
                            first_lba: 2048,
                            last_lba: 1_050_623,
                            type_guid: "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".into(),
                            guid: "11111111-2222-4333-8444-555555555501".into(),
                            name: "EFI system".into(),
                            attributes: 0,
                        },
                        GptPartition {
                            number: 2,
                            first_lba: 1_050_624,
                            last_lba: 12_584_959,
                            type_guid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
                            guid: "11111111-2222-4333-8444-555555555502".into(),
                            name: "root & <system>".into(),
                            attributes: 1 << 60,
                        },
                        GptPartition {
                            number: 4,
                            first_lba: 12_584_960,
                            last_lba: 16_777_182,
                            type_guid: "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f".into(),
                            guid: "11111111-2222-4333-8444-555555555504".into(),
                            name: "swap".into(),
                            attributes: 0,
                        },
                    ],
                }),
                mbr: None,
                boot_code: None,
                boot_gap: None,
                raw: Vec::new(),
            },
            Disk {
                name: "vdb".into(),
                path: "/dev/vdb".into(),
                size: 2 << 30,
                logical_sector_size: 512,
                physical_sector_size: 512,
                model: None,
                serial: None,
                wwn: None,
                driver: None,
                controller: None,
                transport: None,
                gpt: None,
                mbr: Some(Mbr {
                    signature: "0x1a2b3c4d".into(),
                    partitions: vec![
                        MbrPartition {
                            number: 1,
                            kind: MbrKind::Primary,
                            type_byte: "0x83".into(),
                            boot: true,
                            start_lba: 2048,
                            sectors: 1_048_576,
                            ebr_lba: None,
                        },
                        MbrPartition {
                            number: 2,
                            kind: MbrKind::Extended,
                            type_byte: "0x05".into(),
                            boot: false,
                            start_lba: 1_050_624,
                            sectors: 3_143_680,
                            ebr_lba: None,
                        },
                        MbrPartition {
                            number: 5,
                            kind: MbrKind::Logical,
                            type_byte: "0x83".into(),
                            boot: false,
                            start_lba: 1_052_672,
                            sectors: 1_048_576,
                            ebr_lba: Some(1_050_624),
                        },
                        MbrPartition {
                            number: 6,
                            kind: MbrKind::Logical,
                            type_byte: "0x82".into(),
                            boot: false,
                            start_lba: 2_103_296,
                            sectors: 2_091_008,
                            ebr_lba: Some(2_101_248),
                        },
                    ],
                }),
                boot_code: Some("eb63".to_string() + &"90".repeat(438)),
                boot_gap: Some(BootGap {
                    first_lba: 1,
                    last_lba: 2047,
                }),
                raw: vec![RawData {
                    region: "boot-gap".into(),
                    tree: "9e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7".into(),
                    bytes: 2047 * 512,
                }],
            },
        ],
        md_arrays: vec![],
        luks: vec![],
        volume_groups: vec![],
        filesystems: vec![
            Filesystem {
                device: "/dev/vda1".into(),
                disk: Some("vda".into()),
                partition: Some(1),
                volume: None,
                fs_type: FsType::Vfat(Some(VfatParams {
                    fat_size: 32,
                    sector_size: 512,
                    sectors_per_cluster: 8,
                    reserved_sectors: 32,
                    fat_count: 2,
                    root_entries: 0,
                })),
                uuid: "1234-ABCD".into(),
                label: Some("ESP".into()),
                mounts: vec![Mount {
                    point: "/boot/efi".into(),
                    options: "rw,relatime,fmask=0077,dmask=0077".into(),
                    root: "/".into(),
                }],
                data: None,
                members: vec![],
                subvolumes: vec![],
            },
            Filesystem {
                device: "/dev/vda2".into(),
                disk: Some("vda".into()),
                partition: Some(2),
                volume: None,
                fs_type: FsType::Ext4(Some(ExtParams {
                    block_size: 4096,
                    inode_size: 256,
                    inode_count: 720_896,
                    block_count: 2_883_584,
                    reserved_blocks: 144_179,
                    features: ["has_journal", "ext_attr", "resize_inode", "dir_index", "filetype", "extent", "64bit", "flex_bg", "sparse_super", "large_file", "huge_file", "dir_nlink", "extra_isize", "metadata_csum"]
                        .map(String::from)
                        .to_vec(),
                })),
                uuid: "0a1b2c3d-1111-4222-8333-444455556666".into(),
                label: Some("root".into()),
                mounts: vec![Mount {
                    point: "/".into(),
                    options: "rw,relatime,errors=remount-ro".into(),
                    root: "/".into(),
                }],
                data: Some(FsData {
                    tree: "5b8c1d0e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e".into(),
                    from: "/".into(),
                    entries: 48_213,
                    bytes: 2_147_483_648,
                    read: None,
                }),
                members: vec![],
                subvolumes: vec![],
            },
            Filesystem {
                device: "/dev/vdb1".into(),
                disk: Some("vdb".into()),
                partition: Some(1),
                volume: None,
                fs_type: FsType::Xfs(Some(XfsParams {
                    block_size: 4096,
                    sector_size: 512,
                    inode_size: 512,
                    ag_count: 4,
                    log_blocks: 16384,
                    features: ["crc=1", "finobt=1", "sparse=1", "rmapbt=0", "reflink=1"]
                        .map(String::from)
                        .to_vec(),
                })),
                uuid: "5e6f7a8b-2222-4333-8444-555566667777".into(),
                label: None,
                mounts: vec![Mount {
                    point: "/srv/data".into(),
                    options: "rw,noatime".into(),
                    root: "/".into(),
                }],
                data: None,
                members: vec![],
                subvolumes: vec![],
            },
            Filesystem {
                device: "/dev/vdb5".into(),
                disk: Some("vdb".into()),
                partition: Some(5),
                volume: None,
                fs_type: FsType::Btrfs(Some(BtrfsParams {
                    node_size: 16384,
                    sector_size: 4096,
                    data_profile: None,
                    metadata_profile: None,
                })),
                uuid: "9a8b7c6d-3333-4444-8555-666677778888".into(),
                label: Some("home".into()),
                mounts: vec![Mount {
                    point: "/home".into(),
                    options: "rw,relatime,subvol=/@home".into(),
                    root: "/@home".into(),
                }],
                data: None,
                members: vec![],
                subvolumes: vec![],
            },
        ],
        swaps: vec![
            Swap {
                device: "/dev/vda4".into(),
                disk: Some("vda".into()),
                partition: Some(4),
                volume: None,
                uuid: "deadbeef-0000-4000-8000-000000000001".into(),
                label: Some("swap".into()),
                active: true,
            },
            Swap {
                device: "/dev/vdb6".into(),
                disk: Some("vdb".into()),
                partition: Some(6),
                volume: None,
                uuid: "deadbeef-0000-4000-8000-000000000002".into(),
                label: None,
                active: false,
            },
        ],
        boot: Boot {
            loader: Some("grub".into()),
            efi: Some(Efi {
                boot_order: vec!["0001".into(), "0000".into()],
                boot_current: Some("0001".into()),
                entries: vec![
                    EfiEntry {
                        number: "0001".into(),
                        description: "debian".into(),
                        active: true,
                        partition_guid: Some("11111111-2222-4333-8444-555555555501".into()),
                        partition_number: Some(1),
                        path: Some(r"\EFI\debian\shimx64.efi".into()),
                        raw: "01000000".into(),
                    },
                    EfiEntry {
                        number: "0000".into(),
                        description: "UEFI PXEv4 (MAC:525400123456)".into(),
                        active: true,
                        partition_guid: None,
                        partition_number: None,
                        path: None,
                        raw: "0100000000".into(),
                    },
                ],
            }),
        },
    }
}

fn sample_xml() -> String {
    to_xml(&sample()).unwrap()
}

/// Parse `xml`, expecting failure; return the error.
fn refused(xml: &str) -> ManifestError {
    match from_xml(xml) {
        Ok(_) => panic!("manifest accepted:\n{xml}"),
        Err(e) => e,
    }
}

#[test]
fn sample_is_valid() {
    validate(&sample()).unwrap();
}

#[test]
fn round_trip_gives_back_the_same_model() {
    let xml = sample_xml();
    let back = from_xml(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!(back, sample());
    // And writing it again gives the same bytes.
    assert_eq!(to_xml(&back).unwrap(), xml);
}

#[test]
fn round_trip_minimal_bios_machine() {
    let mut m = sample();
    m.system.firmware = Firmware::Bios;
    m.system.machine_id = None;
    m.system.os = None;
    m.system.timezone = None;
    m.system.kernel.cmdline = None;
    m.snapshot.parent = None;
    m.network = Network::default();
    m.disks.truncate(0);
    m.filesystems.truncate(0);
    m.swaps.truncate(0);
    m.boot = Boot::default();
    let xml = to_xml(&m).unwrap();
    assert_eq!(from_xml(&xml).unwrap(), m);
}

#[test]
fn example_in_docs_is_the_sample() {
    // docs/manifest.md embeds this exact document; keep them in step.
    let doc = include_str!("../../docs/manifest.md");
    let xml = sample_xml();
    assert!(
        doc.contains(xml.trim()),
        "docs/manifest.md's example differs from the sample; paste:\n{xml}"
    );
}

#[test]
fn unknown_schema_version_is_refused() {
    let xml = sample_xml().replace("<manifest schema=\"1\">", "<manifest schema=\"3\">");
    let e = refused(&xml);
    assert!(e.mentions("/manifest/@schema"), "{e}");
    assert!(
        e.to_string().contains("unsupported schema version \"3\""),
        "{e}"
    );
    let xml = sample_xml().replace("<manifest schema=\"1\">", "<manifest>");
    assert!(refused(&xml).mentions("/manifest/@schema"));
}

#[test]
fn not_a_manifest_is_refused() {
    assert!(
        refused("<inventory/>")
            .to_string()
            .contains("expected <manifest>")
    );
    assert!(refused("").mentions("/"));
    let e = refused("<manifest schema=\"1\">\n<snapshot");
    assert!(
        e.to_string().contains("not well-formed XML at line 2"),
        "{e}"
    );
}

#[test]
fn missing_required_field_names_its_element() {
    let xml = sample_xml().replacen(" size=\"8589934592\"", "", 1);
    let e = refused(&xml);
    assert_eq!(e.problems[0].path, "/manifest/disk[1]", "{e}");
    assert!(e.to_string().contains("@size"), "{e}");

    let xml = sample_xml().replace("<hostname>web1.example.com</hostname>", "");
    let e = refused(&xml);
    assert_eq!(e.problems[0].path, "/manifest/system", "{e}");
    assert!(e.to_string().contains("hostname"), "{e}");
}

#[test]
fn bad_number_names_its_attribute() {
    let xml = sample_xml().replace("first-lba=\"1050624\"", "first-lba=\"lots\"");
    let e = refused(&xml);
    assert_eq!(
        e.problems[0].path, "/manifest/disk[1]/gpt/partition[2]/@first-lba",
        "{e}"
    );
}

#[test]
fn unknown_element_is_refused() {
    let xml = sample_xml().replace("<timezone>", "<color>blue</color><timezone>");
    let e = refused(&xml);
    assert!(e.to_string().contains("color"), "{e}");
    let xml = sample_xml().replace("<disk name=\"vda\"", "<disk colour=\"red\" name=\"vda\"");
    let e = refused(&xml);
    assert_eq!(e.problems[0].path, "/manifest/disk[1]/@colour", "{e}");
}

#[test]
fn partition_beyond_disk_is_refused() {
    let mut m = sample();
    m.disks[0].size = 4 << 30; // the table was made for 8 GiB
    let e = validate(&m).unwrap_err();
    assert!(
        e.mentions("/manifest/disk[1]/gpt/partition[2]/@last-lba"),
        "{e}"
    );
    assert!(e.to_string().contains("beyond the disk's last LBA"), "{e}");

    let mut m = sample();
    m.disks[1].mbr.as_mut().unwrap().partitions[3].sectors += 1 << 22;
    let e = validate(&m).unwrap_err();
    assert!(
        e.mentions("/manifest/disk[2]/mbr/partition[4]/@sectors"),
        "{e}"
    );
}

#[test]
fn overlapping_partitions_are_refused() {
    let mut m = sample();
    m.disks[0].gpt.as_mut().unwrap().partitions[1].first_lba = 1_000_000;
    let e = validate(&m).unwrap_err();
    assert!(e.mentions("/manifest/disk[1]/gpt/partition[2]"), "{e}");
    assert!(e.to_string().contains("overlaps partition 1"), "{e}");

    let mut m = sample();
    let parts = &mut m.disks[1].mbr.as_mut().unwrap().partitions;
    parts[3].ebr_lba = Some(2_000_000); // inside logical 5
    let e = validate(&m).unwrap_err();
    assert!(e.mentions("/manifest/disk[2]/mbr/partition[4]"), "{e}");

    let mut m = sample();
    m.disks[1].mbr.as_mut().unwrap().partitions[0].sectors += 10; // into the extended
    let e = validate(&m).unwrap_err();
    assert!(e.to_string().contains("overlaps partition 1"), "{e}");
}

#[test]
fn logical_outside_extended_is_refused() {
    let mut m = sample();
    let parts = &mut m.disks[1].mbr.as_mut().unwrap().partitions;
    parts[1].sectors = 1_000_000;
    let e = validate(&m).unwrap_err();
    assert!(
        e.to_string().contains("outside the extended partition"),
        "{e}"
    );
}

#[test]
fn malformed_guid_is_refused() {
    for (from, path) in [
        (
            "a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f",
            "/manifest/disk[1]/gpt/@disk-guid",
        ),
        (
            "11111111-2222-4333-8444-555555555502\"",
            "/manifest/disk[1]/gpt/partition[2]/@guid",
        ),
        (
            "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",
            "/manifest/disk[1]/gpt/partition[3]/@type-guid",
        ),
        (
            "0a1b2c3d-1111-4222-8333-444455556666\"",
            "/manifest/filesystem[2]/@uuid",
        ),
        (
            "deadbeef-0000-4000-8000-000000000001",
            "/manifest/swap[1]/@uuid",
        ),
    ] {
        let bad = if from.ends_with('"') {
            // Replace only the attribute, not other mentions (the cmdline).
            sample_xml().replacen(from, "0a1b2c3d-zz11-4222-8333-444455556666\"", 1)
        } else {
            sample_xml().replace(from, "not-a-guid")
        };
        let e = refused(&bad);
        assert!(e.mentions(path), "expected {path} in: {e}");
        assert!(e.to_string().contains("malformed"), "{e}");
    }
}

#[test]
fn malformed_mac_is_refused() {
    for bad in [
        "52:54:00:12:34",
        "52-54-00-12-34-56",
        "52:54:00:12:34:zz",
        "",
    ] {
        let xml = sample_xml().replace("52:54:00:12:34:56", bad);
        let e = refused(&xml);
        assert!(
            e.mentions("/manifest/network/interface[1]/@mac"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn raw_partition_of_the_right_size_is_valid() {
    let mut m = sample();
    let tree = m.disks[1].raw[0].tree.clone();
    m.disks[1].raw.push(RawData {
        region: "partition-1".into(),
        tree: tree.clone(),
        bytes: 1_048_576 * 512,
    });
    m.disks[0].raw.push(RawData {
        region: "partition-4".into(),
        tree,
        bytes: (16_777_182 - 12_584_960 + 1) * 512,
    });
    validate(&m).unwrap();
    let back = from_xml(&to_xml(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    assert_eq!(
        RegionName::parse("partition-12"),
        Some(RegionName::Partition(12))
    );
    assert_eq!(RegionName::parse("partition-0"), None);
    assert_eq!(RegionName::parse("partition-01"), None);
    assert_eq!(RegionName::Partition(3).to_string(), "partition-3");
    assert_eq!(m.trees().len(), 4);
}

#[test]
fn other_checks_name_their_paths() {
    type Edit = fn(&mut Manifest);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |m| m.system.hostname = "bad host".into(),
            "/manifest/system/hostname",
        ),
        (
            |m| m.system.machine_id = Some("xyz".into()),
            "/manifest/system/machine-id",
        ),
        (
            |m| m.network.interfaces[0].addresses[0].cidr = "192.0.2.10/33".into(),
            "/manifest/network/interface[1]/address[1]/@cidr",
        ),
        (
            |m| m.network.routes[0].gateway = Some("gw".into()),
            "/manifest/network/route[1]/@gateway",
        ),
        (
            |m| m.network.dns.nameservers[1] = "dns.example".into(),
            "/manifest/network/dns/nameserver[2]",
        ),
        (
            |m| m.disks[1].name = "vda".into(),
            "/manifest/disk[2]/@name",
        ),
        (
            |m| m.disks[0].logical_sector_size = 520,
            "/manifest/disk[1]/@logical-sector-size",
        ),
        (|m| m.disks[0].size += 1, "/manifest/disk[1]/@size"),
        (
            |m| m.disks[0].gpt.as_mut().unwrap().partitions[2].number = 1,
            "/manifest/disk[1]/gpt/partition[3]/@number",
        ),
        (
            |m| m.disks[0].gpt.as_mut().unwrap().last_usable_lba = 16_777_215,
            "/manifest/disk[1]/gpt/@last-usable-lba",
        ),
        (
            |m| m.disks[1].mbr.as_mut().unwrap().partitions[2].number = 3,
            "/manifest/disk[2]/mbr/partition[3]/@number",
        ),
        (
            |m| m.disks[1].boot_code = Some("00".into()),
            "/manifest/disk[2]/boot-code",
        ),
        (
            |m| m.disks[1].boot_gap.as_mut().unwrap().last_lba = 5000,
            "/manifest/disk[2]/boot-gap",
        ),
        (
            |m| m.disks[1].raw[0].bytes = 512,
            "/manifest/disk[2]/raw[1]/@bytes",
        ),
        (
            |m| m.disks[1].raw[0].region = "partition-3".into(),
            "/manifest/disk[2]/raw[1]/@region",
        ),
        (
            |m| m.disks[1].raw[0].region = "mbr".into(),
            "/manifest/disk[2]/raw[1]/@region",
        ),
        (
            |m| m.disks[0].raw = m.disks[1].raw.clone(),
            "/manifest/disk[1]/raw[1]/@region",
        ),
        (
            |m| {
                let r = m.disks[1].raw[0].clone();
                m.disks[1].raw.push(r);
            },
            "/manifest/disk[2]/raw[2]/@region",
        ),
        (
            |m| m.filesystems[0].uuid = "1234ABCD".into(),
            "/manifest/filesystem[1]/@uuid",
        ),
        (
            |m| m.filesystems[1].disk = Some("sdz".into()),
            "/manifest/filesystem[2]/@disk",
        ),
        (
            |m| m.filesystems[1].partition = Some(3),
            "/manifest/filesystem[2]/@partition",
        ),
        (
            |m| m.filesystems[1].partition = None,
            "/manifest/filesystem[2]/@partition",
        ),
        (
            |m| m.filesystems[2].mounts[0].point = "/".into(),
            "/manifest/filesystem[3]/mount[1]/@point",
        ),
        (
            |m| m.filesystems[2].mounts[0].point = "srv".into(),
            "/manifest/filesystem[3]/mount[1]/@point",
        ),
        (
            |m| m.swaps[0].partition = Some(9),
            "/manifest/swap[1]/@partition",
        ),
        (|m| m.system.firmware = Firmware::Bios, "/manifest/boot/efi"),
        (
            |m| m.boot.efi.as_mut().unwrap().boot_order[0] = "1".into(),
            "/manifest/boot/efi/@boot-order",
        ),
        (
            |m| m.boot.efi.as_mut().unwrap().entries[1].number = "0001".into(),
            "/manifest/boot/efi/entry[2]/@number",
        ),
        (
            |m| m.boot.efi.as_mut().unwrap().entries[0].raw = "xyz".into(),
            "/manifest/boot/efi/entry[1]/@raw",
        ),
    ];
    for (i, (edit, path)) in cases.into_iter().enumerate() {
        let mut m = sample();
        edit(&mut m);
        let e = validate(&m).expect_err(&format!("case {i} ({path}) accepted"));
        assert!(e.mentions(path), "case {i}: expected {path} in:\n{e}");
    }
}

/// What the model's types rule out is refused as the XML is read, at the
/// same element path and with the same message as the semantic checks.
#[test]
fn checks_done_while_reading_name_their_paths() {
    let xml = sample_xml();
    let ext = &xml[xml.find("<ext ").unwrap()..];
    let ext = &ext[..ext.find("/>").unwrap() + 2];
    let cases: Vec<(String, &str, &str)> = vec![
        (
            xml.replace("time=\"2026-11-25T06:00:00Z\"", "time=\"yesterday\""),
            "/manifest/snapshot/@time",
            "\"yesterday\" is not an RFC 3339 time (2026-11-25T06:00:00Z)",
        ),
        (
            xml.replace(
                "tree=\"9e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7\"",
                "tree=\"abc\"",
            ),
            "/manifest/disk[2]/raw[1]/@tree",
            "\"abc\" is not a 64-hex-digit tree id",
        ),
        (
            xml.replace(
                "tree=\"5b8c1d0e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e\"",
                "tree=\"abc\"",
            ),
            "/manifest/filesystem[2]/data/@tree",
            "\"abc\" is not a 64-hex-digit tree id",
        ),
        (
            xml.replace(
                "partition-guid=\"11111111-2222-4333-8444-555555555501\"",
                "partition-guid=\"nope\"",
            ),
            "/manifest/boot/efi/entry[1]/@partition-guid",
            "malformed GUID \"nope\"",
        ),
        (
            xml.replace("signature=\"0x1a2b3c4d\"", "signature=\"1a2b3c4d\""),
            "/manifest/disk[2]/mbr/@signature",
            "\"1a2b3c4d\" is not 0x followed by 8 hex digits",
        ),
        (
            xml.replacen("type=\"0x83\"", "type=\"83\"", 1),
            "/manifest/disk[2]/mbr/partition[1]/@type",
            "\"83\" is not a type byte like 0x83",
        ),
        (
            xml.replace("type=\"ext4\"", "type=\"reiserfs\""),
            "/manifest/filesystem[2]/@type",
            "unknown filesystem type \"reiserfs\" (ext2, ext3, ext4, xfs, vfat, btrfs)",
        ),
        (
            xml.replace("<xfs ", &format!("{ext}<xfs ")),
            "/manifest/filesystem[3]/ext",
            "<ext> parameters on a xfs filesystem",
        ),
    ];
    for (i, (xml, path, message)) in cases.into_iter().enumerate() {
        let e = refused(&xml);
        assert!(e.mentions(path), "case {i}: expected {path} in:\n{e}");
        assert!(e.to_string().contains(message), "case {i}: {e}");
    }
}

#[test]
fn filesystem_element_keeps_serde_rules() {
    let xml = sample_xml();
    let e = refused(&xml.replace(
        "<filesystem device=\"/dev/vda1\"",
        "<filesystem colour=\"red\" device=\"/dev/vda1\"",
    ));
    assert_eq!(e.problems[0].path, "/manifest/filesystem[1]/@colour", "{e}");
    let e = refused(&xml.replacen(" type=\"vfat\"", "", 1));
    assert_eq!(e.problems[0].path, "/manifest/filesystem[1]", "{e}");
    assert!(e.to_string().contains("@type"), "{e}");
    let e = refused(&xml.replace("sectors-per-cluster=\"8\"", "sectors-per-cluster=\"many\""));
    assert_eq!(
        e.problems[0].path, "/manifest/filesystem[1]/vfat/@sectors-per-cluster",
        "{e}"
    );
    for name in crate::fs::PARAMS_ELEMENTS {
        assert!(super::xml::FILESYSTEM_FIELDS.contains(name), "{name}");
    }
}

#[test]
fn all_problems_are_reported_together() {
    let mut m = sample();
    m.system.hostname = String::new();
    m.network.interfaces[0].addresses[0].cidr = "nope".into();
    let e = validate(&m).unwrap_err();
    assert_eq!(e.problems.len(), 2, "{e}");
    assert!(e.to_string().starts_with("2 problems:"), "{e}");
}

#[test]
fn dmi_text_is_checked() {
    let mut m = sample();
    m.system.dmi = Some(Dmi {
        system_uuid: Some("not-a-uuid".into()),
        serial: Some("CZ1\u{1b}[2J".into()),
        vendor: None,
        product: None,
    });
    let err = validate(&m).unwrap_err().to_string();
    assert!(err.contains("/manifest/system/dmi/@system-uuid"), "{err}");
    assert!(err.contains("/manifest/system/dmi/@serial"), "{err}");
}

#[test]
fn how_a_filesystem_was_read_is_recorded_in_schema_2() {
    let mut m = sample();
    let fs = m.filesystems.iter().position(|f| f.data.is_some()).unwrap();
    m.filesystems[fs].data.as_mut().unwrap().read = Some(ReadMode::Live);
    // Schema 1 has no <data read>: refused, saying which schema is needed.
    let e = validate(&m).unwrap_err();
    assert!(e.mentions("/manifest/@schema"), "{e}");
    m.schema = 2;
    validate(&m).unwrap();
    let xml = to_xml(&m).unwrap();
    assert!(xml.contains(r#"bytes="2147483648" read="live"/>"#), "{xml}");
    assert_eq!(from_xml(&xml).unwrap(), m);
    // Every kind reads back.
    for r in [
        ReadMode::BtrfsSnapshot,
        ReadMode::LvmSnapshot,
        ReadMode::LvmThinSnapshot,
    ] {
        let text = xml.replace(r#"read="live""#, &format!(r#"read="{}""#, r.name()));
        assert!(text.contains(&format!(r#"read="{}""#, r.name())));
        // An ext4 on a partition cannot have been read from a btrfs or LVM snapshot.
        let e = from_xml(&text).unwrap_err();
        assert!(
            e.mentions(&format!("/manifest/filesystem[{}]/data/@read", fs + 1)),
            "{e}"
        );
    }
    let e = from_xml(&xml.replace(r#"read="live""#, r#"read="sometimes""#)).unwrap_err();
    assert!(e.to_string().contains("sometimes"), "{e}");
    // Without it, schema 1 as before.
    m.filesystems[fs].data.as_mut().unwrap().read = None;
    m.schema = 1;
    validate(&m).unwrap();
    assert!(!to_xml(&m).unwrap().contains("read="));
}

#[test]
fn disk_hardware_and_initramfs_are_checked() {
    let mut m = sample();
    m.disks[0].driver = Some("virtio blk".into());
    m.disks[0].transport = Some("firewire".into());
    m.system.initramfs = Some(InitramfsConfig {
        tool: "genkernel".into(),
        modules: Some("nvme;rm".into()),
        hostonly: Some("maybe".into()),
    });
    let err = validate(&m).unwrap_err().to_string();
    for path in [
        "/manifest/disk[1]/@driver",
        "/manifest/disk[1]/@transport",
        "/manifest/system/initramfs/@tool",
        "/manifest/system/initramfs/@modules",
        "/manifest/system/initramfs/@hostonly",
    ] {
        assert!(err.contains(path), "{path} missing in {err}");
    }
    // Absent, they are absent: a manifest from before them still reads.
    let mut m = sample();
    m.disks[0].driver = None;
    m.disks[0].controller = None;
    m.disks[0].transport = None;
    m.system.initramfs = None;
    let xml = to_xml(&m).unwrap();
    assert!(!xml.contains("transport=") && !xml.contains("<initramfs"));
    assert_eq!(from_xml(&xml).unwrap(), m);
}
