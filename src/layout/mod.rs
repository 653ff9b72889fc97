//! Recreating a captured disk layout on the disks present: plan, then
//! partition, format and mount ([`partition_disks`], [`format_disks`],
//! [`mount_filesystems`]), each failure naming its stage and device.
//!
//! The stages print what they do but never announce themselves: their
//! caller does, once per stage, with [`Stage`] — `rewind recreate` as
//! `== partition`, the recovery as `rewind: == stage partition == [...]`.
//!
//! Data flows one way: manifest + present disks → [`plan::Plan`] (pure,
//! printed first) → stages that only execute the plan. Nothing is written
//! before the whole plan is made and checked.

pub mod format;
mod kernel;
pub mod mount;
pub mod partition;
pub mod plan;
pub mod present;
pub mod raw;
pub mod stack;
pub mod stack_run;
pub mod table;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::manifest;
use crate::stage::Stage;
use format::Tools;
use plan::{Content, DiskPlan, Plan, PlanOptions, Volume};
use raw::{NoRawData, RawDir, RawRegion, RawSource};

/// What `plan` and `recreate` share on the command line.
#[derive(clap::Args, Debug)]
pub struct LayoutArgs {
    /// The manifest whose disks are recreated.
    pub manifest: PathBuf,
    /// Put captured disk CAPTURED (its name in the manifest, or its serial)
    /// on present disk PRESENT (a device path, loop devices included, or a
    /// serial). Repeatable; when given, only the disks so mapped are
    /// recreated and every other disk is left alone.
    #[arg(long = "disk", value_name = "CAPTURED=PRESENT", value_parser = parse_mapping)]
    pub disks: Vec<(String, String)>,
    /// On a disk bigger than the captured one, grow the last partition to
    /// keep the captured distance to the disk's end, and its filesystem
    /// (or, on a stack, the LUKS volume, PV and linear LV at its end).
    #[arg(long)]
    pub grow: bool,
    /// On a disk smaller than the captured one, shrink the filesystems
    /// restored file by file when their data fits (docs/layout.md gives the
    /// headroom); the plan shows the new layout.
    #[arg(long)]
    pub shrink: bool,
    /// Any disk that is not blank may be chosen automatically. Without it,
    /// a disk holding anything (a partition table, a filesystem, data) is
    /// used only when its serial or WWN is the captured disk's, or when
    /// named with --disk.
    #[arg(long)]
    pub overwrite_non_blank: bool,
    /// Make filesystems of this type but do not mount them (repeatable),
    /// e.g. `vfat` on a kernel without it.
    #[arg(long = "skip-mount", value_name = "FSTYPE")]
    pub skip_mount: Vec<String>,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    rewind plan web1.xml                               map disks automatically\n  \
    rewind plan web1.xml --disk vda=/dev/sdb --json    one disk, as JSON")]
pub struct PlanArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Where the filesystems would be mounted.
    #[arg(long, value_name = "DIR", default_value = "/target")]
    pub target_root: PathBuf,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without --yes the plan is printed and nothing is written.\n\
Examples:\n  \
    rewind recreate web1.xml --target-root /target --yes\n  \
    rewind recreate web1.xml --disk vda=/dev/sdb --target-root /target --grow --yes"
)]
pub struct RecreateArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Where the recreated filesystems are mounted (created if missing);
    /// they stay mounted for the restore.
    #[arg(long, value_name = "DIR")]
    pub target_root: PathBuf,
    /// Bytes of raw regions (BIOS boot partitions, the MBR boot gap) from
    /// files DIR/DISK.pN.raw and DIR/DISK.boot-gap.raw; without it those
    /// regions are left blank.
    #[arg(long, value_name = "DIR")]
    pub raw_dir: Option<PathBuf>,
    /// Write the disks. Without it, nothing is written.
    #[arg(long)]
    pub yes: bool,
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((c, p)) if !c.is_empty() && !p.is_empty() => Ok((c.to_string(), p.to_string())),
        _ => Err(format!("{s:?} is not CAPTURED=PRESENT (e.g. sda=/dev/sdb)")),
    }
}

const SYS: &str = "/sys";

