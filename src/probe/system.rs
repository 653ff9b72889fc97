//! System identity: host name, machine id, OS, kernel, firmware, time zone.

use std::path::Path;

use anyhow::Result;

use crate::manifest::{Dmi, Firmware, Kernel, OsRelease, System};

/// Read the system rooted at `root` (`/` normally; tests pass a fixture tree).
/// `proc` and `sys` are where procfs and sysfs are mounted.
pub fn probe_system(root: &Path, proc: &Path, sys: &Path) -> Result<System> {
    let uts = nix::sys::utsname::uname()?;
    let hostname = read_trimmed(&root.join("etc/hostname"))
        .map(|h| h.lines().next().unwrap_or("").trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| uts.nodename().to_string_lossy().into_owned());
    Ok(System {
        hostname,
        machine_id: read_trimmed(&root.join("etc/machine-id"))
            .filter(|id| id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit())),
        os: std::fs::read_to_string(root.join("etc/os-release"))
            .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
            .ok()
            .and_then(|t| parse_os_release(&t)),
        kernel: Kernel {
            release: uts.release().to_string_lossy().into_owned(),
            arch: uts.machine().to_string_lossy().into_owned(),
            cmdline: read_trimmed(&proc.join("cmdline")),
        },
        firmware: if sys.join("firmware/efi").is_dir() {
            Firmware::Uefi
        } else {
            Firmware::Bios
        },
        timezone: timezone(root),
        dmi: read_dmi(sys),
        initramfs: super::initramfs::read_initramfs(root),
    })
}

/// The SMBIOS identity from `sys`/class/dmi/id (the UUID and serial are
/// readable by root only), placeholders left out; `None` when nothing
/// usable is there (no DMI on this platform, or only placeholders).
pub fn read_dmi(sys: &Path) -> Option<Dmi> {
    let dir = sys.join("class/dmi/id");
    let field = |name: &str| read_trimmed(&dir.join(name)).and_then(|v| usable_dmi(&v));
    let dmi = Dmi {
        system_uuid: field("product_uuid")
            .map(|u| u.to_ascii_lowercase())
            .filter(|u| crate::manifest::is_guid(u) && !placeholder_uuid(u)),
        serial: field("product_serial"),
        vendor: field("sys_vendor"),
        product: field("product_name"),
    };
    (dmi != Dmi::default()).then_some(dmi)
}

/// A DMI string worth recording: printable, and not one of the fillers
/// firmware ships when nobody set the field.
fn usable_dmi(v: &str) -> Option<String> {
    const FILLERS: [&str; 12] = [
        "to be filled by o.e.m.",
        "to be filled by oem",
        "default string",
        "not specified",
        "not applicable",
        "none",
        "system serial number",
        "system product name",
        "system manufacturer",
        "0123456789",
        "123456789",
        "n/a",
    ];
    let v = v.trim();
    let lower = v.to_ascii_lowercase();
    let filler = FILLERS.contains(&lower.as_str()) || v.bytes().all(|c| c == b'0' || c == b' ');
    (crate::manifest::is_dmi_text(v) && !filler).then(|| v.to_string())
}

/// UUIDs that firmware uses for "unset": all zeros, all ones, and the
/// well-known 03000200-0400-0500-0006-000700080009 of many boards.
fn placeholder_uuid(u: &str) -> bool {
    let hex: String = u.chars().filter(|c| *c != '-').collect();
    hex.chars().all(|c| c == '0')
        || hex.chars().all(|c| c == 'f')
        || u == "03000200-0400-0500-0006-000700080009"
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// os-release(5): shell-like `KEY=value` lines, values optionally quoted.
pub fn parse_os_release(text: &str) -> Option<OsRelease> {
    let mut id = None;
    let mut version_id = None;
    let mut pretty_name = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key {
            "ID" => id = Some(value),
            "VERSION_ID" => version_id = Some(value),
            "PRETTY_NAME" => pretty_name = Some(value),
            _ => {}
        }
    }
    Some(OsRelease {
        id: id.unwrap_or_else(|| "linux".into()),
        version_id,
        pretty_name,
    })
}

fn unquote(v: &str) -> String {
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v);
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// The IANA zone: /etc/timezone (Debian), else the /etc/localtime link target.
fn timezone(root: &Path) -> Option<String> {
    if let Some(tz) = read_trimmed(&root.join("etc/timezone")) {
        return Some(tz);
    }
    let target = std::fs::read_link(root.join("etc/localtime")).ok()?;
    zone_from_link(&target.to_string_lossy())
}

