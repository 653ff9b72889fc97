//! The ini-style files of systemd-networkd (`.network`, `.link`, `.netdev`)
//! and NetworkManager keyfiles (`.nmconnection`). [`ini_line`] tells what one
//! line is, with the byte range of its value, so that `retarget` can replace
//! a value in place; [`parse_networkd`] and [`parse_nmconnection`] read what
//! a file configures.

use std::ops::Range;

use super::{IfaceConfig, parse_bool};
use crate::util::mac::normalize as normalize_mac;

/// What a line of a systemd unit-style or GLib keyfile is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ini<'a> {
    Section(&'a str),
    /// `key = value`: the key, and the byte range of the value in the line.
    Key(&'a str, Range<usize>),
    /// Blank, comment (`#` or `;`), or not an assignment.
    Other,
}

/// Classify one line (with or without its line end).
pub(crate) fn ini_line(line: &str) -> Ini<'_> {
    let body = line.trim_end_matches(['\n', '\r']);
    let t = body.trim();
    if t.starts_with('#') || t.starts_with(';') || t.is_empty() {
        return Ini::Other;
    }
    if let Some(name) = t.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        return Ini::Section(name.trim());
    }
    let Some(eq) = body.find('=') else {
        return Ini::Other;
    };
    let key = body[..eq].trim();
    let lead = body[eq + 1..].len() - body[eq + 1..].trim_start().len();
    let end = body.trim_end().len().max(eq + 1 + lead);
    Ini::Key(key, eq + 1 + lead..end)
}

/// `(section, key, value)` for every assignment of a file, in order.
fn parse_ini(text: &str) -> Vec<(String, String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in text.lines() {
        match ini_line(line) {
            Ini::Section(name) => section = name,
            Ini::Key(key, value) => out.push((
                section.to_string(),
                key.to_string(),
                line[value].to_string(),
            )),
            Ini::Other => {}
        }
    }
    out
}

/// One systemd-networkd `.network` file; `None` when it matches neither by
/// name nor by MAC address.
pub(crate) fn parse_networkd(text: &str) -> Option<IfaceConfig> {
    let mut cfg = IfaceConfig::default();
    for (section, key, value) in parse_ini(text) {
        match (section.as_str(), key.as_str()) {
            ("Match", "Name") => {
                // An empty assignment resets the list; a leading '!' inverts it.
                if value.is_empty() {
                    cfg.names.clear();
                    cfg.names_inverted = false;
                    continue;
                }
                let list = match value.strip_prefix('!') {
                    Some(rest) => {
                        cfg.names_inverted = true;
                        rest
                    }
                    None => value.as_str(),
                };
                cfg.names
                    .extend(list.split_whitespace().map(str::to_string));
            }
            ("Match", "MACAddress" | "PermanentMACAddress") => {
                cfg.macs
                    .extend(value.split_whitespace().filter_map(normalize_mac));
            }
            ("Network", "DHCP") => {
                let (v4, v6) = match value.to_ascii_lowercase().as_str() {
                    "ipv4" | "v4" => (true, false),
                    "ipv6" | "v6" => (false, true),
                    "both" => (true, true),
                    other => {
                        let on = parse_bool(other).unwrap_or(false);
                        (on, on)
                    }
                };
                cfg.v4.dhcp = v4;
                cfg.v6.dhcp = v6;
            }
            ("Network" | "Address", "Address") => {
                for a in value.split_whitespace() {
                    cfg.add_address(a);
                }
            }
            ("Network", "IPv6AcceptRA") => cfg.v6.auto = parse_bool(&value).unwrap_or(false),
            _ => {}
        }
    }
    (!cfg.names.is_empty() || !cfg.macs.is_empty()).then_some(cfg)
}

