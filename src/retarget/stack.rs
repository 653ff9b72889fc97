//! The storage stack's boot files: mdadm.conf and the LVM devices file.
//!
//! The stack was recreated with its captured identities (array UUIDs and
//! names, PV/VG/LV UUIDs and names), so what names those keeps working:
//! `ARRAY ... UUID=` lines, `/dev/mapper/VG-LV` and `/dev/md/NAME` in
//! fstab. What names the old *disks* does not:
//!
//! - mdadm.conf: an `ARRAY` line's `devices=` list names the old member
//!   partitions (kernel names, by-id names of the old serial numbers); it
//!   is dropped, the UUID identifies the array. `DEVICE` lines naming old
//!   disks (by id or by kernel name) are renamed like fstab. An `ARRAY` whose UUID is not a
//!   captured array, and a captured array with no `ARRAY` line, are
//!   reported: the initramfs may wait for the one or not assemble the other.
//! - /etc/lvm/devices/system.devices (RHEL 9 and later): each PV is listed
//!   by the WWID or serial number of its disk, which the new disk does not
//!   have; LVM ignores every device not listed, so a stale file leaves the
//!   root volume group unfound and the boot waiting. Entries naming a PV on
//!   an MD array or a LUKS volume (`md_uuid`, `crypt_uuid`) stay valid; any
//!   other entry of a recreated PV makes the file stale, and it is moved
//!   aside (`system.devices.rewind-stale`): without a devices file, LVM uses
//!   every device (lvmdevices(8)); `vgimportdevices -a` makes a new one.

use std::path::Path;

use anyhow::Result;

use super::disks::DiskNames;
use super::files::Workspace;
use super::text::split_eol;
use crate::manifest::{Manifest, StackRef};

const MDADM_CONFS: [&str; 2] = ["/etc/mdadm/mdadm.conf", "/etc/mdadm.conf"];
pub(super) const LVM_DEVICES: &str = "/etc/lvm/devices/system.devices";

/// Whether the initramfs carries a copy of `file` (absolute).
pub(super) fn in_initramfs(file: &str) -> bool {
    MDADM_CONFS.contains(&file) || file == LVM_DEVICES
}
pub(super) const STALE_SUFFIX: &str = ".rewind-stale";

pub(super) fn rewrite(ws: &mut Workspace, m: &Manifest, disk_names: &DiskNames) -> Result<()> {
    for conf in MDADM_CONFS {
        mdadm_conf(ws, Path::new(conf), m, disk_names)?;
    }
    lvm_devices(ws, m)
}

/// An MD UUID as hex digits only, lowercase: mdadm writes `a:b:c:d`, some
/// tools `a-b-c-d` or no separators at all.
fn uuid_key(u: &str) -> String {
    u.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn mdadm_conf(ws: &mut Workspace, path: &Path, m: &Manifest, disk_names: &DiskNames) -> Result<()> {
    let Some(text) = ws.text(path)? else {
        return Ok(());
    };
    let mut out = String::with_capacity(text.len());
    let mut whats = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = Vec::new();
    for line in text.split_inclusive('\n') {
        let (body, eol) = split_eol(line);
        let words: Vec<&str> = body.split_whitespace().collect();
        let keyword = words.first().map(|w| w.to_ascii_uppercase());
        match keyword.as_deref() {
            Some("ARRAY") => {
                let uuid = words.iter().find_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    k.eq_ignore_ascii_case("uuid").then_some(v)
                });
                match uuid {
                    Some(u) => match m
                        .md_arrays
                        .iter()
                        .find(|a| uuid_key(&a.uuid) == uuid_key(u))
                    {
                        Some(a) => seen.push(a.name.clone()),
                        None => warnings.push(format!(
                            "ARRAY {} (UUID {u}) is not an array of the snapshot: the boot may wait for it",
                            words.get(1).copied().unwrap_or_default()
                        )),
                    },
                    None => warnings.push(format!(
                        "ARRAY {} has no UUID=: the recreated arrays are found by UUID",
                        words.get(1).copied().unwrap_or_default()
                    )),
                }
                let kept: Vec<&str> = words
                    .iter()
                    .copied()
                    .filter(|w| {
                        !w.split_once('=')
                            .is_some_and(|(k, _)| k.eq_ignore_ascii_case("devices"))
                    })
                    .collect();
                if kept.len() == words.len() {
                    out.push_str(line);
                } else {
                    whats.push(format!(
                        "ARRAY {}: devices= (the old member names) dropped, the array is found by its UUID",
                        words.get(1).copied().unwrap_or_default()
                    ));
                    out.push_str(&kept.join(" "));
                    out.push_str(eol);
                }
            }
            Some("DEVICE") => {
                let mut changed = false;
                let renamed: Vec<String> = words
                    .iter()
                    .map(|w| match disk_names.rename(w) {
                        Some(new) => {
                            whats.push(format!("DEVICE {w} -> {new}"));
                            changed = true;
                            new
                        }
                        None => w.to_string(),
                    })
                    .collect();
                if changed {
                    out.push_str(&renamed.join(" "));
                    out.push_str(eol);
                } else {
                    out.push_str(line);
                }
            }
            _ => out.push_str(line),
        }
    }
    for a in &m.md_arrays {
        if !seen.contains(&a.name) && text.lines().any(|l| l.trim_start().starts_with("ARRAY")) {
            warnings.push(format!(
                "md/{} (UUID {}) has no ARRAY line: the initramfs may not assemble it",
                a.name, a.uuid
            ));
        }
    }
    for w in warnings {
        ws.warn(path, w);
    }
    if out != text {
        ws.set(path, out, whats);
    }
    Ok(())
}

