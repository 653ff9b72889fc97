//! A real iPXE that verifies what it boots (docs/security.md, "PXE with
//! iPXE and imgverify"): iPXE built from source with `IMAGE_TRUST_CMD` and a
//! test CA as its only trust root (scripts/build-ipxe), booted by QEMU as a
//! Linux kernel (`-kernel ipxe.lkrn`, BIOS, TCG). Its embedded script does
//! DHCP and chains the DHCP boot file, which chains the server's
//! `/boot/ipxe` script on the plain-HTTP boot listener; the image in
//! DIR/boot/ is signed by scripts/sign-image with the server's pins built
//! into the initrd, so the script runs `imgverify` on the kernel and initrd.
//!
//! - signed and intact: the recovery image starts (its first stage marker);
//! - one byte of the initrd changed: imgverify refuses it, nothing boots;
//! - signed by another key (a CA iPXE does not trust): refused too;
//! - the intact signed image through QEMU's own iPXE ROM, which has no
//!   `imgverify`: the script fails closed, nothing boots.
//!
//! Needs root, QEMU and REWIND_IMAGE (as the other QEMU tests), and an iPXE
//! source: Debian's `ipxe` source package, or REWIND_IPXE_SOURCE=TARBALL
//! (scripts/build-ipxe --source). When iPXE cannot be built the test is
//! skipped, and fails instead with REWIND_REQUIRE_IPXE_TEST=1.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod qemu_util;
mod server_util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::sh;
use qemu_util::{Boot, Image, Qemu};
use server_util::{ServerProc, free_port, make_signing_ca, put_snapshot, rewind_ok};

