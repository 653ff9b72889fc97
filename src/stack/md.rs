//! MD RAID: `mdadm --detail --export` and the array's sysfs `md/`
//! directory into an `<md>` element; `mdadm --create` from one.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use super::{Argv, argv};
use crate::manifest::{MdArray, MdMember, StackRef};

/// `mdadm --detail --export DEV`, as key/value pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct MdExport {
    pub level: String,
    pub raid_devices: u32,
    /// `MD_METADATA`; for an array inside a firmware container, the
    /// container (`MD_CONTAINER`) says what it is and this is `external`.
    pub metadata: String,
    pub uuid: String,
    /// `MD_DEVNAME`: the name under /dev/md/, when the array has one.
    pub devname: Option<String>,
    /// `MD_NAME`: the superblock's name (`host:name`).
    pub name: Option<String>,
    pub container: Option<String>,
    /// Member device paths and their roles (a slot number or `spare`).
    pub members: Vec<(String, String)>,
}

pub fn parse_export(text: &str) -> Result<MdExport> {
    let mut kv = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once('=')
            .with_context(|| format!("mdadm --export line without '=': {line:?}"))?;
        kv.insert(k.to_string(), v.to_string());
    }
    let get = |k: &str| kv.get(k).cloned();
    let need = |k: &str| get(k).with_context(|| format!("mdadm --detail --export has no {k}"));
    // Members: MD_DEVICE_<id>_ROLE and MD_DEVICE_<id>_DEV share their <id>.
    let mut members = Vec::new();
    for (k, role) in &kv {
        if let Some(id) = k
            .strip_prefix("MD_DEVICE_")
            .and_then(|r| r.strip_suffix("_ROLE"))
        {
            let dev = get(&format!("MD_DEVICE_{id}_DEV"))
                .with_context(|| format!("mdadm --export names no device for member {id}"))?;
            members.push((dev, role.clone()));
        }
    }
    members.sort_by_key(|(_, role)| (role.parse::<u32>().unwrap_or(u32::MAX), role.clone()));
    let container = get("MD_CONTAINER");
    let metadata = match (get("MD_METADATA"), &container) {
        (Some(m), _) => m,
        (None, Some(_)) => "external".to_string(),
        (None, None) => bail!("mdadm --detail --export has no MD_METADATA"),
    };
    Ok(MdExport {
        level: need("MD_LEVEL")?,
        raid_devices: need("MD_DEVICES")?
            .parse()
            .context("MD_DEVICES is not a number")?,
        metadata,
        uuid: need("MD_UUID")?,
        devname: get("MD_DEVNAME"),
        name: get("MD_NAME"),
        container,
        members,
    })
}

/// What sysfs `md/` adds: geometry mdadm's export leaves out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MdSysfs {
    /// `/sys/block/mdX/size` × 512.
    pub size: u64,
    /// `md/chunk_size`, bytes (0 when the level has none).
    pub chunk_size: u64,
    /// `md/layout`, the kernel's number.
    pub layout: u32,
    /// `md/bitmap/location`: `none`, `+8` (internal), `file`.
    pub bitmap_location: String,
    /// `md/dev-*/offset` of the first member, sectors.
    pub data_offset_sectors: Option<u64>,
}

/// The kernel's layout number as mdadm names it (`mdadm --layout`).
pub fn layout_name(level: &str, layout: u32) -> Option<String> {
    match level {
        "raid5" | "raid6" => {
            let names = [
                "left-asymmetric",
                "right-asymmetric",
                "left-symmetric",
                "right-symmetric",
                "parity-first",
                "parity-last",
            ];
            Some(
                names
                    .get(layout as usize)
                    .map_or_else(|| layout.to_string(), |n| n.to_string()),
            )
        }
        "raid10" => {
            let near = layout & 0xff;
            let far = (layout >> 8) & 0xff;
            let offset = layout & 0x10000 != 0;
            Some(match (near, far, offset) {
                (n, 1, false) if n > 1 => format!("n{n}"),
                (1, f, true) => format!("o{f}"),
                (1, f, false) => format!("f{f}"),
                _ => layout.to_string(),
            })
        }
        _ => None,
    }
}

