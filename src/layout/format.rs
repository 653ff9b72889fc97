//! Formatting, the executor side: run the mkfs commands the plan lists
//! (each filesystem kind's module in [`crate::fs`] builds them), create
//! btrfs subvolumes, and check that what mkfs made matches the capture.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd;
use crate::manifest::Filesystem;

/// Where it was before the kinds had their own modules.
pub use crate::fs::Tools;

/// Run one command of the plan through the command runner.
pub fn run_argv(argv: &[String]) -> Result<String> {
    let (program, args) = argv.split_first().context("empty command")?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd::run(program, &args)
}

/// Create btrfs subvolumes (paths inside the filesystem, `/@home`) on the
/// freshly made filesystem on `device`, through a temporary mount of its
/// top level: those the manifest lists with their ids (schema 2) with the
/// same ids and default subvolume (fs::btrfs::recreate_subvolumes);
/// otherwise those the mounts name, parents before children.
pub fn create_subvolumes(device: &str, subvolumes: &[String], captured: &Filesystem) -> Result<()> {
    let listed = listed(captured);
    with_top_level(device, |top| {
        if !listed.is_empty() {
            for n in crate::fs::btrfs::recreate_subvolumes(
                top,
                &listed,
                &mut crate::fs::btrfs::run_btrfs,
            )? {
                println!("  warning: {n}");
            }
            return Ok(());
        }
        let mut sorted: Vec<&String> = subvolumes.iter().collect();
        sorted.sort_by_key(|s| super::plan::order_key(s));
        sorted.iter().try_for_each(|s| -> Result<()> {
            let path = top.join(s.trim_start_matches('/'));
            if path.exists() {
                return Ok(()); // created as the parent of an earlier one
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            let p = path.to_str().context("subvolume path is not UTF-8")?;
            cmd::run("btrfs", &["subvolume", "create", p]).map(drop)
        })
    })
}

/// Make the captured read-only subvolumes of the btrfs on `device`
/// read-only again, once the restore has written into them.
pub fn seal_subvolumes(device: &str, captured: &Filesystem) -> Result<()> {
    let listed = listed(captured);
    if !listed.iter().any(|s| s.read_only) {
        return Ok(());
    }
    with_top_level(device, |top| {
        crate::fs::btrfs::seal_subvolumes(top, &listed, &mut crate::fs::btrfs::run_btrfs)
    })
}

fn listed(captured: &Filesystem) -> Vec<crate::fs::btrfs::ListedSubvolume> {
    captured
        .subvolumes
        .iter()
        .map(|s| crate::fs::btrfs::ListedSubvolume {
            id: s.id,
            path: s.path.clone(),
            read_only: s.read_only,
            default: s.default,
        })
        .collect()
}

/// `f` with the top level (subvolid 5) of the btrfs on `device` mounted.
fn with_top_level(device: &str, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = device.trim_start_matches("/dev/").replace('/', "-");
    let top = std::env::temp_dir().join(format!("rewind-btrfs-top-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&top).with_context(|| format!("cannot create {}", top.display()))?;
    super::mount::mount_one(device, &top, "btrfs", "subvolid=5")
        .with_context(|| format!("cannot mount the top level of {device}"))?;
    let result = f(&top);
    let unmounted = super::mount::unmount_one(&top);
    let _ = std::fs::remove_dir(&top);
    result?;
    unmounted
}

/// Compare what mkfs made on `device` with the captured parameters; every
/// difference is returned as a warning (the filesystem is usable, but not
/// the same). A grown filesystem's block count is expected to differ.
pub fn verify(fs: &Filesystem, device: &str, grown: bool) -> Result<Vec<String>> {
    let made = fs
        .fs_type
        .read_params(Path::new(device))
        .with_context(|| format!("cannot read back the {} made on {device}", fs.fs_type))?;
    Ok(fs
        .fs_type
        .differences(&made, grown)
        .into_iter()
        .map(|d| {
            format!(
                "{} on {device} differs from the capture: {} {} was made as {}",
                fs.fs_type, d.what, d.want, d.got
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FsType, MkfsTarget};
    use crate::manifest::from_xml;

    /// Whether `tool` is on PATH (non-root users on Debian lack /usr/sbin).
    fn have(tool: &str) -> bool {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            eprintln!("note: {tool} not on PATH, skipping");
        }
        found
    }

    /// Make a filesystem on an image file with `make`, capture it as the
    /// probe does, remake it on a second image with the planned commands,
    /// and check that the parameters and blkid's view are the same.
    fn roundtrip(fs_type: &str, make: &[&str], mib: u64) {
        let tools: Vec<&str> = vec![make[0], "blkid"];
        if !tools.iter().all(|t| have(t)) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = |name: &str| {
            let p = dir.path().join(name);
            std::fs::File::create(&p)
                .unwrap()
                .set_len(mib << 20)
                .unwrap();
            p.display().to_string()
        };
        let (a, b) = (image("a.img"), image("b.img"));
        let mut argv: Vec<String> = make.iter().map(|s| s.to_string()).collect();
        argv.push(a.clone());
        run_argv(&argv).unwrap();

        let tags = crate::probe::fs::blkid(std::path::Path::new(&a)).unwrap();
        let m = from_xml(&super::super::plan::tests::manifest_xml(
            r#"<disk name="sda" path="/dev/sda" size="1073741824" logical-sector-size="512" physical-sector-size="512"/>"#,
            &format!(
                r#"<filesystem device="/dev/sda" disk="sda" type="{fs_type}" uuid="{}"/>"#,
                tags["UUID"]
            ),
        ))
        .unwrap();
        let mut fs = m.filesystems[0].clone();
        fs.label = tags.get("LABEL").cloned();
        fs.fs_type = FsType::read(fs_type, std::path::Path::new(&a))
            .unwrap()
            .unwrap_or_else(|| panic!("no parameters for {fs_type}"));
        let mut notes = vec![];
        let tools = Tools::detect();
        let target = MkfsTarget {
            device: &b,
            uuid: &fs.uuid,
            label: fs.label.as_deref(),
            grow: false,
            tools: &tools,
        };
        for c in fs.fs_type.mkfs_commands(&target, &mut notes) {
            run_argv(&c).unwrap();
        }
        assert_eq!(
            verify(&fs, &b, false).unwrap(),
            Vec::<String>::new(),
            "{make:?}"
        );
        let mut want = tags.clone();
        let mut got = crate::probe::fs::blkid(std::path::Path::new(&b)).unwrap();
        for m in [&mut want, &mut got] {
            m.remove("DEVNAME");
            m.remove("UUID_SUB"); // btrfs: not settable
        }
        assert_eq!(got, want, "{make:?}");

        // A difference is reported, field by field.
        if let FsType::Ext2(Some(p)) | FsType::Ext3(Some(p)) | FsType::Ext4(Some(p)) =
            &mut fs.fs_type
        {
            p.inode_count += 8;
            let diffs = verify(&fs, &b, false).unwrap();
            assert_eq!(diffs.len(), 1, "{diffs:?}");
            assert!(diffs[0].contains("inode count"), "{diffs:?}");
        }
    }

    #[test]
    fn ext_roundtrip_on_images() {
        roundtrip(
            "ext4",
            &[
                "mkfs.ext4",
                "-q",
                "-F",
                "-b",
                "4096",
                "-L",
                "root",
                "-O",
                "^metadata_csum",
            ],
            64,
        );
        roundtrip(
            "ext4",
            &[
                "mkfs.ext4",
                "-q",
                "-F",
                "-I",
                "128",
                "-N",
                "5000",
                "-m",
                "1",
            ],
            48,
        );
        roundtrip("ext3", &["mkfs.ext3", "-q", "-F", "-L", "old"], 32);
        roundtrip("ext2", &["mkfs.ext2", "-q", "-F", "-b", "2048"], 32);
    }

    #[test]
    fn xfs_roundtrip_on_images() {
        roundtrip(
            "xfs",
            &[
                "mkfs.xfs",
                "-q",
                "-f",
                "-L",
                "data",
                "-i",
                "size=1024",
                "-d",
                "agcount=2",
            ],
            320,
        );
        roundtrip(
            "xfs",
            &[
                "mkfs.xfs",
                "-q",
                "-f",
                "-m",
                "crc=0",
                "-b",
                "size=1024",
                "-n",
                "ftype=0",
            ],
            320,
        );
    }

    #[test]
    fn vfat_and_btrfs_roundtrip_on_images() {
        roundtrip(
            "vfat",
            &["mkfs.fat", "-F", "32", "-s", "1", "-n", "ESP"],
            64,
        );
        roundtrip("vfat", &["mkfs.fat", "-F", "16", "-r", "1024"], 32);
        roundtrip("vfat", &["mkfs.fat", "-F", "12", "-f", "1"], 4);
        roundtrip(
            "btrfs",
            &["mkfs.btrfs", "-q", "-f", "-n", "32768", "-L", "home"],
            128,
        );
    }
}
