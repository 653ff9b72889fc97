//! Interface names on new hardware. A NIC that no configuration pins by
//! MAC gets whatever name udev derives from its new slot (`enp3s0` instead of
//! `enp1s0`), and every configuration naming the old one stops applying. A
//! systemd `.link` file giving the new MAC the captured name keeps them
//! working.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::NicMatch;
use super::configs::NETWORKD_DIR;
use super::files::Workspace;

/// Where systemd-udevd (which applies `.link` files) is installed.
const UDEVD: [&str; 2] = [
    "/lib/systemd/systemd-udevd",
    "/usr/lib/systemd/systemd-udevd",
];

/// The `.link` file rewind writes for interface `name`. One per name, so a
/// later recovery replaces it instead of adding another.
fn link_path(name: &str) -> PathBuf {
    Path::new(NETWORKD_DIR).join(format!("10-rewind-{name}.link"))
}

/// The text of [`link_path`]; `10-` sorts it before the distribution's and
/// the administrator's usual `.link` files, so it is the one that applies.
pub(super) fn link_text(name: &str, mac: &str) -> String {
    format!(
        "# Written by rewind at recovery: keeps the captured name {name} on this NIC.\n\
         [Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n"
    )
}

/// Write a `.link` for every changed NIC that `pinned` (the MACs some
/// matcher names) does not cover.
pub(super) fn write_links(
    ws: &mut Workspace,
    matches: &[NicMatch],
    pinned: &HashSet<String>,
) -> Result<()> {
    let udevd = UDEVD.iter().any(|p| ws.exists(Path::new(p)));
    for m in matches {
        let Some(old) = m.old_mac.as_deref() else {
            continue;
        };
        let new = &m.new.mac;
        if old.eq_ignore_ascii_case(new) || pinned.contains(old) || pinned.contains(new) {
            continue;
        }
        let path = link_path(&m.captured);
        if !udevd {
            ws.warn(
                &path,
                format!(
                    "no systemd-udevd in the restored system: {} (now {new}) may get another name",
                    m.captured
                ),
            );
            continue;
        }
        let text = link_text(&m.captured, new);
        if ws.text(&path)?.as_deref() != Some(text.as_str()) {
            ws.set(
                &path,
                text,
                vec![format!(
                    "name {} given to MAC {new} (was {old})",
                    m.captured
                )],
            );
        }
        if is_kernel_style(&m.captured) && matches.len() > 1 {
            ws.warn(
                &path,
                format!(
                    "{} is a kernel-style name: renaming to it can collide with the \
                     kernel's own ethN names at boot",
                    m.captured
                ),
            );
        }
    }
    Ok(())
}

/// `eth0`, `wlan1`: names the kernel itself hands out.
fn is_kernel_style(name: &str) -> bool {
    ["eth", "wlan"].iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
    })
}
