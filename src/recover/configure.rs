//! The `configure` stage: the restored system made to fit the machine it now
//! runs on. Its files came back as captured; what names the old hardware —
//! NICs' MAC addresses, the old disks' by-id and kernel names — is rewritten
//! for the new one (crate::retarget does the file work), and the operator's
//! overrides (`rewind.hostname=`, `rewind.address=`) are applied. UUIDs,
//! labels and partition GUIDs were recreated as captured, so fstab lines
//! and boot loader configurations that use them need nothing.

use std::path::Path;

use anyhow::Result;

use crate::console::say;
use crate::initramfs;
use crate::layout::plan;
use crate::layout::present::PresentDisk;
use crate::manifest::{Disk, Firmware, Manifest};
use crate::retarget::{self, ChangeKind, Overrides};

use super::report::{DriverChange, HardwareReport, disk_drivers};

/// Configure the restored system; the report of what its hardware now is
/// (drivers captured and present, the initramfs decision).
pub(super) fn configure(
    m: &Manifest,
    the_plan: &plan::Plan,
    overrides: &Overrides,
    initramfs_mode: initramfs::Mode,
) -> Result<HardwareReport> {
    let present = retarget::present_nics(Path::new("/sys")).unwrap_or_else(|e| {
        say(&format!("warning: cannot list this machine's NICs: {e:#}"));
        Vec::new()
    });
    let (matches, warnings) = retarget::match_nics(&m.network.interfaces, &present);
    let mut report = HardwareReport {
        disks: disk_changes(m, the_plan),
        nics: nic_changes(m, &matches),
        initramfs: String::new(),
    };
    say(&report.drivers_line());
    let Some(root) = the_plan
        .mounts
        .iter()
        .find(|s| s.point == "/" && s.skipped.is_none())
    else {
        say("no root filesystem among the recovered ones: nothing to configure");
        report.initramfs = "not looked at: no root filesystem was recovered".into();
        return Ok(report);
    };
    let root = Path::new(&root.target);
    if !root.join("etc").is_dir() {
        say("no /etc on the root filesystem: nothing to configure");
        report.initramfs = "not looked at: no /etc on the root filesystem".into();
        return Ok(report);
    }

    for w in warnings {
        say(&format!("warning: {w}"));
    }
    for n in &matches {
        let same = n.old_mac.as_deref() == Some(n.new.mac.as_str());
        say(&format!(
            "network: {} is this machine's {} ({}{})",
            n.captured,
            n.new.mac,
            if same {
                "the captured NIC".to_string()
            } else {
                format!(
                    "was {}, matched by {:?}",
                    n.old_mac.as_deref().unwrap_or("no MAC"),
                    n.how
                )
                .to_lowercase()
            },
            n.new
                .driver
                .as_deref()
                .map(|d| format!(", {d}"))
                .unwrap_or_default()
        ));
    }

    let disk_names = retarget::DiskNames {
        by_id: by_id_renames(m, the_plan),
        kernel: kernel_renames(m, the_plan),
    };
    let changes = retarget::retarget(root, m, &matches, overrides, &disk_names)?;
    for c in &changes {
        let file = c.file.display();
        match c.kind {
            ChangeKind::Edited => say(&format!("/{file}: {}", c.what)),
            ChangeKind::Created => say(&format!("/{file} written: {}", c.what)),
            ChangeKind::Warning if c.file.as_os_str().is_empty() => {
                say(&format!("warning: {}", c.what))
            }
            ChangeKind::Warning => say(&format!("warning: /{file}: {}", c.what)),
        }
    }
    if !changes.iter().any(|c| c.kind != ChangeKind::Warning) {
        say("network configuration and fstab fit this machine as restored");
    }
    if overrides.hostname.is_none() {
        check_hostname(root, &m.system.hostname);
    }
    let copied_files = initramfs_copies(&changes);
    report.initramfs =
        regenerate_initramfs(root, m, the_plan, &present, initramfs_mode, &copied_files)?;
    Ok(report)
}

