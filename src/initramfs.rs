//! The restored system's initramfs, regenerated for the machine it now runs
//! on. An initramfs built in host-only mode (dracut's default on RHEL-family
//! systems, initramfs-tools' `MODULES=dep`) carries only the drivers of the
//! hardware it was built on: restored onto another disk controller or NIC,
//! every file is back and the machine still cannot find its root. So, in the
//! `configure` stage, when the hardware differs from the captured one (or
//! when asked, `rewind.initramfs=regenerate`), the restored system's own
//! tool rebuilds it in a chroot where /sys shows the new hardware.
//!
//! What differs is decided here from what the manifest recorded and what
//! the live image sees (pure, tested); running the tool is [`regenerate`].

use std::path::Path;

use anyhow::{Context, Result};

use crate::console::say;
use crate::manifest::{Firmware, Manifest};

/// `rewind.initramfs=`: when to regenerate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Always.
    Regenerate,
    /// When the disk controllers, NIC drivers or firmware mode differ.
    #[default]
    Auto,
    /// Never: the captured initramfs is kept as restored.
    Keep,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "regenerate" => Ok(Mode::Regenerate),
            "auto" => Ok(Mode::Auto),
            "keep" => Ok(Mode::Keep),
            _ => Err(format!(
                "{s:?}: give regenerate, auto or keep (auto regenerates when the hardware differs)"
            )),
        }
    }
}

/// The initramfs system of a restored root, found by its tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    InitramfsTools,
    Dracut,
    Mkinitcpio,
}

impl std::fmt::Display for Tool {
    /// The system's name as its users know it (what the report prints).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tool::InitramfsTools => "initramfs-tools",
            Tool::Dracut => "dracut",
            Tool::Mkinitcpio => "mkinitcpio",
        })
    }
}

impl Tool {
    /// Which tool `root` uses: dracut where both are installed (a system
    /// switched to dracut keeps initramfs-tools' files on Debian).
    pub fn detect(root: &Path) -> Option<Tool> {
        let has = |paths: &[&str]| paths.iter().any(|p| root.join(p).exists());
        if has(&["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"]) {
            Some(Tool::Dracut)
        } else if has(&["usr/sbin/update-initramfs", "sbin/update-initramfs"]) {
            Some(Tool::InitramfsTools)
        } else if has(&["usr/bin/mkinitcpio"]) {
            Some(Tool::Mkinitcpio)
        } else {
            None
        }
    }

    /// The command that rebuilds every installed kernel's initramfs;
    /// `drivers` are added where the tool takes them on its command line
    /// (dracut; initramfs-tools and mkinitcpio find them from /sys).
    pub fn argv(self, drivers: &[String]) -> (&'static str, Vec<String>) {
        match self {
            Tool::InitramfsTools => (
                "update-initramfs",
                vec!["-u".into(), "-k".into(), "all".into()],
            ),
            Tool::Dracut => {
                let mut a = vec!["-f".to_string(), "--regenerate-all".to_string()];
                if !drivers.is_empty() {
                    a.push("--add-drivers".into());
                    a.push(drivers.join(" "));
                }
                ("dracut", a)
            }
            Tool::Mkinitcpio => ("mkinitcpio", vec!["-P".into()]),
        }
    }
}

/// What the live image sees of the hardware that matters to an initramfs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hardware {
    pub firmware: Option<Firmware>,
    /// Drivers of the NICs present (`e1000e`, `virtio_net`).
    pub nic_drivers: Vec<String>,
    /// For each captured disk (by its manifest name), the kernel name of the
    /// disk it is recreated on.
    pub disks: Vec<(String, String)>,
}

/// The kind of controller a kernel disk name implies: what the initramfs
/// needs a driver for. Names are the kernel's own (`vda`, `nvme0n1`).
fn disk_class(name: &str) -> &'static str {
    if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("vd") {
        "virtio"
    } else if name.starts_with("xvd") {
        "xen"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if name.starts_with("sd") {
        "scsi/sata"
    } else {
        "other"
    }
}

/// Why the captured initramfs may not fit this hardware: one line per
/// difference, empty when nothing that matters changed.
pub fn hardware_changes(m: &Manifest, now: &Hardware) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(fw) = now.firmware
        && fw != m.system.firmware
    {
        out.push(format!(
            "firmware: captured {:?}, now {fw:?}",
            m.system.firmware
        ));
    }
    for (captured, present) in &now.disks {
        let (was, is) = (disk_class(captured), disk_class(present));
        if was != is {
            out.push(format!("disk {captured} ({was}) is now {present} ({is})"));
        }
    }
    let mut missing: Vec<&str> = m
        .network
        .interfaces
        .iter()
        .filter_map(|i| i.driver.as_deref())
        .filter(|d| !now.nic_drivers.iter().any(|n| n == d))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        let mut present = now.nic_drivers.clone();
        present.sort_unstable();
        present.dedup();
        out.push(format!(
            "NIC driver {} not present (now: {})",
            missing.join(", "),
            if present.is_empty() {
                "none".to_string()
            } else {
                present.join(", ")
            }
        ));
    }
    out
}

