//! Opening a stack on a resume, with a fake runner answering as the tools
//! do (real `lvs`/`pvs`/`vgs` JSON and LUKS headers of
//! tests/fixtures/stack/, `mdadm --detail --export` as mdadm prints it):
//! what is opened as planned, and each "does not verify → made again"
//! decision with what is built on it.

use std::collections::HashSet;

use super::*;
use crate::layout::plan::{PlanOptions, plan};
use crate::manifest::stack_tests::sample_stack;
use crate::manifest::{Manifest, validate};

use crate::layout::stack_run::tests::{fixture, planned_size, present, text};

/// The stack sample with the real vg0 of the fixtures (a thin pool
/// included) on luks/cryptroot, as `stack_run`'s own tests use it, with
/// the LUKS sector size of the fixture's header (luks2-header.bin).
fn manifest() -> Manifest {
    let mut m = crate::layout::stack_run::tests::manifest();
    m.luks[0].sector_size = 4096;
    validate(&m).unwrap_or_else(|e| panic!("{e}"));
    m
}

fn the_plan(m: &Manifest) -> Plan {
    plan(m, &present(), &PlanOptions::default()).unwrap()
}

/// Answers as the tools would on the disks an interrupted run of the plan
/// left, with the changes a test sets.
struct Fake {
    m: Manifest,
    plan: Plan,
    ran: Vec<String>,
    removed: Vec<String>,
    /// Commands (their first words) that fail.
    failing: Vec<String>,
    /// `md/degraded` of md/root.
    degraded: u32,
    /// `MD_DEVICE_..._ROLE` replaced: (device, role).
    role: Option<(String, String)>,
    /// The LUKS header on md/root.
    root_header: Vec<u8>,
    /// Text replaced in the `lvs` report.
    lvs_edit: Option<(String, String)>,
    mdstat: String,
}

impl Fake {
    fn new(m: &Manifest) -> Fake {
        Fake {
            m: m.clone(),
            plan: the_plan(m),
            ran: Vec::new(),
            removed: Vec::new(),
            failing: Vec::new(),
            degraded: 0,
            role: None,
            root_header: fixture("luks2-header.bin"),
            lvs_edit: None,
            mdstat: "Personalities : [raid1]\nunused devices: <none>\n".into(),
        }
    }

    fn kernel_node(dev: &str) -> String {
        match dev {
            "/dev/md/root" => "/dev/md127".into(),
            "/dev/md/esp" => "/dev/md126".into(),
            other => other.into(),
        }
    }

    fn ran_firsts(&self) -> Vec<String> {
        self.ran
            .iter()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    }
}

