//! MAC addresses of the old hardware in the restored configuration.
//!
//! A *matcher* selects a device by its MAC (which device gets a name or a
//! configuration): it must follow the hardware, so it is rewritten old →
//! new. A *setter* gives a device a MAC: that is an identity the
//! administrator chose (DHCP reservations, licences bound to a MAC), so it is
//! kept, with a warning when it is one of the old NICs' MACs.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;

use anyhow::Result;

use super::NicMatch;
use super::configs;
use super::files::Workspace;
use super::text::{replace_macs, split_eol, yaml_line, yaml_paths};
use crate::netconf::ini::{Ini, ini_line};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Matcher,
    Setter,
}

/// The MACs being replaced, old → new, and whose they were.
struct Plan {
    map: BTreeMap<String, String>,
    names: BTreeMap<String, String>,
}

/// Rewrite the matchers of every changed NIC; returns the MACs (lowercase)
/// some matcher names after the rewrite, old or new — the NICs that are
/// pinned, so need no generated `.link`.
pub(super) fn rewrite(ws: &mut Workspace, matches: &[NicMatch]) -> Result<HashSet<String>> {
    let mut plan = Plan {
        map: BTreeMap::new(),
        names: BTreeMap::new(),
    };
    for m in matches {
        let Some(old) = m.old_mac.as_deref().map(str::to_ascii_lowercase) else {
            continue;
        };
        if old != m.new.mac {
            plan.map.insert(old.clone(), m.new.mac.clone());
            plan.names.insert(old, m.captured.clone());
        }
    }
    let mut pinned = HashSet::new();

    for path in configs::networkd(ws)? {
        let mut section = String::new();
        edit(ws, &path, &plan, &mut pinned, |_, line| {
            match ini_line(line) {
                Ini::Section(s) => {
                    section = s.to_string();
                    vec![]
                }
                Ini::Key(k, r) => match (section.as_str(), k) {
                    ("Match", "MACAddress" | "PermanentMACAddress") => vec![(r, Role::Matcher)],
                    ("Link" | "NetDev", "MACAddress") => vec![(r, Role::Setter)],
                    _ => vec![],
                },
                Ini::Other => vec![],
            }
        })?;
    }

    for path in configs::nm(ws)? {
        let mut section = String::new();
        edit(ws, &path, &plan, &mut pinned, |_, line| {
            match ini_line(line) {
                Ini::Section(s) => {
                    section = s.to_string();
                    vec![]
                }
                Ini::Key("mac-address", r)
                    if matches!(
                        section.as_str(),
                        "ethernet" | "802-3-ethernet" | "wifi" | "802-11-wireless" | "infiniband"
                    ) =>
                {
                    vec![(r, Role::Matcher)]
                }
                Ini::Key("cloned-mac-address", r) => vec![(r, Role::Setter)],
                _ => vec![],
            }
        })?;
    }

    for path in configs::udev_rules(ws)? {
        edit(ws, &path, &plan, &mut pinned, |_, line| {
            udev_addresses(line)
        })?;
    }

    for path in configs::netplan(ws)? {
        let Some(text) = ws.text(&path)? else {
            continue;
        };
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let paths = yaml_paths(&lines);
        edit(ws, &path, &plan, &mut pinned, |n, line| {
            let Some(y) = yaml_line(line) else {
                return vec![];
            };
            let keys = &paths[n].0;
            let parent = keys.len().checked_sub(2).map(|i| keys[i].as_str());
            match y.key {
                Some("macaddress") if parent == Some("match") => vec![(y.value, Role::Matcher)],
                Some("macaddress") => vec![(y.value, Role::Setter)],
                // `match: {macaddress: ..., name: ...}`
                Some("match") => vec![(y.value, Role::Matcher)],
                _ => vec![],
            }
        })?;
    }

    for path in configs::ifupdown(ws)? {
        edit(ws, &path, &plan, &mut pinned, |_, line| {
            let (body, _) = split_eol(line);
            let t = body.trim_start();
            match t.split_whitespace().next() {
                Some("hwaddress") => {
                    let start = body.len() - t.len();
                    vec![(start..body.len(), Role::Setter)]
                }
                _ => vec![],
            }
        })?;
    }
    Ok(pinned)
}

/// The quoted values of `ATTR{address}` / `ATTRS{address}` in a udev rule
/// line: `==` and `!=` match, `=` assigns.
fn udev_addresses(line: &str) -> Vec<(Range<usize>, Role)> {
    let (body, _) = split_eol(line);
    if body.trim_start().starts_with('#') {
        return vec![];
    }
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = body[from..].find("{address}") {
        let at = from + at;
        from = at + "{address}".len();
        if !(body[..at].ends_with("ATTR") || body[..at].ends_with("ATTRS")) {
            continue;
        }
        let rest = &body[from..];
        let op_start = rest.len() - rest.trim_start().len();
        let op_len = rest[op_start..]
            .find(|c: char| !"=!+:-".contains(c))
            .unwrap_or(rest.len() - op_start);
        let op = &rest[op_start..op_start + op_len];
        let after = &rest[op_start + op_len..];
        let q = op_start + op_len + (after.len() - after.trim_start().len());
        if !rest[q..].starts_with('"') {
            continue;
        }
        let Some(len) = rest[q + 1..].find('"') else {
            continue;
        };
        let role = if op == "==" || op == "!=" {
            Role::Matcher
        } else {
            Role::Setter
        };
        out.push((from + q + 1..from + q + 1 + len, role));
        from += q + 1 + len;
    }
    out
}

/// Apply the plan to the ranges `classify` picks in each line of `path`.
fn edit(
    ws: &mut Workspace,
    path: &Path,
    plan: &Plan,
    pinned: &mut HashSet<String>,
    mut classify: impl FnMut(usize, &str) -> Vec<(Range<usize>, Role)>,
) -> Result<()> {
    let Some(text) = ws.text(path)? else {
        return Ok(());
    };
    let mut out = String::with_capacity(text.len());
    let mut whats = Vec::new();
    let mut warnings = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut copied = 0;
        for (r, role) in classify(n, line) {
            let (new, done, seen) = replace_macs(&line[r.clone()], &plan.map);
            match role {
                Role::Matcher => {
                    pinned.extend(seen);
                    out.push_str(&line[copied..r.start]);
                    out.push_str(&new);
                    copied = r.end;
                    for (old, new) in done {
                        pinned.insert(new.clone());
                        whats.push(format!("MAC {old} -> {new} ({})", plan.names[&old]));
                    }
                }
                Role::Setter => {
                    for old in seen.iter().filter(|m| plan.map.contains_key(*m)) {
                        warnings.push(format!(
                            "{} sets {}'s old MAC {old}: left as configured \
                             (the new NIC has {})",
                            line[..r.end].trim(),
                            plan.names[old],
                            plan.map[old]
                        ));
                    }
                }
            }
        }
        out.push_str(&line[copied..]);
    }
    if out != text {
        ws.set(path, out, whats);
    }
    for w in warnings {
        ws.warn(path, w);
    }
    Ok(())
}