/// One NetworkManager keyfile (`.nmconnection`); `None` when it is not bound
/// to an interface name or MAC address (a profile for "any ethernet").
pub(crate) fn parse_nmconnection(text: &str) -> Option<IfaceConfig> {
    let mut cfg = IfaceConfig::default();
    for (section, key, value) in parse_ini(text) {
        let v6 = match section.as_str() {
            "connection" if key == "interface-name" && !value.is_empty() => {
                cfg.names.push(value);
                continue;
            }
            "ethernet" | "wifi" | "802-3-ethernet" | "802-11-wireless" if key == "mac-address" => {
                cfg.macs.extend(normalize_mac(value.trim_end_matches(';')));
                continue;
            }
            "ipv4" => false,
            "ipv6" => true,
            _ => continue,
        };
        let family = if v6 { &mut cfg.v6 } else { &mut cfg.v4 };
        if key == "method" {
            match (v6, value.as_str()) {
                (false, "auto") | (true, "dhcp") => family.dhcp = true,
                (true, "auto") => family.auto = true,
                // manual: the addresses below; disabled, ignore, link-local,
                // shared: nothing to say about global addresses.
                _ => {}
            }
        } else if key == "addresses"
            || key
                .strip_prefix("address")
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        {
            // address1=192.0.2.10/24,192.0.2.1 (gateway after the comma);
            // the older addresses=a/24;b/24; form lists several.
            for item in value.split(';') {
                if let Some(a) = item.split(',').next() {
                    cfg.add_address(a);
                }
            }
        }
    }
    (!cfg.names.is_empty() || !cfg.macs.is_empty()).then_some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netconf::testing::ip;

    #[test]
    fn ini_lines() {
        assert_eq!(ini_line("[Match]\n"), Ini::Section("Match"));
        assert_eq!(ini_line("  [ Network ]  \r\n"), Ini::Section("Network"));
        let line = "MACAddress = 52:54:00:12:34:56  \n";
        let Ini::Key(key, r) = ini_line(line) else {
            panic!("not a key: {line:?}");
        };
        assert_eq!((key, &line[r]), ("MACAddress", "52:54:00:12:34:56"));
        let Ini::Key(key, r) = ini_line("Name=\n") else {
            panic!("not a key");
        };
        assert_eq!((key, r), ("Name", 5..5));
        for other in ["# Name=x\n", "; x=y", "", "   \n", "garbage\n"] {
            assert_eq!(ini_line(other), Ini::Other, "{other:?}");
        }
        assert_eq!(
            parse_ini("[A]\nk = v w \n# c=d\n[B]\nx=\n"),
            [
                ("A".into(), "k".into(), "v w".into()),
                ("B".into(), "x".into(), String::new())
            ]
        );
    }

    #[test]
    fn networkd_files() {
        let dhcp = parse_networkd(
            "# Managed by hand\n[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\nIPv6AcceptRA=yes\n; comment\n",
        )
        .unwrap();
        assert_eq!(dhcp.names, ["en*", "eth*"]);
        assert!(dhcp.v4.dhcp && !dhcp.v6.dhcp && dhcp.v6.auto);
        assert!(
            dhcp.matches("enp3s0", None)
                && dhcp.matches("eth1", None)
                && !dhcp.matches("wlan0", None)
        );

        let static_ = parse_networkd(
            "[Match]\nMACAddress=52:54:00:AB:CD:EF\n\n[Network]\nAddress=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n\n[Address]\nAddress=2001:db8::10/64\n",
        )
        .unwrap();
        assert!(static_.names.is_empty());
        assert_eq!(static_.macs, ["52:54:00:ab:cd:ef"]);
        assert_eq!(static_.v4.addresses, vec![ip("192.0.2.10")]);
        assert_eq!(static_.v6.addresses, vec![ip("2001:db8::10")]);
        assert!(static_.matches("whatever", Some("52:54:00:ab:cd:ef")));
        assert!(!static_.matches("whatever", Some("52:54:00:00:00:01")));
        assert!(!static_.matches("whatever", None));

        let both = parse_networkd("[Match]\nName=!lo docker*\n[Network]\nDHCP=yes\n").unwrap();
        assert!(both.v4.dhcp && both.v6.dhcp);
        assert!(both.matches("eth0", None) && !both.matches("docker0", None));

        // Matches by Type= only: cannot be attributed to a name.
        assert_eq!(
            parse_networkd("[Match]\nType=ether\n[Network]\nDHCP=yes\n"),
            None
        );
    }

    #[test]
    fn nmconnection_files() {
        let wired = parse_nmconnection(
            "[connection]\nid=Wired connection 1\nuuid=5f2c6a3e-0000-4000-8000-000000000001\ntype=ethernet\ninterface-name=enp1s0\n\n[ethernet]\n\n[ipv4]\nmethod=auto\n\n[ipv6]\naddr-gen-mode=stable-privacy\nmethod=auto\n\n[proxy]\n",
        )
        .unwrap();
        assert_eq!(wired.names, ["enp1s0"]);
        assert!(wired.v4.dhcp && wired.v6.auto && !wired.v6.dhcp);

        let manual = parse_nmconnection(
            "# written by nmcli\n[connection]\nid=office\ntype=ethernet\n\n[ethernet]\nmac-address=52:54:00:12:34:56\n\n[ipv4]\naddress1=192.0.2.10/24,192.0.2.1\naddress2=192.0.2.11/24\ndns=192.0.2.53;\nmethod=manual\n\n[ipv6]\naddresses=2001:db8::10/64;2001:db8::11/64;\nmethod=manual\n",
        )
        .unwrap();
        assert!(manual.names.is_empty());
        assert_eq!(manual.macs, ["52:54:00:12:34:56"]);
        assert_eq!(
            manual.v4.addresses,
            vec![ip("192.0.2.10"), ip("192.0.2.11")]
        );
        assert_eq!(
            manual.v6.addresses,
            vec![ip("2001:db8::10"), ip("2001:db8::11")]
        );
        assert!(!manual.v4.dhcp && !manual.v6.auto);

        let dhcp6 = parse_nmconnection(
            "[connection]\ninterface-name=eth1\n[ipv4]\nmethod=disabled\n[ipv6]\nmethod=dhcp\n",
        )
        .unwrap();
        assert!(!dhcp6.v4.dhcp && dhcp6.v6.dhcp);

        // A profile for any ethernet device says nothing about a given one.
        assert_eq!(
            parse_nmconnection("[connection]\ntype=ethernet\n[ipv4]\nmethod=auto\n"),
            None
        );
    }
}
