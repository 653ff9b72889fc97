//! Where each network configuration system keeps the files a restore
//! brings back. Only /etc: /run is not restored, and /lib and /usr hold the
//! packages' defaults, which name no particular machine.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::files::Workspace;
use crate::probe::net::{IfupdownInclude, glob_match, list_dir, parse_ifupdown};

pub(super) const NETWORKD_DIR: &str = "/etc/systemd/network";
const NM_DIR: &str = "/etc/NetworkManager/system-connections";

/// systemd `.link`, `.network` and `.netdev` files, in name order.
pub(super) fn networkd(ws: &Workspace) -> Result<Vec<PathBuf>> {
    let dir = Path::new(NETWORKD_DIR);
    let mut out = Vec::new();
    for suffix in [".link", ".network", ".netdev"] {
        out.extend(ws.list(dir, suffix)?);
    }
    out.sort();
    Ok(out)
}

/// NetworkManager keyfiles: `.nmconnection`, and the suffix-less files of
/// older releases (backups and editor files excluded, as NM does).
pub(super) fn nm(ws: &Workspace) -> Result<Vec<PathBuf>> {
    Ok(ws
        .list(Path::new(NM_DIR), "")?
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            !(n.ends_with('~')
                || n.ends_with(".bak")
                || n.ends_with(".orig")
                || n.ends_with(".rej")
                || n.contains(".dpkg-")
                || n.contains(".rpm"))
        })
        .collect())
}

pub(super) fn netplan(ws: &Workspace) -> Result<Vec<PathBuf>> {
    ws.list(Path::new("/etc/netplan"), ".yaml")
}

pub(super) fn udev_rules(ws: &Workspace) -> Result<Vec<PathBuf>> {
    ws.list(Path::new("/etc/udev/rules.d"), ".rules")
}

/// /etc/network/interfaces and what it includes (`source`,
/// `source-directory`), as ifupdown reads them.
pub(super) fn ifupdown(ws: &mut Workspace) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = vec![PathBuf::from("/etc/network/interfaces")];
    while let Some(path) = pending.pop() {
        if seen.len() > 64 || !seen.insert(path.clone()) {
            continue;
        }
        let Some(text) = ws.text(&path)? else {
            continue;
        };
        out.push(path.clone());
        let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut found = Vec::new();
        for include in parse_ifupdown(&text).includes {
            let (pattern, dir_only) = match &include {
                IfupdownInclude::Source(p) => (base.join(p), false),
                IfupdownInclude::Directory(d) => (base.join(d).join("*"), true),
            };
            let Some(file_pattern) = pattern.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let dir = pattern.parent().unwrap_or(Path::new("/"));
            if !file_pattern.contains(['*', '?', '[']) {
                found.push(pattern.clone());
                continue;
            }
            for name in list_dir(ws.root(), dir)? {
                let wanted = if dir_only {
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                } else {
                    glob_match(file_pattern, &name)
                        && (!name.starts_with('.') || file_pattern.starts_with('.'))
                };
                if wanted {
                    found.push(dir.join(&name));
                }
            }
        }
        // Depth first, in the order the including file names them.
        pending.extend(found.into_iter().rev());
    }
    Ok(out)
}
