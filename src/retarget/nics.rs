//! The NICs of the machine being recovered, and which captured interface
//! each one stands in for.

use std::cmp::Ordering;
use std::path::Path;

use anyhow::Result;

use crate::manifest::Interface;
use crate::probe::net::read_sysfs_links;

/// A network device of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentNic {
    /// Its name here (in the live image: the kernel's `eth0`, not the name
    /// the restored system's udev will give it).
    pub name: String,
    /// Lowercase colon form.
    pub mac: String,
    pub driver: Option<String>,
}

/// How a captured interface was paired with a present NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchHow {
    /// Same MAC: the same card (or a VM with the same MAC).
    Mac,
    /// Same driver, in name order.
    Driver,
    /// What was left, in name order.
    Order,
}

/// A captured interface and the present NIC that takes its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicMatch {
    /// The captured interface's name.
    pub captured: String,
    pub old_mac: Option<String>,
    pub new: PresentNic,
    pub how: MatchHow,
}

/// The physical NICs under `sys` (normally `/sys`): interfaces of
/// `class/net` backed by a device, with a MAC, sorted by name. Loopback and
/// virtual interfaces (bridges, bonds, VLANs, tunnels) are left out.
pub fn present_nics(sys: &Path) -> Result<Vec<PresentNic>> {
    let mut nics: Vec<PresentNic> = read_sysfs_links(&sys.join("class/net"))?
        .into_iter()
        .filter(|l| l.has_device && !l.loopback)
        .filter_map(|l| {
            Some(PresentNic {
                mac: l.mac?,
                name: l.name,
                driver: l.driver,
            })
        })
        .collect();
    nics.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    Ok(nics)
}

/// Pair the captured physical interfaces with present NICs: first by
/// identical MAC, then the rest with NICs of the same driver, then the rest
/// in order (names in natural order on both sides). Interfaces without a MAC,
/// or driverless ones named like virtual devices, are not hardware and are
/// left out. The warnings name the interfaces and NICs left unpaired.
pub fn match_nics(captured: &[Interface], present: &[PresentNic]) -> (Vec<NicMatch>, Vec<String>) {
    let mut want: Vec<&Interface> = captured
        .iter()
        .filter(|i| i.mac.is_some() && (i.driver.is_some() || !looks_virtual(&i.name)))
        .collect();
    want.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    let mut free: Vec<&PresentNic> = present.iter().collect();
    free.sort_by(|a, b| natural_cmp(&a.name, &b.name));

    let mut out = Vec::new();
    let mut pair = |want: &mut Vec<&Interface>,
                    free: &mut Vec<&PresentNic>,
                    how: MatchHow,
                    fits: &dyn Fn(&Interface, &PresentNic) -> bool| {
        want.retain(|i| {
            let Some(k) = free.iter().position(|n| fits(i, n)) else {
                return true;
            };
            let nic = free.remove(k);
            out.push(NicMatch {
                captured: i.name.clone(),
                old_mac: i.mac.as_ref().map(|m| m.to_string()),
                new: nic.clone(),
                how,
            });
            false
        });
    };
    pair(&mut want, &mut free, MatchHow::Mac, &|i, n| {
        i.mac
            .as_ref()
            .is_some_and(|m| m.as_str().eq_ignore_ascii_case(&n.mac))
    });
    pair(&mut want, &mut free, MatchHow::Driver, &|i, n| {
        i.driver.is_some() && i.driver == n.driver
    });
    pair(&mut want, &mut free, MatchHow::Order, &|_, _| true);

    let mut warnings: Vec<String> = want
        .iter()
        .map(|i| {
            format!(
                "{} ({}) has no NIC left on this machine: its configuration is left as is",
                i.name,
                i.mac.as_ref().map_or("-", |m| m.as_str())
            )
        })
        .collect();
    warnings.extend(free.iter().map(|n| {
        format!(
            "NIC {} ({}, {}) stands for no captured interface",
            n.name,
            n.mac,
            n.driver.as_deref().unwrap_or("no driver")
        )
    }));
    out.sort_by(|a, b| natural_cmp(&a.captured, &b.captured));
    (out, warnings)
}

/// Names of interfaces software makes (sysfs has no device for them).
fn looks_virtual(name: &str) -> bool {
    const PREFIXES: [&str; 14] = [
        "br", "bond", "team", "vlan", "virbr", "docker", "veth", "tun", "tap", "vxlan", "wg",
        "macvlan", "dummy", "vnet",
    ];
    name.contains('.') || name.contains('@') || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `eth2` before `eth10`: digit runs compare as numbers.
pub(super) fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                out.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, x), (db, y)) in ca.iter().zip(&cb) {
        let o = if *da && *db {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then(x.cmp(y))
        } else {
            x.cmp(y)
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len()).then(a.cmp(b))
}
