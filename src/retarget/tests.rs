//! Each configuration format on a fixture tree (tests/fixtures/retarget/
//! SCENARIO/root, copied to a temporary directory, compared after the run
//! with SCENARIO/expected for the files that change and with the input for
//! all others), plus matching, overrides and the file handling.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::*;
use crate::manifest::{
    Address, AddressMethod, Firmware, Interface, Kernel, Network, Route, SCHEMA_VERSION, Snapshot,
    System,
};

const OLD_MAC: &str = "52:54:00:0a:bc:de";
const NEW_MAC: &str = "52:54:00:ab:cd:ef";

fn iface(name: &str, mac: Option<&str>, driver: Option<&str>) -> Interface {
    Interface {
        name: name.into(),
        mac: mac.map(|m| m.parse().unwrap()),
        mtu: 1500,
        driver: driver.map(Into::into),
        addresses: Vec::new(),
    }
}

fn addr(cidr: &str, method: AddressMethod) -> Address {
    Address {
        cidr: cidr.into(),
        method,
        source: "test".into(),
    }
}

fn route(gw: &str) -> Route {
    Route {
        destination: "default".into(),
        gateway: Some(gw.into()),
        interface: Some("lan0".into()),
        metric: None,
    }
}

/// web1 with lan0 (static IPv4 and IPv6) and lan1 (DHCP).
fn manifest() -> Manifest {
    let mut lan0 = iface("lan0", Some(OLD_MAC), Some("virtio_net"));
    lan0.addresses = vec![
        addr("192.0.2.10/24", AddressMethod::Static),
        addr("2001:db8::10/64", AddressMethod::Static),
    ];
    let mut lan1 = iface("lan1", Some("52:54:00:0b:00:01"), Some("e1000e"));
    lan1.addresses = vec![addr("10.9.8.7/16", AddressMethod::Dhcp)];
    Manifest {
        schema: SCHEMA_VERSION,
        snapshot: Snapshot {
            id: "20261125T060000Z-web1".into(),
            host: "web1".into(),
            time: "2026-11-25T06:00:00Z".into(),
            parent: None,
            tool: "rewind 0.1.0".into(),
        },
        system: System {
            hostname: "web1".into(),
            machine_id: None,
            os: None,
            kernel: Kernel {
                release: "6.1.0-27-amd64".into(),
                arch: "x86_64".into(),
                cmdline: None,
            },
            firmware: Firmware::Bios,
            timezone: None,
            dmi: None,
            initramfs: None,
        },
        network: Network {
            interfaces: vec![lan0, lan1],
            routes: vec![route("192.0.2.1"), route("2001:db8::1")],
            dns: Default::default(),
        },
        disks: Vec::new(),
        md_arrays: Vec::new(),
        luks: Vec::new(),
        volume_groups: Vec::new(),
        filesystems: Vec::new(),
        swaps: Vec::new(),
        boot: Default::default(),
    }
}

fn nic(name: &str, mac: &str, driver: Option<&str>) -> PresentNic {
    PresentNic {
        name: name.into(),
        mac: mac.into(),
        driver: driver.map(Into::into),
    }
}

/// lan0 moved to a NIC with another MAC; lan1 stayed.
fn lan0_moved() -> Vec<NicMatch> {
    vec![
        NicMatch {
            captured: "lan0".into(),
            old_mac: Some(OLD_MAC.into()),
            new: nic("eth0", NEW_MAC, Some("virtio_net")),
            how: MatchHow::Driver,
        },
        NicMatch {
            captured: "lan1".into(),
            old_mac: Some("52:54:00:0b:00:01".into()),
            new: nic("eth1", "52:54:00:0b:00:01", Some("e1000e")),
            how: MatchHow::Mac,
        },
    ]
}

