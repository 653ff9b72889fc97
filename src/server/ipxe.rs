//! iPXE scripts. A machine netbooting with `chain
//! http://SERVER/boot/ipxe?mac=${net0/mac}&token=BOOT` gets either a script
//! that boots the recovery image with its settings on the kernel command line
//! (when a recovery request is armed for the host owning that MAC address) or
//! one that exits, so that the firmware goes on to boot the local disk.
//! The second case is what makes a recovered machine boot its own disk
//! after the recovery instead of recovering again. The script carries no
//! recovery token: the image claims the request itself (POST /v1/claim).

/// What a recovery boot needs.
#[derive(Debug, Clone)]
pub struct BootParams<'a> {
    /// The server URL the recovery talks to (`https://backup.example:8443`).
    pub server: &'a str,
    /// The boot token the script was asked with: it only identifies; the
    /// image claims the request with its machine identity.
    pub token: &'a str,
    pub host: &'a str,
    /// The snapshot time to recover to (RFC 3339).
    pub at: &'a str,
    /// SHA-256 of the server certificate, hex, when the server uses TLS.
    pub pin: Option<&'a str>,
    /// Where iPXE downloads the kernel and initrd.
    pub kernel_url: &'a str,
    pub initrd_url: &'a str,
    /// Extra kernel arguments (`console=ttyS0,115200`), from DIR/boot/cmdline.
    pub extra: &'a str,
}

/// A kernel command line value must be one word.
pub(crate) fn word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\'')
}

/// The script that boots the recovery image; `None` when a value cannot be
/// put on a kernel command line (a space in a URL, say).
pub fn recovery_script(p: &BootParams<'_>) -> Option<String> {
    let mut values = vec![p.server, p.token, p.host, p.at, p.kernel_url, p.initrd_url];
    values.extend(p.pin);
    if !values.iter().all(|v| word(v)) || p.extra.contains(['\n', '\r']) {
        return None;
    }
    let mut args = format!(
        "initrd=initrd.img rewind.server={} rewind.token={} rewind.host={} rewind.at={}",
        p.server, p.token, p.host, p.at
    );
    if let Some(pin) = p.pin {
        args.push_str(&format!(" rewind.pin={pin}"));
    }
    let extra = p.extra.trim();
    if !extra.is_empty() {
        args.push(' ');
        args.push_str(extra);
    }
    Some(format!(
        "#!ipxe\n\
         echo rewind: recovering {host} to {at}\n\
         kernel --name vmlinuz {kernel} {args}\n\
         initrd --name initrd.img {initrd}\n\
         boot\n",
        host = p.host,
        at = p.at,
        kernel = p.kernel_url,
        initrd = p.initrd_url,
    ))
}

/// Where iPXE fetches the detached signatures of a signed image
/// (`scripts/build-image --sign`: `DIR/boot/vmlinuz.sig`, `initrd.img.sig`).
#[derive(Debug, Clone)]
pub struct Signatures<'a> {
    pub kernel_sig_url: &'a str,
    pub initrd_sig_url: &'a str,
}

/// [`recovery_script`] that verifies the kernel and the initrd with
/// `imgverify` before it boots them, and fails closed: a signature that does
/// not verify (or an iPXE without `IMAGE_TRUST_CMD`, which has no
/// `imgverify`) boots nothing, says so and exits. What this proves, and
/// what it does not (the script itself is not signed): docs/security.md,
/// "PXE with iPXE and imgverify".
pub fn verified_recovery_script(p: &BootParams<'_>, sigs: &Signatures<'_>) -> Option<String> {
    if !word(sigs.kernel_sig_url) || !word(sigs.initrd_sig_url) {
        return None;
    }
    let script = recovery_script(p)?;
    let fetch = script.strip_suffix("boot\n")?;
    Some(format!(
        "{fetch}\
         echo rewind: verifying the image's signatures (imgverify)\n\
         imgverify vmlinuz {kernel_sig} || goto rewind_unverified\n\
         imgverify initrd.img {initrd_sig} || goto rewind_unverified\n\
         boot\n\
         :rewind_unverified\n\
         echo rewind: REFUSED: the recovery image's signature does not verify (imgverify); nothing was booted. \
         Sign it with scripts/build-image --sign; this iPXE must be built with IMAGE_TRUST_CMD and the signer's CA \
         (scripts/build-ipxe)\n\
         imgfree\n\
         exit 1\n",
        kernel_sig = sigs.kernel_sig_url,
        initrd_sig = sigs.initrd_sig_url,
    ))
}

