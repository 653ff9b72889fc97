//! btrfs beyond one superblock: the subvolumes of each mounted btrfs, and
//! a filesystem spanning several captured devices recorded once, with
//! its other devices as `<member>`s and its data/metadata profiles.

use anyhow::{Context, Result};

use crate::fs::btrfs;
use crate::manifest::{BtrfsMember, Filesystem, FsType, StackRef, Subvolume};

/// Runs a btrfs-progs command (`btrfs subvolume list -a MOUNT`, ...).
pub type Run<'a> = &'a dyn Fn(&[&str]) -> Result<String>;

/// The block device a filesystem found by the probe is on.
fn reference(f: &Filesystem) -> Option<StackRef> {
    match (&f.volume, &f.disk, f.partition) {
        (Some(v), _, _) => Some(v.clone()),
        (None, Some(d), Some(n)) => Some(StackRef::Partition(d.clone(), n)),
        (None, Some(d), None) => Some(StackRef::Disk(d.clone())),
        _ => None,
    }
}

/// Same device, as the probe recorded it and as btrfs-progs prints it.
fn same_device(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Complete the btrfs filesystems of `filesystems` (one entry per device
/// blkid found): subvolumes, members and profiles. Returns warnings for
/// what cannot be recorded (such a filesystem is left out).
pub fn complete(filesystems: &mut Vec<Filesystem>, run: Run<'_>) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let mut uuids: Vec<String> = filesystems
        .iter()
        .filter(|f| matches!(f.fs_type, FsType::Btrfs(_)))
        .map(|f| f.uuid.clone())
        .collect();
    uuids.dedup();
    for uuid in uuids {
        let group: Vec<Filesystem> = filesystems
            .iter()
            .filter(|f| f.uuid == uuid && matches!(f.fs_type, FsType::Btrfs(_)))
            .cloned()
            .collect();
        let mount = group
            .iter()
            .find_map(|f| f.mounts.first().map(|m| m.point.clone()));
        let Some(mount) = mount else {
            if group.len() > 1 {
                filesystems.retain(|f| f.uuid != uuid);
                warnings.push(format!(
                    "not captured: the btrfs {uuid} spans {} devices and is not mounted; mount it to capture it",
                    group.len()
                ));
            }
            continue;
        };
        let devices = btrfs::parse_devices(&run(&["filesystem", "show", "--raw", &mount])?)?;
        let mut own = group[0].clone();
        let mut members = Vec::new();
        let mut missing = Vec::new();
        if devices.len() > 1 {
            for (devid, path) in &devices {
                match group.iter().find(|f| same_device(&f.device, path)) {
                    Some(f) if *devid == 1 => {
                        let mounts: Vec<_> = group.iter().flat_map(|g| g.mounts.clone()).collect();
                        own = f.clone();
                        own.mounts = mounts;
                        own.mounts.dedup_by(|a, b| a.point == b.point);
                    }
                    Some(f) => members.push(BtrfsMember {
                        device: reference(f).context("a btrfs member without a device")?,
                        devid: *devid,
                    }),
                    None => missing.push(path.clone()),
                }
            }
            if !missing.is_empty() || !devices.iter().any(|(id, _)| *id == 1) {
                filesystems.retain(|f| f.uuid != uuid);
                warnings.push(format!(
                    "not captured: the btrfs {uuid} mounted at {mount} also spans {}, which {} not captured",
                    missing.join(", "),
                    if missing.len() == 1 { "is" } else { "are" }
                ));
                continue;
            }
            let (data, metadata) =
                btrfs::parse_profiles(&run(&["filesystem", "df", "--raw", &mount])?);
            if let FsType::Btrfs(Some(p)) = &mut own.fs_type {
                p.data_profile = data;
                p.metadata_profile = metadata;
            }
        }
        let default = btrfs::parse_get_default(&run(&["subvolume", "get-default", &mount])?)?;
        own.subvolumes = btrfs::parse_subvolumes(
            &run(&["subvolume", "list", "-a", &mount])?,
            &run(&["subvolume", "list", "-a", "-r", &mount])?,
            default,
        )
        .with_context(|| format!("cannot read the subvolumes of the btrfs at {mount}"))?
        .into_iter()
        .map(|s| Subvolume {
            id: s.id,
            path: s.path,
            read_only: s.read_only,
            default: s.default,
            data: None,
        })
        .collect();
        own.members = members;
        // The entry of the filesystem's first device stands for all of them.
        let at = filesystems
            .iter()
            .position(|f| f.uuid == uuid)
            .unwrap_or(filesystems.len());
        filesystems.retain(|f| f.uuid != uuid);
        filesystems.insert(at.min(filesystems.len()), own);
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{BtrfsParams, Mount};

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/stack")
                .join(name),
        )
        .unwrap()
    }

    fn fake_run(args: &[&str]) -> Result<String> {
        Ok(match args[..args.len() - 1] {
            ["filesystem", "show", "--raw"] => fixture("btrfs-show.txt"),
            ["filesystem", "df", "--raw"] => fixture("btrfs-df.txt"),
            ["subvolume", "get-default"] => fixture("btrfs-get-default.txt"),
            ["subvolume", "list", "-a"] => fixture("btrfs-list-a.txt"),
            ["subvolume", "list", "-a", "-r"] => fixture("btrfs-list-a-r.txt"),
            _ => panic!("unexpected btrfs {args:?}"),
        })
    }

    fn entry(device: &str, disk: &str, mounted: bool) -> Filesystem {
        Filesystem {
            device: device.into(),
            disk: Some(disk.into()),
            partition: None,
            volume: None,
            fs_type: FsType::Btrfs(Some(BtrfsParams {
                node_size: 16384,
                sector_size: 4096,
                data_profile: None,
                metadata_profile: None,
            })),
            uuid: "9a8b7c6d-3333-4444-8555-666677778888".into(),
            label: Some("data".into()),
            mounts: if mounted {
                vec![Mount {
                    point: "/srv/data".into(),
                    options: "rw".into(),
                    root: "/@data".into(),
                }]
            } else {
                vec![]
            },
            data: None,
            members: vec![],
            subvolumes: vec![],
        }
    }

    #[test]
    fn two_devices_become_one_filesystem_with_a_member() {
        let mut fss = vec![
            entry("/dev/loop3", "loop3", false),
            entry("/dev/loop2", "loop2", true),
        ];
        let warnings = complete(&mut fss, &fake_run).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(fss.len(), 1);
        let f = &fss[0];
        assert_eq!(f.device, "/dev/loop2");
        assert_eq!(f.mounts.len(), 1);
        assert_eq!(
            f.members,
            [BtrfsMember {
                device: StackRef::Disk("loop3".into()),
                devid: 2
            }]
        );
        let p = f.fs_type.btrfs().unwrap();
        assert_eq!(
            (p.data_profile.as_deref(), p.metadata_profile.as_deref()),
            (Some("raid1"), Some("raid1"))
        );
        assert_eq!(f.subvolumes.len(), 4);
        assert!(f.subvolumes[0].default && f.subvolumes[2].read_only);
    }

    #[test]
    fn a_member_on_an_uncaptured_disk_leaves_the_filesystem_out() {
        let mut fss = vec![entry("/dev/loop2", "loop2", true)];
        let warnings = complete(&mut fss, &fake_run).unwrap();
        assert!(fss.is_empty());
        assert!(
            warnings[0].contains("also spans /dev/loop3, which is not captured"),
            "{warnings:?}"
        );
    }
}
