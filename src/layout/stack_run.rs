//! Executing the stack's plan: each layer's files written and commands
//! run in order, through a [`StackRunner`] (the real one goes through
//! `crate::cmd`), then every layer read back with the same parsers capture
//! uses and compared with the manifest — UUIDs, names, levels, sizes — so
//! that a recreated stack is the captured one or the recovery stops,
//! naming what differs.

use anyhow::{Context, Result, bail};

use super::plan::Plan;
use super::stack::{Expect, StackStep, WORK_DIR};
use crate::stack::{luks, lvm, md};

pub mod open;

/// What running the stack needs from the system.
pub trait StackRunner {
    /// Run a command; its standard output.
    fn run(&mut self, argv: &[String]) -> Result<String>;
    fn write(&mut self, path: &str, text: &str) -> Result<()>;
    fn read(&mut self, path: &str) -> Result<String>;
    /// The first `len` bytes of a device.
    fn read_head(&mut self, device: &str, len: usize) -> Result<Vec<u8>>;
    /// Remove a file the stack's commands read (a LUKS volume's key once
    /// the volume is open). Runners whose files live elsewhere (a guest's
    /// console) clean up their own way; the system's removes it.
    fn remove(&mut self, path: &str) -> Result<()> {
        let _ = path;
        Ok(())
    }
}

/// The system's tools and files.
pub struct SystemRunner;

impl StackRunner for SystemRunner {
    fn run(&mut self, argv: &[String]) -> Result<String> {
        let (program, args) = argv.split_first().context("empty command line")?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::cmd::run(program, &args)
    }

    fn write(&mut self, path: &str, text: &str) -> Result<()> {
        let p = std::path::Path::new(path);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        crate::util::fs::write_atomic(p, text.as_bytes())
            .with_context(|| format!("cannot write {path}"))
    }

    fn read(&mut self, path: &str) -> Result<String> {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {path}"))
            }
            _ => Ok(()),
        }
    }

    fn read_head(&mut self, device: &str, len: usize) -> Result<Vec<u8>> {
        use std::io::Read;
        let mut buf = Vec::with_capacity(len);
        std::fs::File::open(device)
            .with_context(|| format!("cannot open {device}"))?
            .take(len as u64)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {device}"))?;
        Ok(buf)
    }
}

/// Make every layer of the plan's stack, in order.
pub fn run(plan: &Plan, r: &mut dyn StackRunner) -> Result<()> {
    for step in &plan.stack {
        run_step(step, r).with_context(|| format!("cannot make {}", step.layer))?;
    }
    Ok(())
}

fn run_step(step: &StackStep, r: &mut dyn StackRunner) -> Result<()> {
    let made = run_commands(step, r);
    let Expect::Luks(l) = &step.expect else {
        return made;
    };
    // The escrowed key stays on the image's tmpfs only as long as
    // cryptsetup needs it, whatever happened.
    let key = luks::key_file(WORK_DIR, &l.name);
    let removed = r
        .remove(&key)
        .and_then(|()| r.remove(&luks::header_file(WORK_DIR, &l.name)));
    made.with_context(|| {
        format!(
            "{} is opened with the escrowed volume key in {key}, which `rewind recover` fetches from the server (for `rewind recreate`, put the volume key there yourself, mode 0600)",
            step.layer
        )
    })?;
    removed
}

fn run_commands(step: &StackStep, r: &mut dyn StackRunner) -> Result<()> {
    for f in &step.files {
        r.write(&f.path, &f.text)?;
    }
    for argv in &step.commands {
        if let (Some((from, to)), Expect::Vg(vg)) = (&step.lv_ids, &step.expect)
            && argv.iter().any(|a| a == to)
        {
            let remade = r.read(from)?;
            let text = lvm::with_captured_lv_ids(&remade, vg)?;
            r.write(to, &text)?;
        }
        println!("  {}", super::plan::argv_line(argv));
        r.run(argv)?;
    }
    Ok(())
}

/// Take the stack down once its filesystems are unmounted, top layer
/// first, so that everything written reaches the disks and the arrays are
/// left clean for the first boot: volume groups deactivated, LUKS volumes
/// closed, arrays stopped (an array still resyncing resumes where it was,
/// from its bitmap). Each failure is a warning, returned.
pub fn deactivate(plan: &Plan, r: &mut dyn StackRunner) -> Vec<String> {
    let mut warnings = Vec::new();
    for step in plan.stack.iter().rev() {
        let cmd = match &step.expect {
            Expect::Vg(g) => argv(&["vgchange", "--activate", "n", &g.name]),
            Expect::Luks(l) => argv(&["cryptsetup", "close", &l.name]),
            Expect::Md(_) => argv(&["mdadm", "--stop", &step.device]),
            Expect::Nothing => continue,
        };
        println!("  {}", super::plan::argv_line(&cmd));
        if let Err(e) = r.run(&cmd) {
            warnings.push(format!("cannot take {} down: {e:#}", step.layer));
        }
    }
    warnings
}

