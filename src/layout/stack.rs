//! Planning the storage stack (schema 2): each MD array, LUKS volume and
//! volume group in creation order, mapped onto the devices the disk plans
//! make, with the command lines that recreate it; and the filesystems and
//! swap areas on top. Pure, like the rest of the plan: what cannot be
//! recreated on the disks present — a RAID member on a disk that is not
//! recreated, a PV or an array member too small, a LUKS volume without an
//! escrowed key — is refused here, before anything is written, naming the
//! device.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};
use serde::Serialize;

use super::plan::{Content, DiskPlan, PlanOptions};
use super::present::partition_path;
use crate::fs::MkfsTarget;
use crate::manifest::{Layer, Manifest, StackRef, creation_order};
use crate::stack::{luks, lvm, md};
use crate::util::size::human_bytes;

/// Where recovery keeps the files the stack's commands read (LVM metadata,
/// LUKS headers, escrowed keys), on the live image's tmpfs.
pub const WORK_DIR: &str = "/run/rewind/stack";

/// Where the escrowed key of LUKS volume `name` must be before its layer
/// is made (the recovery fetches it).
pub fn luks_key_file(name: &str) -> String {
    luks::key_file(WORK_DIR, name)
}

/// Where the captured LUKS header of volume `name` must be before its
/// layer is made.
pub fn luks_header_file(name: &str) -> String {
    luks::header_file(WORK_DIR, name)
}

/// The files a LUKS layer reads that the plan does not write: what each
/// is and its path.
pub fn luks_files(l: &crate::manifest::Luks) -> Vec<(&'static str, String)> {
    let mut v = vec![("escrowed key", luks_key_file(&l.name))];
    if l.header.is_some() {
        v.push(("captured header", luks_header_file(&l.name)));
    }
    v
}

/// One layer of the stack, as it will be made.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StackStep {
    /// `md/root`, `luks/cryptroot`, `vg vg0`.
    pub layer: String,
    /// The device it makes (a volume group: its name).
    pub device: String,
    /// The block devices it is built on: reference and device path.
    pub on: Vec<(String, String)>,
    /// Files written before the commands run (LVM metadata for
    /// `pvcreate --restorefile` and `vgcfgrestore`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<StackFile>,
    /// In order, each an argv.
    pub commands: Vec<Vec<String>>,
    /// Thin pools: the file `vgcfgbackup` writes of the group lvcreate
    /// made (`from`) becomes `to`, with the captured LV UUIDs, before the
    /// command that reads `to` runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lv_ids: Option<(String, String)>,
    /// What the layer must be once made, checked by [`super::stack_run::verify`].
    #[serde(skip)]
    pub expect: Expect,
}

/// A file the stack's commands read.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StackFile {
    pub path: String,
    #[serde(skip)]
    pub text: String,
    pub bytes: usize,
}

/// The captured element a layer is made from.
#[derive(Debug, Clone, Default)]
pub enum Expect {
    #[default]
    Nothing,
    Md(crate::manifest::MdArray),
    Luks(crate::manifest::Luks),
    Vg(crate::manifest::VolumeGroup),
}

/// A filesystem or swap area on a block device of the stack.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StackVolume {
    /// `lv/vg0/root`.
    pub reference: String,
    pub device: String,
    pub content: Content,
}

/// The live image's device path for a device of the stack.
pub fn device_path(r: &StackRef) -> Option<String> {
    match r {
        StackRef::Md(n) => Some(format!("/dev/md/{n}")),
        StackRef::Luks(n) => Some(format!("/dev/mapper/{n}")),
        // libdevmapper's node, which exists with or without udev.
        StackRef::Lv(vg, lv) => Some(format!(
            "/dev/mapper/{}-{}",
            vg.replace('-', "--"),
            lv.replace('-', "--")
        )),
        StackRef::Disk(_) | StackRef::Partition(..) => None,
    }
}

