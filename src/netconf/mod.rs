//! The distribution's network configuration files, read under a root: what
//! each configuration system (netplan, ifupdown, systemd-networkd,
//! NetworkManager) says about each interface, and the DNS servers of
//! resolv.conf.
//!
//! Two callers read these files: `probe`, to tell how each address of the
//! running system is configured, and `retarget`, to find the files of a
//! restored root that name the old hardware. Both see the files under a root
//! (`/` on a live system, `/target` after a restore, a fixture tree in tests)
//! and must never be led out of it by a symlink: `root` resolves paths
//! inside it. Parsing here is read-only; `retarget` edits the files it finds
//! as text, so that comments and order stay as they were.
//!
//! - `root`: paths resolved inside the root, optional reads, listings.
//! - `ifupdown`: /etc/network/interfaces and the files it includes.
//! - `ini`: systemd-networkd `.network` files and NetworkManager keyfiles.
//! - `netplan`: netplan YAML, read with a YAML parser.
//! - `resolv`: resolv.conf, behind systemd-resolved's stub.

pub(crate) mod ifupdown;
pub(crate) mod ini;
pub(crate) mod netplan;
pub(crate) mod resolv;
pub(crate) mod root;

use std::net::IpAddr;
use std::path::Path;

use anyhow::Result;

// The one way in which this module depends on probe: the shared glob
// matcher lives there until the utility layer takes it.
use crate::util::glob::matches_str as glob_match;

/// What one configuration system says about one address family of an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FamilyConfig {
    pub(crate) dhcp: bool,
    /// IPv6 stateless autoconfiguration (router advertisements).
    pub(crate) auto: bool,
    /// Statically configured addresses (prefix lengths dropped: the kernel's
    /// address is matched by IP alone, netmask spelling varies).
    pub(crate) addresses: Vec<IpAddr>,
}

impl FamilyConfig {
    fn merge(&mut self, other: &FamilyConfig) {
        self.dhcp |= other.dhcp;
        self.auto |= other.auto;
        self.addresses.extend(other.addresses.iter().copied());
    }
}

/// One interface definition in a configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IfaceConfig {
    /// Interface names, shell globs allowed (networkd `Name=en*`).
    pub(crate) names: Vec<String>,
    /// networkd `Name=!...`: the name list is a negative match.
    pub(crate) names_inverted: bool,
    /// MAC addresses the definition is bound to, lowercase.
    pub(crate) macs: Vec<String>,
    pub(crate) v4: FamilyConfig,
    pub(crate) v6: FamilyConfig,
}

impl IfaceConfig {
    /// Record a static address (`192.0.2.10/24`) under its family; text that
    /// is not an address (a typo, a template variable) is ignored.
    fn add_address(&mut self, text: &str) {
        match parse_ip_prefix(text) {
            Some(ip @ IpAddr::V4(_)) => self.v4.addresses.push(ip),
            Some(ip @ IpAddr::V6(_)) => self.v6.addresses.push(ip),
            None => {}
        }
    }

    pub(crate) fn named(name: &str) -> Self {
        Self {
            names: vec![name.to_string()],
            ..Self::default()
        }
    }

    /// Every matcher given must hold; a definition without any (networkd
    /// `[Match] Type=ether` alone) is not attributed to an interface.
    pub(crate) fn matches(&self, name: &str, mac: Option<&str>) -> bool {
        if self.names.is_empty() && self.macs.is_empty() {
            return false;
        }
        let name_ok = self.names.is_empty()
            || self.names.iter().any(|p| glob_match(p, name)) != self.names_inverted;
        let mac_ok = self.macs.is_empty() || mac.is_some_and(|m| self.macs.iter().any(|x| x == m));
        name_ok && mac_ok
    }
}

/// All interface definitions of one configuration system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigSource {
    /// The manifest's `source` value.
    pub(crate) name: &'static str,
    /// systemd-networkd applies only the first matching .network file (in
    /// file-name order); the others merge every definition of an interface.
    pub(crate) first_match_wins: bool,
    pub(crate) configs: Vec<IfaceConfig>,
}

impl ConfigSource {
    /// What this system configures for one address family of the interface
    /// `name` (with MAC `mac`); `None` when no definition matches it.
    pub(crate) fn family(&self, name: &str, mac: Option<&str>, v6: bool) -> Option<FamilyConfig> {
        let mut merged: Option<FamilyConfig> = None;
        for cfg in self.configs.iter().filter(|c| c.matches(name, mac)) {
            merged
                .get_or_insert_default()
                .merge(if v6 { &cfg.v6 } else { &cfg.v4 });
            if self.first_match_wins {
                break;
            }
        }
        merged
    }
}

