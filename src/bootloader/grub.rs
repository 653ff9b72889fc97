//! GRUB: when the captured boot code and core image cannot be reused as
//! they were written back, reinstall GRUB from the restored system, in a
//! chroot. Which case applies is a pure function of the manifest and the
//! plan ([`decide`]); [`execute`] runs it.
//!
//! BIOS, per disk whose boot code is GRUB's: reinstall (`grub-install
//! --target=i386-pc DISK`) when the snapshot holds no bytes for the place
//! core.img lives (the MBR boot gap, or the GPT BIOS boot partition; an old
//! or manifest-only snapshot), when there is no such place (core.img found
//! through block lists), when the partition holding /boot starts at another
//! LBA than captured, or when the logical sector size differs.
//!
//! UEFI: when the loader a recreated boot entry names is missing from the
//! restored ESP (the ESP's files were not captured), `grub-install
//! --target=x86_64-efi --efi-directory=ESP --bootloader-id=ID --no-nvram`
//! (the entries themselves are written by efi.rs).

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::say;
use crate::layout::plan::{Plan, Table};
use crate::manifest::{Disk, Firmware, Manifest, RegionName, StackRef, producer};
use crate::raw_regions::BIOS_BOOT_TYPE;

/// What the GRUB step will do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub bios: Vec<BiosInstall>,
    pub efi: Vec<EfiCheck>,
    /// Disks whose GRUB boot code and core image were restored byte for byte.
    pub reused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosInstall {
    /// The present disk (`/dev/sdb`) GRUB goes on.
    pub disk: String,
    pub captured: String,
    pub reasons: Vec<String>,
}

/// A loader to find on the restored ESP, and how to reinstall it if missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfiCheck {
    /// Where the ESP is mounted now (`/target/boot/efi`).
    pub esp_target: String,
    /// Its captured mount point (`/boot/efi`), as grub-install sees it in the chroot.
    pub efi_directory: String,
    /// The directory under \EFI (`debian`).
    pub bootloader_id: String,
    /// The loader's path on the ESP (`\EFI\debian\shimx64.efi`).
    pub loader: String,
}

impl Decision {
    pub fn is_empty(&self) -> bool {
        self.bios.is_empty() && self.efi.is_empty()
    }
}

fn is_grub_code(m: &Manifest, d: &Disk) -> bool {
    let Some(code) = &d.boot_code else {
        return false;
    };
    // boot.img carries "GRUB " in its messages.
    m.boot.loader.as_deref() == Some("grub") || code.to_ascii_lowercase().contains("4752554220")
}

/// The filesystem holding /boot (or / when /boot is not separate).
fn boot_fs(m: &Manifest) -> Option<&crate::manifest::Filesystem> {
    let on = |p: &str| {
        m.filesystems
            .iter()
            .find(|f| f.mounts.iter().any(|mt| mt.point == p))
    };
    on("/boot").or_else(|| on("/"))
}

/// Decide what the GRUB step does, from the manifest and the plan alone.
pub fn decide(m: &Manifest, plan: &Plan) -> Decision {
    decide_with(m, plan, false)
}

