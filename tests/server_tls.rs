//! Tier 1 (no root): how clients trust the server (issue 15, point 5).
//! `rewind serve` speaks TLS unless told `--insecure-http`, with a
//! self-signed pair it keeps; clients pin its public key, so a renewed
//! certificate with the same key is still trusted and another key is not;
//! a set of pins is accepted; plain HTTP needs `--insecure-http` on both
//! sides; the server's log never shows a token.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use server_util::*;

/// The SHA-256 of the PEM certificate in `path`, hex: the old pin form.
fn whole_certificate_pin(path: &std::path::Path) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(path).unwrap();
    rewind::api::fingerprint(&der)
}

/// `rewind token list` with the admin token and exactly these settings.
fn token_list(s: &ServerProc, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(BIN);
    c.args(["token", "list"])
        .env_remove("REWIND_PIN")
        .env_remove("REWIND_INSECURE_HTTP")
        .env_remove("REWIND_REPO")
        .env("REWIND_SERVER", &s.url)
        .env("REWIND_TOKEN", &s.admin);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn serve_is_tls_by_default_and_keeps_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = ServerProc::start(&data, true);
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let pin = s.pin.clone().expect("a pin printed");
    assert_eq!(pin.len(), 44, "base64 of a SHA-256: {pin}");
    assert!(data.join("tls/key.pem").exists() && data.join("tls/cert.pem").exists());
    let out = token_list(&s, &[("REWIND_PIN", &pin)]);
    assert!(out.status.success(), "{}", output_text(&out));
    // Reused across restarts.
    s.restart();
    assert_eq!(s.pin.as_deref(), Some(pin.as_str()));

    // --tls-dir keeps the pair elsewhere.
    let tls_dir = dir.path().join("elsewhere");
    let other = ServerProc::start_with(
        &dir.path().join("data2"),
        "127.0.0.1:0",
        true,
        None,
        &["--tls-dir", tls_dir.to_str().unwrap()],
    );
    assert!(tls_dir.join("key.pem").exists());
    assert!(!dir.path().join("data2/tls").exists());
    assert_ne!(other.pin, s.pin, "a new key, a new pin");
}

