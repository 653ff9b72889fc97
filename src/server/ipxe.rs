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
    fn exit_script_exits() {
        let s = exit_script("no recovery is armed\nfor this machine");
        assert_eq!(
            s,
            "#!ipxe\necho rewind: no recovery is armed for this machine\nexit\n"
        );
    }
}
