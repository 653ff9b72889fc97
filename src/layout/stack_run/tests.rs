//! Running and verifying the stack with a fake runner: the argv and files
//! in order, the thin pool's UUIDs put back, and the read-back compared
//! with the manifest using real tool output (tests/fixtures/stack/).

use std::collections::HashMap;

use super::*;
use crate::layout::plan::{PlanOptions, plan};
use crate::layout::present::PresentDisk;
use crate::manifest::stack_tests::sample_stack;
use crate::manifest::{LuksEscrow, Manifest, StackRef, validate};

pub(super) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/stack")
            .join(name),
    )
    .unwrap()
}

pub(super) fn text(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

/// The stack sample with the real vg0 of the fixtures on luks/cryptroot.
pub(super) fn manifest() -> Manifest {
    let mut m = sample_stack();
    let vg = lvm::to_element(
        "vg0",
        &lvm::parse_vgs(&text("lvm-vgs.json")).unwrap(),
        &lvm::parse_pvs(&text("lvm-pvs.json")).unwrap(),
        &lvm::parse_lvs(&text("lvm-lvs.json")).unwrap(),
        &text("lvm-vg0-thin.vg"),
        |_| Some(StackRef::Luks("cryptroot".into())),
    )
    .unwrap();
    m.volume_groups = vec![vg];
    m.luks[1].size = 62 << 20;
    m.luks[1].escrow = Some(LuksEscrow {
        kind: "volume-key".into(),
        key_id: "web1-5ec2e700-1".into(),
    });
    validate(&m).unwrap_or_else(|e| panic!("{e}"));
    m
}

/// The size `blockdev --getsize64` gives for an array or LUKS mapping of
/// `m` made as planned.
pub(super) fn planned_size(m: &Manifest, dev: &str) -> u64 {
    m.md_arrays
        .iter()
        .find(|a| format!("/dev/md/{}", a.name) == dev)
        .map(|a| a.size)
        .or_else(|| {
            m.luks
                .iter()
                .find(|l| format!("/dev/mapper/{}", l.name) == dev)
                .map(|l| l.size)
        })
        .unwrap_or_else(|| panic!("no planned size for {dev}"))
}

pub(super) fn present() -> Vec<PresentDisk> {
    ["sda", "sdb", "sdc", "sdd"]
        .iter()
        .zip([8u64 << 30, 8 << 30, 4 << 30, 4 << 30])
        .map(|(n, size)| PresentDisk::bare(n, size))
        .collect()
}

/// Answers as the tools would after a faithful recreation of `m`.
struct Fake {
    m: Manifest,
    ran: Vec<String>,
    files: HashMap<String, String>,
    md_uuid_override: Option<String>,
    /// The kernel node LVM names the PV by (`pvs`), and `readlink -f` of
    /// the plan's path answers (as /dev/md/pv -> /dev/md126).
    pv_node: Option<String>,
    removed: Vec<String>,
}

impl StackRunner for Fake {
    fn run(&mut self, argv: &[String]) -> Result<String> {
        self.ran.push(argv.join(" "));
        let m = &self.m;
        Ok(match argv[0].as_str() {
            "mdadm" if argv[1] == "--detail" => {
                let name = argv[3].trim_start_matches("/dev/md/");
                let a = m.md_arrays.iter().find(|a| a.name == name).unwrap();
                let uuid = self.md_uuid_override.clone().unwrap_or(a.uuid.clone());
                format!(
                    "MD_LEVEL={}\nMD_DEVICES={}\nMD_METADATA={}\nMD_UUID={uuid}\nMD_DEVNAME={name}\nMD_NAME={}\n",
                    a.level,
                    a.raid_devices,
                    a.metadata,
                    a.array_name.clone().unwrap_or_default()
                )
            }
            "blockdev" => format!("{}\n", planned_size(m, &argv[2])),
            "vgs" => text("lvm-vgs.json"),
            "pvs" => text("lvm-pvs.json").replace(
                "/dev/loop0",
                self.pv_node.as_deref().unwrap_or("/dev/mapper/cryptroot"),
            ),
            "readlink" => match &self.pv_node {
                Some(node) if argv[2] == "/dev/mapper/cryptroot" => format!("{node}\n"),
                _ => format!("{}\n", argv[2]),
            },
            "lvs" => text("lvm-lvs.json"),
            _ => String::new(),
        })
    }
    fn write(&mut self, path: &str, text: &str) -> Result<()> {
        self.ran.push(format!("write {path}"));
        self.files.insert(path.into(), text.into());
        Ok(())
    }
    fn read(&mut self, path: &str) -> Result<String> {
        assert_eq!(path, "/run/rewind/stack/vg0.remade.vg");
        // lvcreate gave the pool and its volume new UUIDs.
        let vg = &self.m.volume_groups[0];
        Ok(vg.lvs.iter().fold(vg.metadata.clone(), |t, lv| {
            t.replace(&lv.uuid, &format!("NEW{}", &lv.uuid[3..]))
        }))
    }
    fn remove(&mut self, path: &str) -> Result<()> {
        self.removed.push(path.into());
        Ok(())
    }
    fn read_head(&mut self, device: &str, _len: usize) -> Result<Vec<u8>> {
        Ok(match device {
            "/dev/md/root" => fixture("luks2-header.bin"),
            "/dev/mapper/vg0-secret" => fixture("luks1-header.bin"),
            other => panic!("unexpected read of {other}"),
        })
    }
}

fn fake(m: &Manifest) -> Fake {
    Fake {
        m: m.clone(),
        ran: Vec::new(),
        files: HashMap::new(),
        md_uuid_override: None,
        pv_node: None,
        removed: Vec::new(),
    }
}

#[test]
fn a_pv_named_by_its_kernel_node_is_the_plans_device() {
    let m = manifest();
    let p = plan(&m, &present(), &PlanOptions::default()).unwrap();
    let mut r = fake(&m);
    r.pv_node = Some("/dev/dm-3".into());
    super::verify(&p, &mut r).unwrap();
}

#[test]
fn every_layer_is_made_in_order_then_verified() {
    let m = manifest();
    let p = plan(&m, &present(), &PlanOptions::default()).unwrap();
    let mut r = fake(&m);
    super::run(&p, &mut r).unwrap();
    let firsts: Vec<&str> = r
        .ran
        .iter()
        .map(|l| l.split(" --").next().unwrap())
        .collect();
    assert_eq!(
        firsts,
        [
            "mdadm",
            "mdadm",
            "cryptsetup luksHeaderRestore",
            "cryptsetup open",
            "write /run/rewind/stack/vg0.vg",
            "write /run/rewind/stack/vg0.without-thin.vg",
            "pvcreate",
            "vgcfgrestore",
            "lvcreate",
            "lvcreate",
            "vgchange",
            "vgcfgbackup",
            "write /run/rewind/stack/vg0.ids.vg",
            "vgcfgrestore",
            "vgchange",
            "cryptsetup luksFormat",
            "cryptsetup open",
        ]
    );
    // pvcreate reads the captured metadata; the second vgcfgrestore the
    // group lvcreate made, with every captured LV UUID back.
    let vg = &m.volume_groups[0];
    assert_eq!(r.files["/run/rewind/stack/vg0.vg"], vg.metadata);
    assert_eq!(r.files["/run/rewind/stack/vg0.ids.vg"], vg.metadata);
    assert!(!r.files["/run/rewind/stack/vg0.without-thin.vg"].contains("thin-pool"));
    // Each LUKS volume's key (and header) is removed once it is open.
    assert_eq!(
        r.removed,
        [
            "/run/rewind/stack/cryptroot.key",
            "/run/rewind/stack/cryptroot.header",
            "/run/rewind/stack/secret.key",
            "/run/rewind/stack/secret.header",
        ]
    );
    super::verify(&p, &mut r).unwrap();
}

#[test]
fn a_difference_read_back_stops_the_recovery_naming_it() {
    let m = manifest();
    let p = plan(&m, &present(), &PlanOptions::default()).unwrap();
    let mut r = fake(&m);
    r.md_uuid_override = Some("00000000:11111111:22222222:33333333".into());
    let e = super::verify(&p, &mut r).unwrap_err().to_string();
    assert!(
        e.contains("md/root: the UUID is 00000000:11111111:22222222:33333333, the capture had 3b0c9e2a:5d1f4e6b:8a7c2d90:1e3f5a7b"),
        "{e}"
    );
    // Another group's reports: every LV is named as missing.
    let mut other = manifest();
    other.volume_groups[0].lvs[2].uuid = "Zzzzzz-zzzz-zzzz-zzzz-zzzz-zzzz-zzzzzz".into();
    let mut p2 = p.clone();
    if let Some(step) = p2.stack.iter_mut().find(|s| s.layer == "vg vg0") {
        step.expect = crate::layout::stack::Expect::Vg(other.volume_groups[0].clone());
    }
    let e = super::verify(&p2, &mut fake(&m)).unwrap_err().to_string();
    assert!(e.contains("vg vg0: LV root's UUID is t5J1qJ-d67J-cZwy-ayIk-on0B-7Gq1-t3dceA, the capture had Zzzzzz"), "{e}");
}

#[test]
fn the_stack_is_taken_down_top_layer_first() {
    let m = manifest();
    let p = plan(&m, &present(), &PlanOptions::default()).unwrap();
    let mut r = fake(&m);
    assert!(super::deactivate(&p, &mut r).is_empty());
    // The reverse of the creation order: luks/secret (on an LV), vg0,
    // luks/cryptroot (its PV), then the arrays.
    assert_eq!(
        r.ran,
        [
            "cryptsetup close secret",
            "vgchange --activate n vg0",
            "cryptsetup close cryptroot",
            "mdadm --stop /dev/md/root",
            "mdadm --stop /dev/md/esp",
        ]
    );
}