fn ov(spec: &[&str]) -> Overrides {
    Overrides {
        hostname: None,
        addresses: spec.iter().map(|s| parse_address(s).unwrap()).collect(),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/retarget")
        .join(name)
}

/// Copy a tree, symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let t = e.file_type().unwrap();
        if t.is_symlink() {
            symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if t.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Every file under `dir` (relative path → bytes; symlinks → their target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        if !dir.exists() {
            return;
        }
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_path_buf();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                let target = fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", target.display()).into_bytes());
            } else if t.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run a fixture scenario: the tree must end up as `expected` over `root`,
/// and a second run must change nothing. Returns the first run's changes.
fn scenario(
    name: &str,
    matches: &[NicMatch],
    ov: &Overrides,
    disk_names: &DiskNames,
    prepare: impl Fn(&Path),
) -> (tempfile::TempDir, Vec<Change>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    copy_tree(&fixture(name).join("root"), &root);
    prepare(&root);
    let m = manifest();
    let changes = retarget(&root, &m, matches, ov, disk_names).unwrap();

    let mut want = snapshot(&fixture(name).join("root"));
    want.extend(snapshot(&fixture(name).join("expected")));
    let got = snapshot(&root);
    for (rel, bytes) in &want {
        let have = got
            .get(rel)
            .unwrap_or_else(|| panic!("{name}: {} missing", rel.display()));
        assert_eq!(text_of(have), text_of(bytes), "{name}: {}", rel.display());
    }
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "{name}: unexpected files {extra:?}");
    // Every changed file is reported, and no unchanged one.
    for (rel, bytes) in &got {
        let before = snapshot(&fixture(name).join("root")).get(rel).cloned();
        let reported = changes
            .iter()
            .any(|c| &c.file == rel && c.kind != ChangeKind::Warning);
        assert_eq!(
            before.as_ref() != Some(bytes),
            reported,
            "{name}: {} reported wrongly in {changes:#?}",
            rel.display()
        );
    }

    let again = retarget(&root, &m, matches, ov, disk_names).unwrap();
    assert!(
        again.iter().all(|c| c.kind == ChangeKind::Warning),
        "{name}: second run changed {again:#?}"
    );
    assert_eq!(snapshot(&root), got, "{name}: second run rewrote files");
    (tmp, changes)
}

fn none() -> DiskNames {
    DiskNames::default()
}

fn whats(changes: &[Change], kind: ChangeKind) -> Vec<String> {
    changes
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| format!("{}: {}", c.file.display(), c.what))
        .collect()
}

#[test]
fn networkd_link_and_network_files() {
    let (_t, changes) = scenario(
        "networkd",
        &lan0_moved(),
        &ov(&["lan0:198.51.100.7/25:198.51.100.1"]),
        &none(),
        |_| {},
    );
    assert_eq!(
        whats(&changes, ChangeKind::Edited),
        [
            "etc/systemd/network/10-lan0.link: MAC 52:54:00:0a:bc:de -> 52:54:00:ab:cd:ef (lan0)",
            "etc/systemd/network/25-lan0-mac.network: MAC 52:54:00:0a:bc:de -> 52:54:00:ab:cd:ef (lan0)",
            "etc/systemd/network/20-lan0.network: Address=192.0.2.10/24 -> Address=198.51.100.7/25",
            "etc/systemd/network/20-lan0.network: Gateway=192.0.2.1 -> Gateway=198.51.100.1",
        ]
    );
    // The [Link] MACAddress= setter is kept, and said so.
    let warnings = whats(&changes, ChangeKind::Warning);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("25-lan0-mac.network") && warnings[0].contains("left as configured")
    );
}

