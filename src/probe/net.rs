//! The running system's network: interfaces (sysfs), addresses and routes
//! (rtnetlink), how each address is configured (the distribution's network
//! configuration under `root`), and DNS (resolv.conf).
//!
//! Interfaces, addresses and routes always describe the running kernel; `root`
//! only says where the configuration files live (`/` on a live system, a
//! mounted tree in tests).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

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
pub fn probe_network(root: &Path) -> Result<Network> {
    let links = read_sysfs_links(Path::new(SYS_CLASS_NET))?;
    let (addresses, routes) = dump_kernel()?;
    let sources = load_configs(root)?;
    let dns = probe_dns(root)?;
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
            mac: link.mac.clone(),
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
            Ok(s) => normalize_mac(&s),
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

/// Lowercase colon form; `None` for an empty or all-zero address (lo, tun).
pub(crate) fn normalize_mac(raw: &str) -> Option<String> {
    let mac = raw.trim().to_ascii_lowercase().replace('-', ":");
    if mac.is_empty() || mac.chars().all(|c| c == '0' || c == ':') {
        None
    } else {
        Some(mac)
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
// Configuration: common model

/// What one configuration system says about one address family of an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FamilyConfig {
    dhcp: bool,
    /// IPv6 stateless autoconfiguration (router advertisements).
    auto: bool,
    /// Statically configured addresses (prefix lengths dropped: the kernel's
    /// address is matched by IP alone, netmask spelling varies).
    addresses: Vec<IpAddr>,
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
struct IfaceConfig {
    /// Interface names, shell globs allowed (networkd `Name=en*`).
    names: Vec<String>,
    /// networkd `Name=!...`: the name list is a negative match.
    names_inverted: bool,
    /// MAC addresses the definition is bound to, lowercase.
    macs: Vec<String>,
    v4: FamilyConfig,
    v6: FamilyConfig,
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

    fn named(name: &str) -> Self {
        Self {
            names: vec![name.to_string()],
            ..Self::default()
        }
    }

    /// Every matcher given must hold; a definition without any (networkd
    /// `[Match] Type=ether` alone) is not attributed to an interface.
    fn matches(&self, name: &str, mac: Option<&str>) -> bool {
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
struct ConfigSource {
    /// The manifest's `source` value.
    name: &'static str,
    /// systemd-networkd applies only the first matching .network file (in
    /// file-name order); the others merge every definition of an interface.
    first_match_wins: bool,
    configs: Vec<IfaceConfig>,
}

impl ConfigSource {
    fn family(&self, name: &str, mac: Option<&str>, v6: bool) -> Option<FamilyConfig> {
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

/// Read every configuration system's files under `root`.
fn load_configs(root: &Path) -> Result<Vec<ConfigSource>> {
    let mut netplan = Vec::new();
    // netplan: /run shadows /etc shadows /lib for a file of the same name.
    for path in list_config_files(
        root,
        &["/run/netplan", "/etc/netplan", "/lib/netplan"],
        ".yaml",
    )? {
        if let Some(text) = read_optional(root, &path)? {
            netplan.extend(parse_netplan(&text));
        }
    }

    let mut ifupdown = Vec::new();
    let mut seen = HashSet::new();
    load_ifupdown(
        root,
        Path::new("/etc/network/interfaces"),
        &mut ifupdown,
        &mut seen,
        0,
    )?;

    let mut networkd = Vec::new();
    // networkd: /etc shadows /run (and a file linked to /dev/null masks).
    for path in list_config_files(
        root,
        &["/etc/systemd/network", "/run/systemd/network"],
        ".network",
    )? {
        if let Some(text) = read_optional(root, &path)? {
            networkd.extend(parse_networkd(&text));
        }
    }

    let mut nm = Vec::new();
    let nm_dirs = [
        "/etc/NetworkManager/system-connections",
        "/run/NetworkManager/system-connections",
    ];
    for path in list_config_files(root, &nm_dirs, ".nmconnection")? {
        if let Some(text) = read_optional(root, &path)? {
            nm.extend(parse_nmconnection(&text));
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

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// fnmatch(3)-style match of `*`, `?`, `[...]` (with `!`/`^` negation and
/// ranges) and `\` escapes, as networkd and shell globs use.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| glob_at(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && glob_at(&p[1..], &n[1..]),
        Some('[') => match (glob_class(&p[1..]), n.first()) {
            (Some((members, negated, rest)), Some(&c)) => {
                class_contains(members, c) != negated && glob_at(rest, &n[1..])
            }
            (Some(_), None) => false,
            // No closing bracket: a literal '['.
            (None, _) => n.first() == Some(&'[') && glob_at(&p[1..], &n[1..]),
        },
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob_at(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && glob_at(&p[1..], &n[1..]),
    }
}

/// Split a bracket expression (the pattern after its `[`) into its members,
/// whether it is negated, and the pattern after its `]`.
fn glob_class(p: &[char]) -> Option<(&[char], bool, &[char])> {
    let (negated, body) = match p.first() {
        Some('!' | '^') => (true, &p[1..]),
        _ => (false, p),
    };
    // A ']' right after the opening bracket is a member, not the end.
    let close = body.iter().skip(1).position(|&c| c == ']')? + 1;
    Some((&body[..close], negated, &body[close + 1..]))
}

/// Whether `c` is one of `members` (single characters and `a-z` ranges).
fn class_contains(members: &[char], c: char) -> bool {
    let mut i = 0;
    while i < members.len() {
        if i + 2 < members.len() && members[i + 1] == '-' {
            if members[i] <= c && c <= members[i + 2] {
                return true;
            }
            i += 3;
        } else {
            if members[i] == c {
                return true;
            }
            i += 1;
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Files under root

/// Map an absolute path on the examined system to the host path under
/// `root`, following symlinks inside `root`: /etc/resolv.conf is usually an
/// absolute symlink into /run, which must not escape to the running system.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new("/") {
        return path.to_path_buf();
    }
    let mut resolved = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = components(path);
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let host = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match fs::read_link(&host) {
            Ok(target) if hops < 40 => {
                hops += 1;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            _ => resolved = candidate,
        }
    }
    root.join(resolved.strip_prefix("/").unwrap_or(&resolved))
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The text of `path` (absolute on the examined system); `None` when absent.
fn read_optional(root: &Path, path: &Path) -> Result<Option<String>> {
    let host = resolve_in_root(root, path);
    match fs::read(&host) {
        // Configuration files are text; a stray non-UTF-8 byte (a comment in
        // Latin-1) must not make the whole probe fail.
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", host.display())),
    }
}

/// Names in directory `dir` (absolute on the examined system), sorted; empty
/// when it does not exist.
pub(crate) fn list_dir(root: &Path, dir: &Path) -> Result<Vec<String>> {
    let host = resolve_in_root(root, dir);
    let entries = match fs::read_dir(&host) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", host.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", host.display()))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Files ending in `suffix` in `dirs`, in file-name order; for a name present
/// in several directories only the one in the earliest directory counts.
fn list_config_files(root: &Path, dirs: &[&str], suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files = BTreeMap::new();
    for dir in dirs {
        for name in list_dir(root, Path::new(dir))? {
            if name.ends_with(suffix) {
                files
                    .entry(name.clone())
                    .or_insert_with(|| Path::new(dir).join(&name));
            }
        }
    }
    Ok(files.into_values().collect())
}

// ---------------------------------------------------------------------------
// ifupdown: /etc/network/interfaces

/// An include directive of an interfaces file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IfupdownInclude {
    /// `source PATTERN`: files matching a shell glob.
    Source(String),
    /// `source-directory DIR`: every file in DIR whose name is made of
    /// letters, digits, `_` and `-`.
    Directory(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IfupdownFile {
    configs: Vec<IfaceConfig>,
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

/// Read an interfaces file and, recursively, what it includes. Relative
/// include paths are taken from the including file's directory; globs are
/// expanded in the last path component only (the form distributions use:
/// `source /etc/network/interfaces.d/*`).
fn load_ifupdown(
    root: &Path,
    path: &Path,
    out: &mut Vec<IfaceConfig>,
    seen: &mut HashSet<PathBuf>,
    depth: usize,
) -> Result<()> {
    // Include loops are a configuration mistake, not a reason to hang.
    if depth > 16 || !seen.insert(path.to_path_buf()) {
        return Ok(());
    }
    let Some(text) = read_optional(root, path)? else {
        return Ok(());
    };
    let file = parse_ifupdown(&text);
    out.extend(file.configs);
    let base = path.parent().unwrap_or(Path::new("/"));
    for include in file.includes {
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
            load_ifupdown(root, &pattern, out, seen, depth + 1)
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
                load_ifupdown(root, &full, out, seen, depth + 1)
                    .with_context(|| format!("included from {}", path.display()))?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// systemd-networkd and NetworkManager: ini-style files

/// `(section, key, value)` for every assignment of a systemd unit-style or
/// GLib keyfile, in order.
fn parse_ini(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            out.push((
                section.clone(),
                key.trim().to_string(),
                value.trim().to_string(),
            ));
        }
    }
    out
}

/// One systemd-networkd `.network` file; `None` when it matches neither by
/// name nor by MAC address.
fn parse_networkd(text: &str) -> Option<IfaceConfig> {
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
fn parse_nmconnection(text: &str) -> Option<IfaceConfig> {
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

// ---------------------------------------------------------------------------
// netplan: a reader for the YAML subset netplan files are written in

/// A YAML node: block and flow mappings and sequences, plain and quoted
/// scalars. No anchors, tags, block scalars or multi-document streams.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Yaml {
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
    Str(String),
}

impl Yaml {
    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    fn is_true(&self) -> bool {
        self.as_str().and_then(parse_bool).unwrap_or(false)
    }

    fn entries(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The items of a sequence; a lone scalar counts as a one-item list.
    fn items(&self) -> Vec<&Yaml> {
        match self {
            Yaml::Seq(items) => items.iter().collect(),
            Yaml::Str(s) if !s.is_empty() => vec![self],
            _ => Vec::new(),
        }
    }
}

struct YamlLine {
    indent: usize,
    text: String,
}

fn parse_yaml(text: &str) -> Yaml {
    let mut lines: Vec<YamlLine> = text
        .lines()
        .map(strip_yaml_comment)
        .filter(|l| {
            let t = l.trim();
            !t.is_empty() && t != "---" && t != "..."
        })
        .map(|l| YamlLine {
            indent: l.len() - l.trim_start().len(),
            text: l.trim().to_string(),
        })
        .collect();
    let Some(first) = lines.first() else {
        return Yaml::Map(Vec::new());
    };
    let indent = first.indent;
    let mut i = 0;
    yaml_block(&mut lines, &mut i, indent)
}

/// Cut a `#` comment: at line start or after whitespace, outside quotes.
pub(crate) fn strip_yaml_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn yaml_block(lines: &mut [YamlLine], i: &mut usize, indent: usize) -> Yaml {
    if is_seq_item(&lines[*i].text) {
        yaml_seq(lines, i, indent)
    } else {
        yaml_map(lines, i, indent)
    }
}

fn yaml_map(lines: &mut [YamlLine], i: &mut usize, indent: usize) -> Yaml {
    let mut entries = Vec::new();
    while *i < lines.len() && lines[*i].indent >= indent {
        if lines[*i].indent > indent {
            *i += 1; // stray deeper line (block scalar body, bad indentation)
            continue;
        }
        if is_seq_item(&lines[*i].text) {
            break;
        }
        let text = lines[*i].text.clone();
        *i += 1;
        let Some((key, value)) = split_yaml_key(&text) else {
            continue;
        };
        let node = if value.starts_with('[') || value.starts_with('{') {
            // A flow collection may go on over several lines.
            let mut flow = value.to_string();
            while !flow_closed(&flow) && *i < lines.len() {
                flow.push(' ');
                flow.push_str(&lines[*i].text);
                *i += 1;
            }
            yaml_flow(&flow)
        } else if !value.is_empty() {
            Yaml::Str(unquote(value))
        } else if *i < lines.len() && lines[*i].indent > indent {
            let child = lines[*i].indent;
            yaml_block(lines, i, child)
        } else if *i < lines.len() && lines[*i].indent == indent && is_seq_item(&lines[*i].text) {
            // A block sequence may sit at its key's own indentation.
            yaml_seq(lines, i, indent)
        } else {
            Yaml::Str(String::new())
        };
        entries.push((key, node));
    }
    Yaml::Map(entries)
}

fn yaml_seq(lines: &mut [YamlLine], i: &mut usize, indent: usize) -> Yaml {
    let mut items = Vec::new();
    while *i < lines.len() && lines[*i].indent >= indent {
        if lines[*i].indent > indent {
            *i += 1;
            continue;
        }
        if !is_seq_item(&lines[*i].text) {
            break;
        }
        let text = lines[*i].text.clone();
        let rest = text[1..].trim_start();
        if rest.is_empty() {
            *i += 1;
            if *i < lines.len() && lines[*i].indent > indent {
                let child = lines[*i].indent;
                items.push(yaml_block(lines, i, child));
            } else {
                items.push(Yaml::Str(String::new()));
            }
        } else if rest.starts_with('[') || rest.starts_with('{') {
            *i += 1;
            items.push(yaml_flow(rest));
        } else if split_yaml_key(rest).is_some() {
            // `- key: value`: a mapping whose keys sit at the column of `key`.
            let column = indent + (text.len() - rest.len());
            lines[*i] = YamlLine {
                indent: column,
                text: rest.to_string(),
            };
            items.push(yaml_map(lines, i, column));
        } else {
            *i += 1;
            items.push(Yaml::Str(unquote(rest)));
        }
    }
    Yaml::Seq(items)
}

/// `key: value` or `key:` → (key, value); the colon must be followed by a
/// space or end the line (so MAC and IPv6 addresses are plain scalars).
fn split_yaml_key(text: &str) -> Option<(String, &str)> {
    if text.starts_with('[') || text.starts_with('{') {
        return None;
    }
    let mut quote = None;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, ':') if i + 1 == bytes.len() || bytes[i + 1] == b' ' => {
                return Some((unquote(&text[..i]), text[i + 1..].trim()));
            }
            _ => {}
        }
    }
    None
}

fn unquote(text: &str) -> String {
    let t = text.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return t[1..t.len() - 1].to_string();
        }
    }
    t.to_string()
}

/// Whether every bracket opened in `text` (outside quotes) is closed.
fn flow_closed(text: &str) -> bool {
    let mut depth = 0i32;
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// `[a, "b", {k: v}]` or `{k: v, k2: [x]}`.
fn yaml_flow(text: &str) -> Yaml {
    let text = text.trim();
    let (open, inner) = match text.chars().next() {
        Some(c @ ('[' | '{')) => {
            let close = if c == '[' { ']' } else { '}' };
            let body = text[1..].trim_end();
            (c, body.strip_suffix(close).unwrap_or(body))
        }
        _ => return Yaml::Str(unquote(text)),
    };
    let parts = split_flow(inner);
    if open == '[' {
        Yaml::Seq(parts.iter().map(|p| yaml_flow_item(p)).collect())
    } else {
        Yaml::Map(
            parts
                .iter()
                .filter_map(|p| {
                    let (k, v) = split_yaml_key(p)?;
                    Some((k, yaml_flow_item(v)))
                })
                .collect(),
        )
    }
}

fn yaml_flow_item(text: &str) -> Yaml {
    let t = text.trim();
    if t.starts_with('[') || t.starts_with('{') {
        yaml_flow(t)
    } else if let Some((k, v)) = split_yaml_key(t) {
        // `[a: b]` is a one-entry mapping in flow context.
        Yaml::Map(vec![(k, yaml_flow_item(v))])
    } else {
        Yaml::Str(unquote(t))
    }
}

/// Split at top-level commas, outside quotes and nested brackets.
fn split_flow(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote = None;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// The interface definitions of one netplan file: every device under
/// `network:` (ethernets, bonds, bridges, vlans, wifis...).
fn parse_netplan(text: &str) -> Vec<IfaceConfig> {
    let doc = parse_yaml(text);
    let Some(network) = doc.get("network") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (_, devices) in network.entries() {
        for (id, dev) in devices.entries() {
            if !matches!(dev, Yaml::Map(_)) {
                continue;
            }
            let mut cfg = IfaceConfig::default();
            match (dev.get("match"), dev.get("set-name").and_then(Yaml::as_str)) {
                // The device is renamed to set-name: that is its kernel name.
                (Some(_), Some(name)) => cfg.names.push(name.to_string()),
                (Some(m), None) => {
                    cfg.names
                        .extend(m.get("name").and_then(Yaml::as_str).map(str::to_string));
                    cfg.macs.extend(
                        m.get("macaddress")
                            .and_then(Yaml::as_str)
                            .and_then(normalize_mac),
                    );
                }
                // Without a match block the id is the interface name.
                (None, _) => cfg.names.push(id.clone()),
            }
            cfg.v4.dhcp = dev.get("dhcp4").is_some_and(Yaml::is_true);
            cfg.v6.dhcp = dev.get("dhcp6").is_some_and(Yaml::is_true);
            cfg.v6.auto = dev.get("accept-ra").is_some_and(Yaml::is_true);
            for item in dev.get("addresses").map(Yaml::items).unwrap_or_default() {
                // `- 192.0.2.10/24` or, with options, `- 192.0.2.10/24: {lifetime: 0}`.
                let text = match item {
                    Yaml::Str(s) => Some(s.as_str()),
                    Yaml::Map(entries) => entries.first().map(|(k, _)| k.as_str()),
                    Yaml::Seq(_) => None,
                };
                if let Some(text) = text {
                    cfg.add_address(text);
                }
            }
            if !cfg.names.is_empty() || !cfg.macs.is_empty() {
                out.push(cfg);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// DNS

/// systemd-resolved's local stub listeners; behind them are the real servers.
const RESOLVED_STUBS: [&str; 2] = ["127.0.0.53", "127.0.0.54"];

/// Nameservers and search domains of `root/etc/resolv.conf`, looking behind
/// systemd-resolved's stub at the servers it forwards to.
fn probe_dns(root: &Path) -> Result<Dns> {
    let Some(text) = read_optional(root, Path::new("/etc/resolv.conf"))? else {
        return Ok(Dns::default());
    };
    let dns = parse_resolv_conf(&text);
    let stub_only = !dns.nameservers.is_empty()
        && dns
            .nameservers
            .iter()
            .all(|n| RESOLVED_STUBS.contains(&n.as_str()));
    if stub_only
        && let Some(upstream) = read_optional(root, Path::new("/run/systemd/resolve/resolv.conf"))?
    {
        return Ok(parse_resolv_conf(&upstream));
    }
    Ok(dns)
}

/// resolv.conf(5): `nameserver` lines in order; the last `search` or
/// `domain` line gives the search list.
fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_string)),
            Some("search") => dns.search = words.map(str::to_string).collect(),
            Some("domain") => dns.search = words.next().map(str::to_string).into_iter().collect(),
            _ => {} // comments (# or ;), options, sortlist
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::address::CacheInfo;
    use netlink_packet_route::route::RouteNextHop;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::os::unix::fs::symlink;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn write(root: &Path, path: &str, text: &str) {
        let full = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, text).unwrap();
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

    // --- ifupdown ---

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
        let mut out = Vec::new();
        load_ifupdown(
            root,
            Path::new("/etc/network/interfaces"),
            &mut out,
            &mut HashSet::new(),
            0,
        )
        .unwrap();
        let names: Vec<&str> = out.iter().map(|c| c.names[0].as_str()).collect();
        assert_eq!(names, ["eth0", "eth0.10"]);
        assert_eq!(out[1].v4.addresses, vec![ip("10.10.0.2")]);

        // Missing file: nothing configured, no error.
        let mut out = Vec::new();
        load_ifupdown(
            root,
            Path::new("/etc/network/nope"),
            &mut out,
            &mut HashSet::new(),
            0,
        )
        .unwrap();
        assert!(out.is_empty());
    }

    // --- networkd ---

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
        let sources = load_configs(root).unwrap();
        let networkd = sources.iter().find(|s| s.name == "networkd").unwrap();
        assert_eq!(networkd.configs.len(), 2);
        let eth0 = networkd.family("eth0", None, false).unwrap();
        assert_eq!(eth0.addresses, vec![ip("10.0.0.2")]);
        assert!(!eth0.dhcp, "only the first matching file applies");
        assert!(networkd.family("eth1", None, false).unwrap().dhcp);
        assert_eq!(networkd.family("wlan0", None, false), None);
    }

    // --- NetworkManager ---

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

    // --- netplan ---

    const NETPLAN_CLOUD_INIT: &str = "\
# This file is generated from information provided by the datasource.
network:
    ethernets:
        ens3:
            dhcp4: true
            dhcp6: false
            match:
                macaddress: FA:16:3E:00:00:01
            set-name: ens3
        ens4:
            dhcp4: no
            addresses:
            - 192.0.2.10/24
            - \"2001:db8::10/64\"
            routes:
              - to: default
                via: 192.0.2.1
            nameservers:
                addresses: [192.0.2.53, '2001:db8::53']
                search: [example.com]
    version: 2
";

    #[test]
    fn netplan_cloud_init() {
        let cfgs = parse_netplan(NETPLAN_CLOUD_INIT);
        assert_eq!(cfgs.len(), 2);
        assert_eq!(cfgs[0].names, ["ens3"]);
        assert!(
            cfgs[0].macs.is_empty(),
            "set-name wins over the match block"
        );
        assert!(cfgs[0].v4.dhcp && !cfgs[0].v6.dhcp);
        assert_eq!(cfgs[1].names, ["ens4"]);
        assert!(!cfgs[1].v4.dhcp);
        assert_eq!(cfgs[1].v4.addresses, vec![ip("192.0.2.10")]);
        assert_eq!(cfgs[1].v6.addresses, vec![ip("2001:db8::10")]);
    }

    #[test]
    fn netplan_flow_lists_bridges_and_matches() {
        let text = "\
network:
  version: 2
  renderer: NetworkManager   # desktop
  ethernets:
    lan:
      match: {name: \"enp*\"}
      dhcp4: yes
      accept-ra: true
    wan:
      match:
        macaddress: \"52:54:00:aa:bb:cc\"
      addresses: [198.51.100.2/24,
                  \"2001:db8:1::2/64\"]
  bridges:
    br0:
      interfaces: [eno1, eno2]
      addresses:
        - 10.0.0.1/24:
            lifetime: 0
            label: \"br0:0\"
      dhcp6: on
";
        let cfgs = parse_netplan(text);
        assert_eq!(cfgs.len(), 3);
        assert_eq!(cfgs[0].names, ["enp*"]);
        assert!(cfgs[0].v4.dhcp && cfgs[0].v6.auto);
        assert!(cfgs[0].matches("enp1s0", None));
        assert!(cfgs[1].names.is_empty());
        assert_eq!(cfgs[1].macs, ["52:54:00:aa:bb:cc"]);
        assert_eq!(cfgs[1].v4.addresses, vec![ip("198.51.100.2")]);
        assert_eq!(cfgs[1].v6.addresses, vec![ip("2001:db8:1::2")]);
        assert_eq!(cfgs[2].names, ["br0"]);
        assert_eq!(cfgs[2].v4.addresses, vec![ip("10.0.0.1")]);
        assert!(cfgs[2].v6.dhcp);

        assert!(parse_netplan("# nothing here\n").is_empty());
        assert!(parse_netplan("network:\n  version: 2\n").is_empty());
    }

    #[test]
    fn yaml_subset() {
        let doc = parse_yaml("a:\n- x\n- y: 1\n  z: '2 # not a comment'\nb: \"c: d\" # comment\n");
        assert_eq!(
            doc,
            Yaml::Map(vec![
                (
                    "a".into(),
                    Yaml::Seq(vec![
                        Yaml::Str("x".into()),
                        Yaml::Map(vec![
                            ("y".into(), Yaml::Str("1".into())),
                            ("z".into(), Yaml::Str("2 # not a comment".into())),
                        ]),
                    ])
                ),
                ("b".into(), Yaml::Str("c: d".into())),
            ])
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("en*", "enp0s3"));
        assert!(glob_match("eth?", "eth0") && !glob_match("eth?", "eth10"));
        assert!(glob_match("eth[0-2]", "eth1") && !glob_match("eth[0-2]", "eth3"));
        assert!(glob_match("eth[!0]", "eth1") && !glob_match("eth[!0]", "eth0"));
        assert!(glob_match("*", "") && glob_match("a\\*", "a*") && !glob_match("a\\*", "ab"));
        assert!(glob_match("x[", "x["));
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

    // --- DNS ---

    #[test]
    fn resolv_conf_parsing() {
        let dns = parse_resolv_conf(
            "# Generated by NetworkManager\ndomain old.example\nsearch example.com corp.example.com\n; old comment\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions edns0 trust-ad\n",
        );
        assert_eq!(dns.nameservers, ["192.0.2.53", "2001:db8::53"]);
        assert_eq!(dns.search, ["example.com", "corp.example.com"]);
        assert_eq!(
            parse_resolv_conf("search a.example\ndomain b.example\n").search,
            ["b.example"]
        );
    }

    #[test]
    fn resolv_conf_behind_the_resolved_stub() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(probe_dns(root).unwrap(), Dns::default());

        let stub = "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        write(root, "/run/systemd/resolve/stub-resolv.conf", stub);
        fs::create_dir_all(root.join("etc")).unwrap();
        // Absolute symlink, as Debian makes it: must resolve inside root.
        symlink(
            "/run/systemd/resolve/stub-resolv.conf",
            root.join("etc/resolv.conf"),
        )
        .unwrap();
        // No upstream file: keep what resolv.conf says.
        assert_eq!(probe_dns(root).unwrap().nameservers, ["127.0.0.53"]);

        write(
            root,
            "/run/systemd/resolve/resolv.conf",
            "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch lan\n",
        );
        let dns = probe_dns(root).unwrap();
        assert_eq!(dns.nameservers, ["192.0.2.53", "192.0.2.54"]);
        assert_eq!(dns.search, ["lan"]);

        // A stub plus a real server: not stub-only, taken as is.
        fs::remove_file(root.join("etc/resolv.conf")).unwrap();
        write(
            root,
            "/etc/resolv.conf",
            "nameserver 127.0.0.53\nnameserver 192.0.2.99\n",
        );
        assert_eq!(
            probe_dns(root).unwrap().nameservers,
            ["127.0.0.53", "192.0.2.99"]
        );
    }

    #[test]
    fn relative_symlinks_resolve_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "/run/resolvconf/resolv.conf",
            "nameserver 192.0.2.1\n",
        );
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink(
            "../run/resolvconf/resolv.conf",
            root.join("etc/resolv.conf"),
        )
        .unwrap();
        assert_eq!(probe_dns(root).unwrap().nameservers, ["192.0.2.1"]);
    }

    // --- the real thing ---

    #[test]
    fn probe_this_machine() {
        let net = probe_network(Path::new("/")).unwrap();
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
