//! Opening the stack an interrupted recovery made, instead of making it
//! (resuming, `recover::resume`): each layer in the plan's order, checked
//! against the plan before anything on it is trusted, and only then
//! brought up; a layer that does not check out is made again, with every
//! layer built on it, from its wiped devices — never repaired.
//!
//! - **MD**: `mdadm --assemble --readonly --uuid` of the plan's members
//!   (no `--run`: an array missing a member is not started), then
//!   `mdadm --detail --export` and the kernel's `md/` must give the
//!   planned UUID, level, metadata, name, member count, chunk size and
//!   size, every planned member in its planned role, nothing degraded or
//!   rebuilding ([`md::open_diffs`]); only then `mdadm --readwrite`.
//! - **LUKS**: the header on the device (what `cryptsetup luksDump`
//!   shows) must give the planned UUID, version, cipher, key size, sector
//!   size and data offset ([`luks::open_diffs`]); then it is opened with
//!   the escrowed key staged as for a first run — a key that does not open
//!   it means the header is not this volume's — and the mapping must have
//!   the planned size.
//! - **LVM**: after `vgscan`, the `vgs`/`pvs`/`lvs` reports must give the
//!   planned group UUID, extent size, PV UUIDs on the planned devices, and
//!   each LV's UUID, size and type with a thin pool's chunk and metadata
//!   size ([`lvm::open_diffs`]), before `vgchange --activate y`.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};

use super::{StackRunner, argv, device_size, run_step, verify};
use crate::layout::plan::Plan;
use crate::layout::stack::{Expect, StackStep, WORK_DIR};
use crate::manifest::StackRef;
use crate::stack::{luks, lvm, md};

/// What became of one layer of the stack on a resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// Checked against the plan and opened: kept, with what is on it.
    Opened,
    /// Made again (why not kept): it did not check out, or a layer it is
    /// built on is made again.
    Remade(String),
}

/// Each layer of a plan's stack (`plan.stack`'s order) as a resume found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    pub layers: Vec<Layer>,
}

impl Opened {
    /// Every layer was opened.
    pub fn whole(&self) -> bool {
        self.layers.iter().all(|l| *l == Layer::Opened)
    }

    /// The block devices (`lv/vg0/root`, `luks/cryptroot`, `md/root`)
    /// that the layers made again make.
    pub fn remade_refs(&self, plan: &Plan) -> HashSet<String> {
        plan.stack
            .iter()
            .zip(&self.layers)
            .filter(|(_, l)| matches!(l, Layer::Remade(_)))
            .flat_map(|(s, _)| makes(s))
            .collect()
    }
}

/// The references of the block devices a layer makes.
fn makes(step: &StackStep) -> Vec<String> {
    match &step.expect {
        Expect::Md(a) => vec![StackRef::Md(a.name.clone()).to_string()],
        Expect::Luks(l) => vec![StackRef::Luks(l.name.clone()).to_string()],
        Expect::Vg(g) => g
            .lvs
            .iter()
            .map(|lv| StackRef::Lv(g.name.clone(), lv.name.clone()).to_string())
            .collect(),
        Expect::Nothing => Vec::new(),
    }
}

/// Open every layer of the plan's stack that checks out, in order; a layer
/// that does not (or is built on one that did not) is left closed, to be
/// made again by [`remake`]. Each layer's outcome is printed.
pub fn open(plan: &Plan, r: &mut dyn StackRunner) -> Opened {
    let mut out = Opened::default();
    let mut remade: HashSet<String> = HashSet::new();
    for step in &plan.stack {
        let layer = match step.on.iter().find(|(on, _)| remade.contains(on)) {
            Some((on, _)) => Layer::Remade(format!("it is built on {on}, which is made again")),
            None => match open_step(step, r) {
                Ok(()) => Layer::Opened,
                Err(e) => {
                    close_step(step, r);
                    Layer::Remade(format!("{e:#}"))
                }
            },
        };
        match &layer {
            Layer::Opened => println!("  {}: verified against the plan and opened", step.layer),
            Layer::Remade(why) => {
                println!(
                    "  {}: not the planned one ({why}): made again, with what is on it",
                    step.layer
                );
                remade.extend(makes(step));
            }
        }
        out.layers.push(layer);
    }
    out
}

