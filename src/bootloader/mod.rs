//! The `bootloader` stage: make the recovered disk boot from its own boot
//! loader, BIOS and UEFI.
//!
//! 1. The boot code (LBA 0), the boot gap and BIOS boot partitions were
//!    written byte for byte by the partition and format stages when the
//!    snapshot holds them. Where it does not (or the layout moved), GRUB is
//!    reinstalled from the restored system in a chroot (grub.rs).
//! 2. UEFI: the captured boot entries that point at recreated partitions
//!    are written to NVRAM, BootOrder merged (efi.rs).
//!    With the ESP mirrored on MD RAID1, every member gets an entry
//!    (mirror.rs).
//! 3. When no entry could be written, `\EFI\BOOT\BOOTX64.EFI` on the
//!    restored ESP is made to boot the system (removable-media path).

pub mod efi;
pub mod grub;
pub mod mirror;

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

use crate::layout::plan::{Plan, Table};
use crate::manifest::{Firmware, Manifest};

pub(crate) use crate::console::say;

/// The stage's entry point: `target_root` holds the restored filesystems,
/// mounted as the plan says.
/// With `reinstall_grub`, GRUB is reinstalled even where the captured boot
/// code and core image could be reused.
pub fn run(m: &Manifest, plan: &Plan, target_root: &Path, reinstall_grub: bool) -> Result<()> {
    let decision = grub::decide_with(m, plan, reinstall_grub);
    if !decision.is_empty() {
        grub::link_by_uuid(plan, Path::new("/dev/disk/by-uuid"));
    }
    let root = plan
        .mounts
        .iter()
        .find(|s| s.point == "/" && s.skipped.is_none())
        .map(|s| Path::new(&s.target).to_path_buf())
        .unwrap_or_else(|| target_root.to_path_buf());
    grub::execute(&decision, m, &root)?;
    if decision.reused.is_empty() && decision.is_empty() && m.system.firmware == Firmware::Bios {
        say("no GRUB boot code was captured: the disks' boot code is as captured");
    }
    if m.system.firmware == Firmware::Uefi {
        uefi(m, plan, Path::new(efi::EFIVARS));
    }
    Ok(())
}

/// The partition GUIDs the plan recreated (lowercase).
pub fn recreated_guids(plan: &Plan) -> HashSet<String> {
    plan.disks
        .iter()
        .filter_map(|d| match &d.table {
            Table::Gpt(g) => Some(g.partitions.iter().map(|p| p.guid.to_ascii_lowercase())),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Boot entries into NVRAM through `efivars`, or the removable-media path.
pub fn uefi(m: &Manifest, plan: &Plan, efivars: &Path) {
    let Some(captured) = &m.boot.efi else {
        say("no EFI boot entries were captured");
        return;
    };
    // A mirrored ESP: an entry for every member.
    let (with_members, notes) = mirror::with_member_entries(m, plan, captured);
    for n in &notes {
        say(n);
    }
    // Another sector size: the partitions' nodes in the new sectors.
    let (with_members, notes) = mirror::at_recreated_offsets(plan, &with_members);
    for n in &notes {
        say(n);
    }
    let captured = &with_members;
    let guids = recreated_guids(plan);
    let outcome = match efi::ensure_efivarfs(efivars) {
        Ok(()) => efi::recreate_entries(efivars, captured, &guids),
        Err(e) => {
            let (chosen, skipped) = efi::select(captured, &guids);
            efi::Outcome {
                wanted: chosen.len(),
                skipped,
                failed: vec![format!("EFI variables cannot be written: {e:#}")],
                ..efi::Outcome::default()
            }
        }
    };
    for s in &outcome.skipped {
        say(s);
    }
    for (was, now, reused) in &outcome.written {
        say(&match (reused, was == now) {
            (true, _) => format!("Boot{was}: already in NVRAM as Boot{now}"),
            (false, true) => format!("Boot{was}: written"),
            (false, false) => format!("Boot{was}: written as Boot{now} (Boot{was} is taken)"),
        });
    }
    for f in &outcome.failed {
        say(&format!("warning: {f}"));
    }
    if let Some(order) = &outcome.boot_order {
        say(&format!("BootOrder: {}", order.join(",")));
    }
    if outcome.wanted == 0 || !outcome.written.is_empty() {
        return;
    }
    // Nothing reached NVRAM: the firmware's removable-media path must do.
    let (chosen, _) = efi::select(captured, &guids);
    for e in chosen {
        let (Some(guid), Some(loader)) = (&e.partition_guid, &e.path) else {
            continue;
        };
        let Some((_, esp)) = grub::esp_mount(plan, guid) else {
            say(&format!(
                "warning: the ESP of Boot{} is not mounted: no removable-media fallback",
                e.number
            ));
            continue;
        };
        match efi::removable_fallback(Path::new(&esp), loader, &m.system.kernel.arch) {
            Ok(done) => {
                for d in done {
                    say(&format!("removable-media path: {d}"));
                }
                return;
            }
            Err(err) => say(&format!(
                "warning: removable-media fallback for Boot{}: {err:#}",
                e.number
            )),
        }
    }
}
