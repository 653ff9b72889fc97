//! A new static address (and default gateway) for an interface, for a
//! recovery to another site. The captured static address is looked for where
//! each configuration system sets it, and replaced there; the gateway is
//! replaced in the same block (ifupdown stanza, networkd file, NM section,
//! netplan device), so that a gateway of another interface is never touched.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::AddressOverride;
use super::configs;
use super::files::Workspace;
use super::text::{in_network, replace_ips, splice, split_eol, yaml_line, yaml_paths};
use crate::manifest::{AddressMethod, Network};
use crate::netconf::ini::{Ini, ini_line};

/// What the override replaces.
struct Target<'a> {
    iface: &'a str,
    old: IpAddr,
    new: &'a AddressOverride,
    v6: bool,
}

impl Target<'_> {
    /// Replace the old address, keeping a missing prefix missing when
    /// `bare` (ifupdown's `address` + `netmask`).
    fn address(&self, text: &str, bare: bool) -> Option<String> {
        replace_ips(text, |ip, prefix| {
            (ip == self.old).then(|| match prefix {
                None if bare => self.new.ip.to_string(),
                _ => self.new.cidr(),
            })
        })
    }

    /// Replace a gateway of the address's family by the new one.
    fn gateway(&self, text: &str) -> Option<String> {
        let gw = self.new.gateway?;
        replace_ips(text, |ip, _| {
            (ip.is_ipv6() == self.v6 && !ip.is_unspecified() && ip != gw).then(|| gw.to_string())
        })
    }
}

/// What was done, over all files.
#[derive(Default)]
struct Done {
    address: bool,
    gateway: bool,
}

pub(super) fn apply(ws: &mut Workspace, net: &Network, a: &AddressOverride) -> Result<()> {
    let v6 = a.ip.is_ipv6();
    let family = if v6 { "IPv6" } else { "IPv4" };
    let captured = net.interfaces.iter().find(|i| i.name == a.iface);
    let old = captured.and_then(|i| {
        i.addresses
            .iter()
            .filter(|x| x.method == AddressMethod::Static)
            .filter_map(|x| x.cidr.split('/').next()?.parse::<IpAddr>().ok())
            .find(|ip| ip.is_ipv6() == v6)
    });
    let Some(old) = old else {
        ws.warn(
            Path::new(""),
            format!(
                "rewind.address={}:{}: {} had no static {family} address: not applied",
                a.iface,
                a.cidr(),
                a.iface
            ),
        );
        return Ok(());
    };
    let t = Target {
        iface: &a.iface,
        old,
        new: a,
        v6,
    };
    let mut done = Done::default();
    for path in configs::ifupdown(ws)? {
        edit(ws, &path, &t, &mut done, ifupdown)?;
    }
    for path in configs::networkd(ws)? {
        if path.extension().is_some_and(|e| e == "network") {
            edit(ws, &path, &t, &mut done, networkd)?;
        }
    }
    for path in configs::nm(ws)? {
        edit(ws, &path, &t, &mut done, nm)?;
    }
    for path in configs::netplan(ws)? {
        edit(ws, &path, &t, &mut done, netplan)?;
    }

    let nowhere = PathBuf::new();
    if !done.address {
        ws.warn(
            &nowhere,
            format!(
                "{}'s address {old} is configured in no file rewind knows: {} not applied",
                a.iface,
                a.cidr()
            ),
        );
    }
    if let Some(gw) = a.gateway
        && done.address
        && !done.gateway
    {
        ws.warn(
            &nowhere,
            format!(
                "no default gateway configured with {}'s address: gateway {gw} not written",
                a.iface
            ),
        );
    }
    let old_gw = net
        .routes
        .iter()
        .filter(|r| r.interface.as_deref() == Some(a.iface.as_str()))
        .filter(|r| matches!(r.destination.as_str(), "default" | "0.0.0.0/0" | "::/0"))
        .filter_map(|r| r.gateway.as_deref()?.parse::<IpAddr>().ok())
        .find(|g| g.is_ipv6() == v6);
    if let Some(g) = old_gw
        && a.gateway.is_none()
        && done.address
        && !in_network(g, a.ip, a.prefix)
    {
        ws.warn(
            &nowhere,
            format!(
                "{}'s gateway {g} (left as configured) is outside {}",
                a.iface,
                a.cidr()
            ),
        );
    }
    Ok(())
}

