//! A DHCPv4 client for one interface (RFC 2131/2132): DISCOVER, OFFER,
//! REQUEST, ACK over an `AF_PACKET` socket, so that it works before the
//! interface has an address and whether the server answers by broadcast or
//! by unicast to the offered address. The messages are built and parsed here
//! (pure, tested); the socket part is small.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const DECLINE: u8 = 4;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

const OPT_PAD: u8 = 0;
const OPT_SUBNET: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_DOMAIN: u8 = 15;
const OPT_MTU: u8 = 26;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE: u8 = 51;
const OPT_OVERLOAD: u8 = 52;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_MAX_SIZE: u8 = 57;
const OPT_VENDOR_CLASS: u8 = 60;
const OPT_CLIENT_ID: u8 = 61;
const OPT_SEARCH: u8 = 119;
const OPT_END: u8 = 255;

/// What a server offered or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    pub lease_secs: Option<u32>,
    pub server_id: Option<Ipv4Addr>,
}

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: u8,
    pub xid: u32,
    pub chaddr: [u8; 6],
    pub lease: Lease,
}

/// Build a client message: DISCOVER, or REQUEST for `requested` from `server_id`.
pub fn build(
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    secs: u16,
) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = BOOTREQUEST;
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[8..10].copy_from_slice(&secs.to_be_bytes());
    // Broadcast flag: answer by broadcast, we have no address yet.
    m[10] = 0x80;
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC);
    m.extend_from_slice(&[OPT_MSG_TYPE, 1, kind]);
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&mac);
    m.extend_from_slice(&[OPT_CLIENT_ID, client_id.len() as u8]);
    m.extend_from_slice(&client_id);
    if let Some(ip) = requested {
        m.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
        m.extend_from_slice(&ip.octets());
    }
    if let Some(ip) = server_id {
        m.extend_from_slice(&[OPT_SERVER_ID, 4]);
        m.extend_from_slice(&ip.octets());
    }
    m.extend_from_slice(&[OPT_MAX_SIZE, 2, 0x05, 0xdc]); // 1500
    let vendor = b"rewind";
    m.extend_from_slice(&[OPT_VENDOR_CLASS, vendor.len() as u8]);
    m.extend_from_slice(vendor);
    let params = [
        OPT_SUBNET,
        OPT_ROUTER,
        OPT_DNS,
        OPT_HOSTNAME,
        OPT_DOMAIN,
        OPT_MTU,
        OPT_LEASE,
        OPT_SERVER_ID,
        OPT_SEARCH,
    ];
    m.extend_from_slice(&[OPT_PARAMS, params.len() as u8]);
    m.extend_from_slice(&params);
    m.push(OPT_END);
    // Some old servers drop BOOTP messages under 300 bytes.
    if m.len() < 300 {
        m.resize(300, OPT_PAD);
    }
    m
}

fn addrs(v: &[u8]) -> Vec<Ipv4Addr> {
    v.chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect()
}

/// Options from one area (the options field, or `file`/`sname` when
/// overloaded), appended to `out` (a repeated option is concatenated, RFC 3396).
fn read_options(area: &[u8], out: &mut Vec<(u8, Vec<u8>)>) -> Result<()> {
    let mut i = 0;
    while i < area.len() {
        let code = area[i];
        match code {
            OPT_PAD => i += 1,
            OPT_END => break,
            _ => {
                let len = *area.get(i + 1).context("option without its length")? as usize;
                let val = area
                    .get(i + 2..i + 2 + len)
                    .context("option longer than the message")?;
                match out.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, v)) => v.extend_from_slice(val),
                    None => out.push((code, val.to_vec())),
                }
                i += 2 + len;
            }
        }
    }
    Ok(())
}