/// Load the manifest, look at the disks present and plan.
pub fn make_plan(args: &LayoutArgs, target_root: &Path) -> Result<Plan> {
    let m = manifest::load(&args.manifest)?;
    plan::plan_here(
        &m,
        &PlanOptions {
            mapping: args.disks.clone(),
            grow: args.grow,
            shrink: args.shrink,
            overwrite_non_blank: args.overwrite_non_blank,
            target_root: target_root.to_path_buf(),
            skip_mount: args.skip_mount.clone(),
            tools: Tools::detect(),
        },
        &present::BootMedium::running(),
    )
}

/// `rewind plan`.
pub fn plan_command(args: PlanArgs) -> Result<()> {
    use std::io::Write;
    let plan = make_plan(&args.layout, &args.target_root)?;
    let text = if args.json {
        serde_json::to_string_pretty(&plan).context("cannot render the plan as JSON")? + "\n"
    } else {
        plan.to_string()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("cannot write to standard output")
}

/// `rewind recreate`.
pub fn recreate_command(args: RecreateArgs) -> Result<()> {
    announce(Stage::Plan);
    let plan = make_plan(&args.layout, &args.target_root)
        .context("plan stage failed; nothing was written")?;
    print!("{plan}");
    if !args.yes {
        bail!("nothing was written: pass --yes to write these disks");
    }
    let mut raw: Box<dyn RawSource> = match args.raw_dir {
        Some(dir) => Box::new(RawDir(dir)),
        None => Box::new(NoRawData),
    };
    recreate(&plan, raw.as_mut(), Path::new(SYS))
}

/// Check what can be checked before the first byte is written: every tool
/// the plan runs is installed, and the target root is free.
pub fn preflight(plan: &Plan) -> Result<()> {
    // The seam with LUKS key escrow: a LUKS layer is opened with the key
    // the recovery fetched beforehand; without it, stop before any write.
    for step in &plan.stack {
        if let stack::Expect::Luks(l) = &step.expect {
            for (what, file) in stack::luks_files(l) {
                if !Path::new(&file).is_file() {
                    bail!(
                        "nothing was written: {} needs its {what} at {file}, which this recovery has not fetched from the server (LUKS key escrow)",
                        step.layer
                    );
                }
            }
        }
    }
    let mut programs = vec!["wipefs".to_string()];
    for d in &plan.disks {
        for v in &d.volumes {
            match &v.content {
                Content::Filesystem {
                    commands,
                    subvolumes,
                    ..
                } => {
                    programs.extend(commands.iter().filter_map(|c| c.first().cloned()));
                    if !subvolumes.is_empty() {
                        programs.push("btrfs".to_string());
                    }
                }
                Content::Swap { commands, .. } => {
                    programs.extend(commands.iter().filter_map(|c| c.first().cloned()))
                }
                Content::Raw => {}
            }
        }
    }
    for step in &plan.stack {
        programs.extend(step.commands.iter().filter_map(|c| c.first().cloned()));
    }
    for v in &plan.stack_volumes {
        if let Content::Filesystem { commands, .. } | Content::Swap { commands, .. } = &v.content {
            programs.extend(commands.iter().filter_map(|c| c.first().cloned()));
        }
    }
    let mut missing: Vec<String> = programs.into_iter().filter(|p| !on_path(p)).collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        bail!(
            "nothing was written: {} not found on PATH (install them: e2fsprogs, xfsprogs, dosfstools, btrfs-progs, util-linux, mdadm, lvm2, cryptsetup)",
            missing.join(", ")
        );
    }
    let root = Path::new(&plan.target_root);
    if root.exists() {
        if !root.is_dir() {
            bail!(
                "nothing was written: target root {} is not a directory",
                root.display()
            );
        }
        let canonical = std::fs::canonicalize(root)?;
        let mounted = mount::mounts_below(&canonical)?;
        if let Some(m) = mounted.first() {
            bail!(
                "nothing was written: {} is already mounted under the target root (umount -R {} first)",
                m.display(),
                root.display()
            );
        }
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
}

/// `rewind recreate`'s marker line for a stage: `== partition`.
fn announce(stage: Stage) {
    println!("== {stage}");
}

fn warn(w: &str) {
    eprintln!("rewind: warning: {w}");
}

/// Run the stages of `plan`: partition, format, mount, each announced by
/// its `== STAGE` line, then `== done`. Filesystems stay mounted under the
/// target root when it succeeds.
pub fn recreate(plan: &Plan, raw: &mut dyn RawSource, sys: &Path) -> Result<()> {
    preflight(plan).context("preflight check failed")?;
    announce(Stage::Partition);
    partition_disks(plan, sys)?;
    announce(Stage::Format);
    format_disks(plan, raw)?;
    announce(Stage::Mount);
    let mounted = mount_filesystems(plan)?;
    // The end of the recreation, not a stage of its own.
    println!("== done");
    println!("{}", recreated(plan, mounted));
    Ok(())
}

/// The partition stage: every disk's partition table written (after
/// [`preflight`]).
pub fn partition_disks(plan: &Plan, sys: &Path) -> Result<()> {
    for d in &plan.disks {
        let nodes = partition::partition_disk(d, sys)
            .with_context(|| format!("partition stage failed on {}", d.target.path))?;
        println!(
            "  {}: {} table written, {} partition(s)",
            d.target.path,
            match d.table {
                plan::Table::Gpt(_) => "GPT",
                plan::Table::Mbr(_) => "MBR",
                plan::Table::None => "no",
            },
            nodes.len()
        );
    }
    Ok(())
}

/// The format stage: filesystems and swap made, raw regions (BIOS boot
/// partitions, the boot gap) written from `raw`; then the storage stack
/// (MD, LUKS, LVM) made on the partitions and verified against the
/// manifest, and the filesystems and swap on it made.
pub fn format_disks(plan: &Plan, raw: &mut dyn RawSource) -> Result<()> {
    for d in &plan.disks {
        for v in &d.volumes {
            format_volume(d, v, raw)
                .with_context(|| format!("format stage failed on {}", v.device))?;
        }
        if let Some(gap) = &d.boot_gap {
            boot_gap(d, gap, raw)
                .with_context(|| format!("format stage failed on {} (boot gap)", d.target.path))?;
        }
    }
    if !plan.stack.is_empty() {
        let mut runner = stack_run::SystemRunner;
        stack_run::run(plan, &mut runner)
            .context("format stage failed making the storage stack")?;
        stack_run::verify(plan, &mut runner).context("format stage failed")?;
    }
    for v in &plan.stack_volumes {
        format_stack_volume(v)
            .with_context(|| format!("format stage failed on {} ({})", v.device, v.reference))?;
    }
    Ok(())
}

/// The format stage of a resume whose storage stack did not all verify:
/// the layers [`stack_run::open::open`] left closed made again from their
/// wiped devices, read back, and the filesystems and swap on them made.
pub fn remake_stack(plan: &Plan, opened: &stack_run::open::Opened) -> Result<()> {
    let mut runner = stack_run::SystemRunner;
    stack_run::open::remake(plan, opened, &mut runner)
        .context("format stage failed making the storage stack again")?;
    let remade = opened.remade_refs(plan);
    for v in plan
        .stack_volumes
        .iter()
        .filter(|v| remade.contains(&v.reference))
    {
        format_stack_volume(v)
            .with_context(|| format!("format stage failed on {} ({})", v.device, v.reference))?;
    }
    Ok(())
}

/// Once the filesystems are unmounted: the storage stack taken down, top
/// layer first (see [`stack_run::deactivate`]); failures are warnings.
pub fn take_down_stack(plan: &Plan) {
    if plan.stack.is_empty() {
        return;
    }
    for w in stack_run::deactivate(plan, &mut stack_run::SystemRunner) {
        warn(&w);
    }
}

/// Once restored: the captured read-only btrfs subvolumes made read-only
/// again (the restore writes into them, so they are made writable). A
/// failure is a warning: the system is whole, one flag is not.
pub fn seal_subvolumes(plan: &Plan) {
    let on_disks = plan
        .disks
        .iter()
        .flat_map(|d| d.volumes.iter().map(|v| (&v.device, &v.content)));
    let on_stack = plan.stack_volumes.iter().map(|v| (&v.device, &v.content));
    for (device, content) in on_disks.chain(on_stack) {
        if let Content::Filesystem { captured, .. } = content
            && captured.subvolumes.iter().any(|s| s.read_only)
        {
            match format::seal_subvolumes(device, captured) {
                Ok(()) => println!(
                    "btrfs on {device}: read-only again: {}",
                    captured
                        .subvolumes
                        .iter()
                        .filter(|s| s.read_only)
                        .map(|s| s.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Err(e) => warn(&format!("{e:#}")),
            }
        }
    }
}

/// A filesystem or swap area on a device of the stack.
fn format_stack_volume(v: &stack::StackVolume) -> Result<()> {
    let (commands, subvolumes) = match &v.content {
        Content::Filesystem {
            commands,
            subvolumes,
            ..
        } => (commands, subvolumes.as_slice()),
        Content::Swap { commands, .. } => (commands, &[][..]),
        Content::Raw => return Ok(()),
    };
    for c in commands {
        println!("  {}", plan::argv_line(c));
        format::run_argv(c)?;
    }
    if let Content::Filesystem {
        fs_type,
        captured,
        grown,
        ..
    } = &v.content
    {
        if !subvolumes.is_empty() {
            format::create_subvolumes(&v.device, subvolumes, captured)?;
        }
        match format::verify(captured, &v.device, *grown) {
            Ok(diffs) => diffs.iter().for_each(|w| warn(w)),
            Err(e) => warn(&format!(
                "cannot check the {fs_type} made on {}: {e:#}",
                v.device
            )),
        }
    }
    Ok(())
}

/// The mount stage: the plan's filesystems mounted under its target root.
/// Returns how many were mounted.
pub fn mount_filesystems(plan: &Plan) -> Result<usize> {
    let (mounted, warnings) = mount::mount_all(&plan.mounts).context("mount stage failed")?;
    warnings.iter().for_each(|w| warn(w));
    for m in plan.mounts.iter() {
        match &m.skipped {
            None => println!("  {} on {}", m.device, m.target),
            Some(why) => println!("  {} not mounted: {why}", m.device),
        }
    }
    Ok(mounted.len())
}

/// The line that sums a recreation up, once its filesystems are mounted.
pub fn recreated(plan: &Plan, mounted: usize) -> String {
    format!(
        "{} disk(s) recreated; {} filesystem(s) mounted under {}",
        plan.disks.len(),
        mounted,
        plan.target_root
    )
}

fn format_volume(d: &DiskPlan, v: &Volume, raw: &mut dyn RawSource) -> Result<()> {
    match &v.content {
        Content::Filesystem {
            fs_type,
            commands,
            subvolumes,
            grown,
            captured,
            ..
        } => {
            for c in commands {
                println!("  {}", plan::argv_line(c));
                format::run_argv(c)?;
            }
            if !subvolumes.is_empty() {
                format::create_subvolumes(&v.device, subvolumes, captured)?;
            }
            match format::verify(captured, &v.device, *grown) {
                Ok(diffs) => diffs.iter().for_each(|w| warn(w)),
                Err(e) => warn(&format!(
                    "cannot check the {fs_type} made on {}: {e:#}",
                    v.device
                )),
            }
        }
        Content::Swap { commands, .. } => {
            for c in commands {
                println!("  {}", plan::argv_line(c));
                format::run_argv(c)?;
            }
        }
        Content::Raw => {
            let number = v.partition.unwrap_or_default();
            let len = v.sectors * u64::from(d.sector_size);
            write_raw(
                raw,
                &d.captured,
                RawRegion::Partition(number),
                &v.device,
                0,
                len,
            )?;
        }
    }
    Ok(())
}

fn boot_gap(d: &DiskPlan, gap: &manifest::BootGap, raw: &mut dyn RawSource) -> Result<()> {
    let ss = u64::from(d.sector_size);
    let len = (gap.last_lba - gap.first_lba + 1) * ss;
    write_raw(
        raw,
        &d.captured,
        RawRegion::BootGap,
        &d.target.path,
        gap.first_lba * ss,
        len,
    )
}

fn write_raw(
    raw: &mut dyn RawSource,
    disk: &str,
    region: RawRegion,
    device: &str,
    offset: u64,
    len: u64,
) -> Result<()> {
    let Some(mut src) = raw
        .open(disk, region)
        .with_context(|| format!("cannot read the saved {region} of {disk}"))?
    else {
        println!("  {device}: {region} of {disk}: no saved bytes; left blank (its ends zeroed)");
        return Ok(());
    };
    let mut f = partition::open_exclusive(device)?;
    let n = raw::copy_region(&mut src, &mut f, offset, len)
        .with_context(|| format!("cannot restore the {region} of {disk}"))?;
    f.sync_all()
        .with_context(|| format!("cannot flush {device}"))?;
    println!("  {device}: {region} of {disk}: {n} bytes restored");
    Ok(())
}