/// The script for a machine with nothing to recover: say why, and exit so
/// that the firmware boots the next device (the local disk).
pub fn exit_script(why: &str) -> String {
    let why: String = why
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("#!ipxe\necho rewind: {why}\nexit\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BootParams<'static> {
        BootParams {
            server: "https://backup.example:8443",
            token: "rwd_0123456789abcdef_00",
            host: "web1",
            at: "2026-11-25T06:00:00Z",
            pin: Some("ab12"),
            kernel_url: "https://backup.example:8443/boot/vmlinuz?token=T",
            initrd_url: "https://backup.example:8443/boot/initrd.img?token=T",
            extra: "console=ttyS0,115200 ",
        }
    }

    #[test]
    fn recovery_script_carries_the_settings_on_the_kernel_command_line() {
        let s = recovery_script(&params()).unwrap();
        assert_eq!(
            s,
            "#!ipxe\n\
             echo rewind: recovering web1 to 2026-11-25T06:00:00Z\n\
             kernel --name vmlinuz https://backup.example:8443/boot/vmlinuz?token=T initrd=initrd.img \
             rewind.server=https://backup.example:8443 rewind.token=rwd_0123456789abcdef_00 \
             rewind.host=web1 rewind.at=2026-11-25T06:00:00Z rewind.pin=ab12 console=ttyS0,115200\n\
             initrd --name initrd.img https://backup.example:8443/boot/initrd.img?token=T\n\
             boot\n"
        );
        let no_pin = recovery_script(&BootParams {
            pin: None,
            extra: "",
            ..params()
        })
        .unwrap();
        assert!(
            no_pin.contains("rewind.at=2026-11-25T06:00:00Z\n"),
            "{no_pin}"
        );
        assert!(!no_pin.contains("rewind.pin"));
    }

    #[test]
    fn values_that_would_split_the_command_line_are_refused() {
        assert!(
            recovery_script(&BootParams {
                host: "a b",
                ..params()
            })
            .is_none()
        );
        assert!(
            recovery_script(&BootParams {
                server: "",
                ..params()
            })
            .is_none()
        );
        assert!(
            recovery_script(&BootParams {
                extra: "a\nshell",
                ..params()
            })
            .is_none()
        );
    }

    #[test]
    fn a_signed_image_is_verified_before_it_boots_and_refused_otherwise() {
        let sigs = Signatures {
            kernel_sig_url: "http://b/boot/vmlinuz.sig?token=T",
            initrd_sig_url: "http://b/boot/initrd.img.sig?token=T",
        };
        let s = verified_recovery_script(&params(), &sigs).unwrap();
        let plain = recovery_script(&params()).unwrap();
        let fetch = plain.strip_suffix("boot\n").unwrap();
        assert!(s.starts_with(fetch), "{s}");
        let rest: Vec<&str> = s[fetch.len()..].lines().collect();
        assert_eq!(
            rest[..4],
            [
                "echo rewind: verifying the image's signatures (imgverify)",
                "imgverify vmlinuz http://b/boot/vmlinuz.sig?token=T || goto rewind_unverified",
                "imgverify initrd.img http://b/boot/initrd.img.sig?token=T || goto rewind_unverified",
                "boot",
            ]
        );
        // Failing closed: nothing after the refusal boots.
        assert_eq!(rest[4], ":rewind_unverified");
        assert!(rest[5].starts_with("echo rewind: REFUSED: "), "{s}");
        assert_eq!(rest[6..], ["imgfree", "exit 1"]);
        assert!(
            verified_recovery_script(
                &params(),
                &Signatures {
                    kernel_sig_url: "a b",
                    ..sigs
                }
            )
            .is_none()
        );
    }

    #[test]
    fn exit_script_exits() {
        let s = exit_script("no recovery is armed\nfor this machine");
        assert_eq!(
            s,
            "#!ipxe\necho rewind: no recovery is armed for this machine\nexit\n"
        );
    }
}
