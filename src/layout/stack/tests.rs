//! The stack's plan on the manifest's stack sample: order, command lines,
//! mounts, and every refusal naming its device.

use crate::layout::plan::{Content, Plan, PlanOptions, plan};
use crate::layout::present::PresentDisk;
use crate::manifest::stack_tests::sample_stack;
use crate::manifest::{LuksEscrow, Manifest, validate};

const GIB: u64 = 1 << 30;

fn disk(name: &str, size: u64) -> PresentDisk {
    PresentDisk {
        name: name.into(),
        path: format!("/dev/{name}"),
        size,
        logical_sector_size: 512,
        model: None,
        serial: None,
        wwn: None,
        removable: false,
        in_use: None,
        ..Default::default()
    }
}

fn present() -> Vec<PresentDisk> {
    vec![
        disk("sda", 8 * GIB),
        disk("sdb", 8 * GIB),
        disk("sdc", 4 * GIB),
        disk("sdd", 4 * GIB),
    ]
}

fn opts() -> PlanOptions {
    PlanOptions {
        target_root: "/target".into(),
        ..PlanOptions::default()
    }
}

/// The sample, with a key escrowed for each LUKS volume.
fn escrowed() -> Manifest {
    let mut m = sample_stack();
    m.luks[1].escrow = Some(LuksEscrow {
        kind: "volume-key".into(),
        key_id: "web1-5ec2e700-1".into(),
    });
    validate(&m).unwrap();
    m
}