/// Read every layer back and compare it with what was captured. All
/// differences are reported at once.
pub fn verify(plan: &Plan, r: &mut dyn StackRunner) -> Result<()> {
    let mut diffs = Vec::new();
    for step in &plan.stack {
        let mut d = |what: &str, want: String, got: String| {
            if want != got {
                diffs.push(format!(
                    "{}: {what} is {got}, the capture had {want}",
                    step.layer
                ));
            }
        };
        match &step.expect {
            Expect::Nothing => {}
            Expect::Md(a) => {
                let text = r.run(&argv(&["mdadm", "--detail", "--export", &step.device]))?;
                let e = md::parse_export(&text)
                    .with_context(|| format!("cannot read back {}", step.device))?;
                d("the UUID", a.uuid.clone(), e.uuid);
                d("the level", a.level.clone(), e.level);
                d("the metadata", a.metadata.clone(), e.metadata);
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
                    "the size",
                    a.size.to_string(),
                    device_size(r, &step.device)?.to_string(),
                );
            }
            Expect::Luks(l) => {
                let backing = step.on.first().map(|(_, p)| p.clone()).unwrap_or_default();
                let head = r.read_head(&backing, luks::MAX_HEADER_READ)?;
                let h = luks::parse_header(&head)
                    .with_context(|| format!("cannot read back the LUKS header on {backing}"))?;
                d("the UUID", l.uuid.to_string(), h.uuid);
                d("the version", l.version.to_string(), h.version.to_string());
                d("the cipher", l.cipher.clone(), h.cipher);
                d(
                    "the key size",
                    l.key_size.to_string(),
                    h.key_size.to_string(),
                );
                d(
                    "the data offset",
                    l.data_offset.to_string(),
                    h.data_offset.to_string(),
                );
                d(
                    "the size",
                    l.size.to_string(),
                    device_size(r, &step.device)?.to_string(),
                );
            }
            Expect::Vg(g) => {
                let vgs = lvm::parse_vgs(&r.run(&lvm::report_command("vgs"))?)?;
                let pvs = lvm::parse_pvs(&r.run(&lvm::report_command("pvs"))?)?;
                let lvs = lvm::parse_lvs(&r.run(&lvm::report_command("lvs"))?)?;
                let Some(vg) = vgs.iter().find(|v| v.vg_name == g.name) else {
                    diffs.push(format!(
                        "{}: no volume group {} after vgcfgrestore",
                        step.layer, g.name
                    ));
                    continue;
                };
                d("the UUID", g.uuid.clone(), vg.vg_uuid.clone());
                d(
                    "the extent size",
                    g.extent_size.to_string(),
                    vg.vg_extent_size.clone(),
                );
                for pv in &g.pvs {
                    let path = step
                        .on
                        .iter()
                        .find(|(r, _)| *r == pv.device.to_string())
                        .map(|(_, p)| p.as_str())
                        .unwrap_or_default();
                    // LVM names a PV by the kernel's node (/dev/md126), the
                    // plan by its link (/dev/md/pv): either is this device.
                    let node = r
                        .run(&argv(&["readlink", "-f", path]))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default();
                    let got = pvs
                        .iter()
                        .find(|p| {
                            (p.pv_name == path || (!node.is_empty() && p.pv_name == node))
                                && p.vg_name == g.name
                        })
                        .map(|p| p.pv_uuid.clone())
                        .unwrap_or_else(|| "missing".into());
                    d(&format!("the PV UUID on {path}"), pv.uuid.clone(), got);
                }
                for lv in &g.lvs {
                    let row = lvs
                        .iter()
                        .find(|l| l.vg_name == g.name && l.lv_name == lv.name);
                    let (uuid, size) = row
                        .map(|l| (l.lv_uuid.clone(), l.lv_size.clone()))
                        .unwrap_or_else(|| ("missing".into(), "missing".into()));
                    d(&format!("LV {}'s UUID", lv.name), lv.uuid.clone(), uuid);
                    d(&format!("LV {}'s size", lv.name), lv.size.to_string(), size);
                }
            }
        }
    }
    if !diffs.is_empty() {
        bail!(
            "the recreated storage stack differs from the capture:\n  {}",
            diffs.join("\n  ")
        );
    }
    Ok(())
}

fn device_size(r: &mut dyn StackRunner, device: &str) -> Result<u64> {
    let out = r.run(&argv(&["blockdev", "--getsize64", device]))?;
    out.trim()
        .parse()
        .with_context(|| format!("blockdev --getsize64 {device} said {:?}", out.trim()))
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests;
