//! The two recipes of the recovery image cannot drift: `scripts/build-image`
//! takes Debian's kernel and keeps the modules of `image/modules`; the
//! Buildroot tree (`buildroot/`) compiles a kernel from
//! `board/rewind/linux.fragment`. `board/rewind/kernel-modules.map` says,
//! entry by entry of image/modules, which CONFIG_ symbols build those
//! modules; these tests hold the three files together, and check that
//! the defconfig points at files of the tree. No network, no Buildroot
//! checkout: plain file reading.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Lines of a recipe file with `#` comments and blank lines dropped.
fn settings(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// One entry of kernel-modules.map: the symbols that must be built, and
/// those left out on purpose (`!CONFIG_X`).
#[derive(Default)]
struct Entry {
    wanted: Vec<String>,
    left_out: Vec<String>,
}

fn modules_map() -> BTreeMap<String, Entry> {
    let mut map = BTreeMap::new();
    for line in settings(&read("buildroot/board/rewind/kernel-modules.map")) {
        let (entry, symbols) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("kernel-modules.map: `{line}` is not `ENTRY: CONFIG_...`"));
        let mut e = Entry::default();
        for s in symbols.split_whitespace() {
            match s.strip_prefix('!') {
                Some(out) => e.left_out.push(out.to_string()),
                None => e.wanted.push(s.to_string()),
            }
        }
        for s in e.wanted.iter().chain(&e.left_out) {
            assert!(
                is_symbol(s),
                "kernel-modules.map: `{s}` (entry {entry}) is not a CONFIG_ symbol"
            );
        }
        assert!(
            !e.wanted.is_empty(),
            "kernel-modules.map: {entry} names no symbol"
        );
        assert!(
            map.insert(entry.to_string(), e).is_none(),
            "kernel-modules.map: {entry} twice"
        );
    }
    map
}

fn is_symbol(s: &str) -> bool {
    s.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// The fragment's settings: symbol → value (`y`, `m`, `n` for "is not set").
fn fragment() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in read("buildroot/board/rewind/linux.fragment").lines() {
        let line = line.trim();
        let (symbol, value) = if let Some(rest) = line.strip_prefix("# ") {
            match rest.strip_suffix(" is not set") {
                Some(symbol) => (symbol, "n"),
                None => continue,
            }
        } else if line.is_empty() || line.starts_with('#') {
            continue;
        } else {
            line.split_once('=')
                .unwrap_or_else(|| panic!("linux.fragment: `{line}` is not CONFIG_X=VALUE"))
        };
        assert!(
            is_symbol(symbol),
            "linux.fragment: `{symbol}` is not a CONFIG_ symbol"
        );
        assert!(!value.is_empty(), "linux.fragment: {symbol} has no value");
        assert!(
            out.insert(symbol.to_string(), value.to_string()).is_none(),
            "linux.fragment: {symbol} is set twice"
        );
    }
    out
}

const REGENERATE: &str = "buildroot/README.md, section \"When image/modules changes\", says how to update kernel-modules.map and linux.fragment";

#[test]
fn every_entry_of_image_modules_is_in_the_map_and_nothing_else() {
    let entries: BTreeSet<String> = settings(&read("image/modules")).into_iter().collect();
    let map = modules_map();
    let unmapped: Vec<&String> = entries.iter().filter(|e| !map.contains_key(*e)).collect();
    assert!(
        unmapped.is_empty(),
        "image/modules entries without their kernel symbols in buildroot/board/rewind/kernel-modules.map: {unmapped:?}\n{REGENERATE}"
    );
    let stale: Vec<&String> = map.keys().filter(|e| !entries.contains(*e)).collect();
    assert!(
        stale.is_empty(),
        "kernel-modules.map has entries image/modules no longer lists: {stale:?}\n{REGENERATE}"
    );
}