fn refused(m: &Manifest, present: &[PresentDisk], o: &PlanOptions) -> String {
    match plan(m, present, o) {
        Ok(p) => panic!("plan accepted:\n{p}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn the_whole_stack_in_order_with_its_commands() {
    let p: Plan = plan(&escrowed(), &present(), &opts()).unwrap();
    let layers: Vec<(&str, &str)> = p
        .stack
        .iter()
        .map(|s| (s.layer.as_str(), s.device.as_str()))
        .collect();
    assert_eq!(
        layers,
        [
            ("md/esp", "/dev/md/esp"),
            ("md/root", "/dev/md/root"),
            ("luks/cryptroot", "/dev/mapper/cryptroot"),
            ("vg vg0", "vg0"),
            ("luks/secret", "/dev/mapper/secret"),
        ]
    );
    let lines =
        |i: usize| -> Vec<String> { p.stack[i].commands.iter().map(|c| c.join(" ")).collect() };
    assert_eq!(
        lines(0),
        [
            "mdadm --create /dev/md/esp --run --metadata 1.0 --level raid1 --raid-devices 2 \
          --uuid 5d3c1e7a:90b2f4d6:1a2b3c4d:5e6f7a8b --homehost <ignore> --name web1:esp \
          --bitmap none --size=524224K /dev/sda1 /dev/sdb1"
        ]
    );
    assert!(
        lines(1)[0].ends_with("/dev/sda2 /dev/sdb2"),
        "{:?}",
        lines(1)
    );
    assert_eq!(
        lines(2),
        [
            "cryptsetup luksHeaderRestore --batch-mode /dev/md/root --header-backup-file /run/rewind/stack/cryptroot.header",
            "cryptsetup open --type luks2 --volume-key-file /run/rewind/stack/cryptroot.key /dev/md/root cryptroot",
        ]
    );
    assert_eq!(
        lines(3),
        [
            "pvcreate --yes --force --uuid Tq5wEr-Yu7i-Op9a-Sd2f-Gh4j-Kl6z-Xc8vBn --restorefile /run/rewind/stack/vg0.vg /dev/mapper/cryptroot",
            "vgcfgrestore --file /run/rewind/stack/vg0.without-thin.vg vg0",
            "lvcreate --yes --type thin-pool --name pool --size 2147483648b --chunksize 64k --poolmetadatasize 4194304b vg0",
            "lvcreate --yes --thin --name home --virtualsize 10737418240b vg0/pool",
            "vgchange --activate n vg0",
            "vgcfgbackup --file /run/rewind/stack/vg0.remade.vg vg0",
            "vgcfgrestore --file /run/rewind/stack/vg0.ids.vg --force vg0",
            "vgchange --activate y vg0",
        ]
    );
    // LUKS1 on an LV, without a captured header: made again with the key.
    assert!(
        lines(4)[0].starts_with("cryptsetup luksFormat --batch-mode --type luks1 --uuid 5ec2e700"),
        "{:?}",
        lines(4)
    );
    assert_eq!(
        p.stack[4].on,
        [(
            "lv/vg0/secret".to_string(),
            "/dev/mapper/vg0-secret".to_string()
        )]
    );
    // Filesystems and swap on the stack, and where they are mounted.
    let vols: Vec<(&str, &str)> = p
        .stack_volumes
        .iter()
        .map(|v| (v.reference.as_str(), v.device.as_str()))
        .collect();
    assert_eq!(
        vols,
        [
            ("md/esp", "/dev/md/esp"),
            ("lv/vg0/root", "/dev/mapper/vg0-root"),
            ("lv/vg0/home", "/dev/mapper/vg0-home"),
            ("luks/secret", "/dev/mapper/secret"),
            ("lv/vg0/swap", "/dev/mapper/vg0-swap"),
        ]
    );
    let mounts: Vec<(&str, &str)> = p
        .mounts
        .iter()
        .map(|m| (m.point.as_str(), m.device.as_str()))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/", "/dev/mapper/vg0-root"),
            ("/home", "/dev/mapper/vg0-home"),
            ("/boot/efi", "/dev/md/esp"),
            ("/srv/data", "/dev/sdc"),
            ("/srv/vault", "/dev/mapper/secret"),
        ]
    );
    // The btrfs across two whole disks gets every subvolume.
    let btrfs = p
        .disks
        .iter()
        .flat_map(|d| &d.volumes)
        .find_map(|v| match &v.content {
            Content::Filesystem {
                subvolumes,
                fs_type,
                ..
            } if fs_type == "btrfs" => Some(subvolumes.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(btrfs, ["/@data", "/@snapshots/1/snapshot"]);
    let mkfs = p
        .disks
        .iter()
        .flat_map(|d| &d.volumes)
        .find_map(|v| match &v.content {
            Content::Filesystem {
                commands, fs_type, ..
            } if fs_type == "btrfs" => Some(commands[0].join(" ")),
            _ => None,
        })
        .unwrap();
    assert!(
        mkfs.starts_with("mkfs.btrfs -q -f -U 9a8b7c6d-3333-4444-8555-666677778888 -L data"),
        "{mkfs}"
    );
    assert!(
        mkfs.ends_with("-d raid1 -m raid1 /dev/sdc /dev/sdd"),
        "{mkfs}"
    );
    let text = p.to_string();
    assert!(text.contains("storage stack, in this order:\n  md/esp -> /dev/md/esp on disk/vda/1 = /dev/sda1, disk/vdb/1 = /dev/sdb1:"), "{text}");
    assert!(
        text.contains("keyslot 1 is bound to a systemd-tpm2 token"),
        "{text}"
    );
    // The LUKS layers need their escrowed keys fetched first: refused
    // before any write, naming the layer and the file.
    let e = crate::layout::preflight(&p).unwrap_err().to_string();
    assert!(
        e.starts_with("nothing was written: luks/")
            && e.contains("needs its escrowed key at /run/rewind/stack/"),
        "{e}"
    );
}

#[test]
fn an_md_and_lvm_stack_passes_the_preflight_stack_gate() {
    let mut m = escrowed();
    // Only MD and LVM: no LUKS layer, so nothing to fetch.
    m.luks.clear();
    m.volume_groups.clear();
    m.filesystems.retain(|f| {
        !matches!(
            &f.volume,
            Some(crate::manifest::StackRef::Luks(_) | crate::manifest::StackRef::Lv(..))
        )
    });
    m.swaps.retain(|s| {
        !matches!(
            &s.volume,
            Some(crate::manifest::StackRef::Luks(_) | crate::manifest::StackRef::Lv(..))
        )
    });
    validate(&m).unwrap_or_else(|e| panic!("{e}"));
    let p = plan(&m, &present(), &opts()).unwrap();
    assert!(p.stack.iter().any(|s| s.layer.starts_with("md/")));
    // Whatever else this host lacks (mdadm, mkfs tools), the stack itself
    // is no longer a reason to refuse.
    if let Err(e) = crate::layout::preflight(&p) {
        let e = e.to_string();
        assert!(e.contains("not found on PATH"), "{e}");
        assert!(!e.contains("storage stack"), "{e}");
    }
}

#[test]
fn a_raid_member_on_a_disk_not_recreated_is_refused_naming_it() {
    let mut o = opts();
    o.mapping = vec![
        ("vda".into(), "/dev/sda".into()),
        ("vdc".into(), "/dev/sdc".into()),
        ("vdd".into(), "/dev/sdd".into()),
    ];
    let e = refused(&escrowed(), &present(), &o);
    assert!(
        e.contains("md/esp cannot be recreated: disk/vdb/1 is not on a recreated disk"),
        "{e}"
    );
    assert!(
        e.contains("md/root cannot be recreated: disk/vdb/2 is not on a recreated disk"),
        "{e}"
    );
}

#[test]
fn layers_wholly_on_other_disks_are_left_out_with_a_note() {
    let mut o = opts();
    o.mapping = vec![
        ("vdc".into(), "/dev/sdc".into()),
        ("vdd".into(), "/dev/sdd".into()),
    ];
    let p = plan(&escrowed(), &present(), &o).unwrap();
    assert!(p.stack.is_empty() && p.stack_volumes.is_empty());
    assert!(
        p.notes
            .iter()
            .any(|n| n.starts_with("md/root is not recreated")),
        "{:?}",
        p.notes
    );
    assert!(
        p.notes
            .iter()
            .any(|n| n.starts_with("luks/cryptroot is not recreated")),
        "{:?}",
        p.notes
    );
    assert_eq!(p.mounts.len(), 1);
}

#[test]
fn a_btrfs_member_on_a_disk_not_recreated_is_refused() {
    let mut o = opts();
    o.mapping = vec![
        ("vda".into(), "/dev/sda".into()),
        ("vdb".into(), "/dev/sdb".into()),
        ("vdc".into(), "/dev/sdc".into()),
    ];
    let e = refused(&escrowed(), &present(), &o);
    assert!(
        e.contains("its device disk/vdd (devid 2) is not on a recreated disk"),
        "{e}"
    );
}

#[test]
fn a_pv_too_small_is_refused_naming_it() {
    let mut m = escrowed();
    // A PV that was bigger than what its LUKS volume now gives.
    m.volume_groups[0].pvs[0].size = 9_000_000_000;
    m.volume_groups[0].pvs[0].extents = 2100;
    validate(&m).unwrap();
    let e = refused(&m, &present(), &opts());
    assert!(
        e.contains("vg vg0 cannot be recreated: its PV Tq5wEr-Yu7i-Op9a-Sd2f-Gh4j-Kl6z-Xc8vBn on luks/cryptroot is 8017412096 bytes, the PV needs 8809086976 bytes"),
        "{e}"
    );
}

#[test]
fn an_array_member_too_small_is_refused_naming_it() {
    let mut m = escrowed();
    m.md_arrays[1].size = 9 * GIB;
    let e = refused(&m, &present(), &opts());
    assert!(
        e.contains("md/root cannot be recreated: its member disk/vda/2 is"),
        "{e}"
    );
}

#[test]
fn luks_without_an_escrowed_key_is_refused_before_any_write() {
    let e = refused(&sample_stack(), &present(), &opts());
    assert!(
        e.contains(
            "luks/secret cannot be opened without a passphrase: the manifest holds no escrowed key"
        ),
        "{e}"
    );
}

/// The sample with cryptroot straight on vda's second partition, filling
/// it (no md/root), and — when `root_last` — root's extents moved after
/// everything else so that it is the LV at the PV's end; with the two
/// 8 GiB disks now 12 GiB and `--grow`.
fn grow_case(root_last: bool) -> (Manifest, Vec<PresentDisk>, PlanOptions) {
    let mut m = escrowed();
    m.md_arrays.retain(|a| a.name != "root");
    m.luks[0].on = "disk/vda/2".into();
    m.luks[0].size = 8_050_966_528 - 16 * (1 << 20);
    if root_last {
        m.volume_groups[0].metadata =
            m.volume_groups[0]
                .metadata
                .replacen("\"pv0\", 0\n", "\"pv0\", 3000\n", 1);
    }
    validate(&m).unwrap();
    let mut disks = present();
    disks[0].size = 12 * GIB;
    disks[1].size = 12 * GIB;
    let o = PlanOptions {
        grow: true,
        ..opts()
    };
    (m, disks, o)
}

/// `--grow` onto a bigger disk: the partition at the end grows, the LUKS
/// mapping that filled it grows with it, the PV is resized and the linear
/// LV at the PV's end is extended onto the new extents only; its ext4 is
/// made at the new size. The MD array on the same disk keeps its size.
#[test]
fn grow_passes_a_bigger_partition_up_to_the_lv_at_the_end() {
    let (m, disks, o) = grow_case(true);
    let p = plan(&m, &disks, &o).unwrap();
    let vg = p.stack.iter().find(|s| s.layer == "vg vg0").unwrap();
    let lines: Vec<String> = vg.commands.iter().map(|c| c.join(" ")).collect();
    let at = lines
        .iter()
        .position(|l| l == "pvresize --yes /dev/mapper/cryptroot")
        .unwrap_or_else(|| panic!("no pvresize: {lines:#?}\n{p}"));
    assert_eq!(
        lines[at + 1],
        "lvextend --yes --extents +1028 vg0/root /dev/mapper/cryptroot"
    );
    assert_eq!(lines[at + 2], "vgchange --activate y vg0");
    // What verify expects: the new sizes.
    let crate::layout::stack::Expect::Vg(g) = &vg.expect else {
        panic!("the VG step expects no VG")
    };
    assert_eq!(g.pvs[0].extents, 2939);
    assert_eq!(g.lvs[0].size, 4 * GIB + 1028 * 4 * (1 << 20));
    let luks = p
        .stack
        .iter()
        .find(|s| s.layer == "luks/cryptroot")
        .unwrap();
    let crate::layout::stack::Expect::Luks(l) = &luks.expect else {
        panic!("the LUKS step expects no LUKS volume")
    };
    assert_eq!(l.size, 12_329_156_608);
    let root = p
        .stack_volumes
        .iter()
        .find(|v| v.reference == "lv/vg0/root")
        .unwrap();
    let Content::Filesystem {
        grown, commands, ..
    } = &root.content
    else {
        panic!("root holds no filesystem")
    };
    assert!(grown);
    assert!(
        commands
            .iter()
            .any(|c| c.join(" ") == "resize2fs /dev/mapper/vg0-root"),
        "{commands:?}"
    );
    let text = p.to_string();
    assert!(text.contains("LV root at its end grows with it"), "{text}");
    assert!(
        text.contains("luks/cryptroot grows with disk/vda/2"),
        "{text}"
    );

    // Without --grow nothing of this is planned.
    let p = plan(&m, &disks, &opts()).unwrap();
    let vg = p.stack.iter().find(|s| s.layer == "vg vg0").unwrap();
    assert!(
        !vg.commands
            .iter()
            .any(|c| c[0] == "pvresize" || c[0] == "lvextend")
    );
}

/// When the LV at the PV's end holds no filesystem (here a LUKS volume),
/// the PV grows and the new extents are left free, with a note.
#[test]
fn grow_leaves_new_extents_free_when_the_lv_at_the_end_holds_no_filesystem() {
    let (m, disks, o) = grow_case(false);
    let p = plan(&m, &disks, &o).unwrap();
    let vg = p.stack.iter().find(|s| s.layer == "vg vg0").unwrap();
    assert!(vg.commands.iter().any(|c| c[0] == "pvresize"));
    assert!(!vg.commands.iter().any(|c| c[0] == "lvextend"));
    assert!(p.to_string().contains("left free"), "{p}");
}

/// Every program a stack plan runs is in the recovery image (image/tools
/// lists what scripts/build-image copies or links): a command the image
/// lacks fails only in the live image, halfway through a recovery.
#[test]
fn every_program_a_stack_plan_runs_is_in_the_image() {
    let tools: Vec<&str> = include_str!("../../../image/tools")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(" -> ").next().unwrap_or(l).trim())
        .collect();
    let (grown, big, grow) = grow_case(true);
    let plans = [
        plan(&escrowed(), &present(), &opts()).unwrap(),
        plan(&grown, &big, &grow).unwrap(),
    ];
    let mut programs: Vec<&str> = plans
        .iter()
        .flat_map(|p| {
            p.stack
                .iter()
                .flat_map(|s| s.commands.iter())
                .chain(p.stack_volumes.iter().flat_map(|v| match &v.content {
                    Content::Filesystem { commands, .. } | Content::Swap { commands, .. } => {
                        commands.iter()
                    }
                    Content::Raw => [].iter(),
                }))
        })
        .map(|c| c[0].as_str())
        .collect();
    programs.sort_unstable();
    programs.dedup();
    assert!(programs.contains(&"lvextend"), "{programs:?}");
    let missing: Vec<&&str> = programs.iter().filter(|p| !tools.contains(p)).collect();
    assert!(missing.is_empty(), "not in image/tools: {missing:?}");
}
