//! The running system's network: interfaces (sysfs), addresses and routes
//! (rtnetlink), how each address is configured, and DNS — put together as
//! the manifest's network section.
//!
//! Interfaces, addresses and routes always describe the running kernel; `root`
//! only says where the configuration files live (`/` on a live system, a
//! mounted tree in tests). Reading those files is [`crate::netconf`]'s work;
//! this module decides, per kernel address, which configuration explains it.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol, AddressScope,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteType,
    RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::manifest::{Address, AddressMethod, Dns, Interface, Network, Route};
use crate::netconf::{self, ConfigSource, FamilyConfig};
use crate::rtnetlink::Rtnetlink;

/// Where the running kernel lists its network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// ARPHRD_LOOPBACK, the `type` of `lo` in sysfs.
const ARPHRD_LOOPBACK: u32 = 772;

/// Read the running system's network configuration.
///
/// Interfaces kept: those backed by a device (`/sys/class/net/X/device`
/// exists: physical and paravirtual NICs) plus any other non-loopback
/// interface that carries a global address (bridges, bonds, VLANs that hold
/// the machine's IP). Other virtual interfaces (veth, tun, unaddressed bridges)
/// are left out, and so are routes through them.
///
/// Each address's method comes from the first configuration system that
/// speaks for it — netplan, ifupdown, systemd-networkd, NetworkManager, in
/// that order (netplan first because it generates networkd/NM files) — and
/// otherwise from the kernel's view of the address (source `kernel`).
/// A configuration file that cannot be read as its system reads it adds a
/// warning to `warnings`.
pub fn probe_network(root: &Path, warnings: &mut Vec<String>) -> Result<Network> {
    let links = read_sysfs_links(Path::new(SYS_CLASS_NET))?;
    let (addresses, routes) = dump_kernel()?;
    let sources = netconf::load_configs(root, warnings)?;
    let resolv = netconf::resolv::read(root)?;
    let dns = Dns {
        nameservers: resolv.nameservers,
        search: resolv.search,
    };
    Ok(assemble(&links, &addresses, &routes, &sources, dns))
}

// ---------------------------------------------------------------------------
// Assembly

/// Put sysfs links, kernel addresses/routes and configuration together.
fn assemble(
    links: &[Link],
    addresses: &[KernelAddress],
    routes: &[KernelRoute],
    sources: &[ConfigSource],
    dns: Dns,
) -> Network {
    let mut links: Vec<&Link> = links.iter().collect();
    links.sort_by_key(|l| l.index);

    let mut interfaces = Vec::new();
    let mut kept = BTreeMap::new(); // ifindex -> name, to resolve route interfaces
    for link in links {
        if link.loopback {
            continue;
        }
        let own: Vec<&KernelAddress> = addresses.iter().filter(|a| a.index == link.index).collect();
        if !link.has_device && own.is_empty() {
            continue;
        }
        let addresses = own
            .into_iter()
            .map(|a| {
                let (method, source) = address_method(sources, &link.name, link.mac.as_deref(), a);
                Address {
                    cidr: format!("{}/{}", a.ip, a.prefix_len),
                    method,
                    source,
                }
            })
            .collect();
        kept.insert(link.index, link.name.clone());
        interfaces.push(Interface {
            name: link.name.clone(),
            mac: link.mac.as_deref().and_then(|m| m.parse().ok()),
            mtu: link.mtu,
            driver: link.driver.clone(),
            addresses,
        });
    }

    // A route through an interface we do not record (lo, veth, tun) could not
    // be recreated on the recovered machine, so it is left out.
    let routes = routes
        .iter()
        .filter_map(|r| {
            let name = kept.get(&r.oif?)?;
            Some(Route {
                destination: r.destination.clone(),
                gateway: r.gateway.map(|g| g.to_string()),
                interface: Some(name.clone()),
                metric: r.metric,
            })
        })
        .collect();

    Network {
        interfaces,
        routes,
        dns,
    }
}

// ---------------------------------------------------------------------------
// sysfs

/// One entry of /sys/class/net.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) mac: Option<String>,
    pub(crate) mtu: u32,
    pub(crate) driver: Option<String>,
    /// Has a `device` link, i.e. is backed by hardware (or a paravirtual NIC).
    pub(crate) has_device: bool,
    pub(crate) loopback: bool,
}

