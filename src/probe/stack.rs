//! The storage stack of the running system: MD arrays, LUKS mappings and
//! LVM volume groups built on the captured disks, found from sysfs
//! (`/sys/class/block/*/{md,dm,slaves}`) and read with the tools
//! (`mdadm --detail --export`, the LUKS header itself, `vgs/pvs/lvs
//! --reportformat json`, `vgcfgbackup`) through `crate::stack`'s parsers.
//!
//! Layers are found bottom-up until nothing new appears, so any order
//! works (LVM on LUKS on MD, LUKS on an LV). A layer on something that is
//! not captured is left out with a warning, never half-recorded; the
//! tools are behind [`StackTools`] so that the discovery is tested on a
//! fake sysfs with fixture outputs.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::manifest::{Luks, MdArray, StackRef, VolumeGroup};
use crate::stack::{luks, lvm, md};

/// What the stack discovery runs and reads besides sysfs.
pub trait StackTools {
    /// A tool's standard output (`mdadm`, `vgs`, `pvs`, `lvs`).
    fn run(&self, argv: &[String]) -> Result<String>;
    /// The `vgcfgbackup` text of a volume group.
    fn vgcfgbackup(&self, vg: &str) -> Result<String>;
    /// The first `len` bytes of a block device (fewer if it is smaller).
    fn read_head(&self, dev: &Path, len: usize) -> Result<Vec<u8>>;
    /// Whether any PV exists at all (so that LVM's tools run only then).
    fn has_lvm(&self) -> bool;
}

/// The real tools, through `crate::cmd`.
pub struct SystemTools;

impl StackTools for SystemTools {
    fn run(&self, argv: &[String]) -> Result<String> {
        let (program, args) = argv.split_first().context("empty command line")?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::cmd::run(program, &args)
    }

    fn vgcfgbackup(&self, vg: &str) -> Result<String> {
        // A private directory (vgcfgbackup writes beside the file, then renames).
        let dir = std::env::temp_dir().join(format!("rewind-vgcfgbackup-{}", std::process::id()));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
        }
        let file = dir.join(format!("{vg}.vg"));
        let file_str = file.to_string_lossy().into_owned();
        let text = crate::cmd::run("vgcfgbackup", &["-f", &file_str, vg]).and_then(|_| {
            std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read vgcfgbackup's {}", file.display()))
        });
        let _ = std::fs::remove_dir_all(&dir);
        text
    }

    fn read_head(&self, dev: &Path, len: usize) -> Result<Vec<u8>> {
        use std::io::Read;
        let mut f =
            std::fs::File::open(dev).with_context(|| format!("cannot open {}", dev.display()))?;
        let mut buf = Vec::with_capacity(len);
        f.by_ref()
            .take(len as u64)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {}", dev.display()))?;
        Ok(buf)
    }

    fn has_lvm(&self) -> bool {
        crate::cmd::run("lvm", &["version"]).is_ok()
    }
}

/// A block device of the stack that may hold a filesystem or swap.
#[derive(Debug, Clone, PartialEq)]
pub struct StackVolume {
    pub reference: StackRef,
    /// The path recorded as the filesystem's device: `/dev/md127`,
    /// `/dev/mapper/cryptroot`, `/dev/mapper/vg0-root` (what mountinfo shows).
    pub path: PathBuf,
    /// The kernel's node to read it through (`/dev/dm-3`).
    pub node: PathBuf,
    pub dev: (u32, u32),
}

#[derive(Debug, Default)]
pub struct StackFound {
    pub md_arrays: Vec<MdArray>,
    pub luks: Vec<Luks>,
    pub volume_groups: Vec<VolumeGroup>,
    /// The devices the stack makes and nothing else in it uses: where
    /// filesystems and swap may be.
    pub volumes: Vec<StackVolume>,
    /// Devices the stack is built on (members, PVs, LUKS backing devices):
    /// no filesystem is looked for on them.
    pub consumed: HashSet<(u32, u32)>,
    pub warnings: Vec<String>,
}

