//! The plain-HTTP boot listener (`rewind serve --boot-http`) beside the TLS
//! API: firmware, iPXE and GRUB fetch boot scripts and assets over plain
//! HTTP, so the listener serves those and nothing else, to the boot token
//! only; its scripts send the image to the TLS API with the server's pin.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use server_util::*;

const MAC: &str = "52:54:00:00:00:0a";

/// A free port on 127.0.0.1 (bound and let go: the server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

    // The GRUB chain of a Secure Boot network boot: the TFTP root's
    // grub.cfg, then the machine's script.
    let (st, cfg) = get(format!("{base}/boot/grub.cfg?token={boot}"), None);
    let cfg = text(cfg);
    assert_eq!(st, 200, "{cfg}");
    assert!(
        cfg.contains(&format!(
            "source \"(http,127.0.0.1:{port})/boot/grub?token={boot}&mac=${{net_default_mac}}\""
        )),
        "{cfg}"
    );
    let (st, grub) = get(format!("{base}/boot/grub?mac={MAC}&token={boot}"), None);
    let grub = text(grub);
    assert_eq!(st, 200, "{grub}");
    for want in [
        format!("linux '(http,127.0.0.1:{port})/boot/vmlinuz?token={boot}' "),
        format!("'rewind.server=https://127.0.0.1:{api_port}'"),
        format!("'rewind.token={boot}'"),
        format!("'rewind.pin={pin}'"),
        "'rewind.host=web1'".to_string(),
        format!("initrd '(http,127.0.0.1:{port})/boot/initrd.img?token={boot}'"),
    ] {
        assert!(grub.contains(&want), "no {want:?} in:\n{grub}");
    }
    let (st, other) = get(
        format!("{base}/boot/grub?mac=52:54:00:00:00:99&token={boot}"),
        None,
    );
    assert_eq!(
        (st, text(other)),
        (
            200,
            "echo 'rewind: this machine is not known to the recovery server'\nexit\n".to_string()
        )
    );
    // On the TLS API the boot routes still work (iPXE with HTTPS); GRUB's
    // are for plain HTTP only.
    let (st, _) = (
        tls.get(format!("{}/boot/grub.cfg?token={boot}", s.url))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        (),
    );
    assert_eq!(st, 400);
    // Nothing on the boot listener logged a token.
    let log = s.log_text();
    for secret in [&boot, &s.admin, &host] {
        let (_, tail) = secret.rsplit_once('_').unwrap();
        assert!(!log.contains(tail), "a token's secret in the log:\n{log}");
    }
}

/// An HTTP client that accepts any certificate (for the TLS API's setup:
/// this test is about the plain listener beside it).
fn any_cert_client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert))
            .with_no_client_auth(),
        )
        .build()
        .unwrap()
}

#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