const HOST: &str = "signed1";
const MAC: &str = "52:54:00:5a:00:01";
/// iPXE fetches a 30 MB initrd over QEMU's user network under TCG.
const BOOT: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn logs_dir() -> PathBuf {
    let d = std::env::var_os("REWIND_QEMU_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/qemu-logs"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The test's keys, made once and kept under target/ipxe/test-ca (so that
/// the iPXE built with `ca.crt` stays cached): a CA, a code-signing
/// certificate it issued, and another CA with its own signer, which iPXE
/// does not trust. Test keys only; never a site's.
struct TestCa {
    ca: PathBuf,
    key: PathBuf,
    cert: PathBuf,
    other_ca: PathBuf,
    other_key: PathBuf,
    other_cert: PathBuf,
}

fn test_ca() -> TestCa {
    let dir = root().join("target/ipxe/test-ca");
    if !dir.join("other-sign.crt").exists() {
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        make_signing_ca(&tmp, "trusted");
        make_signing_ca(&tmp, "other");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
    }
    TestCa {
        ca: dir.join("trusted-ca.crt"),
        key: dir.join("trusted-sign.key"),
        cert: dir.join("trusted-sign.crt"),
        other_ca: dir.join("other-ca.crt"),
        other_key: dir.join("other-sign.key"),
        other_cert: dir.join("other-sign.crt"),
    }
}

/// scripts/build-ipxe with the test CA (cached); `None` (skipped) when
/// there is no iPXE source to build from.
fn ipxe(test: &str, ca: &TestCa) -> Option<PathBuf> {
    let t0 = Instant::now();
    let out = Command::new(root().join("scripts/build-ipxe"))
        .arg("--trust")
        .arg(&ca.ca)
        .output()
        .unwrap();
    if !out.status.success() {
        let why = format!(
            "scripts/build-ipxe failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        assert!(
            std::env::var_os("REWIND_REQUIRE_IPXE_TEST").is_none_or(|v| v != "1"),
            "{test}: {why} (REWIND_REQUIRE_IPXE_TEST=1)"
        );
        eprintln!("skipped {test}: {why}");
        return None;
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    eprintln!(
        "iPXE: {path} ({:.0} s, {})",
        t0.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Some(PathBuf::from(path))
}

fn sign(dir: &Path, key: &Path, cert: &Path, chain: &Path, pin: Option<&str>) {
    let mut args = vec![
        "--key".to_string(),
        key.display().to_string(),
        "--cert".into(),
        cert.display().to_string(),
        "--chain".into(),
        chain.display().to_string(),
    ];
    if let Some(pin) = pin {
        args.extend(["--pin".into(), pin.to_string()]);
    }
    args.push(dir.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sh(root().join("scripts/sign-image").to_str().unwrap(), &args);
}

/// Boot the test's iPXE against the server; returns the VM once the
/// server's script has been asked for and has started verifying.
fn boot_ipxe(ipxe: &Path, tftp: &Path, name: &str) -> Qemu {
    let log = logs_dir().join(format!("ipxe-{name}.log"));
    let pxe = Boot::Pxe {
        tftp,
        bootfile: "rewind.ipxe",
    };
    let mut vm = Qemu::start_extra(pxe, &[], MAC, &log, &["-kernel", ipxe.to_str().unwrap()]);
    vm.expect("rewind-ipxe: images are verified", BOOT);
    vm.expect(&format!("rewind: recovering {HOST}"), BOOT);
    vm.expect("rewind: verifying the image's signatures (imgverify)", BOOT);
    vm
}

/// After a refusal: no kernel starts (iPXE exits; the BIOS then tries
/// QEMU's own iPXE ROM, which has no imgverify and is refused too).
fn assert_refused(vm: &mut Qemu, what: &str) {
    let t = vm.expect(
        "rewind: REFUSED: the recovery image's signature does not verify",
        BOOT,
    );
    std::thread::sleep(Duration::from_secs(15));
    let console = vm.console();
    assert!(
        !console.contains("Linux version") && !console.contains("== stage"),
        "{what}: a kernel started after the refusal (log: {})",
        vm.log.display()
    );
    eprintln!("{what}: refused after {t:.1} s");
}

#[test]
fn ipxe_boots_only_a_signed_image() {
    let test = "ipxe_boots_only_a_signed_image";
    let Some(img) = Image::get(test) else {
        return;
    };
    let ca = test_ca();
    let Some(ipxe) = ipxe(test, &ca) else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let t0 = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("rewind-qemu-ipxe-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let boot_port = free_port();
    let s = ServerProc::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        true,
        None,
        &["--boot-http", &format!("127.0.0.1:{boot_port}")],
    );
    let pin = s.pin.clone().unwrap();
    let host_token = s.host_token(HOST);
    let (st, text) = put_snapshot(&s, &host_token, HOST, "s1", "2026-11-25T06:00:00Z", MAC);
    assert!(st.is_success(), "{text}");
    rewind_ok(&s, &s.admin, &["request", HOST]);
    let boot_token = rewind_ok(&s, &s.admin, &["token", "create", "--boot"])
        .lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string();

    // The signed image, as `scripts/build-image --pin PIN --sign KEY
    // --sign-cert CERT` leaves it in target/image/pxe/: the server's pin
    // built into the initrd before it is signed.
    let signed = dir.path().join("signed");
    std::fs::create_dir_all(&signed).unwrap();
    std::fs::copy(&img.kernel, signed.join("vmlinuz")).unwrap();
    std::fs::copy(&img.initrd, signed.join("initrd.img")).unwrap();
    sign(&signed, &ca.key, &ca.cert, &ca.ca, Some(&pin));
    let boot = s.data.join("boot");
    for f in ["vmlinuz", "initrd.img", "vmlinuz.sig", "initrd.img.sig"] {
        std::fs::copy(signed.join(f), boot.join(f)).unwrap();
    }
    // rewind.action=plan: the image shows its plan and writes nothing.
    std::fs::write(
        boot.join("cmdline"),
        "console=ttyS0,115200 no_timer_check rewind.action=plan rewind.done=poweroff\n",
    )
    .unwrap();
    // The served initrd is the signed file, byte for byte (no pins appended).
    let served = server_util::http_client()
        .get(format!(
            "http://127.0.0.1:{boot_port}/boot/initrd.img?token={boot_token}"
        ))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(
        served[..] == std::fs::read(signed.join("initrd.img")).unwrap()[..],
        "the server changed the signed initrd it serves"
    );
    // What a site's DHCP/TFTP hands out: chain to the server's boot listener.
    let tftp = dir.path().join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::write(
        tftp.join("rewind.ipxe"),
        format!(
            "#!ipxe\nchain http://10.0.2.2:{boot_port}/boot/ipxe?mac=${{net0/mac}}&token={boot_token}\n"
        ),
    )
    .unwrap();
    let setup = t0.elapsed().as_secs_f64();

    // 1. Signed and intact: verified, and the recovery image starts.
    let t = Instant::now();
    let mut vm = boot_ipxe(&ipxe, &tftp, "signed");
    let kernel = vm.expect("Linux version", BOOT);
    let marker = vm.expect("rewind: == stage", BOOT);
    eprintln!("signed: kernel after {kernel:.1} s, first stage marker after {marker:.1} s");
    assert!(
        !vm.console().contains("REFUSED"),
        "a signed image was refused (log: {})",
        vm.log.display()
    );
    drop(vm);
    let signed_secs = t.elapsed().as_secs_f64();

    // 2. One byte of the initrd changed (its signature kept): refused.
    let t = Instant::now();
    let mut initrd = std::fs::read(signed.join("initrd.img")).unwrap();
    let middle = initrd.len() / 2;
    initrd[middle] ^= 0x01;
    std::fs::write(boot.join("initrd.img"), &initrd).unwrap();
    let mut vm = boot_ipxe(&ipxe, &tftp, "tampered");
    assert_refused(&mut vm, "one byte of the initrd changed");
    drop(vm);
    let tampered_secs = t.elapsed().as_secs_f64();

    // 3. Signed by another key (a CA this iPXE does not trust): refused.
    let t = Instant::now();
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(&img.kernel, other.join("vmlinuz")).unwrap();
    std::fs::copy(&img.initrd, other.join("initrd.img")).unwrap();
    sign(
        &other,
        &ca.other_key,
        &ca.other_cert,
        &ca.other_ca,
        Some(&pin),
    );
    for f in ["vmlinuz", "initrd.img", "vmlinuz.sig", "initrd.img.sig"] {
        std::fs::copy(other.join(f), boot.join(f)).unwrap();
    }
    let mut vm = boot_ipxe(&ipxe, &tftp, "other-key");
    assert_refused(&mut vm, "signed by another key");
    drop(vm);
    let other_secs = t.elapsed().as_secs_f64();

    // 4. The intact signed image again, but through QEMU's own iPXE ROM
    // (no IMAGE_TRUST_CMD, no serial console: watched on the wire): the
    // script's imgverify cannot run, and nothing boots.
    let t = Instant::now();
    for f in ["vmlinuz", "initrd.img", "vmlinuz.sig", "initrd.img.sig"] {
        std::fs::copy(signed.join(f), boot.join(f)).unwrap();
    }
    let log = logs_dir().join("ipxe-stock-rom.log");
    let pxe = Boot::Pxe {
        tftp: &tftp,
        bootfile: "rewind.ipxe",
    };
    let mut vm = Qemu::start(pxe, &[], MAC, &log);
    vm.expect_on_wire("GET /boot/initrd.img?token=", BOOT);
    std::thread::sleep(Duration::from_secs(30));
    assert!(
        !vm.console().contains("Linux version"),
        "an iPXE without imgverify booted a signed image (log: {})",
        log.display()
    );
    drop(vm);
    eprintln!(
        "timings: set-up {setup:.0} s, signed boot {signed_secs:.0} s, tampered {tampered_secs:.0} s, \
         other key {other_secs:.0} s, stock iPXE ROM {:.0} s, total {:.0} s",
        t.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