/// One entry of the devices file: `IDTYPE=sys_wwid IDNAME=... PVID=...`.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn lvm_devices(ws: &mut Workspace, m: &Manifest) -> Result<()> {
    let path = Path::new(LVM_DEVICES);
    let Some(text) = ws.text(path)? else {
        return Ok(());
    };
    let mut stale = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let (Some(idtype), Some(pvid)) = (field(line, "IDTYPE"), field(line, "PVID")) else {
            continue;
        };
        let pv = m
            .volume_groups
            .iter()
            .flat_map(|g| &g.pvs)
            .find(|pv| pv.uuid.replace('-', "") == pvid);
        let Some(pv) = pv else {
            continue;
        };
        let on_stack = matches!(pv.device, StackRef::Md(_) | StackRef::Luks(_));
        let keeps = match idtype {
            "md_uuid" | "crypt_uuid" => on_stack,
            _ => false,
        };
        if !keeps {
            stale.push(format!(
                "PV {} on {} is listed by {idtype} {}",
                pv.uuid,
                pv.device,
                field(line, "IDNAME").unwrap_or("?")
            ));
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    ws.move_aside(
        path,
        STALE_SUFFIX,
        format!(
            "moved aside to {LVM_DEVICES}{STALE_SUFFIX}: it names the old disks ({}), and LVM would ignore the new ones and leave the boot waiting; without it LVM uses every device (run `vgimportdevices -a` to make a new one)",
            stale.join("; ")
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::stack_tests::sample_stack;

    fn run(files: &[(&str, &str)], m: &Manifest) -> (tempfile::TempDir, Vec<super::super::Change>) {
        let tmp = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let host = tmp.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(host.parent().unwrap()).unwrap();
            std::fs::write(host, text).unwrap();
        }
        let mut ws = Workspace::new(tmp.path());
        let names = DiskNames {
            by_id: vec![(
                "virtio-OLD1".to_string(),
                "ata-QEMU_HARDDISK_NEW1".to_string(),
            )],
            kernel: Vec::new(),
        };
        rewrite(&mut ws, m, &names).unwrap();
        let changes = ws.commit().unwrap();
        (tmp, changes)
    }

    fn read(tmp: &tempfile::TempDir, p: &str) -> Option<String> {
        std::fs::read_to_string(tmp.path().join(p.trim_start_matches('/'))).ok()
    }

    const CONF: &str = "# mdadm.conf\nDEVICE /dev/disk/by-id/virtio-OLD1-part2 /dev/vdb2\nHOMEHOST <system>\nARRAY /dev/md/root metadata=1.2 UUID=3b0c9e2a:5d1f4e6b:8a7c2d90:1e3f5a7b name=web1:root devices=/dev/vda2,/dev/vdb2\nARRAY /dev/md/esp metadata=1.0 UUID=5d3c1e7a:90b2f4d6:1a2b3c4d:5e6f7a8b name=web1:esp\n";

    #[test]
    fn mdadm_conf_loses_old_member_names_and_keeps_its_uuids() {
        let (tmp, changes) = run(&[("/etc/mdadm/mdadm.conf", CONF)], &sample_stack());
        assert_eq!(
            read(&tmp, "/etc/mdadm/mdadm.conf").unwrap(),
            "# mdadm.conf\nDEVICE /dev/disk/by-id/ata-QEMU_HARDDISK_NEW1-part2 /dev/vdb2\nHOMEHOST <system>\nARRAY /dev/md/root metadata=1.2 UUID=3b0c9e2a:5d1f4e6b:8a7c2d90:1e3f5a7b name=web1:root\nARRAY /dev/md/esp metadata=1.0 UUID=5d3c1e7a:90b2f4d6:1a2b3c4d:5e6f7a8b name=web1:esp\n"
        );
        assert!(
            changes
                .iter()
                .all(|c| c.kind != super::super::ChangeKind::Warning),
            "{changes:?}"
        );
        assert_eq!(changes.len(), 2, "{changes:?}");
        // A second run changes nothing.
        let mut ws = Workspace::new(tmp.path());
        rewrite(&mut ws, &sample_stack(), &DiskNames::default()).unwrap();
        assert!(ws.commit().unwrap().is_empty());
    }

    #[test]
    fn an_array_not_captured_and_one_without_a_line_are_reported() {
        let conf = "ARRAY /dev/md/old UUID=00000000:11111111:22222222:33333333\nARRAY /dev/md/root UUID=3b0c9e2a-5d1f4e6b-8a7c2d90-1e3f5a7b\n";
        let (tmp, changes) = run(&[("/etc/mdadm.conf", conf)], &sample_stack());
        assert_eq!(read(&tmp, "/etc/mdadm.conf").unwrap(), conf);
        let whats: Vec<&str> = changes.iter().map(|c| c.what.as_str()).collect();
        assert!(whats.iter().any(|w| w.starts_with("ARRAY /dev/md/old (UUID 00000000:11111111:22222222:33333333) is not an array of the snapshot")), "{whats:?}");
        assert!(
            whats.iter().any(|w| w.starts_with(
                "md/esp (UUID 5d3c1e7a:90b2f4d6:1a2b3c4d:5e6f7a8b) has no ARRAY line"
            )),
            "{whats:?}"
        );
        assert!(!whats.iter().any(|w| w.contains("md/root")), "{whats:?}");
    }

    #[test]
    fn a_devices_file_naming_old_disks_is_moved_aside() {
        let mut m = sample_stack();
        m.volume_groups[0].pvs[0].device = StackRef::Partition("vda".into(), 3);
        let df = "# LVM uses devices listed in this file.\nVERSION=1.1.3\nIDTYPE=sys_wwid IDNAME=naa.600140512345 DEVNAME=/dev/sda3 PVID=Tq5wErYu7iOp9aSd2fGh4jKl6zXc8vBn PART=3\n";
        let (tmp, changes) = run(&[(LVM_DEVICES, df)], &m);
        assert_eq!(read(&tmp, LVM_DEVICES), None);
        assert_eq!(
            read(&tmp, "/etc/lvm/devices/system.devices.rewind-stale").unwrap(),
            df
        );
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].file, Path::new("etc/lvm/devices/system.devices"));
        assert!(changes[0].what.contains("PV Tq5wEr-Yu7i-Op9a-Sd2f-Gh4j-Kl6z-Xc8vBn on disk/vda/3 is listed by sys_wwid naa.600140512345"), "{}", changes[0].what);
    }

    #[test]
    fn a_devices_file_naming_pvs_by_md_or_luks_uuid_stays() {
        let mut m = sample_stack();
        let df = "VERSION=1.1.3\nIDTYPE=crypt_uuid IDNAME=CRYPT-LUKS2-5ec2e7001234 DEVNAME=/dev/mapper/cryptroot PVID=Tq5wErYu7iOp9aSd2fGh4jKl6zXc8vBn\n";
        let (tmp, changes) = run(&[(LVM_DEVICES, df)], &m);
        assert_eq!(read(&tmp, LVM_DEVICES).unwrap(), df);
        assert!(changes.is_empty(), "{changes:?}");
        m.volume_groups[0].pvs[0].device = StackRef::Md("root".into());
        let df = df.replace("crypt_uuid", "md_uuid");
        let (tmp, changes) = run(&[(LVM_DEVICES, &df)], &m);
        assert_eq!(read(&tmp, LVM_DEVICES).unwrap(), df);
        assert!(changes.is_empty(), "{changes:?}");
    }
}