#[test]
fn ifupdown_interfaces_and_hostname() {
    let mut o = ov(&[
        "lan0:198.51.100.7/25:198.51.100.1",
        "lan0:2001:db8:1::7/64:2001:db8:1::1",
    ]);
    o.hostname = Some("web2".into());
    let (_t, changes) = scenario("ifupdown", &lan0_moved(), &o, &none(), |_| {});
    let edited = whats(&changes, ChangeKind::Edited);
    assert!(
        edited.contains(
            &"etc/network/interfaces: netmask 255.255.255.0 -> netmask 255.255.255.128".to_string()
        ),
        "{edited:#?}"
    );
    assert!(edited.contains(&"etc/hostname: host name web1 -> web2".to_string()));
    // Not pinned by any matcher (hwaddress sets, it does not match): a .link keeps the name.
    assert_eq!(
        whats(&changes, ChangeKind::Created),
        [
            "etc/systemd/network/10-rewind-lan0.link: name lan0 given to MAC 52:54:00:ab:cd:ef (was 52:54:00:0a:bc:de)"
        ]
    );
    let warnings = whats(&changes, ChangeKind::Warning);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("hwaddress ether 52:54:00:0a:bc:de")),
        "{warnings:?}"
    );
}

#[test]
fn nm_keyfile_keeps_mode_0600() {
    let file = "etc/NetworkManager/system-connections/lan0.nmconnection";
    let (t, changes) = scenario(
        "nm",
        &lan0_moved(),
        &ov(&["lan0:198.51.100.7/25:198.51.100.1"]),
        &none(),
        |root| fs::set_permissions(root.join(file), fs::Permissions::from_mode(0o600)).unwrap(),
    );
    let mode = fs::metadata(t.path().join("root").join(file))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert_eq!(
        whats(&changes, ChangeKind::Edited),
        [
            format!("{file}: MAC 52:54:00:0a:bc:de -> 52:54:00:ab:cd:ef (lan0)"),
            format!(
                "{file}: address1=192.0.2.10/24,192.0.2.1 -> address1=198.51.100.7/25,198.51.100.1"
            ),
        ]
    );
    // cloned-mac-address is a setter: kept, with a warning. Pinned: no .link.
    assert_eq!(whats(&changes, ChangeKind::Warning).len(), 1);
    assert!(whats(&changes, ChangeKind::Created).is_empty());
}

#[test]
fn netplan_match_set_name_and_flow_addresses() {
    let (_t, changes) = scenario(
        "netplan",
        &lan0_moved(),
        &ov(&["lan0:198.51.100.7/25:198.51.100.1"]),
        &none(),
        |_| {},
    );
    assert_eq!(
        whats(&changes, ChangeKind::Edited),
        [
            "etc/netplan/01-netcfg.yaml: MAC 52:54:00:0a:bc:de -> 52:54:00:ab:cd:ef (lan0)",
            "etc/netplan/01-netcfg.yaml: addresses: [192.0.2.10/24, \"2001:db8::10/64\"] -> addresses: [198.51.100.7/25, \"2001:db8::10/64\"]",
            "etc/netplan/01-netcfg.yaml: via: 192.0.2.1 -> via: 198.51.100.1",
        ]
    );
    assert!(whats(&changes, ChangeKind::Warning).is_empty());
}

#[test]
fn netplan_block_lists_without_udevd() {
    let (_t, changes) = scenario(
        "netplan-block",
        &lan0_moved(),
        &ov(&["lan0:2001:db8:1::7/64:2001:db8:1::1"]),
        &none(),
        |_| {},
    );
    assert_eq!(whats(&changes, ChangeKind::Edited).len(), 2);
    let warnings = whats(&changes, ChangeKind::Warning);
    // The `macaddress:` setter, and no systemd-udevd to pin the name with.
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[0].contains("macaddress: 52:54:00:0a:bc:de"));
    assert!(warnings[1].contains("no systemd-udevd"));
}

#[test]
fn udev_persistent_net_rules() {
    let (_t, changes) = scenario(
        "udev",
        &lan0_moved(),
        &Overrides::default(),
        &none(),
        |_| {},
    );
    assert_eq!(
        whats(&changes, ChangeKind::Edited),
        [
            "etc/udev/rules.d/70-persistent-net.rules: MAC 52:54:00:0a:bc:de -> 52:54:00:ab:cd:ef (lan0)"
        ]
    );
    assert!(whats(&changes, ChangeKind::Created).is_empty());
}