/// A sysfs block device: kernel name, major:minor, size, what it is built on.
#[derive(Debug, Clone)]
struct SysBlock {
    name: String,
    dev: (u32, u32),
    size: u64,
    slaves: Vec<String>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Md,
    /// A dm device: its `dm/name` and `dm/uuid`.
    Dm {
        name: String,
        uuid: String,
    },
    Other,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn sys_blocks(sys: &Path) -> Result<Vec<SysBlock>> {
    let dir = sys.join("class/block");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = entry.path();
        let Some(dev) = read_trim(&base.join("dev")).and_then(|d| {
            let (a, b) = d.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }) else {
            continue;
        };
        let size = read_trim(&base.join("size"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            * 512;
        let mut slaves: Vec<String> = std::fs::read_dir(base.join("slaves"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        slaves.sort();
        let kind = if base.join("md").is_dir() {
            Kind::Md
        } else if base.join("dm").is_dir() {
            Kind::Dm {
                name: read_trim(&base.join("dm/name")).unwrap_or_default(),
                uuid: read_trim(&base.join("dm/uuid")).unwrap_or_default(),
            }
        } else {
            Kind::Other
        };
        out.push(SysBlock {
            name,
            dev,
            size,
            slaves,
            kind,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Find the stack on the captured disks. `base` holds each captured disk
/// and partition: its kernel name, reference and major:minor.
pub fn probe_stack(
    sys: &Path,
    base: &[(String, StackRef, (u32, u32))],
    tools: &dyn StackTools,
) -> Result<StackFound> {
    let blocks = sys_blocks(sys)?;
    // Kernel name → reference, for every block device recorded so far.
    let mut known: BTreeMap<String, StackRef> = base
        .iter()
        .map(|(n, r, _)| (n.clone(), r.clone()))
        .collect();
    let mut found = StackFound::default();
    let mut made: Vec<(String, StackRef)> = Vec::new();
    let mut done: HashSet<String> = HashSet::new();
    let dev_of = |name: &str| -> Option<(u32, u32)> {
        blocks
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.dev)
            .or_else(|| base.iter().find(|(n, _, _)| n == name).map(|(_, _, d)| *d))
    };
    // A device path as tools print it, to its kernel name.
    let kernel_name = |path: &str| -> Option<String> {
        if let Some(dm) = path.strip_prefix("/dev/mapper/") {
            return blocks
                .iter()
                .find(|b| matches!(&b.kind, Kind::Dm { name, .. } if name == dm))
                .map(|b| b.name.clone());
        }
        let direct = path.strip_prefix("/dev/")?;
        if !direct.contains('/') {
            return Some(direct.to_string());
        }
        std::fs::canonicalize(path)
            .ok()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    };
    let mut lvm_reports: Option<(Vec<lvm::VgRow>, Vec<lvm::PvRow>, Vec<lvm::LvRow>)> = None;
    let lvm_present = tools.has_lvm();

    loop {
        let mut progress = false;
        for b in &blocks {
            if done.contains(&b.name) || known.contains_key(&b.name) {
                continue;
            }
            let on_known = !b.slaves.is_empty() && b.slaves.iter().all(|s| known.contains_key(s));
            if !on_known {
                continue;
            }
            match &b.kind {
                Kind::Md => {
                    done.insert(b.name.clone());
                    let device = format!("/dev/{}", b.name);
                    let text = tools.run(&crate::stack::argv(&[
                        "mdadm", "--detail", "--export", &device,
                    ]))?;
                    let export = md::parse_export(&text)
                        .with_context(|| format!("cannot read mdadm's report of {device}"))?;
                    let firmware = export.container.is_some()
                        || export.level == "container"
                        || !crate::manifest::MD_METADATA.contains(&export.metadata.as_str());
                    if firmware {
                        anyhow::bail!(
                            "{device} is firmware RAID ({}{}) on {}: rewind cannot recreate it and will not half-recreate it; switch the controller to AHCI and use Linux software RAID, or leave these disks out of the capture with --disk",
                            export.metadata,
                            export
                                .container
                                .as_deref()
                                .map(|c| format!(" in container {c}"))
                                .unwrap_or_default(),
                            b.slaves.join(", ")
                        );
                    }
                    let base_dir = sys.join("class/block").join(&b.name).join("md");
                    let sysfs = md::MdSysfs {
                        size: b.size,
                        chunk_size: read_trim(&base_dir.join("chunk_size"))
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                        layout: read_trim(&base_dir.join("layout"))
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                        bitmap_location: read_trim(&base_dir.join("bitmap/location"))
                            .unwrap_or_else(|| "none".into()),
                        data_offset_sectors: b.slaves.first().and_then(|s| {
                            read_trim(&base_dir.join(format!("dev-{s}/offset")))?
                                .parse()
                                .ok()
                        }),
                    };
                    let array = md::to_element(&b.name, &device, &export, &sysfs, |p| {
                        kernel_name(p).and_then(|n| known.get(&n).cloned())
                    })?;
                    let r = StackRef::Md(array.name.clone());
                    for s in &b.slaves {
                        found.consumed.extend(dev_of(s));
                    }
                    found.md_arrays.push(array);
                    made.push((b.name.clone(), r.clone()));
                    known.insert(b.name.clone(), r);
                    progress = true;
                }
                Kind::Dm { name, uuid } if uuid.starts_with("CRYPT-LUKS") => {
                    done.insert(b.name.clone());
                    let [slave] = b.slaves.as_slice() else {
                        found.warnings.push(format!(
                            "not captured: LUKS mapping {name} sits on {} devices",
                            b.slaves.len()
                        ));
                        continue;
                    };
                    let backing = Path::new("/dev").join(slave);
                    let head = tools.read_head(&backing, luks::MAX_HEADER_READ)?;
                    let header = luks::parse_header(&head).with_context(|| {
                        format!("cannot read the LUKS header of {}", backing.display())
                    })?;
                    let on = known[slave].clone();
                    let element = luks::to_element(name, on, b.size, &header)?;
                    found.consumed.extend(dev_of(slave));
                    found.luks.push(element);
                    let r = StackRef::Luks(name.clone());
                    made.push((b.name.clone(), r.clone()));
                    known.insert(b.name.clone(), r);
                    progress = true;
                }
                Kind::Dm { uuid, .. } if uuid.starts_with("LVM-") => {
                    // Its whole group is read at once, below.
                }
                Kind::Dm { name, uuid } => {
                    done.insert(b.name.clone());
                    let what = uuid.split('-').next().unwrap_or("device-mapper");
                    found.warnings.push(format!(
                        "not captured: /dev/mapper/{name} is a {what} device on captured disks, which rewind does not recreate"
                    ));
                }
                Kind::Other => {}
            }
        }
        // LVM: a group whose PVs are all known becomes known, with its LVs.
        if lvm_present {
            if lvm_reports.is_none() {
                let run = |t: &str| tools.run(&lvm::report_command(t));
                let reports = (|| -> Result<_> {
                    Ok((
                        lvm::parse_vgs(&run("vgs")?)?,
                        lvm::parse_pvs(&run("pvs")?)?,
                        lvm::parse_lvs(&run("lvs")?)?,
                    ))
                })();
                lvm_reports = Some(match reports {
                    Ok(r) => r,
                    Err(e) => {
                        found.warnings.push(format!(
                            "not captured: LVM's reports failed ({e:#}); no LVM volume group is recorded"
                        ));
                        (Vec::new(), Vec::new(), Vec::new())
                    }
                });
            }
            if let Some((vgs, pvs, lvs)) = &lvm_reports {
                for vg in vgs {
                    if found.volume_groups.iter().any(|g| g.name == vg.vg_name) {
                        continue;
                    }
                    let members: Vec<&lvm::PvRow> =
                        pvs.iter().filter(|p| p.vg_name == vg.vg_name).collect();
                    let pv_names: Vec<Option<String>> =
                        members.iter().map(|p| kernel_name(&p.pv_name)).collect();
                    let all_known = !members.is_empty()
                        && pv_names
                            .iter()
                            .all(|n| n.as_ref().is_some_and(|n| known.contains_key(n)));
                    if !all_known {
                        continue;
                    }
                    let text = tools.vgcfgbackup(&vg.vg_name)?;
                    let group = lvm::to_element(&vg.vg_name, vgs, pvs, lvs, &text, |p| {
                        kernel_name(p).and_then(|n| known.get(&n).cloned())
                    })?;
                    for n in pv_names.into_iter().flatten() {
                        found.consumed.extend(dev_of(&n));
                    }
                    // Each LV's dm device: uuid LVM-<vg uuid><lv uuid>, dashes dropped.
                    let vg_id = group.uuid.replace('-', "");
                    for lv in &group.lvs {
                        let want = format!("LVM-{vg_id}{}", lv.uuid.replace('-', ""));
                        if let Some(b) = blocks
                            .iter()
                            .find(|b| matches!(&b.kind, Kind::Dm { uuid, .. } if *uuid == want))
                        {
                            let r = StackRef::Lv(group.name.clone(), lv.name.clone());
                            done.insert(b.name.clone());
                            if lv.lv_type != "thin-pool" {
                                made.push((b.name.clone(), r.clone()));
                            }
                            known.insert(b.name.clone(), r);
                        }
                    }
                    // The pool's inner devices are the group's business.
                    for b in &blocks {
                        if let Kind::Dm { uuid, .. } = &b.kind
                            && uuid.starts_with(&format!("LVM-{vg_id}"))
                        {
                            done.insert(b.name.clone());
                        }
                    }
                    found.volume_groups.push(group);
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
    // What is left on captured devices could not be recorded: say so.
    for b in &blocks {
        if done.contains(&b.name) || known.contains_key(&b.name) {
            continue;
        }
        let touches = b.slaves.iter().any(|s| known.contains_key(s));
        if touches {
            let what = match &b.kind {
                Kind::Md => "an MD array".to_string(),
                Kind::Dm { name, .. } => format!("device-mapper device {name}"),
                Kind::Other => "a block device".to_string(),
            };
            found.warnings.push(format!(
                "not captured: {} is {what} partly on devices that are not captured ({})",
                b.name,
                b.slaves.join(", ")
            ));
        }
    }
    for (name, reference) in made {
        let Some(dev) = dev_of(&name) else { continue };
        if found.consumed.contains(&dev) {
            continue;
        }
        let path = match blocks.iter().find(|b| b.name == name).map(|b| &b.kind) {
            Some(Kind::Dm { name: dm, .. }) => PathBuf::from(format!("/dev/mapper/{dm}")),
            _ => PathBuf::from(format!("/dev/{name}")),
        };
        found.volumes.push(StackVolume {
            reference,
            path,
            node: PathBuf::from(format!("/dev/{name}")),
            dev,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
