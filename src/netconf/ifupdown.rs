//! ifupdown: /etc/network/interfaces(5) and the files it includes with
//! `source` and `source-directory`. [`walk`] is the one reader of the
//! include tree: `probe` takes the interface stanzas of every file it finds,
//! `retarget` the list of files to edit.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::IfaceConfig;
use super::root::{list_dir, read_optional, resolve_in_root};
use crate::util::glob::matches_str as glob_match;

/// Where ifupdown starts reading.
pub(crate) const INTERFACES: &str = "/etc/network/interfaces";

/// Include nesting followed before giving up: includes that go round in
/// circles are a configuration mistake, not a reason to hang.
const MAX_INCLUDE_DEPTH: usize = 16;

/// An include directive of an interfaces file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IfupdownInclude {
    /// `source PATTERN`: files matching a shell glob.
    Source(String),
    /// `source-directory DIR`: every file in DIR whose name is made of
    /// letters, digits, `_` and `-`.
    Directory(String),
}

/// What one interfaces file says: its `iface` stanzas and its includes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IfupdownFile {
    pub(crate) configs: Vec<IfaceConfig>,
    pub(crate) includes: Vec<IfupdownInclude>,
}

/// Parse one interfaces(5) file. Only whole-line comments exist in this
/// format; a trailing `\` continues a line.
pub(crate) fn parse_ifupdown(text: &str) -> IfupdownFile {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        if pending.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    if !pending.is_empty() {
        lines.push(pending);
    }

    let mut file = IfupdownFile::default();
    // The iface stanza option lines belong to, and whether it is inet6.
    let mut current: Option<(usize, bool)> = None;
    for line in &lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&keyword) = words.first() else {
            continue;
        };
        let arg = words.get(1).copied();
        match keyword {
            "iface" => {
                current = None;
                let Some(name) = arg else { continue };
                let mut cfg = IfaceConfig::named(name);
                // ifupdown2 allows `iface eth0` alone, family taken from addresses.
                let v6 = match words.get(2).copied() {
                    Some("inet") | None => false,
                    Some("inet6") => true,
                    Some(_) => continue, // ipx, can: no IP addresses
                };
                match (v6, words.get(3).copied()) {
                    (false, Some("dhcp" | "bootp")) => cfg.v4.dhcp = true,
                    (true, Some("dhcp")) => cfg.v6.dhcp = true,
                    (true, Some("auto")) => cfg.v6.auto = true,
                    // static, manual, loopback, tunnel...: addresses only.
                    _ => {}
                }
                file.configs.push(cfg);
                current = Some((file.configs.len() - 1, v6));
            }
            "source" | "source-directory" => {
                current = None;
                if let Some(path) = arg {
                    file.includes.push(if keyword == "source" {
                        IfupdownInclude::Source(path.to_string())
                    } else {
                        IfupdownInclude::Directory(path.to_string())
                    });
                }
            }
            "auto" | "mapping" | "rename" => current = None,
            _ if keyword.starts_with("allow-") => current = None,
            option => {
                let Some((i, v6)) = current else { continue };
                let cfg = &mut file.configs[i];
                match (option, arg) {
                    ("address", Some(a)) => cfg.add_address(a),
                    // inet6 static options that add SLAAC / DHCPv6 on top.
                    ("autoconf", Some("1")) if v6 => cfg.v6.auto = true,
                    ("dhcp", Some("1")) if v6 => cfg.v6.dhcp = true,
                    _ => {}
                }
            }
        }
    }
    file
}

/// Read the interfaces file `start` (absolute on the examined system) and,
/// recursively, what it includes, as ifupdown does: depth first, each file
/// once, in the order the including file names them. Relative include paths
/// are taken from the including file's directory; globs are expanded in the
/// last path component only (the form distributions use: `source
/// /etc/network/interfaces.d/*`), and never pick up a directory.
///
/// `read` gives the text of a file (`None`: absent or not to be read), so
/// that each caller reads in its own way: `probe` straight from the root,
/// `retarget` through its workspace, which keeps the text for editing.
pub(crate) fn walk(
    root: &Path,
    start: &Path,
    read: &mut dyn FnMut(&Path) -> Result<Option<String>>,
) -> Result<Vec<(PathBuf, IfupdownFile)>> {
    let mut out = Vec::new();
    walk_from(root, start, read, &mut out, &mut HashSet::new(), 0)?;
    Ok(out)
}