/// The member devices of array `a` as the step puts them.
fn member_paths<'a>(
    step: &StackStep,
    a: &'a crate::manifest::MdArray,
) -> Result<Vec<(String, &'a crate::manifest::MdMember)>> {
    a.members
        .iter()
        .map(|m| {
            let r = m.device.to_string();
            let path = step
                .on
                .iter()
                .find(|(on, _)| *on == r)
                .map(|(_, p)| p.clone())
                .with_context(|| format!("the plan puts member {r} on no device"))?;
            Ok((path, m))
        })
        .collect()
}

/// The kernel's name of a device (`/dev/md/root` -> `md127`).
fn kernel_name(r: &mut dyn StackRunner, device: &str) -> Result<String> {
    let node = r.run(&argv(&["readlink", "-f", device]))?;
    let node = node.trim();
    node.rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .with_context(|| format!("readlink -f {device} said {node:?}"))
}

fn open_step(step: &StackStep, r: &mut dyn StackRunner) -> Result<()> {
    match &step.expect {
        Expect::Nothing => Ok(()),
        Expect::Md(a) => {
            let paths = member_paths(step, a)?;
            let assemble = md::assemble_command(a, &paths);
            println!("  {}", crate::layout::plan::argv_line(&assemble));
            r.run(&assemble)
                .context("its planned members do not assemble into it")?;
            let export = md::parse_export(&r.run(&argv(&[
                "mdadm",
                "--detail",
                "--export",
                &step.device,
            ]))?)?;
            let name = kernel_name(r, &step.device)?;
            let mut sys = |f: &str| -> String {
                r.read(&format!("/sys/block/{name}/md/{f}"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            let degraded = sys("degraded");
            let chunk = sys("chunk_size");
            let st = md::MdState {
                degraded: degraded
                    .parse()
                    .with_context(|| format!("md/degraded of {name} is {degraded:?}"))?,
                chunk_size: chunk.parse().unwrap_or(0),
                sync_action: sys("sync_action"),
                array_state: sys("array_state"),
                size: device_size(r, &step.device)?,
            };
            let diffs = md::open_diffs(a, &paths, &export, &st);
            if !diffs.is_empty() {
                bail!("{}", diffs.join("; "));
            }
            let rw = argv(&["mdadm", "--readwrite", &step.device]);
            println!("  {}", crate::layout::plan::argv_line(&rw));
            r.run(&rw)?;
            Ok(())
        }
        Expect::Luks(l) => {
            let backing = step.on.first().map(|(_, p)| p.clone()).unwrap_or_default();
            let head = r.read_head(&backing, luks::MAX_HEADER_READ)?;
            let h = luks::parse_header(&head).with_context(|| format!("on {backing}"))?;
            let diffs = luks::open_diffs(l, &h);
            if !diffs.is_empty() {
                bail!("{}", diffs.join("; "));
            }
            let key = luks::key_file(WORK_DIR, &l.name);
            let open = luks::open_command(l, &backing, &key);
            println!("  {}", crate::layout::plan::argv_line(&open));
            r.run(&open).context(
                "the escrowed volume key does not open it: the header is not this volume's",
            )?;
            let size = device_size(r, &step.device)?;
            if size != l.size {
                bail!("the opened mapping is {size} bytes, the plan's {}", l.size);
            }
            // Opened: the key goes, as after a first run's open.
            r.remove(&key)?;
            r.remove(&luks::header_file(WORK_DIR, &l.name))?;
            Ok(())
        }
        Expect::Vg(g) => {
            r.run(&argv(&["vgscan"]))?;
            let vgs = lvm::parse_vgs(&r.run(&lvm::report_command("vgs"))?)?;
            let pvs = lvm::parse_pvs(&r.run(&lvm::report_command("pvs"))?)?;
            let lvs = lvm::parse_lvs(&r.run(&lvm::report_command("lvs"))?)?;
            // LVM names a PV by the kernel's node (/dev/dm-0), the plan by
            // its link (/dev/mapper/cryptroot): either is the device.
            let mut by_path: Vec<(String, StackRef)> = Vec::new();
            for (on, path) in &step.on {
                let Ok(reference) = on.parse::<StackRef>() else {
                    continue;
                };
                by_path.push((path.clone(), reference.clone()));
                if let Ok(node) = r.run(&argv(&["readlink", "-f", path])) {
                    let node = node.trim();
                    if !node.is_empty() {
                        by_path.push((node.to_string(), reference));
                    }
                }
            }
            let diffs = lvm::open_diffs(g, &vgs, &pvs, &lvs, |p| {
                by_path
                    .iter()
                    .find(|(path, _)| path == p)
                    .map(|(_, r)| r.clone())
            });
            if !diffs.is_empty() {
                bail!("{}", diffs.join("; "));
            }
            let up = argv(&["vgchange", "--activate", "y", &g.name]);
            println!("  {}", crate::layout::plan::argv_line(&up));
            r.run(&up)?;
            Ok(())
        }
    }
}

/// Take down what opening a layer may have brought up (errors ignored:
/// what is not up cannot be taken down). An array that mdadm left
/// inactive under its kernel name is found in /proc/mdstat by its members.
fn close_step(step: &StackStep, r: &mut dyn StackRunner) {
    match &step.expect {
        Expect::Nothing => {}
        Expect::Md(_) => {
            let _ = r.run(&argv(&["mdadm", "--stop", &step.device]));
            let members: Vec<String> = step
                .on
                .iter()
                .filter_map(|(_, p)| p.rsplit('/').next().map(str::to_string))
                .collect();
            if let Ok(mdstat) = r.read("/proc/mdstat") {
                for md in arrays_holding(&mdstat, &members) {
                    let _ = r.run(&argv(&["mdadm", "--stop", &format!("/dev/{md}")]));
                }
            }
        }
        Expect::Luks(l) => {
            let _ = r.run(&argv(&["cryptsetup", "close", &l.name]));
        }
        Expect::Vg(g) => {
            let _ = r.run(&argv(&["vgchange", "--activate", "n", &g.name]));
        }
    }
}

/// The arrays of /proc/mdstat (`md127 : inactive vda5[1](S)`) holding any
/// of the devices named (kernel names).
fn arrays_holding(mdstat: &str, members: &[String]) -> Vec<String> {
    mdstat
        .lines()
        .filter_map(|line| {
            let (md, rest) = line.split_once(" : ")?;
            let md = md.trim();
            if !md.starts_with("md") {
                return None;
            }
            let holds = rest.split_whitespace().any(|w| {
                let dev = w.split('[').next().unwrap_or_default();
                members.iter().any(|m| m == dev)
            });
            holds.then(|| md.to_string())
        })
        .collect()
}

/// Take down, top layer first, the layers [`open`] opened (a resume that
/// is given up after all: the disks are then made from scratch).
pub fn close(plan: &Plan, opened: &Opened, r: &mut dyn StackRunner) {
    for (step, layer) in plan.stack.iter().zip(&opened.layers).rev() {
        if *layer == Layer::Opened {
            close_step(step, r);
        }
    }
}

/// Make again, in order, every layer [`open`] did not open: its devices
/// wiped first (what a layer below made again may show the old layer's
/// signatures: a new array on the same members shows the old LUKS header),
/// then made as in a first run; then those layers read back and compared
/// with the plan, as [`super::verify`] does after a first run.
pub fn remake(plan: &Plan, opened: &Opened, r: &mut dyn StackRunner) -> Result<()> {
    let mut again = plan.clone();
    again.stack = plan
        .stack
        .iter()
        .zip(&opened.layers)
        .filter(|(_, l)| matches!(l, Layer::Remade(_)))
        .map(|(s, _)| s.clone())
        .collect();
    for step in &again.stack {
        for (_, device) in &step.on {
            let wipe = argv(&["wipefs", "--all", "--force", device]);
            println!("  {}", crate::layout::plan::argv_line(&wipe));
            r.run(&wipe)
                .with_context(|| format!("cannot wipe {device} to make {}", step.layer))?;
        }
        run_step(step, r).with_context(|| format!("cannot make {} again", step.layer))?;
    }
    verify(&again, r)
}

#[cfg(test)]
mod tests;
