//! How the system builds its initramfs: which tool, and the settings that
//! make its images carry only the drivers of this hardware (initramfs-tools'
//! `MODULES=dep`, dracut's `hostonly=yes`, mkinitcpio's `autodetect` hook).
//! Recorded so that a recovery onto other hardware knows what it restores.

use std::path::Path;

use crate::manifest::InitramfsConfig;

/// The initramfs configuration of the system rooted at `root`; `None` when
/// none of the three tools is installed. dracut wins where both dracut and
/// initramfs-tools are (a Debian system switched to dracut keeps the
/// other's files), as in the recovery's configure step.
pub fn read_initramfs(root: &Path) -> Option<InitramfsConfig> {
    let has = |paths: &[&str]| paths.iter().any(|p| root.join(p).exists());
    if has(&["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"]) {
        let mut files = conf_files(root, "usr/lib/dracut/dracut.conf.d");
        files.push(root.join("etc/dracut.conf"));
        files.extend(conf_files(root, "etc/dracut.conf.d"));
        let hostonly = last_setting(&files, "hostonly").map(|v| {
            if matches!(v.as_str(), "yes" | "1" | "true") {
                "yes".to_string()
            } else {
                "no".to_string()
            }
        });
        let modules = last_setting(&files, "add_drivers").filter(|m| !m.trim().is_empty());
        return Some(InitramfsConfig {
            tool: "dracut".into(),
            modules: modules.map(|m| m.split_whitespace().collect::<Vec<_>>().join(" ")),
            hostonly,
        });
    }
    if has(&["usr/sbin/update-initramfs", "sbin/update-initramfs"]) {
        let mut files = vec![root.join("etc/initramfs-tools/initramfs.conf")];
        files.extend(conf_files(root, "etc/initramfs-tools/conf.d"));
        let modules = last_setting(&files, "MODULES");
        return Some(InitramfsConfig {
            tool: "initramfs-tools".into(),
            hostonly: modules
                .as_deref()
                .map(|m| if m == "dep" { "yes" } else { "no" }.to_string()),
            modules,
        });
    }
    if has(&["usr/bin/mkinitcpio"]) {
        let files = [root.join("etc/mkinitcpio.conf")];
        let list = |key: &str| {
            last_setting(&files, key).map(|v| {
                v.trim_matches(|c| c == '(' || c == ')')
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        };
        return Some(InitramfsConfig {
            tool: "mkinitcpio".into(),
            modules: list("MODULES").filter(|m| !m.is_empty()),
            hostonly: list("HOOKS").map(|h| {
                if h.split(' ').any(|x| x == "autodetect") {
                    "yes".to_string()
                } else {
                    "no".to_string()
                }
            }),
        });
    }
    None
}

/// `DIR/*.conf` under `root`, in name order (the order the tools read them).
fn conf_files(root: &Path, dir: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(root.join(dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    v.sort();
    v
}

/// The value the last of `files` gives shell variable `key` (`KEY=value`,
/// `KEY="value"`, `KEY+=" value"` appends), unquoted.
fn last_setting(files: &[std::path::PathBuf], key: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let (append, rest) = if let Some(r) = line.strip_prefix(&format!("{key}+=")) {
                (true, r)
            } else if let Some(r) = line.strip_prefix(&format!("{key}=")) {
                (false, r)
            } else {
                continue;
            };
            let rest = rest.split(" #").next().unwrap_or(rest).trim();
            let v = rest.trim_matches(|c| c == '"' || c == '\'').to_string();
            value = Some(match (append, value.take()) {
                (true, Some(old)) => format!("{old} {}", v.trim()),
                _ => v.trim().to_string(),
            });
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = t.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        t
    }

    #[test]
    fn initramfs_tools_modules_dep_is_host_only() {
        let t = tree(&[
            ("usr/sbin/update-initramfs", ""),
            (
                "etc/initramfs-tools/initramfs.conf",
                "# comment\nMODULES=most\nBUSYBOX=auto\n",
            ),
            ("etc/initramfs-tools/conf.d/zz-local.conf", "MODULES=dep\n"),
        ]);
        assert_eq!(
            read_initramfs(t.path()),
            Some(InitramfsConfig {
                tool: "initramfs-tools".into(),
                modules: Some("dep".into()),
                hostonly: Some("yes".into()),
            })
        );
    }

    #[test]
    fn dracut_wins_and_reads_every_conf_in_order() {
        let t = tree(&[
            ("usr/sbin/update-initramfs", ""),
            ("usr/bin/dracut", ""),
            (
                "usr/lib/dracut/dracut.conf.d/01-dist.conf",
                "hostonly=\"yes\"\n",
            ),
            (
                "etc/dracut.conf.d/10-drivers.conf",
                "add_drivers+=\" nvme \"\n",
            ),
            (
                "etc/dracut.conf.d/20-more.conf",
                "add_drivers+=\" ahci \"\n",
            ),
        ]);
        assert_eq!(
            read_initramfs(t.path()),
            Some(InitramfsConfig {
                tool: "dracut".into(),
                modules: Some("nvme ahci".into()),
                hostonly: Some("yes".into()),
            })
        );
        let t = tree(&[("usr/bin/dracut", "")]);
        assert_eq!(
            read_initramfs(t.path()).map(|c| (c.modules, c.hostonly)),
            Some((None, None))
        );
    }

    #[test]
    fn mkinitcpio_autodetect_and_modules() {
        let t = tree(&[
            ("usr/bin/mkinitcpio", ""),
            (
                "etc/mkinitcpio.conf",
                "MODULES=(nvme  virtio_blk)\nHOOKS=(base udev autodetect modconf block filesystems)\n",
            ),
        ]);
        assert_eq!(
            read_initramfs(t.path()),
            Some(InitramfsConfig {
                tool: "mkinitcpio".into(),
                modules: Some("nvme virtio_blk".into()),
                hostonly: Some("yes".into()),
            })
        );
        assert_eq!(read_initramfs(tree(&[]).path()), None);
    }
}