impl StackRunner for Fake {
    fn run(&mut self, argv: &[String]) -> Result<String> {
        let line = argv.join(" ");
        self.ran.push(line.clone());
        if self.failing.iter().any(|f| line.starts_with(f.as_str())) {
            bail!("{} failed", argv[0]);
        }
        let m = &self.m;
        Ok(match (argv[0].as_str(), argv.get(1).map(String::as_str)) {
            ("mdadm", Some("--detail")) => {
                let name = argv[3].trim_start_matches("/dev/md/");
                let a = m.md_arrays.iter().find(|a| a.name == name).unwrap();
                let step = self
                    .plan
                    .stack
                    .iter()
                    .find(|s| s.device == argv[3])
                    .unwrap();
                let mut out = format!(
                    "MD_LEVEL={}\nMD_DEVICES={}\nMD_METADATA={}\nMD_UUID={}\nMD_DEVNAME={name}\n",
                    a.level, a.raid_devices, a.metadata, a.uuid
                );
                if let Some(n) = &a.array_name {
                    out.push_str(&format!("MD_NAME={n}\n"));
                }
                for mem in &a.members {
                    let r = mem.device.to_string();
                    let path = &step.on.iter().find(|(on, _)| *on == r).unwrap().1;
                    let role = match &self.role {
                        Some((dev, role)) if dev == path => role.clone(),
                        _ => mem.role.clone(),
                    };
                    let id = path.trim_start_matches("/dev/");
                    out.push_str(&format!(
                        "MD_DEVICE_ev_{id}_ROLE={role}\nMD_DEVICE_ev_{id}_DEV={path}\n"
                    ));
                }
                out
            }
            ("readlink", _) => format!("{}\n", Fake::kernel_node(&argv[2])),
            ("blockdev", _) => format!("{}\n", planned_size(m, &argv[2])),
            ("vgs", _) => text("lvm-vgs.json"),
            ("pvs", _) => text("lvm-pvs.json").replace("/dev/loop0", "/dev/mapper/cryptroot"),
            ("lvs", _) => {
                let t = text("lvm-lvs.json");
                match &self.lvs_edit {
                    Some((from, to)) => t.replacen(from.as_str(), to, 1),
                    None => t,
                }
            }
            _ => String::new(),
        })
    }
    fn write(&mut self, path: &str, _text: &str) -> Result<()> {
        self.ran.push(format!("write {path}"));
        Ok(())
    }
    fn read(&mut self, path: &str) -> Result<String> {
        if path == "/proc/mdstat" {
            return Ok(self.mdstat.clone());
        }
        if path.ends_with(".remade.vg") {
            return Ok(self.m.volume_groups[0].metadata.clone());
        }
        let (dev, attr) = path
            .strip_prefix("/sys/block/")
            .and_then(|p| p.split_once("/md/"))
            .unwrap_or_else(|| panic!("unexpected read of {path}"));
        let a = match dev {
            "md127" => &self.m.md_arrays.iter().find(|a| a.name == "root").unwrap(),
            "md126" => &self.m.md_arrays.iter().find(|a| a.name == "esp").unwrap(),
            other => panic!("no array {other}"),
        };
        Ok(match attr {
            "degraded" if dev == "md127" => format!("{}\n", self.degraded),
            "degraded" => "0\n".into(),
            "chunk_size" => format!("{}\n", a.chunk_size.unwrap_or(0)),
            "sync_action" => "idle\n".into(),
            "array_state" => "readonly\n".into(),
            other => panic!("unexpected md/{other}"),
        })
    }
    fn remove(&mut self, path: &str) -> Result<()> {
        self.removed.push(path.into());
        Ok(())
    }
    fn read_head(&mut self, device: &str, _len: usize) -> Result<Vec<u8>> {
        Ok(match device {
            "/dev/md/root" => self.root_header.clone(),
            "/dev/mapper/vg0-secret" => fixture("luks1-header.bin"),
            other => panic!("unexpected read of {other}"),
        })
    }
}

fn layers(p: &Plan, o: &Opened) -> Vec<(String, bool)> {
    p.stack
        .iter()
        .zip(&o.layers)
        .map(|(s, l)| (s.layer.clone(), *l == Layer::Opened))
        .collect()
}

#[test]
fn a_stack_as_planned_is_opened_layer_by_layer_and_nothing_is_made() {
    let m = manifest();
    let p = the_plan(&m);
    let mut r = Fake::new(&m);
    let o = open(&p, &mut r);
    assert!(o.whole(), "{o:?}");
    assert!(o.remade_refs(&p).is_empty());
    assert_eq!(
        r.ran_firsts(),
        [
            // md/esp: assembled read-only by UUID, read back, then writable.
            "mdadm --assemble",
            "mdadm --detail",
            "readlink -f",
            "blockdev --getsize64",
            "mdadm --readwrite",
            // md/root likewise.
            "mdadm --assemble",
            "mdadm --detail",
            "readlink -f",
            "blockdev --getsize64",
            "mdadm --readwrite",
            // luks/cryptroot: its header read (read_head), opened with the
            // escrowed key, the mapping's size.
            "cryptsetup open",
            "blockdev --getsize64",
            // vg0: scanned and compared before it is activated.
            "vgscan",
            "vgs --reportformat",
            "pvs --reportformat",
            "lvs -a",
            "readlink -f",
            "vgchange --activate",
            // luks/secret on an LV.
            "cryptsetup open",
            "blockdev --getsize64",
        ]
    );
    let root = r
        .ran
        .iter()
        .find(|l| l.starts_with("mdadm --assemble /dev/md/root"))
        .unwrap();
    assert_eq!(
        root,
        "mdadm --assemble /dev/md/root --readonly --uuid 3b0c9e2a:5d1f4e6b:8a7c2d90:1e3f5a7b /dev/sda2 /dev/sdb2"
    );
    assert!(!r.ran.iter().any(|l| l.contains("--create")
        || l.contains("luksFormat")
        || l.contains("luksHeaderRestore")
        || l.starts_with("pvcreate")
        || l.starts_with("vgcfgrestore")
        || l.starts_with("wipefs")));
    // The keys go once their volumes are open.
    assert_eq!(
        r.removed,
        [
            "/run/rewind/stack/cryptroot.key",
            "/run/rewind/stack/cryptroot.header",
            "/run/rewind/stack/secret.key",
            "/run/rewind/stack/secret.header",
        ]
    );
    // Nothing to make again: remake runs nothing but the (empty) read-back.
    let mut again = Fake::new(&m);
    remake(&p, &o, &mut again).unwrap();
    assert!(again.ran.is_empty(), "{:?}", again.ran);
}