/// One format's editor: edits the lines of a file, describes each edit, and
/// says whether it replaced the address and the gateway.
type Editor = fn(&mut [String], &Target, &mut Vec<String>) -> (bool, bool);

/// Run one format's editor over the lines of `path`.
fn edit(
    ws: &mut Workspace,
    path: &Path,
    t: &Target,
    done: &mut Done,
    editor: Editor,
) -> Result<()> {
    let Some(text) = ws.text(path)? else {
        return Ok(());
    };
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let mut whats = Vec::new();
    let (address, gateway) = editor(&mut lines, t, &mut whats);
    done.address |= address;
    done.gateway |= gateway;
    let out = lines.concat();
    if out != text {
        ws.set(path, out, whats);
    }
    Ok(())
}

/// Replace `lines[i]` by `new` (when given) and describe it.
fn put(lines: &mut [String], i: usize, new: Option<String>, whats: &mut Vec<String>) -> bool {
    let Some(new) = new else { return false };
    if new != lines[i] {
        whats.push(format!(
            "{} -> {}",
            split_eol(&lines[i]).0.trim(),
            split_eol(&new).0.trim()
        ));
        lines[i] = new;
    }
    true
}

/// The netmask of a prefix length, in the form ifupdown's `netmask` takes:
/// dotted quad for IPv4, the number for IPv6.
fn netmask(a: &AddressOverride) -> String {
    match a.ip {
        IpAddr::V4(_) => {
            let m = u32::MAX.checked_shl(32 - u32::from(a.prefix)).unwrap_or(0);
            std::net::Ipv4Addr::from(m).to_string()
        }
        IpAddr::V6(_) => a.prefix.to_string(),
    }
}

/// interfaces(5): in the `iface IFACE inet|inet6` stanzas, `address`,
/// `netmask` (when the address has no prefix) and `gateway`.
fn ifupdown(lines: &mut [String], t: &Target, whats: &mut Vec<String>) -> (bool, bool) {
    #[derive(Default)]
    struct Stanza {
        addr: Option<(usize, bool)>,
        netmask: Option<usize>,
        gateways: Vec<usize>,
    }
    let mut stanzas: Vec<Stanza> = Vec::new();
    let mut current = false;
    for (i, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&first) = words.first() else {
            continue;
        };
        match first {
            "iface" => {
                let fam_ok = match words.get(2).copied() {
                    Some("inet") => !t.v6,
                    Some("inet6") => t.v6,
                    None => true,
                    Some(_) => false,
                };
                current = words.get(1) == Some(&t.iface) && fam_ok;
                if current {
                    stanzas.push(Stanza::default());
                }
            }
            "auto" | "mapping" | "rename" | "source" | "source-directory" => current = false,
            k if k.starts_with("allow-") => current = false,
            _ if !current => {}
            "address" => {
                let value = words.get(1).copied().unwrap_or("");
                let is_old = value.split('/').next().and_then(|ip| ip.parse().ok()) == Some(t.old);
                if is_old && let Some(s) = stanzas.last_mut() {
                    s.addr = Some((i, !value.contains('/')));
                }
            }
            // `current` means an iface stanza was opened: there is a last one.
            "netmask" => {
                if let Some(s) = stanzas.last_mut() {
                    s.netmask = Some(i);
                }
            }
            "gateway" => {
                if let Some(s) = stanzas.last_mut() {
                    s.gateways.push(i);
                }
            }
            _ => {}
        }
    }
    let (mut address, mut gateway) = (false, false);
    for s in stanzas {
        let Some((i, bare)) = s.addr else { continue };
        let bare = bare && s.netmask.is_some();
        address |= put(lines, i, t.address(&lines[i], bare), whats);
        if let Some(n) = s.netmask.filter(|_| bare) {
            let line = &lines[n];
            let start = line.find("netmask").unwrap_or(0) + "netmask".len();
            let (body, _) = split_eol(line);
            let lead = body[start..].len() - body[start..].trim_start().len();
            let new = splice(line, start + lead..body.trim_end().len(), &netmask(t.new));
            put(lines, n, Some(new), whats);
        }
        for g in s.gateways {
            gateway |= put(lines, g, t.gateway(&lines[g]), whats);
        }
    }
    (address, gateway)
}