/// [`decide`]; with `reinstall`, GRUB is reinstalled on every disk whose
/// boot code is GRUB's even when the captured bytes could be reused (the
/// operator asked: `rewind.grub=reinstall`, `--reinstall-grub`).
pub fn decide_with(m: &Manifest, plan: &Plan, reinstall: bool) -> Decision {
    let mut out = Decision::default();
    for dp in &plan.disks {
        let Some(d) = m.disks.iter().find(|d| d.name == dp.captured) else {
            continue;
        };
        if !is_grub_code(m, d) {
            continue;
        }
        let mut reasons = Vec::new();
        if dp.sector_size != d.logical_sector_size {
            reasons.push(format!(
                "the logical sector size changed ({} to {} bytes)",
                d.logical_sector_size, dp.sector_size
            ));
        }
        match (&d.gpt, &d.mbr) {
            (Some(g), _) => {
                let bios: Vec<u32> = g
                    .partitions
                    .iter()
                    .filter(|p| p.type_guid.eq_ignore_ascii_case(BIOS_BOOT_TYPE))
                    .map(|p| p.number)
                    .collect();
                if bios.is_empty() {
                    if m.system.firmware == Firmware::Bios {
                        reasons.push(
                            "the GPT disk has no BIOS boot partition: core.img is found through block lists"
                                .into(),
                        );
                    } else {
                        // A UEFI system's protective MBR may carry stale
                        // boot code; it boots through the ESP.
                        continue;
                    }
                }
                for n in bios {
                    if d.raw_data(RegionName::Partition(n)).is_none() {
                        reasons.push(format!(
                            "the snapshot holds no bytes of BIOS boot partition {n}"
                        ));
                    }
                }
            }
            (_, Some(_)) => match &d.boot_gap {
                Some(_) if d.raw_data(RegionName::BootGap).is_none() => {
                    reasons.push("the snapshot holds no bytes of the boot gap (core.img)".into())
                }
                Some(_) => {}
                None => reasons
                    .push("no boot gap was recorded: core.img is found through block lists".into()),
            },
            _ => continue,
        }
        if let Some(fs) = boot_fs(m)
            && fs.disk.as_deref() == Some(&d.name)
            && let Some(n) = fs.partition
        {
            let captured = d
                .region_extent(RegionName::Partition(n))
                .map(|(off, _)| off);
            let now = dp
                .volumes
                .iter()
                .find(|v| v.partition == Some(n))
                .map(|v| v.first_lba * u64::from(dp.sector_size));
            if captured.is_some() && now.is_some() && captured != now {
                reasons.push(format!(
                    "partition {n} (holding /boot) starts at another place than captured"
                ));
            }
        }
        if reinstall && reasons.is_empty() {
            reasons.push("a reinstall was asked for (rewind.grub=reinstall)".into());
        }
        if reasons.is_empty() {
            out.reused.push(dp.target.path.clone());
        } else {
            out.bios.push(BiosInstall {
                disk: dp.target.path.clone(),
                captured: d.name.clone(),
                reasons,
            });
        }
    }
    bios_on_every_member(m, plan, &mut out);
    if m.system.firmware == Firmware::Uefi
        && m.boot.loader.as_deref() == Some("grub")
        && let Some(efi) = &m.boot.efi
    {
        for e in &efi.entries {
            let (Some(guid), Some(path)) = (&e.partition_guid, &e.path) else {
                continue;
            };
            let Some(esp_target) = esp_mount(plan, guid) else {
                continue;
            };
            let comps: Vec<&str> = path.split('\\').filter(|c| !c.is_empty()).collect();
            let id = match comps.as_slice() {
                [efi, id, _file] if efi.eq_ignore_ascii_case("EFI") => *id,
                _ => continue,
            };
            if id.eq_ignore_ascii_case("BOOT") || out.efi.iter().any(|c| c.bootloader_id == id) {
                continue;
            }
            out.efi.push(EfiCheck {
                esp_target: esp_target.1,
                efi_directory: esp_target.0,
                bootloader_id: id.to_string(),
                loader: path.clone(),
            });
        }
    }
    out
}

/// BIOS with /boot on the storage stack (an MD mirror, LVM on one): the
/// firmware may boot from any member disk, so every recreated disk under
/// /boot's device gets GRUB — reinstalled where no GRUB boot code of its
/// own was captured (a disk added to the mirror later, or GRUB installed on
/// one disk only).
fn bios_on_every_member(m: &Manifest, plan: &Plan, out: &mut Decision) {
    if m.system.firmware != Firmware::Bios || m.boot.loader.as_deref() != Some("grub") {
        return;
    }
    let Some(volume) = boot_fs(m).and_then(|fs| fs.volume.as_ref()) else {
        return;
    };
    for name in disks_under(m, volume) {
        let Some(dp) = plan.disks.iter().find(|d| d.captured == name) else {
            continue;
        };
        let path = &dp.target.path;
        if out.reused.contains(path) || out.bios.iter().any(|b| &b.disk == path) {
            continue;
        }
        out.bios.push(BiosInstall {
            disk: path.clone(),
            captured: name.clone(),
            reasons: vec![format!(
                "it holds a member of {volume}, which holds /boot, and no GRUB boot code was captured on it"
            )],
        });
    }
}

