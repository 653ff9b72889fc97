//! Make a restored root filesystem fit the machine it was restored onto.
//!
//! After the data is back under a mounted root (`/target`), its network
//! configuration still names the old hardware's MAC addresses, and the
//! operator may want another host name or address (recovery to another
//! site). This module rewrites the files concerned; it is pure file work (no
//! netlink, no global state), so it is tested on fixture trees.
//!
//! The recovery's `configure` stage calls, in this order:
//!
//! ```text
//! let present = present_nics(Path::new("/sys"))?;             // this machine's NICs
//! let (matches, warnings) = match_nics(&m.network.interfaces, &present);
//! let ov = init::cmdline::parse(&cmdline).overrides;            // rewind.hostname=, rewind.address=
//! let changes = retarget(Path::new("/target"), &m, &matches, &ov, &disk_names)?;
//! ```
//!
//! - [`present_nics`]`(sys: &Path) -> Result<Vec<PresentNic>>`
//! - [`match_nics`]`(captured: &[Interface], present: &[PresentNic]) -> (Vec<NicMatch>, Vec<String>)`
//! - [`parse_hostname`]`(&str) -> Result<String, String>`,
//!   [`parse_address`]`(&str) -> Result<AddressOverride, String>` (the
//!   kernel command line's `rewind.hostname=` and `rewind.address=`, which
//!   init::cmdline parses into [`Overrides`])
//! - [`retarget`]`(root, &Manifest, &[NicMatch], &Overrides, &DiskNames) -> Result<Vec<Change>>`
//!
//! What [`retarget`] does, each step listing a [`Change`] per edit:
//!
//! 1. [`mac`]: MAC addresses in *matchers* (systemd `.link`/`.network`
//!    `[Match] MACAddress=`/`PermanentMACAddress=`, udev
//!    `ATTR{address}==`, NetworkManager `mac-address=`, netplan
//!    `match: macaddress:`) are changed from each old NIC's to its new NIC's.
//!    MAC *setters* (ifupdown `hwaddress`, NM `cloned-mac-address`, networkd
//!    `[Link] MACAddress=`, `.netdev` `MACAddress=`, netplan `macaddress:`
//!    outside `match:`) are deliberately left as configured — they give the
//!    machine a chosen identity on the network (DHCP reservations, licences)
//!    that a restore should keep — and a warning says so.
//! 2. [`names`]: an interface whose MAC changed and that no matcher pins gets
//!    `/etc/systemd/network/10-rewind-<name>.link` (new MAC → captured name),
//!    when the root has systemd-udevd, so configs naming it keep working.
//! 3. [`host`]: with a host name override, `/etc/hostname` and `/etc/hosts`.
//! 4. [`addresses`]: with address overrides, the captured static address
//!    (and default gateway) wherever ifupdown, networkd, NM or netplan
//!    configures it.
//! 5. [`disks`]: the old disks' device paths — `/dev/disk/by-id/` names and
//!    kernel names (`/dev/vda1` → `/dev/nvme0n1p1`) — in fstab, crypttab,
//!    GRUB's device.map and kernel command line, and the hibernation
//!    device's settings (`resume=`), old disk → new disk.
//! 6. [`stack`]: mdadm.conf (`ARRAY devices=` dropped, old disks' by-id
//!    names renamed, arrays checked against the snapshot's) and the LVM
//!    devices file (moved aside when it names the old disks).
//!
//! Files are edited as text, line by line: everything not changed stays
//! byte-identical, a file whose text does not change is not written, and a
//! changed one is replaced atomically with its mode, owner and xattrs (see
//! [`files`]). Paths are resolved inside `root`: a symlink never leads out of
//! it. A file that cannot be understood (not UTF-8) is left alone with a
//! [`ChangeKind::Warning`]; only I/O errors on writing fail the call.
//! Running it twice changes nothing the second time.

mod addresses;
mod configs;
mod disks;
mod files;
mod host;
mod mac;
mod names;
mod nics;
mod stack;
mod text;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::manifest::Manifest;

pub use disks::DiskNames;
pub use nics::{MatchHow, NicMatch, PresentNic, match_nics, present_nics};

