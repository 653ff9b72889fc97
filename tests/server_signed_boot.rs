//! A signed recovery image on the server (`scripts/build-image --sign`,
//! docs/security.md "PXE with iPXE and imgverify"): with `vmlinuz.sig` and
//! `initrd.img.sig` in DIR/boot/, the server serves them like the files
//! they sign (the same route and token), serves the signed initrd byte for
//! byte over HTTP and TFTP (appending its pins would break the signature),
//! and its iPXE script runs `imgverify` on both before it boots, failing
//! closed; with one signature of the two it boots nothing. Without
//! signatures nothing changes. (The real iPXE: tests/qemu_ipxe.rs.)

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use server_util::*;

const MAC: &str = "52:54:00:00:00:0a";

#[test]
fn a_signed_image_is_served_as_signed_and_verified_by_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let boot_addr = format!("127.0.0.1:{}", free_port());
    let tftp = format!("127.0.0.1:{}", free_udp_port());
    let s = ServerProc::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        true,
        None,
        &["--boot-http", &boot_addr, "--boot-tftp", &tftp],
    );
    let pin = s.pin.clone().unwrap();
    let host = s.host_token("web1");
    let (st, text) = put_snapshot(&s, &host, "web1", "s1", "2026-11-25T06:00:00Z", MAC);
    assert!(st.is_success(), "{text}");
    rewind_ok(&s, &s.admin, &["request", "web1"]);
    let boot_token = rewind_ok(&s, &s.admin, &["token", "create", "--boot"])
        .lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string();
    let boot = s.data.join("boot");
    let initrd = b"a signed initrd, its pins built in".to_vec();
    std::fs::write(boot.join("vmlinuz"), b"a kernel").unwrap();
    std::fs::write(boot.join("initrd.img"), &initrd).unwrap();

    let http = http_client();
    let base = format!("http://{boot_addr}");
    let get = |path: &str| {
        let r = http
            .get(format!("{base}{path}?mac={MAC}&token={boot_token}"))
            .send()
            .unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec())
    };
    let script = || String::from_utf8(get("/boot/ipxe").1).unwrap();

    // Unsigned: as before, no imgverify, and the pins appended to the initrd.
    let unsigned = script();
    assert!(unsigned.contains("\nboot\n"), "{unsigned}");
    assert!(!unsigned.contains("imgverify"), "{unsigned}");
    let (st, served) = get("/boot/initrd.img");
    assert_eq!(st, 200);
    assert!(served.len() > initrd.len() && served.starts_with(&initrd));
    assert!(String::from_utf8_lossy(&served).contains(&pin));

    // Half signed: nothing boots, and the script says which file is missing.
    std::fs::write(boot.join("vmlinuz.sig"), b"kernel signature").unwrap();
    let half = script();
    assert!(
        half.contains("refusing to boot a half-signed image: DIR/boot/initrd.img.sig is missing"),
        "{half}"
    );
    assert!(
        !half.contains("kernel ") && half.ends_with("exit\n"),
        "{half}"
    );

    // Signed: imgverify of both, failing closed, before `boot`.
    let sig = b"initrd signature (CMS, DER)".to_vec();
    std::fs::write(boot.join("initrd.img.sig"), &sig).unwrap();
    let signed = script();
    let verify_kernel = format!(
        "imgverify vmlinuz {base}/boot/vmlinuz.sig?token={boot_token} || goto rewind_unverified\n"
    );
    let verify_initrd = format!(
        "imgverify initrd.img {base}/boot/initrd.img.sig?token={boot_token} || goto rewind_unverified\n"
    );
    let at = |needle: &str| {
        signed
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{signed}"))
    };
    assert!(at("initrd --name initrd.img") < at(&verify_kernel));
    assert!(at(&verify_kernel) < at(&verify_initrd));
    assert!(at(&verify_initrd) < at("\nboot\n:rewind_unverified\n"));
    assert!(signed.ends_with("imgfree\nexit 1\n"), "{signed}");
    // The image still goes to the TLS API with the pin.
    assert!(signed.contains(&format!("rewind.pin={pin}")), "{signed}");

    // The signed initrd is served byte for byte, over HTTP and TFTP.
    assert_eq!(get("/boot/initrd.img"), (200, initrd.clone()));
    assert_eq!(tftp_get(&tftp, "initrd.img").unwrap().0, initrd);
    // The signatures, like the files they sign: with the boot token only.
    assert_eq!(get("/boot/initrd.img.sig"), (200, sig.clone()));
    assert_eq!(get("/boot/vmlinuz.sig").1, b"kernel signature");
    let no_token = http
        .get(format!("{base}/boot/initrd.img.sig"))
        .send()
        .unwrap();
    assert_eq!(no_token.status().as_u16(), 401);
    assert!(tftp_get(&tftp, "initrd.img.sig").is_ok());
}

/// `scripts/sign-image --pin`: the pins and the lock are built into the
/// initrd before it is signed (a cpio archive appended, 4-byte aligned,
/// unpacking to /etc/rewind/pins and /etc/rewind/locked: such an image
/// trusts only those pins and takes no disk settings from its command
/// line), and both signatures verify against the CA and their files.
#[test]
fn sign_image_builds_the_pins_and_the_lock_into_the_signed_initrd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_signing_ca(d, "site");
    let boot = d.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let initrd = b"an unsigned initrd".to_vec();
    std::fs::write(boot.join("vmlinuz"), b"a kernel").unwrap();
    std::fs::write(boot.join("initrd.img"), &initrd).unwrap();
    let p = |f: &str| d.join(f).to_str().unwrap().to_string();
    let out = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sign-image"),
    )
    .args(["--key", &p("site-sign.key"), "--cert", &p("site-sign.crt")])
    .args(["--chain", &p("site-ca.crt"), "--pin", "AAAA=,BBBB="])
    .arg(&boot)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));

    let signed = std::fs::read(boot.join("initrd.img")).unwrap();
    assert_eq!(&signed[..initrd.len()], initrd.as_slice());
    let unpacked = d.join("unpacked");
    unpack_appended_cpio(&signed, initrd.len(), &unpacked);
    assert_eq!(
        std::fs::read_to_string(unpacked.join("etc/rewind/pins")).unwrap(),
        "AAAA=\nBBBB=\n"
    );
    assert!(unpacked.join("etc/rewind/locked").is_file());

    for f in ["vmlinuz", "initrd.img"] {
        let out = std::process::Command::new("openssl")
            .args([
                "cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
            ])
            .args(["-in", boot.join(format!("{f}.sig")).to_str().unwrap()])
            .args(["-content", boot.join(f).to_str().unwrap()])
            .args(["-CAfile", &p("site-ca.crt"), "-out", "/dev/null"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{f}: {}", output_text(&out));
    }
}
