//! The paths a manifest names must be plain: absolute, with no `.`, `..`
//! or empty component. A manifest comes from the machine it describes, and
//! recovery joins its paths under the image's own directories (mount
//! points under the target root, device paths under /dev): a mount point
//! like `/../dev` would mount the restored filesystem over the image's own
//! /dev and let the host choose the device nodes recovery then writes to.
//! Refusing such paths here (in validation, before anything uses them)
//! keeps every later join inside its root.
//!
//! EFI loader paths are checked the same way with `\` as the separator
//! (`\EFI\debian\shimx64.efi`).

use super::model::Manifest;
use super::validate::Problem;

/// Every problem with a path of the manifest.
pub(super) fn problems(m: &Manifest) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut check = |path: String, value: &str, sep: char| {
        if let Some(why) = unplain(value, sep) {
            out.push(Problem {
                path,
                message: format!("path {value:?} {why}"),
            });
        }
    };
    for (i, d) in m.disks.iter().enumerate() {
        check(format!("/manifest/disk[{}]/@path", i + 1), &d.path, '/');
    }
    for (i, fs) in m.filesystems.iter().enumerate() {
        let p = format!("/manifest/filesystem[{}]", i + 1);
        check(format!("{p}/@device"), &fs.device, '/');
        for (j, mnt) in fs.mounts.iter().enumerate() {
            let mp = format!("{p}/mount[{}]", j + 1);
            // validate.rs reports a relative mount point already.
            if mnt.point.starts_with('/') {
                check(format!("{mp}/@point"), &mnt.point, '/');
            }
            check(format!("{mp}/@root"), &mnt.root, '/');
        }
        if let Some(data) = &fs.data {
            check(format!("{p}/data/@from"), &data.from, '/');
        }
        for (k, sub) in fs.subvolumes.iter().enumerate() {
            if let Some(data) = &sub.data {
                check(
                    format!("{p}/subvolume[{}]/data/@from", k + 1),
                    &data.from,
                    '/',
                );
            }
        }
    }
    for (i, s) in m.swaps.iter().enumerate() {
        check(format!("/manifest/swap[{}]/@device", i + 1), &s.device, '/');
    }
    if let Some(efi) = &m.boot.efi {
        for (i, e) in efi.entries.iter().enumerate() {
            if let Some(path) = &e.path {
                let p = format!("/manifest/boot/efi/entry[{}]/@path", i + 1);
                check(p, path, '\\');
            }
        }
    }
    out
}

/// Why `path` is not a plain absolute path, if it is not. `/` alone is
/// plain; a trailing separator is an empty component.
pub(crate) fn unplain(path: &str, sep: char) -> Option<&'static str> {
    let Some(rest) = path.strip_prefix(sep) else {
        return Some("is not absolute");
    };
    if rest.is_empty() {
        return None;
    }
    if path.contains('\0') {
        return Some("contains a NUL byte");
    }
    for component in rest.split(sep) {
        match component {
            "" => return Some("has an empty component (`//` or a trailing separator)"),
            "." => return Some("has a `.` component"),
            ".." => return Some("has a `..` component"),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{from_xml, to_xml, validate};

    #[test]
    fn plain_paths() {
        for ok in [
            "/",
            "/boot",
            "/boot/efi",
            "/dev/disk/by-id/x..y",
            "/.hidden",
        ] {
            assert_eq!(unplain(ok, '/'), None, "{ok}");
        }
        for bad in [
            "",
            "boot",
            "/..",
            "/../dev",
            "/boot/../../dev",
            "/./x",
            "/boot/",
            "//",
            "/a//b",
            "/a/.",
            "/a\0b",
        ] {
            assert!(unplain(bad, '/').is_some(), "{bad:?}");
        }
        assert_eq!(unplain("\\EFI\\debian\\shimx64.efi", '\\'), None);
        assert!(unplain("\\EFI\\..\\x.efi", '\\').is_some());
    }

    /// The attack of issue 16: a mount point that climbs out of the target
    /// root onto the image's /dev. Refused by validation, and so by
    /// `from_xml` (what the server and recovery read manifests with).
    #[test]
    fn a_mount_point_over_the_images_dev_is_refused() {
        let mut m = crate::manifest::tests::sample();
        let fs = m
            .filesystems
            .iter_mut()
            .find(|f| !f.mounts.is_empty())
            .expect("the sample has a mounted filesystem");
        fs.mounts[0].point = "/../dev".into();
        let e = validate(&m).unwrap_err();
        assert!(
            e.problems
                .iter()
                .any(|p| p.path.ends_with("/mount[1]/@point") && p.message.contains("`..`")),
            "{e}"
        );
        let xml = to_xml(&m).unwrap();
        assert!(from_xml(&xml).is_err());
    }

    #[test]
    fn every_path_of_the_sample_is_checked() {
        let m = crate::manifest::tests::sample();
        assert!(problems(&m).is_empty());
        let mut bad = m.clone();
        bad.disks[0].path = "/dev/../etc/x".into();
        for fs in &mut bad.filesystems {
            fs.device = "/dev/./sda1".into();
            for mnt in &mut fs.mounts {
                mnt.root = "/a//b".into();
            }
            if let Some(d) = &mut fs.data {
                d.from = "/x/..".into();
            }
        }
        let found = problems(&bad);
        assert!(found.iter().any(|p| p.path == "/manifest/disk[1]/@path"));
        assert!(found.iter().any(|p| p.path.ends_with("/@device")));
        assert!(found.iter().any(|p| p.path.ends_with("/@root")));
        assert!(
            found.iter().any(|p| p.path.ends_with("/data/@from"))
                || bad.filesystems.iter().all(|f| f.data.is_none())
        );
    }
}