/// Whether to regenerate, and why, for the console.
pub fn decide(mode: Mode, changes: &[String]) -> (bool, String) {
    match mode {
        Mode::Keep => (false, "kept as restored (rewind.initramfs=keep)".into()),
        Mode::Regenerate => (
            true,
            "regenerated as asked (rewind.initramfs=regenerate)".into(),
        ),
        Mode::Auto if changes.is_empty() => (
            false,
            "kept as restored: same disk controllers, NIC drivers and firmware mode".into(),
        ),
        Mode::Auto => (true, format!("regenerated: {}", changes.join("; "))),
    }
}

/// The kernel modules driving a block device and the buses above it, from
/// sysfs (`nvme`, `virtio_blk`, `ahci`, `sd_mod`): what dracut is told to
/// add. A driver's module name is read from its `module` link (the driver
/// `sd` is the module `sd_mod`); built-in drivers have none and need none.
pub fn disk_drivers(sys: &Path, disk: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(mut dev) = sys.join("block").join(disk).join("device").canonicalize() else {
        return out;
    };
    // Up to the bus root: a few levels hold the controller's driver.
    for _ in 0..8 {
        if let Ok(target) = std::fs::read_link(dev.join("driver/module"))
            && let Some(name) = target.file_name()
        {
            let name = name.to_string_lossy().into_owned();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        if !dev.pop() || dev == sys {
            break;
        }
    }
    out
}

/// Where the tool's configuration must name `drivers` so that this and
/// every later initramfs carries them (a kernel update rebuilds it too),
/// and that file's new text; `None` when nothing needs adding.
/// initramfs-tools in `MODULES=list` or `dep` mode, and dracut in host-only
/// mode, would otherwise leave out the drivers of hardware they did not see.
pub fn config_update(root: &Path, tool: Tool, drivers: &[String]) -> Option<(String, String)> {
    if drivers.is_empty() {
        return None;
    }
    match tool {
        Tool::InitramfsTools => {
            let rel = "etc/initramfs-tools/modules";
            let old = std::fs::read_to_string(root.join(rel)).unwrap_or_default();
            let listed: Vec<&str> = old
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|w| !w.starts_with('#'))
                .collect();
            let missing: Vec<&String> = drivers
                .iter()
                .filter(|d| !listed.contains(&d.as_str()))
                .collect();
            if missing.is_empty() {
                return None;
            }
            let mut text = old.clone();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(
                "# Added by rewind's recovery: drivers of the machine it was recovered onto.\n",
            );
            for d in missing {
                text.push_str(d);
                text.push('\n');
            }
            Some((rel.to_string(), text))
        }
        Tool::Dracut => Some((
            "etc/dracut.conf.d/50-rewind-recovered-hardware.conf".to_string(),
            format!(
                "# Written by rewind's recovery: drivers of the machine it was recovered onto.\nadd_drivers+=\" {} \"\n",
                drivers.join(" ")
            ),
        )),
        // mkinitcpio's autodetect hook reads /sys, which shows this machine.
        Tool::Mkinitcpio => None,
    }
}