/// The `<md>` element of an array: `name` is the reference name (the
/// /dev/md/ name, or the kernel name), `device` its path at capture, and
/// `member_ref` maps a member's device path to the block device it is.
pub fn to_element(
    kernel_name: &str,
    device: &str,
    export: &MdExport,
    sys: &MdSysfs,
    member_ref: impl Fn(&str) -> Option<StackRef>,
) -> Result<MdArray> {
    let members = export
        .members
        .iter()
        .map(|(dev, role)| {
            let r = member_ref(dev).with_context(|| {
                format!("{device}: member {dev} is not a captured disk, partition or volume")
            })?;
            Ok(MdMember {
                device: r,
                role: role.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = match &export.container {
        // The container's format decides; validation refuses it by name.
        Some(c) if export.metadata == "external" => format!("external:{c}"),
        _ => export.metadata.clone(),
    };
    Ok(MdArray {
        name: export
            .devname
            .clone()
            .unwrap_or_else(|| kernel_name.to_string()),
        device: device.to_string(),
        array_name: export.name.clone(),
        uuid: export.uuid.clone(),
        level: export.level.clone(),
        metadata,
        raid_devices: export.raid_devices,
        size: sys.size,
        chunk_size: (sys.chunk_size > 0).then_some(sys.chunk_size),
        layout: layout_name(&export.level, sys.layout),
        bitmap: if sys.bitmap_location.starts_with('+') || sys.bitmap_location.starts_with('-') {
            "internal".into()
        } else {
            sys.bitmap_location.clone()
        },
        data_offset: sys.data_offset_sectors.map(|s| s * 512),
        members,
    })
}

/// `mdadm --create` making `array` again with its UUID, name, metadata and
/// geometry on the devices given for its members (in the member order of
/// the element; a slot without a member is `missing`).
pub fn create_command(a: &MdArray, member_paths: &[(String, &MdMember)]) -> Argv {
    let mut cmd = argv(&[
        "mdadm",
        "--create",
        &format!("/dev/md/{}", a.name),
        "--run",
        "--metadata",
        &a.metadata,
        "--level",
        &a.level,
        "--raid-devices",
        &a.raid_devices.to_string(),
        "--uuid",
        &a.uuid,
        "--homehost",
        "<ignore>",
    ]);
    if let Some(n) = &a.array_name {
        cmd.extend(argv(&["--name", n]));
    }
    if let Some(c) = a.chunk_size {
        cmd.push(format!("--chunk={}K", c / 1024));
    }
    if let Some(l) = &a.layout {
        cmd.extend(argv(&["--layout", l]));
    }
    if a.level != "raid0" && a.level != "linear" {
        cmd.extend(argv(&["--bitmap", &a.bitmap]));
    }
    // Metadata 0.90 and 1.0 keep the superblock at the end and the data at
    // offset 0, which mdadm refuses as a --data-offset ("invalid
    // data-offset: 0K"): the offset is only given where it is chosen.
    if let Some(o) = a.data_offset.filter(|&o| o > 0) {
        cmd.push(format!("--data-offset={}K", o / 1024));
    }
    // Component size: exactly the captured array's per-member data, so
    // the array is the captured size even on bigger members.
    if let Some(per_member) = member_data_size(a) {
        cmd.push(format!("--size={}K", per_member / 1024));
    }
    let spares = member_paths
        .iter()
        .filter(|(_, m)| m.slot().is_none())
        .count();
    if spares > 0 {
        cmd.push(format!("--spare-devices={spares}"));
    }
    for slot in 0..a.raid_devices {
        match member_paths.iter().find(|(_, m)| m.slot() == Some(slot)) {
            Some((path, _)) => cmd.push(path.clone()),
            None => cmd.push("missing".into()),
        }
    }
    for (path, _) in member_paths.iter().filter(|(_, m)| m.slot().is_none()) {
        cmd.push(path.clone());
    }
    cmd
}

/// `mdadm --assemble` of `array` from the devices given for its members,
/// only members carrying its UUID, read-only: nothing is written (no
/// resync, no superblock update) until the array was checked. Without
/// `--run`, an array missing a member is not started.
pub fn assemble_command(a: &MdArray, member_paths: &[(String, &MdMember)]) -> Argv {
    let mut cmd = argv(&[
        "mdadm",
        "--assemble",
        &format!("/dev/md/{}", a.name),
        "--readonly",
        "--uuid",
        &a.uuid,
    ]);
    cmd.extend(member_paths.iter().map(|(p, _)| p.clone()));
    cmd
}

/// What the kernel says of an assembled array (`/sys/block/mdX/md/`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MdState {
    /// `md/degraded`: members missing or not in sync.
    pub degraded: u32,
    /// `md/chunk_size`, bytes.
    pub chunk_size: u64,
    /// `md/sync_action`: `idle`, `resync`, `recover`, ...
    pub sync_action: String,
    /// `md/array_state`: `readonly`, `clean`, `active`, `inactive`, ...
    pub array_state: String,
    /// The array's size in bytes (`blockdev --getsize64`).
    pub size: u64,
}

/// Whether an assembled array is `a` on the planned member paths, whole:
/// each difference, described. A degraded array, a member rebuilding or
/// a spare where a member was planned is not the planned array: it is
/// made again, never repaired. (A resync of the regions an unclean stop
/// left dirty, from the bitmap, is what md does for any array after a
/// power cut: it keeps every member in sync and is allowed.)
pub fn open_diffs(
    a: &MdArray,
    member_paths: &[(String, &MdMember)],
    e: &MdExport,
    st: &MdState,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut d = |what: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!("{what} is {got}, the plan's {want}"));
        }
    };
    d("the UUID", a.uuid.clone(), e.uuid.clone());
    d("the level", a.level.clone(), e.level.clone());
    d("the metadata", a.metadata.clone(), e.metadata.clone());
    d(
        "the member count",
        a.raid_devices.to_string(),
        e.raid_devices.to_string(),
    );
    d(
        "the name",
        format!("{:?}", a.array_name),
        format!("{:?}", e.name),
    );
    d(
        "the chunk size",
        a.chunk_size.unwrap_or(0).to_string(),
        st.chunk_size.to_string(),
    );
    d("the size", a.size.to_string(), st.size.to_string());
    let mut want: Vec<(String, String)> = member_paths
        .iter()
        .map(|(p, m)| (p.clone(), m.role.clone()))
        .collect();
    let mut got = e.members.clone();
    want.sort();
    got.sort();
    let show = |v: &[(String, String)]| {
        v.iter()
            .map(|(p, r)| format!("{p} as {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    d("the members", show(&want), show(&got));
    if st.degraded != 0 {
        diffs.push(format!(
            "it is degraded ({} member(s) missing or not in sync)",
            st.degraded
        ));
    }
    if st.sync_action == "recover" || st.sync_action == "reshape" {
        diffs.push(format!("it is in {}", st.sync_action));
    }
    if st.array_state == "inactive" || st.array_state.is_empty() {
        diffs.push("it is not running".into());
    }
    diffs
}

/// The data each member holds for the array's size, when the level
/// makes it computable (mdadm `--size`).
pub fn member_data_size(a: &MdArray) -> Option<u64> {
    let n = u64::from(a.raid_devices);
    match a.level.as_str() {
        "raid1" => Some(a.size),
        "raid4" | "raid5" if n > 1 => Some(a.size / (n - 1)),
        "raid6" if n > 2 => Some(a.size / (n - 2)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/stack")
                .join(name),
        )
        .unwrap()
    }

    fn partition_of(dev: &str) -> Option<StackRef> {
        let name = dev.strip_prefix("/dev/")?;
        let split = name.find(|c: char| c.is_ascii_digit())?;
        Some(StackRef::Partition(
            name[..split].into(),
            name[split..].parse().ok()?,
        ))
    }

    #[test]
    fn export_of_a_mirror_with_a_spare() {
        let e = parse_export(&fixture("md-root.export")).unwrap();
        assert_eq!(e.level, "raid1");
        assert_eq!(e.raid_devices, 2);
        assert_eq!(e.metadata, "1.2");
        assert_eq!(e.uuid, "3b0c9e2a:5d1f4e6b:8a7c2d90:1e3f5a7b");
        assert_eq!(e.devname.as_deref(), Some("root"));
        assert_eq!(e.name.as_deref(), Some("web1:root"));
        assert_eq!(
            e.members,
            [
                ("/dev/vda2".to_string(), "0".to_string()),
                ("/dev/vdb2".to_string(), "1".to_string()),
                ("/dev/vdc2".to_string(), "spare".to_string()),
            ]
        );
        let sys = MdSysfs {
            size: 8_034_189_312,
            chunk_size: 0,
            layout: 0,
            bitmap_location: "+8".into(),
            data_offset_sectors: Some(32768),
        };
        let a = to_element("md127", "/dev/md127", &e, &sys, partition_of).unwrap();
        assert_eq!(a.name, "root");
        assert_eq!(a.bitmap, "internal");
        assert_eq!(a.chunk_size, None);
        assert_eq!(a.layout, None);
        assert_eq!(a.data_offset, Some(16 << 20));
        assert_eq!(a.members[2].device, StackRef::Partition("vdc".into(), 2));
        let paths: Vec<(String, &MdMember)> = a
            .members
            .iter()
            .zip(["/dev/sda2", "/dev/sdb2", "/dev/sdc2"])
            .map(|(m, p)| (p.to_string(), m))
            .collect();
        assert_eq!(
            create_command(&a, &paths).join(" "),
            "mdadm --create /dev/md/root --run --metadata 1.2 --level raid1 --raid-devices 2 \
             --uuid 3b0c9e2a:5d1f4e6b:8a7c2d90:1e3f5a7b --homehost <ignore> --name web1:root \
             --bitmap internal --data-offset=16384K --size=7845888K --spare-devices=1 \
             /dev/sda2 /dev/sdb2 /dev/sdc2"
        );
        // A member that is not a captured device is an error naming both.
        let e = to_element("md127", "/dev/md127", &e, &sys, |_| None).unwrap_err();
        assert!(
            e.to_string().contains("/dev/md127: member /dev/vda2"),
            "{e}"
        );
    }

    #[test]
    fn metadata_1_0_is_made_without_a_data_offset() {
        let e = parse_export(&fixture("md-raid5.export")).unwrap();
        let sys = MdSysfs {
            size: 2 * 1_000_000_000 / 65536 * 65536,
            chunk_size: 512 * 1024,
            layout: 2,
            bitmap_location: "none".into(),
            data_offset_sectors: Some(0),
        };
        let mut a = to_element("md0", "/dev/md0", &e, &sys, partition_of).unwrap();
        a.metadata = "1.0".into();
        let paths: Vec<(String, &MdMember)> = a
            .members
            .iter()
            .map(|m| (format!("/dev/new-{}", m.role), m))
            .collect();
        let cmd = create_command(&a, &paths).join(" ");
        assert!(!cmd.contains("--data-offset"), "{cmd}");
    }

    #[test]
    fn degraded_raid5_is_made_with_a_missing_slot() {
        let e = parse_export(&fixture("md-raid5.export")).unwrap();
        assert_eq!(e.devname, None);
        let sys = MdSysfs {
            size: 2 * 1_000_000_000 / 65536 * 65536,
            chunk_size: 512 * 1024,
            layout: 2,
            bitmap_location: "none".into(),
            data_offset_sectors: Some(264192),
        };
        let a = to_element("md0", "/dev/md0", &e, &sys, partition_of).unwrap();
        assert_eq!(a.name, "md0");
        assert_eq!(a.layout.as_deref(), Some("left-symmetric"));
        assert_eq!(a.chunk_size, Some(512 * 1024));
        let paths: Vec<(String, &MdMember)> = a
            .members
            .iter()
            .map(|m| (format!("/dev/new-{}", m.role), m))
            .collect();
        let cmd = create_command(&a, &paths);
        assert_eq!(
            cmd[cmd.len() - 3..],
            ["/dev/new-0", "missing", "/dev/new-2"]
        );
        assert!(cmd.contains(&"--chunk=512K".to_string()), "{cmd:?}");
        assert!(cmd.contains(&"--bitmap".to_string()), "{cmd:?}");
    }

    #[test]
    fn firmware_raid_is_recorded_as_such() {
        let e = parse_export(&fixture("md-imsm-volume.export")).unwrap();
        let sys = MdSysfs {
            size: 1 << 30,
            bitmap_location: "none".into(),
            ..MdSysfs::default()
        };
        let a = to_element("md126", "/dev/md126", &e, &sys, |d| {
            Some(StackRef::Disk(d.trim_start_matches("/dev/").into()))
        })
        .unwrap();
        assert_eq!(a.metadata, "external:/dev/md/imsm0");
        let c = parse_export(&fixture("md-imsm-container.export")).unwrap();
        assert_eq!(
            (c.level.as_str(), c.metadata.as_str()),
            ("container", "imsm")
        );
    }

    #[test]
    fn raid10_layouts() {
        assert_eq!(layout_name("raid10", 0x102).as_deref(), Some("n2"));
        assert_eq!(layout_name("raid10", 0x201).as_deref(), Some("f2"));
        assert_eq!(layout_name("raid10", 0x10201).as_deref(), Some("o2"));
        assert_eq!(layout_name("raid1", 0), None);
    }
}