/// Read every interface under `dir` (normally /sys/class/net).
pub(crate) fn read_sysfs_links(dir: &Path) -> Result<Vec<Link>> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut links = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let base = entry.path();
        // An interface can vanish between listing and reading (hot unplug,
        // a container's veth going away); that is not an error.
        let Some(index) = read_sysfs_number(&base.join("ifindex"))? else {
            continue;
        };
        let Some(mtu) = read_sysfs_number(&base.join("mtu"))? else {
            continue;
        };
        let kind = read_sysfs_number(&base.join("type"))?;
        let mac = match fs::read_to_string(base.join("address")) {
            Ok(s) => crate::util::mac::normalize(&s),
            Err(_) => None, // some link types (e.g. wireguard, tun) have none readable
        };
        let device = base.join("device");
        let has_device = fs::symlink_metadata(&device).is_ok();
        let driver = fs::read_link(device.join("driver"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        links.push(Link {
            index,
            loopback: name == "lo" || kind == Some(ARPHRD_LOOPBACK),
            name,
            mac,
            mtu,
            driver,
            has_device,
        });
    }
    Ok(links)
}

/// A decimal number in a sysfs attribute; `None` when the file is gone.
fn read_sysfs_number(path: &Path) -> Result<Option<u32>> {
    match fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{}: not a number: {:?}", path.display(), s.trim())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

// ---------------------------------------------------------------------------
// rtnetlink

/// A global address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelAddress {
    index: u32,
    ip: IpAddr,
    prefix_len: u8,
    /// IFA_F_PERMANENT: no lifetime, added by hand or by a static configuration.
    permanent: bool,
    /// Valid lifetime in seconds when finite (IFA_CACHEINFO).
    valid_lifetime: Option<u32>,
    /// IFA_PROTO says the kernel made it from a router advertisement (SLAAC).
    from_ra: bool,
}

/// A main-table unicast route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelRoute {
    destination: String,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    metric: Option<u32>,
}

/// Dump IPv4 and IPv6 addresses and routes.
fn dump_kernel() -> Result<(Vec<KernelAddress>, Vec<KernelRoute>)> {
    let mut nl = Rtnetlink::open()?;
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = AddressMessage::default();
        request.header.family = family;
        for msg in nl.dump(RouteNetlinkMessage::GetAddress(request), "RTM_GETADDR")? {
            if let RouteNetlinkMessage::NewAddress(a) = msg {
                addresses.extend(kernel_address(&a));
            }
        }
        // One dump per family: an AF_UNSPEC route dump also walks the
        // multicast (IPMR) and MPLS tables, which we neither want nor need
        // to decode.
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        for msg in nl.dump(RouteNetlinkMessage::GetRoute(request), "RTM_GETROUTE")? {
            if let RouteNetlinkMessage::NewRoute(r) = msg {
                routes.extend(kernel_routes(&r));
            }
        }
    }
    Ok((addresses, routes))
}

/// The global address in an RTM_NEWADDR message; `None` for addresses we do
/// not record (loopback, link-local, host/link scope, failed DAD).
fn kernel_address(msg: &AddressMessage) -> Option<KernelAddress> {
    if !matches!(
        msg.header.scope,
        AddressScope::Universe | AddressScope::Site
    ) {
        return None;
    }
    let mut local = None;
    let mut address = None;
    // IFA_FLAGS (32 bits) supersedes the 8-bit flags of the header when present.
    let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
    let mut valid_lifetime = None;
    let mut from_ra = false;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = *f,
            AddressAttribute::CacheInfo(ci) if ci.ifa_valid != u32::MAX => {
                valid_lifetime = Some(ci.ifa_valid);
            }
            AddressAttribute::Protocol(AddressProtocol::RouterAnnouncement) => from_ra = true,
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    let ip = local.or(address)?;
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || is_link_local(&ip) {
        return None;
    }
    if flags.contains(AddressFlags::Dadfailed) {
        return None;
    }
    Some(KernelAddress {
        index: msg.header.index,
        ip,
        prefix_len: msg.header.prefix_len,
        permanent: flags.contains(AddressFlags::Permanent),
        valid_lifetime,
        from_ra,
    })
}