/// md/root degraded (a member wiped between the cut and the boot): it and
/// everything on it are made again from wiped members; md/esp is kept.
#[test]
fn a_degraded_array_is_made_again_with_everything_on_it() {
    let m = manifest();
    let p = the_plan(&m);
    let mut r = Fake::new(&m);
    r.degraded = 1;
    r.mdstat =
        "md127 : active (read-only) raid1 sda2[0]\nmd126 : active raid1 sda1[0] sdb1[1]\n".into();
    let o = open(&p, &mut r);
    assert_eq!(
        layers(&p, &o),
        [
            ("md/esp".to_string(), true),
            ("md/root".to_string(), false),
            ("luks/cryptroot".to_string(), false),
            ("vg vg0".to_string(), false),
            ("luks/secret".to_string(), false),
        ]
    );
    let Layer::Remade(why) = &o.layers[1] else {
        unreachable!()
    };
    assert!(why.contains("degraded (1 member(s)"), "{why}");
    let Layer::Remade(why) = &o.layers[2] else {
        unreachable!()
    };
    assert_eq!(why, "it is built on md/root, which is made again");
    // Not made writable; stopped (by its link and by its kernel name, as
    // /proc/mdstat shows it holding a member), never touched by the
    // layers above.
    assert!(
        !r.ran
            .contains(&"mdadm --readwrite /dev/md/root".to_string())
    );
    assert!(r.ran.contains(&"mdadm --stop /dev/md/root".to_string()));
    assert!(r.ran.contains(&"mdadm --stop /dev/md127".to_string()));
    assert!(!r.ran.contains(&"mdadm --stop /dev/md126".to_string()));
    assert!(
        !r.ran
            .iter()
            .any(|l| l.starts_with("cryptsetup") || l.starts_with("vg"))
    );
    assert!(
        r.removed.is_empty(),
        "the keys stay for the layers made again"
    );
    let remade = o.remade_refs(&p);
    let want: HashSet<String> = [
        "md/root",
        "luks/cryptroot",
        "lv/vg0/root",
        "lv/vg0/swap",
        "lv/vg0/pool",
        "lv/vg0/home",
        "lv/vg0/secret",
        "luks/secret",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(remade, want);

    // Made again: each layer's devices wiped, then made as a first run does.
    let mut again = Fake::new(&m);
    remake(&p, &o, &mut again).unwrap();
    let firsts = again.ran_firsts();
    let at = |what: &str| {
        firsts
            .iter()
            .position(|l| l == what)
            .unwrap_or_else(|| panic!("no {what} in {firsts:?}"))
    };
    assert_eq!(again.ran[0], "wipefs --all --force /dev/sda2");
    assert_eq!(again.ran[1], "wipefs --all --force /dev/sdb2");
    assert!(again.ran[2].starts_with("mdadm --create /dev/md/root"));
    assert_eq!(again.ran[3], "wipefs --all --force /dev/md/root");
    assert!(at("cryptsetup luksHeaderRestore") > 3);
    assert!(
        again
            .ran
            .contains(&"wipefs --all --force /dev/mapper/cryptroot".to_string())
    );
    assert!(at("pvcreate --yes") > at("cryptsetup open"));
    assert!(at("cryptsetup luksFormat") > at("pvcreate --yes"));
    assert!(!again.ran.iter().any(|l| l.contains("/dev/md/esp")));
    // Then read back as after a first run (the read-back of md/root).
    assert!(
        again
            .ran
            .iter()
            .any(|l| l == "mdadm --detail --export /dev/md/root")
    );
}

#[test]
fn a_member_not_in_its_planned_role_or_another_uuid_is_not_the_array() {
    let m = manifest();
    let p = the_plan(&m);
    // A member rebuilt as a spare.
    let mut r = Fake::new(&m);
    r.role = Some(("/dev/sdb2".into(), "spare".into()));
    let o = open(&p, &mut r);
    let Layer::Remade(why) = &o.layers[1] else {
        panic!("{o:?}")
    };
    assert!(
        why.contains("the members is /dev/sda2 as 0, /dev/sdb2 as spare, the plan's /dev/sda2 as 0, /dev/sdb2 as 1"),
        "{why}"
    );
    // Members that do not assemble (a wiped superblock, another UUID):
    // mdadm refuses, the array is made again.
    let mut r = Fake::new(&m);
    r.failing = vec!["mdadm --assemble /dev/md/root".into()];
    let o = open(&p, &mut r);
    let Layer::Remade(why) = &o.layers[1] else {
        panic!("{o:?}")
    };
    assert!(why.contains("do not assemble"), "{why}");
    assert_eq!(o.layers[0], Layer::Opened);
}

#[test]
fn md_open_diffs_on_recorded_export() {
    let e = md::parse_export(&text("md-root.export")).unwrap();
    let mut a = sample_stack()
        .md_arrays
        .into_iter()
        .find(|a| a.name == "root")
        .unwrap();
    a.uuid = e.uuid.clone();
    a.array_name = e.name.clone();
    let paths: Vec<(String, &crate::manifest::MdMember)> = a
        .members
        .iter()
        .zip(["/dev/vda2", "/dev/vdb2", "/dev/vdc2"])
        .map(|(m, p)| (p.to_string(), m))
        .collect();
    let st = md::MdState {
        degraded: 0,
        chunk_size: 0,
        sync_action: "idle".into(),
        array_state: "readonly".into(),
        size: a.size,
    };
    let paths = &paths[..a.members.len()];
    let mut e2 = e.clone();
    e2.members.truncate(a.members.len());
    assert_eq!(md::open_diffs(&a, paths, &e2, &st), Vec::<String>::new());
    // A resync of what the cut left dirty is md's own business.
    let resync = md::MdState {
        sync_action: "resync".into(),
        ..st.clone()
    };
    assert!(md::open_diffs(&a, paths, &e2, &resync).is_empty());
    // A member being rebuilt, another size, another level: not the array.
    let recovering = md::MdState {
        sync_action: "recover".into(),
        degraded: 1,
        ..st.clone()
    };
    let d = md::open_diffs(&a, paths, &e2, &recovering);
    assert_eq!(d.len(), 2, "{d:?}");
    let smaller = md::MdState {
        size: a.size - 4096,
        ..st.clone()
    };
    assert!(md::open_diffs(&a, paths, &e2, &smaller)[0].starts_with("the size is"));
    let mut raid5 = e2.clone();
    raid5.level = "raid5".into();
    assert_eq!(
        md::open_diffs(&a, paths, &raid5, &st),
        ["the level is raid5, the plan's raid1"]
    );
    let inactive = md::MdState {
        array_state: "inactive".into(),
        ..st
    };
    assert_eq!(
        md::open_diffs(&a, paths, &e2, &inactive),
        ["it is not running"]
    );
}

/// luks/cryptroot: a header that is not the plan's, or a key that does
/// not open it: made again with the group on it; the arrays are kept.
#[test]
fn a_luks_header_not_the_plans_or_a_key_that_does_not_open_it_is_made_again() {
    let m = manifest();
    let p = the_plan(&m);
    let mut r = Fake::new(&m);
    // LUKS1's header where LUKS2's was made.
    r.root_header = fixture("luks1-header.bin");
    let o = open(&p, &mut r);
    assert_eq!(
        layers(&p, &o).iter().map(|(_, ok)| *ok).collect::<Vec<_>>(),
        [true, true, false, false, false]
    );
    let Layer::Remade(why) = &o.layers[2] else {
        unreachable!()
    };
    assert!(why.contains("the version is 1, the plan's 2"), "{why}");
    assert!(!r.ran.iter().any(|l| l.starts_with("cryptsetup open")));

    let mut r = Fake::new(&m);
    r.failing = vec!["cryptsetup open --type luks2".into()];
    let o = open(&p, &mut r);
    let Layer::Remade(why) = &o.layers[2] else {
        panic!("{o:?}")
    };
    assert!(
        why.contains("the escrowed volume key does not open it"),
        "{why}"
    );
    assert!(r.ran.contains(&"cryptsetup close cryptroot".to_string()));
    assert!(r.removed.is_empty());
    // The header itself, on recorded bytes.
    let h = luks::parse_header(&fixture("luks2-header.bin")).unwrap();
    let l = m.luks.iter().find(|l| l.name == "cryptroot").unwrap();
    assert!(luks::open_diffs(l, &h).is_empty());
    let mut other = l.clone();
    other.uuid = "c0ffee00-1234-4abc-8def-0123456789ac".parse().unwrap();
    other.data_offset += 512;
    assert_eq!(
        luks::open_diffs(&other, &h),
        [
            "the UUID is c0ffee00-1234-4abc-8def-0123456789ab, the plan's c0ffee00-1234-4abc-8def-0123456789ac",
            "the data offset is 16777216, the plan's 16777728",
        ]
    );
}

/// vg0: an LV's UUID, a thin pool's metadata size, an LV the plan does
/// not have: not activated, made again with what is on it.
#[test]
fn a_volume_group_not_the_plans_is_not_activated_and_made_again() {
    let m = manifest();
    let p = the_plan(&m);
    let mut r = Fake::new(&m);
    r.lvs_edit = Some((
        "\"lv_metadata_size\":\"4194304\"".into(),
        "\"lv_metadata_size\":\"8388608\"".into(),
    ));
    let o = open(&p, &mut r);
    assert_eq!(
        layers(&p, &o).iter().map(|(_, ok)| *ok).collect::<Vec<_>>(),
        [true, true, true, false, false]
    );
    let Layer::Remade(why) = &o.layers[3] else {
        unreachable!()
    };
    assert_eq!(
        why,
        "LV pool's metadata size is Some(8388608), the plan's Some(4194304)"
    );
    assert!(!r.ran.contains(&"vgchange --activate y vg0".to_string()));

    // On recorded reports: the same group verifies; changes are named.
    let g = &m.volume_groups[0];
    let vgs = lvm::parse_vgs(&text("lvm-vgs.json")).unwrap();
    let pvs = lvm::parse_pvs(&text("lvm-pvs.json")).unwrap();
    let lvs = lvm::parse_lvs(&text("lvm-lvs.json")).unwrap();
    let on_luks = |_: &str| Some(StackRef::Luks("cryptroot".into()));
    assert!(lvm::open_diffs(g, &vgs, &pvs, &lvs, on_luks).is_empty());
    let mut extra = lvs.clone();
    let mut scratch = extra[0].clone();
    scratch.lv_name = "scratch".into();
    scratch.lv_uuid = "AAAAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAAAA".into();
    scratch.segtype = "linear".into();
    extra.push(scratch);
    assert_eq!(
        lvm::open_diffs(g, &vgs, &pvs, &extra, on_luks),
        ["LV scratch is not in the plan"]
    );
    let mut thin = lvs.clone();
    thin.iter_mut()
        .find(|l| l.lv_name == "home")
        .unwrap()
        .lv_uuid = "BBBBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBBBB".into();
    thin.iter_mut()
        .find(|l| l.lv_name == "pool")
        .unwrap()
        .chunk_size = "131072".into();
    let d = lvm::open_diffs(g, &vgs, &pvs, &thin, on_luks);
    assert_eq!(
        d,
        [
            "LV home's UUID is BBBBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBBBB, the plan's TS1bwp-YiOu-QOSB-xu70-GLNJ-Ggf9-K8L0Zc",
            "LV pool's chunk size is Some(131072), the plan's Some(65536)",
        ]
    );
    // A PV on a device the plan does not put it on.
    let d = lvm::open_diffs(g, &vgs, &pvs, &lvs, |_| Some(StackRef::Md("root".into())));
    assert!(
        d[0].contains("'s device is md/root, the plan's luks/cryptroot"),
        "{d:?}"
    );
    let d = lvm::open_diffs(g, &vgs, &pvs, &lvs, |_| None);
    assert!(d[0].contains("is not a captured disk"), "{d:?}");
}

#[test]
fn closing_takes_down_only_what_was_opened_top_first() {
    let m = manifest();
    let p = the_plan(&m);
    let mut r = Fake::new(&m);
    r.failing = vec!["cryptsetup open --type luks2".into()];
    let o = open(&p, &mut r);
    let mut c = Fake::new(&m);
    close(&p, &o, &mut c);
    let stops: Vec<&String> = c
        .ran
        .iter()
        .filter(|l| l.starts_with("mdadm --stop"))
        .collect();
    assert_eq!(
        stops,
        ["mdadm --stop /dev/md/root", "mdadm --stop /dev/md/esp"]
    );
    assert!(
        !c.ran
            .iter()
            .any(|l| l.starts_with("cryptsetup") || l.starts_with("vgchange"))
    );
    assert_eq!(
        arrays_holding(
            "Personalities : [raid1]\nmd127 : inactive vdb4[1](S)\nmd5 : active raid1 vdc1[0] vdd1[1]\n",
            &["vdb4".to_string()]
        ),
        ["md127"]
    );
}