/// A `.network` file: `Address=` in [Network] and [Address]; where it was
/// found, `Gateway=` in [Network] and in the [Route] sections of default
/// routes.
fn networkd(lines: &mut [String], t: &Target, whats: &mut Vec<String>) -> (bool, bool) {
    // Section of each line, numbered; and which [Route] sections are not default.
    let mut section = (0usize, String::new());
    let mut sections = Vec::new();
    let mut not_default = Vec::new();
    for line in lines.iter() {
        match ini_line(line) {
            Ini::Section(s) => section = (section.0 + 1, s.to_string()),
            Ini::Key("Destination", r) if section.1 == "Route" => {
                let d = line[r].trim();
                if !matches!(d, "" | "0.0.0.0/0" | "::/0" | "0.0.0.0" | "::") {
                    not_default.push(section.0);
                }
            }
            _ => {}
        }
        sections.push(section.clone());
    }
    let mut address = false;
    for i in 0..lines.len() {
        if let Ini::Key("Address", r) = ini_line(&lines[i])
            && matches!(sections[i].1.as_str(), "Network" | "Address")
        {
            let new = t
                .address(&lines[i][r.clone()], false)
                .map(|v| splice(&lines[i], r, &v));
            address |= put(lines, i, new, whats);
        }
    }
    let mut gateway = false;
    if !address {
        return (false, false);
    }
    for i in 0..lines.len() {
        if let Ini::Key("Gateway", r) = ini_line(&lines[i])
            && (sections[i].1 == "Network"
                || (sections[i].1 == "Route" && !not_default.contains(&sections[i].0)))
        {
            let new = t
                .gateway(&lines[i][r.clone()])
                .map(|v| splice(&lines[i], r, &v));
            gateway |= put(lines, i, new, whats);
        }
    }
    (address, gateway)
}

/// A NetworkManager keyfile: in [ipv4] or [ipv6], `addressN=A/P[,GW]`
/// (and the older `addresses=`), and `gateway=` of the section where the
/// address was found.
fn nm(lines: &mut [String], t: &Target, whats: &mut Vec<String>) -> (bool, bool) {
    let family = if t.v6 { "ipv6" } else { "ipv4" };
    let mut section = String::new();
    let mut in_family = Vec::new();
    for line in lines.iter() {
        if let Ini::Section(s) = ini_line(line) {
            section = s.to_string();
        }
        in_family.push(section == family);
    }
    let (mut address, mut gateway) = (false, false);
    for i in 0..lines.len() {
        let Ini::Key(key, r) = ini_line(&lines[i]) else {
            continue;
        };
        let is_addr = key
            .strip_prefix("addresses")
            .or_else(|| key.strip_prefix("address"))
            .is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit()));
        if !in_family[i] || !is_addr {
            continue;
        }
        // `A/P,GW;`: the gateway after the comma goes with the address.
        let mut after_old = false;
        let gw = t.new.gateway;
        let new = replace_ips(&lines[i][r.clone()], |ip, _| {
            if ip == t.old {
                after_old = true;
                Some(t.new.cidr())
            } else if std::mem::take(&mut after_old) && gw.is_some_and(|g| g != ip) {
                gateway = true;
                gw.map(|g| g.to_string())
            } else {
                None
            }
        });
        let new = new.map(|v| splice(&lines[i], r, &v));
        address |= put(lines, i, new, whats);
    }
    if address {
        for i in 0..lines.len() {
            if let Ini::Key("gateway", r) = ini_line(&lines[i])
                && in_family[i]
            {
                let new = t
                    .gateway(&lines[i][r.clone()])
                    .map(|v| splice(&lines[i], r, &v));
                gateway |= put(lines, i, new, whats);
            }
        }
    }
    (address, gateway)
}