/// Whether `file` (absolute on the restored system), when [`retarget`]
/// changes it, makes the initramfs stale: it carries a copy of it, or is
/// made from it (mdadm.conf, the LVM devices file, crypttab, the resume
/// device's settings, dracut's configuration).
pub fn in_initramfs(file: &str) -> bool {
    stack::in_initramfs(file) || disks::in_initramfs(file)
}

/// One thing [`retarget`] did (or declined to do) to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file, relative to the root (`etc/fstab`), after symlinks; empty
    /// for a warning about no file in particular (an override not applied).
    pub file: PathBuf,
    /// A line for the console: `MAC 52:54:00:12:34:56 -> 52:54:00:ab:cd:ef`.
    pub what: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// An existing file was rewritten.
    Edited,
    /// A file was written that did not exist.
    Created,
    /// Nothing was written; the operator should look (`what` says why).
    Warning,
}

/// What the operator asked to be different on the recovered machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `rewind.hostname=NAME`.
    pub hostname: Option<String>,
    /// `rewind.address=IFACE:CIDR[:GATEWAY]`, repeatable.
    pub addresses: Vec<AddressOverride>,
}

/// A new static address for a captured interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressOverride {
    /// The captured interface name (as in the manifest).
    pub iface: String,
    pub ip: IpAddr,
    pub prefix: u8,
    /// The new default gateway; `None` leaves the configured one.
    pub gateway: Option<IpAddr>,
}

impl AddressOverride {
    /// `A/P`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }
}

/// The value of `rewind.hostname=`: a host name (RFC 1123 labels, dots
/// allowed for a fully qualified name).
pub fn parse_hostname(v: &str) -> Result<String, String> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if v.is_empty() || v.len() > 253 || !v.split('.').all(ok_label) {
        return Err("not a host name (letters, digits, '-' and dots)".to_string());
    }
    Ok(v.to_string())
}

/// The value of `rewind.address=`: `IFACE:CIDR[:GATEWAY]`, as in
/// `eth0:192.0.2.10/24:192.0.2.1` or `eth0:2001:db8::10/64:2001:db8::1`
/// (the prefix length ends the address, so IPv6 needs no brackets).
pub fn parse_address(v: &str) -> Result<AddressOverride, String> {
    const FORM: &str = "give IFACE:ADDRESS/PREFIX[:GATEWAY]";
    let (iface, rest) = v.split_once(':').ok_or(FORM)?;
    let (ip, rest) = rest.split_once('/').ok_or(FORM)?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (prefix, rest) = rest.split_at(digits);
    if iface.is_empty() || prefix.is_empty() {
        return Err(FORM.to_string());
    }
    let ip: IpAddr = ip.parse().map_err(|_| format!("{ip}: not an IP address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| FORM.to_string())?;
    if prefix > if ip.is_ipv4() { 32 } else { 128 } {
        return Err(format!("/{prefix}: prefix too long for {ip}"));
    }
    let gateway = match rest {
        "" => None,
        _ => {
            let g = rest.strip_prefix(':').ok_or(FORM)?;
            let g: IpAddr = g.parse().map_err(|_| format!("{g}: not an IP address"))?;
            if g.is_ipv4() != ip.is_ipv4() {
                return Err(format!("gateway {g} is not of {ip}'s family"));
            }
            Some(g)
        }
    };
    Ok(AddressOverride {
        iface: iface.to_string(),
        ip,
        prefix,
        gateway,
    })
}

/// Rewrite the restored system under `root` for this machine: see the
/// module documentation for what is changed. `disk_names` says how each
/// captured disk is named now.
pub fn retarget(
    root: &Path,
    m: &Manifest,
    matches: &[NicMatch],
    ov: &Overrides,
    disk_names: &DiskNames,
) -> Result<Vec<Change>> {
    let mut ws = files::Workspace::new(root);
    let pinned = mac::rewrite(&mut ws, matches)?;
    names::write_links(&mut ws, matches, &pinned)?;
    if let Some(name) = &ov.hostname {
        host::rename(&mut ws, &m.system.hostname, name)?;
    }
    for a in &ov.addresses {
        addresses::apply(&mut ws, &m.network, a)?;
    }
    disks::rewrite(&mut ws, disk_names)?;
    stack::rewrite(&mut ws, m, disk_names)?;
    ws.commit()
}