/// Parse a server's reply.
pub fn parse(msg: &[u8]) -> Result<Reply> {
    if msg.len() < 240 || msg[0] != BOOTREPLY || msg[236..240] != MAGIC {
        bail!("not a DHCP reply");
    }
    let mut opts = Vec::new();
    read_options(&msg[240..], &mut opts)?;
    let get =
        |c: u8, opts: &[(u8, Vec<u8>)]| opts.iter().find(|(k, _)| *k == c).map(|(_, v)| v.clone());
    if let Some(o) = get(OPT_OVERLOAD, &opts) {
        let o = o.first().copied().unwrap_or(0);
        if o & 1 != 0 {
            read_options(&msg[108..236], &mut opts)?;
        }
        if o & 2 != 0 {
            read_options(&msg[44..108], &mut opts)?;
        }
    }
    let kind = get(OPT_MSG_TYPE, &opts)
        .and_then(|v| v.first().copied())
        .context("no DHCP message type")?;
    let text = |c: u8| {
        get(c, &opts)
            .map(|v| {
                String::from_utf8_lossy(&v)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .filter(|s| !s.is_empty())
    };
    let prefix = get(OPT_SUBNET, &opts)
        .filter(|v| v.len() == 4)
        .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]).leading_ones() as u8)
        .unwrap_or(24);
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&msg[28..34]);
    Ok(Reply {
        kind,
        xid: u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]),
        chaddr,
        lease: Lease {
            address: Ipv4Addr::new(msg[16], msg[17], msg[18], msg[19]),
            prefix,
            routers: get(OPT_ROUTER, &opts)
                .map(|v| addrs(&v))
                .unwrap_or_default(),
            dns: get(OPT_DNS, &opts).map(|v| addrs(&v)).unwrap_or_default(),
            domain: text(OPT_DOMAIN),
            hostname: text(OPT_HOSTNAME),
            mtu: get(OPT_MTU, &opts)
                .filter(|v| v.len() == 2)
                .map(|v| u16::from_be_bytes([v[0], v[1]])),
            lease_secs: get(OPT_LEASE, &opts)
                .filter(|v| v.len() == 4)
                .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            server_id: get(OPT_SERVER_ID, &opts)
                .filter(|v| v.len() == 4)
                .map(|v| Ipv4Addr::new(v[0], v[1], v[2], v[3])),
        },
    })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Wrap a DHCP message in IPv4 and UDP headers, 0.0.0.0:68 → 255.255.255.255:67.
pub fn ip_udp(payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&[255, 255, 255, 255]);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&68u16.to_be_bytes());
    p.extend_from_slice(&67u16.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum: allowed over IPv4
    p.extend_from_slice(payload);
    p
}

/// The DHCP payload of an IPv4/UDP packet to port 68, if it is one.
pub fn udp_payload(packet: &[u8]) -> Option<&[u8]> {
    if packet.len() < 28 || packet[0] >> 4 != 4 || packet[9] != 17 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    let udp = packet.get(ihl..total)?;
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != 68 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]])).min(udp.len());
    udp.get(8..len)
}

/// An `AF_PACKET` socket on one interface, carrying IPv4 packets.
struct PacketSocket {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    #[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
    fn open(ifindex: u32) -> Result<PacketSocket> {
        use std::os::fd::FromRawFd;
        let proto = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot open a packet socket");
        }
        // SAFETY: raw is a fresh descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let s = PacketSocket {
            fd,
            ifindex: ifindex as i32,
        };
        let addr = s.addr([0; 8]);
        // SAFETY: addr is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&s.fd),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot bind the packet socket");
        }
        Ok(s)
    }

    #[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
    fn addr(&self, hw: [u8; 8]) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all zeros is valid.
        let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        a.sll_ifindex = self.ifindex;
        a.sll_halen = 6;
        a.sll_addr = hw;
        a
    }

    #[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
    fn send_broadcast(&self, packet: &[u8]) -> Result<()> {
        let addr = self.addr([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        // SAFETY: buffer and address are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot send a DHCP message");
        }
        Ok(())
    }

    /// One packet, or `None` when `timeout` passes.
    #[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(e).context("poll on the packet socket failed");
        }
        if r == 0 {
            return Ok(None);
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot receive");
        }
        Ok(Some(n as usize))
    }
}

fn random_u32() -> u32 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return t ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}