/// netplan: a device's `addresses:` (flow `[A/P]` or block `- A/P`); in
/// the device where it was found, `gateway4:`/`gateway6:` and the `via:` of
/// `routes:` to `default`.
fn netplan(lines: &mut [String], t: &Target, whats: &mut Vec<String>) -> (bool, bool) {
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let paths = yaml_paths(&refs);
    let device = |n: usize| -> Option<Vec<String>> {
        let p = &paths[n].0;
        (p.len() >= 3 && p[0] == "network").then(|| p[..3].to_vec())
    };
    let mut devices = Vec::new();
    let mut address = false;
    for i in 0..lines.len() {
        let Some(y) = yaml_line(&lines[i]) else {
            continue;
        };
        let p = &paths[i].0;
        let range = if y.key == Some("addresses") && p.len() == 4 {
            y.value
        } else if y.item
            && ((y.key.is_none() && p.len() == 4 && p[3] == "addresses")
                || (y.key.is_some() && p.len() == 5 && p[3] == "addresses"))
        {
            y.col..y.value.end
        } else {
            continue;
        };
        let new = t
            .address(&lines[i][range.clone()], false)
            .map(|v| splice(&lines[i], range, &v));
        if put(lines, i, new, whats) {
            address = true;
            devices.extend(device(i));
        }
    }
    let mut gateway = false;
    let gw_key = if t.v6 { "gateway6" } else { "gateway4" };
    for i in 0..lines.len() {
        if !device(i).is_some_and(|d| devices.contains(&d)) {
            continue;
        }
        let Some(y) = yaml_line(&lines[i]) else {
            continue;
        };
        let p = &paths[i].0;
        let in_routes = p.len() >= 5 && p[3] == "routes";
        let range = match y.key {
            Some(k) if k == gw_key && p.len() == 4 => y.value,
            Some("via") if in_routes && route_is_default(lines, &paths, i) => y.value,
            // `- {to: default, via: 192.0.2.1}`
            None if in_routes && y.item && is_default_flow(&lines[i]) => y.value,
            _ => continue,
        };
        let new = t
            .gateway(&lines[i][range.clone()])
            .map(|v| splice(&lines[i], range, &v));
        gateway |= put(lines, i, new, whats);
    }
    (address, gateway)
}

/// Whether the route item holding line `i` has `to: default` (or the
/// all-zero network).
fn route_is_default(lines: &[String], paths: &[(Vec<String>, Option<usize>)], i: usize) -> bool {
    let Some(item) = paths[i].1 else {
        return false;
    };
    (item..lines.len())
        .take_while(|&j| j == item || paths[j].1 == Some(item))
        .filter_map(|j| {
            let y = yaml_line(&lines[j])?;
            (y.key == Some("to")).then(|| lines[j][y.value].trim_matches(['"', '\'']).to_string())
        })
        .any(|to| matches!(to.as_str(), "default" | "0.0.0.0/0" | "::/0"))
}

fn is_default_flow(line: &str) -> bool {
    let (body, _) = split_eol(line);
    ["to: default", "to: 0.0.0.0/0", "to: \"::/0\"", "to: ::/0"]
        .iter()
        .any(|p| body.contains(p))
}