/// Each captured disk the plan recreates, with the disk it goes onto.
fn captured_and_targets<'a>(
    m: &'a Manifest,
    the_plan: &'a plan::Plan,
) -> impl Iterator<Item = (&'a Disk, &'a PresentDisk)> {
    the_plan.disks.iter().filter_map(|d| {
        let old = m.disks.iter().find(|x| x.name == d.captured)?;
        Some((old, &d.target))
    })
}

/// Each captured disk's drivers and its target's.
fn disk_changes(m: &Manifest, the_plan: &plan::Plan) -> Vec<DriverChange> {
    captured_and_targets(m, the_plan)
        .map(|(old, t)| DriverChange {
            what: format!("disk {} -> {}", old.name, t.name),
            captured: disk_drivers(
                old.driver.as_deref(),
                old.controller.as_deref(),
                old.transport.as_deref(),
            ),
            present: disk_drivers(
                t.driver.as_deref(),
                t.controller.as_deref(),
                t.transport.as_deref(),
            ),
        })
        .collect()
}

/// Each captured interface's driver and that of the NIC it now is.
fn nic_changes(m: &Manifest, matches: &[retarget::NicMatch]) -> Vec<DriverChange> {
    matches
        .iter()
        .map(|n| {
            let captured = m
                .network
                .interfaces
                .iter()
                .find(|i| i.name == n.captured)
                .and_then(|i| i.driver.clone());
            DriverChange {
                what: format!("NIC {} -> {}", n.captured, n.new.name),
                captured: captured.unwrap_or_else(|| "unknown driver".into()),
                present: n
                    .new
                    .driver
                    .clone()
                    .unwrap_or_else(|| "unknown driver".into()),
            }
        })
        .collect()
}

/// The changed files that the initramfs carries a copy of (mdadm.conf, the
/// LVM devices file, crypttab, the resume device's settings): the copy in
/// the initramfs must change with them.
fn initramfs_copies(changes: &[retarget::Change]) -> Vec<String> {
    let mut files: Vec<String> = changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Warning)
        .map(|c| format!("/{}", c.file.display()))
        .filter(|f| retarget::in_initramfs(f))
        .collect();
    files.dedup();
    files
}

/// Rebuild the restored system's initramfs when this machine's hardware
/// is not what it was built for (or when asked), saying which drivers
/// changed and what was done; what was done, for the report.
fn regenerate_initramfs(
    root: &Path,
    m: &Manifest,
    the_plan: &plan::Plan,
    present: &[retarget::PresentNic],
    mode: initramfs::Mode,
    copied_files: &[String],
) -> Result<String> {
    let sys = Path::new("/sys");
    let now = initramfs::Hardware {
        firmware: Some(if sys.join("firmware/efi").is_dir() {
            Firmware::Uefi
        } else {
            Firmware::Bios
        }),
        nic_drivers: present.iter().filter_map(|n| n.driver.clone()).collect(),
        disks: the_plan
            .disks
            .iter()
            .map(|d| (d.captured.clone(), d.target.name.clone()))
            .collect(),
    };
    let mut changes = initramfs::hardware_changes(m, &now);
    if !copied_files.is_empty() {
        changes.push(format!(
            "{} changed, and the initramfs holds a copy",
            copied_files.join(", ")
        ));
    }
    let (regenerate, why) = initramfs::decide(mode, &changes);
    let Some(tool) = initramfs::Tool::detect(root) else {
        let what = format!(
            "kept as restored: no update-initramfs, dracut or mkinitcpio in the restored \
             system{}",
            if regenerate {
                format!(" to regenerate it with ({why})")
            } else {
                String::new()
            }
        );
        say(&format!("initramfs: {what}"));
        return Ok(what);
    };
    say(&format!("initramfs ({tool}): {why}"));
    if !regenerate {
        return Ok(format!("{why} ({tool})"));
    }
    let mut drivers: Vec<String> = now.nic_drivers.clone();
    for (_, disk) in &now.disks {
        drivers.extend(initramfs::disk_drivers(sys, disk));
    }
    drivers.sort_unstable();
    drivers.dedup();
    initramfs::regenerate(root, tool, &drivers)?;
    let (program, args) = tool.argv(&drivers);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // `why` begins "regenerated": say with what.
    let reason = why.strip_prefix("regenerated").unwrap_or(&why);
    Ok(format!(
        "regenerated with {}{reason}",
        crate::cmd::display_argv(program, &args)
    ))
}

