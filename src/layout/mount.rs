//! Mounting the recreated filesystems under the target root, parents
//! first, and unmounting them again, children first, retrying while busy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::plan::MountStep;
// Pure rules of the plan, still reachable here where they were first.
pub use super::plan::order_key;
use crate::probe::fs::parse_mountinfo;

/// Split fstab options into mount(2) flags and the filesystem's data string.
pub fn split_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options.split(',').filter(|o| !o.is_empty()) {
        let (set, clear) = match o {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            _ => {
                data.push(o);
                continue;
            }
        };
        flags.remove(clear);
        flags.insert(set);
    }
    (flags, data.join(","))
}

/// Mount one filesystem. When the kernel refuses the captured options (a
/// recovery kernel may not know one), mount with only what the layout
/// needs (a btrfs subvolume) and return a warning saying so.
pub fn mount_one(
    device: &str,
    target: &Path,
    fs_type: &str,
    options: &str,
) -> Result<Option<String>> {
    let (flags, data) = split_options(options);
    let attempt = |flags: MsFlags, data: &str| {
        nix::mount::mount(
            Some(device),
            target,
            Some(fs_type),
            flags,
            (!data.is_empty()).then_some(data),
        )
    };
    match attempt(flags, &data) {
        Ok(()) => Ok(None),
        Err(first) => {
            let essential: Vec<&str> = data
                .split(',')
                .filter(|o| o.starts_with("subvol="))
                .collect();
            let essential = essential.join(",");
            if essential == data && flags.is_empty() {
                bail!(
                    "mount -t {fs_type} -o {options} {device} {}: {first}",
                    target.display()
                );
            }
            attempt(MsFlags::empty(), &essential).with_context(|| {
                format!(
                    "mount -t {fs_type} -o {options} {device} {}: {first}; and without those options",
                    target.display()
                )
            })?;
            Ok(Some(format!(
                "{device} on {}: the kernel refused options {options} ({first}); mounted with {}",
                target.display(),
                if essential.is_empty() {
                    "defaults"
                } else {
                    &essential
                }
            )))
        }
    }
}

/// Mount every step not skipped, creating mount points. On failure,
/// whatever this call mounted is unmounted again. Returns the mounted
/// targets (for [`unmount_all`]) and warnings.
pub fn mount_all(steps: &[MountStep]) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut mounted: Vec<PathBuf> = Vec::new();
    let mut warnings = Vec::new();
    for s in steps.iter().filter(|s| s.skipped.is_none()) {
        let target = PathBuf::from(&s.target);
        let result = std::fs::create_dir_all(&target)
            .with_context(|| format!("cannot create mount point {}", target.display()))
            .and_then(|()| mount_one(&s.device, &target, &s.fs_type, &s.options));
        match result {
            Ok(w) => {
                warnings.extend(w);
                mounted.push(target);
            }
            Err(e) => {
                let undo = unmount_all(&mounted);
                let e = e.context(format!("cannot mount {} on {}", s.device, s.target));
                return Err(match undo {
                    Ok(()) => e,
                    Err(u) => {
                        e.context(format!("and unmounting what was mounted failed too: {u:#}"))
                    }
                });
            }
        }
    }
    Ok((mounted, warnings))
}

/// Unmount `targets` in reverse order (children before parents), retrying
/// a busy one for a few seconds.
pub fn unmount_all(targets: &[PathBuf]) -> Result<()> {
    for t in targets.iter().rev() {
        unmount_one(t)?;
    }
    Ok(())
}

/// Tries, and the pause between them, for a busy mount.
const BUSY_TRIES: u32 = 25;
const BUSY_PAUSE: Duration = Duration::from_millis(200);

pub fn unmount_one(target: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(Errno::EBUSY) if tries < BUSY_TRIES => {
                tries += 1;
                std::thread::sleep(BUSY_PAUSE);
            }
            Err(e) => {
                let hint = if e == Errno::EBUSY {
                    format!(
                        " after {:.0} s: a process still uses it (fuser -vm {})",
                        (BUSY_PAUSE * BUSY_TRIES).as_secs_f32(),
                        target.display()
                    )
                } else {
                    String::new()
                };
                bail!("cannot unmount {}: {e}{hint}", target.display());
            }
        }
    }
}

/// Unmount everything mounted at or below `root`, deepest first: the way
/// to undo a recreate whatever its state.
pub fn unmount_below(root: &Path) -> Result<()> {
    let root = std::fs::canonicalize(root)
        .with_context(|| format!("cannot resolve {}", root.display()))?;
    let mut points = mounts_below(&root)?;
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        unmount_one(&p)?;
    }
    Ok(())
}

/// Mount points at or below `root` (canonical), from /proc/self/mountinfo;
/// a point mounted twice is listed twice.
pub fn mounts_below(root: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text)?
        .into_iter()
        .map(|mi| PathBuf::from(mi.mount_point))
        .filter(|p| p.starts_with(root))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_data() {
        let (f, d) = split_options("rw,nosuid,nodev,relatime,errors=remount-ro,noatime");
        assert_eq!(
            f,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RELATIME | MsFlags::MS_NOATIME
        );
        assert_eq!(d, "errors=remount-ro");
        let (f, d) = split_options("ro,rw,subvol=/@");
        assert_eq!(f, MsFlags::empty());
        assert_eq!(d, "subvol=/@");
    }
}
