//! The old disks' names in the restored system's files. Two kinds of name do
//! not survive a recovery onto other disks:
//!
//! - `/dev/disk/by-id/NAME[-partN]`: the name holds the old disk's model and
//!   serial (or WWN), which the new disk does not have;
//! - kernel names, `/dev/vda1`: another controller gives other names
//!   (`/dev/nvme0n1p1`, `/dev/sda1`), and a partition's suffix follows the
//!   disk's name (`p1` after a digit, `1` otherwise).
//!
//! UUID=, LABEL=, PARTUUID= and `/dev/mapper/`, `/dev/md/` names survive (the
//! recovery recreates them) and are left alone. The files are those that
//! name a disk for the boot: fstab and crypttab, GRUB's device.map and its
//! kernel command line (/etc/default/grub, grub.cfg, BLS entries), and where
//! initramfs-tools, dracut, uswsusp and systemd's kernel-install keep the
//! hibernation device (`resume=`, `RESUME=`). A device path is one token: it
//! starts with `/dev/` not inside a longer path, and ends at a blank, a
//! quote or a separator; every token of a line is renamed in one pass, so
//! two disks that swapped names (vda ↔ vdb) are renamed once each. Comment
//! lines stay as they are. A kernel name that is no captured disk's but a
//! recovered disk's now (the old machine's USB disk `sdb1` in fstab, with
//! the recovered disk now `sdb`) is left, with a warning: nothing says what
//! it should name.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::files::Workspace;
use super::text::split_eol;

const BY_ID: &str = "/dev/disk/by-id/";

/// How the captured disks are named now: see [`super::retarget`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskNames {
    /// Each captured disk's `/dev/disk/by-id/` names (without the directory,
    /// without `-partN`), paired with the name of the disk it was restored
    /// onto.
    pub by_id: Vec<(String, String)>,
    /// Each captured disk's kernel name (`vda`) paired with its target's
    /// (`nvme0n1`), where they differ.
    pub kernel: Vec<(String, String)>,
}

impl DiskNames {
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.kernel.is_empty()
    }

    /// `dev` (a whole device path) renamed for the new disks, or `None`.
    pub(super) fn rename(&self, dev: &str) -> Option<String> {
        if let Some(id) = dev.strip_prefix(BY_ID) {
            return self.by_id.iter().find_map(|(old, new)| {
                if id == old {
                    return Some(format!("{BY_ID}{new}"));
                }
                let part = id.strip_prefix(old.as_str())?.strip_prefix("-part")?;
                is_number(part).then(|| format!("{BY_ID}{new}-part{part}"))
            });
        }
        let name = dev.strip_prefix("/dev/")?;
        self.kernel.iter().find_map(|(old, new)| {
            if name == old {
                return Some(format!("/dev/{new}"));
            }
            let rest = name.strip_prefix(old.as_str())?;
            let part = match ends_in_digit(old) {
                true => rest.strip_prefix('p')?,
                false => rest,
            };
            is_number(part).then(|| format!("/dev/{new}{}{part}", part_infix(new)))
        })
    }

    /// The new disk whose kernel name `dev` (not an old disk's) has: a
    /// device of the old machine that was not captured (a USB disk in
    /// fstab, say) that the recovered disk's name now shadows.
    fn shadowed_by(&self, dev: &str) -> Option<&str> {
        let name = dev.strip_prefix("/dev/")?;
        self.kernel.iter().find_map(|(_, new)| {
            let rest = name.strip_prefix(new.as_str())?;
            let part = match ends_in_digit(new) {
                true if !rest.is_empty() => rest.strip_prefix('p')?,
                _ => rest,
            };
            (rest.is_empty() || is_number(part)).then_some(new.as_str())
        })
    }

    /// `text` with every old device path renamed: the new text, `old ->
    /// new` for each, and a warning for each other path that names a
    /// recovered disk now ([`Self::shadowed_by`]). `None` when there is
    /// nothing to say.
    fn rename_text(&self, text: &str) -> Option<(String, Vec<String>, Vec<String>)> {
        let mut out = String::with_capacity(text.len());
        let mut whats = Vec::new();
        let mut warnings = Vec::new();
        for line in text.split_inclusive('\n') {
            let (body, _) = split_eol(line);
            if body.trim_start().starts_with('#') {
                out.push_str(line);
                continue;
            }
            let mut rest = line;
            while let Some((before, token, after)) = next_device(rest) {
                out.push_str(before);
                match self.rename(token) {
                    Some(new) => {
                        let note = match token.starts_with(BY_ID) {
                            true => "",
                            // The restored system's kernel may name its disks
                            // otherwise than the recovery image's did.
                            false => {
                                " (a kernel name: UUID= would not depend on the order disks are found in)"
                            }
                        };
                        whats.push(format!("{token} -> {new}{note}"));
                        out.push_str(&new);
                    }
                    None => {
                        if let Some(disk) = self.shadowed_by(token) {
                            warnings.push(format!(
                                "{token} names the recovered disk /dev/{disk} (not renamed here): \
                                 if it named another device of the old machine, fix this line"
                            ));
                        }
                        out.push_str(token)
                    }
                }
                rest = after;
            }
            out.push_str(rest);
        }
        (!whats.is_empty() || !warnings.is_empty()).then_some((out, whats, warnings))
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

fn ends_in_digit(name: &str) -> bool {
    name.bytes().last().is_some_and(|c| c.is_ascii_digit())
}

/// What comes between a disk's kernel name and a partition number:
/// `nvme0n1p1`, `mmcblk0p1`, but `sda1`, `vda1`.
fn part_infix(disk: &str) -> &'static str {
    if ends_in_digit(disk) { "p" } else { "" }
}