/// The captured disks a block device of the stack is built on, in
/// manifest order of the layers (each once).
pub fn disks_under(m: &Manifest, r: &StackRef) -> Vec<String> {
    fn walk(m: &Manifest, r: &StackRef, depth: usize, out: &mut Vec<String>) {
        match r {
            StackRef::Disk(d) | StackRef::Partition(d, _) => {
                if !out.contains(d) {
                    out.push(d.clone());
                }
            }
            _ if depth > 16 => {}
            _ => {
                if let Some(layer) = producer(m, r) {
                    for below in layer.needs(m) {
                        walk(m, below, depth + 1, out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(m, r, 0, &mut out);
    out
}

/// The GPT partition with unique GUID `guid` that the plan recreated, as
/// (disk index, partition number, device).
pub fn recreated_partition(plan: &Plan, guid: &str) -> Option<(usize, u32, String)> {
    for (i, d) in plan.disks.iter().enumerate() {
        let Table::Gpt(g) = &d.table else { continue };
        if let Some(p) = g
            .partitions
            .iter()
            .find(|p| p.guid.eq_ignore_ascii_case(guid))
        {
            let dev = d
                .volumes
                .iter()
                .find(|v| v.partition == Some(p.number))
                .map(|v| v.device.clone())?;
            return Some((i, p.number, dev));
        }
    }
    None
}

/// Where the partition `guid` is mounted: (captured point, target path).
pub fn esp_mount(plan: &Plan, guid: &str) -> Option<(String, String)> {
    let (_, _, dev) = recreated_partition(plan, guid)?;
    plan.mounts
        .iter()
        .find(|s| s.device == dev && s.skipped.is_none())
        .map(|s| (s.point.clone(), s.target.clone()))
}

/// The GRUB tool names of the restored system (Debian's or Fedora's).
struct Tools {
    install: String,
    update: Vec<String>,
}

fn tools(root: &Path) -> Result<Tools> {
    let find = |name: &str| {
        ["usr/sbin", "usr/bin", "sbin", "bin"]
            .iter()
            .map(|d| Path::new("/").join(d).join(name))
            .find(|p| root.join(p.strip_prefix("/").unwrap_or(p)).exists())
            .map(|p| p.display().to_string())
    };
    let (install, mkconfig, cfg) = if let Some(i) = find("grub-install") {
        (i, find("grub-mkconfig"), "/boot/grub/grub.cfg")
    } else if let Some(i) = find("grub2-install") {
        (i, find("grub2-mkconfig"), "/boot/grub2/grub.cfg")
    } else {
        bail!(
            "the restored system has no grub-install (nor grub2-install) under {}: cannot reinstall GRUB",
            root.display()
        );
    };
    let update = match (find("update-grub"), mkconfig) {
        (Some(u), _) => vec![u],
        (None, Some(mk)) => vec![mk, "-o".into(), cfg.into()],
        (None, None) => Vec::new(),
    };
    Ok(Tools { install, update })
}

/// `/dev/disk/by-uuid/UUID` for every filesystem and swap the plan made,
/// where missing: the recovery image runs no udev, and without these links
/// grub-mkconfig writes `root=/dev/sda2` instead of `root=UUID=...`.
pub fn link_by_uuid(plan: &Plan, dir: &Path) {
    use crate::layout::plan::Content;
    let on_disks = plan
        .disks
        .iter()
        .flat_map(|d| &d.volumes)
        .map(|v| (&v.device, &v.content));
    let on_stack = plan.stack_volumes.iter().map(|v| (&v.device, &v.content));
    for (device, content) in on_disks.chain(on_stack) {
        let uuid = match content {
            Content::Filesystem { uuid, .. } | Content::Swap { uuid, .. } => uuid,
            Content::Raw => continue,
        };
        let link = dir.join(uuid);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Err(e) =
            std::fs::create_dir_all(dir).and_then(|_| std::os::unix::fs::symlink(device, &link))
        {
            say(&format!("warning: cannot link {}: {e}", link.display()));
        }
    }
}

/// Run the decision: reinstall GRUB where needed, in a chroot into `root`.
pub fn execute(decision: &Decision, m: &Manifest, root: &Path) -> Result<()> {
    for d in &decision.reused {
        say(&format!(
            "{d}: the captured GRUB boot code and core image were restored byte for byte"
        ));
    }
    let missing: Vec<&EfiCheck> = decision
        .efi
        .iter()
        .filter(|c| {
            let there = super::efi::find_ci(Path::new(&c.esp_target), &c.loader).is_some();
            if there {
                say(&format!(
                    "{} is on the restored ESP ({})",
                    c.loader, c.esp_target
                ));
            }
            !there
        })
        .collect();
    if decision.bios.is_empty() && missing.is_empty() {
        return Ok(());
    }
    for b in &decision.bios {
        say(&format!(
            "{}: GRUB is reinstalled: {}",
            b.disk,
            b.reasons.join("; ")
        ));
    }
    let tools = tools(root)?;
    let efi_target = match m.system.kernel.arch.as_str() {
        "aarch64" => "arm64-efi",
        "i386" | "i686" => "i386-efi",
        _ => "x86_64-efi",
    };
    crate::cmd::with_chroot_binds(root, || {
        for b in &decision.bios {
            run_chroot(root, &tools.install, &["--target=i386-pc", &b.disk])?;
        }
        for c in &missing {
            say(&format!(
                "{} is missing from the restored ESP: GRUB is reinstalled there",
                c.loader
            ));
            run_chroot(
                root,
                &tools.install,
                &[
                    &format!("--target={efi_target}"),
                    &format!("--efi-directory={}", c.efi_directory),
                    &format!("--bootloader-id={}", c.bootloader_id),
                    "--no-nvram",
                ],
            )?;
        }
        match tools.update.split_first() {
            Some((prog, args)) => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_chroot(root, prog, &args)?;
            }
            None => say("warning: no update-grub or grub-mkconfig: grub.cfg left as restored"),
        }
        Ok(())
    })
}

/// Run `program` (a path inside `root`) chrooted into `root`, logging the
/// command line; a failure carries it and stderr.
fn run_chroot(root: &Path, program: &str, args: &[&str]) -> Result<()> {
    let line = format!(
        "chroot {} {}",
        root.display(),
        crate::cmd::display_argv(program, args)
    );
    say(&line);
    let out = crate::cmd::run_chroot(root, program, args)
        .with_context(|| format!("GRUB reinstall failed: `{line}`"))?;
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        say(&format!("  {l}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::format::Tools as MkfsTools;
    use crate::layout::plan::{PlanOptions, plan};
    use crate::layout::present::PresentDisk;
    use crate::manifest::RawData;

    const TREE: &str = "9e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";

    fn present(m: &Manifest) -> Vec<PresentDisk> {
        m.disks
            .iter()
            .enumerate()
            .map(|(i, d)| PresentDisk {
                name: format!("sd{}", (b'a' + i as u8) as char),
                path: format!("/dev/sd{}", (b'a' + i as u8) as char),
                size: d.size,
                logical_sector_size: d.logical_sector_size,
                model: None,
                serial: d.serial.clone(),
                wwn: d.wwn.clone(),
                removable: false,
                in_use: None,
                ..Default::default()
            })
            .collect()
    }

    fn plan_of(m: &Manifest) -> Plan {
        plan(
            m,
            &present(m),
            &PlanOptions {
                target_root: "/target".into(),
                tools: MkfsTools::default(),
                ..PlanOptions::default()
            },
        )
        .unwrap()
    }

    /// The sample, as a BIOS machine: vda (GPT) gets a BIOS boot partition
    /// in place of its ESP, vdb (MBR) keeps its boot gap.
    fn bios_machine() -> Manifest {
        let mut m = crate::manifest::tests::sample();
        m.system.firmware = Firmware::Bios;
        m.boot.efi = None;
        m.boot.loader = Some("grub".into());
        let code = Some("eb63".to_string() + &"00".repeat(438));
        m.disks[0].boot_code = code.clone();
        m.disks[0].gpt.as_mut().unwrap().partitions[0].type_guid = BIOS_BOOT_TYPE.into();
        m.filesystems.retain(|f| f.fs_type != "vfat");
        m.disks[1].boot_code = code;
        m
    }

    fn saved(region: &str, bytes: u64) -> RawData {
        RawData {
            region: region.into(),
            tree: TREE.into(),
            bytes,
        }
    }

    #[test]
    fn a_reinstall_asked_for_is_done() {
        let mut m = bios_machine();
        m.disks[0].raw = vec![saved("partition-1", (1_050_623 - 2048 + 1) * 512)];
        let p = plan_of(&m);
        assert!(decide(&m, &p).bios.is_empty());
        let d = decide_with(&m, &p, true);
        assert_eq!(d.bios.len(), 2, "{d:?}");
        assert!(d.bios[0].reasons[0].contains("rewind.grub=reinstall"));
    }

    #[test]
    fn filesystems_get_their_by_uuid_links() {
        let m = bios_machine();
        let p = plan_of(&m);
        let dir = tempfile::tempdir().unwrap();
        let links = dir.path().join("by-uuid");
        link_by_uuid(&p, &links);
        for fs in &m.filesystems {
            let target = std::fs::read_link(links.join(&fs.uuid)).unwrap();
            assert!(
                target.to_string_lossy().starts_with("/dev/sd"),
                "{target:?}"
            );
        }
        // Existing links are left alone (a host with udev).
        link_by_uuid(&p, &links);
    }

    #[test]
    fn everything_saved_means_nothing_to_reinstall() {
        let mut m = bios_machine();
        m.disks[0].raw = vec![saved("partition-1", (1_050_623 - 2048 + 1) * 512)];
        crate::manifest::validate(&m).unwrap();
        let d = decide(&m, &plan_of(&m));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.reused, ["/dev/sda", "/dev/sdb"]);
    }

    #[test]
    fn missing_bytes_mean_grub_install() {
        let mut m = bios_machine();
        m.disks[1].raw.clear();
        let d = decide(&m, &plan_of(&m));
        assert_eq!(d.bios.len(), 2, "{d:?}");
        assert_eq!(d.bios[0].disk, "/dev/sda");
        assert!(d.bios[0].reasons[0].contains("BIOS boot partition 1"));
        assert_eq!(d.bios[1].disk, "/dev/sdb");
        assert!(d.bios[1].reasons[0].contains("boot gap"));
        assert!(d.efi.is_empty());
    }

    #[test]
    fn no_embedding_area_means_grub_install() {
        let mut m = bios_machine();
        m.disks[1].boot_gap = None;
        m.disks[1].raw.clear();
        m.disks[0].gpt.as_mut().unwrap().partitions[0].type_guid =
            "0fc63daf-8483-4772-8e79-3d69d8477de4".into();
        let d = decide(&m, &plan_of(&m));
        assert_eq!(d.bios.len(), 2);
        assert!(d.bios[0].reasons[0].contains("block lists"));
        assert!(d.bios[1].reasons[0].contains("block lists"));
    }

    #[test]
    fn moved_boot_partition_or_sector_size_means_grub_install() {
        let mut m = bios_machine();
        m.disks[0].raw = vec![saved("partition-1", (1_050_623 - 2048 + 1) * 512)];
        let mut p = plan_of(&m);
        // / (holding /boot) on vda2 placed elsewhere.
        p.disks[0].volumes[1].first_lba += 2048;
        let d = decide(&m, &p);
        assert_eq!(d.bios.len(), 1);
        assert!(d.bios[0].reasons[0].contains("partition 2 (holding /boot)"));
        let mut p = plan_of(&m);
        p.disks[1].sector_size = 4096;
        let d = decide(&m, &p);
        assert_eq!(d.bios.len(), 1);
        assert_eq!(d.bios[0].disk, "/dev/sdb");
        assert!(d.bios[0].reasons[0].contains("sector size"));
    }

    #[test]
    fn other_boot_code_is_left_alone() {
        let mut m = bios_machine();
        m.boot.loader = None;
        m.disks[1].raw.clear();
        m.disks[0].boot_code = None;
        let d = decide(&m, &plan_of(&m));
        assert!(d.is_empty() && d.reused.is_empty(), "{d:?}");
        // GRUB's own boot.img is recognised by its text.
        let mut code = "eb63".to_string() + &"00".repeat(438);
        code.replace_range(0x180 * 2..0x185 * 2, "4752554220");
        m.disks[1].boot_code = Some(code);
        let d = decide(&m, &plan_of(&m));
        assert_eq!(d.bios.len(), 1);
    }

    #[test]
    fn uefi_loader_to_check_on_the_esp() {
        let m = crate::manifest::tests::sample();
        let d = decide(&m, &plan_of(&m));
        assert!(d.bios.is_empty());
        // The sample's ESP is vfat, mounted at /boot/efi.
        let esp = m
            .filesystems
            .iter()
            .find(|f| f.fs_type == "vfat")
            .unwrap()
            .mounts[0]
            .point
            .clone();
        assert_eq!(
            d.efi,
            [EfiCheck {
                esp_target: format!("/target{esp}"),
                efi_directory: esp,
                bootloader_id: "debian".into(),
                loader: "\\EFI\\debian\\shimx64.efi".into(),
            }]
        );
    }

    #[test]
    fn every_member_disk_of_the_boot_array_gets_grub() {
        let mut m = crate::manifest::stack_tests::sample_stack();
        m.system.firmware = Firmware::Bios;
        m.boot.loader = Some("grub".into());
        m.boot.efi = None;
        // /boot on the mirror (metadata 1.0), the root on LVM on LUKS on
        // the second mirror.
        m.filesystems[0].mounts[0].point = "/boot".into();
        m.luks[1].escrow = Some(crate::manifest::LuksEscrow {
            kind: "volume-key".into(),
            key_id: "web1-5ec2e700-1".into(),
        });
        let root: StackRef = "lv/vg0/root".into();
        assert_eq!(disks_under(&m, &root), ["vda", "vdb"]);
        let present: Vec<PresentDisk> = [
            ("sda", 8u64 << 30),
            ("sdb", 9 << 30),
            ("sdc", 4 << 30),
            ("sdd", 4 << 30),
        ]
        .iter()
        .map(|(n, size)| PresentDisk::bare(n, *size))
        .collect();
        let p = plan(
            &m,
            &present,
            &PlanOptions {
                target_root: "/target".into(),
                tools: MkfsTools::default(),
                ..PlanOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let d = decide(&m, &p);
        let disks: Vec<(&str, &str)> = d
            .bios
            .iter()
            .map(|b| (b.disk.as_str(), b.captured.as_str()))
            .collect();
        assert_eq!(disks, [("/dev/sda", "vda"), ("/dev/sdb", "vdb")]);
        assert_eq!(
            d.bios[0].reasons,
            [
                "it holds a member of md/esp, which holds /boot, and no GRUB boot code was captured on it"
            ]
        );
        // UEFI: the ESP's mirror is not a BIOS matter.
        m.system.firmware = Firmware::Uefi;
        assert!(decide(&m, &p).bios.is_empty());
    }
}