/// Send `msg` and wait for a reply of one of `kinds` to it, resending with
/// growing waits (2, 4, 8 s...) until `deadline`.
fn exchange(
    sock: &PacketSocket,
    msg: &[u8],
    xid: u32,
    mac: [u8; 6],
    kinds: &[u8],
    deadline: Instant,
) -> Result<Option<Reply>> {
    let packet = ip_udp(msg);
    let mut wait = Duration::from_secs(2);
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        sock.send_broadcast(&packet)?;
        let until = (Instant::now() + wait).min(deadline);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let Some(n) = sock.recv(&mut buf, left)? else {
                break;
            };
            let Some(payload) = udp_payload(&buf[..n]) else {
                continue;
            };
            let Ok(reply) = parse(payload) else { continue };
            if reply.xid == xid && reply.chaddr == mac && kinds.contains(&reply.kind) {
                return Ok(Some(reply));
            }
        }
        wait = (wait * 2).min(Duration::from_secs(16));
    }
    Ok(None)
}

/// Get a lease on the interface `ifindex` with hardware address `mac`, in
/// at most `limit`.
pub fn acquire(ifindex: u32, mac: [u8; 6], limit: Duration) -> Result<Lease> {
    let sock = PacketSocket::open(ifindex)?;
    let started = Instant::now();
    let deadline = started + limit;
    while Instant::now() < deadline {
        let xid = random_u32();
        let secs = started.elapsed().as_secs().min(u16::MAX as u64) as u16;
        let discover = build(DISCOVER, xid, mac, None, None, secs);
        let Some(offer) = exchange(&sock, &discover, xid, mac, &[OFFER], deadline)? else {
            break;
        };
        let request = build(
            REQUEST,
            xid,
            mac,
            Some(offer.lease.address),
            offer.lease.server_id,
            secs,
        );
        let answer_by = (Instant::now() + Duration::from_secs(15)).min(deadline);
        match exchange(&sock, &request, xid, mac, &[ACK, NAK], answer_by)? {
            Some(r) if r.kind == ACK => {
                let mut lease = r.lease;
                // Some servers leave options out of the ACK that were in the offer.
                if lease.address.is_unspecified() {
                    lease.address = offer.lease.address;
                }
                if lease.routers.is_empty() {
                    lease.routers = offer.lease.routers;
                }
                if lease.dns.is_empty() {
                    lease.dns = offer.lease.dns;
                }
                if lease.server_id.is_none() {
                    lease.server_id = offer.lease.server_id;
                }
                return Ok(lease);
            }
            // NAK or no answer: start over.
            _ => continue,
        }
    }
    bail!(
        "no DHCP lease after {} s (no server answered)",
        limit.as_secs()
    )
}