/// Read every configuration system's files under `root`, in the order they
/// speak for an address: netplan first (it generates networkd and NM files),
/// then ifupdown, systemd-networkd, NetworkManager.
pub(crate) fn load_configs(root: &Path, warnings: &mut Vec<String>) -> Result<Vec<ConfigSource>> {
    let mut netplan = Vec::new();
    // netplan: /run shadows /etc shadows /lib for a file of the same name.
    for path in root::list_config_files(
        root,
        &["/run/netplan", "/etc/netplan", "/lib/netplan"],
        ".yaml",
    )? {
        if let Some(text) = root::read_optional(root, &path)? {
            // A file netplan itself could not parse configures nothing;
            // the capture says so rather than guessing what it meant.
            match netplan::parse_netplan(&text) {
                Ok(configs) => netplan.extend(configs),
                Err(e) => warnings.push(format!(
                    "{}: not valid netplan YAML, ignored as netplan ignores it: {e:#}",
                    path.display()
                )),
            }
        }
    }

    let ifupdown = ifupdown::load(root, Path::new(ifupdown::INTERFACES))?;

    let mut networkd = Vec::new();
    // networkd: /etc shadows /run (and a file linked to /dev/null masks).
    for path in root::list_config_files(
        root,
        &["/etc/systemd/network", "/run/systemd/network"],
        ".network",
    )? {
        if let Some(text) = root::read_optional(root, &path)? {
            networkd.extend(ini::parse_networkd(&text));
        }
    }

    let mut nm = Vec::new();
    let nm_dirs = [
        "/etc/NetworkManager/system-connections",
        "/run/NetworkManager/system-connections",
    ];
    for path in root::list_config_files(root, &nm_dirs, ".nmconnection")? {
        if let Some(text) = root::read_optional(root, &path)? {
            nm.extend(ini::parse_nmconnection(&text));
        }
    }

    Ok(vec![
        ConfigSource {
            name: "netplan",
            first_match_wins: false,
            configs: netplan,
        },
        ConfigSource {
            name: "ifupdown",
            first_match_wins: false,
            configs: ifupdown,
        },
        ConfigSource {
            name: "networkd",
            first_match_wins: true,
            configs: networkd,
        },
        ConfigSource {
            name: "networkmanager",
            first_match_wins: false,
            configs: nm,
        },
    ])
}

/// `192.0.2.10/24`, `192.0.2.10`, `2001:db8::1/64` → the address.
fn parse_ip_prefix(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches(|c| c == '"' || c == '\'');
    let ip = text.split_once('/').map_or(text, |(ip, _)| ip);
    ip.parse().ok()
}

/// The boolean spellings of networkd, NM and YAML 1.1 (`yes`, `on`...).
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Fixture helpers shared by the tests of the submodules.
#[cfg(test)]
pub(crate) mod testing {
    use std::fs;
    use std::net::IpAddr;
    use std::path::Path;

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Write `text` at `path` (absolute on the examined system) under `root`.
    pub(crate) fn write(root: &Path, path: &str, text: &str) {
        let full = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, text).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{ip, write};
    use super::*;

    #[test]
    fn networkd_first_matching_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "/run/systemd/network/10-netplan-eth0.network",
            "[Match]\nName=eth0\n[Network]\nAddress=10.0.0.2/8\n",
        );
        write(
            root,
            "/etc/systemd/network/20-wired.network",
            "[Match]\nName=eth*\n[Network]\nDHCP=yes\n",
        );
        // Same name in /etc masks the /run file.
        write(
            root,
            "/run/systemd/network/20-wired.network",
            "[Match]\nName=eth*\n[Network]\nAddress=10.9.9.9/8\n",
        );
        let sources = load_configs(root, &mut Vec::new()).unwrap();
        let networkd = sources.iter().find(|s| s.name == "networkd").unwrap();
        assert_eq!(networkd.configs.len(), 2);
        let eth0 = networkd.family("eth0", None, false).unwrap();
        assert_eq!(eth0.addresses, vec![ip("10.0.0.2")]);
        assert!(!eth0.dhcp, "only the first matching file applies");
        assert!(networkd.family("eth1", None, false).unwrap().dhcp);
        assert_eq!(networkd.family("wlan0", None, false), None);
    }

    #[test]
    fn malformed_netplan_is_a_warning_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "/etc/netplan/01-bad.yaml", "network: [unclosed\n");
        write(
            root,
            "/etc/netplan/02-good.yaml",
            "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n",
        );
        let mut warnings = Vec::new();
        let sources = load_configs(root, &mut warnings).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("/etc/netplan/01-bad.yaml"),
            "{warnings:?}"
        );
        let netplan = sources.iter().find(|s| s.name == "netplan").unwrap();
        assert!(netplan.family("eth0", None, false).unwrap().dhcp);
    }
}
