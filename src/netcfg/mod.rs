//! The live image's network: bring interfaces up, wait (boundedly) for a
//! link, get an address by DHCP ([`dhcp`]) or from `ip=`, install it and the
//! default route with rtnetlink, and write /etc/resolv.conf for musl's
//! resolver.

pub mod dhcp;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::rtnetlink::Rtnetlink;

/// How the network is configured: the kernel command line's `ip=`
/// (init::cmdline parses it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Ip {
    /// DHCP on the named interface, or on every interface with a link.
    Dhcp { device: Option<String> },
    /// The kernel's `ip=CLIENT:SERVER:GATEWAY:NETMASK:HOSTNAME:DEVICE:off:DNS0:DNS1`
    /// form (CLIENT may carry a `/PREFIX` instead of NETMASK).
    Static(StaticIp),
    /// `ip=off`/`ip=none`: leave the network alone.
    Off,
    /// Nothing on the command line: DHCP on every interface with a link.
    #[default]
    Auto,
}

/// A static IPv4 configuration (`ip=ADDR::GW:MASK:HOST:DEV:off:DNS0:DNS1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<std::net::Ipv4Addr>,
    pub hostname: Option<String>,
    pub device: Option<String>,
    pub dns: Vec<std::net::Ipv4Addr>,
}

/// A network interface as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

impl Interface {
    pub fn mac_text(&self) -> String {
        format_mac(&self.mac)
    }
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    parts.try_into().ok()
}

/// Ethernet interfaces backed by hardware (not lo, not virtual ones).
pub fn interfaces(sys: &Path) -> Vec<Interface> {
    let dir = sys.join("class/net");
    let mut out: Vec<Interface> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = dir.join(&name);
            // type 1 is ARPHRD_ETHER; a `device` link means real (or
            // paravirtual) hardware.
            let kind = std::fs::read_to_string(base.join("type")).ok()?;
            if kind.trim() != "1" || !base.join("device").exists() {
                return None;
            }
            Some(Interface {
                index: std::fs::read_to_string(base.join("ifindex"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?,
                mac: parse_mac(&std::fs::read_to_string(base.join("address")).ok()?)?,
                name,
            })
        })
        .collect();
    out.sort_by_key(|i| i.index);
    out
}

fn carrier(sys: &Path, name: &str) -> bool {
    std::fs::read_to_string(sys.join("class/net").join(name).join("carrier"))
        .is_ok_and(|s| s.trim() == "1")
}

/// What the network ended up as.
#[derive(Debug, Clone)]
pub struct Configured {
    pub interface: Interface,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Where the address came from: "DHCP from 10.0.2.2, lease 86400 s" or "ip=".
    pub source: String,
    pub lease: Option<dhcp::Lease>,
}

impl std::fmt::Display for Configured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}/{}",
            self.interface.name,
            self.interface.mac_text(),
            self.address,
            self.prefix
        )?;
        if let Some(g) = self.gateway {
            write!(f, " gateway {g}")?;
        }
        if !self.dns.is_empty() {
            let d: Vec<String> = self.dns.iter().map(Ipv4Addr::to_string).collect();
            write!(f, " dns {}", d.join(","))?;
        }
        write!(f, " ({})", self.source)
    }
}