#[test]
fn fstab_and_crypttab_by_id() {
    let ids = [
        ("ata-QEMU_HARDDISK_QM00001", "virtio-rewind-new-root"),
        ("ata-QEMU_HARDDISK_QM00002", "nvme-eui.0025388b71b3c4d1"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    let names = DiskNames {
        by_id: ids.to_vec(),
        kernel: Vec::new(),
    };
    let (_t, changes) = scenario("fstab-by-id", &[], &Overrides::default(), &names, |_| {});
    assert_eq!(whats(&changes, ChangeKind::Edited).len(), 5);
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Edited));
}

/// A Debian machine on virtio disks (vda, vdb) recovered onto NVMe and
/// SATA: every file that names a disk for the boot by kernel name follows.
#[test]
fn kernel_disk_names_in_boot_files() {
    let names = DiskNames {
        by_id: vec![(
            "virtio-rewind-root".to_string(),
            "nvme-QEMU_NVMe_Ctrl_rewind-new".to_string(),
        )],
        kernel: vec![
            ("vda".to_string(), "nvme0n1".to_string()),
            ("vdb".to_string(), "sda".to_string()),
        ],
    };
    let (_t, changes) = scenario("kernel-names", &[], &Overrides::default(), &names, |_| {});
    let edited = whats(&changes, ChangeKind::Edited);
    for file in [
        "etc/fstab",
        "etc/crypttab",
        "boot/grub/device.map",
        "etc/default/grub",
        "etc/default/grub.d/50-resume.cfg",
        "boot/grub/grub.cfg",
        "etc/initramfs-tools/conf.d/resume",
        "etc/dracut.conf.d/10-resume.conf",
        "boot/loader/entries/debian.conf",
        "etc/kernel/cmdline",
    ] {
        assert!(
            edited.iter().any(|w| w.starts_with(&format!("{file}: "))),
            "{file} not reported in {edited:#?}"
        );
    }
    assert!(
        edited.contains(&"etc/fstab: /dev/vda2 -> /dev/nvme0n1p2 (a kernel name: UUID= would not depend on the order disks are found in)".to_string()),
        "{edited:#?}"
    );
    for f in [
        "/etc/crypttab",
        "/etc/initramfs-tools/conf.d/resume",
        "/etc/dracut.conf.d/10-resume.conf",
    ] {
        assert!(in_initramfs(f), "{f}");
    }
    assert!(!in_initramfs("/etc/fstab"));
}

#[test]
fn nothing_to_do_writes_nothing() {
    // Same hardware, no overrides: every fixture stays as it is.
    let same: Vec<NicMatch> = lan0_moved()
        .into_iter()
        .map(|mut m| {
            m.new.mac = m.old_mac.clone().unwrap();
            m
        })
        .collect();
    for name in [
        "networkd",
        "ifupdown",
        "nm",
        "netplan",
        "netplan-block",
        "udev",
        "fstab-by-id",
        "kernel-names",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&fixture(name).join("root"), tmp.path());
        let before = snapshot(tmp.path());
        let changes = retarget(
            tmp.path(),
            &manifest(),
            &same,
            &Overrides::default(),
            &none(),
        )
        .unwrap();
        assert!(changes.is_empty(), "{name}: {changes:#?}");
        assert_eq!(snapshot(tmp.path()), before, "{name}");
    }
}