/// The recordable routes in an RTM_NEWROUTE message: main table, unicast,
/// not link-local or loopback. A multipath route gives one route per hop.
fn kernel_routes(msg: &RouteMessage) -> Vec<KernelRoute> {
    let header = &msg.header;
    if header.kind != RouteType::Unicast || header.flags.contains(RouteFlags::Cloned) {
        return Vec::new();
    }
    // Subnet routes the kernel adds for an address, and routes learnt from
    // router advertisements, come back by themselves; replaying them on
    // recovery would only fail with "exists".
    if matches!(header.protocol, RouteProtocol::Kernel | RouteProtocol::Ra) {
        return Vec::new();
    }
    // RTA_TABLE holds the full 32-bit table id; the header's byte is a fallback.
    let mut table = u32::from(header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = None;
    let mut hops = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => destination = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Via(v) => gateway = via_ip(v),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::MultiPath(h) => hops = Some(h),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return Vec::new();
    }
    let prefix_len = header.destination_prefix_length;
    let destination = match destination {
        _ if prefix_len == 0 => "default".to_string(),
        None => return Vec::new(),
        Some(ip) if ip.is_loopback() || ip.is_multicast() || is_link_local(&ip) => {
            return Vec::new();
        }
        Some(ip) => format!("{ip}/{prefix_len}"),
    };
    match hops {
        Some(hops) => hops
            .iter()
            .map(|hop| KernelRoute {
                destination: destination.clone(),
                gateway: hop.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(a) => route_ip(a),
                    RouteAttribute::Via(v) => via_ip(v),
                    _ => None,
                }),
                oif: Some(hop.interface_index),
                metric,
            })
            .collect(),
        None => vec![KernelRoute {
            destination,
            gateway,
            oif,
            metric,
        }],
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn via_ip(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteVia::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// 169.254.0.0/16 or fe80::/10.
fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// The method of an address no configuration file speaks for, from what the
/// kernel knows: an address with a lifetime was handed out by someone.
///
/// IPv4: dynamic → `dhcp`. IPv6: dynamic → `auto` (SLAAC), except a /128 not
/// made from a router advertisement, which is a DHCPv6 lease (SLAAC always
/// builds addresses from a /64 prefix; DHCPv6 clients add single /128s).
fn kernel_method(addr: &KernelAddress) -> AddressMethod {
    let dynamic = !addr.permanent || addr.valid_lifetime.is_some();
    match addr.ip {
        _ if !dynamic => AddressMethod::Static,
        IpAddr::V4(_) => AddressMethod::Dhcp,
        IpAddr::V6(_) if !addr.from_ra && addr.prefix_len == 128 => AddressMethod::Dhcp,
        IpAddr::V6(_) => AddressMethod::Auto,
    }
}

// ---------------------------------------------------------------------------
// Which configuration explains an address

/// The method and source of one kernel address.
fn address_method(
    sources: &[ConfigSource],
    name: &str,
    mac: Option<&str>,
    addr: &KernelAddress,
) -> (AddressMethod, String) {
    for source in sources {
        if let Some(family) = source.family(name, mac, addr.ip.is_ipv6())
            && let Some(method) = config_method(&family, addr)
        {
            return (method, source.name.to_string());
        }
    }
    (kernel_method(addr), "kernel".to_string())
}

/// What a configuration says about one address; `None` when it does not
/// explain it (a static configuration that does not list this address, an
/// IPv6 `auto` one faced with a permanent address), so that the next source
/// or the kernel decides.
fn config_method(family: &FamilyConfig, addr: &KernelAddress) -> Option<AddressMethod> {
    if family.addresses.contains(&addr.ip) {
        Some(AddressMethod::Static)
    } else if family.dhcp {
        // DHCPv6 configurations also accept router advertisements.
        Some(if addr.ip.is_ipv6() && addr.from_ra {
            AddressMethod::Auto
        } else {
            AddressMethod::Dhcp
        })
    } else if family.auto && addr.ip.is_ipv6() && !addr.permanent {
        // "auto" (NetworkManager, ifupdown) runs DHCPv6 too when the router asks.
        Some(kernel_method(addr))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Globs

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netconf::IfaceConfig;
    use netlink_packet_route::address::CacheInfo;
    use netlink_packet_route::route::RouteNextHop;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::os::unix::fs::symlink;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn kaddr(addr: &str, prefix_len: u8, permanent: bool, valid: Option<u32>) -> KernelAddress {
        KernelAddress {
            index: 2,
            ip: ip(addr),
            prefix_len,
            permanent,
            valid_lifetime: valid,
            from_ra: false,
        }
    }

    // --- method decision ---

    #[test]
    fn kernel_fallback_method() {
        use AddressMethod::*;
        assert_eq!(kernel_method(&kaddr("192.0.2.10", 24, true, None)), Static);
        assert_eq!(
            kernel_method(&kaddr("192.0.2.10", 24, false, Some(86400))),
            Dhcp
        );
        // An old dhclient adds leases without lifetime flags but a finite lifetime shows.
        assert_eq!(
            kernel_method(&kaddr("192.0.2.10", 24, true, Some(600))),
            Dhcp
        );
        assert_eq!(kernel_method(&kaddr("192.0.2.10", 24, false, None)), Dhcp);
        assert_eq!(
            kernel_method(&kaddr("2001:db8::10", 64, true, None)),
            Static
        );
        assert_eq!(
            kernel_method(&kaddr(
                "2001:db8::5054:ff:fe12:3456",
                64,
                false,
                Some(2591000)
            )),
            Auto
        );
        assert_eq!(
            kernel_method(&kaddr("2001:db8::1:1", 128, false, Some(3600))),
            Dhcp
        );
        let mut ra = kaddr("2001:db8::1", 128, false, Some(3600));
        ra.from_ra = true;
        assert_eq!(kernel_method(&ra), Auto);
    }

    #[test]
    fn config_beats_kernel_and_sources_are_ordered() {
        let sources = vec![
            ConfigSource {
                name: "ifupdown",
                first_match_wins: false,
                configs: vec![IfaceConfig {
                    v4: FamilyConfig {
                        addresses: vec![ip("192.0.2.10")],
                        ..Default::default()
                    },
                    ..IfaceConfig::named("eth0")
                }],
            },
            ConfigSource {
                name: "networkmanager",
                first_match_wins: false,
                configs: vec![IfaceConfig {
                    v4: FamilyConfig {
                        dhcp: true,
                        ..Default::default()
                    },
                    v6: FamilyConfig {
                        auto: true,
                        ..Default::default()
                    },
                    ..IfaceConfig::named("eth*")
                }],
            },
        ];
        let m = |a: &KernelAddress| address_method(&sources, "eth0", None, a);
        // Listed in ifupdown, even though permanent-less.
        assert_eq!(
            m(&kaddr("192.0.2.10", 24, false, Some(60))),
            (AddressMethod::Static, "ifupdown".into())
        );
        // Not listed there: ifupdown does not speak for it, NetworkManager does.
        assert_eq!(
            m(&kaddr("192.0.2.77", 24, false, Some(60))),
            (AddressMethod::Dhcp, "networkmanager".into())
        );
        assert_eq!(
            m(&kaddr("2001:db8::1", 64, false, Some(60))),
            (AddressMethod::Auto, "networkmanager".into())
        );
        // IPv6 auto does not explain a permanent address: the kernel decides.
        assert_eq!(
            m(&kaddr("2001:db8::9", 64, true, None)),
            (AddressMethod::Static, "kernel".into())
        );
        // No config for this interface at all.
        assert_eq!(
            address_method(
                &sources,
                "wlan0",
                None,
                &kaddr("10.1.1.1", 16, false, Some(5))
            ),
            (AddressMethod::Dhcp, "kernel".into())
        );
    }

    // --- netlink message conversion ---

    fn addr_msg(addr: IpAddr, prefix_len: u8, scope: AddressScope) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.header.prefix_len = prefix_len;
        msg.header.scope = scope;
        msg.header.index = 3;
        msg.attributes.push(AddressAttribute::Address(addr));
        msg
    }

    #[test]
    fn netlink_addresses() {
        let mut v4 = addr_msg(ip("192.0.2.10"), 24, AddressScope::Universe);
        v4.attributes
            .push(AddressAttribute::Local(ip("192.0.2.10")));
        let mut ci = CacheInfo::default();
        ci.ifa_valid = 3600;
        ci.ifa_preferred = 3600;
        v4.attributes.push(AddressAttribute::CacheInfo(ci));
        v4.attributes
            .push(AddressAttribute::Flags(AddressFlags::empty()));
        let k = kernel_address(&v4).unwrap();
        assert_eq!(
            (k.index, k.ip, k.prefix_len, k.permanent, k.valid_lifetime),
            (3, ip("192.0.2.10"), 24, false, Some(3600))
        );
        assert_eq!(kernel_method(&k), AddressMethod::Dhcp);

        // Point-to-point: IFA_LOCAL is ours, IFA_ADDRESS the peer.
        let mut ptp = addr_msg(ip("10.8.0.1"), 32, AddressScope::Universe);
        ptp.attributes.push(AddressAttribute::Local(ip("10.8.0.2")));
        assert_eq!(kernel_address(&ptp).unwrap().ip, ip("10.8.0.2"));

        let mut v6 = addr_msg(ip("2001:db8::10"), 64, AddressScope::Universe);
        let mut ci = CacheInfo::default();
        ci.ifa_valid = u32::MAX; // forever
        ci.ifa_preferred = u32::MAX;
        v6.attributes.push(AddressAttribute::CacheInfo(ci));
        v6.attributes.push(AddressAttribute::Flags(
            AddressFlags::Permanent | AddressFlags::Nodad,
        ));
        let k = kernel_address(&v6).unwrap();
        assert!(k.permanent && k.valid_lifetime.is_none());
        assert_eq!(kernel_method(&k), AddressMethod::Static);

        let mut slaac = addr_msg(ip("2001:db8::5054:ff:fe00:1"), 64, AddressScope::Universe);
        slaac.attributes.push(AddressAttribute::Protocol(
            AddressProtocol::RouterAnnouncement,
        ));
        assert!(kernel_address(&slaac).unwrap().from_ra);

        assert_eq!(
            kernel_address(&addr_msg(ip("127.0.0.1"), 8, AddressScope::Host)),
            None
        );
        assert_eq!(
            kernel_address(&addr_msg(ip("::1"), 128, AddressScope::Host)),
            None
        );
        assert_eq!(
            kernel_address(&addr_msg(ip("fe80::1"), 64, AddressScope::Link)),
            None
        );
        // Even if a link-local address claims global scope.
        assert_eq!(
            kernel_address(&addr_msg(ip("fe80::1"), 64, AddressScope::Universe)),
            None
        );
        assert_eq!(
            kernel_address(&addr_msg(ip("169.254.1.1"), 16, AddressScope::Link)),
            None
        );
        let mut failed = addr_msg(ip("2001:db8::99"), 64, AddressScope::Universe);
        failed
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Dadfailed));
        assert_eq!(kernel_address(&failed), None);
    }

    fn route_msg(family: AddressFamily, dest: Option<(IpAddr, u8)>) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.kind = RouteType::Unicast;
        if let Some((addr, len)) = dest {
            msg.header.destination_prefix_length = len;
            msg.attributes
                .push(RouteAttribute::Destination(addr.into()));
        }
        msg
    }

    #[test]
    fn netlink_routes() {
        let mut default = route_msg(AddressFamily::Inet, None);
        default.attributes.push(RouteAttribute::Table(254));
        default
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                192, 0, 2, 1,
            ))));
        default.attributes.push(RouteAttribute::Oif(2));
        default.attributes.push(RouteAttribute::Priority(100));
        assert_eq!(
            kernel_routes(&default),
            vec![KernelRoute {
                destination: "default".into(),
                gateway: Some(ip("192.0.2.1")),
                oif: Some(2),
                metric: Some(100)
            }]
        );

        let mut net = route_msg(AddressFamily::Inet, Some((ip("192.0.2.0"), 24)));
        net.attributes.push(RouteAttribute::Oif(2));
        assert_eq!(kernel_routes(&net)[0].destination, "192.0.2.0/24");
        assert_eq!(kernel_routes(&net)[0].gateway, None);
        // The same subnet route added by the kernel for an address is implied.
        net.header.protocol = RouteProtocol::Kernel;
        assert!(kernel_routes(&net).is_empty());
        net.header.protocol = RouteProtocol::Ra;
        assert!(kernel_routes(&net).is_empty());

        let mut local = route_msg(AddressFamily::Inet, Some((ip("192.0.2.10"), 32)));
        local.header.table = 255;
        local.header.kind = RouteType::Local;
        assert!(kernel_routes(&local).is_empty());

        let mut other_table = route_msg(AddressFamily::Inet, Some((ip("10.0.0.0"), 8)));
        other_table.attributes.push(RouteAttribute::Table(1000));
        assert!(kernel_routes(&other_table).is_empty());

        let fe80 = route_msg(AddressFamily::Inet6, Some((ip("fe80::"), 64)));
        assert!(kernel_routes(&fe80).is_empty());

        let mut unreachable = route_msg(AddressFamily::Inet6, Some((ip("2001:db8:dead::"), 48)));
        unreachable.header.kind = RouteType::Unreachable;
        assert!(kernel_routes(&unreachable).is_empty());

        let mut multipath = route_msg(AddressFamily::Inet6, None);
        let mut hops = Vec::new();
        for (gw, oif) in [("2001:db8::1", 2u32), ("2001:db8::2", 3)] {
            let mut hop = RouteNextHop::default();
            hop.interface_index = oif;
            hop.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet6(
                    gw.parse::<Ipv6Addr>().unwrap(),
                )));
            hops.push(hop);
        }
        multipath.attributes.push(RouteAttribute::MultiPath(hops));
        multipath.attributes.push(RouteAttribute::Priority(1024));
        let routes = kernel_routes(&multipath);
        assert_eq!(routes.len(), 2);
        assert_eq!(
            (routes[1].gateway, routes[1].oif, routes[1].metric),
            (Some(ip("2001:db8::2")), Some(3), Some(1024))
        );
    }

    // --- sysfs and assembly ---

    #[test]
    fn sysfs_links() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("class/net");
        let iface = |name: &str, index: u32, mac: &str, kind: u32| {
            let base = net.join(name);
            fs::create_dir_all(&base).unwrap();
            fs::write(base.join("ifindex"), format!("{index}\n")).unwrap();
            fs::write(base.join("mtu"), "1500\n").unwrap();
            fs::write(base.join("address"), format!("{mac}\n")).unwrap();
            fs::write(base.join("type"), format!("{kind}\n")).unwrap();
            base
        };
        iface("lo", 1, "00:00:00:00:00:00", 772);
        let eth0 = iface("eth0", 2, "52:54:00:AB:CD:EF", 1);
        iface("docker0", 3, "02:42:ac:11:00:01", 1);
        let drivers = dir.path().join("bus/pci/drivers/e1000e");
        let device = dir.path().join("devices/pci0000:00/0000:00:1f.6");
        fs::create_dir_all(&drivers).unwrap();
        fs::create_dir_all(&device).unwrap();
        symlink(&drivers, device.join("driver")).unwrap();
        symlink(&device, eth0.join("device")).unwrap();

        let mut links = read_sysfs_links(&net).unwrap();
        links.sort_by_key(|l| l.index);
        assert_eq!(links.len(), 3);
        assert!(links[0].loopback && links[0].mac.is_none());
        assert_eq!(
            links[1],
            Link {
                index: 2,
                name: "eth0".into(),
                mac: Some("52:54:00:ab:cd:ef".into()),
                mtu: 1500,
                driver: Some("e1000e".into()),
                has_device: true,
                loopback: false,
            }
        );
        assert!(!links[2].has_device && links[2].driver.is_none());
    }

    #[test]
    fn assembly_keeps_devices_and_addressed_virtuals() {
        let link = |index, name: &str, has_device, loopback| Link {
            index,
            name: name.into(),
            mac: None,
            mtu: 1500,
            driver: None,
            has_device,
            loopback,
        };
        let links = [
            link(1, "lo", false, true),
            link(4, "br0", false, false),
            link(2, "eth0", true, false),
            link(3, "veth1", false, false),
            link(5, "eth1", true, false),
        ];
        let mut a = kaddr("192.0.2.10", 24, true, None);
        a.index = 4;
        let routes = [
            KernelRoute {
                destination: "default".into(),
                gateway: Some(ip("192.0.2.1")),
                oif: Some(4),
                metric: None,
            },
            KernelRoute {
                destination: "10.0.0.0/8".into(),
                gateway: None,
                oif: Some(3),
                metric: None,
            },
            KernelRoute {
                destination: "127.0.0.0/8".into(),
                gateway: None,
                oif: Some(1),
                metric: None,
            },
        ];
        let net = assemble(&links, &[a], &routes, &[], Dns::default());
        let names: Vec<&str> = net.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "br0", "eth1"]);
        assert_eq!(
            net.interfaces[1].addresses,
            vec![Address {
                cidr: "192.0.2.10/24".into(),
                method: AddressMethod::Static,
                source: "kernel".into()
            }]
        );
        assert_eq!(
            net.routes,
            vec![Route {
                destination: "default".into(),
                gateway: Some("192.0.2.1".into()),
                interface: Some("br0".into()),
                metric: None
            }]
        );
    }

    // --- the real thing ---

    #[test]
    fn probe_this_machine() {
        let net = probe_network(Path::new("/"), &mut Vec::new()).unwrap();
        assert!(net.interfaces.iter().all(|i| i.mtu > 0));
        assert!(net.interfaces.iter().all(|i| i.name != "lo"));
        for route in &net.routes {
            let name = route.interface.as_deref().unwrap();
            assert!(
                net.interfaces.iter().any(|i| i.name == name),
                "route through unlisted {name}"
            );
        }
    }
}
