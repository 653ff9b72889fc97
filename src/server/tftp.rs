//! The TFTP listener (`rewind serve --boot-tftp ADDR`): read-only TFTP
//! (RFC 1350, with the blksize and tsize options of RFC 2348/2349) for a
//! UEFI network boot under Secure Boot. Firmware PXE fetches its boot file
//! over TFTP, and Debian's signed netboot GRUB has no HTTP: so shim, GRUB,
//! GRUB's configuration, the machine's script, the kernel and the initrd
//! all come from here. What it serves:
//!
//! - `grub/grub.cfg`: [`grub::bootstrap`] (any other `grub/` file: not found);
//! - `rewind/grub?mac=...&uuid=...`: the machine's GRUB script (the
//!   recovery of the one live request naming it, or an exit);
//! - any other plain name: the file of `DIR/boot/` (`shimx64.efi`,
//!   `grubx64.efi`, `mmx64.efi` from the image's `tftp-efi/`, `vmlinuz`,
//!   and `initrd.img` with the server's pins appended, as over HTTP).
//!
//! TFTP has no token: like the boot listener, it carries nothing secret
//! (docs/security.md, "PXE under Secure Boot"). Each transfer runs in its
//! own task from its own port; it answers the address the client's last
//! acknowledgement came from (a NAT such as QEMU's user network may
//! change the client's port after the first packet), on the client's IP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UdpSocket;

use super::Server;
use super::grub;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

const NOT_FOUND: u16 = 1;
const ACCESS: u16 = 2;
const ILLEGAL: u16 = 4;

/// Tries per packet, and the wait for each acknowledgement.
const TRIES: u32 = 6;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// A read request: the file, and the options the client asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub file: String,
    pub blksize: Option<u16>,
    pub tsize: bool,
    pub timeout: Option<u8>,
}

/// A request packet; `Err((code, message))` for what is answered with an
/// error packet (a write, another opcode, a mode other than octet).
pub fn parse_request(packet: &[u8]) -> Result<ReadRequest, (u16, String)> {
    let op = packet
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or((ILLEGAL, "short packet".to_string()))?;
    if op == WRQ {
        return Err((ACCESS, "read-only server".into()));
    }
    if op != RRQ {
        return Err((ILLEGAL, format!("unexpected opcode {op}")));
    }
    let mut fields = packet[2..].split(|b| *b == 0);
    let text = |f: Option<&[u8]>| {
        f.and_then(|f| std::str::from_utf8(f).ok())
            .map(str::to_string)
    };
    let file = text(fields.next()).ok_or((ILLEGAL, "no file name".to_string()))?;
    let mode = text(fields.next()).ok_or((ILLEGAL, "no mode".to_string()))?;
    if !mode.eq_ignore_ascii_case("octet") {
        return Err((ILLEGAL, format!("mode {mode}: only octet is served")));
    }
    let mut req = ReadRequest {
        file,
        blksize: None,
        tsize: false,
        timeout: None,
    };
    while let (Some(name), Some(value)) = (text(fields.next()), text(fields.next())) {
        match name.to_ascii_lowercase().as_str() {
            "blksize" => {
                req.blksize = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 8)
                    .map(|n| n.min(65464) as u16)
            }
            "tsize" => req.tsize = true,
            "timeout" => req.timeout = value.parse().ok().filter(|t| (1..=255).contains(t)),
            _ => {} // windowsize and others: not acknowledged, so not used
        }
    }
    Ok(req)
}

fn error_packet(code: u16, msg: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + msg.len());
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// What a file name resolves to: its bytes or an open file with a tail,
/// and its size.
struct Content {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    size: u64,
}

fn in_memory(bytes: Vec<u8>) -> Content {
    Content {
        size: bytes.len() as u64,
        reader: Box::new(std::io::Cursor::new(bytes)),
    }
}