#[test]
fn swapped_macs_are_rewritten_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("etc/udev/rules.d");
    fs::create_dir_all(&dir).unwrap();
    let rule = |a: &str, b: &str| {
        format!(
            "ATTR{{address}}==\"{a}\", NAME=\"lan0\"\nATTR{{address}}==\"{b}\", NAME=\"lan1\"\n"
        )
    };
    fs::write(
        dir.join("70-persistent-net.rules"),
        rule("aa:00:00:00:00:01", "aa:00:00:00:00:02"),
    )
    .unwrap();
    let swap = vec![
        NicMatch {
            captured: "lan0".into(),
            old_mac: Some("aa:00:00:00:00:01".into()),
            new: nic("eth1", "aa:00:00:00:00:02", None),
            how: MatchHow::Order,
        },
        NicMatch {
            captured: "lan1".into(),
            old_mac: Some("aa:00:00:00:00:02".into()),
            new: nic("eth0", "aa:00:00:00:00:01", None),
            how: MatchHow::Order,
        },
    ];
    retarget(
        tmp.path(),
        &manifest(),
        &swap,
        &Overrides::default(),
        &none(),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("70-persistent-net.rules")).unwrap(),
        rule("aa:00:00:00:00:02", "aa:00:00:00:00:01")
    );
}

#[test]
fn an_earlier_rewind_link_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    fs::write(root.join("usr/lib/systemd/systemd-udevd"), "").unwrap();
    let dir = root.join("etc/systemd/network");
    fs::create_dir_all(&dir).unwrap();
    // From a recovery onto yet other hardware, before the snapshot was taken.
    let stale = names::link_text("lan0", "52:54:00:99:99:99");
    fs::write(dir.join("10-rewind-lan0.link"), &stale).unwrap();
    let changes = retarget(
        root,
        &manifest(),
        &lan0_moved(),
        &Overrides::default(),
        &none(),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("10-rewind-lan0.link")).unwrap(),
        names::link_text("lan0", NEW_MAC)
    );
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Edited);
}

#[test]
fn symlinks_resolve_inside_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let dir = root.join("etc/systemd/network");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(root.join("srv/net")).unwrap();
    let link = format!("[Match]\nMACAddress={OLD_MAC}\n[Link]\nName=lan0\n");
    fs::write(root.join("srv/net/lan0.link"), &link).unwrap();
    // An absolute link is taken inside the root; a mask to /dev/null is skipped.
    symlink("/srv/net/lan0.link", dir.join("10-lan0.link")).unwrap();
    symlink("/dev/null", dir.join("99-default.link")).unwrap();
    // A host file the link would reach if followed outside the root.
    let outside = tmp.path().join("outside.network");
    fs::write(&outside, format!("[Match]\nMACAddress={OLD_MAC}\n")).unwrap();
    symlink("../../../../outside.network", dir.join("20-out.network")).unwrap();

    let changes = retarget(
        &root,
        &manifest(),
        &lan0_moved(),
        &Overrides::default(),
        &none(),
    )
    .unwrap();
    assert_eq!(
        whats(&changes, ChangeKind::Edited),
        [format!(
            "srv/net/lan0.link: MAC {OLD_MAC} -> {NEW_MAC} (lan0)"
        )]
    );
    assert_eq!(
        fs::read_to_string(root.join("srv/net/lan0.link")).unwrap(),
        link.replace(OLD_MAC, NEW_MAC)
    );
    assert!(
        fs::symlink_metadata(dir.join("10-lan0.link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_to_string(&outside).unwrap(),
        format!("[Match]\nMACAddress={OLD_MAC}\n")
    );
}

#[test]
fn a_file_that_is_not_utf8_is_left_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("etc/udev/rules.d");
    fs::create_dir_all(&dir).unwrap();
    let bytes = b"# caf\xe9\nATTR{address}==\"52:54:00:0a:bc:de\", NAME=\"lan0\"\n";
    fs::write(dir.join("70-persistent-net.rules"), bytes).unwrap();
    let changes = retarget(
        tmp.path(),
        &manifest(),
        &lan0_moved(),
        &Overrides::default(),
        &none(),
    )
    .unwrap();
    assert_eq!(
        fs::read(dir.join("70-persistent-net.rules")).unwrap(),
        bytes
    );
    assert_eq!(
        whats(&changes, ChangeKind::Warning)[0],
        "etc/udev/rules.d/70-persistent-net.rules: not UTF-8 text: left alone"
    );
}

