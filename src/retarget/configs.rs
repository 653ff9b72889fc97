//! Where each network configuration system keeps the files a restore
//! brings back. Only /etc: /run is not restored, and /lib and /usr hold the
//! packages' defaults, which name no particular machine.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::files::Workspace;
use crate::netconf;

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
    let root = ws.root();
    let files =
        netconf::ifupdown::walk(root, Path::new(netconf::ifupdown::INTERFACES), &mut |p| {
            ws.text(p)
        })?;
    Ok(files.into_iter().map(|(path, _)| path).collect())
}
