//! The walk and mounts, on a real filesystem (root, a loop device): a bind
//! mount of a directory onto itself (what systemd's `ProtectSystem=` and
//! `ReadWritePaths=` make in a service's namespace) is walked through, while
//! a real other filesystem and a bind of another directory of the same
//! filesystem stay mount points, recorded and not descended into.

#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestFs, root_or_skip, sh};
use rewind::tree::Entry;
use rewind::walk::{self, FileContent};

/// A mount made with `mount ARGS... POINT`, undone on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(args: &[&str], point: &Path) -> Mount {
        let mut all = args.to_vec();
        all.push(point.to_str().unwrap());
        sh("mount", &all);
        Mount(point.to_path_buf())
    }

    fn bind(from: &Path, onto: &Path) -> Mount {
        Mount::new(&["--bind", from.to_str().unwrap()], onto)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn walked(root: &Path) -> (Vec<String>, Vec<String>) {
    let mut paths = Vec::new();
    let stats = walk::walk(root, &mut |e: &mut Entry, _: &FileContent| {
        paths.push(String::from_utf8(e.path.clone()).unwrap());
        Ok(())
    })
    .unwrap();
    let points = stats
        .mount_points
        .iter()
        .map(|p| String::from_utf8(p.clone()).unwrap())
        .collect();
    (paths, points)
}

#[test]
fn a_bind_onto_itself_is_walked_and_other_mounts_are_not() {
    if !root_or_skip("a_bind_onto_itself_is_walked_and_other_mounts_are_not") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = TestFs::new(dir.path(), "fs", 64);
    fs.write("usr/bin/tool", b"tool");
    fs.write("usr/lib/deep/x", b"x");
    fs.write("etc/hostname", b"h");
    fs.write("srv/data", b"d");
    fs.write("other/hidden", b"under the tmpfs");
    fs.write("elsewhere/hidden", b"under the bind of srv");
    let before = walked(fs.mount.point.as_path());

    // /usr and /etc bound onto themselves, /usr read-only as ProtectSystem=
    // makes it.
    let _usr = Mount::bind(&fs.path("usr"), &fs.path("usr"));
    sh(
        "mount",
        &["-o", "remount,bind,ro", fs.path("usr").to_str().unwrap()],
    );
    let _etc = Mount::bind(&fs.path("etc"), &fs.path("etc"));
    // Inside a self-bind, another one (ReadWritePaths= below a read-only path).
    let _deep = Mount::bind(&fs.path("usr/lib/deep"), &fs.path("usr/lib/deep"));
    // Real other mounts: another filesystem, and another directory of this one.
    let _tmpfs = Mount::new(&["-t", "tmpfs", "tmpfs"], &fs.path("other"));
    std::fs::write(fs.path("other/on-tmpfs"), b"t").unwrap();
    let _bind = Mount::bind(&fs.path("srv"), &fs.path("elsewhere"));

    let (paths, points) = walked(fs.mount.point.as_path());
    for p in [
        "usr/bin/tool",
        "usr/lib/deep/x",
        "etc/hostname",
        "srv/data",
        "other",
        "elsewhere",
    ] {
        assert!(paths.iter().any(|x| x == p), "{p} not walked: {paths:?}");
    }
    for p in ["other/on-tmpfs", "other/hidden", "elsewhere/data"] {
        assert!(!paths.iter().any(|x| x == p), "{p} walked: {paths:?}");
    }
    assert_eq!(points, ["elsewhere", "other"]);
    // Through the self-binds the walk sees what it saw without them.
    let hidden = |p: &String| p.starts_with("other/") || p.starts_with("elsewhere/");
    let unmounted: Vec<&String> = before.0.iter().filter(|p| !hidden(p)).collect();
    assert_eq!(paths.iter().collect::<Vec<_>>(), unmounted);

    // Walking from a self-bind (the root of the capture in the unit's
    // namespace is one too): the same.
    let (from_usr, points) = walked(&fs.path("usr"));
    assert_eq!(
        from_usr,
        ["", "bin", "bin/tool", "lib", "lib/deep", "lib/deep/x"]
    );
    assert!(points.is_empty(), "{points:?}");
}