#[test]
fn address_override_without_a_static_address_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let changes = retarget(
        tmp.path(),
        &manifest(),
        &[],
        &ov(&["lan1:10.1.1.1/24"]),
        &none(),
    )
    .unwrap();
    assert_eq!(changes.len(), 1);
    assert!(
        changes[0].what.contains("no static IPv4 address"),
        "{changes:?}"
    );
}

#[test]
fn gateway_outside_the_new_network_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture("networkd").join("root"), tmp.path());
    let changes = retarget(
        tmp.path(),
        &manifest(),
        &[],
        &ov(&["lan0:198.51.100.7/25"]),
        &none(),
    )
    .unwrap();
    let warnings = whats(&changes, ChangeKind::Warning);
    assert_eq!(
        warnings,
        [": lan0's gateway 192.0.2.1 (left as configured) is outside 198.51.100.7/25"]
    );
}

// ---------------------------------------------------------------------------
// NICs

#[test]
fn present_nics_from_sysfs() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = tmp.path();
    let net = sys.join("class/net");
    let dev = |name: &str, index: u32, mac: &str| {
        let d = net.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
        fs::write(d.join("mtu"), "1500\n").unwrap();
        fs::write(d.join("type"), if name == "lo" { "772\n" } else { "1\n" }).unwrap();
        fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        d
    };
    for (name, index, mac, driver) in [
        ("eth10", 4, "52:54:00:00:00:0A", Some("e1000e")),
        ("eth2", 3, "52:54:00:00:00:02", Some("virtio_net")),
    ] {
        let d = dev(name, index, mac);
        let pci = sys.join(format!("devices/pci/{name}"));
        fs::create_dir_all(&pci).unwrap();
        let drv = sys.join(format!("bus/pci/drivers/{}", driver.unwrap()));
        fs::create_dir_all(&drv).unwrap();
        symlink(&drv, pci.join("driver")).unwrap();
        symlink(&pci, d.join("device")).unwrap();
    }
    dev("lo", 1, "00:00:00:00:00:00");
    dev("br0", 5, "52:54:00:00:00:02");
    assert_eq!(
        present_nics(sys).unwrap(),
        [
            nic("eth2", "52:54:00:00:00:02", Some("virtio_net")),
            nic("eth10", "52:54:00:00:00:0a", Some("e1000e")),
        ]
    );
}

#[test]
fn matching_by_mac_then_driver_then_order() {
    let captured = vec![
        iface("lo", None, None),
        iface("br0", Some("aa:00:00:00:00:01"), None),
        iface("eno1", Some("AA:00:00:00:00:01"), Some("igb")),
        iface("eno2", Some("aa:00:00:00:00:02"), Some("igb")),
        iface("enp5s0", Some("aa:00:00:00:00:03"), Some("e1000e")),
        iface("usb0", Some("aa:00:00:00:00:04"), None),
        iface("wlan0", Some("aa:00:00:00:00:05"), Some("iwlwifi")),
    ];
    let present = vec![
        nic("eth3", "bb:00:00:00:00:03", Some("igb")),
        nic("eth1", "bb:00:00:00:00:01", Some("e1000e")),
        nic("eth0", "aa:00:00:00:00:01", Some("igb")),
        nic("eth2", "bb:00:00:00:00:02", Some("r8169")),
        nic("eth10", "bb:00:00:00:00:10", Some("r8169")),
    ];
    let (matches, warnings) = match_nics(&captured, &present);
    let got: Vec<(&str, &str, MatchHow)> = matches
        .iter()
        .map(|m| (m.captured.as_str(), m.new.name.as_str(), m.how))
        .collect();
    assert_eq!(
        got,
        [
            ("eno1", "eth0", MatchHow::Mac),
            ("eno2", "eth3", MatchHow::Driver),
            ("enp5s0", "eth1", MatchHow::Driver),
            ("usb0", "eth2", MatchHow::Order),
            ("wlan0", "eth10", MatchHow::Order),
        ]
    );
    assert_eq!(matches[0].old_mac.as_deref(), Some("aa:00:00:00:00:01"));
    assert!(warnings.is_empty(), "{warnings:?}");

    let (matches, warnings) = match_nics(&captured, &present[..2]);
    assert_eq!(matches.len(), 2);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].starts_with("eno2 (aa:00:00:00:00:02) has no NIC left"));
}