fn walk_from(
    root: &Path,
    path: &Path,
    read: &mut dyn FnMut(&Path) -> Result<Option<String>>,
    out: &mut Vec<(PathBuf, IfupdownFile)>,
    seen: &mut HashSet<PathBuf>,
    depth: usize,
) -> Result<()> {
    if depth > MAX_INCLUDE_DEPTH || !seen.insert(path.to_path_buf()) {
        return Ok(());
    }
    let Some(text) = read(path)? else {
        return Ok(());
    };
    let file = parse_ifupdown(&text);
    let includes = file.includes.clone();
    out.push((path.to_path_buf(), file));
    let base = path.parent().unwrap_or(Path::new("/"));
    for include in includes {
        let (pattern, dir_only) = match &include {
            IfupdownInclude::Source(p) => (base.join(p), false),
            IfupdownInclude::Directory(d) => (base.join(d).join("*"), true),
        };
        let Some(file_pattern) = pattern.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let dir = pattern.parent().unwrap_or(Path::new("/"));
        let is_glob = file_pattern.contains(['*', '?', '[']);
        if !is_glob {
            walk_from(root, &pattern, read, out, seen, depth + 1)
                .with_context(|| format!("included from {}", path.display()))?;
            continue;
        }
        for name in list_dir(root, dir)? {
            let wanted = if dir_only {
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            } else {
                // Like the shell: `*` does not pick up dot files.
                glob_match(file_pattern, &name)
                    && (!name.starts_with('.') || file_pattern.starts_with('.'))
            };
            let full = dir.join(&name);
            if wanted && !resolve_in_root(root, &full).is_dir() {
                walk_from(root, &full, read, out, seen, depth + 1)
                    .with_context(|| format!("included from {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Every interface stanza of the interfaces file `start` under `root` and of
/// the files it includes; nothing when it does not exist.
pub(crate) fn load(root: &Path, start: &Path) -> Result<Vec<IfaceConfig>> {
    let files = walk(root, start, &mut |p| read_optional(root, p))?;
    Ok(files.into_iter().flat_map(|(_, f)| f.configs).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netconf::FamilyConfig;
    use crate::netconf::testing::{ip, write};

    const DEBIAN_INTERFACES: &str = "\
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
allow-hotplug eno1
iface eno1 inet dhcp
iface eno1 inet6 auto

auto eno2
iface eno2 inet static
    address 192.0.2.10/24
    gateway 192.0.2.1
    dns-nameservers 192.0.2.53
#   address 192.0.2.99/24
iface eno2 inet6 static
    address 2001:db8::10
    netmask 64
    autoconf 1

iface eno3 inet static
    address 198.51.100.7
    netmask 255.255.255.0
    up ip route add 10.0.0.0/8 \\
       via 198.51.100.1

iface br0 inet manual
    bridge_ports eno4
";

    #[test]
    fn ifupdown_stanzas() {
        let file = parse_ifupdown(DEBIAN_INTERFACES);
        assert_eq!(
            file.includes,
            vec![IfupdownInclude::Source(
                "/etc/network/interfaces.d/*".into()
            )]
        );
        let by_name = |n: &str| {
            file.configs
                .iter()
                .filter(|c| c.names == [n])
                .collect::<Vec<_>>()
        };

        let eno1 = by_name("eno1");
        assert_eq!(eno1.len(), 2);
        assert!(eno1[0].v4.dhcp && !eno1[0].v6.auto);
        assert!(eno1[1].v6.auto && !eno1[1].v4.dhcp);

        let eno2 = by_name("eno2");
        assert_eq!(eno2[0].v4.addresses, vec![ip("192.0.2.10")]); // commented-out one ignored
        assert!(!eno2[0].v4.dhcp);
        assert_eq!(eno2[1].v6.addresses, vec![ip("2001:db8::10")]);
        assert!(eno2[1].v6.auto);

        // The continued `up` line does not leak into a new stanza.
        let eno3 = by_name("eno3");
        assert_eq!(eno3[0].v4.addresses, vec![ip("198.51.100.7")]);

        let br0 = by_name("br0");
        assert_eq!(br0[0].v4, FamilyConfig::default());
        assert!(by_name("lo")[0].v4.addresses.is_empty());
    }

    #[test]
    fn ifupdown_options_outside_iface_are_ignored() {
        let file = parse_ifupdown("auto eth0\n    address 10.0.0.1/8\nmapping eth1\n  script x\n");
        assert!(file.configs.is_empty());
        let file = parse_ifupdown("iface eth0 ipx static\n    address 10.0.0.1\n");
        assert!(file.configs.is_empty());
    }

    #[test]
    fn ifupdown_includes_through_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "/etc/network/interfaces",
            "source-directory interfaces.d\nsource /etc/network/extra/*.cfg\nsource /etc/network/interfaces\n",
        );
        write(
            root,
            "/etc/network/interfaces.d/eth0",
            "iface eth0 inet dhcp\n",
        );
        // source-directory skips names with dots (package leftovers).
        write(
            root,
            "/etc/network/interfaces.d/eth1.dpkg-old",
            "iface eth1 inet dhcp\n",
        );
        write(
            root,
            "/etc/network/extra/vlan.cfg",
            "iface eth0.10 inet static\n  address 10.10.0.2/24\n",
        );
        write(
            root,
            "/etc/network/extra/readme.txt",
            "iface eth9 inet dhcp\n",
        );
        let out = load(root, Path::new("/etc/network/interfaces")).unwrap();
        let names: Vec<&str> = out.iter().map(|c| c.names[0].as_str()).collect();
        assert_eq!(names, ["eth0", "eth0.10"]);
        assert_eq!(out[1].v4.addresses, vec![ip("10.10.0.2")]);

        // Missing file: nothing configured, no error.
        let out = load(root, Path::new("/etc/network/nope")).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn walk_lists_files_depth_first_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            INTERFACES,
            "source interfaces.d/*\nsource /etc/network/late\n",
        );
        write(
            root,
            "/etc/network/interfaces.d/a",
            "source /etc/network/nested\nsource /etc/network/late\n",
        );
        write(root, "/etc/network/interfaces.d/b", "");
        write(root, "/etc/network/interfaces.d/.hidden", "");
        fs_mkdir(root, "/etc/network/interfaces.d/subdir");
        write(root, "/etc/network/nested", "");
        write(
            root,
            "/etc/network/late",
            "source /etc/network/interfaces\n",
        );
        let mut read = |p: &Path| read_optional(root, p);
        let paths: Vec<PathBuf> = walk(root, Path::new(INTERFACES), &mut read)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let want = [
            "/etc/network/interfaces",
            "/etc/network/interfaces.d/a",
            "/etc/network/nested",
            "/etc/network/late",
            "/etc/network/interfaces.d/b",
        ];
        assert_eq!(paths, want.map(PathBuf::from));
    }

    fn fs_mkdir(root: &Path, path: &str) {
        std::fs::create_dir_all(root.join(path.trim_start_matches('/'))).unwrap();
    }
}
