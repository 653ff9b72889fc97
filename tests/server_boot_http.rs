//! The boot listeners beside the TLS API: plain HTTP (`rewind serve
//! --boot-http`) for firmware and iPXE, which serves the boot scripts and
//! assets and nothing else, to the boot token only; and TFTP
//! (`--boot-tftp`) for the Secure Boot chain through Debian's signed GRUB.
//! Their scripts send the image to the TLS API with the server's pin.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use server_util::*;

const MAC: &str = "52:54:00:00:00:0a";

#[test]
fn the_boot_listener_serves_boot_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let boot_addr = format!("127.0.0.1:{port}");
    let s = ServerProc::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        true,
        None,
        &["--boot-http", &boot_addr],
    );
    let pin = s.pin.clone().unwrap();
    let api_port = s.addr.rsplit(':').next().unwrap().to_string();
    let boot = rewind_ok(&s, &s.admin, &["token", "create", "--boot"])
        .lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string();
    let host = s.host_token("web1");
    let tls = any_cert_client();
    let resp = tls
        .put(format!("{}/v1/hosts/web1/files/snapshots/s1.xml", s.url))
        .bearer_auth(&host)
        .body(example_manifest("web1", "s1", "2026-11-25T06:00:00Z", MAC))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
    rewind_ok(&s, &s.admin, &["request", "web1"]);
    std::fs::write(s.data.join("boot/initrd.img"), b"an initrd").unwrap();
    std::fs::write(s.data.join("boot/vmlinuz"), b"a kernel").unwrap();

    let plain = http_client();
    let base = format!("http://{boot_addr}");
    let get = |url: String, bearer: Option<&str>| {
        let mut r = plain.get(url);
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec())
    };
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();

    // The API is not there: not without a token, not with the admin's
    // (which is refused outright: it must not cross the network in clear).
    for path in ["/v1/version", "/v1/hosts", "/v1/requests", "/metrics"] {
        let (st, body) = get(format!("{base}{path}"), None);
        assert_eq!(st, 404, "{path}: {}", text(body));
        let (st, body) = get(format!("{base}{path}"), Some(&s.admin));
        assert_eq!(st, 403, "{path} with the admin token: {}", text(body));
    }
    let (st, _) = get(
        format!("{base}/v1/hosts/web1/files/snapshots/s1.xml"),
        Some(&host),
    );
    assert_eq!(st, 403, "a host token on the boot listener");
    let (st, _) = get(format!("{base}/boot/vmlinuz?token={}", s.admin), None);
    assert_eq!(st, 403, "the admin token on the boot listener");
    let (st, _) = get(format!("{base}/boot/vmlinuz"), None);
    assert_eq!(st, 401, "no token");
    // A plain-HTTP request on the TLS port gets nothing either.
    assert!(
        plain
            .get(format!(
                "http://127.0.0.1:{api_port}/boot/vmlinuz?token={boot}"
            ))
            .send()
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );

    // The boot files, with the boot token: the initrd with the pins.
    let (st, kernel) = get(format!("{base}/boot/vmlinuz?token={boot}"), None);
    assert_eq!((st, kernel.as_slice()), (200, &b"a kernel"[..]));
    let (st, initrd) = get(format!("{base}/boot/initrd.img?token={boot}"), None);
    assert_eq!(st, 200);
    assert!(initrd.starts_with(b"an initrd"));
    assert!(
        initrd.windows(pin.len()).any(|w| w == pin.as_bytes()),
        "the served initrd carries the pin"
    );

    // The iPXE script: assets from the boot listener, the image to the TLS API.
    let (st, ipxe) = get(format!("{base}/boot/ipxe?mac={MAC}&token={boot}"), None);
    let ipxe = text(ipxe);
    assert_eq!(st, 200, "{ipxe}");
    for want in [
        format!("kernel --name vmlinuz http://127.0.0.1:{port}/boot/vmlinuz?token={boot} "),
        format!("rewind.server=https://127.0.0.1:{api_port} "),
        format!("rewind.pin={pin}"),
        format!("initrd --name initrd.img http://127.0.0.1:{port}/boot/initrd.img?token={boot}"),
    ] {
        assert!(ipxe.contains(&want), "no {want:?} in:\n{ipxe}");
    }

    // Nothing on the boot listener logged a token.
    let log = s.log_text();
    for secret in [&boot, &s.admin, &host] {
        let (_, tail) = secret.rsplit_once('_').unwrap();
        assert!(!log.contains(tail), "a token's secret in the log:\n{log}");
    }
}