async fn resolve(server: &Arc<Server>, api: &str, name: &str) -> Result<Content, (u16, String)> {
    let name = name.trim_start_matches('/');
    if name == "grub/grub.cfg" {
        return Ok(in_memory(grub::bootstrap().into_bytes()));
    }
    if name.starts_with("rewind/grub?") {
        // The same query as `/boot/ipxe`'s, parsed the same way.
        let q: HashMap<String, String> = format!("/{name}")
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|uri| axum::extract::Query::try_from_uri(&uri).ok())
            .map(|axum::extract::Query(q)| q)
            .ok_or((ILLEGAL, "rewind/grub: not a query".to_string()))?;
        let s = server.clone();
        let api = api.to_string();
        let script = tokio::task::spawn_blocking(move || super::routes::grub_script(&s, &q, &api))
            .await
            .map_err(|e| (0, format!("internal error: {e}")))?
            .map_err(|e| (0, e.to_string()))?;
        return Ok(in_memory(script.into_bytes()));
    }
    if !super::routes::asset_name_ok(name) {
        return Err((NOT_FOUND, format!("{name}: not served")));
    }
    let path = server.data.join("boot").join(name);
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|_| (NOT_FOUND, format!("{name}: no such boot file")))?;
    let size = f
        .metadata()
        .await
        .map_err(|e| (0, format!("{name}: {e}")))?
        .len();
    if let Some(pins) =
        super::routes::pins_to_append(&server.data, name, server.fingerprint.as_deref())
    {
        let tail = super::tls::pins_archive(size, pins);
        return Ok(Content {
            size: size + tail.len() as u64,
            reader: Box::new(f.chain(std::io::Cursor::new(tail))),
        });
    }
    Ok(Content {
        size,
        reader: Box::new(f),
    })
}

/// Transfers at once; a request past them is answered "busy" (the client
/// retries), so a flood of requests cannot open files without bound.
const MAX_TRANSFERS: usize = 64;

/// Serve TFTP on `socket`; the scripts send the image to `api`.
pub async fn run(server: Arc<Server>, socket: UdpSocket, api: String) {
    let transfers = Arc::new(tokio::sync::Semaphore::new(MAX_TRANSFERS));
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                log_line!("rewind: tftp: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = transfers.clone().try_acquire_owned() else {
            let _ = socket
                .send_to(&error_packet(0, "busy: try again"), peer)
                .await;
            continue;
        };
        let packet = buf[..n].to_vec();
        let server = server.clone();
        let api = api.clone();
        let local_ip = socket.local_addr().map(|a| a.ip()).ok();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = transfer(server, &api, &packet, peer, local_ip).await {
                log_line!("rewind: tftp to {peer}: {e:#}");
            }
        });
    }
}

/// Bind the TFTP socket (before the runtime's tasks start, so that a port
/// in use fails `serve` at once).
pub async fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    UdpSocket::bind(addr)
        .await
        .with_context(|| format!("--boot-tftp: cannot listen on {addr} (UDP)"))
}