/// Renew a lease before it ends: REQUEST (no server id) for the same address.
pub fn renew(ifindex: u32, mac: [u8; 6], lease: &Lease) -> Result<Lease> {
    let sock = PacketSocket::open(ifindex)?;
    let xid = random_u32();
    let req = build(REQUEST, xid, mac, Some(lease.address), None, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    match exchange(&sock, &req, xid, mac, &[ACK, NAK], deadline)? {
        Some(r) if r.kind == ACK => Ok(r.lease),
        Some(_) => bail!("the DHCP server refused to renew {}", lease.address),
        None => bail!("no DHCP server answered the renewal of {}", lease.address),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn option(msg: &[u8], code: u8) -> Option<&[u8]> {
        let mut i = 240;
        while i < msg.len() && msg[i] != OPT_END {
            if msg[i] == OPT_PAD {
                i += 1;
                continue;
            }
            let len = msg[i + 1] as usize;
            if msg[i] == code {
                return Some(&msg[i + 2..i + 2 + len]);
            }
            i += 2 + len;
        }
        None
    }

    #[test]
    fn discover_and_request_carry_what_servers_need() {
        let d = build(DISCOVER, 0xdeadbeef, MAC, None, None, 3);
        assert!(d.len() >= 300);
        assert_eq!(&d[..4], &[1, 1, 6, 0]);
        assert_eq!(&d[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&d[8..10], &[0, 3]);
        assert_eq!(d[10], 0x80, "broadcast flag");
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[236..240], &MAGIC);
        assert_eq!(option(&d, OPT_MSG_TYPE), Some(&[DISCOVER][..]));
        assert_eq!(option(&d, OPT_CLIENT_ID).unwrap()[1..], MAC);
        assert!(option(&d, OPT_REQUESTED_IP).is_none());
        let r = build(
            REQUEST,
            1,
            MAC,
            Some(Ipv4Addr::new(10, 0, 2, 15)),
            Some(Ipv4Addr::new(10, 0, 2, 2)),
            0,
        );
        assert_eq!(option(&r, OPT_MSG_TYPE), Some(&[REQUEST][..]));
        assert_eq!(option(&r, OPT_REQUESTED_IP), Some(&[10, 0, 2, 15][..]));
        assert_eq!(option(&r, OPT_SERVER_ID), Some(&[10, 0, 2, 2][..]));
    }

    /// An ACK as QEMU's user network sends it.
    fn ack() -> Vec<u8> {
        let mut m = vec![0u8; 236];
        m[0] = BOOTREPLY;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&7u32.to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 2, 15]);
        m[28..34].copy_from_slice(&MAC);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&[OPT_MSG_TYPE, 1, ACK]);
        m.extend_from_slice(&[OPT_SERVER_ID, 4, 10, 0, 2, 2]);
        m.extend_from_slice(&[OPT_LEASE, 4, 0, 1, 0x51, 0x80]);
        m.extend_from_slice(&[OPT_SUBNET, 4, 255, 255, 255, 0]);
        m.extend_from_slice(&[OPT_ROUTER, 4, 10, 0, 2, 2]);
        m.extend_from_slice(&[OPT_DNS, 8, 10, 0, 2, 3, 1, 1, 1, 1]);
        m.extend_from_slice(&[OPT_DOMAIN, 4, b'l', b'a', b'b', 0]);
        m.extend_from_slice(&[OPT_PAD, OPT_END]);
        m
    }

    #[test]
    fn ack_is_parsed() {
        let r = parse(&ack()).unwrap();
        assert_eq!(r.kind, ACK);
        assert_eq!(r.xid, 7);
        assert_eq!(r.chaddr, MAC);
        let l = r.lease;
        assert_eq!(l.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(l.prefix, 24);
        assert_eq!(l.routers, [Ipv4Addr::new(10, 0, 2, 2)]);
        assert_eq!(
            l.dns,
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(l.domain.as_deref(), Some("lab"));
        assert_eq!(l.lease_secs, Some(86400));
        assert_eq!(l.server_id, Some(Ipv4Addr::new(10, 0, 2, 2)));
    }

    #[test]
    fn overloaded_and_split_options_are_read() {
        let mut m = ack();
        let end = m.len() - 1;
        m.truncate(end);
        // RFC 3396: DNS split in two; the router comes from the file field.
        m.extend_from_slice(&[OPT_DNS, 4, 9, 9, 9, 9, OPT_OVERLOAD, 1, OPT_END]);
        m[108..116].copy_from_slice(&[OPT_ROUTER, 4, 10, 0, 2, 1, OPT_END, 0]);
        let l = parse(&m).unwrap().lease;
        assert_eq!(l.dns.len(), 3);
        assert_eq!(
            l.routers,
            [Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 1)]
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse(&[0u8; 100]).is_err());
        let mut m = ack();
        m[0] = BOOTREQUEST;
        assert!(parse(&m).is_err());
        let mut m = ack();
        let n = m.len();
        m[n - 2] = OPT_ROUTER; // an option whose length runs off the end
        m[n - 1] = 200;
        assert!(parse(&m).is_err());
    }

    #[test]
    fn packets_round_trip_through_ip_and_udp() {
        let msg = build(DISCOVER, 9, MAC, None, None, 0);
        let p = ip_udp(&msg);
        assert_eq!(checksum(&p[..20]), 0, "header checksum verifies");
        assert_eq!(&p[16..20], &[255; 4]);
        // The client's own port is 68 as source; make it a reply to check the parser.
        let mut reply = p.clone();
        reply[20..22].copy_from_slice(&67u16.to_be_bytes());
        reply[22..24].copy_from_slice(&68u16.to_be_bytes());
        assert_eq!(udp_payload(&reply), Some(&msg[..]));
        assert_eq!(udp_payload(&p), None, "to port 67: not for us");
        assert_eq!(udp_payload(&p[..10]), None);
    }
}