/// The TFTP listener: the Secure Boot chain's files, GRUB's configuration
/// and each machine's script, with no token; nothing else of DIR.
#[test]
fn the_tftp_listener_serves_the_secure_boot_chain() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tftp_port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let tftp = format!("127.0.0.1:{tftp_port}");
    let api = format!("127.0.0.1:{port}");
    let s = ServerProc::start_with(
        &dir.path().join("data"),
        &api,
        true,
        None,
        &["--boot-tftp", &tftp],
    );
    let pin = s.pin.clone().unwrap();
    let host = s.host_token("web1");
    let (st, text) = put_snapshot(&s, &host, "web1", "s1", "2026-11-25T06:00:00Z", MAC);
    assert!(st.is_success(), "{text}");
    rewind_ok(
        &s,
        &s.admin,
        &["request", "web1", "--machine", &format!("mac={MAC}")],
    );
    let boot = s.data.join("boot");
    // 3000 bytes: several blocks, the last one short.
    let shim: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(boot.join("shimx64.efi"), &shim).unwrap();
    std::fs::write(boot.join("initrd.img"), b"an initrd").unwrap();
    std::fs::write(
        boot.join("cmdline"),
        "console=ttyS0,115200 rewind.token=rwd_BOOT
",
    )
    .unwrap();

    let (got, size) = tftp_get(&tftp, "shimx64.efi").unwrap();
    assert_eq!((got.len() as u64, size), (3000, 3000));
    assert_eq!(got, shim);
    // A block-size multiple ends with an empty block.
    std::fs::write(boot.join("grubx64.efi"), vec![1u8; 2048]).unwrap();
    assert_eq!(tftp_get(&tftp, "/grubx64.efi").unwrap().0, vec![1u8; 2048]);
    let (initrd, size) = tftp_get(&tftp, "initrd.img").unwrap();
    assert_eq!(size, initrd.len() as u64);
    assert!(initrd.starts_with(b"an initrd"));
    assert!(initrd.windows(pin.len()).any(|w| w == pin.as_bytes()));

    let (cfg, _) = tftp_get(&tftp, "grub/grub.cfg").unwrap();
    let cfg = String::from_utf8(cfg).unwrap();
    assert!(
        cfg.contains("source \"/rewind/grub?mac=${net_default_mac}&uuid=${rewind_uuid}\""),
        "{cfg}"
    );
    assert!(tftp_get(&tftp, "grub/x86_64-efi/grub.cfg").is_err());
    let (script, _) = tftp_get(&tftp, &format!("/rewind/grub?mac={MAC}&uuid=")).unwrap();
    let script = String::from_utf8(script).unwrap();
    for want in [
        format!("'rewind.server=https://127.0.0.1:{port}'"),
        format!("'rewind.pin={pin}'"),
        "'rewind.host=web1'".to_string(),
        "linux '/vmlinuz' ".to_string(),
        "'rewind.token=rwd_BOOT'".to_string(),
        "initrd '/initrd.img'\nboot\n".to_string(),
    ] {
        assert!(script.contains(&want), "no {want:?} in:\n{script}");
    }
    // The only token on the GRUB command line is the site's boot token
    // (DIR/boot/cmdline): the server puts none there, recovery or other.
    assert_eq!(script.matches("rewind.token=").count(), 1, "{script}");
    let (other, _) = tftp_get(&tftp, "rewind/grub?mac=52:54:00:00:00:99").unwrap();
    assert_eq!(
        String::from_utf8(other).unwrap(),
        "echo 'rewind: this machine is not known to the recovery server'\nexit\n"
    );
    // Nothing else of the data directory, and no writes.
    for name in [
        "cmdline",
        "../catalog/tokens.json",
        ".hidden",
        "tls/key.pem",
    ] {
        assert!(tftp_get(&tftp, name).is_err(), "{name} was served");
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    sock.send_to(b"\x00\x02evil\x00octet\x00", &tftp).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..4], &[0, 5, 0, 2], "{:?}", &buf[..n]);
    assert!(!boot.join("evil").exists());
}