#[test]
fn natural_name_order() {
    let mut names = vec!["eth10", "eth2", "eno1", "eth0", "enp10s0", "enp9s0"];
    names.sort_by(|a, b| nics::natural_cmp(a, b));
    assert_eq!(
        names,
        ["eno1", "enp9s0", "enp10s0", "eth0", "eth2", "eth10"]
    );
}

// ---------------------------------------------------------------------------
// Overrides

#[test]
fn override_values() {
    assert_eq!(
        parse_hostname("web2.example.org").unwrap(),
        "web2.example.org"
    );
    for bad in ["", "-web", "web_2", "a..b", "web2-"] {
        assert!(parse_hostname(bad).is_err(), "{bad}");
    }
    let a = parse_address("eth0:192.0.2.10/24:192.0.2.1").unwrap();
    assert_eq!(
        (a.iface.as_str(), a.cidr()),
        ("eth0", "192.0.2.10/24".to_string())
    );
    assert_eq!(a.gateway, Some("192.0.2.1".parse().unwrap()));
    let a = parse_address("lan0:2001:db8::10/64:2001:db8::1").unwrap();
    assert_eq!(a.cidr(), "2001:db8::10/64");
    assert_eq!(a.gateway, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(parse_address("lan0:2001:db8::10/64").unwrap().gateway, None);
    for bad in [
        "192.0.2.10/24",
        "eth0:192.0.2.10",
        "eth0:192.0.2.10/33",
        "eth0:192.0.2.10/24:2001:db8::1",
        "eth0:192.0.2.10/24x",
        ":192.0.2.10/24",
    ] {
        assert!(parse_address(bad).is_err(), "{bad}");
    }
    // The kernel command line's overrides, as the recovery reads them.
    let parsed = crate::init::cmdline::parse(
        "console=ttyS0 rewind.hostname=web2 rewind.address=lan0:198.51.100.7/25:198.51.100.1 \
         rewind.address=lan0:2001:db8:1::7/64 rewind.address=bad rewind.server=x",
    );
    let (o, warnings) = (parsed.overrides, parsed.warnings);
    assert_eq!(o.hostname.as_deref(), Some("web2"));
    assert_eq!(o.addresses.len(), 2);
    assert_eq!(warnings.len(), 1);
}

#[test]
fn hosts_names() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(
        etc.join("hosts"),
        "127.0.0.1 localhost\n127.0.1.1 web1.example.com web1\n# web1 is old\n10.0.0.9 web10 web1x\n",
    )
    .unwrap();
    let mut m = manifest();
    m.system.hostname = "web1.example.com".into();
    let o = Overrides {
        hostname: Some("db3.example.net".into()),
        addresses: Vec::new(),
    };
    retarget(tmp.path(), &m, &[], &o, &none()).unwrap();
    assert_eq!(
        fs::read_to_string(etc.join("hostname")).unwrap(),
        "db3.example.net\n"
    );
    assert_eq!(
        fs::read_to_string(etc.join("hosts")).unwrap(),
        "127.0.0.1 localhost\n127.0.1.1 db3.example.net db3\n# web1 is old\n10.0.0.9 web10 web1x\n"
    );
}