/// Plan the stack of `m` on the disks of `disks`: steps in creation order
/// and the filesystems/swap on stack devices. Layers all of whose devices
/// are on disks not recreated are left out (with a note); a layer with
/// only some of them is refused.
pub fn plan_stack(
    m: &Manifest,
    disks: &mut [DiskPlan],
    opts: &PlanOptions,
    notes: &mut Vec<String>,
) -> Result<(Vec<StackStep>, Vec<StackVolume>)> {
    let order = creation_order(m).map_err(anyhow::Error::msg)?;
    // Each block device that will exist: its path and size in bytes.
    let mut made: HashMap<StackRef, (String, u64)> = HashMap::new();
    for d in disks.iter() {
        let ss = u64::from(d.sector_size);
        made.insert(
            StackRef::Disk(d.captured.clone()),
            (d.target.path.clone(), d.target.size),
        );
        for v in &d.volumes {
            if let Some(n) = v.partition {
                made.insert(
                    StackRef::Partition(d.captured.clone(), n),
                    (partition_path(&d.target.path, n), v.sectors * ss),
                );
            }
        }
    }
    // --grow: devices that are bigger than at capture, with their captured
    // size in bytes; each layer passes the growth up where that is safe.
    let mut grown: HashMap<StackRef, u64> = disks
        .iter()
        .filter_map(|d| {
            let g = d.grown.as_ref()?;
            Some((
                StackRef::Partition(d.captured.clone(), g.partition),
                g.from_sectors * u64::from(d.sector_size),
            ))
        })
        .collect();
    // LVs extended by --grow: their filesystems are made at the new size.
    let mut grown_lvs: HashSet<StackRef> = HashSet::new();
    let mut steps = Vec::new();
    let mut problems = Vec::new();
    for layer in order {
        let name = layer.describe(m);
        let needs = layer.needs(m);
        let have: Vec<&StackRef> = needs
            .iter()
            .copied()
            .filter(|r| made.contains_key(r))
            .collect();
        if have.is_empty() {
            notes.push(format!(
                "{name} is not recreated: none of its devices ({}) is on a recreated disk",
                join(&needs)
            ));
            continue;
        }
        if have.len() < needs.len() {
            let missing: Vec<&StackRef> = needs
                .iter()
                .copied()
                .filter(|r| !made.contains_key(r))
                .collect();
            problems.push(format!(
                "{name} cannot be recreated: {} {} not on a recreated disk (map every disk it uses with --disk CAPTURED=/dev/DISK)",
                join(&missing),
                if missing.len() == 1 { "is" } else { "are" }
            ));
            continue;
        }
        let on: Vec<(String, String)> = needs
            .iter()
            .map(|r| (r.to_string(), made[*r].0.clone()))
            .collect();
        let size_of = |r: &StackRef| made[r].1;
        match layer {
            Layer::Md(i) => {
                let a = &m.md_arrays[i];
                let per_member = md::member_data_size(a).map(|s| s + a.data_offset.unwrap_or(0));
                for mem in &a.members {
                    if let Some(need) = per_member
                        && size_of(&mem.device) < need
                    {
                        problems.push(format!(
                            "{name} cannot be recreated: its member {} is {} ({} bytes), it needs at least {need} bytes",
                            mem.device,
                            human_bytes(size_of(&mem.device)),
                            size_of(&mem.device)
                        ));
                    }
                }
                let missing: Vec<u32> = (0..a.raid_devices)
                    .filter(|s| !a.members.iter().any(|x| x.slot() == Some(*s)))
                    .collect();
                if !missing.is_empty() {
                    notes.push(format!(
                        "{name} was degraded at capture: slot(s) {missing:?} are made `missing`; add a disk with mdadm --add afterwards"
                    ));
                }
                let paths: Vec<(String, &crate::manifest::MdMember)> = a
                    .members
                    .iter()
                    .map(|x| (made[&x.device].0.clone(), x))
                    .collect();
                let r = StackRef::Md(a.name.clone());
                let device = device_path(&r).unwrap_or_default();
                if a.members.iter().any(|x| grown.contains_key(&x.device)) {
                    notes.push(format!(
                        "{name} keeps its captured size: --grow does not grow MD arrays (mdadm --grow --size=max afterwards, then grow what is on it)"
                    ));
                }
                steps.push(StackStep {
                    layer: name,
                    device: device.clone(),
                    on,
                    files: Vec::new(),
                    commands: vec![md::create_command(a, &paths)],
                    lv_ids: None,
                    expect: Expect::Md(a.clone()),
                });
                made.insert(r, (device, a.size));
            }
            Layer::Luks(i) => {
                let l = &m.luks[i];
                let backing = made[&l.on].0.clone();
                if l.data_offset + l.size > size_of(&l.on) {
                    problems.push(format!(
                        "{name} cannot be recreated: {} is {} bytes, the volume needs {} (header {} + data {})",
                        l.on,
                        size_of(&l.on),
                        l.data_offset + l.size,
                        l.data_offset,
                        l.size
                    ));
                }
                let Some(escrow) = &l.escrow else {
                    problems.push(format!(
                        "{name} cannot be opened without a passphrase: the manifest holds no escrowed key for it (<escrow>), and recovery never waits at a prompt; capture with LUKS key escrow enabled, or recover this volume by hand"
                    ));
                    continue;
                };
                let key = luks::key_file(WORK_DIR, &l.name);
                let mut commands = Vec::new();
                match &l.header {
                    Some(_) => {
                        let header = luks::header_file(WORK_DIR, &l.name);
                        commands.push(luks::header_restore_command(&backing, &header));
                    }
                    None => {
                        notes.push(format!(
                            "{name}: the snapshot holds no header; a new one is made with the captured UUID, cipher and the escrowed volume key (the machine's own passphrases are not in it)"
                        ));
                        commands.push(luks::format_command(l, &backing, &key, &key));
                    }
                }
                commands.push(luks::open_command(l, &backing, &key));
                let r = StackRef::Luks(l.name.clone());
                let device = device_path(&r).unwrap_or_default();
                notes.push(format!(
                    "{name} is opened with the escrowed {} {}",
                    escrow.kind, escrow.key_id
                ));
                // A mapping that filled its device at capture has a dynamic
                // size: opened on the grown device, it fills it again.
                let mut expect = l.clone();
                if let Some(&was) = grown.get(&l.on) {
                    if l.data_offset + l.size == was {
                        expect.size = size_of(&l.on).saturating_sub(l.data_offset);
                        grown.insert(r.clone(), l.size);
                        notes.push(format!(
                            "{name} grows with {}: {} -> {}",
                            l.on,
                            human_bytes(l.size),
                            human_bytes(expect.size)
                        ));
                    } else {
                        notes.push(format!(
                            "{name} keeps its captured size: its mapping did not fill {} at capture",
                            l.on
                        ));
                    }
                }
                for k in l.keyslots.iter().filter(|k| k.hardware_bound()) {
                    notes.push(format!(
                        "{name}: keyslot {} is bound to a {} token: on other hardware it needs enrolling again",
                        k.id,
                        k.token.as_deref().unwrap_or_default()
                    ));
                }
                steps.push(StackStep {
                    layer: name,
                    device: device.clone(),
                    on,
                    files: Vec::new(),
                    commands,
                    lv_ids: None,
                    expect: Expect::Luks(expect.clone()),
                });
                made.insert(r, (device, expect.size));
            }
            Layer::Vg(i) => {
                let g = &m.volume_groups[i];
                for pv in &g.pvs {
                    let need = pv.pe_start + pv.extents * g.extent_size;
                    if size_of(&pv.device) < need {
                        problems.push(format!(
                            "{name} cannot be recreated: its PV {} on {} is {} bytes, the PV needs {need} bytes",
                            pv.uuid,
                            pv.device,
                            size_of(&pv.device)
                        ));
                    }
                }
                let file = format!("{WORK_DIR}/{}.vg", g.name);
                let mut files = vec![StackFile {
                    path: file.clone(),
                    text: g.metadata.clone(),
                    bytes: g.metadata.len(),
                }];
                let mut lv_ids = None;
                let mut commands: Vec<Vec<String>> = g
                    .pvs
                    .iter()
                    .map(|pv| lvm::pvcreate_command(pv, &made[&pv.device].0, &file))
                    .collect();
                if lvm::has_thin(g) {
                    let without = format!("{WORK_DIR}/{}.without-thin.vg", g.name);
                    let remade = format!("{WORK_DIR}/{}.remade.vg", g.name);
                    let with_ids = format!("{WORK_DIR}/{}.ids.vg", g.name);
                    match lvm::metadata_without_thin(g) {
                        Ok(text) => files.push(StackFile {
                            path: without.clone(),
                            bytes: text.len(),
                            text,
                        }),
                        Err(e) => problems.push(format!("{name}: {e:#}")),
                    }
                    lv_ids = Some((remade.clone(), with_ids.clone()));
                    commands.push(lvm::vgcfgrestore_command(&g.name, &without, false));
                    commands.extend(lvm::thin_commands(g));
                    commands.push(argv(&["vgchange", "--activate", "n", &g.name]));
                    commands.push(argv(&["vgcfgbackup", "--file", &remade, &g.name]));
                    commands.push(lvm::vgcfgrestore_command(&g.name, &with_ids, true));
                    notes.push(format!(
                        "{name}: thin pools are made by lvcreate, then {with_ids} ({remade} with the captured LV UUIDs) is restored"
                    ));
                } else {
                    commands.push(lvm::vgcfgrestore_command(&g.name, &file, false));
                }
                let mut expect = g.clone();
                for (pv, want) in g.pvs.iter().zip(expect.pvs.iter_mut()) {
                    if !grown.contains_key(&pv.device) || g.extent_size == 0 {
                        continue;
                    }
                    // pvresize gives the PV what follows pe_start, in whole extents.
                    let extents = size_of(&pv.device).saturating_sub(pv.pe_start) / g.extent_size;
                    let Some(more) = extents.checked_sub(pv.extents).filter(|n| *n > 0) else {
                        continue;
                    };
                    want.extents = extents;
                    want.size = size_of(&pv.device);
                    let device = &made[&pv.device].0;
                    let last = match lvm::last_lv_on_pv(&g.metadata, &pv.uuid) {
                        Ok(last) => last,
                        Err(e) => {
                            problems.push(format!("{name}: {e:#}"));
                            continue;
                        }
                    };
                    let lv = last.and_then(|(lv_name, linear)| {
                        let lv = expect.lvs.iter_mut().find(|l| l.name == lv_name)?;
                        let r = StackRef::Lv(g.name.clone(), lv.name.clone());
                        let holds = m.filesystems.iter().any(|f| f.volume.as_ref() == Some(&r))
                            || m.swaps.iter().any(|s| s.volume.as_ref() == Some(&r));
                        (linear && lv.lv_type == "linear" && holds).then_some((lv, r))
                    });
                    let added = human_bytes(more * g.extent_size);
                    match lv {
                        Some((lv, r)) => {
                            lv.size += more * g.extent_size;
                            notes.push(format!(
                                "{name}: the PV on {device} grows by {more} extents ({added}); LV {} at its end grows with it to {}, and what is on it is made at that size",
                                lv.name,
                                human_bytes(lv.size)
                            ));
                            commands.extend(lvm::grow_commands(
                                &g.name,
                                device,
                                Some((&lv.name, more)),
                            ));
                            grown_lvs.insert(r);
                        }
                        None => {
                            notes.push(format!(
                                "{name}: the PV on {device} grows by {more} extents ({added}), left free: the LV at its end is not a linear LV holding a filesystem or swap (lvextend --resizefs by hand)"
                            ));
                            commands.extend(lvm::grow_commands(&g.name, device, None));
                        }
                    }
                }
                commands.push(argv(&["vgchange", "--activate", "y", &g.name]));
                for lv in &expect.lvs {
                    let r = StackRef::Lv(g.name.clone(), lv.name.clone());
                    if let Some(p) = device_path(&r) {
                        made.insert(r, (p, lv.size));
                    }
                }
                steps.push(StackStep {
                    layer: name,
                    device: g.name.clone(),
                    on,
                    files,
                    commands,
                    lv_ids,
                    expect: Expect::Vg(expect),
                });
            }
        }
    }
    // Filesystems and swap on stack devices that will exist.
    let mut volumes = Vec::new();
    for fs in &m.filesystems {
        let Some(r) = &fs.volume else { continue };
        let Some((device, _)) = made.get(r) else {
            if !problems.is_empty() {
                continue;
            }
            notes.push(format!(
                "the {} filesystem on {r} is not recreated: {r} is not",
                fs.fs_type
            ));
            continue;
        };
        let grow = grown_lvs.contains(r);
        let commands = fs.fs_type.mkfs_commands(
            &MkfsTarget {
                device,
                uuid: &fs.uuid,
                label: fs.label.as_deref(),
                grow,
                tools: &opts.tools,
            },
            notes,
        );
        volumes.push(StackVolume {
            reference: r.to_string(),
            device: device.clone(),
            content: Content::Filesystem {
                fs_type: fs.fs_type.name().to_string(),
                uuid: fs.uuid.clone(),
                label: fs.label.clone(),
                commands,
                subvolumes: fs
                    .subvolumes
                    .iter()
                    .map(|s| format!("/{}", s.path))
                    .collect(),
                grown: grow,
                captured: Box::new(fs.clone()),
            },
        });
    }
    for sw in &m.swaps {
        let Some(r) = &sw.volume else { continue };
        let Some((device, _)) = made.get(r) else {
            continue;
        };
        volumes.push(StackVolume {
            reference: r.to_string(),
            device: device.clone(),
            content: Content::Swap {
                uuid: sw.uuid.clone(),
                commands: crate::fs::swap::commands(&sw.uuid, sw.label.as_deref(), device),
            },
        });
    }
    // A btrfs spanning several devices: mkfs.btrfs gets them all.
    let contents = disks
        .iter_mut()
        .flat_map(|d| d.volumes.iter_mut().map(|v| &mut v.content))
        .chain(volumes.iter_mut().map(|v| &mut v.content));
    for content in contents {
        let Content::Filesystem {
            commands, captured, ..
        } = content
        else {
            continue;
        };
        for member in &captured.members {
            match (made.get(&member.device), commands.first_mut()) {
                (Some((path, _)), Some(mkfs)) => mkfs.push(path.clone()),
                _ => problems.push(format!(
                    "the btrfs {} cannot be recreated: its device {} (devid {}) is not on a recreated disk",
                    captured.uuid, member.device, member.devid
                )),
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok((steps, volumes))
}

fn join(refs: &[&StackRef]) -> String {
    refs.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests;