/// The next device path in `s`: what is before it, the path, what is after.
fn next_device(s: &str) -> Option<(&str, &str, &str)> {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(i) = s[from..].find("/dev/").map(|i| i + from) {
        // Not the tail of a longer path (`/mnt/dev/sda`, `x/dev/sda`).
        let inside = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b"/._-".contains(&b[i - 1]));
        let end = s[i..]
            .find(|c: char| c.is_whitespace() || "\"'`,;()[]{}<>|&".contains(c))
            .map_or(s.len(), |n| i + n);
        if !inside {
            return Some((&s[..i], &s[i..end], &s[end..]));
        }
        from = end.max(i + 1);
    }
    None
}

/// The files that name a disk for the boot, as absolute paths of the
/// restored system (those absent are skipped when read).
fn files(ws: &Workspace) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = [
        "/etc/fstab",
        "/etc/crypttab",
        "/boot/grub/device.map",
        "/boot/grub2/device.map",
        "/etc/default/grub",
        "/boot/grub/grub.cfg",
        "/boot/grub2/grub.cfg",
        "/etc/kernel/cmdline",
        "/etc/dracut.conf",
        "/etc/uswsusp.conf",
        "/etc/initramfs-tools/conf.d/resume",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for (dir, suffix) in [
        ("/etc/default/grub.d", ".cfg"),
        ("/etc/dracut.conf.d", ".conf"),
        ("/boot/loader/entries", ".conf"),
    ] {
        out.extend(ws.list(Path::new(dir), suffix)?);
    }
    Ok(out)
}

/// Files of [`files`] that an initramfs holds a copy of (or is made
/// from): changed, the initramfs must be made again.
pub(super) fn in_initramfs(file: &str) -> bool {
    file == "/etc/crypttab"
        || file == "/etc/dracut.conf"
        || file.starts_with("/etc/dracut.conf.d/")
        || file == "/etc/initramfs-tools/conf.d/resume"
        || file == "/etc/uswsusp.conf"
}