#[test]
fn every_module_of_image_modules_is_built_by_the_fragment() {
    let fragment = fragment();
    let mut missing = Vec::new();
    let mut built_anyway = Vec::new();
    for (entry, e) in modules_map() {
        for s in &e.wanted {
            match fragment.get(s).map(String::as_str) {
                Some("m") | Some("y") => {}
                other => missing.push(format!("{s} ({entry}): {}", other.unwrap_or("absent"))),
            }
        }
        for s in &e.left_out {
            if matches!(fragment.get(s).map(String::as_str), Some("m") | Some("y")) {
                built_anyway.push(format!("{s} ({entry})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "image/modules modules whose symbol linux.fragment does not set to m or y:\n  {}\n{REGENERATE}",
        missing.join("\n  ")
    );
    assert!(
        built_anyway.is_empty(),
        "symbols kernel-modules.map leaves out (!) but linux.fragment builds: {built_anyway:?}"
    );
}

#[test]
fn the_fragment_keeps_what_the_image_needs_to_boot() {
    let fragment = fragment();
    // The initrd is a zstd cpio whose /init (rewind) mounts devtmpfs and
    // loads modules; the ISO boots the kernel through GRUB on UEFI too.
    for (symbol, value) in [
        ("CONFIG_MODULES", "y"),
        ("CONFIG_BLK_DEV_INITRD", "y"),
        ("CONFIG_RD_ZSTD", "y"),
        ("CONFIG_DEVTMPFS", "y"),
        ("CONFIG_EFI_STUB", "y"),
        ("CONFIG_SERIAL_8250_CONSOLE", "y"),
    ] {
        assert_eq!(
            fragment.get(symbol).map(String::as_str),
            Some(value),
            "linux.fragment: {symbol}"
        );
    }
}

/// The defconfig's settings, `$(BR2_EXTERNAL_REWIND_PATH)` as is.
fn defconfig() -> BTreeMap<String, String> {
    settings(&read("buildroot/configs/rewind_x86_64_defconfig"))
        .into_iter()
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("defconfig: `{l}`"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

#[test]
fn the_defconfig_points_at_files_of_the_tree() {
    let desc = read("buildroot/external.desc");
    assert!(
        desc.lines().any(|l| l == "name: REWIND"),
        "external.desc names the tree REWIND"
    );
    let tree = root().join("buildroot");
    let mut paths = 0;
    for (key, value) in defconfig() {
        for word in value.split_whitespace() {
            let Some(rel) = word.strip_prefix("$(BR2_EXTERNAL_REWIND_PATH)/") else {
                continue;
            };
            let path = tree.join(rel);
            assert!(path.exists(), "{key}: {} does not exist", path.display());
            paths += 1;
            if key.ends_with("_SCRIPT") {
                assert_executable(&path);
            }
        }
    }
    assert!(
        paths >= 4,
        "the defconfig names the fragment, the patch dir and both scripts"
    );
}

fn assert_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "{} is not executable", path.display());
}

#[test]
fn the_defconfig_builds_rewind_static_with_the_tools_of_the_image() {
    let config = defconfig();
    for key in [
        "BR2_PACKAGE_REWIND",
        "BR2_TOOLCHAIN_BUILDROOT_MUSL",
        "BR2_LINUX_KERNEL",
        "BR2_TARGET_ROOTFS_CPIO_ZSTD",
        "BR2_TARGET_GRUB2_I386_PC",
        "BR2_TARGET_GRUB2_X86_64_EFI",
        // The programs of image/tools (post-build.sh fails on any missing)
        // and the block-device stacks.
        "BR2_PACKAGE_UTIL_LINUX_BINARIES",
        "BR2_PACKAGE_GPTFDISK_SGDISK",
        "BR2_PACKAGE_E2FSPROGS",
        "BR2_PACKAGE_XFSPROGS",
        "BR2_PACKAGE_DOSFSTOOLS_MKFS_FAT",
        "BR2_PACKAGE_BTRFS_PROGS",
        "BR2_PACKAGE_LVM2",
        "BR2_PACKAGE_MDADM",
        "BR2_PACKAGE_CRYPTSETUP",
    ] {
        assert_eq!(
            config.get(key).map(String::as_str),
            Some("y"),
            "defconfig: {key}=y"
        );
    }
    let mk = read("buildroot/package/rewind/rewind.mk");
    assert!(
        mk.contains("$(eval $(cargo-package))"),
        "rewind.mk uses the cargo infrastructure"
    );
    assert!(
        mk.contains("+crt-static"),
        "rewind.mk links rewind statically"
    );
}