/// `/usr/share/zoneinfo/Europe/Paris` (or `../usr/share/zoneinfo/...`) → `Europe/Paris`.
pub fn zone_from_link(target: &str) -> Option<String> {
    let (_, zone) = target.split_once("zoneinfo/")?;
    let zone = zone.strip_prefix("posix/").unwrap_or(zone);
    (!zone.is_empty()).then(|| zone.to_string())
}

/// The boot loader installed on the system, if rewind recognises it.
pub fn boot_loader(root: &Path) -> Option<String> {
    let grub = ["boot/grub/grub.cfg", "boot/grub2/grub.cfg"]
        .iter()
        .any(|p| root.join(p).exists());
    grub.then(|| "grub".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_debian() {
        let text = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
HOME_URL="https://www.debian.org/"
"#;
        let os = parse_os_release(text).unwrap();
        assert_eq!(os.id, "debian");
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(
            os.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn os_release_rolling_without_version() {
        let os = parse_os_release("NAME='Arch Linux'\nID=arch\n# comment\n").unwrap();
        assert_eq!(os.id, "arch");
        assert_eq!(os.version_id, None);
    }

    #[test]
    fn zone_links() {
        assert_eq!(
            zone_from_link("/usr/share/zoneinfo/Europe/Paris").as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(
            zone_from_link("../usr/share/zoneinfo/UTC").as_deref(),
            Some("UTC")
        );
        assert_eq!(
            zone_from_link("/usr/share/zoneinfo/posix/Asia/Tokyo").as_deref(),
            Some("Asia/Tokyo")
        );
        assert_eq!(zone_from_link("/etc/whatever"), None);
    }

    #[test]
    fn system_from_fixture_root() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("hostname"), "web1\n").unwrap();
        std::fs::write(etc.join("machine-id"), "4f3c2b1a00112233445566778899aabb\n").unwrap();
        std::fs::write(etc.join("os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Europe/Paris", etc.join("localtime"))
            .unwrap();
        let proc = root.path().join("proc");
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::write(proc.join("cmdline"), "root=/dev/sda2 ro\n").unwrap();
        let sys = root.path().join("sys");
        std::fs::create_dir_all(sys.join("firmware/efi")).unwrap();
        let s = probe_system(root.path(), &proc, &sys).unwrap();
        assert_eq!(s.hostname, "web1");
        assert_eq!(
            s.machine_id.as_deref(),
            Some("4f3c2b1a00112233445566778899aabb")
        );
        assert_eq!(s.os.unwrap().version_id.as_deref(), Some("12"));
        assert_eq!(s.kernel.cmdline.as_deref(), Some("root=/dev/sda2 ro"));
        assert_eq!(s.firmware, Firmware::Uefi);
        assert_eq!(s.timezone.as_deref(), Some("Europe/Paris"));
        assert!(!s.kernel.release.is_empty());
        assert_eq!(s.dmi, None, "no DMI in the fixture");
    }

    #[test]
    fn dmi_identity_without_placeholders() {
        let sys = tempfile::tempdir().unwrap();
        let dir = sys.path().join("class/dmi/id");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("product_uuid"),
            "4C4C4544-0042-3510-8051-B7C04F4E4A31\n",
        )
        .unwrap();
        std::fs::write(dir.join("product_serial"), "To Be Filled By O.E.M.\n").unwrap();
        std::fs::write(dir.join("sys_vendor"), "Dell Inc.\n").unwrap();
        std::fs::write(dir.join("product_name"), "PowerEdge R640\n").unwrap();
        let d = read_dmi(sys.path()).unwrap();
        assert_eq!(
            d.system_uuid.as_deref(),
            Some("4c4c4544-0042-3510-8051-b7c04f4e4a31")
        );
        assert_eq!(d.serial, None, "a placeholder is not a serial");
        assert_eq!(d.vendor.as_deref(), Some("Dell Inc."));
        assert_eq!(d.product.as_deref(), Some("PowerEdge R640"));
        assert!(d.identifies());

        std::fs::write(
            dir.join("product_uuid"),
            "00000000-0000-0000-0000-000000000000\n",
        )
        .unwrap();
        std::fs::write(dir.join("product_serial"), "CZ1234567\n").unwrap();
        let d = read_dmi(sys.path()).unwrap();
        assert_eq!(d.system_uuid, None, "the all-zero UUID means unset");
        assert_eq!(d.serial.as_deref(), Some("CZ1234567"));
        let other = Dmi {
            serial: Some("CZ7654321".into()),
            ..Dmi::default()
        };
        assert!(!d.same_machine(&other));
        assert!(d.same_machine(&d.clone()));
    }
}