#[test]
fn a_renewed_certificate_keeps_the_pin_and_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProc::start(&data, true);
    let pin = s.pin.clone().unwrap();
    let cert = data.join("tls/cert.pem");
    let first_cert = std::fs::read(&cert).unwrap();
    let old_form = whole_certificate_pin(&cert);
    let admin = s.admin.clone();
    let addr = s.addr.clone();
    drop(s);

    // Renewal: the certificate is made again (other names) from the same key.
    std::fs::remove_file(&cert).unwrap();
    let s = ServerProc::start_with(
        &data,
        &addr,
        true,
        Some(&admin),
        &["--tls-name", "backup.example", "--tls-name", "127.0.0.1"],
    );
    assert_ne!(
        std::fs::read(&cert).unwrap(),
        first_cert,
        "a new certificate"
    );
    assert_eq!(s.pin.as_deref(), Some(pin.as_str()), "the same public key");
    let out = token_list(&s, &[("REWIND_PIN", &pin)]);
    assert!(
        out.status.success(),
        "the old pin, the renewed certificate: {}",
        output_text(&out)
    );
    // The old whole-certificate pin breaks at a renewal (and says why it is
    // deprecated when it is used).
    let out = token_list(&s, &[("REWIND_PIN", &old_form), ("REWIND_RETRY_SECS", "1")]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("old whole-certificate pin"), "{text}");
    assert!(text.contains("not the pinned one"), "{text}");
    drop(s);

    // A new key: the old pin is refused...
    std::fs::remove_file(data.join("tls/key.pem")).unwrap();
    let s = ServerProc::start_with(&data, &addr, true, Some(&admin), &[]);
    let new_pin = s.pin.clone().unwrap();
    assert_ne!(new_pin, pin);
    let out = token_list(&s, &[("REWIND_PIN", &pin), ("REWIND_RETRY_SECS", "1")]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&new_pin),
        "the refusal names the server's pin: {text}"
    );
    // ...unless it is rolled in as one of a set: --pin A --pin B, or A,B.
    let mut c = std::process::Command::new(BIN);
    let out = c
        .args(["token", "list", "--pin", &pin, "--pin", &new_pin])
        .env_remove("REWIND_PIN")
        .env("REWIND_SERVER", &s.url)
        .env("REWIND_TOKEN", &s.admin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let both = format!("{pin},{new_pin}");
    let out = token_list(&s, &[("REWIND_PIN", &both)]);
    assert!(out.status.success(), "{}", output_text(&out));
    // The old whole-certificate form still works for this release, with a warning.
    let out = token_list(&s, &[("REWIND_PIN", &whole_certificate_pin(&cert))]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("warning: pin"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn boot_scripts_carry_the_pins_the_next_key_s_too() {
    let dir = tempfile::tempdir().unwrap();
    let next = "A".repeat(43) + "=";
    let s = ServerProc::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        true,
        None,
        &["--next-pin", &next],
    );
    let pin = s.pin.clone().unwrap();
    let boot = rewind_ok(&s, &s.admin, &["token", "create", "--boot"]);
    let boot = boot
        .lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string();
    let host = s.host_token("web1");
    let mac = "52:54:00:00:00:0a";
    let xml = example_manifest("web1", "s1", "2026-11-25T06:00:00Z", mac);
    let h = any_cert_client();
    let resp = h
        .put(format!("{}/v1/hosts/web1/files/snapshots/s1.xml", s.url))
        .bearer_auth(&host)
        .body(xml)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
    rewind_ok(&s, &s.admin, &["request", "web1"]);
    let script = h
        .get(format!("{}/boot/ipxe?mac={mac}&token={boot}", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        script
            .split_whitespace()
            .any(|w| w == format!("rewind.pin={pin},{next}")),
        "{script}"
    );
    // The initrd it serves carries them too: a cpio archive appended, 4-byte
    // aligned, that unpacks to /etc/rewind/pins.
    let initrd = b"not really an initrd";
    std::fs::write(s.data.join("boot/initrd.img"), initrd).unwrap();
    let served = h
        .get(format!("{}/boot/initrd.img?token={boot}", s.url))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(&served[..initrd.len()], initrd);
    let out = dir.path().join("unpacked");
    unpack_appended_cpio(&served, initrd.len(), &out);
    assert_eq!(
        std::fs::read_to_string(out.join("etc/rewind/pins")).unwrap(),
        format!("{pin}\n{next}\n")
    );
}

#[test]
fn plain_http_needs_insecure_http_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    // A TLS server does not answer plain HTTP.
    let tls = ServerProc::start(&dir.path().join("tls"), true);
    let plain_url = tls.url.replace("https://", "http://");
    assert!(
        http_client()
            .get(format!("{plain_url}/v1/version"))
            .send()
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );

    let s = ServerProc::start(&dir.path().join("plain"), false);
    assert!(s.url.starts_with("http://"));
    assert!(s.log_text().contains("--insecure-http"), "{}", s.log_text());
    let out = token_list(&s, &[]);
    let text = output_text(&out);
    assert!(
        !out.status.success(),
        "plain HTTP without --insecure-http: {text}"
    );
    assert!(
        text.contains("plain HTTP") && text.contains("--insecure-http"),
        "says what to do: {text}"
    );
    let out = token_list(&s, &[("REWIND_INSECURE_HTTP", "1")]);
    assert!(out.status.success(), "{}", output_text(&out));
    let mut c = std::process::Command::new(BIN);
    let out = c
        .args(["token", "list", "--insecure-http"])
        .env_remove("REWIND_INSECURE_HTTP")
        .env("REWIND_SERVER", &s.url)
        .env("REWIND_TOKEN", &s.admin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}

#[test]
fn the_server_log_never_shows_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), true);
    let boot = rewind_ok(&s, &s.admin, &["token", "create", "--boot"]);
    let boot = boot
        .lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string();
    let host = s.host_token("web1");
    let secrets = [s.admin.clone(), boot.clone(), host.clone()];
    let h = any_cert_client();
    for url in [
        format!("{}/boot/ipxe?mac=52:54:00:00:00:01&token={boot}", s.url),
        format!("{}/boot/nothing-here?token={boot}", s.url),
        format!("{}/boot/.hidden?token={boot}", s.url),
        format!("{}/boot/vmlinuz?token={host}", s.url),
        format!("{}/v1/hosts?token={}", s.url, s.admin),
    ] {
        let _ = h.get(&url).send().unwrap().text();
    }
    let _ = h
        .put(format!("{}/v1/hosts/web2/files/config", s.url))
        .bearer_auth(&host)
        .body("x")
        .send()
        .unwrap();
    let _ = h
        .post(format!("{}/v1/tokens", s.url))
        .bearer_auth(&s.admin)
        .body("{not json")
        .send()
        .unwrap();
    rewind_ok(&s, &s.admin, &["token", "create", "web3"]);
    rewind_fails(&s, &host, &["token", "list"]);
    let log = s.log_text();
    assert!(
        log.contains("/boot/.hidden"),
        "the requests were logged: {log}"
    );
    for secret in &secrets {
        let (_, tail) = secret.rsplit_once('_').unwrap();
        assert!(
            !log.contains(tail),
            "a token's secret in the server log:\n{log}"
        );
    }
}