/// Rename the old disks' device paths in every file of [`files`].
pub(super) fn rewrite(ws: &mut Workspace, names: &DiskNames) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    for path in files(ws)? {
        let Some(text) = ws.text(&path)? else {
            continue;
        };
        if let Some((new, whats, warnings)) = names.rename_text(&text) {
            if !whats.is_empty() {
                ws.set(&path, new, whats);
            }
            for w in warnings {
                ws.warn(&path, w);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> DiskNames {
        DiskNames {
            by_id: vec![("ata-OLD".into(), "nvme-NEW".into())],
            kernel: vec![
                ("vda".into(), "nvme0n1".into()),
                ("nvme1n1".into(), "sdb".into()),
                ("vdb".into(), "vdc".into()),
                ("vdc".into(), "vdb".into()),
            ],
        }
    }

    #[test]
    fn kernel_names_follow_the_partition_rule_of_each_side() {
        let n = names();
        let r = |d: &str| n.rename(d);
        assert_eq!(r("/dev/vda").as_deref(), Some("/dev/nvme0n1"));
        assert_eq!(r("/dev/vda2").as_deref(), Some("/dev/nvme0n1p2"));
        assert_eq!(r("/dev/nvme1n1p3").as_deref(), Some("/dev/sdb3"));
        assert_eq!(r("/dev/nvme1n13"), None, "no p: another disk");
        assert_eq!(r("/dev/vdaa1"), None);
        assert_eq!(r("/dev/vda1x"), None);
        assert_eq!(r("/dev/sda1"), None);
        assert_eq!(
            r("/dev/disk/by-id/ata-OLD-part1").as_deref(),
            Some("/dev/disk/by-id/nvme-NEW-part1")
        );
        assert_eq!(r("/dev/disk/by-id/ata-OLD2-part1"), None);
    }

    #[test]
    fn every_token_is_renamed_once_and_the_rest_stays() {
        let n = names();
        let text = "GRUB_CMDLINE_LINUX=\"root=/dev/vda1 resume=/dev/vdb2 quiet\"\n\
                    # resume=/dev/vda3 in a comment\n\
                    add_device+=\" /dev/vdc1 \"\n\
                    (hd0)\t/dev/disk/by-id/ata-OLD\r\n\
                    /mnt/dev/vda1 x/dev/vda1 /dev/vda1/x\n";
        let (out, whats, warnings) = n.rename_text(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX=\"root=/dev/nvme0n1p1 resume=/dev/vdc2 quiet\"\n\
             # resume=/dev/vda3 in a comment\n\
             add_device+=\" /dev/vdb1 \"\n\
             (hd0)\t/dev/disk/by-id/nvme-NEW\r\n\
             /mnt/dev/vda1 x/dev/vda1 /dev/vda1/x\n"
        );
        assert_eq!(whats.len(), 4, "{whats:?}");
        assert!(whats[0].starts_with("/dev/vda1 -> /dev/nvme0n1p1 (a kernel name"));
        assert_eq!(
            whats[3],
            "/dev/disk/by-id/ata-OLD -> /dev/disk/by-id/nvme-NEW"
        );
        assert!(n.rename_text("UUID=x / ext4 defaults 0 1\n").is_none());
    }

    /// A device the old machine had but did not capture (a USB disk named
    /// sdb1 in fstab) whose name a recovered disk took is left, with a
    /// warning; names of other disks pass in silence.
    #[test]
    fn a_name_a_recovered_disk_took_is_pointed_out() {
        let n = names();
        let (out, whats, warnings) = n
            .rename_text("/dev/sdb1 /mnt/usb vfat noauto 0 0\n/dev/sdc1 /mnt/b ext4 noauto 0 0\n")
            .unwrap();
        assert_eq!(
            out,
            "/dev/sdb1 /mnt/usb vfat noauto 0 0\n/dev/sdc1 /mnt/b ext4 noauto 0 0\n"
        );
        assert!(whats.is_empty());
        assert_eq!(
            warnings,
            [
                "/dev/sdb1 names the recovered disk /dev/sdb (not renamed here): \
                 if it named another device of the old machine, fix this line"
            ]
        );
        assert_eq!(n.shadowed_by("/dev/nvme0n1p3"), Some("nvme0n1"));
        assert_eq!(n.shadowed_by("/dev/nvme0n13"), None);
        assert_eq!(n.shadowed_by("/dev/sdb"), Some("sdb"));
    }
}