async fn transfer(
    server: Arc<Server>,
    api: &str,
    packet: &[u8],
    peer: SocketAddr,
    local_ip: Option<std::net::IpAddr>,
) -> Result<()> {
    let bind: SocketAddr = match local_ip {
        Some(ip) => SocketAddr::new(ip, 0),
        None => "0.0.0.0:0".parse()?,
    };
    let sock = UdpSocket::bind(bind)
        .await
        .context("cannot bind a transfer port")?;
    let req = match parse_request(packet) {
        Ok(r) => r,
        Err((code, msg)) => {
            sock.send_to(&error_packet(code, &msg), peer).await?;
            return Ok(());
        }
    };
    let mut content = match resolve(&server, api, &req.file).await {
        Ok(c) => c,
        Err((code, msg)) => {
            sock.send_to(&error_packet(code, &msg), peer).await?;
            return Ok(());
        }
    };
    let blksize = usize::from(req.blksize.unwrap_or(512));
    let timeout = req
        .timeout
        .map(|t| Duration::from_secs(u64::from(t)))
        .unwrap_or(DEFAULT_TIMEOUT);
    let mut peer = peer;
    // Options acknowledged: the client answers with ACK 0 (or an error,
    // which a firmware asking only the size sends).
    if req.blksize.is_some() || req.tsize || req.timeout.is_some() {
        let mut oack = OACK.to_be_bytes().to_vec();
        let mut opt = |k: &str, v: String| {
            oack.extend_from_slice(k.as_bytes());
            oack.push(0);
            oack.extend_from_slice(v.as_bytes());
            oack.push(0);
        };
        if req.blksize.is_some() {
            opt("blksize", blksize.to_string());
        }
        if req.tsize {
            opt("tsize", content.size.to_string());
        }
        if let Some(t) = req.timeout {
            opt("timeout", t.to_string());
        }
        match exchange(&sock, &oack, &mut peer, 0, timeout).await? {
            Some(()) => {}
            None => return Ok(()),
        }
    }
    let mut block: u16 = 1;
    let mut data = vec![0u8; 4 + blksize];
    let mut sent: u64 = 0;
    loop {
        data[..2].copy_from_slice(&DATA.to_be_bytes());
        data[2..4].copy_from_slice(&block.to_be_bytes());
        let mut len = 0;
        while len < blksize {
            let n = content.reader.read(&mut data[4 + len..4 + blksize]).await?;
            if n == 0 {
                break;
            }
            len += n;
        }
        sent += len as u64;
        if exchange(&sock, &data[..4 + len], &mut peer, block, timeout)
            .await?
            .is_none()
        {
            return Ok(());
        }
        if len < blksize {
            anyhow::ensure!(
                sent == content.size,
                "{}: sent {sent} bytes of {}",
                req.file,
                content.size
            );
            return Ok(());
        }
        block = block.wrapping_add(1);
    }
}

/// Send `packet` until `block` is acknowledged; `None` when the client
/// gave up (an error packet, or no answer after every try).
async fn exchange(
    sock: &UdpSocket,
    packet: &[u8],
    peer: &mut SocketAddr,
    block: u16,
    timeout: Duration,
) -> Result<Option<()>> {
    let mut buf = [0u8; 1024];
    for _ in 0..TRIES {
        sock.send_to(packet, *peer).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Ok(got) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await else {
                break; // resend
            };
            let (n, from) = got?;
            if from.ip() != peer.ip() || n < 4 {
                continue;
            }
            let op = u16::from_be_bytes([buf[0], buf[1]]);
            let num = u16::from_be_bytes([buf[2], buf[3]]);
            match op {
                ACK if num == block => {
                    *peer = from;
                    return Ok(Some(()));
                }
                ERROR => return Ok(None),
                _ => {} // a duplicate ACK: wait on
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(parts: &[&str]) -> Vec<u8> {
        let mut p = RRQ.to_be_bytes().to_vec();
        for s in parts {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn read_requests_parse_with_their_options() {
        assert_eq!(
            parse_request(&rrq(&[
                "grubx64.efi",
                "octet",
                "tsize",
                "0",
                "blksize",
                "1468"
            ])),
            Ok(ReadRequest {
                file: "grubx64.efi".into(),
                blksize: Some(1468),
                tsize: true,
                timeout: None,
            })
        );
        assert_eq!(
            parse_request(&rrq(&["a", "OCTET", "blksize", "99999", "windowsize", "4"]))
                .unwrap()
                .blksize,
            Some(65464)
        );
        assert_eq!(
            parse_request(&rrq(&["a", "netascii"])).unwrap_err().0,
            ILLEGAL
        );
        let mut wrq = rrq(&["a", "octet"]);
        wrq[1] = WRQ as u8;
        assert_eq!(parse_request(&wrq).unwrap_err().0, ACCESS);
        assert_eq!(parse_request(&[0]).unwrap_err().0, ILLEGAL);
    }
}