/// The restore brought /etc/hostname back; say so, or write it if a
/// system had none.
fn check_hostname(root: &Path, captured: &str) {
    let path = root.join("etc/hostname");
    match std::fs::read_to_string(&path) {
        Ok(h) if h.trim() == captured => say(&format!("host name {captured} (as restored)")),
        Ok(h) => say(&format!(
            "warning: /etc/hostname says {:?}, the manifest {captured}; left as restored",
            h.trim()
        )),
        Err(_) => match std::fs::write(&path, format!("{captured}\n")) {
            Ok(()) => say(&format!("host name {captured} written to /etc/hostname")),
            Err(e) => say(&format!("warning: cannot write {}: {e}", path.display())),
        },
    }
}

/// Each captured disk's kernel name paired with its target's, where they
/// differ (`vda` restored onto `nvme0n1`). A multipath target, reached
/// through /dev/mapper, has no kernel name a boot file would use: skipped.
fn kernel_renames(m: &Manifest, the_plan: &plan::Plan) -> Vec<(String, String)> {
    captured_and_targets(m, the_plan)
        .filter(|(old, t)| old.name != t.name && t.path == format!("/dev/{}", t.name))
        .map(|(old, t)| (old.name.clone(), t.name.clone()))
        .collect()
}

/// Old /dev/disk/by-id names of each captured disk, paired with the name
/// its target disk has: the serial number (and model) changed with the disk.
fn by_id_renames(m: &Manifest, the_plan: &plan::Plan) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (old, t) in captured_and_targets(m, the_plan) {
        let Some(new) = by_id_names(
            &t.name,
            t.model.as_deref(),
            t.serial.as_deref(),
            t.wwn.as_deref(),
        )
        .into_iter()
        .next() else {
            continue;
        };
        for name in by_id_names(
            &old.name,
            old.model.as_deref(),
            old.serial.as_deref(),
            old.wwn.as_deref(),
        ) {
            if name != new {
                out.push((name, new.clone()));
            }
        }
    }
    out
}

/// The names udev gives a disk under /dev/disk/by-id, most specific first.
fn by_id_names(
    kernel: &str,
    model: Option<&str>,
    serial: Option<&str>,
    wwn: Option<&str>,
) -> Vec<String> {
    let clean = |s: &str| s.trim().replace(' ', "_");
    let mut v = Vec::new();
    if let Some(serial) = serial.filter(|s| !s.trim().is_empty()) {
        let serial = clean(serial);
        if kernel.starts_with("vd") {
            v.push(format!("virtio-{serial}"));
        } else if let Some(model) = model.filter(|s| !s.trim().is_empty()) {
            let model = clean(model);
            if kernel.starts_with("nvme") {
                v.push(format!("nvme-{model}_{serial}"));
            } else {
                v.push(format!("ata-{model}_{serial}"));
                v.push(format!("scsi-0ATA_{model}_{serial}"));
                v.push(format!("scsi-1ATA_{model}_{serial}"));
            }
        }
    }
    if let Some(wwn) = wwn.filter(|s| !s.trim().is_empty()) {
        v.push(format!("wwn-{}", wwn.trim()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_id_names_per_bus() {
        assert_eq!(
            by_id_names("vda", None, Some("DRILLSRC0001"), None),
            ["virtio-DRILLSRC0001"]
        );
        assert_eq!(
            by_id_names(
                "sda",
                Some("Samsung SSD 860"),
                Some("S3Z9"),
                Some("0x5002538e")
            ),
            [
                "ata-Samsung_SSD_860_S3Z9",
                "scsi-0ATA_Samsung_SSD_860_S3Z9",
                "scsi-1ATA_Samsung_SSD_860_S3Z9",
                "wwn-0x5002538e"
            ]
        );
        assert_eq!(
            by_id_names("nvme0n1", Some("WD Blue"), Some("123"), None),
            ["nvme-WD_Blue_123"]
        );
        assert!(by_id_names("vdb", None, None, None).is_empty());
    }
}