/// Bring the network up as `ip` says. Waits at most `link_wait` for the
/// interfaces to appear and for a link.
pub fn bring_up(ip: &Ip, link_wait: Duration) -> Result<Option<Configured>> {
    let sys = Path::new("/sys");
    let mut nl = Rtnetlink::open()?;
    if let Some(lo) = std::fs::read_to_string(sys.join("class/net/lo/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        nl.set_up(lo).context("cannot bring lo up")?;
    }
    if *ip == Ip::Off {
        return Ok(None);
    }
    let wanted = match ip {
        Ip::Dhcp { device } => device.clone(),
        Ip::Static(s) => s.device.clone(),
        _ => None,
    };
    let deadline = Instant::now() + link_wait;
    // Interfaces appear as their drivers probe.
    let candidates = loop {
        let found: Vec<Interface> = interfaces(sys)
            .into_iter()
            .filter(|i| wanted.as_ref().is_none_or(|w| *w == i.name))
            .collect();
        if !found.is_empty() || Instant::now() >= deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if candidates.is_empty() {
        let all: Vec<String> = interfaces(sys).into_iter().map(|i| i.name).collect();
        match &wanted {
            Some(w) => bail!(
                "no network interface {w} (present: {})",
                if all.is_empty() {
                    "none".into()
                } else {
                    all.join(", ")
                }
            ),
            None => bail!(
                "no network interface found after {} s: no driver in the image for this network card? (rewind.modules= loads more)",
                link_wait.as_secs()
            ),
        }
    }
    for i in &candidates {
        nl.set_up(i.index)
            .with_context(|| format!("cannot bring {} up", i.name))?;
    }
    let with_link = loop {
        let up: Vec<&Interface> = candidates
            .iter()
            .filter(|i| carrier(sys, &i.name))
            .collect();
        if !up.is_empty() || Instant::now() >= deadline {
            break up;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if with_link.is_empty() {
        let names: Vec<String> = candidates
            .iter()
            .map(|i| format!("{} ({})", i.name, i.mac_text()))
            .collect();
        bail!(
            "no link on {} after {} s: is a cable plugged in? (rewind.linkwait= waits longer)",
            names.join(", "),
            link_wait.as_secs()
        );
    }
    let configured = match ip {
        Ip::Static(s) => configure_static(&mut nl, with_link[0], s)?,
        _ => {
            let mut errors = Vec::new();
            let mut got = None;
            for i in &with_link {
                match dhcp::acquire(i.index, i.mac, Duration::from_secs(40)) {
                    Ok(lease) => {
                        got = Some(configure_lease(&mut nl, i, lease)?);
                        break;
                    }
                    Err(e) => errors.push(format!("{}: {e:#}", i.name)),
                }
            }
            got.ok_or_else(|| anyhow!("DHCP failed: {}", errors.join("; ")))?
        }
    };
    write_resolv_conf(
        Path::new("/etc/resolv.conf"),
        &configured.dns,
        configured.lease.as_ref().and_then(|l| l.domain.as_deref()),
    )?;
    Ok(Some(configured))
}

fn configure_lease(nl: &mut Rtnetlink, i: &Interface, lease: dhcp::Lease) -> Result<Configured> {
    let gateway = lease.routers.first().copied();
    nl.add_address(i.index, lease.address, lease.prefix)
        .with_context(|| format!("cannot give {} the address {}", i.name, lease.address))?;
    if let Some(mtu) = lease.mtu.filter(|m| *m >= 576) {
        // A failure here is harmless: the default MTU works.
        let _ = nl.set_mtu(i.index, u32::from(mtu));
    }
    if let Some(g) = gateway {
        nl.add_default_route(i.index, g, RouteProtocol::Dhcp)
            .with_context(|| format!("cannot add the default route via {g}"))?;
    }
    let source = format!(
        "DHCP from {}{}",
        lease
            .server_id
            .map_or_else(|| "?".to_string(), |s| s.to_string()),
        lease
            .lease_secs
            .map_or_else(String::new, |s| format!(", lease {s} s"))
    );
    Ok(Configured {
        interface: i.clone(),
        address: lease.address,
        prefix: lease.prefix,
        gateway,
        dns: lease.dns.clone(),
        source,
        lease: Some(lease),
    })
}

fn configure_static(nl: &mut Rtnetlink, i: &Interface, s: &StaticIp) -> Result<Configured> {
    nl.add_address(i.index, s.address, s.prefix)
        .with_context(|| format!("cannot give {} the address {}", i.name, s.address))?;
    if let Some(g) = s.gateway {
        nl.add_default_route(i.index, g, RouteProtocol::Boot)
            .with_context(|| format!("cannot add the default route via {g}"))?;
    }
    Ok(Configured {
        interface: i.clone(),
        address: s.address,
        prefix: s.prefix,
        gateway: s.gateway,
        dns: s.dns.clone(),
        source: "ip= on the kernel command line".into(),
        lease: None,
    })
}

/// Keep a DHCP lease alive: renew at half its time, for as long as the
/// process runs. Failures are printed and retried; the address stays.
pub fn keep_lease(c: &Configured) {
    let Some(mut lease) = c.lease.clone() else {
        return;
    };
    let iface = c.interface.clone();
    std::thread::spawn(move || {
        loop {
            let secs = u64::from(lease.lease_secs.unwrap_or(u32::MAX)).clamp(60, 86400 * 365);
            std::thread::sleep(Duration::from_secs(secs / 2));
            match dhcp::renew(iface.index, iface.mac, &lease) {
                Ok(l) if l.address == lease.address || l.address.is_unspecified() => {
                    lease.lease_secs = l.lease_secs.or(lease.lease_secs);
                }
                Ok(l) => eprintln!(
                    "rewind: warning: the DHCP server moved {} from {} to {}; keeping the old address",
                    iface.name, lease.address, l.address
                ),
                Err(e) => eprintln!("rewind: warning: DHCP renewal on {}: {e:#}", iface.name),
            }
        }
    });
}

/// resolv.conf for musl: nameservers (musl reads up to three) and a search domain.
pub fn resolv_conf_text(dns: &[Ipv4Addr], domain: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(d) = domain.filter(|d| !d.contains(char::is_whitespace)) {
        s.push_str(&format!("search {d}\n"));
    }
    for d in dns.iter().take(3) {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s
}

fn write_resolv_conf(path: &Path, dns: &[Ipv4Addr], domain: Option<&str>) -> Result<()> {
    if dns.is_empty() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(path, resolv_conf_text(dns, domain))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// What the recovery image asks of the kernel to bring an interface up.
impl Rtnetlink {
    fn set_up(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        if prefix < 31 {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let brd = Ipv4Addr::from(u32::from(ip) | !mask);
            m.attributes.push(AddressAttribute::Broadcast(brd));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    fn add_default_route(
        &mut self,
        index: u32,
        gateway: Ipv4Addr,
        protocol: RouteProtocol,
    ) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = protocol;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:12:34:5a\n"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x5a])
        );
        assert_eq!(parse_mac("52:54:00"), None);
        assert_eq!(
            format_mac(&[0x52, 0x54, 0, 0x12, 0x34, 0x5a]),
            "52:54:00:12:34:5a"
        );
    }

    #[test]
    fn resolv_conf() {
        let dns = [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)];
        assert_eq!(
            resolv_conf_text(&dns, Some("lab.example")),
            "search lab.example\nnameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );
        assert_eq!(
            resolv_conf_text(&dns[..1], Some("a b")),
            "nameserver 10.0.2.3\n"
        );
    }

    #[test]
    fn interfaces_from_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let mk = |name: &str, kind: &str, index: &str, mac: &str, device: bool| {
            let d = t.path().join("class/net").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), kind).unwrap();
            std::fs::write(d.join("ifindex"), index).unwrap();
            std::fs::write(d.join("address"), mac).unwrap();
            if device {
                std::fs::create_dir_all(d.join("device")).unwrap();
            }
        };
        mk("lo", "772\n", "1\n", "00:00:00:00:00:00\n", false);
        mk("eth1", "1\n", "3\n", "52:54:00:00:00:02\n", true);
        mk("eth0", "1\n", "2\n", "52:54:00:00:00:01\n", true);
        mk("br0", "1\n", "4\n", "52:54:00:00:00:03\n", false);
        let found = interfaces(t.path());
        let names: Vec<&str> = found.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert_eq!(found[0].mac_text(), "52:54:00:00:00:01");
    }
}