/// Rebuild the initramfs of every kernel installed in `root` with its own
/// tool, in a chroot with /dev, /proc and /sys of this machine, showing the
/// tool's output, after making its configuration name `drivers`. A failure
/// carries the command line and its stderr.
pub fn regenerate(root: &Path, tool: Tool, drivers: &[String]) -> Result<()> {
    if let Some((rel, text)) = config_update(root, tool, drivers) {
        let path = root.join(&rel);
        crate::util::fs::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        say(&format!("/{rel}: now names {}", drivers.join(", ")));
    }
    let (program, args) = tool.argv(drivers);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = format!(
        "chroot {} {}",
        root.display(),
        crate::cmd::display_argv(program, &args)
    );
    say(&line);
    let out = crate::cmd::with_chroot_binds(root, || crate::cmd::run_chroot(root, program, &args))
        .with_context(|| format!("cannot regenerate the initramfs: `{line}`"))?;
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        say(&format!("  {l}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/golden/manifest-schema1.xml"),
        )
        .unwrap();
        crate::manifest::from_xml(&text).unwrap()
    }

    fn same_hardware() -> Hardware {
        Hardware {
            firmware: Some(Firmware::Uefi),
            nic_drivers: vec!["virtio_net".into()],
            disks: vec![("vda".into(), "vda".into()), ("vdb".into(), "vdc".into())],
        }
    }

    #[test]
    fn same_hardware_keeps_the_initramfs() {
        let m = manifest();
        let changes = hardware_changes(&m, &same_hardware());
        assert!(changes.is_empty(), "{changes:?}");
        assert!(!decide(Mode::Auto, &changes).0);
        assert!(decide(Mode::Regenerate, &changes).0);
    }

    #[test]
    fn another_controller_nic_or_firmware_regenerates() {
        let m = manifest();
        let mut hw = same_hardware();
        hw.disks[0].1 = "nvme0n1".into();
        hw.nic_drivers = vec!["e1000e".into(), "e1000e".into()];
        hw.firmware = Some(Firmware::Bios);
        let changes = hardware_changes(&m, &hw);
        assert_eq!(
            changes,
            [
                "firmware: captured Uefi, now Bios",
                "disk vda (virtio) is now nvme0n1 (nvme)",
                "NIC driver virtio_net not present (now: e1000e)",
            ]
        );
        let (yes, why) = decide(Mode::Auto, &changes);
        assert!(yes);
        assert!(why.starts_with("regenerated: firmware"), "{why}");
        assert!(!decide(Mode::Keep, &changes).0);
    }

    #[test]
    fn tools_are_found_and_their_commands_built() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Tool::detect(d.path()), None);
        std::fs::create_dir_all(d.path().join("usr/sbin")).unwrap();
        std::fs::write(d.path().join("usr/sbin/update-initramfs"), "").unwrap();
        assert_eq!(Tool::detect(d.path()), Some(Tool::InitramfsTools));
        std::fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        std::fs::write(d.path().join("usr/bin/dracut"), "").unwrap();
        assert_eq!(Tool::detect(d.path()), Some(Tool::Dracut));
        let drivers = vec!["nvme".to_string(), "e1000e".to_string()];
        assert_eq!(
            Tool::Dracut.argv(&drivers),
            (
                "dracut",
                vec![
                    "-f".into(),
                    "--regenerate-all".into(),
                    "--add-drivers".into(),
                    "nvme e1000e".into()
                ]
            )
        );
        assert_eq!(
            Tool::InitramfsTools.argv(&drivers),
            (
                "update-initramfs",
                vec!["-u".into(), "-k".into(), "all".into()]
            )
        );
        assert_eq!(Tool::Mkinitcpio.argv(&[]).1, ["-P"]);
    }

    #[test]
    fn configurations_name_the_new_drivers_once() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("etc/initramfs-tools")).unwrap();
        std::fs::write(
            root.join("etc/initramfs-tools/modules"),
            "# comment\nvirtio_blk\next4",
        )
        .unwrap();
        let drivers = vec!["nvme".to_string(), "virtio_blk".to_string()];
        let (rel, text) = config_update(root, Tool::InitramfsTools, &drivers).unwrap();
        assert_eq!(rel, "etc/initramfs-tools/modules");
        assert!(
            text.starts_with("# comment\nvirtio_blk\next4\n# Added by rewind"),
            "{text}"
        );
        assert!(text.ends_with("\nnvme\n"), "{text}");
        std::fs::write(root.join(&rel), &text).unwrap();
        assert_eq!(config_update(root, Tool::InitramfsTools, &drivers), None);
        let (rel, text) = config_update(root, Tool::Dracut, &drivers).unwrap();
        assert_eq!(rel, "etc/dracut.conf.d/50-rewind-recovered-hardware.conf");
        assert!(
            text.contains("add_drivers+=\" nvme virtio_blk \""),
            "{text}"
        );
        assert_eq!(config_update(root, Tool::Mkinitcpio, &drivers), None);
        assert_eq!(config_update(root, Tool::Dracut, &[]), None);
    }

    #[test]
    fn modes_parse_and_refuse_with_the_choices() {
        assert_eq!("keep".parse::<Mode>(), Ok(Mode::Keep));
        assert_eq!("auto".parse::<Mode>(), Ok(Mode::Auto));
        let e = "sometimes".parse::<Mode>().unwrap_err();
        assert!(e.contains("regenerate, auto or keep"), "{e}");
    }

    #[test]
    fn disk_drivers_walk_up_to_the_controller() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        let pci = sys.join("devices/pci0000:00/0000:00:04.0");
        let nvme = pci.join("nvme/nvme0");
        std::fs::create_dir_all(&nvme).unwrap();
        let driver = sys.join("bus/pci/drivers/nvme");
        std::fs::create_dir_all(&driver).unwrap();
        std::fs::create_dir_all(sys.join("module/nvme")).unwrap();
        std::os::unix::fs::symlink(sys.join("module/nvme"), driver.join("module")).unwrap();
        std::os::unix::fs::symlink(&driver, pci.join("driver")).unwrap();
        // A built-in driver (no module link) adds nothing.
        let builtin = sys.join("bus/nvme/drivers/builtin");
        std::fs::create_dir_all(&builtin).unwrap();
        std::os::unix::fs::symlink(&builtin, nvme.join("driver")).unwrap();
        std::fs::create_dir_all(sys.join("block/nvme0n1")).unwrap();
        std::os::unix::fs::symlink(&nvme, sys.join("block/nvme0n1/device")).unwrap();
        assert_eq!(disk_drivers(sys, "nvme0n1"), ["nvme"]);
        assert!(disk_drivers(sys, "sdz").is_empty());
    }
}
